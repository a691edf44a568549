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
    let _span = super::profile::span("linear");
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
        let out = linear_ref(&xv, n, &super::host_view(w)?, &super::host_view(b)?, din, dout);
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

/// Gradients of `linear` for dy (N, out): dx (N, in) through the SiLU when `silu_in`, dw, db; f32.
pub fn linear_backward(x: &Tensor, w: &Tensor, dy: &Tensor, silu_in: bool, dx: &mut Tensor, dw: &mut Tensor, db: &mut Tensor) -> Result<()> {
    let _span = super::profile::span("linear_backward");
    let (n, din) = (x.shape()[0], x.numel() / x.shape()[0].max(1));
    let dout = w.shape()[0];
    if w.shape() != [dout, din] || dy.shape() != [n, dout] || dx.shape() != x.shape() || dw.shape() != w.shape() || db.shape() != [dout] {
        return Err(Error::Shape(format!("linear_backward: x {:?}, w {:?}, dy {:?}", x.shape(), w.shape(), dy.shape())));
    }
    same_device("linear_backward", &[x, w, dy, dx, dw, db])?;
    let dev = x.device().clone();
    if !dev.runs_kernels() {
        let xv = x.to_f32_vec()?;
        let f: Vec<f32> = if silu_in { xv.iter().map(|v| super::group_norm::silu(*v)).collect() } else { xv.clone() };
        let (mut gx, gw, gb) = linear_backward_ref(&f, n, &super::host_view(w)?, din, dout, &super::host_view(dy)?);
        if silu_in {
            gx.iter_mut().zip(&xv).for_each(|(g, v)| *g *= super::group_norm::silu_grad(*v));
        }
        dx.buffer_mut().write(bytemuck::cast_slice(&gx))?;
        dw.buffer_mut().write(bytemuck::cast_slice(&gw))?;
        return db.buffer_mut().write(bytemuck::cast_slice(&gb));
    }
    Launch::new("linear_backward_f32")?
        .grid(stride_grid(n * din + dout * din + dout, 128))
        .block([128, 1, 1])
        .buf(x.buffer())
        .buf(w.buffer())
        .buf(dy.buffer())
        .buf(dx.buffer())
        .buf(dw.buffer())
        .buf(db.buffer())
        .i32(n as i32)
        .i32(din as i32)
        .i32(dout as i32)
        .i32(silu_in as i32)
        .run(&dev)
}
