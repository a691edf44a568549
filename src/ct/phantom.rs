//! Phantoms, deterministic for a seed: 3D Shepp-Logan (Kak-Slaney and Yu-Ye-Wang densities),
//! random ellipsoids in a body, a procedural chest, and a procedural thorax in physical units
//! (`anatomy`). Ellipsoid phantoms also have exact line integrals, which the projector tests
//! converge to.
//!
//! Phantom coordinates span [-1, 1] on each axis of the volume box (the box's half extents scale
//! x, y and z), so a phantom fills any grid; except "thorax", which is in mm and centred on the
//! world origin: its grid's voxel size decides how much of it shows (`default_voxel_mm`).
use super::geometry::{Geometry, VolumeGrid, V3};
use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

/// An ellipsoid in phantom coordinates: semi-axes, centre, rotation (columns: the body axes), density.
#[derive(Clone, Debug)]
pub struct Ellipsoid {
    /// Semi-axes along the body axes, in phantom units (1 = half the box's extent on that axis).
    pub semi: V3,
    /// Centre (x, y, z) in phantom coordinates, [-1, 1] across the volume box.
    pub centre: V3,
    /// Rotation, row-major; its columns are the body axes in phantom (x, y, z).
    pub rot: [[f64; 3]; 3],
    /// Value added inside (overlapping ellipsoids add up); a unitless density in the built-in
    /// phantoms.
    pub rho: f64,
}

fn rot_z(deg: f64) -> [[f64; 3]; 3] {
    let (s, c) = deg.to_radians().sin_cos();
    [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
}

fn matmul3(a: [[f64; 3]; 3], b: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    std::array::from_fn(|i| std::array::from_fn(|j| (0..3).map(|k| a[i][k] * b[k][j]).sum()))
}

fn rot_x(deg: f64) -> [[f64; 3]; 3] {
    let (s, c) = deg.to_radians().sin_cos();
    [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]
}

impl Ellipsoid {
    /// p, q mapped into the unit sphere's frame: D^-1 R^T (x - centre).
    fn to_unit(&self, x: V3, is_dir: bool) -> V3 {
        let y: V3 = std::array::from_fn(|a| x[a] - if is_dir { 0.0 } else { self.centre[a] });
        std::array::from_fn(|i| (0..3).map(|k| self.rot[k][i] * y[k]).sum::<f64>() / self.semi[i])
    }
    /// Whether the point `x` (phantom coordinates x, y, z) lies inside or on the ellipsoid.
    pub fn contains(&self, x: V3) -> bool {
        let p = self.to_unit(x, false);
        p[0] * p[0] + p[1] * p[1] + p[2] * p[2] <= 1.0
    }
    /// Length in t of the ray p + t q (phantom coordinates) inside the ellipsoid, within [t0, t1].
    pub fn chord_t(&self, o: V3, d: V3, t0: f64, t1: f64) -> f64 {
        let (p, q) = (self.to_unit(o, false), self.to_unit(d, true));
        let a = q[0] * q[0] + q[1] * q[1] + q[2] * q[2];
        let b = p[0] * q[0] + p[1] * q[1] + p[2] * q[2];
        let c = p[0] * p[0] + p[1] * p[1] + p[2] * p[2] - 1.0;
        let disc = b * b - a * c;
        if disc <= 0.0 || a == 0.0 {
            return 0.0;
        }
        let r = disc.sqrt();
        let (lo, hi) = ((-b - r) / a, (-b + r) / a);
        (hi.min(t1) - lo.max(t0)).max(0.0)
    }
}

/// The density set of the 3D Shepp-Logan head phantom (Shepp-Logan 1974, in 3D as Kak & Slaney
/// 1988); both use the same ten ellipsoids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SheppLogan {
    /// Kak & Slaney (1988): Shepp and Logan's original densities, low contrast (inner steps of
    /// 0.01 to 0.02 against a skull of 1.0).
    KakSlaney,
    /// Yu, Ye & Wang (2004), "modified": inner steps of 0.1 to 0.2, better contrast for display.
    YuYeWang,
}

/// 3D Shepp-Logan: (a, b, c, x0, y0, z0, phi, KS density, YYW density), as in Kak & Slaney (1988) Table 3.1 (3D) and Yu, Ye & Wang (2004).
const SHEPP_LOGAN: [[f64; 9]; 10] = [
    [0.69, 0.92, 0.90, 0.0, 0.0, 0.0, 0.0, 2.0, 1.0],
    [0.6624, 0.874, 0.88, 0.0, 0.0, 0.0, 0.0, -0.98, -0.8],
    [0.41, 0.16, 0.21, -0.22, 0.0, -0.25, 108.0, -0.02, -0.2],
    [0.31, 0.11, 0.22, 0.22, 0.0, -0.25, 72.0, -0.02, -0.2],
    [0.21, 0.25, 0.50, 0.0, 0.35, -0.25, 0.0, 0.02, 0.2],
    [0.046, 0.046, 0.046, 0.0, 0.1, -0.25, 0.0, 0.02, 0.2],
    [0.046, 0.023, 0.02, -0.08, -0.65, -0.25, 0.0, 0.01, 0.1],
    [0.046, 0.023, 0.02, 0.06, -0.65, -0.25, 90.0, 0.01, 0.1],
    [0.056, 0.04, 0.10, 0.06, -0.105, 0.625, 90.0, 0.02, 0.2],
    [0.056, 0.056, 0.10, 0.0, 0.1, 0.625, 0.0, -0.02, -0.2],
];

