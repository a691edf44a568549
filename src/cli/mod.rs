mod bench;
mod ct;
mod eval;
mod heldout;
mod model;
mod recon;
mod sample;
mod train;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tomodiff::tensor::safetensors;
use tomodiff::{DType, Device};

#[derive(Parser)]
#[command(name = "tomodiff", version, about = "3D patch diffusion priors with global context for CT reconstruction")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Version, how the kernels were built, the devices found, and the kernel table.
    Info {
        /// Also show ptxas's register, shared-memory and spill report of every kernel.
        #[arg(long)]
        kernels: bool,
    },
    /// Measure throughput against the device's peak (the floor).
    Bench {
        #[command(subcommand)]
        what: bench::BenchCmd,
    },
    /// Make a phantom volume: shepp-logan, shepp-logan-ks, ellipsoids, chest or thorax (procedural anatomy in mm).
    Phantom(ct::PhantomArgs),
    /// Forward-project a volume with the Siddon projector (optionally with Poisson noise).
    Project(ct::ProjectArgs),
    /// The exact adjoint of the projector applied to projections.
    Backproject(ct::ReconArgs),
    /// FBP (parallel, fan) or FDK (cone), chosen by the geometry.
    Fbp(ct::FbpArgs),
    /// CGLS or SIRT on the Siddon pair.
    Iterative(ct::IterativeArgs),
    /// PSNR and SSIM (whole and per plane) of a volume against a reference.
    Metrics(ct::MetricsArgs),
    /// PNG of the middle slices of one or more volumes, one row each, all at the first one's grey levels.
    Preview(ct::PreviewArgs),
    /// The U-Net: its size and cost (info), or one evaluation on given inputs (run).
    Model {
        #[command(subcommand)]
        cmd: model::ModelCmd,
    },
    /// Train the prior (CPU): phantom stream or a folder of volumes; checkpoints, loss.csv, EMA weights.
    Train(train::TrainArgs),
    /// Write a training run's last checkpoint (EMA weights by default) as a model folder.
    Export(train::ExportArgs),
    /// Reconstruct a volume from projections with the diffusion prior and data consistency.
    Reconstruct(recon::ReconstructArgs),
    /// A held-out phantom, a sparse-view cone-beam scan, FDK, CGLS and the shipped prior, compared.
    Demo(recon::DemoArgs),
    /// The evaluation protocol: held-out procedural volumes, sparse-view and limited-angle scans,
    /// FBP/FDK, CGLS and the prior, PSNR and SSIM per plane, one table.
    Eval(eval::EvalArgs),
    /// Generate a volume from the prior alone (no data), to see what it learned.
    Sample(sample::SampleArgs),
    /// List the tensors of a safetensors file (name, dtype, shape).
    Inspect { file: PathBuf },
    /// Rewrite a safetensors file with every tensor stored as another dtype.
    Convert {
        input: PathBuf,
        output: PathBuf,
        /// f32, bf16 or f16.
        #[arg(long)]
        dtype: String,
        /// cpu, emu, cuda, cuda:N or auto: where the conversion runs.
        #[arg(long, default_value = "auto")]
        device: String,
    },
}


/// The command line, every subcommand taking negative numbers as option values (`--eta -1`)
/// rather than as flags; tomodiff's own checks then say what range a value must be in.
fn command() -> clap::Command {
    fn negatives(c: clap::Command) -> clap::Command {
        c.allow_negative_numbers(true).mut_subcommands(negatives)
    }
    negatives(<Cli as clap::CommandFactory>::command())
}

pub fn run() -> Result<()> {
    let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit());
    match cli.cmd {
        Cmd::Info { kernels } => print!("{}", tomodiff::info::report(kernels)),
        Cmd::Bench { what } => bench::run(what)?,
        Cmd::Model { cmd } => model::run(cmd)?,
        Cmd::Train(a) => train::run(a)?,
        Cmd::Export(a) => train::export(a)?,
        Cmd::Reconstruct(a) => recon::reconstruct_cmd(a)?,
        Cmd::Demo(a) => recon::demo(a)?,
        Cmd::Eval(a) => eval::run(a)?,
        Cmd::Sample(a) => sample::run(a)?,
        Cmd::Phantom(a) => ct::phantom(a)?,
        Cmd::Project(a) => ct::project(a)?,
        Cmd::Backproject(a) => ct::backproject(a)?,
        Cmd::Fbp(a) => ct::fbp(a)?,
        Cmd::Iterative(a) => ct::iterative(a)?,
        Cmd::Metrics(a) => ct::metrics(a)?,
        Cmd::Preview(a) => ct::preview(a)?,
        Cmd::Inspect { file } => {
            for (name, dtype, shape) in safetensors::list(&file)? {
                println!("{name}\t{dtype}\t{shape:?}");
            }
        }
        Cmd::Convert { input, output, dtype, device } => {
            let dtype = DType::parse(&dtype)?;
            tomodiff::io::output::check(&output, tomodiff::io::output::Kind::SafeTensors)?;
            let dev = crate::cli::device(&device)?;
            let tensors = safetensors::load(&input, &dev)?;
            let mut out = Vec::new();
            for (name, t) in &tensors {
                // A cast that rounds a finite value to infinity is refused before anything is written.
                let vals = t.to_f32_vec()?;
                let cast = dtype.decode(&dtype.encode(&vals));
                if let Some(i) = (0..vals.len()).find(|&i| vals[i].is_finite() && cast[i].is_infinite()) {
                    bail!("tensor {name}: {:e} at flat index {i} overflows {dtype}; nothing written", vals[i]);
                }
                out.push((name.as_str(), t.to_dtype(dtype).with_context(|| format!("converting {name}"))?));
            }
            let refs: Vec<(&str, &tomodiff::Tensor)> = out.iter().map(|(n, t)| (*n, t)).collect();
            safetensors::save(&output, &refs)?;
            println!("{} tensors written to {} as {dtype} (on {})", refs.len(), output.display(), dev.name());
        }
    }
    Ok(())
}

/// The device a `--device` option names; `auto` that falls back to the CPU on a machine with a
/// CUDA driver says why on stderr (an old driver, no device, a GPU older than sm_80).
pub(crate) fn device(name: &str) -> tomodiff::Result<Device> {
    if name != "auto" {
        return Device::parse(name);
    }
    let (dev, why) = Device::auto_explained();
    if let Some(why) = why {
        eprintln!("tomodiff: --device auto: running on the CPU: {why}");
    }
    Ok(dev)
}

