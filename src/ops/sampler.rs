//! The sampler's per-pass work: stitching (kernels/patches.cu), Tweedie with the clamp and the
//! DDIM update with counter-based noise (kernels/sampler.cu). The CPU references run in parallel
//! over fixed chunks; the noise depends only on (seed, stream, index), so every device and thread
//! count draws the same numbers (up to the last bits of log and cos).
use super::{expect_dtype, same_device, stride_grid};
use crate::device::Launch;
use crate::diffusion::tiling::Starts;
use crate::error::{Error, Result};
use crate::nn::Prediction;
use crate::tensor::{DType, Tensor};
use rayon::prelude::*;

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The standard normal number `i` of stream `stream` under `seed` (Box-Muller on one 64-bit hash).
pub fn normal_at(seed: u64, stream: u64, i: u64) -> f32 {
    let h = mix64(seed ^ mix64(stream.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(i)));
    let u1 = ((h >> 40) + 1) as f32 * (1.0 / 16_777_216.0);
    let u2 = ((h >> 8) & 0xff_ffff) as f32 * (1.0 / 16_777_216.0);
    (-2.0 * u1.ln()).sqrt() * (6.283_185_3 * u2).cos()
}

const CHUNK: usize = 1 << 14;

fn host(t: &Tensor) -> Result<&[f32]> {
    t.host_f32().ok_or_else(|| Error::DType("host f32 expected".into()))
}
fn host_mut(t: &mut Tensor) -> Result<&mut [f32]> {
    t.host_f32_mut().ok_or_else(|| Error::DType("host f32 expected".into()))
}

fn check(op: &str, n: usize, ts: &[&Tensor]) -> Result<()> {
    same_device(op, ts)?;
    for t in ts {
        expect_dtype(op, t, DType::F32)?;
        if t.numel() != n {
            return Err(Error::Shape(format!("{op}: {} values where {n} are expected", t.numel())));
        }
    }
    Ok(())
}

/// Tweedie's coefficients at abar for a network predicting `pred`: [cx, co, sa, sb] with
/// x0 = cx x - co out, sa = sqrt(abar), sb = sqrt(1 - abar).
pub fn tweedie_coefficients(abar: f64, pred: Prediction) -> [f32; 4] {
    let (cx, co) = pred.x0_coefficients(abar);
    [cx as f32, co as f32, abar.sqrt() as f32, (1.0 - abar).sqrt() as f32]
}

/// CPU reference of `tweedie`.
pub fn tweedie_ref(x: &[f32], out: &mut [f32], x0: &mut [f32], [cx, co, sa, sb]: [f32; 4], clip: bool) {
    x0.par_chunks_mut(CHUNK).zip(out.par_chunks_mut(CHUNK)).zip(x.par_chunks(CHUNK)).for_each(|((x0, out), x)| {
        for i in 0..x.len() {
            let mut a = cx * x[i] - co * out[i];
            if clip {
                a = a.clamp(-1.0, 1.0);
            }
            out[i] = (x[i] - sa * a) / sb;
            x0[i] = a;
        }
    });
}

/// Tweedie's x0 from the network's output `out` (eps, or v; see `Prediction`), clamped to
/// [-1, 1] with `clip`; `out` is then replaced by eps = (x - sqrt(abar) x0) / sqrt(1 - abar), the
/// noise consistent with x0 (for eps without the clamp, the same values up to rounding).
pub fn tweedie(x: &Tensor, out: &mut Tensor, x0: &mut Tensor, abar: f64, pred: Prediction, clip: bool) -> Result<()> {
    let n = x.numel();
    check("tweedie", n, &[x, out, x0])?;
    let c = tweedie_coefficients(abar, pred);
    let dev = x.device().clone();
    if !dev.runs_kernels() {
        tweedie_ref(host(x)?, host_mut(out)?, host_mut(x0)?, c, clip);
        return Ok(());
    }
    Launch::new("tweedie_f32")?
        .grid(stride_grid(n, 256))
        .block([256, 1, 1])
        .i64(n as i64)
        .buf(x.buffer())
        .buf(out.buffer())
        .buf(x0.buffer())
        .f32(c[0])
        .f32(c[1])
        .f32(c[2])
        .f32(c[3])
        .i32(clip as i32)
        .run(&dev)
}

