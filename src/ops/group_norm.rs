//! Group normalisation over channels-last activations (N, S, C), statistics in f64 on the CPU
//! (f32 in kernels), eps 1e-5, optionally fused with the SiLU that follows it in the U-Net.
//! Kernel: kernels/group_norm.cu.
use super::{expect_dtype, same_device};
use crate::device::Launch;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

pub const EPS: f64 = 1e-5;

pub fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

/// CPU reference: y = gamma (x - mean) / sqrt(var + eps) + beta per (sample, group), then SiLU.
/// Statistics in f64; samples in parallel.
/// Mean and 1/sqrt(var + eps) of each group of one sample xs (positions x c channels), in f64.
fn group_stats(xs: &[f32], c: usize, groups: usize) -> (Vec<f64>, Vec<f64>) {
    let cg = c / groups;
    let mut stats = vec![(0.0f64, 0.0f64); groups];
    for row in xs.chunks(c) {
        for (g, st) in stats.iter_mut().enumerate() {
            for v in &row[g * cg..(g + 1) * cg] {
                st.0 += *v as f64;
                st.1 += (*v as f64) * (*v as f64);
            }
        }
    }
    let m = (xs.len() / groups) as f64;
    stats
        .iter()
        .map(|(sum, sq)| {
            let mean = sum / m;
            (mean, 1.0 / ((sq / m - mean * mean).max(0.0) + EPS).sqrt())
        })
        .unzip()
}

pub fn group_norm_ref(x: &[f32], n: usize, c: usize, groups: usize, gamma: &[f32], beta: &[f32], fuse_silu: bool) -> Vec<f32> {
    use rayon::prelude::*;
    let s = x.len() / (n * c);
    let cg = c / groups;
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(s * c).zip(x.par_chunks(s * c)).for_each(|(ys, xs)| {
        let (mean, inv) = group_stats(xs, c, groups);
        for p in 0..s {
            for ch in 0..c {
                let g = ch / cg;
                let v = ((xs[p * c + ch] as f64 - mean[g]) * inv[g]) as f32 * gamma[ch] + beta[ch];
                ys[p * c + ch] = if fuse_silu { silu(v) } else { v };
            }
        }
    });
    y
}

/// y = GroupNorm(x) [then SiLU] for x (N, ..., C) channels-last; gamma, beta (C) f32.
pub fn group_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, groups: usize, fuse_silu: bool, y: &mut Tensor) -> Result<()> {
    let _span = super::profile::span("group_norm");
    let n = x.shape()[0];
    let c = *x.shape().last().ok_or_else(|| Error::Shape("group_norm of a scalar".into()))?;
    if groups == 0 || c % groups != 0 || gamma.numel() != c || beta.numel() != c || y.shape() != x.shape() {
        return Err(Error::Shape(format!("group_norm: x {:?}, {groups} groups, gamma {:?}, y {:?}", x.shape(), gamma.shape(), y.shape())));
    }
    same_device("group_norm", &[x, gamma, beta, y])?;
    let dev = x.device().clone();
    if !dev.runs_kernels() {
        let (xv, gv, bv) = (super::host_view(x)?, super::host_view(gamma)?, super::host_view(beta)?);
        let out = y.host_f32_mut().ok_or_else(|| Error::DType("group_norm: the CPU's output must be host f32".into()))?;
        super::group_norm_cpu::forward(&xv, n, c, groups, &gv, &bv, fuse_silu, out);
        return Ok(());
    }
    expect_dtype("group_norm", x, DType::BF16)?;
    expect_dtype("group_norm", y, DType::BF16)?;
    let s = x.numel() / (n * c);
    Launch::new("group_norm_bf16")?
        .grid([(n * groups) as u32, 1, 1])
        .block([256, 1, 1])
        .buf(x.buffer())
        .buf(y.buffer())
        .buf(gamma.buffer())
        .buf(beta.buffer())
        .i32(s as i32)
        .i32(c as i32)
        .i32(groups as i32)
        .i32(fuse_silu as i32)
        .run(&dev)
}

/// d silu(z) / dz
pub fn silu_grad(z: f32) -> f32 {
    let s = 1.0 / (1.0 + (-z).exp());
    s * (1.0 + z * (1.0 - s))
}

