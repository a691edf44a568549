//! The tiled sampler (METHOD.md sections 6 and 7): per network pass a fresh random tiling offset,
//! patches evaluated in batches with one shared global context, eps stitched back (the tiles of
//! one tiling are disjoint and cover the volume, so every voxel comes from exactly one patch),
//! Tweedie's x0 (clamped to the data range, with the noise estimate made consistent with it), then
//! a DDIM step with eta, or a re-noising for the next recurrent round. Reconstruction adds data
//! consistency on x0 through the `x0_hook` (the noise estimate is kept, as in DDS).
use super::schedule::{Schedule, T};
use super::tiling;
use crate::error::{Error, Result};
use crate::nn::{ContextMode, UNet};
use crate::tensor::{DType, Tensor};
use crate::Device;
use crate::ops::sampler::{ddim, stitch, tweedie};
use rand::{Rng, SeedableRng};

/// What predicts the noise of a batch of 5-channel patches (the U-Net, or an analytic model in
/// tests).
pub trait EpsModel {
    fn device(&self) -> &Device;
    fn act_dtype(&self) -> DType;
    fn patch(&self) -> [usize; 3];
    fn context_mode(&self) -> ContextMode;
    /// eps (N, P, 1) for inputs (N, P, 5) and timesteps t (N), tensors on `device()`.
    fn eps(&self, x: &Tensor, t: &Tensor) -> Result<Tensor>;
}

impl EpsModel for UNet {
    fn device(&self) -> &Device {
        UNet::device(self)
    }
    fn act_dtype(&self) -> DType {
        UNet::act_dtype(self)
    }
    fn patch(&self) -> [usize; 3] {
        self.arch.cfg.patch
    }
    fn context_mode(&self) -> ContextMode {
        self.arch.cfg.context
    }
    fn eps(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        self.forward(x, t, None)
    }
}

#[derive(Clone, Debug)]
pub struct SamplerOptions {
    /// DDIM steps, evenly spaced from t = 999 down to 0.
    pub steps: usize,
    pub eta: f64,
    /// Recurrent rounds per step (K): all but the last re-noise x0 to the same level.
    pub rounds: usize,
    /// Patches per network call.
    pub batch: usize,
    pub seed: u64,
    /// Clamp Tweedie's x0 to the data range [-1, 1].
    pub clip_x0: bool,
    /// The first timestep: 999 from pure noise, lower when starting from a noised initial volume.
    pub t_start: usize,
}

impl Default for SamplerOptions {
    fn default() -> Self {
        SamplerOptions { steps: 50, eta: 0.85, rounds: 1, batch: 16, seed: 0, clip_x0: true, t_start: T - 1 }
    }
}

impl SamplerOptions {
    /// Network passes of a run: timesteps times rounds.
    pub fn passes(&self) -> usize {
        timesteps(self.steps, self.t_start).len() * self.rounds
    }

    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 || self.rounds == 0 || !(0.0..=1.0).contains(&self.eta) || self.t_start >= T {
            return Err(Error::Config(format!(
                "sampler: steps {} and rounds {} must be positive, eta {} in [0, 1], the start timestep {} below {T}",
                self.steps, self.rounds, self.eta, self.t_start
            )));
        }
        Ok(())
    }
}

/// The DDIM timesteps: `steps` values from `t_start` down to 0 (fewer when the span is shorter).
pub fn timesteps(steps: usize, t_start: usize) -> Vec<usize> {
    if steps <= 1 {
        return vec![t_start];
    }
    let mut ts: Vec<usize> = (0..steps).map(|i| (t_start as f64 * (1.0 - i as f64 / (steps - 1) as f64)).round() as usize).collect();
    ts.dedup();
    ts
}

/// Where the time of a sampling run went.
#[derive(Clone, Debug, Default)]
pub struct SampleStats {
    pub passes: usize,
    pub network_s: f64,
    pub hook_s: f64,
    pub total_s: f64,
}

