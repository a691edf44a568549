//! The DDPM noise schedule (docs/METHOD.md section 3): T = 1000, beta linear from 1e-4 to 0.02,
//! abar_t = prod_{s <= t} (1 - beta_s).
pub const T: usize = 1000;

#[derive(Clone, Debug)]
pub struct Schedule {
    pub abar: Vec<f64>,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::linear(1e-4, 0.02)
    }
}

impl Schedule {
    pub fn linear(beta0: f64, beta1: f64) -> Schedule {
        let mut abar = Vec::with_capacity(T);
        let mut a = 1.0;
        for t in 0..T {
            a *= 1.0 - (beta0 + (beta1 - beta0) * t as f64 / (T - 1) as f64);
            abar.push(a);
        }
        Schedule { abar }
    }
}
