//! The optimiser: AdamW with f32 master weights, global gradient-norm clipping, linear
//! learning-rate warmup, and an exponential moving average of the weights with a warm-up. Its
//! state lives on the training device; the update is one operation per parameter tensor
//! (src/ops/adamw.rs, kernels/adamw.cu).
use super::{Arch, UNet, Weights};
use crate::error::{Error, Result};
use crate::ops::adamw::{adamw, AdamStep};
use crate::ops::{cast::cast_into, elementwise::scale, vector};
use crate::tensor::{DType, Tensor};
use crate::Device;
use std::collections::BTreeMap;

/// AdamW's settings (Loshchilov and Hutter 2019), with warmup, clipping and the EMA; saved in
/// checkpoint.json so that training resumes with the same ones.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct AdamConfig {
    /// Peak learning rate (default 2e-4), reached after `warmup_steps`.
    pub lr: f32,
    /// Decay of the first moment (default 0.9).
    pub beta1: f32,
    /// Decay of the second moment (default 0.999).
    pub beta2: f32,
    /// Added to the second moment's root (default 1e-8).
    pub eps: f32,
    /// Decoupled weight decay per unit learning rate (default 0).
    pub weight_decay: f32,
    /// Steps of linear warmup from 0 to `lr` (default 100).
    pub warmup_steps: u64,
    /// Clip the global gradient norm to this (0: no clipping).
    pub clip_norm: f32,
    /// The EMA's decay per step, before its warm-up cap (default 0.999; see `ema_decay_at`).
    pub ema_decay: f32,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { lr: 2e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, warmup_steps: 100, clip_norm: 1.0, ema_decay: 0.999 }
    }
}

impl AdamConfig {
    /// The learning rate of step `step` (1-based): linear warmup to `lr`.
    pub fn lr_at(&self, step: u64) -> f32 {
        let warm = if self.warmup_steps > 0 { (step as f32 / self.warmup_steps as f32).min(1.0) } else { 1.0 };
        self.lr * warm
    }

    /// The EMA decay of step `step`: min(ema_decay, (1 + n) / (10 + n)). The warm-up keeps the
    /// average from holding on to the random initialisation for thousands of steps (0.999^1000
    /// would still weigh it 37%).
    pub fn ema_decay_at(&self, step: u64) -> f32 {
        let n = step as f32;
        self.ema_decay.min((1.0 + n) / (10.0 + n))
    }

    /// The factor that brings a gradient of global L2 norm `norm` down to `clip_norm` (1 when it
    /// is below, or when clipping is off).
    pub fn clip_scale(&self, norm: f64) -> f32 {
        if self.clip_norm > 0.0 && norm > self.clip_norm as f64 {
            (self.clip_norm as f64 / norm) as f32
        } else {
            1.0
        }
    }
}

/// Per parameter: master weights, EMA, Adam's first and second moments (f32, one device).
struct ParamState {
    p: Tensor,
    ema: Tensor,
    m: Tensor,
    v: Tensor,
}

/// The optimiser's state for every parameter of a network, on one device.
pub struct Optimizer {
    state: BTreeMap<String, ParamState>,
}

impl Optimizer {
    /// From host maps (engine layout): weights, EMA, first and second moments (zero where a map
    /// lacks the parameter), on the CPU.
    pub fn from_maps(arch: &Arch, maps: [&BTreeMap<String, Vec<f32>>; 4]) -> Result<Optimizer> {
        let w = Weights::from_engine(arch, maps[0])?;
        Weights::from_engine(arch, maps[1])?;
        let mut state = BTreeMap::new();
        for (name, shape, v) in w.iter() {
            let t = |m: &BTreeMap<String, Vec<f32>>| match m.get(name) {
                Some(x) if x.len() == v.len() => Tensor::from_f32(x, shape, DType::F32, &Device::Cpu),
                Some(x) => Err(Error::Config(format!("{name}: {} optimiser values for {} weights", x.len(), v.len()))),
                None => Tensor::zeros(shape, DType::F32, &Device::Cpu),
            };
            state.insert(name.clone(), ParamState { p: t(maps[0])?, ema: t(maps[1])?, m: t(maps[2])?, v: t(maps[3])? });
        }
        Ok(Optimizer { state })
    }

    /// Moves the whole state to `dev`.
    pub fn to_device(&mut self, dev: &Device) -> Result<()> {
        for s in self.state.values_mut() {
            for t in [&mut s.p, &mut s.ema, &mut s.m, &mut s.v] {
                *t = t.to_device(dev)?;
            }
        }
        Ok(())
    }

    /// One of the four maps copied to the host: 0 weights, 1 EMA, 2 and 3 Adam's moments.
    pub fn host_map(&self, which: usize) -> Result<BTreeMap<String, Vec<f32>>> {
        self.state.iter().map(|(k, s)| Ok((k.clone(), [&s.p, &s.ema, &s.m, &s.v][which].to_f32_vec()?))).collect()
    }

    /// Step `step` (1-based) from `grads` (f32, on the state's device): the global gradient norm,
    /// the clipped AdamW update and the EMA, then `net`'s weights refreshed from the master
    /// weights (a cast to bf16 for convolution weights on kernel devices). Returns the norm before
    /// clipping and the learning rate.
    pub fn apply(&mut self, cfg: &AdamConfig, step: u64, grads: &crate::nn::unet_backward::TensorGrads, net: &mut UNet) -> Result<(f64, f32)> {
        let mut sq = 0.0;
        for g in grads.values() {
            sq += vector::dot(g, g)?;
        }
        let norm = sq.sqrt();
        let st = cfg.step(step, cfg.clip_scale(norm));
        for (name, s) in self.state.iter_mut() {
            let g = grads.get(name).ok_or_else(|| Error::Config(format!("no gradient for {name}")))?;
            adamw(&st, &mut s.p, g, &mut s.m, &mut s.v, &mut s.ema)?;
            let w = net.params.get_mut(name).ok_or_else(|| Error::Config(format!("the network has no {name}")))?;
            if w.dtype() == DType::F32 {
                scale(1.0, &s.p, w)?;
            } else {
                cast_into(&s.p, w)?;
            }
        }
        Ok((norm, st.lr))
    }
}

impl AdamConfig {
    /// The scalars of step `step` (1-based) with the gradients scaled by `gscale`.
    pub fn step(&self, step: u64, gscale: f32) -> AdamStep {
        let cfg = self;
        AdamStep {
            gscale,
            lr: cfg.lr_at(step),
            b1: cfg.beta1,
            b2: cfg.beta2,
            c1: 1.0 - cfg.beta1.powi(step as i32),
            c2: 1.0 - cfg.beta2.powi(step as i32),
            eps: cfg.eps,
            wd: cfg.weight_decay,
            decay: cfg.ema_decay_at(step),
        }
    }
}
