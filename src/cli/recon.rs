//! `tomodiff reconstruct` (projections in, a volume out, with the diffusion prior) and `tomodiff
//! demo` (a held-out phantom, a sparse-view scan, FDK, CGLS and the prior side by side).
use super::ct::{budget, load_proj};
use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tomodiff::ct::{fbp, iterative, siddon::Projector, Geometry};
use tomodiff::diffusion::recon::{reconstruct_scan, Progressive, ReconOptions, ReconStats, Start};
use super::sample::SamplerArgs;
use tomodiff::metrics::compare;
use tomodiff::nn::{model_files, UNetConfig, Weights};
use tomodiff::{DType, Device, Tensor};

/// The sampler's and data consistency's settings, shared by `reconstruct` and `demo`.
#[derive(Args, Clone)]
pub struct PriorArgs {
    #[command(flatten)]
    sampler: SamplerArgs,
    /// CG iterations of data consistency per network pass (M).
    #[arg(long, default_value_t = 5)]
    cg_iters: usize,
    /// Damping of CG towards the network's estimate (0: early-stopped CG, as DDS).
    #[arg(long, default_value_t = 0.0)]
    gamma: f64,
    /// noise (t = 999), or fdk:T to start from the FDK volume noised to timestep T.
    #[arg(long, default_value = "noise")]
    start: String,
    /// Coarse to fine, STEPS:T: first the whole volume at half resolution (STEPS DDIM steps from
    /// noise), then the full one from its upsampled estimate noised to T (not with --start fdk:T).
    #[arg(long)]
    progressive: Option<String>,
    /// Reconstructions averaged, seeds SEED..SEED+K-1: an estimate of the posterior mean, with a
    /// lower error than one sample, for K times the time.
    #[arg(long, default_value_t = 1)]
    samples: usize,
    /// Data consistency after the last network pass too, as the paper (its output x0_dc); by
    /// default the output is the network's estimate of the last pass, clamped to the model's
    /// range and free of the last CG solve's streaks (docs/RECONSTRUCTION.md). A run of a single
    /// pass (--steps 1 --rounds 1) always keeps its solve.
    #[arg(long)]
    final_dc: bool,
    /// The output is the mean of the network's estimates over the passes at timesteps <= T (at
    /// 150 from noise, the last 8 of 50 steps x 2 rounds): closer to the posterior mean, at no
    /// extra cost (docs/RECONSTRUCTION.md); off: the last pass's estimate alone.
    #[arg(long, default_value = "150", value_name = "T|off")]
    average_below: String,
    /// Device memory the reconstruction may use, in GiB (default: 90% of the free GPU memory, or
    /// of the host's available memory on the CPU).
    #[arg(long)]
    memory_budget_gb: Option<f64>,
}

impl PriorArgs {
    pub(crate) fn device_name(&self) -> &str {
        &self.sampler.device
    }

    /// The prior (`weights`: its file, or the shipped prior's name) and its settings as reports
    /// record them (metrics and eval JSON), so that results of other priors and settings can be
    /// told apart. `last_pass_solved` is what the output had: a run of one pass keeps its solve
    /// whatever `final_dc` says.
    pub(crate) fn settings(&self, weights: &str) -> serde_json::Value {
        let s = self.sampler.options(2);
        serde_json::json!({
            "weights": weights, "steps": s.steps, "rounds": s.rounds, "eta": s.eta, "seed": s.seed, "cg_iters": self.cg_iters, "gamma": self.gamma,
            "start": self.start, "progressive": self.progressive, "samples": self.samples, "final_dc": self.final_dc,
            "average_below": self.parse_average_below().ok().flatten(),
            "last_pass_solved": self.recon_options().ok().map(|o| o.last_pass_solved()),
        })
    }

    fn recon_options(&self) -> Result<ReconOptions> {
        let start = Start::parse(&self.start).context("--start")?;
        let progressive = self.progressive.as_deref().map(Progressive::parse).transpose().context("--progressive")?;
        let average_below = self.parse_average_below()?;
        Ok(ReconOptions { sampler: self.sampler.options(2), cg_iters: self.cg_iters, gamma: self.gamma, start, progressive, samples: self.samples, final_dc: self.final_dc, average_below })
    }

