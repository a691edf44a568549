//! Twelve pairs of ribs and their costal cartilages. A rib's shaft runs in the wall just outside
//! the cage boundary, described by its height z and size along the angle phi around the body
//! (0 at the back, pi at the front); its neck and head, and the transverse process it rests on,
//! are tubes from the wall to the vertebra.
use super::body::{Body, Level};
use super::grid::{Gate, Tube, BONE};
use super::spine::{Region, Spine};
use super::tissue::Tissue;
use rand::rngs::StdRng;
use rand::Rng;
use std::f64::consts::PI;

const CORTEX: f64 = 1.0;
const SAMPLES: usize = 64;
/// Angle (rad) at which each rib's bone ends and its cartilage begins, ribs 1 to 12.
const BONE_END: [f64; 12] = [2.55, 2.45, 2.4, 2.35, 2.3, 2.25, 2.2, 2.1, 2.0, 1.9, 1.55, 1.05];
/// How far each rib falls from its head to its bone's end, mm: the ribs slope down to the front.
const DROP: [f64; 12] = [30.0, 50.0, 70.0, 85.0, 95.0, 100.0, 105.0, 105.0, 100.0, 90.0, 60.0, 35.0];

/// One rib: z, half height and material sampled evenly in phi from the tubercle to its end.
pub(crate) struct Rib {
    s: f64,
    phi0: f64,
    phi1: f64,
    half_t: f64,
    z: Vec<f64>,
    half_h: Vec<f64>,
    bone: Vec<bool>,
    zmin: f64,
    zmax: f64,
}

impl Rib {
    fn sample(&self, phi: f64) -> Option<(f64, f64, bool)> {
        if phi < self.phi0 || phi > self.phi1 {
            return None;
        }
        let f = (phi - self.phi0) / (self.phi1 - self.phi0) * (SAMPLES - 1) as f64;
        let i = (f as usize).min(SAMPLES - 2);
        let t = f - i as f64;
        let lerp = |v: &[f64]| v[i] * (1.0 - t) + v[i + 1] * t;
        Some((lerp(&self.z), lerp(&self.half_h), self.bone[if t < 0.5 { i } else { i + 1 }]))
    }

    /// z of the rib's axis at phi (clamped to its ends).
    fn z_at(&self, phi: f64) -> f64 {
        self.sample(phi.clamp(self.phi0, self.phi1)).map_or(0.0, |s| s.0)
    }

    fn at(&self, phi: f64, z: f64, out: f64) -> Option<Tissue> {
        if z < self.zmin || z > self.zmax {
            return None;
        }
        let (zc, hh, bone) = self.sample(phi)?;
        let oc = 0.5 + self.half_t;
        let e = |dh: f64| ((z - zc) / (hh - dh)).powi(2) + ((out - oc) / (self.half_t - dh)).powi(2);
        if e(0.0) > 1.0 {
            return None;
        }
        Some(if !bone {
            Tissue::Cartilage
        } else if e(CORTEX) <= 1.0 {
            Tissue::TrabecularBone
        } else {
            Tissue::CorticalBone
        })
    }
}

/// Heights where the costal cartilages of ribs 1 to 7 meet the sternum.
pub(crate) struct SternalHeights {
    pub(crate) notch: f64,
    pub(crate) angle: f64,
    pub(crate) xiphoid: f64,
}

impl SternalHeights {
    fn rib(&self, k: usize) -> f64 {
        match k {
            1 => self.notch - 0.35 * (self.notch - self.angle),
            _ => self.angle - (k - 2) as f64 / 5.0 * (self.angle - self.xiphoid),
        }
    }
}

pub(crate) struct Ribs {
    ribs: Vec<Rib>,
    pub(crate) tubes: Vec<Tube>,
}

/// Angle of a rib's tubercle: where it meets its transverse process, about 32 mm from the midline.
fn tubercle_phi(lvl: &Level, rx: f64) -> f64 {
    ((rx + 24.0) / lvl.bp).atan()
}

impl Ribs {
    pub(crate) fn new(body: &Body, spine: &Spine, st: &SternalHeights, rng: &mut StdRng) -> Ribs {
        let mut ribs: Vec<Rib> = Vec::new();
        let mut tubes = Vec::new();
        let bone_tube = |a, b, ra, rb| Tube::new(a, b, ra, rb, Tissue::CorticalBone, Tissue::TrabecularBone, CORTEX, BONE, Gate::Always);
        for s in [1.0, -1.0] {
            for k in 1..=12 {
                let v = spine.get(Region::Thoracic, k);
                let z_head = v.top - 0.15 * (v.top - v.bot);
                let lvl = body.level(z_head);
                let phi0 = tubercle_phi(&lvl, v.rx);
                let phi_b = BONE_END[k - 1] + rng.random_range(-0.05..0.05);
                let drop = DROP[k - 1] * body.scale.z * rng.random_range(0.92..1.08);
                let z_end = z_head - drop;
                // Cartilage: ribs 1-7 reach the sternum, 8-10 rise to join the cartilage above,
                // 11 and 12 end free.
                let (phi1, z_cart_end) = match k {
                    1..=7 => (PI - 0.02, st.rib(k)),
                    8..=10 => {
                        let pj = (phi_b + 0.45).min(PI - 0.3);
                        (pj, ribs.last().map_or(z_end, |r| r.z_at(pj)))
                    }
                    _ => (phi_b, z_end),
                };
                let (half_t, first) = if k == 1 { (5.0, true) } else { (3.2, false) };
                let mut rib = Rib { s, phi0, phi1, half_t, z: vec![], half_h: vec![], bone: vec![], zmin: f64::INFINITY, zmax: f64::NEG_INFINITY };
                for i in 0..SAMPLES {
                    let phi = phi0 + (phi1 - phi0) * i as f64 / (SAMPLES - 1) as f64;
                    let (z, hh, bone) = if phi <= phi_b {
                        let u = (phi - phi0) / (phi_b - phi0);
                        (z_head - drop * u, if first { 4.0 } else { 4.5 + 2.0 * u }, true)
                    } else {
                        let u = (phi - phi_b) / (phi1 - phi_b);
                        (z_end + (z_cart_end - z_end) * u, 5.0, false)
                    };
                    rib.z.push(z);
                    rib.half_h.push(hh);
                    rib.bone.push(bone);
                    rib.zmin = rib.zmin.min(z - hh);
                    rib.zmax = rib.zmax.max(z + hh);
                }
                // Neck and head from the tubercle to the side of the vertebral body, and the
                // transverse process behind the tubercle.
                let t = lvl.point(s, phi0, 0.5 + half_t);
                let head = [s * (v.wx + 1.0), lvl.yvb - 0.2 * v.wyp, z_head - 2.0];
                tubes.push(bone_tube(head, [t[0], t[1], z_head], 3.2, 2.7));
                let yc = spine.canal_y(v.mid(), body.level(v.mid()).yvb);
                tubes.push(bone_tube([s * (v.rx + 3.0), yc + 1.0, z_head], [t[0], t[1] - 5.0, z_head], 3.6, 2.8));
                ribs.push(rib);
            }
        }
        Ribs { ribs, tubes }
    }

    /// A rib or cartilage at height z, angle phi on side s (sign of x), `out` mm beyond the cage.
    pub(crate) fn at(&self, s: f64, phi: f64, z: f64, out: f64) -> Option<Tissue> {
        if !(0.0..=11.0).contains(&out) {
            return None;
        }
        self.ribs.iter().filter(|r| r.s == s).find_map(|r| r.at(phi, z, out))
    }
}