/// eps (D, H, W) over the whole volume x (D, H, W) at timestep t, with a tiling offset drawn
/// from `rng`; x and eps are f32 tensors on the model's device.
pub fn predict_eps(model: &dyn EpsModel, x: &Tensor, t: usize, batch: usize, rng: &mut impl Rng, eps: &mut Tensor) -> Result<()> {
    let s = x.shape();
    if s.len() != 3 || eps.shape() != s {
        return Err(Error::Shape(format!("predict_eps: volume {s:?} and noise estimate {:?} must be one 3D shape", eps.shape())));
    }
    let dims = [s[0], s[1], s[2]];
    let p = model.patch();
    let offset: [usize; 3] = std::array::from_fn(|a| rng.random_range(0..p[a]));
    let starts = tiling::tiling(dims, p, offset);
    let ctx = tiling::context_tensor(x, p, model.context_mode())?;
    let dev = model.device().clone();
    for chunk in starts.chunks(batch.max(1)) {
        let inp = tiling::assemble_tensor(x, &ctx, chunk, model.act_dtype())?;
        let tt = Tensor::from_f32(&vec![t as f32; chunk.len()], &[chunk.len()], DType::F32, &dev)?;
        let out = model.eps(&inp, &tt)?;
        let out = if out.dtype() == DType::F32 { out } else { out.to_dtype(DType::F32)? };
        if out.numel() != chunk.len() * p.iter().product::<usize>() {
            return Err(Error::Shape(format!("the model returned {:?} for {} patches of {p:?}", out.shape(), chunk.len())));
        }
        stitch(&out.reshape(&[chunk.len(), p[0], p[1], p[2]])?, chunk, eps)?;
    }
    Ok(())
}

/// Samples a volume (D, H, W) in the model range [-1, 1], from pure noise, or from `init` (model
/// range) noised to `opts.t_start`. Every volume stays on the model's device, allocated once.
/// `x0_hook` may change Tweedie's x0 (on that device) before each update (data consistency);
/// `progress(pass, passes)` after each network pass.
pub fn sample(
    model: &dyn EpsModel,
    dims: [usize; 3],
    opts: &SamplerOptions,
    init: Option<&[f32]>,
    mut x0_hook: impl FnMut(&mut Tensor, usize) -> Result<()>,
    mut progress: impl FnMut(usize, usize),
) -> Result<(Vec<f32>, SampleStats)> {
    opts.validate()?;
    let n: usize = dims.iter().product();
    if let Some(v) = init {
        if v.len() != n {
            return Err(Error::Shape(format!("sampler: an initial volume of {} values for shape {dims:?}", v.len())));
        }
    }
    let dev = model.device().clone();
    let sched = Schedule::default();
    // Tiling offsets from a seeded generator; noise from the counter-based streams of the seed.
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    let mut stream = 0u64;
    let start = std::time::Instant::now();
    let mut stats = SampleStats::default();
    let mut x = Tensor::zeros(&dims, DType::F32, &dev)?;
    let mut eps = Tensor::zeros(&dims, DType::F32, &dev)?;
    let mut x0 = match init {
        Some(v) => Tensor::from_f32(v, &dims, DType::F32, &dev)?,
        None => Tensor::zeros(&dims, DType::F32, &dev)?,
    };
    let ab0 = if init.is_some() { sched.abar[opts.t_start] } else { 0.0 };
    ddim(&mut x, &x0, &eps, ab0.sqrt() as f32, 0.0, (1.0 - ab0).sqrt() as f32, opts.seed, stream)?;
    let ts = timesteps(opts.steps, opts.t_start);
    let passes = opts.passes();
    for (i, &t) in ts.iter().enumerate() {
        let ab_t = sched.abar[t];
        for round in 0..opts.rounds {
            let t0 = std::time::Instant::now();
            predict_eps(model, &x, t, opts.batch, &mut rng, &mut eps)?;
            dev.synchronize()?;
            stats.network_s += t0.elapsed().as_secs_f64();
            // With the clamp, eps becomes the noise consistent with the clamped x0 (as
            // guided-diffusion's DDIM): at high noise 1/sqrt(abar) amplifies eps errors into x0
            // values far outside the data range, and stepping with the raw eps would undo the clip.
            tweedie(&x, &mut eps, &mut x0, ab_t, opts.clip_x0)?;
            let t0 = std::time::Instant::now();
            x0_hook(&mut x0, t)?;
            stats.hook_s += t0.elapsed().as_secs_f64();
            stats.passes += 1;
            progress(stats.passes, passes);
            if i + 1 == ts.len() && round + 1 == opts.rounds {
                let out = x0.to_f32_vec()?;
                stats.total_s = start.elapsed().as_secs_f64();
                return Ok((out, stats));
            }
            stream += 1;
            if round + 1 < opts.rounds {
                // Recurrent noising: back to the same level with fresh noise.
                ddim(&mut x, &x0, &eps, ab_t.sqrt() as f32, 0.0, (1.0 - ab_t).sqrt() as f32, opts.seed, stream)?;
            } else {
                let ab_s = sched.abar[ts[i + 1]];
                let sigma = opts.eta * ((1.0 - ab_s) / (1.0 - ab_t)).sqrt() * (1.0 - ab_t / ab_s).max(0.0).sqrt();
                let c = (1.0 - ab_s - sigma * sigma).max(0.0).sqrt();
                ddim(&mut x, &x0, &eps, ab_s.sqrt() as f32, c as f32, sigma as f32, opts.seed, stream)?;
            }
        }
    }
    unreachable!("the last step returns")
}
