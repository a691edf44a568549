//! 3D convolution, channels-last: x (N, D, H, W, Ci) -> y (N, D', H', W', Co), kernel k^3
//! (k = 3 with padding 1, or k = 1), stride 1 or 2. Weights are repacked once from PyTorch's
//! (Co, Ci, kd, kh, kw) into (kd, kh, kw, Ci, Co): one GEMM [voxels, k^3 Ci] x [k^3 Ci, Co].
//! CPU reference: im2col one output plane at a time, then sgemm. Kernels: kernels/conv3d.cu
//! (implicit GEMM on tensor cores, bf16 in and out, f32 accumulation).
use super::{expect_dtype, same_device};
use crate::device::Launch;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// PyTorch (Co, Ci, k, k, k) -> (k, k, k, Ci, Co).
pub fn repack_weight(w: &[f32], co: usize, ci: usize, k: usize) -> Vec<f32> {
    let k3 = k * k * k;
    let mut out = vec![0f32; w.len()];
    for o in 0..co {
        for i in 0..ci {
            for t in 0..k3 {
                out[(t * ci + i) * co + o] = w[(o * ci + i) * k3 + t];
            }
        }
    }
    out
}

/// Output extent along one axis.
pub fn out_len(n: usize, k: usize, stride: usize) -> usize {
    let pad = k / 2;
    (n + 2 * pad - k) / stride + 1
}

/// Output rows per GEMM in the CPU reference: large enough for an efficient sgemm, small enough
/// that the im2col buffer stays in cache-friendly sizes (rows x k^3 Ci floats).
const ROWS_PER_GEMM: usize = 2048;

/// Rows r0.. of the im2col matrix of a channels-last x (n, dims, ci) for a k^3 convolution with
/// `stride` and "same" padding: one row of k^3 ci values per output voxel, zeros in the padding.
/// Rows are built in parallel.
fn im2col(x: &[f32], dims: [usize; 3], ci: usize, k: usize, stride: usize, r0: usize, cols: &mut [f32]) {
    use rayon::prelude::*;
    let [d, h, wd] = dims;
    let od = [out_len(d, k, stride), out_len(h, k, stride), out_len(wd, k, stride)];
    let pad = (k / 2) as isize;
    cols.par_chunks_mut(k * k * k * ci).enumerate().for_each(|(i, row)| {
        let r = r0 + i;
        let (ox, t) = (r % od[2], r / od[2]);
        let (oy, t) = (t % od[1], t / od[1]);
        let (oz, b) = (t % od[0], t / od[0]);
        // The k taps along x of one (tz, ty) are k consecutive voxels of x and k consecutive
        // blocks of the row: one copy for the part inside the volume.
        let x0 = (ox * stride) as isize - pad;
        let (lo, hi) = ((-x0).clamp(0, k as isize) as usize, (wd as isize - x0).clamp(0, k as isize) as usize);
        for tz in 0..k {
            for ty in 0..k {
                let z = (oz * stride) as isize + tz as isize - pad;
                let yy = (oy * stride) as isize + ty as isize - pad;
                let dst = &mut row[(tz * k + ty) * k * ci..(tz * k + ty + 1) * k * ci];
                if z < 0 || yy < 0 || z >= d as isize || yy >= h as isize || lo >= hi {
                    dst.fill(0.0);
                    continue;
                }
                let s = (((b * d + z as usize) * h + yy as usize) * wd) as isize + x0;
                dst[..lo * ci].fill(0.0);
                dst[lo * ci..hi * ci].copy_from_slice(&x[(s + lo as isize) as usize * ci..(s + hi as isize) as usize * ci]);
                dst[hi * ci..].fill(0.0);
            }
        }
    });
}