    /// `--average-below`: a timestep below T (1000), or off.
    fn parse_average_below(&self) -> Result<Option<usize>> {
        let t_max = tomodiff::diffusion::schedule::T - 1;
        match self.average_below.as_str() {
            "off" => Ok(None),
            s => match s.parse::<usize>() {
                Ok(t) if t <= t_max => Ok(Some(t)),
                _ => bail!("--average-below {s:?}: expected a timestep in 0..{t_max}, or off"),
            },
        }
    }

    pub(crate) fn options(&self) -> Result<ReconOptions> {
        if self.samples == 0 {
            bail!("--samples must be at least 1 (the reconstructions averaged), got 0");
        }
        self.sampler.check()?;
        let opts = self.recon_options()?;
        opts.validate()?;
        crate::cli::device(&self.sampler.device)?;
        Ok(opts)
    }
}

#[derive(Args)]
pub struct ReconstructArgs {
    /// Weights (safetensors), read with the config.json beside them unless --config names one.
    /// Default: the shipped prior.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// A preset (paper, small, tiny) or a JSON config for --weights.
    #[arg(long)]
    config: Option<String>,
    /// The scan's geometry: a JSON file (docs/CT.md, "Conventions"; the demo writes one).
    #[arg(short, long)]
    geometry: PathBuf,
    /// Projections (.npy), (views, rows, cols), or (rows, views, cols) with --astra-layout.
    #[arg(short, long)]
    input: PathBuf,
    /// The projections are in ASTRA's sinogram order, (rows, views, cols).
    #[arg(long)]
    astra_layout: bool,
    /// Output volume in attenuation (1/mm): .npy, .nii or .nii.gz.
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    prior: PriorArgs,
    /// PNG of the middle slices.
    #[arg(long)]
    preview: Option<PathBuf>,
    /// Ground truth: adds FDK and CGLS from the same data and writes a metrics JSON.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// When the reference file states a voxel size other than the geometry's: `file` or
    /// `geometry` says which wins (without it, the disagreement is an error).
    #[arg(long)]
    voxel_size_from: Option<String>,
    /// Where the metrics JSON goes (default: the output's name with .metrics.json); needs
    /// --reference.
    #[arg(long)]
    metrics: Option<PathBuf>,
    /// CGLS iterations of the baseline (with --reference).
    #[arg(long, default_value_t = 20)]
    cgls_iters: usize,
}

/// The network, from a file or the shipped prior.
pub(crate) fn load_model(weights: Option<&Path>, config: Option<&str>) -> Result<(UNetConfig, Weights, String)> {
    Ok(match weights {
        Some(w) => {
            let (c, wt) = model_files::load(w, config).map_err(|e| anyhow::anyhow!("{e} (--weights, --config)"))?;
            (c, wt, w.display().to_string())
        }
        None => {
            if config.is_some() {
                bail!("--config applies to --weights; the shipped prior has its own");
            }
            let (c, wt) = model_files::shipped()?;
            (c, wt, format!("{} (shipped)", model_files::SHIPPED_NAME))
        }
    })
}

fn gib(b: usize) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

/// Runs the prior on projections `proj` (host) with a progress bar (`reconstruct_scan`, which
/// refuses a run over the memory budget before any work), then prints the memory it took.
pub(crate) fn run_prior(cfg: &UNetConfig, w: &Weights, g: &Geometry, proj: &[f32], fdk: Option<&[f32]>, a: &PriorArgs) -> Result<(Vec<f32>, ReconStats)> {
    let opts = a.options()?;
    let dev = crate::cli::device(&a.sampler.device)?;
    let have = budget(&dev, a.memory_budget_gb)?;
    dev.reset_peak_memory();
    let pb = ProgressBar::new(opts.passes() as u64);
    pb.set_style(ProgressStyle::with_template("prior on {msg} [{bar:30}] {pos}/{len} network passes {elapsed} (eta {eta})").unwrap());
    pb.set_message(dev.name());
    let out = reconstruct_scan(cfg, w, g, proj, fdk, &opts, &dev, Some(have), |k, _| pb.set_position(k as u64));
    pb.finish_and_clear();
    let out = out.map_err(|e| match e {
        tomodiff::Error::MemoryBudget { .. } => anyhow::anyhow!("{e} (--batch, --memory-budget-gb)"),
        e => e.into(),
    })?;
    let need = out.1.memory_estimate;
    eprintln!("memory: about {:.2} GiB estimated on {} (network batch {}, volume {:?})", gib(need), dev.name(), a.sampler.batch, g.volume.shape);
    if let Some(m) = dev.memory_stats() {
        eprintln!("memory: {:.2} GiB taken from {} (peak {:.2} GiB in use)", gib(m.allocated), dev.name(), gib(m.peak_in_use));
    }
    Ok(out)
}

