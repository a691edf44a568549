//! One optimiser step over a parameter tensor (kernels/adamw.cu): AdamW with bias correction on
//! the clipped gradient, then the EMA of the weights. The master weights, moments and EMA are f32
//! tensors on the training device, so a GPU run never moves them to the host between steps.
use super::{expect_dtype, same_device, stride_grid};
use crate::device::Launch;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// The scalars of one step: gradient scale (clipping), learning rate, betas and their bias
/// corrections, epsilon, weight decay, EMA decay.
#[derive(Clone, Copy, Debug)]
pub struct AdamStep {
    pub gscale: f32,
    pub lr: f32,
    pub b1: f32,
    pub b2: f32,
    pub c1: f32,
    pub c2: f32,
    pub eps: f32,
    pub wd: f32,
    pub decay: f32,
}


/// CPU reference of `adamw`.
pub fn adamw_ref(s: &AdamStep, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], ema: &mut [f32]) {
    for i in 0..p.len() {
        let gi = g[i] * s.gscale;
        m[i] = s.b1 * m[i] + (1.0 - s.b1) * gi;
        v[i] = s.b2 * v[i] + (1.0 - s.b2) * gi * gi;
        let upd = (m[i] / s.c1) / ((v[i] / s.c2).sqrt() + s.eps);
        p[i] -= s.lr * (upd + s.wd * p[i]);
        ema[i] = s.decay * ema[i] + (1.0 - s.decay) * p[i];
    }
}

/// Updates p, m, v and ema in place from the gradient g (all f32, one shape, one device).
pub fn adamw(s: &AdamStep, p: &mut Tensor, g: &Tensor, m: &mut Tensor, v: &mut Tensor, ema: &mut Tensor) -> Result<()> {
    let _span = super::profile::span("adamw");
    let n = p.numel();
    same_device("adamw", &[p, g, m, v, ema])?;
    for t in [&*p, g, &*m, &*v, &*ema] {
        expect_dtype("adamw", t, DType::F32)?;
        if t.numel() != n {
            return Err(Error::Shape(format!("adamw: {} values where the parameter has {n}", t.numel())));
        }
    }
    let dev = p.device().clone();
    if !dev.runs_kernels() {
        fn host(t: &mut Tensor) -> Result<&mut [f32]> {
            t.host_f32_mut().ok_or_else(|| Error::DType("host f32 expected".into()))
        }
        adamw_ref(s, host(p)?, &super::host_view(g)?, host(m)?, host(v)?, host(ema)?);
        return Ok(());
    }
    Launch::new("adamw_f32")?
        .grid(stride_grid(n, 256))
        .block([256, 1, 1])
        .i64(n as i64)
        .buf(p.buffer())
        .buf(g.buffer())
        .buf(m.buffer())
        .buf(v.buffer())
        .buf(ema.buffer())
        .f32(s.gscale)
        .f32(s.lr)
        .f32(s.b1)
        .f32(s.b2)
        .f32(s.c1)
        .f32(s.c2)
        .f32(s.eps)
        .f32(s.wd)
        .f32(s.decay)
        .run(&dev)
}