/// CPU reference. `w` is repacked (k, k, k, Ci, Co); returns y and its spatial shape.
/// Rows of the implicit im2col matrix are built in parallel in chunks, each chunk one sgemm.
#[allow(clippy::too_many_arguments)]
pub fn conv3d_ref(x: &[f32], n: usize, dims: [usize; 3], ci: usize, w: &[f32], bias: &[f32], co: usize, k: usize, stride: usize) -> (Vec<f32>, [usize; 3]) {
    let [d, h, wd] = dims;
    let od = [out_len(d, k, stride), out_len(h, k, stride), out_len(wd, k, stride)];
    let kk = k * k * k * ci;
    let rows = n * od.iter().product::<usize>();
    let mut y = vec![0f32; rows * co];
    // A 1x1x1 stride-1 convolution is already a GEMM over the input rows.
    let direct = k == 1 && stride == 1;
    let mut cols = if direct { Vec::new() } else { vec![0f32; ROWS_PER_GEMM.min(rows) * kk] };
    for r0 in (0..rows).step_by(ROWS_PER_GEMM) {
        let nr = ROWS_PER_GEMM.min(rows - r0);
        if !direct {
            im2col(x, dims, ci, k, stride, r0, &mut cols[..nr * kk]);
        }
        let a = if direct { &x[r0 * kk..(r0 + nr) * kk] } else { &cols[..nr * kk] };
        let out = &mut y[r0 * co..(r0 + nr) * co];
        out.chunks_mut(co).for_each(|row| row.copy_from_slice(bias));
        super::cpu_sgemm(nr, co, kk, a, kk, 1, w, co, 1, out, co, true);
    }
    (y, od)
}

/// Dynamic shared memory of the tensor-core main loop (gemm_core.cuh).
const SMEM_BYTES: u32 = super::gemm::SMEM_BYTES;

/// y = conv(x, w) + bias [+ bias_n per sample] [+ residual], channels-last.
/// x (N, D, H, W, Ci); w repacked (k^3 Ci, Co); bias (Co) f32; bias_n (N, Co) f32; residual and
/// y (N, D', H', W', Co). On emu/cuda x, w, residual and y are bf16; on the CPU all are f32.
#[allow(clippy::too_many_arguments)]
pub fn conv3d(x: &Tensor, w: &Tensor, bias: &Tensor, bias_n: Option<&Tensor>, residual: Option<&Tensor>, y: &mut Tensor, k: usize, stride: usize) -> Result<()> {
    let _span = super::profile::span("conv3d");
    let xs = x.shape().to_vec();
    if xs.len() != 5 || !(k == 1 || k == 3) || !(stride == 1 || stride == 2) {
        return Err(Error::Shape(format!("conv3d: x {xs:?} must be (N, D, H, W, C); k 1 or 3, stride 1 or 2")));
    }
    let (n, ci) = (xs[0], xs[4]);
    let co = bias.numel();
    let od = [out_len(xs[1], k, stride), out_len(xs[2], k, stride), out_len(xs[3], k, stride)];
    let ys = [n, od[0], od[1], od[2], co];
    if w.shape() != [k * k * k * ci, co] || y.shape() != ys {
        return Err(Error::Shape(format!("conv3d: w {:?} and y {:?} do not fit x {xs:?} (w ({}, {co}), y {ys:?})", w.shape(), y.shape(), k * k * k * ci)));
    }
    if let Some(b) = bias_n {
        super::expect_shape("conv3d bias_n", b, &[n, co])?;
    }
    if let Some(r) = residual {
        super::expect_shape("conv3d residual", r, &ys)?;
    }
    let mut all = vec![x, w, bias, &*y];
    all.extend(bias_n);
    all.extend(residual);
    same_device("conv3d", &all)?;
    let dev = x.device().clone();
    if !dev.runs_kernels() && super::conv3d_cpu::available() {
        return conv3d_direct(x, w, bias, bias_n, residual, y, k, stride);
    }
    if !dev.runs_kernels() {
        let host = super::host_view;
        let (mut out, _) = conv3d_ref(&host(x)?, n, [xs[1], xs[2], xs[3]], ci, &host(w)?, &host(bias)?, co, k, stride);
        let s = od.iter().product::<usize>();
        if let Some(b) = bias_n {
            let bv = host(b)?;
            out.chunks_mut(co).enumerate().for_each(|(p, row)| row.iter_mut().zip(&bv[(p / s) * co..(p / s + 1) * co]).for_each(|(o, v)| *o += v));
        }
        if let Some(r) = residual {
            out.iter_mut().zip(host(r)?.iter()).for_each(|(o, v)| *o += v);
        }
        return y.buffer_mut().write(bytemuck::cast_slice(&out));
    }
    for t in [x, w, &*y].into_iter().chain(residual) {
        expect_dtype("conv3d", t, DType::BF16)?;
    }
    expect_dtype("conv3d bias", bias, DType::F32)?;
    let m = n * od.iter().product::<usize>();
    let tiles = m.div_ceil(128);
    if tiles > 65535 || m > i32::MAX as usize {
        return Err(Error::Shape(format!("conv3d: {m} output voxels exceed one launch ({} at most)", 65535 * 128)));
    }
    let kernel = if ci % 8 == 0 && co % 8 == 0 { "conv3d_bf16_vec" } else { "conv3d_bf16_any" };
    Launch::new(kernel)?
        .grid([co.div_ceil(128) as u32, tiles as u32, 1])
        .block([256, 1, 1])
        .shared_bytes(SMEM_BYTES)
        .buf(x.buffer())
        .buf(w.buffer())
        .buf(bias.buffer())
        .opt(bias_n.map(|t| t.buffer()))
        .opt(residual.map(|t| t.buffer()))
        .buf(y.buffer())
        .i32s(&[n, xs[1], xs[2], xs[3], ci, co, k, stride])
        .run(&dev)
}

