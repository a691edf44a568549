//! The sternum (manubrium, body, xiphoid) at the front of the cage, the scapulae lying in the
//! muscles behind the upper ribs, and the clavicles; each bone a cortical shell around trabecular
//! bone where it is thick enough to hold any.
use super::body::{Body, Wall, RIB_LAYER};
use super::grid::{Gate, Tube, BONE};
use super::ribs::SternalHeights;
use super::shape::Profile;
use super::tissue::Tissue;
use rand::rngs::StdRng;
use rand::Rng;
use std::f64::consts::PI;

const CORTEX: f64 = 1.3;

pub(crate) struct Sternum {
    half_width: Profile,
    thickness: Profile,
    top: f64,
    bot: f64,
}

impl Sternum {
    pub(crate) fn new(st: &SternalHeights, rng: &mut StdRng) -> Sternum {
        let (n, a, x) = (st.notch, st.angle, st.xiphoid);
        let w = rng.random_range(0.9..1.1);
        let tip = x - rng.random_range(30.0..45.0);
        let half_width = Profile::new(vec![(n, 24.0 * w), (n - 12.0, 28.0 * w), (a + 6.0, 16.0 * w), (a - 20.0, 14.0 * w), (x + 12.0, 15.0 * w), (x - 4.0, 8.0 * w), (tip, 5.0 * w)]);
        let thickness = Profile::new(vec![(n, 13.0), (a, 10.0), (x, 9.0), (x - 4.0, 5.0), (tip, 4.0)]);
        Sternum { half_width, thickness, top: n, bot: tip }
    }

    /// Bone at (x, z) in the wall's front, None elsewhere.
    pub(crate) fn at(&self, x: f64, z: f64, w: &Wall) -> Option<Tissue> {
        if z > self.top || z < self.bot || w.uy <= 0.0 {
            return None;
        }
        let (hw, t) = (self.half_width.at(z), self.thickness.at(z));
        if x.abs() > hw || w.out < 0.5 || w.out > 0.5 + t {
            return None;
        }
        let shell = x.abs() > hw - CORTEX || w.out < 0.5 + CORTEX || w.out > 0.5 + t - CORTEX || z > self.top - CORTEX;
        Some(if shell || t < 6.0 { Tissue::CorticalBone } else { Tissue::TrabecularBone })
    }
}

/// A point in the wall's (phi, z) chart, phi scaled to mm so distances there are roughly true.
type Chart = [f64; 2];
const PHI_MM: f64 = 110.0;

fn seg_dist(p: Chart, a: Chart, b: Chart) -> f64 {
    let (ab, ap) = ([b[0] - a[0], b[1] - a[1]], [p[0] - a[0], p[1] - a[1]]);
    let t = ((ap[0] * ab[0] + ap[1] * ab[1]) / (ab[0] * ab[0] + ab[1] * ab[1])).clamp(0.0, 1.0);
    ((ap[0] - t * ab[0]).powi(2) + (ap[1] - t * ab[1]).powi(2)).sqrt()
}

/// A scapula: a thin plate over the triangle (superior angle, inferior angle, glenoid) of the
/// wall's chart, at a fixed fraction of the muscle's depth, with a thick lateral border, a thick
/// glenoid and the scapular spine as a ridge on its back.
pub(crate) struct Scapula {
    s: f64,
    tri: [Chart; 3],
    depth: f64,
    zmin: f64,
    zmax: f64,
}

impl Scapula {
    pub(crate) fn new(s: f64, body: &Body, rng: &mut StdRng) -> Scapula {
        let sz = body.scale.z;
        let mut j = |a: f64| rng.random_range(-a..a);
        let tri = [[(0.50 + j(0.05)) * PHI_MM, (168.0 + j(8.0)) * sz], [(0.80 + j(0.06)) * PHI_MM, (45.0 + j(12.0)) * sz], [(1.50 + j(0.06)) * PHI_MM, (150.0 + j(8.0)) * sz]];
        let zmin = tri.iter().map(|c| c[1]).fold(f64::INFINITY, f64::min);
        let zmax = tri.iter().map(|c| c[1]).fold(f64::NEG_INFINITY, f64::max) + 10.0;
        Scapula { s, tri, depth: 0.45 + j(0.05), zmin, zmax }
    }

    fn inside(&self, p: Chart) -> bool {
        let [a, b, c] = self.tri;
        let cross = |u: Chart, v: Chart, w: Chart| (v[0] - u[0]) * (w[1] - u[1]) - (v[1] - u[1]) * (w[0] - u[0]);
        let (d1, d2, d3) = (cross(a, b, p), cross(b, c, p), cross(c, a, p));
        !((d1 < 0.0 || d2 < 0.0 || d3 < 0.0) && (d1 > 0.0 || d2 > 0.0 || d3 > 0.0))
    }

    /// Bone at angle phi on side s, height z, in the wall `w`; None elsewhere.
    pub(crate) fn at(&self, s: f64, phi: f64, z: f64, w: &Wall) -> Option<Tissue> {
        if s != self.s || z < self.zmin || z > self.zmax || w.out < RIB_LAYER {
            return None;
        }
        let p = [phi * PHI_MM, z];
        let [sup, inf, glen] = self.tri;
        let mid = RIB_LAYER + self.depth * w.muscle;
        // The scapular spine: a ridge from the medial border to the acromion, above the glenoid.
        let spine_a = [sup[0] + 5.0, sup[1] - 28.0];
        let spine_b = [glen[0] + 8.0, glen[1] + 8.0];
        if seg_dist(p, spine_a, spine_b) < 5.0 && w.out > mid && w.out < mid + 12.0 {
            return Some(Tissue::CorticalBone);
        }
        if !self.inside(p) {
            return None;
        }
        let (rim, glenoid) = (seg_dist(p, inf, glen), ((p[0] - glen[0]).powi(2) + (p[1] - glen[1]).powi(2)).sqrt());
        let half = if glenoid < 25.0 { 9.0 } else if rim < 8.0 { 3.5 } else { 1.3 };
        let d = (w.out - mid).abs();
        if d > half {
            return None;
        }
        Some(if half > 3.0 && d < half - CORTEX { Tissue::TrabecularBone } else { Tissue::CorticalBone })
    }
}

/// The clavicles: from the manubrium's upper corners, forwards of the first ribs, curving back
/// and up to the shoulders.
pub(crate) fn clavicles(body: &Body, notch: f64, rng: &mut StdRng) -> Vec<Tube> {
    let mut tubes = Vec::new();
    for s in [1.0, -1.0] {
        let lift = rng.random_range(20.0..40.0);
        let pts: Vec<([f64; 3], f64)> = [(PI - 0.3, 3.0, 0.0, 7.0), (2.2, 12.0, 0.5, 6.0), (1.55, lift, 0.5, 5.0)]
            .iter()
            .map(|&(phi, dz, depth, r)| {
                let lvl = body.level(notch + dz);
                let out = if depth == 0.0 { 6.0 } else { RIB_LAYER + depth * lvl.muscle_at(phi) };
                let p = lvl.point(s, phi, out);
                ([p[0], p[1], notch + dz], r)
            })
            .collect();
        for w in pts.windows(2) {
            tubes.push(Tube::new(w[0].0, w[1].0, w[0].1, w[1].1, Tissue::CorticalBone, Tissue::TrabecularBone, 1.5, BONE, Gate::Always));
        }
    }
    tubes
}
