//! The lungs' branching trees. Each lobar bronchus fans into three segmental bronchi, which
//! grow by asymmetric dichotomy (a major child turned a little and a little narrower, a minor
//! child turned further and narrower, about Murray's law; each branching plane turned about 90
//! degrees from its parent's) until the radius drops below a millimetre; a pulmonary artery runs
//! beside every airway and goes on three generations past it; pulmonary veins grow the same way
//! from the left atrium, on their own paths. A branch that would leave the lung is turned, then
//! shortened, then dropped.
use super::grid::{Gate, Tube, AIRWAY, HARD, VESSEL};
use super::shape::{add, dot, mul, perp, rotate, sub, unit, V3};
use super::tissue::Tissue;
use super::vessels::{airway, Lobe};
use rand::rngs::StdRng;
use rand::Rng;

const MIN_AIRWAY: f64 = 1.0;
const MIN_VESSEL: f64 = 0.75;
/// A bound on the tubes each tree (one per lobe and per pulmonary vein) may add, so no seed can
/// be slow and no tree starves another.
const BUDGET: usize = 1400;

/// Which points the trees may grow into: `space(p, side, margin)` says whether p is lung on
/// that side, at least `margin` mm from its edges.
pub(crate) struct Grower<'a, F: Fn(V3, f64, f64) -> bool> {
    space: F,
    rng: &'a mut StdRng,
    out: Vec<Tube>,
    /// Length of `out` at which the current tree must stop.
    stop: usize,
}

fn vessel(a: V3, b: V3, ra: f64, rb: f64) -> Tube {
    Tube::solid(a, b, ra, rb, Tissue::Blood, VESSEL, Gate::Lung)
}

impl<'a, F: Fn(V3, f64, f64) -> bool> Grower<'a, F> {
    pub(crate) fn new(space: F, rng: &'a mut StdRng) -> Self {
        Grower { space, rng, out: Vec::new(), stop: BUDGET }
    }

    pub(crate) fn into_tubes(self) -> Vec<Tube> {
        self.out
    }

    fn jitter(&mut self, d: V3, a: f64) -> V3 {
        let r: V3 = std::array::from_fn(|_| self.rng.random_range(-1.0..1.0));
        unit(add(d, mul(r, a)))
    }

    /// The end of a segment of radius r from a along dir, turned or shortened to stay in the
    /// lung; None if no try fits.
    fn segment(&mut self, a: V3, dir: V3, r: f64, side: f64) -> Option<(V3, V3)> {
        let len = r * self.rng.random_range(4.0..6.5);
        for attempt in 0..6 {
            let d = if attempt == 0 { dir } else { self.jitter(dir, 0.25 * attempt as f64) };
            let l = if attempt < 4 { len } else { 0.5 * len };
            let b = add(a, mul(d, l));
            if (self.space)(b, side, r + 1.0) && (self.space)(add(a, mul(d, 0.5 * l)), side, 0.5 * r) {
                return Some((b, d));
            }
        }
        None
    }

    /// The two children's directions and radii: the major child turned 15-35 degrees, the minor
    /// one 40-70 degrees the other way, in a plane turned about 90 degrees from the parent's.
    fn children(&mut self, d: V3, r: f64, plane: V3) -> [(V3, f64, V3); 2] {
        let n0 = unit(sub(plane, mul(d, dot(plane, d))));
        let n = rotate(n0, d, std::f64::consts::FRAC_PI_2 + self.rng.random_range(-0.5..0.5));
        let (a1, a2) = (self.rng.random_range(15f64..35.0).to_radians(), self.rng.random_range(40f64..70.0).to_radians());
        let (r1, r2) = (r * self.rng.random_range(0.83..0.91), r * self.rng.random_range(0.66..0.78));
        [(rotate(d, n, a1), r1, n), (rotate(d, n, -a2), r2, n)]
    }