fn print_stats(s: &ReconStats) {
    let t = &s.sample;
    eprintln!(
        "{} network passes in {:.1} s ({:.2} passes/s): network {:.1} s, projector {:.1} s, CG's vector work {:.1} s, the rest {:.1} s; {}",
        t.passes,
        t.total_s,
        t.passes as f64 / t.total_s.max(1e-9),
        t.network_s,
        s.projector_s,
        (t.hook_s - s.projector_s).max(0.0),
        (t.total_s - t.network_s - t.hook_s).max(0.0),
        t.graph_note()
    );
}

/// A reconstruction judged against the truth: its name in the table and the JSON, the volume, the
/// seconds it took.
pub(crate) struct Method {
    pub name: String,
    pub key: &'static str,
    pub volume: Vec<f32>,
    pub seconds: f64,
}

/// FBP/FDK (Hann) and CGLS from zero on the same data, timed.
pub(crate) fn baselines(g: &Geometry, proj: &[f32], cgls_iters: usize, dev: &Device) -> Result<[Method; 2]> {
    let t0 = Instant::now();
    let fdk = fbp::fbp(g, proj, fbp::Window::Hann)?;
    let fdk_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let p = Projector::new(g.clone(), dev)?;
    let y = Tensor::from_f32(proj, &g.proj_shape(), DType::F32, dev)?;
    let mut x = Tensor::zeros(&g.volume.shape, DType::F32, dev)?;
    iterative::cgls(&p, &y, &mut x, cgls_iters, |_, _| {})?;
    let cgls = x.to_f32_vec()?;
    Ok([
        Method { name: format!("{} (Hann)", if g.beam == tomodiff::ct::Beam::Parallel { "FBP" } else { "FDK" }), key: "fdk", volume: fdk, seconds: fdk_s },
        Method { name: format!("CGLS ({cgls_iters} iters)"), key: "cgls", volume: cgls, seconds: t0.elapsed().as_secs_f64() },
    ])
}

/// Prints PSNR and SSIM (whole and per plane) and the time of each method against `truth`, and
/// writes them as JSON with `extra` fields to `path`.
fn report(shape: [usize; 3], truth: &[f32], methods: &[&Method], mut extra: serde_json::Value, path: &Path) -> Result<()> {
    println!("{:<22} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9}", "method", "PSNR", "axial", "coronal", "sagittal", "SSIM ax", "cor", "sag", "seconds");
    for me in methods {
        let m = compare(shape, &me.volume, truth)?;
        println!(
            "{:<22} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8.4} {:>8.4} {:>8.4} {:>9.1}",
            me.name, m.psnr, m.psnr_axial, m.psnr_coronal, m.psnr_sagittal, m.ssim_axial, m.ssim_coronal, m.ssim_sagittal, me.seconds
        );
        let mut v = serde_json::to_value(&m)?;
        v["seconds"] = me.seconds.into();
        extra[me.key] = v;
    }
    tomodiff::io::write_atomic(path, serde_json::to_string_pretty(&extra)?.as_bytes())?;
    println!("metrics written to {}", path.display());
    Ok(())
}

