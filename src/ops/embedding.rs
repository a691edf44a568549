//! Sinusoidal timestep embedding: [cos(t f_k), sin(t f_k)] with f_k = exp(-ln(10000) k / half),
//! k < half = dim / 2 (cosines first, as guided-diffusion). Kernel: kernels/linear.cu.
use super::{expect_dtype, same_device, stride_grid};
use crate::device::Launch;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

pub fn timestep_embedding_ref(t: &[f32], dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let mut out = vec![0f32; t.len() * dim];
    for (i, &tv) in t.iter().enumerate() {
        for k in 0..half {
            let f = (-(10000f64.ln()) * k as f64 / half as f64).exp();
            let a = tv as f64 * f;
            out[i * dim + k] = a.cos() as f32;
            out[i * dim + half + k] = a.sin() as f32;
        }
    }
    out
}

/// y (N, dim) = embedding of t (N), f32.
pub fn timestep_embedding(t: &Tensor, y: &mut Tensor) -> Result<()> {
    let _span = super::profile::span("timestep_embedding");
    let n = t.numel();
    let dim = y.shape().get(1).copied().unwrap_or(0);
    if y.shape() != [n, dim] || dim % 2 != 0 || dim == 0 {
        return Err(Error::Shape(format!("timestep_embedding: t {:?}, y {:?}", t.shape(), y.shape())));
    }
    same_device("timestep_embedding", &[t, y])?;
    expect_dtype("timestep_embedding", t, DType::F32)?;
    expect_dtype("timestep_embedding", y, DType::F32)?;
    let dev = t.device().clone();
    if !dev.runs_kernels() {
        let out = timestep_embedding_ref(&t.to_f32_vec()?, dim);
        return y.buffer_mut().write(bytemuck::cast_slice(&out));
    }
    Launch::new("timestep_embedding_f32")?.grid(stride_grid(n * dim / 2, 128)).block([128, 1, 1]).buf(t.buffer()).buf(y.buffer()).i32(n as i32).i32(dim as i32).run(&dev)
}
