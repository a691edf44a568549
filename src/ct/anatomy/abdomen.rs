//! Below the thorax: the diaphragm's two domes (the right higher), and under them the liver, the
//! stomach with its air-fluid level, the spleen, the upper poles of the kidneys and the psoas
//! muscles, in visceral fat mottled with bowel.
use super::body::Body;
use super::grid::{Gate, Tube, HARD};
use super::shape::{cross, dot, ellipsoid, norm, smooth_max, smoothstep, sub, unit, value_noise, V3};
use super::spine::{Region, Spine};
use super::tissue::Tissue;
use rand::rngs::StdRng;
use rand::Rng;

/// Thickness of the diaphragm's muscle, mm.
pub(crate) const DIAPHRAGM: f64 = 4.0;

struct Dome {
    c: V3,
    ax: f64,
    ay_ant: f64,
    ay_post: f64,
    depth: f64,
}

impl Dome {
    fn z(&self, x: f64, y: f64) -> f64 {
        let (dx, dy) = (x - self.c[0], y - self.c[1]);
        let ay = if dy > 0.0 { self.ay_ant } else { self.ay_post };
        self.c[2] - self.depth * ((dx / self.ax).powi(2) + (dy / ay).powi(2))
    }
}

/// The upper surface of the diaphragm: two paraboloid domes blended without a crease, falling
/// steeply behind (the posterior recesses) and never below `floor`.
pub(crate) struct Diaphragm {
    domes: [Dome; 2],
    floor: f64,
}

impl Diaphragm {
    pub(crate) fn new(body: &Body, spine: &Spine, rng: &mut StdRng) -> Diaphragm {
        let t9 = spine.get(Region::Thoracic, 9);
        let zr = t9.mid() + rng.random_range(-10.0..12.0);
        let zl = zr - rng.random_range(10.0..25.0);
        let sx = body.scale.x;
        let dome = |x: f64, z: f64| {
            let l = body.level(z);
            Dome { c: [x * sx, l.y0 + 5.0, z], ax: 110.0 * sx, ay_ant: 115.0, ay_post: 58.0, depth: 100.0 }
        };
        let floor = spine.get(Region::Thoracic, 12).bot - 25.0;
        Diaphragm { domes: [dome(55.0, zr), dome(-60.0, zl)], floor }
    }

    /// z of the diaphragm's upper surface under (x, y).
    pub(crate) fn height(&self, x: f64, y: f64) -> f64 {
        smooth_max(smooth_max(self.domes[0].z(x, y), self.domes[1].z(x, y), 20.0), self.floor, 30.0)
    }

    /// Apex of the right (0) or left (1) dome.
    pub(crate) fn apex(&self, side: usize) -> V3 {
        self.domes[side].c
    }
}

/// The abdominal organs under the diaphragm.
pub(crate) struct Abdomen {
    liver_bottom: f64,
    liver_slope: f64,
    /// The lowest the right lobe reaches, and the right dome's top.
    liver_tip: f64,
    liver_top: f64,
    liver_lobe: f64,
    stomach: Vec<(V3, f64)>,
    stomach_box: (V3, V3),
    gas_level: f64,
    spleen: (V3, [V3; 3], V3),
    kidneys: [(V3, V3); 2],
    noise_seed: u64,
    /// Where the oesophagus enters the stomach.
    pub(crate) cardia: V3,
    /// The psoas muscles.
    pub(crate) tubes: Vec<Tube>,
}

