//! A procedural thorax in attenuation units (1/mm at about 70 keV): body with a fat layer, lungs
//! with vessel trees and nodules, heart, aorta, spine, ribs and sternum, and a mild texture.
//! Deterministic for a seed; the seed moves and varies every structure a little.
use super::geometry::VolumeGrid;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

/// Attenuation of water in 1/mm at about 70 keV (0 HU); `ct::units` converts HU with it.
pub const MU_WATER: f32 = 0.0193;
const LUNG: f32 = 0.0045;
const FAT: f32 = 0.0175;
const SOFT: f32 = 0.0197;
const BLOOD: f32 = 0.0203;
const MARROW: f32 = 0.024;
const BONE: f32 = 0.038;

struct Tube {
    pts: Vec<[f64; 3]>,
    radius: Vec<f64>,
    /// The box that holds the tube: most lung voxels are outside it, which spares them the
    /// distance to every segment (a fifth of a training step's time went there).
    lo: [f64; 3],
    hi: [f64; 3],
}

impl Tube {
    fn new(pts: Vec<[f64; 3]>, radius: Vec<f64>) -> Tube {
        let r = radius.iter().cloned().fold(0.0, f64::max);
        let lo = std::array::from_fn(|a| pts.iter().map(|p| p[a]).fold(f64::INFINITY, f64::min) - r);
        let hi = std::array::from_fn(|a| pts.iter().map(|p| p[a]).fold(f64::NEG_INFINITY, f64::max) + r);
        Tube { pts, radius, lo, hi }
    }

    fn may_hold(&self, p: [f64; 3]) -> bool {
        (0..3).all(|a| p[a] >= self.lo[a] && p[a] <= self.hi[a])
    }
}

struct Chest {
    body: [f64; 2],
    lungs: [([f64; 3], [f64; 3]); 2],
    heart: ([f64; 3], [f64; 3]),
    tubes: Vec<Tube>,
    nodules: Vec<([f64; 3], f64)>,
    waves: Vec<([f64; 3], f64)>,
    rib_phase: f64,
}

fn in_ellipsoid(p: [f64; 3], c: [f64; 3], s: [f64; 3]) -> bool {
    (0..3).map(|a| ((p[a] - c[a]) / s[a]).powi(2)).sum::<f64>() <= 1.0
}

fn seg_dist2(p: [f64; 3], a: [f64; 3], b: [f64; 3]) -> (f64, f64) {
    let ab: [f64; 3] = std::array::from_fn(|i| b[i] - a[i]);
    let ap: [f64; 3] = std::array::from_fn(|i| p[i] - a[i]);
    let l2: f64 = ab.iter().map(|v| v * v).sum::<f64>().max(1e-12);
    let t = ((0..3).map(|i| ap[i] * ab[i]).sum::<f64>() / l2).clamp(0.0, 1.0);
    ((0..3).map(|i| (ap[i] - t * ab[i]).powi(2)).sum(), t)
}

