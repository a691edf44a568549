//! The tiled sampler (docs/METHOD.md sections 6 and 7): per network pass a fresh random tiling offset,
//! patches evaluated in batches with one shared global context, the output (eps or v) stitched
//! back (the tiles of one tiling are disjoint and cover the volume, so every voxel comes from
//! exactly one patch),
//! Tweedie's x0 (clamped to the data range, with the noise estimate made consistent with it), then
//! a DDIM step with eta, or a re-noising for the next recurrent round. Reconstruction adds data
//! consistency on x0 through the `x0_hook` (the noise estimate is kept, as in DDS).
use super::schedule::{Schedule, T};
use super::tiling::{self, Starts};
use crate::error::{Error, Result};
use crate::nn::{ContextMode, Prediction, UNet};
use crate::device::Graph;
use crate::tensor::{DType, Tensor};
use crate::Device;
use crate::ops::patches::{self, stitch};
use crate::ops::sampler::{ddim, tweedie};
use rand::{Rng, SeedableRng};

/// What predicts the noise of a batch of 5-channel patches (the U-Net, or an analytic model in
/// tests).
pub trait EpsModel {
    /// Where the model's inputs and outputs live.
    fn device(&self) -> &Device;
    /// The dtype of the inputs `eps` takes (bf16 on emu/cuda, f32 on the CPU).
    fn act_dtype(&self) -> DType;
    /// Patch shape (z, y, x) in voxels.
    fn patch(&self) -> [usize; 3];
    /// How the global-context channel is resized from the whole volume.
    fn context_mode(&self) -> ContextMode;
    /// The network's output (N, P, 1) for inputs (N, P, 5) and timesteps t (N), tensors on
    /// `device()`: eps, or v (see `prediction`).
    fn eps(&self, x: &Tensor, t: &Tensor) -> Result<Tensor>;
    /// What `eps` returns.
    fn prediction(&self) -> Prediction {
        Prediction::Eps
    }
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
    fn prediction(&self) -> Prediction {
        self.arch.cfg.prediction
    }
}

/// DDIM sampling settings (Song et al. 2021; docs/METHOD.md section 6). `Default`: 50 steps,
/// eta 0.85, 1 round, 16 patches per call, seed 0, x0 clamped, from t = 999, graphs on.
#[derive(Clone, Debug)]
pub struct SamplerOptions {
    /// DDIM steps, evenly spaced from t = 999 down to 0.
    pub steps: usize,
    /// DDIM's stochasticity in [0, 1]: 0 is deterministic DDIM, 1 is DDPM-like.
    pub eta: f64,
    /// Recurrent rounds per step (K): all but the last re-noise x0 to the same level.
    pub rounds: usize,
    /// Patches per network call.
    pub batch: usize,
    /// Seeds the noise and the per-step tiling offsets: the same seed gives the same volume.
    pub seed: u64,
    /// Clamp Tweedie's x0 to the data range [-1, 1].
    pub clip_x0: bool,
    /// The first timestep: 999 from pure noise, lower when starting from a noised initial volume.
    pub t_start: usize,
    /// On emu and cuda, capture the network pass as a graph and replay it (same results, fewer
    /// launch and host round trips).
    pub graph: bool,
}

impl Default for SamplerOptions {
    fn default() -> Self {
        SamplerOptions { steps: 50, eta: 0.85, rounds: 1, batch: 16, seed: 0, clip_x0: true, t_start: T - 1, graph: true }
    }
}

impl SamplerOptions {
    /// Network passes of a run: timesteps times rounds.
    pub fn passes(&self) -> usize {
        timesteps(self.steps, self.t_start).len() * self.rounds
    }