impl Abdomen {
    pub(crate) fn new(body: &Body, spine: &Spine, dia: &Diaphragm, rng: &mut StdRng) -> Abdomen {
        let (sx, sz) = (body.scale.x, body.scale.z);
        let (zr, zl) = (dia.apex(0)[2], dia.apex(1)[2]);
        let y0 = |z: f64| body.level(z).y0;
        let s = rng.random_range(0.8..1.15);
        let stomach: Vec<(V3, f64)> = [(-65.0, -10.0, 40.0, 38.0), (-80.0, 15.0, 80.0, 34.0), (-60.0, 42.0, 115.0, 28.0), (-25.0, 50.0, 130.0, 20.0), (10.0, 40.0, 135.0, 11.0)]
            .iter()
            .map(|&(x, y, dz, r)| {
                let z = zl - dz * sz;
                ([x * sx, y0(z) + y, z], r * s)
            })
            .collect();
        let lo = std::array::from_fn(|a| stomach.iter().map(|(c, r)| c[a] - r).fold(f64::INFINITY, f64::min));
        let hi = std::array::from_fn(|a| stomach.iter().map(|(c, r)| c[a] + r).fold(f64::NEG_INFINITY, f64::max));
        let f = stomach[0].0;
        let cardia = [f[0] + 30.0 * s, f[1] + 10.0, f[2] - 5.0];
        let gas_level = y0(zl - 80.0) + rng.random_range(10.0..45.0);
        // The spleen: against the left posterolateral wall, its long axis along the 10th rib.
        let zs = zl - 70.0 * sz;
        let l = body.level(zs);
        let sc = [-0.68 * l.wc, l.y0 - 0.45 * l.bp, zs];
        let u1 = unit([-0.2, 0.6, -0.75]);
        let u3 = unit(sub([-0.8, -0.55, 0.0], super::shape::mul(u1, dot([-0.8, -0.55, 0.0], u1))));
        let ss = rng.random_range(0.85..1.15);
        let spleen = (sc, [u1, cross(u3, u1), u3], [60.0 * ss, 40.0 * ss, 25.0 * ss]);
        let t12 = spine.get(Region::Thoracic, 12);
        let kidney = |x: f64, dz: f64| {
            let z = t12.bot - dz;
            ([x * sx, body.level(z).yvb + 5.0, z], [28.0, 24.0, 55.0])
        };
        let kidneys = [kidney(70.0, 45.0 + rng.random_range(0.0..15.0)), kidney(-68.0, 30.0 + rng.random_range(0.0..10.0))];
        let muscle = |a, b, ra, rb| Tube::solid(a, b, ra, rb, Tissue::Muscle, HARD, Gate::Cavity);
        let tubes = [1.0, -1.0]
            .iter()
            .map(|&s| {
                let yv = body.level(t12.bot).yvb;
                muscle([s * 22.0, yv - 5.0, t12.bot], [s * 50.0, yv + 5.0, t12.bot - 250.0], 8.0, 26.0)
            })
            .collect();
        Abdomen {
            liver_bottom: zr - rng.random_range(95.0..120.0) * sz,
            liver_slope: rng.random_range(0.25..0.4),
            liver_tip: zr - 170.0 * sz,
            liver_top: zr,
            liver_lobe: rng.random_range(35.0..65.0),
            stomach,
            stomach_box: (lo, hi),
            gas_level,
            spleen,
            kidneys,
            noise_seed: rng.random(),
            cardia,
            tubes,
        }
    }

    fn stomach(&self, p: V3) -> Option<Tissue> {
        let (lo, hi) = self.stomach_box;
        if (0..3).any(|a| p[a] < lo[a] || p[a] > hi[a]) {
            return None;
        }
        let mut depth = f64::NEG_INFINITY;
        for w in self.stomach.windows(2) {
            let ((a, ra), (b, rb)) = (w[0], w[1]);
            let ab = sub(b, a);
            let t = (dot(sub(p, a), ab) / dot(ab, ab)).clamp(0.0, 1.0);
            let d = norm(sub(p, [a[0] + ab[0] * t, a[1] + ab[1] * t, a[2] + ab[2] * t]));
            depth = depth.max(ra + (rb - ra) * t - d);
        }
        if depth < 0.0 {
            None
        } else if depth < 4.0 {
            Some(Tissue::StomachWall)
        } else {
            // Supine: gas rises to the front (+y), fluid lies behind.
            Some(if p[1] > self.gas_level { Tissue::StomachGas } else { Tissue::StomachFluid })
        }
    }

    fn spleen(&self, p: V3) -> bool {
        let (c, axes, semi) = &self.spleen;
        let d = sub(p, *c);
        if norm(d) > semi[0] {
            return false;
        }
        let q: V3 = std::array::from_fn(|k| dot(d, axes[k]));
        // The hilum: a hollow on the medial face where the vessels enter.
        let hilum = (q[0].powi(2) + q[1].powi(2) + (q[2] + semi[2] + 14.0).powi(2)).sqrt() < 24.0;
        ellipsoid(q, *semi) <= 1.0 && !hilum
    }

    fn liver(&self, p: V3, yvb: f64) -> bool {
        // The medial border: the left lobe reaches across the midline in front and high up;
        // lower down the border curves back to the right of the spine.
        let high = smoothstep(self.liver_top - 110.0, self.liver_top - 50.0, p[2]);
        let front = smoothstep(yvb + 30.0, yvb + 100.0, p[1]);
        let left = 35.0 - 45.0 * high - self.liver_lobe * front * high - 0.004 * (p[1] - yvb - 60.0).powi(2);
        p[0] > left && p[2] > (self.liver_bottom - self.liver_slope * p[0]).max(self.liver_tip)
    }

    /// The tissue at p below the diaphragm inside the cavity; yvb is the spine's line at p's z.
    pub(crate) fn at(&self, p: V3, yvb: f64) -> Tissue {
        if self.kidneys.iter().any(|(c, s)| ellipsoid(sub(p, *c), *s) <= 1.0) {
            return Tissue::Kidney;
        }
        if self.spleen(p) {
            return Tissue::Spleen;
        }
        if let Some(t) = self.stomach(p) {
            return t;
        }
        if self.liver(p, yvb) {
            return Tissue::Liver;
        }
        if value_noise(p, 16.0, self.noise_seed) > 0.2 {
            Tissue::SoftTissue
        } else {
            Tissue::Fat
        }
    }
}
