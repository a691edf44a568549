//! Poisson noise on line integrals: counts ~ Poisson(I0 exp(-p)), p_noisy = -ln(max(counts, 1) / I0).
//! Each detector row draws from its own generator seeded by (seed, row), so results do not depend
//! on the number of threads.
use crate::error::{Error, Result};
use rand::SeedableRng;
use rand_distr::{Distribution, Poisson};
use rayon::prelude::*;

/// Replaces each line integral p of `proj` (views, rows, cols; dimensionless mu*mm) in place by
/// -ln(max(n, 1) / I0), n ~ Poisson(I0 exp(-p)), I0 = `i0` unattenuated photons per ray. `cols` is
/// the detector width: each row of `cols` values draws from a generator seeded by (`seed`, row).
/// Errors: `Error::Argument` when `i0` is not a finite number of at least 1.
pub fn poisson(proj: &mut [f32], cols: usize, i0: f64, seed: u64) -> Result<()> {
    if !(i0.is_finite() && i0 >= 1.0) {
        return Err(Error::Argument(format!("incident photon count I0 = {i0} must be at least 1")));
    }
    proj.par_chunks_mut(cols.max(1)).enumerate().for_each(|(row, vals)| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (row as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        for p in vals.iter_mut() {
            let lambda = i0 * (-(*p as f64)).exp();
            let counts = if lambda > 0.0 { Poisson::new(lambda).map(|d| d.sample(&mut rng)).unwrap_or(lambda) } else { 0.0 };
            *p = (-(counts.max(1.0) / i0).ln()) as f32;
        }
    });
    Ok(())
}