    /// Positive steps and rounds, eta in [0, 1], t_start < T; `Error::Argument` otherwise.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Argument(format!("sampler: {m}")));
        if self.steps == 0 {
            return bad("steps must be positive, got 0".into());
        }
        if self.rounds == 0 {
            return bad("rounds must be positive, got 0".into());
        }
        if !(0.0..=1.0).contains(&self.eta) {
            return bad(format!("eta must be in [0, 1], got {}", self.eta));
        }
        if self.batch == 0 {
            return bad("batch must be positive, got 0".into());
        }
        if self.t_start >= T {
            return bad(format!("the start timestep must be below {T}, got {}", self.t_start));
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
    /// Network passes over the whole volume (timesteps x rounds).
    pub passes: usize,
    /// Seconds in the network (all patches of all passes).
    pub network_s: f64,
    /// Seconds in the per-pass hook (data consistency in a reconstruction).
    pub hook_s: f64,
    /// Seconds of the whole run.
    pub total_s: f64,
    /// Passes that replayed a captured graph.
    pub replayed: usize,
    /// Why the pass could not be captured, when it could not.
    pub graph_fallback: Option<String>,
}

impl SampleStats {
    /// How the network passes ran: replayed from a graph, or as they came (and why).
    pub fn graph_note(&self) -> String {
        match (&self.graph_fallback, self.replayed) {
            (Some(why), _) => format!("network passes run as they come (capture failed: {why})"),
            (None, 0) => "network passes run as they come".into(),
            (None, n) => format!("{n} of {} network passes replayed from a captured graph", self.passes),
        }
    }
}

/// The network's output (D, H, W) over the whole volume x (D, H, W) at timestep t, with a tiling
/// offset drawn from `rng`: eps, or v for a v-predicting model (`EpsModel::prediction`; `tweedie`
/// turns either into x0 and eps); x and the output are f32 tensors on the model's device. One
/// pass, run as it comes; the sampler keeps an [`EpsPass`] instead.
pub fn predict_eps(model: &dyn EpsModel, x: &Tensor, t: usize, batch: usize, rng: &mut impl Rng, eps: &mut Tensor) -> Result<()> {
    let mut pass = EpsPass::new(model, x.shape(), batch, false)?;
    let offset = pass.draw_offset(rng);
    pass.run(model, x, t, offset, eps)
}

/// The network passes of a sampling run over one volume shape. Every tiling of the shape has the
/// same number of patches, so the batches, their patch starts and timesteps live in device
/// buffers rewritten before each pass and the pass itself queues the same launches every time:
/// on emu and cuda it is captured once as a graph and replayed (`graph`), after a first pass run
/// as it comes (which also fills the memory pool the capture then draws from).
#[doc(hidden)]
pub struct EpsPass {
    dims: [usize; 3],
    patch: [usize; 3],
    starts: Vec<Starts>,
    times: Vec<Tensor>,
    graph: Option<Graph>,
    /// The volumes the graph was captured with (a graph holds addresses).
    captured_with: (u64, u64),
    use_graph: bool,
    passes: usize,
    /// Why capturing failed, after which the passes run as they come (a model that computes on
    /// the host, for one, cannot be captured).
    pub fallback: Option<String>,
}

impl EpsPass {
    pub fn new(model: &dyn EpsModel, shape: &[usize], batch: usize, use_graph: bool) -> Result<EpsPass> {
        if shape.len() != 3 || shape.contains(&0) {
            return Err(Error::Shape(format!("sampler: a (D, H, W) volume is needed, got {shape:?}")));
        }
        let dims = [shape[0], shape[1], shape[2]];
        let patch = model.patch();
        let dev = model.device().clone();
        let all = tiling::tiling(dims, patch, [0; 3]);
        let mut starts = Vec::new();
        let mut times = Vec::new();
        for chunk in all.chunks(batch.max(1)) {
            starts.push(Starts::new(chunk, &dev)?);
            times.push(Tensor::zeros(&[chunk.len()], DType::F32, &dev)?);
        }
        let use_graph = use_graph && dev.runs_kernels();
        Ok(EpsPass { dims, patch, starts, times, graph: None, captured_with: (0, 0), use_graph, passes: 0, fallback: None })
    }

    /// A tiling offset, uniform in [0, patch) per axis.
    pub fn draw_offset(&self, rng: &mut impl Rng) -> [usize; 3] {
        std::array::from_fn(|a| rng.random_range(0..self.patch[a]))
    }

    /// Whether the passes now replay a captured graph.
    pub fn replaying(&self) -> bool {
        self.graph.is_some()
    }

    /// Captures the network pass over x into eps as this pass's graph, without running it.
    pub fn capture(&mut self, model: &dyn EpsModel, x: &Tensor, eps: &mut Tensor) -> Result<()> {
        self.graph = None;
        let (starts, times) = (&self.starts, &self.times);
        let (g, ()) = model.device().capture(|| network_pass(model, x, starts, times, eps))?;
        self.graph = Some(g);
        self.captured_with = (x.buffer().addr(), eps.buffer().addr());
        Ok(())
    }

