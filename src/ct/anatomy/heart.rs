//! The heart: four chambers of blood, each inside its myocardial wall (the left ventricle's wall,
//! tested first, is also the septum), wrapped in epicardial and pericardial fat, with fat pads at
//! the cardiophrenic angles. Chambers are ellipsoids in the heart's own frame, whose first axis
//! runs from the base to the apex (left, forwards and down), turned per seed.
use super::shape::{add, cross, dot, ellipsoid, mul, norm, sub, unit, V3};
use super::tissue::Tissue;
use rand::rngs::StdRng;
use rand::Rng;

/// Fat around the chambers, mm.
const FAT: f64 = 4.0;

struct Chamber {
    c: V3,
    semi: V3,
    wall: f64,
}

pub(crate) struct Heart {
    centre: V3,
    axes: [V3; 3],
    chambers: [Chamber; 4],
    pads: [(V3, V3); 2],
    reach: f64,
    /// Where the great vessels and the pulmonary veins join, world mm.
    pub(crate) aortic_root: V3,
    pub(crate) pulmonary_root: V3,
    pub(crate) svc_entry: V3,
    pub(crate) ivc_entry: V3,
    pub(crate) pv_entries: [V3; 4],
}

/// The heart's frame for a long axis at azimuth `az` (from +y towards the patient's left, -x) and
/// `el` below the horizontal: base-to-apex, the anterior direction orthogonal to it, their cross.
fn frame(az: f64, el: f64) -> [V3; 3] {
    let h1 = [-az.sin() * el.cos(), az.cos() * el.cos(), -el.sin()];
    let h2 = unit(sub([0.0, 1.0, 0.0], mul(h1, h1[1])));
    [h1, h2, cross(h1, h2)]
}

impl Heart {
    /// A heart centred at (x, y) in the axial plane with its lowest point at `floor` (the
    /// diaphragm under it), sized and turned per seed.
    pub(crate) fn new(x: f64, y: f64, floor: f64, rng: &mut StdRng) -> Heart {
        let s = rng.random_range(0.95..1.15);
        let (l, w, t) = (66.0 * s, 54.0 * s, 48.0 * s);
        // Positions are given for a nominal heart (axis 45 degrees left, 30 down) as world
        // offsets; turning them with the heart's own frame keeps the chambers' arrangement.
        let nominal = frame(45f64.to_radians(), 30f64.to_radians());
        let axes = frame(rng.random_range(35f64..55.0).to_radians(), rng.random_range(22f64..38.0).to_radians());
        let local = |o: V3| -> V3 { std::array::from_fn(|k| dot(mul(o, s), nominal[k])) };
        let chamber = |o: V3, semi: V3, wall: f64| Chamber { c: local(o), semi, wall };
        let chambers = [
            chamber([-18.0, -5.0, -5.0], [0.72 * l, 0.5 * w, 0.56 * t], 10.0 * s),
            chamber([10.0, 18.0, -5.0], [0.7 * l, 0.42 * w, 0.62 * t], 4.0),
            chamber([-5.0, -34.0, 25.0], [0.42 * l, 0.44 * w, 0.62 * t], 2.5),
            chamber([35.0, -10.0, 10.0], [0.42 * l, 0.46 * w, 0.56 * t], 2.5),
        ];
        let pads = [(local([-40.0, 25.0, -35.0]), [28.0, 16.0, 14.0]), (local([25.0, 28.0, -38.0]), [24.0, 14.0, 12.0])];
        let reach = chambers.iter().map(|c| norm(c.c) + c.semi.iter().cloned().fold(0.0, f64::max) + c.wall + FAT).fold(0.0, f64::max);
        let mut h = Heart {
            centre: [x, y, 0.0],
            axes,
            chambers,
            pads,
            reach,
            aortic_root: [0.0; 3],
            pulmonary_root: [0.0; 3],
            svc_entry: [0.0; 3],
            ivc_entry: [0.0; 3],
            pv_entries: [[0.0; 3]; 4],
        };
        h.centre[2] = floor - h.extreme(-1.0);
        let world = |o: V3| h.world(local(o));
        let (aortic_root, pulmonary_root) = (world([5.0, -10.0, 30.0]), world([-10.0, 20.0, 30.0]));
        let (svc_entry, ivc_entry) = (world([35.0, -12.0, 35.0]), world([30.0, -15.0, -25.0]));
        let pv_entries = [world([12.0, -42.0, 30.0]), world([12.0, -42.0, 10.0]), world([-22.0, -40.0, 30.0]), world([-22.0, -40.0, 10.0])];
        Heart { aortic_root, pulmonary_root, svc_entry, ivc_entry, pv_entries, ..h }
    }

    fn world(&self, q: V3) -> V3 {
        add(self.centre, add(add(mul(self.axes[0], q[0]), mul(self.axes[1], q[1])), mul(self.axes[2], q[2])))
    }

    /// The lowest (sign -1) or highest (+1) z of any chamber's wall relative to the centre.
    fn extreme(&self, sign: f64) -> f64 {
        self.chambers
            .iter()
            .map(|c| {
                let zc: f64 = (0..3).map(|k| c.c[k] * self.axes[k][2]).sum();
                let ext = (0..3).map(|k| ((c.semi[k] + c.wall) * self.axes[k][2]).powi(2)).sum::<f64>().sqrt();
                sign * (zc + sign * ext)
            })
            .fold(f64::NEG_INFINITY, f64::max)
            * sign
    }

    /// The highest z of the chambers' walls.
    pub(crate) fn top(&self) -> f64 {
        self.centre[2] + self.extreme(1.0)
    }

    /// Blood, myocardium or fat at p, None outside the heart and its fat.
    pub(crate) fn at(&self, p: V3) -> Option<Tissue> {
        let d = sub(p, self.centre);
        if d.iter().any(|v| v.abs() > self.reach) {
            return None;
        }
        let q: V3 = std::array::from_fn(|k| dot(d, self.axes[k]));
        for c in &self.chambers {
            let r = sub(q, c.c);
            if ellipsoid(r, c.semi.map(|v| v + c.wall)) <= 1.0 {
                return Some(if ellipsoid(r, c.semi) <= 1.0 { Tissue::HeartBlood } else { Tissue::Myocardium });
            }
        }
        // Epicardial fat: a smooth union of the chambers grown by FAT (sum of exp(-d / 0.15) >= 1,
        // d the scaled distance outside each), so the fat fills the grooves between chambers.
        let near: f64 = self.chambers.iter().map(|c| (-(ellipsoid(sub(q, c.c), c.semi.map(|v| v + c.wall + FAT)).sqrt() - 1.0) / 0.15).exp()).sum();
        let fat = near >= 1.0 || self.pads.iter().any(|(c, semi)| ellipsoid(sub(q, *c), *semi) <= 1.0);
        fat.then_some(Tissue::Fat)
    }
}