/// The CPU's fast path of `conv3d` (shapes already checked): the direct convolution of
/// conv3d_cpu.rs, writing y in place (through a padded copy when Co is not a multiple of 16).
#[allow(clippy::too_many_arguments)]
fn conv3d_direct(x: &Tensor, w: &Tensor, bias: &Tensor, bias_n: Option<&Tensor>, residual: Option<&Tensor>, y: &mut Tensor, k: usize, stride: usize) -> Result<()> {
    use super::conv3d_cpu::{pad_columns, padded, Direct, Taps};
    let host = super::host_view;
    let xs = x.shape();
    let (n, ci, co) = (xs[0], xs[4], bias.numel());
    let ldw = padded(co);
    let b = host(bias)?;
    let bn = bias_n.map(host).transpose()?;
    let mut init = vec![0f32; n * ldw];
    for (s, row) in init.chunks_mut(ldw).enumerate() {
        row[..co].copy_from_slice(&b);
        if let Some(bn) = &bn {
            row[..co].iter_mut().zip(&bn[s * co..(s + 1) * co]).for_each(|(o, v)| *o += v);
        }
    }
    let (xv, wv) = (host(x)?, host(w)?);
    let res = residual.map(host).transpose()?;
    if co <= super::conv3d_cpu::NARROW {
        let taps = Taps::forward(n, [xs[1], xs[2], xs[3]], ci, k, stride);
        // (taps, ci, co) -> (co, taps, ci), and the init rows without padding.
        let k3 = k * k * k;
        let wt: Vec<f32> = (0..co * k3 * ci).map(|i| wv[(i % (k3 * ci)) * co + i / (k3 * ci)]).collect();
        let init = super::conv3d_cpu::drop_columns(init, co, ldw);
        let out = y.host_f32_mut().ok_or_else(|| Error::DType("conv3d: the CPU's output must be host f32".into()))?;
        super::conv3d_cpu::narrow(&taps, &xv, &wt, co, &init, out);
        if let Some(r) = &res {
            out.iter_mut().zip(r.iter()).for_each(|(a, v)| *a += v);
        }
        return Ok(());
    }
    let wp = pad_columns(&wv, co, ldw);
    let whole = co == ldw;
    let d = Direct { taps: Taps::forward(n, [xs[1], xs[2], xs[3]], ci, k, stride), x: &xv, w: &wp, ldw, init: &init, residual: if whole { res.as_deref() } else { None } };
    let out = y.host_f32_mut().ok_or_else(|| Error::DType("conv3d: the CPU's output must be host f32".into()))?;
    if whole {
        d.run(out);
        return Ok(());
    }
    let mut tmp = vec![0f32; out.len() / co * ldw];
    d.run(&mut tmp);
    for (i, (o, t)) in out.chunks_mut(co).zip(tmp.chunks(ldw)).enumerate() {
        o.copy_from_slice(&t[..co]);
        if let Some(r) = &res {
            o.iter_mut().zip(&r[i * co..(i + 1) * co]).for_each(|(a, v)| *a += v);
        }
    }
    Ok(())
}

