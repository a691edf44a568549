//! A procedural adult thorax in physical units: mm in the world frame (NIfTI's RAS+: +x the
//! patient's right, +y anterior, +z superior) and Hounsfield units. The patient lies supine on a
//! table (below the back, at -y), the body centred on the origin; the anatomy runs from the neck
//! above the lung apices to the upper abdomen (about 350 mm of z) and goes on, plainer, beyond.
//!
//! Contents: skin, subcutaneous fat and chest-wall muscles (pectoral, paraspinal, shoulder);
//! twelve pairs of ribs with costal cartilages, sternum, vertebrae with discs, canal, CSF and
//! cord, scapulae and clavicles (cortical shell, trabecular core); the heart's four chambers in
//! their myocardium and pericardial fat; aorta, pulmonary trunk and arteries, venae cavae, neck
//! vessels, oesophagus; trachea and bronchial tree with the pulmonary arteries beside it and the
//! pulmonary veins; lungs shaped by the cage, heart, mediastinum and diaphragm; the diaphragm's
//! domes (right higher), liver, stomach with an air-fluid level, spleen, kidneys' upper poles;
//! the patient table. Everything is deterministic for a seed, which varies sizes, positions,
//! rib slopes, tree branching, fat, heart size and turn, and the domes' heights.
//!
//! How a point is classified (`Thorax::tissue_at`): table, then outside the skin, then the
//! spine and bony tubes, then the chest wall in layers (sternum, ribs, scapulae, vessels,
//! skin, fat, muscle) or the cavity (mediastinal tubes, heart, below the diaphragm the abdomen,
//! above it fat sheaths, septum, and lung with its trees). Tubes are found through a uniform grid.
//! docs/CT.md ("Procedural thorax anatomy") describes it with its sources.
mod abdomen;
mod body;
mod grid;
mod heart;
mod lungs;
mod ribs;
mod shape;
mod skeleton;
mod spine;
mod table;
mod tissue;
mod trees;
mod vessels;

pub use tissue::Tissue;

use super::geometry::VolumeGrid;
use abdomen::{Abdomen, Diaphragm, DIAPHRAGM};
use body::{Body, Level, Wall, SKIN};
use grid::{Gate, Hit, TubeGrid, BONE, HARD, SHEATH};
use heart::Heart;
use lungs::Lungs;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use ribs::{Ribs, SternalHeights};
use shape::{value_noise, V3};
use skeleton::{Scapula, Sternum};
use spine::{Region, Spine};
use table::Table;
use vessels::Mediastinum;

/// Edge of the cells that bin the tubes, mm.
const CELL: f64 = 10.0;

/// One sampled thorax: every structure's shape and place in mm. Building one takes a few
/// milliseconds; `tissue_at` is then a pure function of the point, so volumes rendered from it
/// are the same on any number of threads.
pub struct Thorax {
    body: Body,
    table: Table,
    spine: Spine,
    ribs: Ribs,
    sternum: Sternum,
    scapulae: [Scapula; 2],
    diaphragm: Diaphragm,
    heart: Heart,
    abdomen: Abdomen,
    lungs: Lungs,
    grid: TubeGrid,
    seed: u64,
}

