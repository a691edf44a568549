//! The Siddon projector pair: forward A (ray sums of intersection length x voxel value, Jacobs'
//! incremental traversal) and its exact adjoint A^T (the same weights scattered back).
//! CPU reference here (f64 traversal and accumulation); kernels/siddon.cu runs the same
//! traversal in f32 on emu and cuda.
use super::geometry::{Geometry, VolumeGrid, V3};
use crate::device::{Buffer, Device, Launch};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use rayon::prelude::*;

/// The part [ta, tb] of the ray's t range inside the box [lo, hi], if any.
fn clip_box(o: V3, d: V3, t0: f64, t1: f64, lo: V3, hi: V3) -> Option<(f64, f64)> {
    let (mut a, mut b) = (t0, t1);
    for ax in 0..3 {
        if d[ax] == 0.0 {
            if o[ax] <= lo[ax] || o[ax] >= hi[ax] {
                return None;
            }
        } else {
            let inv = 1.0 / d[ax];
            let (ta, tb) = ((lo[ax] - o[ax]) * inv, (hi[ax] - o[ax]) * inv);
            a = a.max(ta.min(tb));
            b = b.min(ta.max(tb));
        }
    }
    (a < b).then_some((a, b))
}

/// The ray's t range inside the whole volume.
pub fn clip(g: &Geometry, ray: (V3, V3, f64, f64)) -> Option<(f64, f64)> {
    let (lo, hi) = g.box_bounds();
    clip_box(ray.0, ray.1, ray.2, ray.3, lo, hi)
}

/// Calls visit(linear voxel index, intersection length in mm) for every voxel of z-planes
/// [z0, z1) that the ray crosses, in order.
///
/// Each axis crosses exactly as many planes as lie between its entry and exit voxels (then its
/// next crossing becomes infinite), so rounding can never walk out of the volume; the axis whose
/// plane comes first is picked by comparisons that compile to selects.
pub fn trace(vol: &VolumeGrid, ray: (V3, V3, f64, f64), z0: usize, z1: usize, mut visit: impl FnMut(usize, f64)) {
    let (o, d, t0, t1) = ray;
    let lo = vol.corner();
    let s = vol.step_xyz();
    let n = vol.n_xyz();
    let first = [0, 0, z0];
    let end = [n[0], n[1], z1];
    let blo: V3 = std::array::from_fn(|a| lo[a] + first[a] as f64 * s[a]);
    let bhi: V3 = std::array::from_fn(|a| lo[a] + end[a] as f64 * s[a]);
    let Some((ta, tb)) = clip_box(o, d, t0, t1, blo, bhi) else { return };
    let len = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
    let stride = [1i64, n[0] as i64, (n[0] * n[1]) as i64];
    let voxel = |a: usize, t: f64| -> i64 {
        (((o[a] + t * d[a] - lo[a]) / s[a]).floor() as i64).clamp(first[a] as i64, end[a] as i64 - 1)
    };
    let mut tnext = [f64::INFINITY; 3];
    let mut dt = [0.0; 3];
    let mut dlin = [0i64; 3];
    let mut left = [0i64; 3];
    let mut lin = 0i64;
    for a in 0..3 {
        let i = voxel(a, ta);
        lin += i * stride[a];
        if d[a] != 0.0 {
            let step = if d[a] > 0.0 { 1 } else { -1 };
            left[a] = (voxel(a, tb) - i) * step;
            if left[a] > 0 {
                let plane = lo[a] + (i + (step > 0) as i64) as f64 * s[a];
                tnext[a] = (plane - o[a]) / d[a];
                dt[a] = s[a] / d[a].abs();
                dlin[a] = step * stride[a];
            }
        }
    }
    // The loop is latency-bound per ray: keep the state in scalars and pick the axis with
    // selects, so the chain per step is a compare, a select and an add.
    let (mut tx, mut ty, mut tz) = (tnext[0], tnext[1], tnext[2]);
    let (mut lx, mut ly, mut lz) = (left[0], left[1], left[2]);
    let mut t = ta;
    loop {
        let tmin = tx.min(ty).min(tz);
        let te = tmin.min(tb);
        if te > t {
            visit(lin as usize, (te - t) * len);
            t = te;
        }
        if tmin == f64::INFINITY {
            return;
        }
        let cx = tx == tmin;
        let cy = !cx && ty == tmin;
        let cz = !cx && !cy;
        lin += if cx { dlin[0] } else if cy { dlin[1] } else { dlin[2] };
        lx -= cx as i64;
        ly -= cy as i64;
        lz -= cz as i64;
        tx = if cx { if lx > 0 { tx + dt[0] } else { f64::INFINITY } } else { tx };
        ty = if cy { if ly > 0 { ty + dt[1] } else { f64::INFINITY } } else { ty };
        tz = if cz { if lz > 0 { tz + dt[2] } else { f64::INFINITY } } else { tz };
    }
}