pub fn reconstruct_cmd(a: ReconstructArgs) -> Result<()> {
    if a.metrics.is_some() && a.reference.is_none() {
        bail!("--metrics needs --reference (the metrics compare against it)");
    }
    let metrics = a.reference.as_ref().map(|_| a.metrics.clone().unwrap_or_else(|| metrics_path(&a.output)));
    super::ct::check_volume_outputs(&a.output, a.preview.as_deref())?;
    tomodiff::io::output::check_all(&[(metrics.as_deref(), tomodiff::io::output::Kind::Json)])?;
    let g = Geometry::from_file(&a.geometry)?;
    let proj = load_proj(&a.input, &g, a.astra_layout)?; // non-finite values are refused by the reader
    let reference = match &a.reference {
        // Compared voxel by voxel: a file that wins only states the grid, as the geometry's is used.
        Some(r) => Some(super::ct::load_volume(r, &mut g.volume.clone(), a.voxel_size_from.as_deref())?),
        None => None,
    };
    let opts = a.prior.options()?;
    let (cfg, w, name) = load_model(a.weights.as_deref(), a.config.as_deref())?;
    eprintln!("prior: {name}");
    if opts.start != Start::Noise {
        for w in fbp::warnings(&g)? {
            eprintln!("warning: FDK start: {w}");
        }
    }
    // FDK starts the sampler, and says whether the data are in the prior's range.
    let (fdk, warning) = tomodiff::diffusion::recon::fdk_start(&g, &proj, &cfg, &opts)?;
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    let (mu, stats) = run_prior(&cfg, &w, &g, &proj, fdk.as_deref(), &a.prior)?;
    print_stats(&stats);
    // The volume, its preview and the metrics: all written, or none left behind.
    let mut outs = tomodiff::io::output::Outputs::default();
    super::ct::write_volume(&mut outs, &a.output, &g.volume, &mu, a.preview.as_deref())?;
    if let (Some(r), Some(path)) = (reference, metrics) {
        let dev = crate::cli::device(&a.prior.sampler.device)?;
        let [fdk, cgls] = baselines(&g, &proj, a.cgls_iters, &dev)?;
        let prior = Method { name: "diffusion prior".into(), key: "diffusion", volume: mu, seconds: stats.sample.total_s };
        outs.write(&path, |p| report(g.volume.shape, &r, &[&fdk, &cgls, &prior], serde_json::json!({ "cgls_iters": a.cgls_iters, "prior_settings": a.prior.settings(&name) }), p))?;
    }
    outs.commit();
    println!("reconstruction written to {}", a.output.display());
    Ok(())
}

/// out.nii.gz -> out.metrics.json
fn metrics_path(output: &Path) -> PathBuf {
    let name = output.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let stem = name.split('.').next().unwrap_or("recon");
    output.with_file_name(format!("{stem}.metrics.json"))
}

#[derive(Args)]
pub struct DemoArgs {
    /// Output folder: the geometry, projections, volumes, side-by-side PNG and metrics.
    #[arg(long, default_value = "tomodiff-demo")]
    out: PathBuf,
    /// Cone-beam views, spread over --arc-deg.
    #[arg(long, default_value_t = 8)]
    views: usize,
    /// The scan's arc in degrees: 360 for sparse-view, less for limited-angle (e.g. 120).
    #[arg(long, default_value_t = 360.0)]
    arc_deg: f64,
    /// Incident photons per ray (Poisson noise).
    #[arg(long, default_value_t = 1e5)]
    i0: f64,
    /// Seed of the held-out chest phantom (training draws its phantoms' seeds at random from a
    /// generator; this one is fixed and reported).
    #[arg(long, default_value_t = 20_261_124)]
    phantom_seed: u64,
    /// CGLS iterations of the baseline.
    #[arg(long, default_value_t = 20)]
    cgls_iters: usize,
    /// A prior to compare instead of the shipped one (safetensors, with the config.json beside
    /// them unless --config names one); it should know 64^3 chests of 1 mm voxels.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// A preset (paper, small, tiny) or a JSON config for --weights.
    #[arg(long)]
    config: Option<String>,
    #[command(flatten)]
    prior: PriorArgs,
}

pub fn demo(a: DemoArgs) -> Result<()> {
    if a.views == 0 {
        bail!("--views must be at least 1, got 0");
    }
    if !(a.arc_deg > 0.0 && a.arc_deg <= 360.0) {
        bail!("--arc-deg must be in (0, 360] degrees, got {}", a.arc_deg);
    }
    a.prior.options()?; // refuse bad settings before any work
    let made = make_out_folder(&a.out)?;
    let done = demo_in(&a);
    if done.is_err() && made {
        // Only the folder this run made, and only when empty: files are removed by `Outputs`.
        let _ = std::fs::remove_dir(&a.out);
    }
    done
}

