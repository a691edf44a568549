//! `tomodiff train`: the training loop with a progress bar, a CSV log of the loss, checkpoints
//! and final (EMA) weights.
use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;
use tomodiff::diffusion::train::{load_folder, Data, TrainOptions, Trainer, Units};
use tomodiff::nn::optim::AdamConfig;
use tomodiff::nn::{Prediction, UNetConfig};

#[derive(Args)]
pub struct TrainArgs {
    /// A preset (paper, small, tiny) or a JSON config [default: tiny].
    #[arg(long)]
    config: Option<String>,
    /// phantom:ellipsoids, phantom:chest, phantom:shepp-logan, phantom:thorax, or a folder of .npy/.nii(.gz) volumes.
    #[arg(long)]
    data: String,
    /// Run folder: checkpoints, loss.csv, weights.safetensors (EMA).
    #[arg(long)]
    out: PathBuf,
    /// Total steps (a resumed run continues to this count).
    #[arg(long)]
    steps: u64,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long, conflicts_with_all = ["init", "prediction"])]
    resume: bool,
    /// Start from trained weights (fine-tuning): a model folder (weights.safetensors and
    /// config.json, such as weights/tiny-chest or a run folder) or a weights file with its
    /// config.json beside it; the network's config comes from there.
    #[arg(long, conflicts_with = "config")]
    init: Option<PathBuf>,
    /// What the network learns to predict: eps (the paper) or v (learns the layout at high noise
    /// much sooner); default: the config's (eps for the paper and tiny presets, v for small).
    #[arg(long)]
    prediction: Option<String>,
    /// Patches per step [default: 8].
    #[arg(long)]
    batch: Option<usize>,
    /// AdamW's learning rate after the warmup [default: 2e-4]. With --resume, the run's rate from
    /// the next step on (to lower it for the tail of a run); checkpoints record it.
    #[arg(long)]
    lr: Option<f32>,
    /// Steps of linear learning-rate warmup [default: 100].
    #[arg(long)]
    warmup: Option<u64>,
    /// Seed of the run's initialisation and data [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = 100)]
    checkpoint_every: u64,
    /// Shape nz,ny,nx of phantom volumes [default: 32,32,32; with --resume, the run's].
    #[arg(long, value_delimiter = ',')]
    volume_shape: Option<Vec<usize>>,
    /// Phantom volumes averaged over each voxel from a grid K times finer (the mean attenuation
    /// a CT voxel holds; 1: the phantom as rendered, the value at each voxel centre for thorax
    /// and chest, which aliases thin bone and vessels into isolated voxels); above 1, one volume
    /// per step serves the batch [default: 2 for thorax and chest, 1 for the ellipsoid
    /// phantoms, which average 2^3 points per voxel already; with --resume, the run's].
    #[arg(long)]
    supersample: Option<usize>,
    /// What the values of a folder's .npy/NIfTI volumes are: hu (Hounsfield units) or mu
    /// (1/mm). DICOM series are always read through their rescale to HU.
    #[arg(long, default_value = "hu")]
    units: String,
    /// Resample folder volumes to this voxel size z,y,x (mm), from the size their files state.
    #[arg(long, value_delimiter = ',')]
    voxel_size: Option<Vec<f64>>,
    /// Stop after this many minutes (with a checkpoint and the EMA weights), even before --steps.
    #[arg(long)]
    minutes: Option<f64>,
    /// Where training runs: cpu (f32), emu or cuda (bf16 compute); the f32 master weights, Adam's
    /// moments and the EMA live on the same device.
    #[arg(long, default_value = "auto")]
    device: String,
}