/// Lengths of a volume and projections against the geometry.
fn check_lengths(g: &Geometry, vol: usize, proj: usize) -> Result<()> {
    if vol != g.volume.len() || proj != g.n_rays() {
        return Err(Error::Shape(format!(
            "{vol} volume and {proj} projection values; the geometry has {} voxels {:?} and {} rays {:?}",
            g.volume.len(),
            g.volume.shape,
            g.n_rays(),
            g.proj_shape()
        )));
    }
    Ok(())
}

/// CPU forward projection: proj (n_views, rows, cols) = A vol (nz, ny, nx), Siddon's exact
/// intersection lengths (mm) times mu (1/mm). `Error::Shape` when a length disagrees with `g`.
pub fn forward_ref(g: &Geometry, vol: &[f32], proj: &mut [f32]) -> Result<()> {
    check_lengths(g, vol.len(), proj.len())?;
    let [rows, cols] = g.det_shape;
    let nz = g.volume.shape[0];
    proj.par_chunks_mut(cols).enumerate().for_each(|(vr, out)| {
        let (vi, r) = (vr / rows, vr % rows);
        for (c, o) in out.iter_mut().enumerate() {
            let mut acc = 0.0f64;
            // SAFETY: trace clamps every index into the volume, whose length the caller matched.
            trace(&g.volume, g.ray(vi, r, c), 0, nz, |i, l| acc += l * unsafe { *vol.get_unchecked(i) } as f64);
            *o = acc as f32;
        }
    });
    Ok(())
}

/// Volumes with fewer z-planes than this are back-projected by groups of views (`VIEW_GROUP`)
/// rather than by slabs of planes.
const THIN_PLANES: usize = 16;
const VIEW_GROUP: usize = 4;

/// CPU exact adjoint: vol = A^T proj, summed in f64. Thick volumes: threads own slabs of
/// z-planes (each voxel written by one thread, no extra memory). Thin ones (fewer than
/// `THIN_PLANES`): groups of views into private volumes, summed in group order.
/// `Error::Shape` when a length disagrees with `g`.
pub fn adjoint_ref(g: &Geometry, proj: &[f32], vol: &mut [f32]) -> Result<()> {
    check_lengths(g, vol.len(), proj.len())?;
    let [nz, ny, nx] = g.volume.shape;
    let plane = ny * nx;
    let threads = rayon::current_num_threads();
    let [rows, cols] = g.det_shape;
    let scatter = |views: std::ops::Range<usize>, z0: usize, z1: usize, acc: &mut [f64]| {
        let base = z0 * plane;
        for vi in views {
            for r in 0..rows {
                for c in 0..cols {
                    let y = proj[(vi * rows + r) * cols + c] as f64;
                    if y != 0.0 {
                        trace(&g.volume, g.ray(vi, r, c), z0, z1, |i, l| acc[i - base] += l * y);
                    }
                }
            }
        }
    };
    // The branch and the grouping depend on the geometry alone, never on the thread count, so
    // every voxel's sum runs in the same order on any machine (bit-identical results).
    if nz >= THIN_PLANES {
        let per = nz.div_ceil(threads * 4);
        vol.par_chunks_mut(per * plane).enumerate().for_each(|(si, out)| {
            let (z0, z1) = (si * per, (si * per + per).min(nz));
            let mut acc = vec![0.0f64; out.len()];
            scatter(0..g.n_views(), z0, z1, &mut acc);
            out.iter_mut().zip(acc).for_each(|(o, a)| *o = a as f32);
        });
    } else {
        let nv = g.n_views();
        let parts: Vec<Vec<f64>> = (0..nv.div_ceil(VIEW_GROUP))
            .into_par_iter()
            .map(|k| {
                let mut acc = vec![0.0f64; vol.len()];
                scatter(k * VIEW_GROUP..((k + 1) * VIEW_GROUP).min(nv), 0, nz, &mut acc);
                acc
            })
            .collect();
        let mut total = vec![0.0f64; vol.len()];
        for part in parts {
            total.iter_mut().zip(part).for_each(|(x, y)| *x += y);
        }
        vol.iter_mut().zip(total).for_each(|(o, a)| *o = a as f32);
    }
    Ok(())
}