    /// An airway from a, with its artery starting at `art` offset towards `off`.
    pub(crate) fn airway(&mut self, a: V3, dir: V3, r: f64, plane: V3, art: (V3, V3), side: f64) {
        if self.out.len() >= self.stop {
            return;
        }
        let Some((b, d)) = self.segment(a, dir, r, side) else {
            self.vessel(art.0, dir, r, plane, side, 2);
            return;
        };
        self.out.push(airway(a, b, r, 0.95 * r, AIRWAY, Gate::Lung));
        let off = unit(sub(art.1, mul(d, dot(art.1, d))));
        let ra = 0.95 * r;
        let ab = add(b, mul(off, r + ra + 0.6));
        self.out.push(vessel(art.0, ab, ra, 0.95 * ra));
        if r < MIN_AIRWAY {
            self.vessel(ab, d, ra, plane, side, 3);
            return;
        }
        for (cd, cr, n) in self.children(d, r, plane) {
            self.airway(b, cd, cr, n, (ab, off), side);
        }
    }

    /// A vessel from a; `left` generations to go (None: until it is thinner than MIN_VESSEL).
    pub(crate) fn vessel(&mut self, a: V3, dir: V3, r: f64, plane: V3, side: f64, left: u32) {
        if self.out.len() >= self.stop || r < MIN_VESSEL || left == 0 {
            return;
        }
        let Some((b, d)) = self.segment(a, dir, r, side) else { return };
        self.out.push(vessel(a, b, r, 0.95 * r));
        for (cd, cr, n) in self.children(d, r, plane) {
            self.vessel(b, cd, cr, n, side, left - 1);
        }
    }
}

impl<'a, F: Fn(V3, f64, f64) -> bool> Grower<'a, F> {
    /// Three directions `spread` rad from d, a third of a turn apart about it (randomly started).
    fn fan(&mut self, d: V3, spread: f64) -> [V3; 3] {
        let n0 = perp(d);
        let t0 = self.rng.random_range(0.0..std::f64::consts::TAU);
        std::array::from_fn(|i| rotate(d, rotate(n0, d, t0 + i as f64 * std::f64::consts::TAU / 3.0), spread))
    }

    /// The first point from a along dir (2 mm steps, at most `max` mm) that is lung space: where a
    /// tree rooted in the mediastinum may start growing.
    fn walk_out(&self, a: V3, dir: V3, side: f64, max: f64) -> V3 {
        (1..=(max / 2.0) as usize).map(|i| add(a, mul(dir, 2.0 * i as f64))).find(|&p| (self.space)(p, side, 1.0)).unwrap_or(add(a, mul(dir, max)))
    }
}

/// Every tree: airways with their arteries from each lobar bronchus (the arteries fed from the
/// hilum's pulmonary artery), and veins from the four pulmonary-vein entries of the left atrium.
/// Their roots, up to where the lung begins, are mediastinal tubes that always show.
pub(crate) fn grow<F: Fn(V3, f64, f64) -> bool>(space: F, lobes: &[Lobe], hila: &[(V3, f64); 2], veins: &[V3; 4], rng: &mut StdRng) -> Vec<Tube> {
    let mut g = Grower::new(space, rng);
    for lobe in lobes {
        g.stop = g.out.len() + BUDGET;
        let (hilum, rh) = hila[if lobe.side > 0.0 { 0 } else { 1 }];
        let e = g.walk_out(lobe.start, lobe.dir, lobe.side, 40.0);
        g.out.push(airway(lobe.start, e, lobe.r, lobe.r, HARD, Gate::Always));
        let off = perp(lobe.dir);
        let art = add(e, mul(off, 2.0 * lobe.r + 0.6));
        g.out.push(Tube::solid(hilum, art, rh.min(1.1 * lobe.r), lobe.r, Tissue::Blood, HARD, Gate::Always));
        // Segmental bronchi: three from each lobar bronchus, spread around its direction.
        for d in g.fan(lobe.dir, 0.6) {
            g.airway(e, d, 0.8 * lobe.r, perp(off), (art, off), lobe.side);
        }
    }
    for (i, &v) in veins.iter().enumerate() {
        g.stop = g.out.len() + BUDGET;
        let side = if i < 2 { 1.0 } else { -1.0 };
        let dz = if i % 2 == 0 { 0.35 } else { -0.35 };
        let dir = g.jitter([side * 0.9, -0.1, dz], 0.2);
        let e = g.walk_out(v, dir, side, 80.0);
        g.out.push(Tube::solid(v, e, 7.0, 6.5, Tissue::Blood, HARD, Gate::Always));
        for d in g.fan(dir, 0.6) {
            g.vessel(e, d, 5.5, [0.0, 1.0, 0.0], side, u32::MAX);
        }
    }
    g.into_tubes()
}
