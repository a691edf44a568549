//! Resampling of channels-last volumes (N, D, H, W, C): nearest x2 upsampling (the decoder), and
//! the global context's shrink of a whole volume to the patch shape: trilinear with PyTorch's
//! F.interpolate(mode="trilinear", align_corners=False) semantics, or area (box) averaging.
//! Kernels (upsampling, concatenation): kernels/resample.cu.
use super::{same_device, stride_grid};
use crate::device::Launch;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// How a volume is resized to another grid (the global-context channel; `UNetConfig::context`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resize {
    /// PyTorch F.interpolate(mode="trilinear", align_corners=False).
    Trilinear,
    /// Box average.
    Area,
}

/// y (N, 2D, 2H, 2W, C) = nearest x2 of x (N, D, H, W, C).
pub fn upsample2(x: &Tensor, y: &mut Tensor) -> Result<()> {
    let _span = super::profile::span("upsample2");
    let s = x.shape().to_vec();
    if s.len() != 5 || y.shape() != [s[0], 2 * s[1], 2 * s[2], 2 * s[3], s[4]] || x.dtype() != y.dtype() {
        return Err(Error::Shape(format!("upsample2: x {s:?}, y {:?}", y.shape())));
    }
    same_device("upsample2", &[x, y])?;
    let dev = x.device().clone();
    if let (Some(xv), true) = (x.host_f32(), s[4] > 0 && s[3] > 0) {
        use rayon::prelude::*;
        let (h, w, c) = (s[2], s[3], s[4]);
        let out = y.host_f32_mut().ok_or_else(|| Error::DType("upsample2: host f32 output expected".into()))?;
        // One output row (sample, z, y) of 2w voxels per task, each source voxel copied twice.
        out.par_chunks_mut(2 * w * c).enumerate().for_each(|(r, row)| {
            let (yy, bz) = (r % (2 * h), r / (2 * h));
            let src = &xv[((bz / 2 * h) + yy / 2) * w * c..][..w * c];
            for (pair, v) in row.chunks_exact_mut(2 * c).zip(src.chunks_exact(c)) {
                pair[..c].copy_from_slice(v);
                pair[c..].copy_from_slice(v);
            }
        });
        return Ok(());
    }
    if !dev.runs_kernels() {
        let out = upsample2_ref(&super::host_view(x)?, s[0], [s[1], s[2], s[3]], s[4]);
        return y.buffer_mut().write(&x.dtype().encode(&out));
    }
    Launch::new("upsample2_bf16")?
        .grid(stride_grid(y.numel(), 256))
        .block([256, 1, 1])
        .buf(x.buffer())
        .buf(y.buffer())
        .i32s(&s)
        .run(&dev)
}

/// y (..., Ca + Cb) = [a (..., Ca), b (..., Cb)] along the last axis.
pub fn concat(a: &Tensor, b: &Tensor, y: &mut Tensor) -> Result<()> {
    let _span = super::profile::span("concat");
    let (sa, sb) = (a.shape(), b.shape());
    let (ca, cb) = (*sa.last().unwrap_or(&0), *sb.last().unwrap_or(&0));
    let mut want = sa.to_vec();
    if let Some(l) = want.last_mut() {
        *l = ca + cb;
    }
    if sa.len() != sb.len() || sa[..sa.len() - 1] != sb[..sb.len() - 1] || y.shape() != want.as_slice() || a.dtype() != b.dtype() || a.dtype() != y.dtype() {
        return Err(Error::Shape(format!("concat: {sa:?} and {sb:?} into {:?}", y.shape())));
    }
    same_device("concat", &[a, b, y])?;
    let v = a.numel() / ca.max(1);
    let dev = a.device().clone();
    if let (Some(av), Some(bv), true) = (a.host_f32(), b.host_f32(), ca > 0 && cb > 0) {
        use rayon::prelude::*;
        let out = y.host_f32_mut().ok_or_else(|| Error::DType("concat: host f32 output expected".into()))?;
        out.par_chunks_mut((ca + cb) * 256).zip(av.par_chunks(ca * 256)).zip(bv.par_chunks(cb * 256)).for_each(|((o, a), b)| {
            for ((row, ra), rb) in o.chunks_exact_mut(ca + cb).zip(a.chunks_exact(ca)).zip(b.chunks_exact(cb)) {
                row[..ca].copy_from_slice(ra);
                row[ca..].copy_from_slice(rb);
            }
        });
        return Ok(());
    }
    if !dev.runs_kernels() {
        let (av, bv) = (a.to_f32_vec()?, b.to_f32_vec()?);
        let mut out = Vec::with_capacity(y.numel());
        for p in 0..v {
            out.extend_from_slice(&av[p * ca..(p + 1) * ca]);
            out.extend_from_slice(&bv[p * cb..(p + 1) * cb]);
        }
        return y.buffer_mut().write(&a.dtype().encode(&out));
    }
    Launch::new("concat_bf16")?
        .grid(stride_grid(y.numel(), 256))
        .block([256, 1, 1])
        .buf(a.buffer())
        .buf(b.buffer())
        .buf(y.buffer())
        .i64(v as i64)
        .i32(ca as i32)
        .i32(cb as i32)
        .run(&dev)
}