/// The projector pair on a device. Views live on the device once; volumes and projections are
/// f32 tensors of shape (nz, ny, nx) and (n_views, rows, cols).
pub struct Projector {
    geom: Geometry,
    dev: Device,
    views: Option<Buffer>,
    /// Nanoseconds spent in forward and adjoint (synchronized), for the benchmarks' split.
    busy_ns: std::sync::atomic::AtomicU64,
}

impl Projector {
    /// Device memory of the whole problem: volume, projections and views, in f32.
    pub fn memory_bytes(geom: &Geometry) -> usize {
        (geom.volume.len() + geom.n_rays() + geom.n_views() * 15) * 4
    }

    /// On CUDA, fails with the figures when the volume alone does not fit in free memory.
    /// Projections larger than memory stream through `forward_to_host`/`adjoint_from_host`.
    pub fn new(geom: Geometry, dev: &Device) -> Result<Projector> {
        if let Device::Cuda(d) = dev {
            let need = (geom.volume.len() + geom.n_views() * 15) * 4;
            let free = d.free_memory()?;
            if need > free {
                return Err(Error::Shape(format!(
                    "the volume {:?} needs {:.2} GiB on {}, {:.2} GiB are free (z-slabs are not implemented)",
                    geom.volume.shape,
                    need as f64 / (1u64 << 30) as f64,
                    dev.name(),
                    free as f64 / (1u64 << 30) as f64
                )));
            }
        }
        let views = if dev.runs_kernels() {
            let flat: Vec<f32> =
                geom.views.iter().flat_map(|w| [w.src, w.src_row, w.det, w.u, w.v].into_iter().flatten().map(|x| x as f32)).collect();
            Some(dev.upload(bytemuck::cast_slice(&flat))?)
        } else {
            None
        };
        Ok(Projector { geom, dev: dev.clone(), views, busy_ns: Default::default() })
    }

    /// The geometry the projector was built for: it fixes the volume and projection shapes.
    pub fn geometry(&self) -> &Geometry {
        &self.geom
    }
    /// The device `forward` and `adjoint` run on; their tensors must live there.
    pub fn device(&self) -> &Device {
        &self.dev
    }

    fn check(&self, vol: &Tensor, proj: &Tensor) -> Result<()> {
        let vs = self.geom.volume.shape.to_vec();
        let ps = self.geom.proj_shape().to_vec();
        if vol.shape() != vs.as_slice() {
            return Err(Error::Shape(format!("volume has shape {:?}, the geometry says {vs:?}", vol.shape())));
        }
        if proj.shape() != ps.as_slice() {
            return Err(Error::Shape(format!("projections have shape {:?}, the geometry says {ps:?} (views, rows, cols)", proj.shape())));
        }
        for t in [vol, proj] {
            crate::ops::expect_dtype("projector", t, DType::F32)?;
        }
        crate::ops::same_device("projector", &[vol, proj])
    }

    /// Seconds spent in `forward` and `adjoint` so far.
    pub fn busy_seconds(&self) -> f64 {
        self.busy_ns.load(std::sync::atomic::Ordering::Relaxed) as f64 * 1e-9
    }