pub fn run(a: TrainArgs) -> Result<()> {
    if let Some(m) = a.minutes {
        if !(m.is_finite() && m > 0.0) {
            bail!("--minutes must be positive, got {m}");
        }
    }
    if let Some(lr) = a.lr {
        if !(lr.is_finite() && lr > 0.0) {
            bail!("--lr must be positive, got {lr}");
        }
    }
    if a.resume {
        let fixed = [("--config", a.config.is_some()), ("--batch", a.batch.is_some()), ("--warmup", a.warmup.is_some()), ("--seed", a.seed.is_some())];
        let given: Vec<&str> = fixed.iter().filter(|f| f.1).map(|f| f.0).collect();
        if !given.is_empty() {
            let verb = if given.len() == 1 { "belongs" } else { "belong" };
            bail!("{} {verb} to the run being resumed (its checkpoint.json); with --resume only --lr, --steps, --minutes, --checkpoint-every and --device change (or start a new run with --init {} --out NEW_DIR)", given.join(", "), a.out.display());
        }
    }
    let units = Units::parse(&a.units)?;
    let voxel_size: Option<[f64; 3]> = match &a.voxel_size {
        None => None,
        Some(v) => match <[f64; 3]>::try_from(v.as_slice()) {
            Ok(v) if v.iter().all(|x| x.is_finite() && *x > 0.0) => Some(v),
            _ => bail!("--voxel-size takes three positive sizes z,y,x in mm, got {v:?}"),
        },
    };
    let dev = crate::cli::device(&a.device)?;
    let (data, volumes) = match a.data.strip_prefix("phantom:") {
        Some(name) => {
            let shape: [usize; 3] = match &a.volume_shape {
                Some(v) => v.as_slice().try_into().map_err(|_| anyhow::anyhow!("--volume-shape takes nz,ny,nx"))?,
                None => [32; 3],
            };
            if !tomodiff::ct::phantom::NAMES.contains(&name) {
                bail!("unknown phantom {name:?}: expected one of {:?}", tomodiff::ct::phantom::NAMES);
            }
            // The ellipsoid phantoms average 2^3 points per voxel already.
            let supersample = a.supersample.unwrap_or(if ["thorax", "chest"].contains(&name) { 2 } else { 1 });
            tomodiff::ct::phantom::check_supersample(shape, supersample).context("--supersample")?;
            (Data::Phantom { name: name.to_string(), shape, supersample }, vec![])
        }
        None => {
            if a.supersample.is_some() {
                bail!("--supersample applies to phantom:NAME data, not to a folder of volumes");
            }
            let vols = load_folder(std::path::Path::new(&a.data), units, voxel_size)?;
            let files = vols.iter().map(|v| v.0.clone()).collect();
            (Data::Volumes { files }, vols.into_iter().map(|(_, d, x)| (d, x)).collect())
        }
    };
    let mut tr = if a.resume {
        let mut tr = Trainer::resume(&a.out, volumes)?;
        let same = match (&data, &tr.opts.data) {
            (Data::Phantom { name, shape, supersample }, Data::Phantom { name: run_name, shape: run_shape, supersample: run_k }) => {
                name == run_name && (a.volume_shape.is_none() || shape == run_shape) && (a.supersample.is_none() || supersample == run_k)
            }
            (d, run_data) => d == run_data && units == tr.opts.units,
        };
        if let (Some(k), Data::Phantom { supersample, .. }) = (a.supersample, &tr.opts.data) {
            if k != *supersample {
                bail!(
                    "--supersample {k}: the run being resumed draws its phantoms with {supersample} (checkpoint.json; runs from before the option read as 1), which cannot change on resume: start a new run with --init {} --supersample {k} --out NEW_DIR",
                    a.out.display()
                );
            }
        }
        if !same {
            // A folder's values are read in its units; phantoms have none.
            let units = match tr.opts.data {
                Data::Volumes { .. } => format!(" in {}", tr.opts.units.name()),
                Data::Phantom { .. } => String::new(),
            };
            bail!(
                "--data {} (with --volume-shape, --supersample or --units) is not the data of the run being resumed, {}{} (its checkpoint.json): resume with those, or start a new run with --init {} --out NEW_DIR",
                a.data,
                tr.opts.data,
                units,
                a.out.display()
            );
        }
        if let Some(lr) = a.lr {
            tr.opts.adam.lr = lr;
        }
        tr
    } else {
        let d = AdamConfig::default();
        let adam = AdamConfig { lr: a.lr.unwrap_or(d.lr), warmup_steps: a.warmup.unwrap_or(d.warmup_steps), ..d };
        let opts = TrainOptions { batch: a.batch.unwrap_or(8), seed: a.seed.unwrap_or(0), adam, data, units };
        let (mut cfg, init) = match &a.init {
            Some(p) => {
                let file = if p.is_dir() { p.join("weights.safetensors") } else { p.clone() };
                let (cfg, w) = tomodiff::nn::model_files::load(&file, None)?;
                (cfg, Some(w))
            }
            None => (UNetConfig::load(a.config.as_deref().unwrap_or("tiny"))?, None),
        };
        if let Some(p) = &a.prediction {
            cfg.prediction = Prediction::parse(p)?;
        }
        match init {
            Some(w) => Trainer::from_weights(&cfg, opts, volumes, &w)?,
            None => Trainer::new(&cfg, opts, volumes)?,
        }
    };
    tr.set_device(&dev)?;
    if let Data::Phantom { shape, .. } = &tr.opts.data {
        if shape.iter().zip(tr.arch.cfg.patch).any(|(s, p)| *s < p) {
            bail!("volumes {shape:?} are smaller than the patch {:?}", tr.arch.cfg.patch);
        }
    }
    // Made only now, so that a refused argument leaves no empty run folder behind.
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let csv_path = a.out.join("loss.csv");
    if a.resume && csv_path.exists() {
        trim_log(&csv_path, tr.step)?;
    }
    let fresh = !csv_path.exists() || !a.resume;
    let mut csv = std::fs::OpenOptions::new().create(true).append(a.resume).write(true).truncate(!a.resume).open(&csv_path)?;
    if fresh {
        writeln!(csv, "step,loss,grad_norm,lr,seconds")?;
    }
    let start = tr.step;
    let pb = ProgressBar::new(a.steps);
    pb.set_style(ProgressStyle::with_template("train [{bar:30}] {pos}/{len} {msg} {elapsed} (eta {eta})").unwrap());
    pb.set_position(start);
    let t0 = Instant::now();
    let out_of_time = || a.minutes.is_some_and(|m| t0.elapsed().as_secs_f64() > m * 60.0);
    while tr.step < a.steps {
        let s = tr.step()?;
        let done = tr.step;
        let stop = out_of_time();
        writeln!(csv, "{done},{:.6},{:.4},{:.3e},{:.2}", s.loss, s.grad_norm, s.lr, t0.elapsed().as_secs_f64())?;
        let rate = (done - start) as f64 / t0.elapsed().as_secs_f64();
        pb.set_position(done);
        pb.set_message(format!("loss {:.4}, {rate:.2} steps/s", s.loss));
        if done % a.checkpoint_every == 0 || done == a.steps || stop {
            csv.flush()?;
            tr.save_checkpoint(&a.out)?;
            // The run folder is a model folder at every checkpoint (sample from it mid-run).
            tr.ema_weights()?.save(&a.out.join("weights.safetensors"), &tr.arch)?;
            tomodiff::io::write_atomic(&a.out.join("config.json"), serde_json::to_string_pretty(&tr.arch.cfg)?.as_bytes())?;
        }
        if stop {
            pb.suspend(|| eprintln!("--minutes {}: stopping at step {done}", a.minutes.unwrap_or(0.0)));
            break;
        }
    }
    pb.finish_and_clear();
    println!("{} steps on {}; EMA weights in {}", tr.step, dev.name(), a.out.join("weights.safetensors").display());
    Ok(())
}

