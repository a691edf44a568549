//! `tomodiff sample`: unconditional generation with the tiled sampler, to see what a prior learned.
use anyhow::{bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use tomodiff::ct::VolumeGrid;
use tomodiff::diffusion::sampler::{sample, SamplerOptions};
use tomodiff::nn::{model_files, Arch, UNet};
use tomodiff::Device;

#[derive(Args)]
pub struct SampleArgs {
    /// A preset (paper, tiny) or a JSON config; default: the config.json beside the weights.
    #[arg(long)]
    config: Option<String>,
    /// Weights (safetensors); default: the shipped prior.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Volume shape nz,ny,nx.
    #[arg(long, value_delimiter = ',', default_value = "64,64,64")]
    shape: Vec<usize>,
    #[arg(long, default_value_t = 50)]
    steps: usize,
    #[arg(long, default_value_t = 0.85)]
    eta: f64,
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Patches per network call.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "auto")]
    device: String,
    /// Output volume in attenuation units, mu = (x + 1) / 2 mu_max (.npy, .nii, .nii.gz).
    #[arg(short, long)]
    output: PathBuf,
    #[arg(long)]
    preview: Option<PathBuf>,
}

pub fn run(a: SampleArgs) -> Result<()> {
    let (cfg, w) = match &a.weights {
        Some(p) => model_files::load(p, a.config.as_deref())?,
        None => model_files::shipped()?,
    };
    let shape: [usize; 3] = a.shape.as_slice().try_into().map_err(|_| anyhow::anyhow!("--shape takes nz,ny,nx"))?;
    if shape.contains(&0) {
        bail!("--shape {shape:?} must be positive");
    }
    let dev = Device::parse(&a.device)?;
    let net = UNet::new(Arch::new(&cfg), &w, &dev)?;
    let opts = SamplerOptions { steps: a.steps, eta: a.eta, rounds: a.rounds, batch: a.batch, seed: a.seed, clip_x0: true, t_start: 999 };
    let pb = ProgressBar::new((a.steps * a.rounds) as u64);
    pb.set_style(ProgressStyle::with_template("sample [{bar:30}] {pos}/{len} network passes {elapsed} (eta {eta})").unwrap());
    let (x, _) = sample(&net, shape, &opts, None, |_, _| Ok(()), |p, _| pb.set_position(p as u64))?;
    pb.finish_and_clear();
    let mu: Vec<f32> = x.iter().map(|v| (v + 1.0) / 2.0 * cfg.mu_max).collect();
    let grid = VolumeGrid { shape, voxel_size: [1.0; 3], origin: [0.0; 3] };
    tomodiff::io::write_array(&a.output, &grid.shape, &mu, grid.voxel_size)?;
    if let Some(p) = &a.preview {
        tomodiff::io::preview::write(p, shape, &[&mu])?;
    }
    println!("sample {shape:?} written to {} ({} passes on {})", a.output.display(), a.steps * a.rounds, dev.name());
    Ok(())
}