/// The ten ellipsoids of the 3D Shepp-Logan head phantom in phantom coordinates (rotations about
/// z), with the densities of `d`.
pub fn shepp_logan(d: SheppLogan) -> Vec<Ellipsoid> {
    SHEPP_LOGAN
        .iter()
        .map(|r| Ellipsoid {
            semi: [r[0], r[1], r[2]],
            centre: [r[3], r[4], r[5]],
            rot: rot_z(r[6]),
            rho: if d == SheppLogan::KakSlaney { r[7] } else { r[8] },
        })
        .collect()
}

/// A body ellipsoid holding 6..=16 random ellipsoids of random size, orientation and contrast:
/// the 3D form of the "random ellipses" benchmark.
pub fn random_ellipsoids(seed: u64) -> Vec<Ellipsoid> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let body: V3 = [rng.random_range(0.7..0.92), rng.random_range(0.6..0.9), rng.random_range(0.75..0.95)];
    let mut out = vec![Ellipsoid { semi: body, centre: [0.0; 3], rot: rot_z(rng.random_range(-15.0..15.0)), rho: 1.0 }];
    let n = rng.random_range(6..=16);
    for _ in 0..n {
        let semi: V3 = std::array::from_fn(|_| rng.random_range(0.03..0.3));
        // A centre well inside the body, so that the inclusion stays mostly within it.
        let u: V3 = std::array::from_fn(|_| rng.random_range(-0.6..0.6));
        let centre: V3 = std::array::from_fn(|a| u[a] * body[a]);
        let rot = matmul3(rot_z(rng.random_range(0.0..180.0)), rot_x(rng.random_range(-40.0..40.0)));
        let rho = rng.random_range(0.1..0.5) * if rng.random_bool(0.5) { 1.0 } else { -1.0 };
        out.push(Ellipsoid { semi, centre, rot, rho });
    }
    out
}

/// Phantom coordinates of world point w on this grid.
fn to_phantom(grid: &VolumeGrid, w: V3, is_dir: bool) -> V3 {
    let (h, o) = half_extent(grid);
    std::array::from_fn(|a| (w[a] - if is_dir { 0.0 } else { o[a] }) / h[a])
}

/// Half extents (x, y, z) and centre of the volume box.
fn half_extent(grid: &VolumeGrid) -> (V3, V3) {
    let s = grid.step_xyz();
    let n = grid.n_xyz();
    let o = grid.origin;
    (std::array::from_fn(|a| n[a] as f64 * s[a] / 2.0), [o[2], o[1], o[0]])
}

/// Voxelises ellipsoids: each voxel takes the mean over `sub`^3 points of its cell (sub = 1: the centre).
pub fn voxelize(ellipsoids: &[Ellipsoid], grid: &VolumeGrid, sub: usize) -> Vec<f32> {
    let [nz, ny, nx] = grid.shape;
    let s = grid.step_xyz();
    let sub = sub.max(1);
    let mut out = vec![0f32; grid.len()];
    out.par_chunks_mut(nx).enumerate().for_each(|(kj, row)| {
        let (k, j) = (kj / ny, kj % ny);
        for (i, v) in row.iter_mut().enumerate() {
            let c = grid.voxel_centre(k, j, i);
            let mut acc = 0.0;
            for a in 0..sub {
                for b in 0..sub {
                    for e in 0..sub {
                        let off = |m: usize, ax: usize| ((m as f64 + 0.5) / sub as f64 - 0.5) * s[ax];
                        let w = [c[0] + off(a, 0), c[1] + off(b, 1), c[2] + off(e, 2)];
                        let p = to_phantom(grid, w, false);
                        acc += ellipsoids.iter().filter(|el| el.contains(p)).map(|el| el.rho).sum::<f64>();
                    }
                }
            }
            *v = (acc / (sub * sub * sub) as f64) as f32;
        }
    });
    let _ = nz;
    out
}

/// Exact line integrals of the ellipsoids along every ray of the geometry (n_views, rows, cols).
pub fn analytic_projection(ellipsoids: &[Ellipsoid], g: &Geometry) -> Vec<f32> {
    let [rows, cols] = g.det_shape;
    let mut out = vec![0f32; g.n_rays()];
    out.par_chunks_mut(cols).enumerate().for_each(|(vr, row)| {
        let (vi, r) = (vr / rows, vr % rows);
        for (c, o) in row.iter_mut().enumerate() {
            let (org, dir, t0, t1) = g.ray(vi, r, c);
            let (p, q) = (to_phantom(&g.volume, org, false), to_phantom(&g.volume, dir, true));
            let len = (dir[0] * dir[0] + dir[1] * dir[1] + dir[2] * dir[2]).sqrt();
            // Only the part of the ray inside the volume box counts, as for the projector.
            let Some((a, b)) = super::siddon::clip(g, (org, dir, t0, t1)) else { continue };
            *o = (ellipsoids.iter().map(|e| e.rho * e.chord_t(p, q, a, b)).sum::<f64>() * len) as f32;
        }
    });
    out
}

