//! Reconstruction (docs/METHOD.md section 6): the tiled sampler with data consistency in physical
//! units. After every network pass Tweedie's x0 is mapped to attenuation, a few damped CG
//! iterations on the projector pair pull it towards the measurements, and the result goes back
//! to the model range for the DDIM update (the noise estimate is kept, as in DDS).
use super::sampler::{sample, EpsModel, EpsPass, SampleStats, SamplerOptions};
use super::schedule::T;
use super::tail_mean::TailMean;
use super::train::to_model_range;
use crate::ct::iterative::cgls_damped;
use crate::ct::siddon::Projector;
use crate::ct::{Geometry, VolumeGrid};
use crate::error::{Error, Result};
use crate::nn::{Arch, Intensity, UNet, UNetConfig, Weights};
use crate::ops::elementwise::affine_inplace;
use crate::tensor::{DType, Tensor};
use crate::Device;

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
            _ => Err(Error::Argument(format!("start {s:?}: expected noise or fdk:T with T in 1..{}", T - 1))),
        }
    }
}

/// The reconstruction's settings (docs/RECONSTRUCTION.md); `Default` is the paper's (50 DDIM
/// steps x 2 rounds of recurrent noising, 5 CG iterations per network pass, gamma 0, from noise)
/// but for the output: no solve after the last pass (`final_dc` off), and the mean of the last
/// passes' estimates (`average_below` 150).
#[derive(Clone, Debug)]
pub struct ReconOptions {
    /// DDIM steps, rounds, eta, batch, seed, graph replay (`clip_x0` and `t_start` are set from
    /// the model config and `start`).
    pub sampler: SamplerOptions,
    /// CG iterations of data consistency per network pass (M).
    pub cg_iters: usize,
    /// Damping towards the network's estimate (gamma; 0 is early-stopped CG).
    pub gamma: f64,
    /// Pure noise, or the FDK volume noised to a timestep.
    pub start: Start,
    /// Coarse to fine: first the whole volume at half resolution, then the full one from it.
    pub progressive: Option<Progressive>,
    /// Reconstructions averaged (K >= 1): each with its own seed (`sampler.seed + k`), their mean
    /// an estimate of the posterior mean, which has a lower squared error than any one sample
    /// (for an exact posterior sampler one sample's expected error is twice the mean's).
    pub samples: usize,
    /// Data consistency after the last network pass too (the paper's and DDS's output, x0_dc).
    /// Off by default: the output is then the last pass's Tweedie estimate, clamped to the
    /// model's range. That pass runs at t = 0, where the network moves x by about 1% of the
    /// range, so the output is close to the previous pass's solve; what is left out is one more
    /// CG solve fitting what the data and the voxel model disagree on (noise, and the finer
    /// object the scan saw) as streaks and negative attenuations (docs/RECONSTRUCTION.md, "The
    /// last pass"). A run of one pass keeps its solve; the coarse run of progressive sampling,
    /// which feeds the fine one, keeps its last solve too.
    pub final_dc: bool,
    /// The output is the mean of the network's estimates (before their solves) over the passes at
    /// timesteps t <= this (`TailMean`): 150 by default, the last 8 of 50 steps x 2 rounds from
    /// noise (docs/RECONSTRUCTION.md, "Averaging the last passes"); None for the last pass's
    /// estimate alone. With `final_dc` the mean gets the last solve.
    pub average_below: Option<usize>,
}

/// Progressive volumetric sampling, as this engine reads the paper's (docs/RECONSTRUCTION.md):
/// the volume on a grid of half the voxels per axis (twice the voxel size, the same box, the same
/// projections) is sampled from pure noise with `coarse_steps` DDIM steps; its estimate,
/// upsampled trilinearly, is noised to `t_switch` and starts the full-resolution run (whose
/// `start` must stay `Noise`: `validate` refuses both). A coarse pass holds fewer patches: 27
/// against 125 at 64^3 with 16^3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progressive {
    /// DDIM steps of the half-resolution run.
    pub coarse_steps: usize,
    /// The timestep (1..999) the full-resolution run starts from.
    pub t_switch: usize,
}

impl Progressive {
    /// `STEPS:T`, e.g. `50:400`; `Error::Argument` otherwise.
    pub fn parse(s: &str) -> Result<Progressive> {
        let p = s.split_once(':').and_then(|(a, b)| Some(Progressive { coarse_steps: a.parse().ok()?, t_switch: b.parse().ok()? }));
        p.filter(|p| p.check().is_ok()).ok_or_else(|| Error::Argument(format!("progressive {s:?}: expected STEPS:T with STEPS > 0 and T in 1..{}", T - 1)))
    }

