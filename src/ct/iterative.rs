//! CGLS and SIRT on the Siddon pair, on any device: all vectors stay on the projector's device.
use super::siddon::Projector;
use crate::error::{Error, Result};
use crate::ops::{elementwise::axpy, elementwise::scale, vector};
use crate::tensor::{DType, Tensor};

/// What an iterative solve reports: the residual ||y - A x|| before each iteration and at the end.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// ||y - A x||_2 over all rays (line-integral units) at the start and after each iteration:
    /// iters + 1 values, fewer when CGLS stops early on an exact solution.
    pub residuals: Vec<f64>,
}

fn zeros_like(t: &Tensor) -> Result<Tensor> {
    Tensor::zeros(t.shape(), DType::F32, t.device())
}

/// CGLS for min ||A x - y||^2 from x (updated in place), `iters` iterations. `progress` is called
/// after each iteration with (iteration, residual norm).
pub fn cgls(p: &Projector, y: &Tensor, x: &mut Tensor, iters: usize, progress: impl FnMut(usize, f64)) -> Result<History> {
    cgls_damped(p, y, x, 0.0, iters, progress)
}

/// CGLS for min ||A x - y||^2 + gamma ||x - x_start||^2, i.e. CG on (A^T A + gamma I) x =
/// A^T y + gamma x_start, from x_start = x (updated in place). The residuals reported are the
/// data residuals ||y - A x||. With gamma = 0 this is plain CGLS (early stopped, as in DDS).
pub fn cgls_damped(p: &Projector, y: &Tensor, x: &mut Tensor, gamma: f64, iters: usize, mut progress: impl FnMut(usize, f64)) -> Result<History> {
    if !(gamma.is_finite() && gamma >= 0.0) {
        return Err(Error::Argument(format!("CG damping gamma must be finite and >= 0, got {gamma}")));
    }
    let mut r = zeros_like(y)?;
    p.forward(x, &mut r)?;
    scale(-1.0, &r.to_device(r.device())?, &mut r)?;
    axpy(1.0, y, &mut r)?; // r = y - A x
    // w = x_start - x, the residual of the damping rows (scaled by sqrt(gamma)); zero at the start.
    let mut w = if gamma > 0.0 { Some(zeros_like(x)?) } else { None };
    let mut s = zeros_like(x)?;
    p.adjoint(&r, &mut s)?;
    let mut d = vector::copy(&s)?;
    let mut q = zeros_like(y)?;
    let mut gs = vector::dot(&s, &s)?;
    let mut h = History { residuals: vec![vector::norm(&r)?] };
    for k in 0..iters {
        if gs == 0.0 {
            break; // x already solves the normal equations
        }
        p.forward(&d, &mut q)?;
        let qq = vector::dot(&q, &q)? + if gamma > 0.0 { gamma * vector::dot(&d, &d)? } else { 0.0 };
        if qq == 0.0 {
            break;
        }
        let alpha = gs / qq;
        axpy(alpha as f32, &d, x)?;
        axpy(-alpha as f32, &q, &mut r)?;
        p.adjoint(&r, &mut s)?; // s = A^T r + gamma w
        if let Some(w) = w.as_mut() {
            axpy(-alpha as f32, &d, w)?;
            axpy(gamma as f32, w, &mut s)?;
        }
        let g2 = vector::dot(&s, &s)?;
        // d = s + (g2 / gs) d
        let beta = (g2 / gs) as f32;
        let dd = vector::copy(&d)?;
        scale(beta, &dd, &mut d)?;
        axpy(1.0, &s, &mut d)?;
        gs = g2;
        let res = vector::norm(&r)?;
        h.residuals.push(res);
        progress(k + 1, res);
    }
    Ok(h)
}

/// SIRT: x += lambda C A^T R (y - A x), with R = 1/(A 1) and C = 1/(A^T 1); optionally x >= 0.
pub fn sirt(
    p: &Projector,
    y: &Tensor,
    x: &mut Tensor,
    iters: usize,
    lambda: f32,
    nonneg: bool,
    mut progress: impl FnMut(usize, f64),
) -> Result<History> {
    if !(lambda > 0.0 && lambda < 2.0) {
        return Err(Error::Argument(format!("SIRT relaxation {lambda} must lie in (0, 2)")));
    }
    let mut ones_v = zeros_like(x)?;
    vector::fill(1.0, &mut ones_v)?;
    let mut row = zeros_like(y)?;
    p.forward(&ones_v, &mut row)?;
    let mut rinv = zeros_like(y)?;
    vector::recip(1e-6, &row, &mut rinv)?;
    let mut ones_p = zeros_like(y)?;
    vector::fill(1.0, &mut ones_p)?;
    let mut col = zeros_like(x)?;
    p.adjoint(&ones_p, &mut col)?;
    let mut cinv = zeros_like(x)?;
    vector::recip(1e-6, &col, &mut cinv)?;
    let (mut r, mut rw, mut upd, mut updw) = (zeros_like(y)?, zeros_like(y)?, zeros_like(x)?, zeros_like(x)?);
    let mut h = History::default();
    for k in 0..=iters {
        p.forward(x, &mut r)?;
        scale(-1.0, &vector::copy(&r)?, &mut r)?;
        axpy(1.0, y, &mut r)?;
        let res = vector::norm(&r)?;
        h.residuals.push(res);
        if k == iters {
            break;
        }
        vector::mul(&r, &rinv, &mut rw)?;
        p.adjoint(&rw, &mut upd)?;
        vector::mul(&upd, &cinv, &mut updw)?;
        axpy(lambda, &updw, x)?;
        if nonneg {
            vector::clamp_min(0.0, &vector::copy(x)?, x)?;
        }
        progress(k + 1, res);
    }
    Ok(h)
}

/// The device tensors of host projections (views, rows, cols) and a start volume (nz, ny, nx).
fn on_device(p: &Projector, proj: &[f32], x0: &[f32]) -> Result<(Tensor, Tensor)> {
    let g = p.geometry();
    Ok((Tensor::from_f32(proj, &g.proj_shape(), DType::F32, p.device())?, Tensor::from_f32(x0, &g.volume.shape, DType::F32, p.device())?))
}

/// `cgls` on host arrays: `iters` iterations from `x0`; returns the volume (nz, ny, nx).
pub fn cgls_host(p: &Projector, proj: &[f32], x0: &[f32], iters: usize) -> Result<Vec<f32>> {
    let (y, mut x) = on_device(p, proj, x0)?;
    cgls(p, &y, &mut x, iters, |_, _| {})?;
    x.to_f32_vec()
}

/// `sirt` on host arrays: `iters` iterations from `x0`; returns the volume (nz, ny, nx).
pub fn sirt_host(p: &Projector, proj: &[f32], x0: &[f32], iters: usize, lambda: f32, nonneg: bool) -> Result<Vec<f32>> {
    let (y, mut x) = on_device(p, proj, x0)?;
    sirt(p, &y, &mut x, iters, lambda, nonneg, |_, _| {})?;
    x.to_f32_vec()
}