/// dx of `conv3d` on the CPU through the direct convolution: the transposed tap map over dy,
/// with the weights as (taps, Co, Ci).
#[allow(clippy::too_many_arguments)]
fn conv3d_dgrad_direct(dy: &[f32], w: &[f32], x_dims: [usize; 3], n: usize, ci: usize, co: usize, k: usize, stride: usize) -> Vec<f32> {
    use super::conv3d_cpu::{pad_columns, padded, Direct, Taps};
    let ldw = padded(ci);
    let wt = transpose_taps(w, k * k * k, ci, co);
    let wp = pad_columns(&wt, ci, ldw);
    let init = vec![0f32; n * ldw];
    let taps = Taps::data_gradient(n, x_dims, co, k, stride);
    let voxels = n * x_dims.iter().product::<usize>();
    let mut out = vec![0f32; voxels * ldw];
    Direct { taps, x: dy, w: &wp, ldw, init: &init, residual: None }.run(&mut out);
    super::conv3d_cpu::drop_columns(out, ci, ldw)
}

/// conv3d_backward_ref's results by the direct convolution (AVX2), dx only when `want_dx`.
#[allow(clippy::too_many_arguments)]
pub fn conv3d_backward_direct(x: &[f32], n: usize, dims: [usize; 3], ci: usize, w: &[f32], dy: &[f32], co: usize, k: usize, stride: usize, want_dx: bool) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    use super::conv3d_cpu::{pad_columns, padded, weight_gradient, Taps};
    let dx = want_dx.then(|| conv3d_dgrad_direct(dy, w, dims, n, ci, co, k, stride));
    // The weight gradient's register tiles take 16 output channels: dy is widened with zeros.
    let ldw = padded(co);
    let dyp = pad_columns(dy, co, ldw);
    let dwp = weight_gradient(&Taps::forward(n, dims, ci, k, stride), x, &dyp, ldw);
    let dw = super::conv3d_cpu::drop_columns(dwp, co, ldw);
    (dx, dw, column_sums(dy, co))
}

/// Sums of the columns of a (rows, co) matrix, accumulated in f64.
fn column_sums(m: &[f32], co: usize) -> Vec<f32> {
    if co == 0 {
        return Vec::new();
    }
    let mut s = vec![0f64; co];
    for r in m.chunks(co) {
        s.iter_mut().zip(r).for_each(|(a, v)| *a += *v as f64);
    }
    s.into_iter().map(|v| v as f32).collect()
}