#[derive(Args)]
pub struct ExportArgs {
    /// A training run's folder (its checkpoint.json and the file it names).
    run: PathBuf,
    /// Model folder to write: weights.safetensors and config.json.
    #[arg(short, long)]
    out: PathBuf,
    /// The raw parameters instead of the EMA.
    #[arg(long)]
    raw: bool,
}

/// Writes the last checkpoint's weights (EMA by default) and config as a model folder.
pub fn export(a: ExportArgs) -> Result<()> {
    let (cfg, step, w) = tomodiff::diffusion::train::checkpoint_weights(&a.run, !a.raw)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    w.save(&a.out.join("weights.safetensors"), &tomodiff::nn::Arch::new(&cfg))?;
    tomodiff::io::write_atomic(&a.out.join("config.json"), serde_json::to_string_pretty(&cfg)?.as_bytes())?;
    println!("{} weights of step {step} written to {}", if a.raw { "raw" } else { "EMA" }, a.out.display());
    Ok(())
}

/// Drops the log's rows after `step` (steps taken after the last checkpoint of a killed run,
/// which the resumed run takes again).
fn trim_log(path: &std::path::Path, step: u64) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let keep = |l: &&str| l.split(',').next().and_then(|s| s.parse::<u64>().ok()).is_none_or(|s| s <= step);
    let kept: String = text.lines().filter(keep).flat_map(|l| [l, "\n"]).collect();
    if kept.len() != text.len() {
        tomodiff::io::write_atomic(path, kept.as_bytes())?;
    }
    Ok(())
}
