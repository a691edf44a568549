//! The optimiser's settings and schedules: AdamW with f32 master weights, global gradient-norm
//! clipping, linear learning-rate warmup, and an exponential moving average of the weights with a
//! warm-up. The update itself is an operation (src/ops/adamw.rs, kernels/adamw.cu).

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
