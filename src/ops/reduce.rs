//! Sum and sum of squares along the last axis (kernels/reduce.cu), accumulated in f32.
use super::{expect_dtype, expect_shape, same_device};
use crate::device::Launch;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// CPU reference, accumulated in f64 then rounded: the truth both f32 kernels are held to.
pub fn row_sums_ref(x: &[f32], n: usize) -> (Vec<f32>, Vec<f32>) {
    x.chunks(n)
        .map(|row| {
            let s: f64 = row.iter().map(|&v| v as f64).sum();
            let q: f64 = row.iter().map(|&v| (v as f64) * (v as f64)).sum();
            (s as f32, q as f32)
        })
        .unzip()
}

/// For x of shape (..., n): sum and sumsq of shape (rows) with rows the product of the leading axes.
pub fn row_sums(x: &Tensor, sum: &mut Tensor, sumsq: &mut Tensor) -> Result<()> {
    same_device("row_sums", &[x, sum, sumsq])?;
    let n = *x.shape().last().ok_or_else(|| Error::Shape("row_sums of a scalar".into()))?;
    let rows = if n == 0 { 0 } else { x.numel() / n };
    for t in [&*sum, &*sumsq] {
        expect_dtype("row_sums", t, DType::F32)?;
        expect_shape("row_sums", t, &[rows])?;
    }
    let dev = x.device().clone();
    if !dev.runs_kernels() {
        let (s, q) = row_sums_ref(&x.to_f32_vec()?, n.max(1));
        sum.buffer_mut().write(bytemuck::cast_slice(&s))?;
        sumsq.buffer_mut().write(bytemuck::cast_slice(&q))?;
        return Ok(());
    }
    if rows == 0 {
        return Ok(());
    }
    let kernel = match x.dtype() {
        DType::F32 => "row_sums_f32",
        DType::BF16 => "row_sums_bf16",
        d => return Err(Error::DType(format!("row_sums: {d} is not supported"))),
    };
    let i32_of = |v: usize, what: &str| i32::try_from(v).map_err(|_| Error::Shape(format!("row_sums: {what} {v} exceeds i32")));
    Launch::new(kernel)?
        .grid([rows.min(65535 * 16) as u32, 1, 1])
        .block([256, 1, 1])
        .i32(i32_of(rows, "rows")?)
        .i32(i32_of(n, "row length")?)
        .buf(x.buffer())
        .buf(sum.buffer())
        .buf(sumsq.buffer())
        .run(&dev)
}