    fn timed(&self, f: impl FnOnce() -> Result<()>) -> Result<()> {
        let t0 = std::time::Instant::now();
        f()?;
        self.dev.synchronize()?;
        self.busy_ns.fetch_add(t0.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// proj = A vol
    pub fn forward(&self, vol: &Tensor, proj: &mut Tensor) -> Result<()> {
        self.timed(|| self.forward_untimed(vol, proj))
    }

    /// vol = A^T proj (overwrites vol).
    pub fn adjoint(&self, proj: &Tensor, vol: &mut Tensor) -> Result<()> {
        self.timed(|| self.adjoint_untimed(proj, vol))
    }

    /// A vol for a host volume (nz, ny, nx): the line integrals (views, rows, cols), on the host.
    pub fn forward_host(&self, vol: &[f32]) -> Result<Vec<f32>> {
        let x = Tensor::from_f32(vol, &self.geom.volume.shape, DType::F32, &self.dev)?;
        let mut y = Tensor::zeros(&self.geom.proj_shape(), DType::F32, &self.dev)?;
        self.forward(&x, &mut y)?;
        y.to_f32_vec()
    }

    /// A^T proj for host projections (views, rows, cols): the volume (nz, ny, nx), on the host.
    pub fn adjoint_host(&self, proj: &[f32]) -> Result<Vec<f32>> {
        let y = Tensor::from_f32(proj, &self.geom.proj_shape(), DType::F32, &self.dev)?;
        let mut x = Tensor::zeros(&self.geom.volume.shape, DType::F32, &self.dev)?;
        self.adjoint(&y, &mut x)?;
        x.to_f32_vec()
    }

    fn forward_untimed(&self, vol: &Tensor, proj: &mut Tensor) -> Result<()> {
        self.check(vol, proj)?;
        match &self.views {
            None => {
                let v = vol.host_f32().ok_or_else(|| Error::DType("host f32 expected".into()))?;
                forward_ref(&self.geom, v, proj.host_f32_mut().ok_or_else(|| Error::DType("host f32 expected".into()))?)?;
                Ok(())
            }
            Some(views) => self.launch("siddon_fwd_f32", vol.buffer(), proj.buffer(), views, 0, self.geom.n_views()),
        }
    }

    fn adjoint_untimed(&self, proj: &Tensor, vol: &mut Tensor) -> Result<()> {
        self.check(vol, proj)?;
        match &self.views {
            None => {
                let p = proj.host_f32().ok_or_else(|| Error::DType("host f32 expected".into()))?;
                adjoint_ref(&self.geom, p, vol.host_f32_mut().ok_or_else(|| Error::DType("host f32 expected".into()))?)?;
                Ok(())
            }
            Some(views) => {
                // Scattered with atomics: start from zero.
                vol.buffer_mut().zero()?;
                self.launch("siddon_adj_f32", vol.buffer(), proj.buffer(), views, 0, self.geom.n_views())
            }
        }
    }

    /// Views per slab when the projections stream through `budget` bytes of device memory next to
    /// the volume; an error with the figures when not even one view fits.
    pub fn slab_views(&self, budget: usize) -> Result<usize> {
        let g = &self.geom;
        let fixed = (g.volume.len() + g.n_views() * 15) * 4;
        let per_view = g.det_shape[0] * g.det_shape[1] * 4;
        if budget < fixed + per_view {
            return Err(Error::Shape(format!(
                "a memory budget of {:.3} GiB cannot hold the volume {:?} ({:.3} GiB) and one view of {:?}; z-slabs are not implemented",
                budget as f64 / (1u64 << 30) as f64,
                g.volume.shape,
                (g.volume.len() * 4) as f64 / (1u64 << 30) as f64,
                g.det_shape
            )));
        }
        Ok(((budget - fixed) / per_view).min(g.n_views()))
    }

    /// out (host, (n_views, rows, cols)) = A vol, streaming slabs of views through `budget` bytes
    /// of device memory; `progress(done views, all views)` after each slab.
    pub fn forward_to_host(&self, vol: &Tensor, out: &mut [f32], budget: usize, mut progress: impl FnMut(usize, usize)) -> Result<()> {
        let g = &self.geom;
        if out.len() != g.n_rays() {
            return Err(Error::Shape(format!("{} projection values for {} rays", out.len(), g.n_rays())));
        }
        let Some(views) = &self.views else {
            let v = vol.host_f32().ok_or_else(|| Error::DType("host f32 expected".into()))?;
            forward_ref(g, v, out)?;
            progress(g.n_views(), g.n_views());
            return Ok(());
        };
        let per = self.slab_views(budget)?;
        let view_len = g.det_shape[0] * g.det_shape[1];
        let slab = self.dev.alloc(per * view_len * 4)?;
        for v0 in (0..g.n_views()).step_by(per) {
            let nv = per.min(g.n_views() - v0);
            self.launch("siddon_fwd_f32", vol.buffer(), &slab, views, v0, nv)?;
            let bytes = slab.read()?;
            out[v0 * view_len..(v0 + nv) * view_len].copy_from_slice(&bytemuck::cast_slice(&bytes)[..nv * view_len]);
            progress(v0 + nv, g.n_views());
        }
        Ok(())
    }

    /// vol = A^T proj for projections on the host, streamed in slabs of views as forward_to_host.
    pub fn adjoint_from_host(&self, proj: &[f32], vol: &mut Tensor, budget: usize, mut progress: impl FnMut(usize, usize)) -> Result<()> {
        let g = &self.geom;
        if proj.len() != g.n_rays() {
            return Err(Error::Shape(format!("{} projection values for {} rays", proj.len(), g.n_rays())));
        }
        let Some(views) = &self.views else {
            adjoint_ref(g, proj, vol.host_f32_mut().ok_or_else(|| Error::DType("host f32 expected".into()))?)?;
            progress(g.n_views(), g.n_views());
            return Ok(());
        };
        let per = self.slab_views(budget)?;
        let view_len = g.det_shape[0] * g.det_shape[1];
        vol.buffer_mut().zero()?;
        let mut slab = self.dev.alloc(per * view_len * 4)?;
        for v0 in (0..g.n_views()).step_by(per) {
            let nv = per.min(g.n_views() - v0);
            let mut chunk = vec![0f32; per * view_len];
            chunk[..nv * view_len].copy_from_slice(&proj[v0 * view_len..(v0 + nv) * view_len]);
            slab.write(bytemuck::cast_slice(&chunk))?;
            self.launch("siddon_adj_f32", vol.buffer(), &slab, views, v0, nv)?;
            progress(v0 + nv, g.n_views());
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn launch(&self, kernel: &str, vol: &Buffer, proj: &Buffer, views: &Buffer, view0: usize, nviews: usize) -> Result<()> {
        let g = &self.geom;
        let [nz, ny, nx] = g.volume.shape;
        let c = g.volume.corner();
        let s = g.volume.step_xyz();
        let [rows, cols] = g.det_shape;
        let rays = nviews * rows * cols;
        let block = 128u32;
        let blocks = rays.div_ceil(block as usize);
        if blocks > i32::MAX as usize {
            return Err(Error::Shape(format!("{rays} rays exceed one launch")));
        }
        Launch::new(kernel)?
            .grid([blocks as u32, 1, 1])
            .block([block, 1, 1])
            .buf(vol)
            .buf(proj)
            .buf(views)
            .i32(view0 as i32)
            .i32((g.beam == super::Beam::Parallel) as i32)
            .i32(nx as i32)
            .i32(ny as i32)
            .i32(nz as i32)
            .f32(c[0] as f32)
            .f32(c[1] as f32)
            .f32(c[2] as f32)
            .f32(s[0] as f32)
            .f32(s[1] as f32)
            .f32(s[2] as f32)
            .i32(nviews as i32)
            .i32(rows as i32)
            .i32(cols as i32)
            .run(&self.dev)
    }
}
