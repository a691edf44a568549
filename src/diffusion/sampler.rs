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
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

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

/// eps over the whole volume x (D, H, W) at timestep t, with a tiling offset drawn from `rng`.
pub fn predict_eps(model: &dyn EpsModel, x: &[f32], dims: [usize; 3], t: usize, batch: usize, rng: &mut impl Rng) -> Result<Vec<f32>> {
    let p = model.patch();
    let dev = model.device().clone();
    let offset: [usize; 3] = std::array::from_fn(|a| rng.random_range(0..p[a]));
    let starts = tiling::tiling(dims, p, offset);
    let vol = Tensor::from_f32(x, &dims, DType::F32, &dev)?;
    let ctx = tiling::context_tensor(&vol, p, model.context_mode())?;
    let mut eps = vec![0f32; x.len()];
    let pv: usize = p.iter().product();
    for chunk in starts.chunks(batch.max(1)) {
        let inp = tiling::assemble_tensor(&vol, &ctx, chunk, model.act_dtype())?;
        let tt = Tensor::from_f32(&vec![t as f32; chunk.len()], &[chunk.len()], DType::F32, &dev)?;
        let out = model.eps(&inp, &tt)?.to_f32_vec()?;
        if out.len() != chunk.len() * pv {
            return Err(Error::Shape(format!("the model returned {} values for {} patches of {p:?}", out.len(), chunk.len())));
        }
        for (b, st) in chunk.iter().enumerate() {
            for k in 0..p[0] {
                let z = st[0] + k as isize;
                if z < 0 || z >= dims[0] as isize {
                    continue;
                }
                for j in 0..p[1] {
                    let y = st[1] + j as isize;
                    if y < 0 || y >= dims[1] as isize {
                        continue;
                    }
                    for i in 0..p[2] {
                        let xx = st[2] + i as isize;
                        if xx >= 0 && (xx as usize) < dims[2] {
                            eps[(z as usize * dims[1] + y as usize) * dims[2] + xx as usize] = out[b * pv + (k * p[1] + j) * p[2] + i];
                        }
                    }
                }
            }
        }
    }
    Ok(eps)
}

fn noise(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

/// Samples a volume (D, H, W) in the model range [-1, 1], from pure noise, or from `init` (model
/// range) noised to `opts.t_start`. `x0_hook` may change Tweedie's x0 before each update (data
/// consistency); `progress(pass, passes)` after each network pass.
pub fn sample(
    model: &dyn EpsModel,
    dims: [usize; 3],
    opts: &SamplerOptions,
    init: Option<&[f32]>,
    mut x0_hook: impl FnMut(&mut Vec<f32>, usize) -> Result<()>,
    mut progress: impl FnMut(usize, usize),
) -> Result<(Vec<f32>, SampleStats)> {
    if opts.steps == 0 || opts.rounds == 0 || !(0.0..=1.0).contains(&opts.eta) || opts.t_start >= T {
        return Err(Error::Config(format!(
            "sampler: steps {} and rounds {} must be positive, eta {} in [0, 1], the start timestep {} below {T}",
            opts.steps, opts.rounds, opts.eta, opts.t_start
        )));
    }
    let n: usize = dims.iter().product();
    if let Some(v) = init {
        if v.len() != n {
            return Err(Error::Shape(format!("sampler: an initial volume of {} values for shape {dims:?}", v.len())));
        }
    }
    let sched = Schedule::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    let start = std::time::Instant::now();
    let mut stats = SampleStats::default();
    let mut x = noise(&mut rng, n);
    if let Some(v) = init {
        let ab = sched.abar[opts.t_start];
        x.iter_mut().zip(v).for_each(|(z, a)| *z = (ab.sqrt() * *a as f64 + (1.0 - ab).sqrt() * *z as f64) as f32);
    }
    let ts = timesteps(opts.steps, opts.t_start);
    let passes = ts.len() * opts.rounds;
    for (i, &t) in ts.iter().enumerate() {
        let ab_t = sched.abar[t];
        for round in 0..opts.rounds {
            let t0 = std::time::Instant::now();
            let mut eps = predict_eps(model, &x, dims, t, opts.batch, &mut rng)?;
            stats.network_s += t0.elapsed().as_secs_f64();
            let mut x0: Vec<f32> = x.iter().zip(&eps).map(|(xv, e)| ((*xv as f64 - (1.0 - ab_t).sqrt() * *e as f64) / ab_t.sqrt()) as f32).collect();
            if opts.clip_x0 {
                x0.iter_mut().for_each(|v| *v = v.clamp(-1.0, 1.0));
                // The noise consistent with the clipped x0 (as guided-diffusion's DDIM): at high
                // noise levels 1/sqrt(abar) amplifies eps errors into x0 values far outside the
                // data range, and stepping with the raw eps would undo the clip.
                eps.iter_mut().zip(x.iter().zip(&x0)).for_each(|(e, (xv, a))| *e = ((*xv as f64 - ab_t.sqrt() * *a as f64) / (1.0 - ab_t).sqrt()) as f32);
            }
            let t0 = std::time::Instant::now();
            x0_hook(&mut x0, t)?;
            stats.hook_s += t0.elapsed().as_secs_f64();
            stats.passes += 1;
            progress(stats.passes, passes);
            if i + 1 == ts.len() && round + 1 == opts.rounds {
                stats.total_s = start.elapsed().as_secs_f64();
                return Ok((x0, stats));
            }
            let z = noise(&mut rng, n);
            if round + 1 < opts.rounds {
                // Recurrent noising: back to the same level with fresh noise.
                x = x0.iter().zip(&z).map(|(a, zz)| (ab_t.sqrt() * *a as f64 + (1.0 - ab_t).sqrt() * *zz as f64) as f32).collect();
            } else {
                let ab_s = sched.abar[ts[i + 1]];
                let sigma = opts.eta * ((1.0 - ab_s) / (1.0 - ab_t)).sqrt() * (1.0 - ab_t / ab_s).max(0.0).sqrt();
                let c = (1.0 - ab_s - sigma * sigma).max(0.0).sqrt();
                x = (0..n).map(|k| (ab_s.sqrt() * x0[k] as f64 + c * eps[k] as f64 + sigma * z[k] as f64) as f32).collect();
            }
        }
    }
    unreachable!("the last step returns")
}
