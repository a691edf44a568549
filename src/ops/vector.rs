//! Vector operations on f32 tensors of any shape (flattened): what CGLS, SIRT and the sampler's
//! data consistency are made of. Kernels in kernels/elementwise.cu and kernels/reduce.cu.
use super::{expect_dtype, same_device, stride_grid};
use crate::device::Launch;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

fn host(t: &Tensor) -> Result<&[f32]> {
    t.host_f32().ok_or_else(|| Error::DType("host f32 expected".into()))
}
fn host_mut(t: &mut Tensor) -> Result<&mut [f32]> {
    t.host_f32_mut().ok_or_else(|| Error::DType("host f32 expected".into()))
}

fn check(op: &str, ts: &[&Tensor]) -> Result<()> {
    same_device(op, ts)?;
    for t in ts {
        expect_dtype(op, t, DType::F32)?;
        if t.numel() != ts[0].numel() {
            return Err(Error::Shape(format!("{op}: {:?} and {:?} differ in size", ts[0].shape(), t.shape())));
        }
    }
    Ok(())
}

/// CPU reference: sum of x y, accumulated in f64.
pub fn dot_ref(x: &[f32], y: &[f32]) -> f64 {
    x.iter().zip(y).map(|(a, b)| *a as f64 * *b as f64).sum()
}

/// x . y, accumulated in f32 per block and f64 across blocks on kernel devices.
pub fn dot(x: &Tensor, y: &Tensor) -> Result<f64> {
    check("dot", &[x, y])?;
    let dev = x.device();
    if !dev.runs_kernels() {
        return Ok(dot_ref(host(x)?, host(y)?));
    }
    let n = x.numel();
    let blocks = n.div_ceil(256).clamp(1, 1024);
    let partial = dev.alloc(blocks * 4)?;
    Launch::new("dot_partial_f32")?
        .grid([blocks as u32, 1, 1])
        .block([256, 1, 1])
        .i64(n as i64)
        .buf(x.buffer())
        .buf(y.buffer())
        .buf(&partial)
        .run(dev)?;
    let p: Vec<f32> = bytemuck::cast_slice(&partial.read()?).to_vec();
    Ok(p.iter().map(|v| *v as f64).sum())
}

/// ||x||_2
pub fn norm(x: &Tensor) -> Result<f64> {
    Ok(dot(x, x)?.max(0.0).sqrt())
}

/// y = a * b elementwise.
pub fn mul(a: &Tensor, b: &Tensor, y: &mut Tensor) -> Result<()> {
    check("mul", &[a, b, y])?;
    let dev = a.device().clone();
    if !dev.runs_kernels() {
        let (av, bv) = (host(a)?.to_vec(), host(b)?.to_vec());
        host_mut(y)?.iter_mut().enumerate().for_each(|(i, o)| *o = av[i] * bv[i]);
        return Ok(());
    }
    let n = a.numel();
    Launch::new("mul_f32")?.grid(stride_grid(n, 256)).block([256, 1, 1]).i64(n as i64).buf(a.buffer()).buf(b.buffer()).buf(y.buffer()).run(&dev)
}

/// y = 1/x where |x| > eps, else 0.
pub fn recip(eps: f32, x: &Tensor, y: &mut Tensor) -> Result<()> {
    unary("recip_f32", eps, x, y, |e, v| if v.abs() > e { 1.0 / v } else { 0.0 })
}

/// y = max(x, lo).
pub fn clamp_min(lo: f32, x: &Tensor, y: &mut Tensor) -> Result<()> {
    unary("clamp_min_f32", lo, x, y, |l, v| v.max(l))
}

fn unary(kernel: &str, a: f32, x: &Tensor, y: &mut Tensor, f: fn(f32, f32) -> f32) -> Result<()> {
    check(kernel, &[x, y])?;
    let dev = x.device().clone();
    if !dev.runs_kernels() {
        let xv = host(x)?.to_vec();
        host_mut(y)?.iter_mut().zip(xv).for_each(|(o, v)| *o = f(a, v));
        return Ok(());
    }
    let n = x.numel();
    Launch::new(kernel)?.grid(stride_grid(n, 256)).block([256, 1, 1]).i64(n as i64).f32(a).buf(x.buffer()).buf(y.buffer()).run(&dev)
}

/// y = v everywhere.
pub fn fill(v: f32, y: &mut Tensor) -> Result<()> {
    expect_dtype("fill", y, DType::F32)?;
    let dev = y.device().clone();
    if !dev.runs_kernels() {
        host_mut(y)?.iter_mut().for_each(|o| *o = v);
        return Ok(());
    }
    let n = y.numel();
    Launch::new("fill_f32")?.grid(stride_grid(n, 256)).block([256, 1, 1]).i64(n as i64).f32(v).buf(y.buffer()).run(&dev)
}

/// A copy of x on the same device.
pub fn copy(x: &Tensor) -> Result<Tensor> {
    x.to_device(x.device())
}

/// y = a + b elementwise: f32 on the CPU, bf16 (summed in f32) or f32 on kernel devices.
pub fn add(a: &Tensor, b: &Tensor, y: &mut Tensor) -> Result<()> {
    let _span = super::profile::span("add");
    same_device("add", &[a, b, y])?;
    if a.numel() != b.numel() || a.numel() != y.numel() || a.dtype() != b.dtype() || a.dtype() != y.dtype() {
        return Err(Error::Shape(format!("add: {:?} {} + {:?} {} -> {:?} {}", a.shape(), a.dtype(), b.shape(), b.dtype(), y.shape(), y.dtype())));
    }
    let dev = a.device().clone();
    if dev.runs_kernels() && a.dtype() == DType::F32 {
        // y = b, then y += a, both on the device.
        crate::ops::elementwise::scale(1.0, b, y)?;
        return crate::ops::elementwise::axpy(1.0, a, y);
    }
    if let (Some(av), Some(bv)) = (a.host_f32(), b.host_f32()) {
        use rayon::prelude::*;
        let out = y.host_f32_mut().ok_or_else(|| Error::DType("add: host f32 output expected".into()))?;
        out.par_chunks_mut(1 << 14).zip(av.par_chunks(1 << 14).zip(bv.par_chunks(1 << 14))).for_each(|(o, (x, z))| o.iter_mut().zip(x.iter().zip(z)).for_each(|(o, (x, z))| *o = x + z));
        return Ok(());
    }
    if !dev.runs_kernels() {
        let s: Vec<f32> = a.to_f32_vec()?.iter().zip(b.to_f32_vec()?).map(|(x, z)| x + z).collect();
        let bytes = y.dtype().encode(&s);
        return y.buffer_mut().write(&bytes);
    }
    let n = a.numel();
    Launch::new("add_bf16")?.grid(stride_grid(n, 256)).block([256, 1, 1]).i64(n as i64).buf(a.buffer()).buf(b.buffer()).buf(y.buffer()).run(&dev)
}