/// The phantoms `tomodiff phantom` makes by name, in attenuation (1/mm at about 70 keV; "thorax"
/// is `anatomy::thorax_hu` converted by `units::hu_to_mu`). Unknown names are an error.
pub fn by_name(name: &str, grid: &VolumeGrid, seed: u64) -> Result<Vec<f32>> {
    match name {
        "shepp-logan" => Ok(voxelize(&shepp_logan(SheppLogan::YuYeWang), grid, 2)),
        "shepp-logan-ks" => Ok(voxelize(&shepp_logan(SheppLogan::KakSlaney), grid, 2)),
        "ellipsoids" => Ok(voxelize(&random_ellipsoids(seed), grid, 2)),
        "chest" => Ok(super::chest::chest(grid, seed)),
        "thorax" => Ok(super::anatomy::thorax_hu(grid, seed).into_iter().map(super::units::hu_to_mu).collect()),
        _ => Err(Error::Argument(format!("unknown phantom {name:?}: expected shepp-logan, shepp-logan-ks, ellipsoids, chest or thorax"))),
    }
}

/// Phantom `name` as a CT voxel holds it, the mean attenuation over the voxel: `supersampled`
/// (k times finer per axis) averaged over each voxel of `grid`. k = 1 is `by_name` as is: the
/// value at each voxel centre for "thorax" and "chest", which aliases structures thinner than a
/// voxel into isolated bright or dark voxels (the ellipsoid phantoms already average 2^3 points
/// per voxel). Costs k^3 times the rendering. Errors as `supersampled`.
pub fn averaged(name: &str, grid: &VolumeGrid, seed: u64, k: usize) -> Result<Vec<f32>> {
    if k == 1 {
        return by_name(name, grid, seed);
    }
    let (fine_grid, fine) = supersampled(name, grid, seed, k)?;
    Ok(crate::ops::resample::area_ref(&fine, fine_grid.shape, grid.shape))
}

/// The most voxels `supersampled` renders (2^30, 4 GiB of f32).
pub const MAX_SUPERSAMPLED_VOXELS: usize = 1 << 30;

/// Whether `shape` can be supersampled by k: k >= 1 and at most `MAX_SUPERSAMPLED_VOXELS` in
/// the refined grid; `Error::Argument` otherwise.
pub fn check_supersample(shape: [usize; 3], k: usize) -> Result<()> {
    let n = shape.iter().try_fold(1usize, |a, d| a.checked_mul(d.checked_mul(k)?));
    if k == 0 || n.is_none_or(|n| n > MAX_SUPERSAMPLED_VOXELS) {
        return Err(Error::Argument(format!("supersampling {shape:?} voxels by {k} per axis: expected a factor of at least 1, and at most {MAX_SUPERSAMPLED_VOXELS} voxels in all")));
    }
    Ok(())
}

/// Phantom `name` rendered by `by_name` on `grid` refined k times per axis (voxels of a k-th the
/// size, the same box and origin), with that grid. `Error::Argument` for k = 0, a refined grid
/// over `MAX_SUPERSAMPLED_VOXELS`, or an unknown name.
pub fn supersampled(name: &str, grid: &VolumeGrid, seed: u64, k: usize) -> Result<(VolumeGrid, Vec<f32>)> {
    check_supersample(grid.shape, k)?;
    let fine = VolumeGrid { shape: grid.shape.map(|n| k * n), voxel_size: grid.voxel_size.map(|s| s / k as f64), origin: grid.origin };
    let v = by_name(name, &fine, seed)?;
    Ok((fine, v))
}

/// The phantom names `by_name` accepts.
pub const NAMES: [&str; 5] = ["shepp-logan", "shepp-logan-ks", "ellipsoids", "chest", "thorax"];

/// Field of view (mm) across the larger of ny, nx that `default_voxel_mm` gives "thorax".
pub const THORAX_FOV_MM: f64 = 440.0;

/// Voxel size (sz, sy, sx) in mm to render phantom `name` on `shape` (nz, ny, nx) with: for
/// "thorax", which is built in mm, isotropic voxels of 440 mm (`THORAX_FOV_MM`) over the larger
/// of ny and nx, so the whole body and table are in view; 1 mm for the others, which fill any
/// grid's box whatever its voxel size. A shape with ny = nx = 0 gives 1 mm.
pub fn default_voxel_mm(name: &str, shape: [usize; 3]) -> [f64; 3] {
    let across = shape[1].max(shape[2]);
    if name == "thorax" && across > 0 {
        [THORAX_FOV_MM / across as f64; 3]
    } else {
        [1.0; 3]
    }
}