/// Nearest-neighbour x2 along every spatial axis.
pub fn upsample2_ref(x: &[f32], n: usize, dims: [usize; 3], c: usize) -> Vec<f32> {
    let [d, h, w] = dims;
    let mut y = vec![0f32; n * 8 * d * h * w * c];
    for b in 0..n {
        for z in 0..2 * d {
            for yy in 0..2 * h {
                for xx in 0..2 * w {
                    let s = (((b * d + z / 2) * h + yy / 2) * w + xx / 2) * c;
                    let o = (((b * 2 * d + z) * 2 * h + yy) * 2 * w + xx) * c;
                    y[o..o + c].copy_from_slice(&x[s..s + c]);
                }
            }
        }
    }
    y
}

/// Source position and weights along one axis for align_corners=False: src = (i + 1/2) in/out - 1/2,
/// clamped at 0 below, as PyTorch does.
fn taps(n_in: usize, n_out: usize) -> Vec<(usize, usize, f32)> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|i| {
            let src = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(n_in - 1);
            let i1 = (i0 + 1).min(n_in - 1);
            (i0, i1, (src - i0 as f64) as f32)
        })
        .collect()
}

/// Trilinear resize of one single-channel volume (D, H, W) to `out`.
pub fn trilinear_ref(x: &[f32], dims: [usize; 3], out: [usize; 3]) -> Vec<f32> {
    let (tz, ty, tx) = (taps(dims[0], out[0]), taps(dims[1], out[1]), taps(dims[2], out[2]));
    let at = |z: usize, y: usize, xx: usize| x[(z * dims[1] + y) * dims[2] + xx];
    let mut y = vec![0f32; out.iter().product()];
    for (k, &(z0, z1, fz)) in tz.iter().enumerate() {
        for (j, &(y0, y1, fy)) in ty.iter().enumerate() {
            for (i, &(x0, x1, fx)) in tx.iter().enumerate() {
                let lerp = |a: f32, b: f32, f: f32| a + (b - a) * f;
                let c00 = lerp(at(z0, y0, x0), at(z0, y0, x1), fx);
                let c01 = lerp(at(z0, y1, x0), at(z0, y1, x1), fx);
                let c10 = lerp(at(z1, y0, x0), at(z1, y0, x1), fx);
                let c11 = lerp(at(z1, y1, x0), at(z1, y1, x1), fx);
                y[(k * out[1] + j) * out[2] + i] = lerp(lerp(c00, c01, fy), lerp(c10, c11, fy), fz);
            }
        }
    }
    y
}

/// Area (box) average of one single-channel volume to `out`, as PyTorch's
/// F.interpolate(mode="area") (adaptive average pooling): output cell i averages the input range
/// [floor(i n_in / n_out), ceil((i + 1) n_in / n_out)).
pub fn area_ref(x: &[f32], dims: [usize; 3], out: [usize; 3]) -> Vec<f32> {
    let range = |i: usize, n_in: usize, n_out: usize| (i * n_in / n_out, ((i + 1) * n_in).div_ceil(n_out));
    let mut y = vec![0f32; out.iter().product()];
    for k in 0..out[0] {
        let (z0, z1) = range(k, dims[0], out[0]);
        for j in 0..out[1] {
            let (y0, y1) = range(j, dims[1], out[1]);
            for i in 0..out[2] {
                let (x0, x1) = range(i, dims[2], out[2]);
                let mut s = 0.0f64;
                for z in z0..z1 {
                    for yy in y0..y1 {
                        for xx in x0..x1 {
                            s += x[(z * dims[1] + yy) * dims[2] + xx] as f64;
                        }
                    }
                }
                y[(k * out[1] + j) * out[2] + i] = (s / ((z1 - z0) * (y1 - y0) * (x1 - x0)) as f64) as f32;
            }
        }
    }
    y
}

/// Gradient of upsample2_ref: each input voxel collects its 8 children.
pub fn upsample2_backward_ref(dy: &[f32], n: usize, dims: [usize; 3], c: usize) -> Vec<f32> {
    let [d, h, w] = dims;
    let mut dx = vec![0f32; n * d * h * w * c];
    for b in 0..n {
        for z in 0..2 * d {
            for yy in 0..2 * h {
                for xx in 0..2 * w {
                    let s = (((b * d + z / 2) * h + yy / 2) * w + xx / 2) * c;
                    let o = (((b * 2 * d + z) * 2 * h + yy) * 2 * w + xx) * c;
                    dx[s..s + c].iter_mut().zip(&dy[o..o + c]).for_each(|(a, v)| *a += v);
                }
            }
        }
    }
    dx
}