impl Chest {
    fn new(seed: u64) -> Chest {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut j = |a: f64| rng.random_range(-a..a);
        let body = [0.86 + j(0.05), 0.6 + j(0.05)];
        let lz = 0.05 + j(0.05);
        let lungs = [
            ([-0.38 + j(0.03), -0.02 + j(0.03), lz], [0.3 + j(0.03), 0.42 + j(0.03), 0.85]),
            ([0.38 + j(0.03), -0.02 + j(0.03), lz], [0.3 + j(0.03), 0.42 + j(0.03), 0.85]),
        ];
        let heart = ([0.08 + j(0.04), -0.15 + j(0.03), -0.25 + j(0.05)], [0.28 + j(0.03), 0.24 + j(0.03), 0.3 + j(0.04)]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
        let mut tubes = Vec::new();
        for side in [-1.0, 1.0] {
            for _ in 0..7 {
                let mut p = [0.15 * side, rng.random_range(-0.1..0.1), rng.random_range(-0.3..0.5)];
                let mut dir = [side * rng.random_range(0.4..1.0), rng.random_range(-0.6..0.6), rng.random_range(-0.6..0.6)];
                let (mut pts, mut radius) = (vec![p], vec![0.025]);
                for s in 1..12 {
                    for d in dir.iter_mut() {
                        *d += rng.random_range(-0.3..0.3);
                    }
                    let n = dir.iter().map(|v| v * v).sum::<f64>().sqrt();
                    p = std::array::from_fn(|i| p[i] + 0.05 * dir[i] / n);
                    pts.push(p);
                    radius.push(0.025 * (1.0 - s as f64 / 14.0) + 0.004);
                }
                tubes.push(Tube::new(pts, radius));
            }
        }
        let nodules = (0..rng.random_range(1..=3))
            .map(|_| {
                let l = &lungs[rng.random_range(0..2)];
                let c = std::array::from_fn(|a| l.0[a] + rng.random_range(-0.5..0.5) * l.1[a]);
                (c, rng.random_range(0.02..0.05))
            })
            .collect();
        // The phase range is part of the phantom's definition (the shipped prior was trained on it).
        #[allow(clippy::approx_constant)]
        let waves = (0..6).map(|_| (std::array::from_fn(|_| rng.random_range(-12.0..12.0)), rng.random_range(0.0..6.28))).collect();
        Chest { body, lungs, heart, tubes, nodules, waves, rib_phase: rng.random_range(0.0..0.15) }
    }

    fn rib(&self, p: [f64; 3]) -> bool {
        let r = ((p[0] / (self.body[0] - 0.08)).powi(2) + (p[1] / (self.body[1] - 0.07)).powi(2)).sqrt();
        if (r - 1.0).abs() > 0.045 || (p[0].abs() < 0.15 && p[1] < 0.0) {
            return false;
        }
        // Ribs slope down towards the front: posterior ends sit higher.
        let z = p[2] - 0.08 * p[1] - self.rib_phase;
        let phase = (z + 1.0).rem_euclid(0.16);
        phase < 0.035
    }

    fn value(&self, p: [f64; 3]) -> f32 {
        let e = (p[0] / self.body[0]).powi(2) + (p[1] / self.body[1]).powi(2);
        if e > 1.0 {
            return 0.0;
        }
        let spine = ((p[0]).powi(2) + (p[1] - 0.42).powi(2)).sqrt();
        if spine < 0.09 {
            let disc = (p[2] + 1.0).rem_euclid(0.16) < 0.03;
            return if disc { SOFT } else if spine < 0.06 { MARROW } else { BONE };
        }
        if p[0].abs() < 0.08 && (p[1] + 0.55).abs() < 0.03 || self.rib(p) {
            return BONE;
        }
        if ((p[0] + 0.1).powi(2) + (p[1] - 0.25).powi(2)).sqrt() < 0.07 || in_ellipsoid(p, self.heart.0, self.heart.1) {
            return BLOOD;
        }
        if self.lungs.iter().any(|l| in_ellipsoid(p, l.0, l.1)) {
            for (c, r) in &self.nodules {
                if (0..3).map(|a| (p[a] - c[a]).powi(2)).sum::<f64>() < r * r {
                    return SOFT;
                }
            }
            for t in self.tubes.iter().filter(|t| t.may_hold(p)) {
                for s in 0..t.pts.len() - 1 {
                    let (d2, u) = seg_dist2(p, t.pts[s], t.pts[s + 1]);
                    let r = t.radius[s] * (1.0 - u) + t.radius[s + 1] * u;
                    if d2 < r * r {
                        return BLOOD;
                    }
                }
            }
            return LUNG;
        }
        let texture = 1.0 + 0.02 * self.waves.iter().map(|(k, ph)| (k[0] * p[0] + k[1] * p[1] + k[2] * p[2] + ph).sin()).sum::<f64>() / 6.0;
        // A fat layer under the skin.
        (if e > 0.82 { FAT } else { SOFT }) * texture as f32
    }
}

/// The chest on `grid` (phantom coordinates span the box), one sample per voxel centre.
pub fn chest(grid: &VolumeGrid, seed: u64) -> Vec<f32> {
    let c = Chest::new(seed);
    let [_, ny, nx] = grid.shape;
    let n = grid.n_xyz();
    let mut out = vec![0f32; grid.len()];
    out.par_chunks_mut(nx).enumerate().for_each(|(kj, row)| {
        let (k, j) = (kj / ny, kj % ny);
        for (i, v) in row.iter_mut().enumerate() {
            let p = [
                -1.0 + (2 * i + 1) as f64 / n[0] as f64,
                -1.0 + (2 * j + 1) as f64 / n[1] as f64,
                -1.0 + (2 * k + 1) as f64 / n[2] as f64,
            ];
            *v = c.value(p);
        }
    });
    out
}
