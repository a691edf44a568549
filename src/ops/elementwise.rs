//! axpy and scale on f32 (kernels/elementwise.cu).
use super::{expect_dtype, expect_shape, same_device, stride_grid};
use crate::device::Launch;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// CPU reference: y = a x + y.
pub fn axpy_ref(a: f32, x: &[f32], y: &mut [f32]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
}

/// CPU reference: y = a x.
pub fn scale_ref(a: f32, x: &[f32], y: &mut [f32]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y = a * x);
}

fn check(op: &str, x: &Tensor, y: &Tensor) -> Result<()> {
    same_device(op, &[x, y])?;
    expect_dtype(op, x, DType::F32)?;
    expect_dtype(op, y, DType::F32)?;
    expect_shape(op, y, x.shape())
}

/// y = a x + y.
pub fn axpy(a: f32, x: &Tensor, y: &mut Tensor) -> Result<()> {
    check("axpy", x, y)?;
    run("axpy_f32", a, x, y, axpy_ref)
}

/// y = a x.
pub fn scale(a: f32, x: &Tensor, y: &mut Tensor) -> Result<()> {
    check("scale", x, y)?;
    run("scale_f32", a, x, y, scale_ref)
}

/// y = a y + b in place.
pub fn affine_inplace(a: f32, b: f32, y: &mut Tensor) -> Result<()> {
    expect_dtype("affine", y, DType::F32)?;
    let dev = y.device().clone();
    if !dev.runs_kernels() {
        y.host_f32_mut().ok_or_else(|| Error::DType("host f32 expected".into()))?.iter_mut().for_each(|v| *v = a * *v + b);
        return Ok(());
    }
    let n = y.numel();
    Launch::new("affine_f32")?.grid(stride_grid(n, 256)).block([256, 1, 1]).i64(n as i64).f32(a).f32(b).buf(y.buffer()).buf(y.buffer()).run(&dev)
}

fn run(kernel: &str, a: f32, x: &Tensor, y: &mut Tensor, reference: fn(f32, &[f32], &mut [f32])) -> Result<()> {
    let dev = x.device().clone();
    if !dev.runs_kernels() {
        let xs = x.host_f32().ok_or_else(|| Error::DType("host f32 expected".into()))?.to_vec();
        reference(a, &xs, y.host_f32_mut().ok_or_else(|| Error::DType("host f32 expected".into()))?);
        return Ok(());
    }
    let n = x.numel();
    Launch::new(kernel)?.grid(stride_grid(n, 256)).block([256, 1, 1]).i64(n as i64).f32(a).buf(x.buffer()).buf(y.buffer()).run(&dev)
}