impl Thorax {
    /// The thorax of a seed. Each part draws from its own random stream (the seed mixed with
    /// the part's tag), so changing one part's sampling leaves the others as they were.
    pub fn new(seed: u64) -> Thorax {
        let stream = |tag: u64| StdRng::seed_from_u64(shape::mix(seed ^ tag.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        let body = Body::new(&mut stream(1));
        let table = Table::new(body.table_top, &mut stream(2));
        let spine = Spine::new(&body, &mut stream(3));
        let t = |n| spine.get(Region::Thoracic, n);
        let st = SternalHeights { notch: t(2).bot - 2.0, angle: t(4).bot - 2.0, xiphoid: t(9).mid() };
        let mut r = stream(4);
        let mut ribs = Ribs::new(&body, &spine, &st, &mut r);
        let sternum = Sternum::new(&st, &mut r);
        let scapulae = [Scapula::new(1.0, &body, &mut r), Scapula::new(-1.0, &body, &mut r)];
        let mut tubes = skeleton::clavicles(&body, st.notch, &mut r);
        let diaphragm = Diaphragm::new(&body, &spine, &mut stream(5));
        let heart = place_heart(&body, &spine, &diaphragm, &mut stream(6));
        let abdomen = Abdomen::new(&body, &spine, &diaphragm, &mut stream(7));
        let med = Mediastinum::new(&body, &spine, &heart, abdomen.cardia, &mut stream(8));
        let lungs = Lungs::new(&body, &spine, heart.top(), &mut stream(9));
        tubes.extend(spine.tubes(&body));
        tubes.append(&mut ribs.tubes);
        tubes.extend(med.tubes.iter().cloned());
        tubes.extend(abdomen.tubes.iter().cloned());
        let grid = TubeGrid::new(tubes.clone(), CELL);
        let mut th = Thorax { body, table, spine, ribs, sternum, scapulae, diaphragm, heart, abdomen, lungs, grid, seed };
        let veins = th.heart.pv_entries;
        let trees = trees::grow(|p, side, m| th.growth_space(p, side, m), &med.lobes, &med.hila, &veins, &mut stream(10));
        tubes.extend(trees);
        th.grid = TubeGrid::new(tubes, CELL);
        th
    }

    /// The tissue at world point p = (x, y, z) in mm (RAS+, the body centred on the origin).
    pub fn tissue_at(&self, p: [f64; 3]) -> Tissue {
        self.tissue_in(&self.body.level(p[2]), p)
    }

    /// Whether p is lung on `side` (sign of x) at least `margin` mm from the lung's edges, as far
    /// as the structures built so far tell: where the trees may grow.
    fn growth_space(&self, p: V3, side: f64, margin: f64) -> bool {
        let [x, y, z] = p;
        if x * side < 3.0 + margin {
            return false;
        }
        let lvl = self.body.level(z);
        lvl.wall(x, y).out < -1.5 - margin
            && z > self.diaphragm.height(x, y) + margin
            && self.lungs.under_apex(p, margin)
            && !self.lungs.septum(p, &lvl)
            && self.heart.at(p).is_none()
            && self.spine.at(x, y, z, lvl.yvb).is_none()
            && self.grid.query(p).is_none()
    }

    fn tissue_in(&self, lvl: &Level, p: V3) -> Tissue {
        let [x, y, z] = p;
        if y < self.table.top() {
            return self.table.at(x, y).unwrap_or(Tissue::Air);
        }
        let w = lvl.wall(x, y);
        if w.out > w.outline {
            return Tissue::Air;
        }
        if let Some(t) = self.spine.at(x, y, z, lvl.yvb) {
            return t;
        }
        let hit = self.grid.query(p);
        if let Some(h) = hit.filter(|h| h.prio == BONE) {
            return h.tissue;
        }
        if w.out > 0.0 {
            return self.wall_tissue(lvl, p, &w, hit);
        }
        if let Some(h) = hit.filter(|h| h.prio == HARD) {
            return h.tissue;
        }
        if let Some(t) = self.heart.at(p) {
            return t;
        }
        let floor = self.diaphragm.height(x, y);
        if z <= floor {
            return if z > floor - DIAPHRAGM { Tissue::Muscle } else { self.abdomen.at(p, lvl.yvb) };
        }
        if hit.is_some_and(|h| h.prio == SHEATH) {
            return Tissue::Fat;
        }
        if w.out > -1.5 {
            // Parietal pleura and the innermost intercostal muscle.
            return Tissue::Muscle;
        }
        if !self.lungs.under_apex(p, 0.0) {
            // Above the apices: the neck's viscera round the trachea, muscle beside them.
            return if x.abs() < 30.0 { Tissue::SoftTissue } else { Tissue::Muscle };
        }
        if self.lungs.septum(p, lvl) {
            return Tissue::Fat;
        }
        hit.map_or(Tissue::Lung, |h| h.tissue)
    }

    /// The chest wall: bones in it, vessels crossing it, then skin, fat and muscle by depth.
    fn wall_tissue(&self, lvl: &Level, p: V3, w: &Wall, hit: Option<Hit>) -> Tissue {
        let [x, y, z] = p;
        let s = if x >= 0.0 { 1.0 } else { -1.0 };
        let phi = x.abs().atan2(lvl.y0 - y);
        let bone = self.sternum.at(x, z, w).or_else(|| self.ribs.at(s, phi, z, w.out)).or_else(|| self.scapulae.iter().find_map(|sc| sc.at(s, phi, z, w)));
        if let Some(t) = bone {
            return t;
        }
        if let Some(h) = hit.filter(|h| h.gate == Gate::Always) {
            return h.tissue;
        }
        let depth = w.outline - w.out;
        if depth < SKIN {
            Tissue::Skin
        } else if depth < SKIN + w.fat {
            Tissue::Fat
        } else {
            Tissue::Muscle
        }
    }

    /// The CT number at p: the tissue's value plus a mild texture in lung and soft tissue.
    fn hu_in(&self, lvl: &Level, p: V3) -> f32 {
        let t = self.tissue_in(lvl, p);
        let soft = |amp: f64| t.hu() + (amp * value_noise(p, 5.0, self.seed)) as f32;
        match t {
            Tissue::Lung => self.lungs.hu(p, lvl),
            Tissue::Fat => soft(8.0),
            Tissue::Muscle | Tissue::SoftTissue | Tissue::Liver | Tissue::Spleen | Tissue::Kidney | Tissue::Myocardium | Tissue::Skin => soft(5.0),
            _ => t.hu(),
        }
    }
}

/// The heart on the diaphragm, a little left of the midline, between the spine (with the
/// oesophagus and aorta in front of it) and the sternum.
fn place_heart(body: &Body, spine: &Spine, dia: &Diaphragm, rng: &mut StdRng) -> Heart {
    let floor0 = dia.height(0.0, body.level(0.0).y0);
    let z = floor0 + 55.0;
    let lvl = body.level(z);
    let (back, front) = (spine.front(z, lvl.yvb) + 18.0, lvl.y0 + lvl.ba);
    let x = rng.random_range(-22.0..-10.0) * body.scale.x;
    let y = (back + 59.0 + front - 43.0) / 2.0 + rng.random_range(-4.0..4.0);
    Heart::new(x, y, dia.height(x, y + 10.0) - 4.0, rng)
}

/// Calls f at every voxel centre of the grid, rows in parallel; f also gets the body's level at
/// the row's height, computed once per row.
fn render<T: Copy + Send + Default>(grid: &VolumeGrid, th: &Thorax, f: impl Fn(&Level, V3) -> T + Sync) -> Vec<T> {
    let [_, ny, nx] = grid.shape;
    let mut out = vec![T::default(); grid.len()];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(nx).enumerate().for_each(|(kj, row)| {
        let (k, j) = (kj / ny, kj % ny);
        let lvl = th.body.level(grid.voxel_centre(k, j, 0)[2]);
        for (i, v) in row.iter_mut().enumerate() {
            *v = f(&lvl, grid.voxel_centre(k, j, i));
        }
    });
    out
}

/// The thorax of `seed` in Hounsfield units on `grid`: a volume of shape (nz, ny, nx) (C order,
/// `grid.len()` values), one sample at each voxel centre (world mm, `VolumeGrid::voxel_centre`),
/// the tissues' values (`Tissue::hu`) plus a mild texture (lung +-40 HU with a front-to-back
/// gradient, soft tissue and fat +-5 to 8 HU). The anatomy is physical: a grid of 1 mm voxels
/// shows 1 mm per voxel; `phantom::default_voxel_mm` gives voxels that frame the whole body.
/// Cannot fail; an empty grid gives an empty volume.
pub fn thorax_hu(grid: &VolumeGrid, seed: u64) -> Vec<f32> {
    let th = Thorax::new(seed);
    render(grid, &th, |lvl, p| th.hu_in(lvl, p))
}

/// The thorax of `seed` as tissue labels (`Tissue::label`) on `grid`, shape (nz, ny, nx): the
/// exact tissue at each voxel centre, the same points `thorax_hu` samples.
pub fn thorax_labels(grid: &VolumeGrid, seed: u64) -> Vec<u8> {
    let th = Thorax::new(seed);
    render(grid, &th, |lvl, p| th.tissue_in(lvl, p).label())
}
