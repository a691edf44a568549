//! `tomodiff sample`: unconditional generation with the tiled sampler, to see what a prior learned.
use anyhow::{bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use tomodiff::ct::VolumeGrid;
use tomodiff::diffusion::sampler::{sample, SamplerOptions};
use tomodiff::nn::{model_files, Arch, UNet};

/// The sampler's settings, shared by `sample`, `reconstruct` and `demo`.
#[derive(Args, Clone)]
pub struct SamplerArgs {
    /// DDIM steps (N).
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// DDIM's stochasticity in [0, 1]: 0 is deterministic DDIM, 1 is DDPM-like.
    #[arg(long, default_value_t = 0.85)]
    pub eta: f64,
    /// Recurrent rounds per step (K); default 2 for reconstruction, 1 for `sample`.
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Patches per network call.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Seeds the noise and the tiling offsets: the same seed gives the same volume.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu, emu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// On emu and cuda, run every network pass as it comes instead of replaying a captured graph.
    #[arg(long)]
    pub no_graph: bool,
}

impl SamplerArgs {
    /// Refuses values the sampler cannot take, naming the flag: --steps, --rounds and --batch
    /// below 1, --eta outside [0, 1].
    pub fn check(&self) -> anyhow::Result<()> {
        for (flag, v) in [("--steps", Some(self.steps)), ("--rounds", self.rounds), ("--batch", Some(self.batch))] {
            if v == Some(0) {
                anyhow::bail!("{flag} must be at least 1, got 0");
            }
        }
        if !(0.0..=1.0).contains(&self.eta) {
            anyhow::bail!("--eta must be in [0, 1], got {} (0: deterministic DDIM, 1: DDPM-like)", self.eta);
        }
        Ok(())
    }

    pub fn options(&self, default_rounds: usize) -> SamplerOptions {
        let rounds = self.rounds.unwrap_or(default_rounds);
        SamplerOptions {
            steps: self.steps,
            eta: self.eta,
            rounds,
            batch: self.batch,
            seed: self.seed,
            graph: !self.no_graph,
            ..SamplerOptions::default()
        }
    }
}

#[derive(Args)]
pub struct SampleArgs {
    /// A preset (paper, small, tiny) or a JSON config; default: the config.json beside the weights.
    #[arg(long)]
    config: Option<String>,
    /// Weights (safetensors); default: the shipped prior.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Volume shape nz,ny,nx.
    #[arg(long, value_delimiter = ',', default_value = "64,64,64")]
    shape: Vec<usize>,
    #[command(flatten)]
    sampler: SamplerArgs,
    /// Output volume in attenuation units (1/mm, through the config's mu_min and mu_max; .npy, .nii, .nii.gz).
    #[arg(short, long)]
    output: PathBuf,
    /// PNG of the middle slices.
    #[arg(long)]
    preview: Option<PathBuf>,
}

pub fn run(a: SampleArgs) -> Result<()> {
    super::ct::check_volume_outputs(&a.output, a.preview.as_deref())?;
    a.sampler.check()?;
    let (cfg, w) = match &a.weights {
        Some(p) => model_files::load(p, a.config.as_deref())?,
        None => model_files::shipped()?,
    };
    let shape: [usize; 3] = a.shape.as_slice().try_into().map_err(|_| anyhow::anyhow!("--shape takes nz,ny,nx"))?;
    if shape.contains(&0) {
        bail!("--shape {shape:?} must be positive");
    }
    let dev = crate::cli::device(&a.sampler.device)?;
    let net = UNet::new(Arch::new(&cfg), &w, &dev)?;
    let mut opts = a.sampler.options(1);
    opts.clip_x0 &= cfg.clip_x0;
    let pb = ProgressBar::new(opts.passes() as u64);
    pb.set_style(ProgressStyle::with_template("sample [{bar:30}] {pos}/{len} network passes {elapsed} (eta {eta})").unwrap());
    let (x, stats) = sample(&net, shape, &opts, None, |_, _| Ok(()), |p, _| pb.set_position(p as u64))?;
    pb.finish_and_clear();
    let map = cfg.intensity();
    let mu: Vec<f32> = x.iter().map(|v| map.to_mu(*v)).collect();
    let grid = VolumeGrid { shape, voxel_size: [1.0; 3], origin: [0.0; 3] };
    super::ct::save_volume(&a.output, &grid, &mu, a.preview.as_deref())?;
    println!("sample {shape:?} written to {} ({} passes on {})", a.output.display(), stats.passes, dev.name());
    Ok(())
}