/// CPU reference of `ddim`.
pub fn ddim_ref(x: &mut [f32], x0: &[f32], eps: &[f32], a: f32, c: f32, sigma: f32, seed: u64, stream: u64) {
    x.par_chunks_mut(CHUNK).enumerate().for_each(|(k, xs)| {
        for (j, xv) in xs.iter_mut().enumerate() {
            let i = k * CHUNK + j;
            *xv = a * x0[i] + c * eps[i] + sigma * normal_at(seed, stream, i as u64);
        }
    });
}

/// x = a x0 + c eps + sigma z, z the normal numbers of (seed, stream): the DDIM step, recurrent
/// re-noising and the start (c = 0).
#[allow(clippy::too_many_arguments)]
pub fn ddim(x: &mut Tensor, x0: &Tensor, eps: &Tensor, a: f32, c: f32, sigma: f32, seed: u64, stream: u64) -> Result<()> {
    let n = x.numel();
    check("ddim", n, &[x, x0, eps])?;
    let dev = x.device().clone();
    if !dev.runs_kernels() {
        ddim_ref(host_mut(x)?, host(x0)?, host(eps)?, a, c, sigma, seed, stream);
        return Ok(());
    }
    Launch::new("ddim_f32")?
        .grid(stride_grid(n, 256))
        .block([256, 1, 1])
        .i64(n as i64)
        .buf(x.buffer())
        .buf(x0.buffer())
        .buf(eps.buffer())
        .f32(a)
        .f32(c)
        .f32(sigma)
        .i64(seed as i64)
        .i64(stream as i64)
        .run(&dev)
}

/// CPU reference of `stitch`: patches (N, pz, py, px) into vol (D, H, W) at `starts`.
pub fn stitch_ref(patches: &[f32], starts: &[[isize; 3]], patch: [usize; 3], vol: &mut [f32], dims: [usize; 3]) {
    let pv: usize = patch.iter().product();
    for (b, st) in starts.iter().enumerate() {
        for k in 0..patch[0] {
            let z = st[0] + k as isize;
            if z < 0 || z >= dims[0] as isize {
                continue;
            }
            for j in 0..patch[1] {
                let y = st[1] + j as isize;
                if y < 0 || y >= dims[1] as isize {
                    continue;
                }
                for i in 0..patch[2] {
                    let x = st[2] + i as isize;
                    if x >= 0 && (x as usize) < dims[2] {
                        vol[(z as usize * dims[1] + y as usize) * dims[2] + x as usize] = patches[b * pv + (k * patch[1] + j) * patch[2] + i];
                    }
                }
            }
        }
    }
}

/// Writes patch outputs (N, pz, py, px[, 1]) back into the volume (D, H, W) at `starts`; voxels
/// outside the volume are dropped. The patches must not overlap (one tiling's tiles do not).
pub fn stitch(patches: &Tensor, starts: &Starts, vol: &mut Tensor) -> Result<()> {
    let (ps, vs) = (patches.shape(), vol.shape());
    if ps.len() < 4 || ps[0] != starts.len() || ps.get(4).is_some_and(|c| *c != 1) || vs.len() != 3 {
        return Err(Error::Shape(format!("stitch: patches {ps:?} for {} starts into a volume {vs:?}", starts.len())));
    }
    same_device("stitch", &[patches, vol])?;
    expect_dtype("stitch", patches, DType::F32)?;
    expect_dtype("stitch", vol, DType::F32)?;
    let (patch, dims) = ([ps[1], ps[2], ps[3]], [vs[0], vs[1], vs[2]]);
    let dev = vol.device().clone();
    if !dev.runs_kernels() {
        stitch_ref(host(patches)?, starts.host(), patch, host_mut(vol)?, dims);
        return Ok(());
    }
    Launch::new("stitch_patches_f32")?
        .grid(stride_grid(patches.numel(), 256))
        .block([256, 1, 1])
        .buf(patches.buffer())
        .buf(starts.buffer()?)
        .buf(vol.buffer())
        .i32s(&[starts.len()])
        .i32s(&dims)
        .i32s(&patch)
        .run(&dev)
}
