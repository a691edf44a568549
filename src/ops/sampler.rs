//! The sampler's per-pass work: stitching (kernels/patches.cu), Tweedie with the clamp and the
//! DDIM update with counter-based noise (kernels/sampler.cu). The CPU references run in parallel
//! over fixed chunks; the noise depends only on (seed, stream, index), so every device and thread
//! count draws the same numbers (up to the last bits of log and cos).
use super::{expect_dtype, same_device, stride_grid};
use crate::device::Launch;
use crate::error::{Error, Result};
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

/// Tweedie's x0 = cx x - co out from the network's output `out` (eps, or v), with
/// c = [cx, co, sqrt(abar), sqrt(1 - abar)] (`Prediction::tweedie_coefficients`), clamped to
/// [-1, 1] with `clip`; `out` is then replaced by eps = (x - sqrt(abar) x0) / sqrt(1 - abar), the
/// noise consistent with x0 (for eps without the clamp, the same values up to rounding).
pub fn tweedie(x: &Tensor, out: &mut Tensor, x0: &mut Tensor, c: [f32; 4], clip: bool) -> Result<()> {
    let n = x.numel();
    check("tweedie", n, &[x, out, x0])?;
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