/// Gradients of conv3d_ref: given x, the repacked w and dy (rows x Co), returns (dx, dw, db)
/// with dw repacked like w. In chunks of output rows: im2col, dw += cols^T dy, dcols = dy W^T,
/// then dcols scattered back through the im2col map (col2im).
#[allow(clippy::too_many_arguments)]
pub fn conv3d_backward_ref(x: &[f32], n: usize, dims: [usize; 3], ci: usize, w: &[f32], dy: &[f32], co: usize, k: usize, stride: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let [d, h, wd] = dims;
    let od = [out_len(d, k, stride), out_len(h, k, stride), out_len(wd, k, stride)];
    let pad = (k / 2) as isize;
    let kk = k * k * k * ci;
    let rows = n * od.iter().product::<usize>();
    let mut dx = vec![0f32; x.len()];
    let mut dw = vec![0f32; kk * co];
    // Input offset of tap t of output row r, or None in the padding.
    let tap = |r: usize, t: usize| -> Option<usize> {
        let (ox, q) = (r % od[2], r / od[2]);
        let (oy, q) = (q % od[1], q / od[1]);
        let (oz, b) = (q % od[0], q / od[0]);
        let (tz, ty, tx) = (t / (k * k), (t / k) % k, t % k);
        let z = (oz * stride) as isize + tz as isize - pad;
        let yy = (oy * stride) as isize + ty as isize - pad;
        let xx = (ox * stride) as isize + tx as isize - pad;
        if z < 0 || yy < 0 || xx < 0 || z >= d as isize || yy >= h as isize || xx >= wd as isize {
            None
        } else {
            Some((((b * d + z as usize) * h + yy as usize) * wd + xx as usize) * ci)
        }
    };
    let chunk = ROWS_PER_GEMM.min(rows.max(1));
    let mut cols = vec![0f32; chunk * kk];
    let mut dcols = vec![0f32; chunk * kk];
    for r0 in (0..rows).step_by(chunk) {
        let nr = chunk.min(rows - r0);
        im2col(x, dims, ci, k, stride, r0, &mut cols[..nr * kk]);
        let g = &dy[r0 * co..(r0 + nr) * co];
        // dw (kk x co) += cols^T (kk x nr) g (nr x co)
        super::cpu_sgemm(kk, co, nr, &cols, 1, kk, g, co, 1, &mut dw, co, true);
        // dcols (nr x kk) = g (nr x co) W^T (co x kk)
        super::cpu_sgemm(nr, kk, co, g, co, 1, w, 1, co, &mut dcols, kk, false);
        for i in 0..nr {
            for t in 0..k * k * k {
                if let Some(s) = tap(r0 + i, t) {
                    dx[s..s + ci].iter_mut().zip(&dcols[i * kk + t * ci..i * kk + (t + 1) * ci]).for_each(|(a, v)| *a += v);
                }
            }
        }
    }
    (dx, dw, column_sums(dy, co))
}

/// Inverse of repack_weight: (k, k, k, Ci, Co) -> PyTorch (Co, Ci, k, k, k).
pub fn unpack_weight(w: &[f32], co: usize, ci: usize, k: usize) -> Vec<f32> {
    let k3 = k * k * k;
    let mut out = vec![0f32; w.len()];
    for o in 0..co {
        for i in 0..ci {
            for t in 0..k3 {
                out[(o * ci + i) * k3 + t] = w[(t * ci + i) * co + o];
            }
        }
    }
    out
}

/// (k^3, Ci, Co) -> (k^3, Co, Ci): the data gradient's B operand.
pub fn transpose_taps(w: &[f32], taps: usize, ci: usize, co: usize) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    for t in 0..taps {
        for i in 0..ci {
            for o in 0..co {
                out[(t * co + o) * ci + i] = w[(t * ci + i) * co + o];
            }
        }
    }
    out
}