/// Makes the demo's --out folder before the work, so an unusable path is refused at once;
/// whether it was made by this run. Its parent folder must exist, as for every other output.
fn make_out_folder(out: &Path) -> Result<bool> {
    if out.is_dir() {
        return Ok(false);
    }
    if out.exists() {
        bail!("--out {}: exists and is not a folder", out.display());
    }
    let parent = tomodiff::io::folder_of(out);
    if !parent.is_dir() {
        bail!("--out {}: its parent {} is not an existing folder", out.display(), parent.display());
    }
    std::fs::create_dir(out).with_context(|| format!("--out {}: creating the folder", out.display()))?;
    Ok(true)
}

fn demo_in(a: &DemoArgs) -> Result<()> {
    let (cfg, w, name) = load_model(a.weights.as_deref(), a.config.as_deref())?;
    // 64^3 voxels of 1 mm, as the shipped prior was trained on.
    let text = tomodiff::ct::geometry::cone_scan_json([64, 64, 64], a.views, a.arc_deg);
    let g = Geometry::from_json(&text)?;
    // Simulated from a phantom twice as fine as the grid, judged against its voxel averages.
    let held = super::heldout::HeldOut::new("chest", &g.volume, a.phantom_seed)?;
    let proj = held.scan(&g, a.i0)?;
    let truth = held.truth;
    println!("held-out chest phantom (seed {}), {} cone-beam views over {} degrees, I0 = {:.0e}; prior {name}", a.phantom_seed, a.views, a.arc_deg, a.i0);
    let dev = crate::cli::device(&a.prior.sampler.device)?;
    let [fdk, cgls] = baselines(&g, &proj, a.cgls_iters, &dev)?;
    let (mu, stats) = run_prior(&cfg, &w, &g, &proj, Some(&fdk.volume), &a.prior)?;
    print_stats(&stats);
    let prior = Method { name: "diffusion prior".into(), key: "diffusion", volume: mu, seconds: stats.sample.total_s };
    let truth = Method { name: "truth".into(), key: "truth", volume: truth, seconds: 0.0 };
    // Every file once the work is done: a run that fails or is stopped leaves none of them.
    write_demo(a, &g, &text, &proj, [&truth, &fdk, &cgls, &prior], &name, &dev.name())
}

/// The demo's files in `a.out`: the geometry and projections (inputs to `reconstruct`), each
/// volume, the side-by-side preview and the metrics; all of them, or none.
fn write_demo(a: &DemoArgs, g: &Geometry, geometry_json: &str, proj: &[f32], [truth, fdk, cgls, prior]: [&Method; 4], name: &str, device: &str) -> Result<()> {
    let mut outs = tomodiff::io::output::Outputs::default();
    outs.write(&a.out.join("geometry.json"), |p| tomodiff::io::write_atomic(p, geometry_json.as_bytes()))?;
    outs.write(&a.out.join("projections.npy"), |p| tomodiff::io::npy::write(p, &g.proj_shape(), proj))?;
    let vols = [truth, fdk, cgls, prior];
    for m in vols {
        outs.write(&a.out.join(format!("{}.nii.gz", m.key)), |p| tomodiff::io::write_array(p, &g.volume.shape, &m.volume, g.volume.voxel_size))?;
    }
    outs.write(&a.out.join("side-by-side.png"), |p| tomodiff::io::preview::write(p, g.volume.shape, g.volume.voxel_size, &vols.map(|m| m.volume.as_slice())))?;
    let extra = serde_json::json!({ "views": a.views, "arc_deg": a.arc_deg, "i0": a.i0, "phantom_seed": a.phantom_seed, "cgls_iters": a.cgls_iters, "device": device, "prior_settings": a.prior.settings(name) });
    outs.write(&a.out.join("metrics.json"), |p| report(g.volume.shape, &truth.volume, &[fdk, cgls, prior], extra, p))?;
    outs.commit();
    println!("volumes and side-by-side.png (rows: truth, FDK, CGLS, prior) in {}", a.out.display());
    Ok(())
}