/// Gradients of group_norm_ref: (dx, dgamma, dbeta) for dy.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward_ref(x: &[f32], n: usize, c: usize, groups: usize, gamma: &[f32], beta: &[f32], fuse_silu: bool, dy: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    use rayon::prelude::*;
    let s = x.len() / (n * c);
    let cg = c / groups;
    let m = (s * cg) as f64;
    let mut dx = vec![0f32; x.len()];
    // Samples in parallel; each returns its share of dgamma and dbeta, summed in sample order.
    let parts: Vec<(Vec<f64>, Vec<f64>)> = dx
        .par_chunks_mut(s * c)
        .zip(x.par_chunks(s * c))
        .zip(dy.par_chunks(s * c))
        .map(|((dxs, xs), dys)| {
            let (mean, inv) = group_stats(xs, c, groups);
            // xhat, and dxhat = dy silu'(z) gamma (or dy gamma) for z = xhat gamma + beta; with
            // their group sums s1 = sum dxhat and s2 = sum dxhat xhat.
            let (mut dg, mut db) = (vec![0f64; c], vec![0f64; c]);
            let (mut s1, mut s2) = (vec![0f64; groups], vec![0f64; groups]);
            let mut xh = vec![0f64; s * c];
            let mut dxh = vec![0f64; s * c];
            for p in 0..s {
                for ch in 0..c {
                    let (i, g) = (p * c + ch, ch / cg);
                    let h = (xs[i] as f64 - mean[g]) * inv[g];
                    let z = h as f32 * gamma[ch] + beta[ch];
                    let dz = dys[i] as f64 * if fuse_silu { silu_grad(z) as f64 } else { 1.0 };
                    dg[ch] += dz * h;
                    db[ch] += dz;
                    let d = dz * gamma[ch] as f64;
                    s1[g] += d;
                    s2[g] += d * h;
                    (xh[i], dxh[i]) = (h, d);
                }
            }
            for p in 0..s {
                for ch in 0..c {
                    let (i, g) = (p * c + ch, ch / cg);
                    dxs[i] = (inv[g] / m * (m * dxh[i] - s1[g] - xh[i] * s2[g])) as f32;
                }
            }
            (dg, db)
        })
        .collect();
    let (mut dg, mut dbt) = (vec![0f64; c], vec![0f64; c]);
    for (g, b) in &parts {
        dg.iter_mut().zip(g).for_each(|(a, v)| *a += v);
        dbt.iter_mut().zip(b).for_each(|(a, v)| *a += v);
    }
    (dx, dg.into_iter().map(|v| v as f32).collect(), dbt.into_iter().map(|v| v as f32).collect())
}

/// Gradients of `group_norm` for dy: dx, dgamma, dbeta, all f32 (x bf16 on emu/cuda).
/// Kernel: group_norm_backward_f32.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward(x: &Tensor, gamma: &Tensor, beta: &Tensor, groups: usize, fuse_silu: bool, dy: &Tensor, dx: &mut Tensor, dgamma: &mut Tensor, dbeta: &mut Tensor) -> Result<()> {
    let _span = super::profile::span("group_norm_backward");
    let n = x.shape()[0];
    let c = *x.shape().last().ok_or_else(|| Error::Shape("group_norm of a scalar".into()))?;
    if groups == 0 || c % groups != 0 || dy.shape() != x.shape() || dx.shape() != x.shape() || dgamma.numel() != c || dbeta.numel() != c {
        return Err(Error::Shape(format!("group_norm_backward: x {:?}, dy {:?}, dx {:?}, {groups} groups", x.shape(), dy.shape(), dx.shape())));
    }
    same_device("group_norm_backward", &[x, gamma, beta, dy, dx, dgamma, dbeta])?;
    let dev = x.device().clone();
    if !dev.runs_kernels() {
        let (xv, gv, bv, dyv) = (super::host_view(x)?, super::host_view(gamma)?, super::host_view(beta)?, super::host_view(dy)?);
        let dxv = dx.host_f32_mut().ok_or_else(|| Error::DType("group_norm_backward: the CPU's dx must be host f32".into()))?;
        let (gg, gb) = super::group_norm_cpu::backward(&xv, n, c, groups, &gv, &bv, fuse_silu, &dyv, dxv);
        dgamma.buffer_mut().write(bytemuck::cast_slice(&gg))?;
        return dbeta.buffer_mut().write(bytemuck::cast_slice(&gb));
    }
    for t in [dy, &*dx, &*dgamma, &*dbeta] {
        expect_dtype("group_norm_backward gradient", t, DType::F32)?;
    }
    dgamma.buffer_mut().zero()?;
    dbeta.buffer_mut().zero()?;
    let s = x.numel() / (n * c);
    Launch::new("group_norm_backward_f32")?
        .grid([(n * groups) as u32, 1, 1])
        .block([256, 1, 1])
        .buf(x.buffer())
        .buf(dy.buffer())
        .buf(gamma.buffer())
        .buf(beta.buffer())
        .buf(dx.buffer())
        .buf(dgamma.buffer())
        .buf(dbeta.buffer())
        .i32(s as i32)
        .i32(c as i32)
        .i32(groups as i32)
        .i32(fuse_silu as i32)
        .run(&dev)
}