    /// eps over x at timestep t for the tiling with `offset`.
    pub fn run(&mut self, model: &dyn EpsModel, x: &Tensor, t: usize, offset: [usize; 3], eps: &mut Tensor) -> Result<()> {
        if x.shape() != self.dims || eps.shape() != self.dims || x.dtype() != DType::F32 || eps.dtype() != DType::F32 {
            return Err(Error::Shape(format!(
                "sampler pass for {:?}: volume {:?} {} and noise estimate {:?} {} must be that shape in f32",
                self.dims,
                x.shape(),
                x.dtype(),
                eps.shape(),
                eps.dtype()
            )));
        }
        let all = tiling::tiling(self.dims, self.patch, offset);
        let mut rest = &all[..];
        for (s, tt) in self.starts.iter_mut().zip(self.times.iter_mut()) {
            let (chunk, next) = rest.split_at(s.len());
            s.set(chunk)?;
            tt.buffer_mut().write(bytemuck::cast_slice(&vec![t as f32; chunk.len()]))?;
            rest = next;
        }
        let volumes = (x.buffer().addr(), eps.buffer().addr());
        if self.graph.is_some() && self.captured_with != volumes {
            self.graph = None;
        }
        self.passes += 1;
        if !self.use_graph || self.passes == 1 {
            return network_pass(model, x, &self.starts, &self.times, eps);
        }
        if self.graph.is_none() {
            if let Err(e) = self.capture(model, x, eps) {
                self.use_graph = false;
                self.fallback = Some(e.to_string());
                return network_pass(model, x, &self.starts, &self.times, eps);
            }
        }
        // SAFETY: the graph uses x, eps, the model's weights and this pass's own buffers, all
        // alive as long as the pass and the borrowed model and tensors.
        unsafe { self.graph.as_ref().expect("captured above").replay() }
    }
}

/// The launches of one pass: the global context, then per batch the inputs, the network and the
/// stitching of its eps into the volume.
fn network_pass(model: &dyn EpsModel, x: &Tensor, starts: &[Starts], times: &[Tensor], eps: &mut Tensor) -> Result<()> {
    let p = model.patch();
    let ctx = patches::context(x, p, model.context_mode())?;
    for (s, tt) in starts.iter().zip(times) {
        let inp = patches::assemble(x, &ctx, s, model.act_dtype())?;
        let out = model.eps(&inp, tt)?;
        let out = if out.dtype() == DType::F32 { out } else { out.to_dtype(DType::F32)? };
        if out.numel() != s.len() * p.iter().product::<usize>() {
            return Err(Error::Shape(format!("the model returned {:?} for {} patches of {p:?}", out.shape(), s.len())));
        }
        stitch(&out.reshape(&[s.len(), p[0], p[1], p[2]])?, s, eps)?;
    }
    Ok(())
}

/// Samples a volume (D, H, W) in the model range [-1, 1], from pure noise, or from `init` (model
/// range) noised to `opts.t_start`. Every volume stays on the model's device, allocated once.
/// `x0_hook` may change Tweedie's x0 (on that device) before each update (data consistency);
/// `progress(pass, passes)` after each network pass: returning false or `ControlFlow::Break`
/// stops the sampler with `Error::Cancelled` (see `Proceed`).
pub fn sample<R: super::Proceed>(
    model: &dyn EpsModel,
    dims: [usize; 3],
    opts: &SamplerOptions,
    init: Option<&[f32]>,
    mut x0_hook: impl FnMut(&mut Tensor, usize) -> Result<()>,
    mut progress: impl FnMut(usize, usize) -> R,
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
    let mut pass = EpsPass::new(model, &dims, opts.batch, opts.graph)?;
    for (i, &t) in ts.iter().enumerate() {
        let ab_t = sched.abar[t];
        for round in 0..opts.rounds {
            let t0 = std::time::Instant::now();
            let offset = pass.draw_offset(&mut rng);
            pass.run(model, &x, t, offset, &mut eps)?;
            stats.replayed += pass.replaying() as usize;
            dev.synchronize()?;
            stats.network_s += t0.elapsed().as_secs_f64();
            // With the clamp, eps becomes the noise consistent with the clamped x0 (as
            // guided-diffusion's DDIM): at high noise 1/sqrt(abar) amplifies eps errors into x0
            // values far outside the data range, and stepping with the raw eps would undo the clip.
            tweedie(&x, &mut eps, &mut x0, model.prediction().tweedie_coefficients(ab_t), opts.clip_x0)?;
            let t0 = std::time::Instant::now();
            x0_hook(&mut x0, t)?;
            stats.hook_s += t0.elapsed().as_secs_f64();
            stats.passes += 1;
            if !progress(stats.passes, passes).proceed() {
                return Err(Error::Cancelled);
            }
            if i + 1 == ts.len() && round + 1 == opts.rounds {
                let out = x0.to_f32_vec()?;
                stats.graph_fallback = pass.fallback.clone();
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
