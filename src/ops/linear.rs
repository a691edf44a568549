//! Linear layers: y (N, out) = x (N, in) W^T + b with W as PyTorch stores it (out, in); also the
//! 1x1 convolutions of attention, which are the same product over voxels. Kernel:
//! kernels/linear.cu (f32: these layers act on the time embedding, a few values per sample).
use super::{expect_dtype, same_device, stride_grid};
use crate::device::Launch;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// CPU reference.
pub fn linear_ref(x: &[f32], n: usize, w: &[f32], b: &[f32], d_in: usize, d_out: usize) -> Vec<f32> {
    let mut y = vec![0f32; n * d_out];
    for r in 0..n {
        y[r * d_out..(r + 1) * d_out].copy_from_slice(b);
    }
    // w is (d_out, d_in): read transposed.
    super::cpu_sgemm(n, d_out, d_in, x, d_in, 1, w, 1, d_in, &mut y, d_out, true);
    y
}

/// y (N, out) = f(x) (N, in) W^T + b, all f32, f = SiLU when `silu_in`.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor, y: &mut Tensor, silu_in: bool) -> Result<()> {
    let (n, din) = (x.shape()[0], x.numel() / x.shape()[0].max(1));
    let dout = b.numel();
    if w.shape() != [dout, din] || y.shape() != [n, dout] {
        return Err(Error::Shape(format!("linear: x {:?}, w {:?}, b {:?}, y {:?}", x.shape(), w.shape(), b.shape(), y.shape())));
    }
    same_device("linear", &[x, w, b, y])?;
    for t in [x, w, b, &*y] {
        expect_dtype("linear", t, DType::F32)?;
    }
    let dev = x.device().clone();
    if !dev.runs_kernels() {
        let mut xv = x.to_f32_vec()?;
        if silu_in {
            xv.iter_mut().for_each(|v| *v = super::group_norm::silu(*v));
        }
        let out = linear_ref(&xv, n, &w.to_f32_vec()?, &b.to_f32_vec()?, din, dout);
        return y.buffer_mut().write(bytemuck::cast_slice(&out));
    }
    Launch::new("linear_f32")?
        .grid(stride_grid(n * dout, 128))
        .block([128, 1, 1])
        .buf(x.buffer())
        .buf(w.buffer())
        .buf(b.buffer())
        .buf(y.buffer())
        .i32(n as i32)
        .i32(din as i32)
        .i32(dout as i32)
        .i32(silu_in as i32)
        .run(&dev)
}

/// Gradients of y = x W^T + b: (dx, dW, db) for dy; x (n, d_in), W (d_out, d_in).
pub fn linear_backward_ref(x: &[f32], n: usize, w: &[f32], d_in: usize, d_out: usize, dy: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dx = vec![0f32; n * d_in];
    let mut dw = vec![0f32; d_out * d_in];
    super::cpu_sgemm(n, d_in, d_out, dy, d_out, 1, w, d_in, 1, &mut dx, d_in, false);
    super::cpu_sgemm(d_out, d_in, n, dy, 1, d_out, x, d_in, 1, &mut dw, d_in, false);
    let mut db = vec![0f64; d_out];
    for r in dy.chunks(d_out) {
        db.iter_mut().zip(r).for_each(|(a, v)| *a += *v as f64);
    }
    (dx, dw, db.into_iter().map(|v| v as f32).collect())
}
