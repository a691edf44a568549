//! Units: attenuation mu in 1/mm (at about 70 keV) and Hounsfield units, one conversion used by
//! the phantoms, DICOM input and training: HU = 1000 (mu - mu_water) / mu_water, so air (mu 0) is
//! -1000 HU and water 0 HU.
pub use super::chest::MU_WATER;

/// Attenuation (1/mm) of a Hounsfield value.
pub fn hu_to_mu(hu: f32) -> f32 {
    MU_WATER * (1.0 + hu / 1000.0)
}

/// The Hounsfield value of an attenuation (1/mm).
pub fn mu_to_hu(mu: f32) -> f32 {
    1000.0 * (mu - MU_WATER) / MU_WATER
}
