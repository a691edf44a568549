//! The tissue table: every material of the thorax phantom, its label and its CT number.

/// A material of the thorax phantom. Its label (`label`) is its position in this list, 0 to 24;
/// its CT number (`hu`) is a typical unenhanced value at about 70 keV (120 kVp scans).
///
/// Sources of the CT numbers (the value used lies inside the published range):
/// - \[B\] T. M. Buzug, *Computed Tomography: From Photon Statistics to Modern Cone-Beam CT*,
///   Springer 2008, table of the Hounsfield scale (p. 475): lung at inspiration -850 to -910,
///   fat -50 to -100, kidney +20 to +40, spleen +35 to +55, blood +45 to +65, liver +45 to +65,
///   white matter +20 to +30, grey matter +37 to +45, bone +700 to +3000.
/// - \[P\] M. Prokop, M. Galanski, *Spiral and Multislice Computed Tomography of the Body*, Thieme
///   2003, ch. 1: for soft tissue and fluids the CT number is about 1000 (density in g/cm3 - 1).
/// - \[I\] ICRU Report 44 (1989) and 46 (1992), tissue densities: cartilage 1.10 g/cm3 (+100 by
///   \[P\]'s rule), spongiosa 1.18 g/cm3, cortical bone 1.92 g/cm3 (about +1900 HU at 70 keV; the
///   thin cortex of ribs and vertebrae reads +1000 to +1900).
/// - \[H\] values found alike in general Hounsfield-scale tables: muscle +35 to +55, CSF 0 to +15,
///   unclotted blood +30 to +45, intervertebral disc +50 to +110, vertebral spongiosa +150 to
///   +350, soft tissue +20 to +60.
/// - Patient table: a carbon-fibre epoxy shell (about 1.5 g/cm3) over a rigid foam core (about
///   0.05 g/cm3), the construction described by AAPM TG-176 (Olch et al., Med. Phys. 41, 061501,
///   2014); these two CT numbers are estimates from the densities, not measurements.
///
/// docs/CT.md ("Procedural thorax anatomy") has the same table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Tissue {
    /// Air around the patient: -1000 HU (the definition).
    Air = 0,
    /// Lung parenchyma at inspiration: -850 HU \[B\].
    Lung,
    /// Air inside the trachea and bronchi: -1000 HU.
    Airway,
    /// Bronchial and tracheal wall (soft tissue with cartilage rings): +40 HU \[H\].
    AirwayWall,
    /// Subcutaneous, mediastinal, epicardial and visceral fat: -100 HU \[B\].
    Fat,
    /// Skin: +40 HU (soft tissue \[H\]).
    Skin,
    /// Skeletal muscle (chest wall, back, diaphragm): +45 HU \[H\].
    Muscle,
    /// Other soft tissue (oesophagus, bowel, connective tissue): +40 HU \[H\].
    SoftTissue,
    /// Blood in vessels, unenhanced: +40 HU \[H\] (\[B\] gives +45 to +65).
    Blood,
    /// Blood in the heart's chambers, unenhanced: +40 HU, as `Blood`; a label of its own so the heart's
    /// volume (chambers and wall) can be measured.
    HeartBlood,
    /// Myocardium: +50 HU (muscle \[H\], a little above unenhanced blood).
    Myocardium,
    /// Liver: +60 HU \[B\].
    Liver,
    /// Spleen: +45 HU \[B\].
    Spleen,
    /// Kidney: +30 HU \[B\].
    Kidney,
    /// Stomach wall: +40 HU \[H\].
    StomachWall,
    /// Fluid in the stomach: +10 HU (water-like fluid, density about 1.01 g/cm3 by \[P\]'s rule).
    StomachFluid,
    /// Gas in the stomach: -1000 HU.
    StomachGas,
    /// Cortical bone (the shell of ribs, vertebrae, sternum, scapulae, clavicles): +1400 HU [I, B].
    CorticalBone,
    /// Trabecular bone with marrow: +250 HU \[H\].
    TrabecularBone,
    /// Costal cartilage: +120 HU (\[I\] with \[P\]'s rule gives +100; it calcifies with age).
    Cartilage,
    /// Intervertebral disc: +80 HU \[H\].
    Disc,
    /// Cerebrospinal fluid in the spinal canal: +5 HU \[H\].
    Csf,
    /// Spinal cord: +35 HU (nervous tissue, between white and grey matter \[B\]).
    SpinalCord,
    /// Carbon-fibre shell of the patient table: +400 HU (estimate, see above).
    TableShell,
    /// Foam core of the patient table: -950 HU (estimate, see above).
    TableFoam,
}

impl Tissue {
    /// Every tissue, in label order.
    pub const ALL: [Tissue; 25] = [
        Tissue::Air,
        Tissue::Lung,
        Tissue::Airway,
        Tissue::AirwayWall,
        Tissue::Fat,
        Tissue::Skin,
        Tissue::Muscle,
        Tissue::SoftTissue,
        Tissue::Blood,
        Tissue::HeartBlood,
        Tissue::Myocardium,
        Tissue::Liver,
        Tissue::Spleen,
        Tissue::Kidney,
        Tissue::StomachWall,
        Tissue::StomachFluid,
        Tissue::StomachGas,
        Tissue::CorticalBone,
        Tissue::TrabecularBone,
        Tissue::Cartilage,
        Tissue::Disc,
        Tissue::Csf,
        Tissue::SpinalCord,
        Tissue::TableShell,
        Tissue::TableFoam,
    ];

    /// The CT number in Hounsfield units (table above).
    pub fn hu(self) -> f32 {
        match self {
            Tissue::Air | Tissue::Airway | Tissue::StomachGas => -1000.0,
            Tissue::Lung => -850.0,
            Tissue::Fat => -100.0,
            Tissue::AirwayWall | Tissue::Skin | Tissue::SoftTissue | Tissue::Blood | Tissue::HeartBlood | Tissue::StomachWall => 40.0,
            Tissue::Muscle | Tissue::Spleen => 45.0,
            Tissue::Myocardium => 50.0,
            Tissue::Liver => 60.0,
            Tissue::Kidney => 30.0,
            Tissue::StomachFluid => 10.0,
            Tissue::CorticalBone => 1400.0,
            Tissue::TrabecularBone => 250.0,
            Tissue::Cartilage => 120.0,
            Tissue::Disc => 80.0,
            Tissue::Csf => 5.0,
            Tissue::SpinalCord => 35.0,
            Tissue::TableShell => 400.0,
            Tissue::TableFoam => -950.0,
        }
    }

    /// The label: the tissue's index in `Tissue::ALL` (Air 0 ... TableFoam 24).
    pub fn label(self) -> u8 {
        self as u8
    }

    /// The tissue of a label; None for labels above 24.
    pub fn from_label(label: u8) -> Option<Tissue> {
        Tissue::ALL.get(label as usize).copied()
    }

    /// Whether the tissue is bone (cortical or trabecular).
    pub fn is_bone(self) -> bool {
        matches!(self, Tissue::CorticalBone | Tissue::TrabecularBone)
    }
}
