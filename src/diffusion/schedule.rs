//! The DDPM noise schedule (docs/METHOD.md section 3): T = 1000, beta linear from 1e-4 to 0.02,
//! abar_t = prod_{s <= t} (1 - beta_s).
/// Diffusion timesteps: t runs over 0..T.
pub const T: usize = 1000;

/// The cumulative signal fractions abar_t of a beta schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// abar_t for t in 0..T, decreasing from about 1 to about 4e-5 (linear schedule).
    pub abar: Vec<f64>,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::linear(1e-4, 0.02)
    }
}

impl Schedule {
    /// beta_t linear from `beta0` (t = 0) to `beta1` (t = T - 1), as DDPM (Ho et al. 2020).
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
