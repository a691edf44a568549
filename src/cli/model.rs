//! `tomodiff model info` and `tomodiff model run`.
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use std::path::PathBuf;
use tomodiff::nn::unet::{from_ncdhw, to_ncdhw};
use tomodiff::nn::{Arch, UNet, UNetConfig, Weights};
use tomodiff::tensor::safetensors;
use tomodiff::{DType, Device, Tensor};

#[derive(Subcommand)]
pub enum ModelCmd {
    /// Parameters per block and in total, FLOPs per patch.
    Info {
        /// A preset (paper, small, tiny) or a JSON config file.
        #[arg(long, default_value = "paper")]
        config: String,
    },
    /// Evaluate the network: `x` (N, C, D, H, W) f32 and `t` (N) in, `eps` (N, 1, D, H, W) out
    /// (`v` for a config with "prediction": "v").
    Run {
        #[arg(long)]
        config: String,
        #[arg(long)]
        weights: PathBuf,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
        /// cpu (f32), emu or cuda (bf16 activations), cuda:N, or auto.
        #[arg(long, default_value = "auto")]
        device: String,
    },
}

pub fn run(cmd: ModelCmd) -> Result<()> {
    match cmd {
        ModelCmd::Info { config } => info(&config),
        ModelCmd::Run { config, weights, input, output, device } => model_run(&config, &weights, &input, &output, &device),
    }
}

fn info(config: &str) -> Result<()> {
    let cfg = UNetConfig::load(config)?;
    cfg.validate()?;
    let arch = Arch::new(&cfg);
    let params = arch.params();
    let flops = arch.flops();
    println!("{:<22} {:>12} {:>12}", "block", "parameters", "GFLOP/patch");
    // Group parameters by block: the name up to the block index (input_blocks.3, middle_block.1).
    let block_of = |name: &str| -> String {
        let parts: Vec<&str> = name.split('.').collect();
        match parts[0] {
            "input_blocks" | "output_blocks" | "middle_block" if parts.len() > 2 => {
                if parts[0] == "middle_block" { parts[..2].join(".") } else { parts[..3].join(".") }
            }
            _ => parts[0].to_string(),
        }
    };
    for (name, f) in &flops {
        let p: usize = params.iter().filter(|p| block_of(&p.name) == *name).map(|p| p.shape.iter().product::<usize>()).sum();
        println!("{name:<22} {p:>12} {:>12.3}", f / 1e9);
    }
    println!(
        "total: {} parameters, {:.2} GFLOP per {:?} patch ({} in, {} out channels)",
        arch.param_count(),
        arch.total_flops() / 1e9,
        cfg.patch,
        cfg.in_channels,
        cfg.out_channels
    );
    Ok(())
}

fn model_run(config: &str, weights: &std::path::Path, input: &std::path::Path, output: &std::path::Path, device: &str) -> Result<()> {
    let cfg = UNetConfig::load(config)?;
    cfg.validate()?;
    let dev = crate::cli::device(device)?;
    let arch = Arch::new(&cfg);
    let w = Weights::load(weights, &arch)?;
    let io = safetensors::load(input, &Device::Cpu)?;
    let x = io.get("x").with_context(|| format!("{}: no tensor \"x\"", input.display()))?;
    let t = io.get("t").with_context(|| format!("{}: no tensor \"t\"", input.display()))?;
    let s = x.shape().to_vec();
    let down = 1usize << (cfg.channel_mult.len() - 1);
    if s.len() != 5 || s[1] != cfg.in_channels || s[2..].iter().any(|d| *d == 0 || d % down != 0) {
        bail!("{}: x has shape {s:?}; expected (N, {}, D, H, W) with D, H, W positive multiples of {down}", input.display(), cfg.in_channels);
    }
    if t.shape() != [s[0]] {
        bail!("{}: t has shape {:?}; expected [{}]", input.display(), t.shape(), s[0]);
    }
    let xv = x.to_f32_vec()?;
    let tv = t.to_f32_vec()?;
    if let Some(i) = xv.iter().chain(&tv).position(|v| !v.is_finite()) {
        bail!("{}: non-finite input value at flat index {i} (x, then t)", input.display());
    }
    let net = UNet::new(arch, &w, &dev)?;
    let sp = s[2] * s[3] * s[4];
    let xt = Tensor::from_f32(&from_ncdhw(&xv, s[0], s[1], sp), &[s[0], s[2], s[3], s[4], s[1]], net.act_dtype(), &dev)?;
    let tt = Tensor::from_f32(&tv, &[s[0]], DType::F32, &dev)?;
    let eps = net.forward(&xt, &tt, None)?.to_f32_vec()?;
    let co = cfg.out_channels;
    let out = Tensor::from_f32(&to_ncdhw(&eps, s[0], co, sp), &[s[0], co, s[2], s[3], s[4]], DType::F32, &Device::Cpu)?;
    // Named for what the config says the network predicts.
    let name = if cfg.prediction == tomodiff::nn::Prediction::V { "v" } else { "eps" };
    safetensors::save(output, &[(name, &out)])?;
    println!("{name} {:?} written to {} ({})", out.shape(), output.display(), dev.name());
    Ok(())
}
