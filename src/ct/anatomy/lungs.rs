//! The lungs: what is left of the thoracic cavity above the diaphragm and under the apices once
//! the mediastinum, heart and spine have taken their room; and the parenchyma's CT number, denser
//! towards the back (the dependent lung of a supine patient) with a mild texture.
use super::body::{Body, Level};
use super::shape::{smoothstep, value_noise, V3};
use super::spine::{Region, Spine};
use super::tissue::Tissue;
use rand::rngs::StdRng;
use rand::Rng;

pub(crate) struct Lungs {
    /// Each apex's top (x, y, z) and the radius of curvature of its dome, right then left.
    apex: [(V3, f64); 2],
    /// Half-width of the septum between the lungs behind the sternum (anterior junction), mm.
    junction: f64,
    /// Half-width of the prevascular fat above the heart, mm, and the heart's top z.
    thymus: f64,
    heart_top: f64,
    /// How much denser the back of the lung is than its front, HU.
    gravity: f64,
    seed: u64,
}

impl Lungs {
    pub(crate) fn new(body: &Body, spine: &Spine, heart_top: f64, rng: &mut StdRng) -> Lungs {
        let t1 = spine.get(Region::Thoracic, 1);
        let apex = [1.0, -1.0].map(|s: f64| {
            let z = t1.top + rng.random_range(-4.0..14.0);
            let l = body.level(z);
            ([s * 42.0 * body.scale.x, l.y0 - 8.0, z], rng.random_range(40.0..55.0))
        });
        Lungs { apex, junction: rng.random_range(3.0..7.0), thymus: rng.random_range(10.0..25.0), heart_top, gravity: rng.random_range(15.0..30.0), seed: rng.random() }
    }

    /// Whether p lies under its side's apical dome (less `margin` mm).
    pub(crate) fn under_apex(&self, p: V3, margin: f64) -> bool {
        let (c, rc) = self.apex[if p[0] >= 0.0 { 0 } else { 1 }];
        p[2] + margin < c[2] - ((p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2)) / (2.0 * rc)
    }

    /// Whether p lies in the mediastinal septum that the tubes and heart leave: the anterior
    /// junction behind the sternum; above the heart, the prevascular (thymic) fat, a wedge whose
    /// tip is at the sternum; and the thin posterior junction in front of the spine.
    pub(crate) fn septum(&self, p: V3, lvl: &Level) -> bool {
        let (y, b) = (p[1] - lvl.y0, lvl.ba);
        let wedge = smoothstep(b, 0.15 * b, y) * smoothstep(-0.3 * lvl.bp, 0.1 * b, y);
        let above_heart = smoothstep(self.heart_top - 25.0, self.heart_top + 15.0, lvl.z) * (1.0 - smoothstep(self.apex[0].0[2] - 40.0, self.apex[0].0[2], lvl.z));
        p[0].abs() < self.junction + self.thymus * wedge * above_heart || (p[0].abs() < 5.0 && p[1] < lvl.yvb + 40.0)
    }

    /// The parenchyma's CT number at p.
    pub(crate) fn hu(&self, p: V3, lvl: &Level) -> f32 {
        // Zero a little behind the cage's centre, near the lungs' own middle (they reach further back).
        let depth = ((lvl.y0 - 15.0 - p[1]) / (0.5 * (lvl.ba + lvl.bp))).clamp(-1.0, 1.0);
        let texture = 12.0 * value_noise(p, 7.0, self.seed) + 8.0 * value_noise(p, 3.0, self.seed ^ 1);
        Tissue::Lung.hu() + (self.gravity * depth + texture) as f32
    }
}