/// Gradient of `upsample2`: dx (N, D, H, W, C) from dy (N, 2D, 2H, 2W, C), f32.
pub fn upsample2_backward(dy: &Tensor, dx: &mut Tensor) -> Result<()> {
    let _span = super::profile::span("upsample2_backward");
    let s = dx.shape().to_vec();
    if s.len() != 5 || dy.shape() != [s[0], 2 * s[1], 2 * s[2], 2 * s[3], s[4]] || dx.dtype() != dy.dtype() {
        return Err(Error::Shape(format!("upsample2_backward: dy {:?}, dx {s:?}", dy.shape())));
    }
    same_device("upsample2_backward", &[dy, dx])?;
    let dev = dy.device().clone();
    if !dev.runs_kernels() {
        let out = upsample2_backward_ref(&super::host_view(dy)?, s[0], [s[1], s[2], s[3]], s[4]);
        let bytes = dx.dtype().encode(&out);
        return dx.buffer_mut().write(&bytes);
    }
    super::expect_dtype("upsample2_backward", dy, crate::DType::F32)?;
    Launch::new("upsample2_backward_f32")?
        .grid(stride_grid(dx.numel(), 256))
        .block([256, 1, 1])
        .buf(dy.buffer())
        .buf(dx.buffer())
        .i32s(&s)
        .run(&dev)
}

/// Gradient of `concat`: a (..., Ca) and b (..., Cb) from y (..., Ca + Cb); f32 on kernel devices.
pub fn split(y: &Tensor, a: &mut Tensor, b: &mut Tensor) -> Result<()> {
    let _span = super::profile::span("split");
    let (ca, cb) = (*a.shape().last().unwrap_or(&0), *b.shape().last().unwrap_or(&0));
    let v = a.numel() / ca.max(1);
    if y.numel() != v * (ca + cb) || b.numel() != v * cb || a.dtype() != y.dtype() || b.dtype() != y.dtype() {
        return Err(Error::Shape(format!("split: {:?} into {:?} and {:?}", y.shape(), a.shape(), b.shape())));
    }
    same_device("split", &[y, a, b])?;
    let dev = y.device().clone();
    if let (Some(yv), true) = (y.host_f32(), a.host_f32().is_some() && ca > 0 && cb > 0) {
        use rayon::prelude::*;
        let av = a.host_f32_mut().expect("host f32 checked above");
        av.par_chunks_mut(ca * 256).zip(yv.par_chunks((ca + cb) * 256)).for_each(|(o, y)| o.chunks_exact_mut(ca).zip(y.chunks_exact(ca + cb)).for_each(|(o, y)| o.copy_from_slice(&y[..ca])));
        let bv = b.host_f32_mut().ok_or_else(|| Error::DType("split: host f32 output expected".into()))?;
        bv.par_chunks_mut(cb * 256).zip(yv.par_chunks((ca + cb) * 256)).for_each(|(o, y)| o.chunks_exact_mut(cb).zip(y.chunks_exact(ca + cb)).for_each(|(o, y)| o.copy_from_slice(&y[ca..])));
        return Ok(());
    }
    if !dev.runs_kernels() {
        let yv = y.to_f32_vec()?;
        let (mut av, mut bv) = (Vec::with_capacity(v * ca), Vec::with_capacity(v * cb));
        for row in yv.chunks(ca + cb) {
            av.extend_from_slice(&row[..ca]);
            bv.extend_from_slice(&row[ca..]);
        }
        let (ab, bb) = (a.dtype().encode(&av), b.dtype().encode(&bv));
        a.buffer_mut().write(&ab)?;
        return b.buffer_mut().write(&bb);
    }
    super::expect_dtype("split", y, crate::DType::F32)?;
    Launch::new("split_f32")?
        .grid(stride_grid(y.numel(), 256))
        .block([256, 1, 1])
        .buf(y.buffer())
        .buf(a.buffer())
        .buf(b.buffer())
        .i64(v as i64)
        .i32(ca as i32)
        .i32(cb as i32)
        .run(&dev)
}

/// out (N, C) = the sum over each sample's voxels of x (N, ..., C), f32.
pub fn sample_sums(x: &Tensor, out: &mut Tensor) -> Result<()> {
    let _span = super::profile::span("sample_sums");
    let n = x.shape()[0];
    let c = *x.shape().last().unwrap_or(&0);
    let s = x.numel() / (n * c).max(1);
    if out.shape() != [n, c] || out.dtype() != crate::DType::F32 {
        return Err(Error::Shape(format!("sample_sums: x {:?} into {:?} {}", x.shape(), out.shape(), out.dtype())));
    }
    same_device("sample_sums", &[x, out])?;
    let dev = x.device().clone();
    if !dev.runs_kernels() {
        let xv = x.to_f32_vec()?;
        let mut o = vec![0f64; n * c];
        for (p, row) in xv.chunks(c).enumerate() {
            o[(p / s) * c..(p / s + 1) * c].iter_mut().zip(row).for_each(|(a, v)| *a += *v as f64);
        }
        let o: Vec<f32> = o.into_iter().map(|v| v as f32).collect();
        return out.buffer_mut().write(bytemuck::cast_slice(&o));
    }
    super::expect_dtype("sample_sums", x, crate::DType::F32)?;
    Launch::new("sample_sums_f32")?.grid([c.div_ceil(32) as u32, n as u32, 1]).block([32, 8, 1]).buf(x.buffer()).buf(out.buffer()).i32(s as i32).i32(c as i32).run(&dev)
}
