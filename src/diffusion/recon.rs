//! Reconstruction (METHOD.md section 6): the tiled sampler with data consistency in physical
//! units. After every network pass Tweedie's x0 is mapped to attenuation, a few damped CG
//! iterations on the projector pair pull it towards the measurements, and the result goes back
//! to the model range for the DDIM update (the noise estimate is kept, as in DDS).
use super::sampler::{sample, EpsModel, SampleStats, SamplerOptions};
use super::schedule::T;
use super::train::to_model_range;
use crate::ct::iterative::cgls_damped;
use crate::ct::siddon::Projector;
use crate::error::{Error, Result};
use crate::nn::UNetConfig;
use crate::ops::elementwise::affine_inplace;
use crate::tensor::Tensor;

/// Where the sampler starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Start {
    /// Pure noise at t = 999.
    Noise,
    /// An initial volume (FDK) noised to this timestep, then sampled down from it.
    Noised(usize),
}

impl Start {
    /// `noise`, or `fdk:T` with T in 1..999.
    pub fn parse(s: &str) -> Result<Start> {
        if s == "noise" {
            return Ok(Start::Noise);
        }
        match s.strip_prefix("fdk:").map(str::parse::<usize>) {
            Some(Ok(t)) if (1..T).contains(&t) => Ok(Start::Noised(t)),
            _ => Err(Error::Config(format!("--start {s:?}: expected noise or fdk:T with T in 1..{}", T - 1))),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ReconOptions {
    pub sampler: SamplerOptions,
    /// CG iterations of data consistency per network pass (M).
    pub cg_iters: usize,
    /// Damping towards the network's estimate (gamma; 0 is early-stopped CG).
    pub gamma: f64,
    pub start: Start,
}

impl Default for ReconOptions {
    fn default() -> Self {
        ReconOptions { sampler: SamplerOptions { rounds: 2, ..SamplerOptions::default() }, cg_iters: 5, gamma: 0.0, start: Start::Noise }
    }
}

impl ReconOptions {
    /// The sampler's options with the start applied (a noised start begins at its timestep).
    pub fn sampler_options(&self) -> SamplerOptions {
        match self.start {
            Start::Noise => self.sampler.clone(),
            Start::Noised(t) => SamplerOptions { t_start: t, ..self.sampler.clone() },
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.sampler_options().validate()?;
        if !(self.gamma.is_finite() && self.gamma >= 0.0) {
            return Err(Error::Config(format!("the CG damping gamma must be finite and >= 0, got {}", self.gamma)));
        }
        Ok(())
    }
}

/// Where the time of a reconstruction went.
#[derive(Clone, Debug, Default)]
pub struct ReconStats {
    pub sample: SampleStats,
    /// Seconds in the projector (forward and adjoint) during data consistency.
    pub projector_s: f64,
}

/// x0 (model range, in place on the projector's device) -> attenuation -> `iters` damped CG
/// iterations against y -> model range.
pub fn data_consistency(p: &Projector, y: &Tensor, x0: &mut Tensor, mu_max: f32, iters: usize, gamma: f64) -> Result<()> {
    affine_inplace(0.5 * mu_max, 0.5 * mu_max, x0)?;
    cgls_damped(p, y, x0, gamma, iters, |_, _| {})?;
    affine_inplace(2.0 / mu_max, -1.0, x0)
}

/// Reconstructs attenuation from projections `y` (on the projector's device). `init` is the
/// attenuation volume that `Start::Noised` starts from (FDK). `progress(pass, passes)`.
pub fn reconstruct(
    model: &dyn EpsModel,
    p: &Projector,
    y: &Tensor,
    mu_max: f32,
    init: Option<&[f32]>,
    opts: &ReconOptions,
    progress: impl FnMut(usize, usize),
) -> Result<(Vec<f32>, ReconStats)> {
    let dims = p.geometry().volume.shape;
    if model.device().name() != p.device().name() || y.device().name() != p.device().name() {
        return Err(Error::Config(format!(
            "reconstruct: the network ({}), the projector ({}) and the projections ({}) must share one device",
            model.device().name(),
            p.device().name(),
            y.device().name()
        )));
    }
    opts.validate()?;
    let so = opts.sampler_options();
    let init = match opts.start {
        Start::Noise => None,
        Start::Noised(_) => {
            let v = init.ok_or_else(|| Error::Config("starting from a noised volume needs the volume (FDK)".into()))?;
            Some(to_model_range(v, mu_max))
        }
    };
    let busy0 = p.busy_seconds();
    let hook = |x0: &mut Tensor, _t: usize| data_consistency(p, y, x0, mu_max, opts.cg_iters, opts.gamma);
    let (x, sample) = sample(model, dims, &so, init.as_deref(), hook, progress)?;
    let mu = x.iter().map(|v| (v + 1.0) * 0.5 * mu_max).collect();
    Ok((mu, ReconStats { sample, projector_s: p.busy_seconds() - busy0 }))
}

/// Bytes a reconstruction holds on its device: the network's weights and one batch of patch
/// activations (inference keeps the encoder's outputs for the skips plus a few working tensors),
/// the sampler's volumes, and the projector's volumes and projections with CG's vectors.
pub fn memory_estimate(cfg: &UNetConfig, param_count: usize, act_bytes: usize, batch: usize, volume: usize, rays: usize) -> usize {
    let voxels: usize = cfg.patch.iter().product();
    let mut skips = 0;
    let mut widest = cfg.in_channels;
    for (level, m) in cfg.channel_mult.iter().enumerate() {
        let c = m * cfg.model_channels;
        widest = widest.max(c * (voxels >> (3 * level)));
        skips += (cfg.num_res_blocks + 1) * c * (voxels >> (3 * level));
    }
    let per_patch = (skips + 6 * widest.max(cfg.model_channels * voxels) + cfg.in_channels * voxels) * act_bytes;
    let network = param_count * act_bytes + batch * per_patch;
    let sampler = 4 * volume * 4;
    let projector = (5 * volume + 3 * rays) * 4;
    network + sampler + projector
}
