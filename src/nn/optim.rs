//! AdamW with f32 master weights, global gradient-norm clipping, linear learning-rate warmup, and
//! an exponential moving average of the weights.
use std::collections::{BTreeMap, HashMap};

/// Parameter gradients by name, f32 on the host.
pub type Grads = HashMap<String, Vec<f32>>;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub warmup_steps: u64,
    /// Clip the global gradient norm to this (0: no clipping).
    pub clip_norm: f32,
    pub ema_decay: f32,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { lr: 2e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, warmup_steps: 100, clip_norm: 1.0, ema_decay: 0.999 }
    }
}

/// Optimizer state: first and second moments per parameter, and the step count.
#[derive(Clone, Debug, Default)]
pub struct AdamState {
    pub step: u64,
    pub m: BTreeMap<String, Vec<f32>>,
    pub v: BTreeMap<String, Vec<f32>>,
}

/// Scales the gradients so that their global L2 norm is at most `max` (if max > 0); returns the
/// norm before clipping.
pub fn clip_grad_norm(g: &mut Grads, max: f32) -> f64 {
    let norm = g.values().flat_map(|v| v.iter()).map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt();
    if max > 0.0 && norm > max as f64 {
        let s = (max as f64 / norm) as f32;
        g.values_mut().for_each(|v| v.iter_mut().for_each(|x| *x *= s));
    }
    norm
}

impl AdamState {
    /// One AdamW update of `params` (name -> values) from `grads`; returns the learning rate used.
    pub fn update(&mut self, cfg: &AdamConfig, params: &mut BTreeMap<String, Vec<f32>>, grads: &Grads) -> f32 {
        self.step += 1;
        let warm = if cfg.warmup_steps > 0 { (self.step as f32 / cfg.warmup_steps as f32).min(1.0) } else { 1.0 };
        let lr = cfg.lr * warm;
        let (b1, b2) = (cfg.beta1, cfg.beta2);
        let c1 = 1.0 - b1.powi(self.step as i32);
        let c2 = 1.0 - b2.powi(self.step as i32);
        for (name, p) in params.iter_mut() {
            let Some(g) = grads.get(name) else { continue };
            let m = self.m.entry(name.clone()).or_insert_with(|| vec![0.0; p.len()]);
            let v = self.v.entry(name.clone()).or_insert_with(|| vec![0.0; p.len()]);
            for i in 0..p.len() {
                m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                let upd = (m[i] / c1) / ((v[i] / c2).sqrt() + cfg.eps);
                p[i] -= lr * (upd + cfg.weight_decay * p[i]);
            }
        }
        lr
    }
}

/// ema = d ema + (1 - d) params
pub fn ema_update(ema: &mut BTreeMap<String, Vec<f32>>, params: &BTreeMap<String, Vec<f32>>, decay: f32) {
    for (name, p) in params {
        let e = ema.entry(name.clone()).or_insert_with(|| p.clone());
        e.iter_mut().zip(p).for_each(|(a, b)| *a = decay * *a + (1.0 - decay) * b);
    }
}