/// Gradients of `conv3d` for dy (N, D', H', W', Co): dx (shaped like x; None where the input's
/// gradient is not wanted, as for the network's input), dw (k^3 Ci, Co) and db (Co). Gradients
/// are f32 on every device; x and w are bf16 on emu/cuda.
/// Kernels: kernels/conv3d_backward.cu.
#[allow(clippy::too_many_arguments)]
pub fn conv3d_backward(x: &Tensor, w: &Tensor, dy: &Tensor, mut dx: Option<&mut Tensor>, dw: &mut Tensor, db: &mut Tensor, k: usize, stride: usize) -> Result<()> {
    let _span = super::profile::span("conv3d_backward");
    let xs = x.shape().to_vec();
    if xs.len() != 5 {
        return Err(Error::Shape(format!("conv3d_backward: x {xs:?} must be (N, D, H, W, C)")));
    }
    let (n, ci) = (xs[0], xs[4]);
    let co = *dy.shape().last().unwrap_or(&0);
    let od = [out_len(xs[1], k, stride), out_len(xs[2], k, stride), out_len(xs[3], k, stride)];
    let kk = k * k * k * ci;
    let dx_shape = dx.as_ref().map(|t| t.shape().to_vec());
    if dy.shape() != [n, od[0], od[1], od[2], co] || w.shape() != [kk, co] || dx_shape.as_ref().is_some_and(|s| s != &xs) || dw.shape() != [kk, co] || db.shape() != [co] {
        return Err(Error::Shape(format!(
            "conv3d_backward: x {xs:?}, w {:?}, dy {:?}, dx {:?}, dw {:?}, db {:?} do not fit",
            w.shape(),
            dy.shape(),
            dx_shape,
            dw.shape(),
            db.shape()
        )));
    }
    let mut all = vec![x, w, dy, &*dw, &*db];
    all.extend(dx.as_deref());
    same_device("conv3d_backward", &all)?;
    let dev = x.device().clone();
    if !dev.runs_kernels() {
        let (xv, wv, dyv) = (super::host_view(x)?, super::host_view(w)?, super::host_view(dy)?);
        let dims = [xs[1], xs[2], xs[3]];
        let (gx, gw, gb) = if super::conv3d_cpu::available() {
            conv3d_backward_direct(&xv, n, dims, ci, &wv, &dyv, co, k, stride, dx.is_some())
        } else {
            let (gx, gw, gb) = conv3d_backward_ref(&xv, n, dims, ci, &wv, &dyv, co, k, stride);
            (Some(gx), gw, gb)
        };
        if let (Some(dx), Some(gx)) = (dx, gx) {
            let bytes = dx.dtype().encode(&gx);
            dx.buffer_mut().write(&bytes)?;
        }
        dw.buffer_mut().write(bytemuck::cast_slice(&gw))?;
        return db.buffer_mut().write(bytemuck::cast_slice(&gb));
    }
    for t in [x, w] {
        expect_dtype("conv3d_backward", t, DType::BF16)?;
    }
    for t in [dy, &*dw].into_iter().chain(dx.as_deref()) {
        expect_dtype("conv3d_backward gradient", t, DType::F32)?;
    }
    expect_dtype("conv3d_backward db", db, DType::F32)?;
    let dv = [n, xs[1], xs[2], xs[3], ci, co, k, stride];
    if let Some(dx) = dx.as_deref_mut() {
        let wt = Tensor::from_f32(&transpose_taps(&super::host_view(w)?, k * k * k, ci, co), &[k * k * k * co, ci], DType::BF16, &dev)?;
        let m_in = n * xs[1] * xs[2] * xs[3];
        Launch::new("conv3d_dgrad_f32")?
            .grid([ci.div_ceil(128) as u32, m_in.div_ceil(128) as u32, 1])
            .block([256, 1, 1])
            .shared_bytes(SMEM_BYTES)
            .buf(dy.buffer())
            .buf(wt.buffer())
            .buf(dx.buffer())
            .i32s(&dv)
            .run(&dev)?;
    }
    Launch::new("conv3d_wgrad_f32")?
        .grid([co.div_ceil(128) as u32, kk.div_ceil(128) as u32, 1])
        .block([256, 1, 1])
        .shared_bytes(SMEM_BYTES)
        .buf(x.buffer())
        .buf(dy.buffer())
        .buf(dw.buffer())
        .i32s(&dv)
        .run(&dev)?;
    let rows = n * od.iter().product::<usize>();
    Launch::new("col_sums_f32")?.grid([co.div_ceil(32) as u32, 1, 1]).block([32, 8, 1]).buf(dy.buffer()).buf(db.buffer()).i64(rows as i64).i32(co as i32).run(&dev)
}