    /// STEPS > 0 and T in 1..999; `Error::Argument` otherwise.
    pub fn check(&self) -> Result<()> {
        if self.coarse_steps == 0 || !(1..T).contains(&self.t_switch) {
            return Err(Error::Argument(format!("progressive sampling: {} coarse steps must be positive and t_switch {} in 1..{}", self.coarse_steps, self.t_switch, T - 1)));
        }
        Ok(())
    }
}

impl Default for ReconOptions {
    fn default() -> Self {
        ReconOptions { sampler: SamplerOptions { rounds: 2, ..SamplerOptions::default() }, cg_iters: 5, gamma: 0.0, start: Start::Noise, progressive: None, samples: 1, final_dc: false, average_below: Some(150) }
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

    /// Whether the sampler starts from the FDK volume (a noised start, not progressive).
    pub fn starts_from_fdk(&self) -> bool {
        self.progressive.is_none() && self.start != Start::Noise
    }

    /// Network passes of the whole reconstruction (both runs when progressive, every sample).
    pub fn passes(&self) -> usize {
        self.samples * self.passes_per_sample()
    }

    /// Whether the output had a CG solve after the last network pass: with `final_dc`, or when
    /// the (full-resolution) run has a single pass, which keeps its only solve.
    pub fn last_pass_solved(&self) -> bool {
        let run = self.stages().map_or_else(|| self.sampler_options(), |(_, fine)| fine.sampler_options());
        self.final_dc || run.passes() <= 1
    }

    fn passes_per_sample(&self) -> usize {
        match self.stages() {
            None => self.sampler_options().passes(),
            Some((coarse, fine)) => coarse.sampler_options().passes() + fine.sampler_options().passes(),
        }
    }

    /// A progressive reconstruction's two runs: the half-resolution one from noise with the
    /// coarse steps, and the full-resolution one from the switch timestep; None otherwise.
    fn stages(&self) -> Option<(ReconOptions, ReconOptions)> {
        let pg = self.progressive?;
        let coarse = ReconOptions { sampler: SamplerOptions { steps: pg.coarse_steps, ..self.sampler.clone() }, start: Start::Noise, progressive: None, samples: 1, final_dc: true, average_below: None, ..self.clone() };
        let fine = ReconOptions { start: Start::Noised(pg.t_switch), progressive: None, samples: 1, ..self.clone() };
        Some((coarse, fine))
    }

    /// The sampler's checks and a finite gamma >= 0; `Error::Argument` otherwise.
    pub fn validate(&self) -> Result<()> {
        self.sampler_options().validate()?;
        if !(self.gamma.is_finite() && self.gamma >= 0.0) {
            return Err(Error::Argument(format!("the CG damping gamma must be finite and >= 0, got {}", self.gamma)));
        }
        if self.samples == 0 {
            return Err(Error::Argument("samples must be at least 1, got 0".into()));
        }
        if self.sampler.seed.checked_add(self.samples as u64 - 1).is_none() {
            return Err(Error::Argument(format!("seed {} with {} samples: their seeds, seed .. seed + samples - 1, pass 2^64 - 1; lower the seed", self.sampler.seed, self.samples)));
        }
        if self.samples.checked_mul(self.passes_per_sample()).is_none() {
            return Err(Error::Argument(format!("{} samples of {} network passes each: too many", self.samples, self.passes_per_sample())));
        }
        if let Some(t) = self.average_below.filter(|t| *t >= T) {
            return Err(Error::Argument(format!("average_below must be a timestep below {T}, got {t}")));
        }
        if let Some(p) = self.progressive {
            p.check()?;
            if self.start != Start::Noise {
                return Err(Error::Argument("progressive sampling starts from its own coarse run: leave the start at noise".into()));
            }
        }
        Ok(())
    }
}

/// Where the time of a reconstruction went.
#[derive(Clone, Debug, Default)]
pub struct ReconStats {
    /// The sampler's share: passes, network and hook (data consistency) seconds.
    pub sample: SampleStats,
    /// Seconds in the projector (forward and adjoint) during data consistency.
    pub projector_s: f64,
    /// Bytes the job was estimated to hold on its device (`reconstruct_scan`; 0 from `reconstruct`).
    pub memory_estimate: usize,
}

impl ReconStats {
    /// Adds the time and passes of a later run (a progressive stage, another sample); every
    /// field is named, so a field added later must be added here too.
    fn add(&mut self, o: &ReconStats) {
        let ReconStats { sample, projector_s, memory_estimate: _ } = o;
        let SampleStats { passes, network_s, hook_s, total_s, replayed, graph_fallback } = sample;
        let a = &mut self.sample;
        a.passes += passes;
        a.network_s += network_s;
        a.hook_s += hook_s;
        a.total_s += total_s;
        a.replayed += replayed;
        a.graph_fallback = graph_fallback.clone().or(a.graph_fallback.take());
        self.projector_s += projector_s;
    }
}

/// x0 (model range, in place on the projector's device) -> attenuation -> `iters` damped CG
/// iterations against y -> model range.
pub fn data_consistency(p: &Projector, y: &Tensor, x0: &mut Tensor, map: Intensity, iters: usize, gamma: f64) -> Result<()> {
    let ((a, b), (c, d)) = (map.to_mu_affine(), map.to_model_affine());
    affine_inplace(a, b, x0)?;
    cgls_damped(p, y, x0, gamma, iters, |_, _| {})?;
    affine_inplace(c, d, x0)
}

/// A whole reconstruction of a scan: checks the inputs and the memory first, then builds the
/// network (config `cfg`, weights `w`) and the Siddon projector on `dev` and runs `reconstruct`.
///
/// - `proj`: line integrals (views, rows, cols) as `g.proj_shape()`, f32, row-major;
/// - `init`: the attenuation volume (1/mm, (nz, ny, nx)) that `Start::Noised` starts from (FDK);
/// - `budget`: bytes the job may hold on `dev` (`Device::memory_budget` when None);
/// - `progress(pass, passes)` after each network pass; false or `ControlFlow::Break` cancels.
///
/// Returns the attenuation volume (nz, ny, nx) in 1/mm and where the time went. Errors:
/// `Shape` (projections of another shape, a volume smaller than the patch), `MemoryBudget`
/// (before any work), `Cancelled`, and those of the parts.
#[allow(clippy::too_many_arguments)]
pub fn reconstruct_scan<R: crate::diffusion::Proceed>(
    cfg: &UNetConfig,
    w: &Weights,
    g: &Geometry,
    proj: &[f32],
    init: Option<&[f32]>,
    opts: &ReconOptions,
    dev: &Device,
    budget: Option<usize>,
    progress: impl FnMut(usize, usize) -> R,
) -> Result<(Vec<f32>, ReconStats)> {
    opts.validate()?;
    if proj.len() != g.n_rays() {
        return Err(Error::Shape(format!("{} projection values for a scan of {:?} (views, rows, cols)", proj.len(), g.proj_shape())));
    }
    let dims = g.volume.shape;
    if dims.iter().zip(cfg.patch).any(|(n, p)| *n < p) {
        return Err(Error::Shape(format!("the volume {dims:?} is smaller than the network's patch {:?}", cfg.patch)));
    }
    let half = dims.map(|n| n.div_ceil(2));
    if opts.progressive.is_some() && half.iter().zip(cfg.patch).any(|(n, p)| *n < p) {
        return Err(Error::Shape(format!("progressive sampling: half the volume, {half:?}, is smaller than the network's patch {:?}", cfg.patch)));
    }
    let need = memory_estimate(cfg, w, opts.sampler.batch, dims, g.n_rays(), dev)?;
    let budget = match budget {
        Some(b) => b,
        None => dev.memory_budget()?,
    };
    if need > budget {
        return Err(Error::MemoryBudget { device: dev.name(), need, budget });
    }
    let net = UNet::new(Arch::new(cfg), w, dev)?;
    let p = Projector::new(g.clone(), dev)?;
    let y = Tensor::from_f32(proj, &g.proj_shape(), DType::F32, dev)?;
    // The config says whether its x0 may be clamped (not for z-scored data).
    let opts = ReconOptions { sampler: SamplerOptions { clip_x0: opts.sampler.clip_x0 && cfg.clip_x0, ..opts.sampler.clone() }, ..opts.clone() };
    let (mu, mut stats) = posterior_mean(&opts, progress, |o, pr| match o.progressive {
        None => reconstruct(&net, &p, &y, cfg.intensity(), init, o, pr),
        Some(_) => progressive(&net, &p, &y, cfg.intensity(), o, pr),
    })?;
    stats.memory_estimate = need;
    Ok((mu, stats))
}

/// `opts.samples` runs of `one` (each with `samples: 1` and seed `seed + k`), averaged voxel by
/// voxel; the stats add up. `progress` counts the passes of all of them.
fn posterior_mean<R: crate::diffusion::Proceed>(
    opts: &ReconOptions,
    mut progress: impl FnMut(usize, usize) -> R,
    mut one: impl FnMut(&ReconOptions, &mut dyn FnMut(usize, usize) -> R) -> Result<(Vec<f32>, ReconStats)>,
) -> Result<(Vec<f32>, ReconStats)> {
    if opts.samples == 1 {
        return one(opts, &mut progress);
    }
    let (per, total) = (opts.passes_per_sample(), opts.passes());
    // A running mean in f32: no second volume-sized buffer of f64 beside the samples.
    let mut mean: Vec<f32> = Vec::new();
    let mut stats = ReconStats::default();
    for k in 0..opts.samples {
        let o = ReconOptions { sampler: SamplerOptions { seed: opts.sampler.seed + k as u64, ..opts.sampler.clone() }, samples: 1, ..opts.clone() };
        let (mu, s) = one(&o, &mut |i, _| progress(k * per + i, total))?;
        if k == 0 {
            mean = mu;
        } else {
            let w = 1.0 / (k + 1) as f32;
            mean.iter_mut().zip(&mu).for_each(|(m, x)| *m += (x - *m) * w);
        }
        stats.add(&s);
    }
    Ok((mean, stats))
}

/// `Progressive`: the half-resolution run, then the full one from its upsampled estimate.
/// `progress` counts the passes of both.
fn progressive<R: crate::diffusion::Proceed>(
    net: &UNet,
    p: &Projector,
    y: &Tensor,
    map: Intensity,
    opts: &ReconOptions,
    mut progress: impl FnMut(usize, usize) -> R,
) -> Result<(Vec<f32>, ReconStats)> {
    let g = p.geometry();
    let fine = g.volume.clone();
    let shape = fine.shape.map(|n| n.div_ceil(2));
    let voxel_size = std::array::from_fn(|a| fine.voxel_size[a] * fine.shape[a] as f64 / shape[a] as f64);
    let coarse = Geometry { volume: VolumeGrid { shape, voxel_size, origin: fine.origin }, ..g.clone() };
    let pc = Projector::new(coarse, p.device())?;
    let Some((first, second)) = opts.stages() else { return reconstruct(net, p, y, map, None, opts, progress) };
    let (n1, total) = (first.passes(), opts.passes());
    let (mu_c, s1) = reconstruct(net, &pc, y, map, None, &first, |k, _| progress(k, total))?;
    let up = crate::ops::resample::trilinear_ref(&mu_c, shape, fine.shape);
    let (mu, s2) = reconstruct(net, p, y, map, Some(&up), &second, |k, _| progress(n1 + k, total))?;
    let mut stats = s1;
    stats.add(&s2);
    Ok((mu, stats))
}

/// Reconstructs attenuation from projections `y` (on the projector's device) with the network
/// `model` built already (not progressive; `opts.samples` averaged). `init` is the attenuation
/// volume that `Start::Noised` starts from (FDK). `progress(pass, passes)`, as in `reconstruct_scan`.
pub fn reconstruct<R: crate::diffusion::Proceed>(
    model: &dyn EpsModel,
    p: &Projector,
    y: &Tensor,
    map: Intensity,
    init: Option<&[f32]>,
    opts: &ReconOptions,
    progress: impl FnMut(usize, usize) -> R,
) -> Result<(Vec<f32>, ReconStats)> {
    opts.validate()?;
    if opts.progressive.is_some() {
        return Err(Error::Argument("reconstruct runs one resolution: progressive sampling goes through reconstruct_scan".into()));
    }
    if opts.samples > 1 {
        return posterior_mean(opts, progress, |o, pr| reconstruct(model, p, y, map, init, o, pr));
    }
    let dims = p.geometry().volume.shape;
    if model.device().name() != p.device().name() || y.device().name() != p.device().name() {
        return Err(Error::DeviceMismatch(format!(
            "reconstruct: the network ({}), the projector ({}) and the projections ({}) must share one device",
            model.device().name(),
            p.device().name(),
            y.device().name()
        )));
    }
    let so = opts.sampler_options();
    let init = match opts.start {
        Start::Noise => None,
        Start::Noised(_) => {
            let v = init.ok_or_else(|| Error::Config("starting from a noised volume needs the volume (FDK)".into()))?;
            Some(to_model_range(v, map, opts.sampler.clip_x0))
        }
    };
    let busy0 = p.busy_seconds();
    let (last, mut pass) = (so.passes(), 0);
    let mut tail = opts.average_below.map(|below| TailMean::new(below, last));
    let hook = |x0: &mut Tensor, t: usize| {
        pass += 1;
        if let Some(m) = tail.as_mut() {
            m.observe(x0, t)?;
        }
        if pass == last && !opts.last_pass_solved() {
            return Ok(());
        }
        data_consistency(p, y, x0, map, opts.cg_iters, opts.gamma)
    };
    let (x, sample) = sample(model, dims, &so, init.as_deref(), hook, progress)?;
    let mu = x.iter().map(|v| map.to_mu(*v)).collect();
    Ok((mu, ReconStats { sample, projector_s: p.busy_seconds() - busy0, memory_estimate: 0 }))
}

/// Bytes the network part of a reconstruction takes from a kernel device's memory pool: the
/// network's weights, the sampler's x and eps, the patch starts and timesteps, and one network
/// pass over `dims` in batches of `batch`, with the pool's size classes and reuse. Measured, not
/// modelled: the pass is captured on the emulated device, which records the launches without
/// running them and hands out host memory that is never touched (so the dry run costs neither
/// compute nor physical memory), through the same buffers and pool as cuda. It runs on a thread
/// of its own, whose pool starts empty and goes with it.
pub fn network_memory(cfg: &UNetConfig, w: &Weights, batch: usize, dims: [usize; 3]) -> Result<usize> {
    let measured = std::thread::scope(|s| {
        s.spawn(|| {
            let dev = Device::Emu;
            let net = UNet::new(Arch::new(cfg), w, &dev)?;
            let x = Tensor::zeros(&dims, DType::F32, &dev)?;
            let mut eps = Tensor::zeros(&dims, DType::F32, &dev)?;
            let mut pass = EpsPass::new(&net, &dims, batch, true)?;
            pass.capture(&net, &x, &mut eps)?;
            Ok(dev.memory_stats().map_or(0, |m| m.allocated))
        })
        .join()
        .unwrap_or_else(|_| Err(Error::Config("it panicked".into())))
    });
    measured.map_err(|e| match e {
        // The dry run reserves (without touching) what the pass would take: an address-space
        // limit below that is the job not fitting.
        Error::OutOfMemory { .. } => e,
        e => Error::Config(format!("estimating the memory of a network pass (a dry run on emu): {e}")),
    })
}

/// Bytes a reconstruction holds on `dev`: the network part (`network_memory`; twice that on the
/// cpu, whose activations are f32), the sampler's other volumes (x0, the start, the sum of
/// `average_below`) and the projector's volume, projections and CG vectors.
pub fn memory_estimate(cfg: &UNetConfig, w: &Weights, batch: usize, dims: [usize; 3], rays: usize, dev: &Device) -> Result<usize> {
    let network = network_memory(cfg, w, batch, dims)? * if dev.runs_kernels() { 1 } else { 2 };
    let volume: usize = dims.iter().product();
    Ok(network + (3 + 5) * volume * 4 + 4 * rays * 4)
}

/// Whether the data's attenuation is in the range the prior was trained on: the 99.5th
/// FDK (Hann) of the projections for what a reconstruction needs of it: the start volume when
/// `opts` start from a noised volume (not progressive), and the range check (`range_warning`).
/// A geometry FDK cannot take skips the check when nothing starts from FDK; otherwise its error.
pub fn fdk_start(g: &Geometry, proj: &[f32], cfg: &UNetConfig, opts: &ReconOptions) -> Result<(Option<Vec<f32>>, Option<String>)> {
    let needed = opts.starts_from_fdk();
    let fdk = match crate::ct::fbp::fbp(g, proj, crate::ct::fbp::Window::Hann) {
        Ok(v) => Some(v),
        Err(_) if !needed => None,
        Err(e) => return Err(e),
    };
    let warning = fdk.as_deref().and_then(|f| range_warning(f, cfg.mu_max));
    Ok((fdk.filter(|_| needed), warning))
}

/// The data's range against the prior's: the 99.5th
/// percentile of a quick reconstruction (FDK) against the config's `mu_max` (1/mm). A warning
/// with the factor when it is over twice the range (line integrals in 1/cm with a geometry in mm
/// read 10x high) or under a fifth of it; None when it fits.
pub fn range_warning(fdk: &[f32], mu_max: f32) -> Option<String> {
    let mut v: Vec<f32> = fdk.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let k = ((v.len() - 1) as f64 * 0.995) as usize;
    let (_, p, _) = v.select_nth_unstable_by(k, f32::total_cmp);
    let p = *p;
    let factor = p / mu_max;
    if !(0.2..=2.0).contains(&factor) {
        return Some(format!(
            "the data reach an attenuation of {p:.4} /mm (99.5th percentile of FDK), {factor:.2} times the prior's range (mu_max {mu_max} /mm): are the projections line integrals in 1/mm with the geometry in mm (1/cm reads 10 times high)? The prior's help shrinks outside its range"
        ));
    }
    None
}
