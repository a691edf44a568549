//! `tomodiff bench`: each benchmark's rows, the spread of its runs, and with `--peer` the program a
//! user would otherwise pick (PyTorch for the network, ASTRA for the projector), run from the same
//! command right after ours, with the ratio; `--json` prints the same as JSON lines.
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use tomodiff::Device;

/// How a benchmark reports: the peer and the format.
#[derive(clap::Args)]
pub(crate) struct Report {
    /// Also run the peer (PyTorch's U-Net for unet/train; ASTRA's 'line' projector for projector
    /// parallel2d on the CPU, its CUDA projector for cone on a GPU) through $TOMODIFF_PYTHON
    /// (default python3) and print the ratio.
    #[arg(long)]
    peer: bool,
    /// One JSON object per row on stdout instead of text.
    #[arg(long)]
    json: bool,
}

/// What the network benchmarks take.
#[derive(clap::Args)]
pub(crate) struct NetBench {
    /// Devices to measure (repeatable); default: cpu and every CUDA device.
    #[arg(long = "device")]
    pub devices: Vec<String>,
    /// A preset (paper, small, tiny) or a JSON config.
    #[arg(long, default_value = "tiny")]
    pub config: String,
    /// Patch edge (cubic patches); default: the config's patch.
    #[arg(long)]
    pub patch: Option<usize>,
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
}

#[derive(clap::Subcommand)]
pub(crate) enum BenchCmd {
    /// One training step (forward and backward) over a batch of patches: patches/s, TFLOP/s.
    Train {
        #[command(flatten)]
        net: NetBench,
        #[command(flatten)]
        report: Report,
    },
    /// One U-Net forward over a batch of patches: patches/s, achieved FLOP/s, the floor.
    Unet {
        #[command(flatten)]
        net: NetBench,
        #[command(flatten)]
        report: Report,
    },
    /// One reconstruction (random weights, a chest phantom's cone-beam scan): wall time, network
    /// passes/s and the split (network, projector, CG, the rest).
    Recon {
        #[command(flatten)]
        net: NetBench,
        /// Volume shape nz,ny,nx.
        #[arg(long, value_delimiter = ',', default_value = "64,64,64")]
        shape: Vec<usize>,
        #[arg(long, default_value_t = 8)]
        views: usize,
        #[arg(long, default_value_t = 50)]
        steps: usize,
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        #[arg(long, default_value_t = 5)]
        cg_iters: usize,
        /// Run every network pass as it comes instead of replaying a captured graph.
        #[arg(long)]
        no_graph: bool,
    },
    /// Siddon forward and adjoint: rays/s and voxel intersections/s.
    Projector {
        /// Devices to measure (repeatable); default: cpu and every CUDA device.
        #[arg(long = "device")]
        devices: Vec<String>,
        /// parallel2d (512^2 slice, 360 views x 768 columns) or cone (512x512x256, 360 views of 512x768).
        #[arg(long, default_value = "parallel2d")]
        case: String,
        #[command(flatten)]
        report: Report,
    },
    /// C = A B, n x n x n: bf16 tensor cores on GPUs (and emulated), f32 on the CPU.
    Gemm {
        /// Devices to measure (repeatable); default: cpu and every CUDA device.
        #[arg(long = "device")]
        devices: Vec<String>,
        /// Problem size n; default 4096 on CUDA, 1024 on the CPU, 256 emulated.
        #[arg(long)]
        size: Option<usize>,
    },
}

pub(crate) fn run(cmd: BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Unet { net, report } => bench_net(net, report, "unet", tomodiff::bench::unet),
        BenchCmd::Train { net, report } => bench_net(net, report, "train", tomodiff::bench::train),
        BenchCmd::Projector { devices, case, report } => bench_projector(devices, &case, report),
        BenchCmd::Gemm { devices, size } => bench_gemm(devices, size),
        BenchCmd::Recon { net, shape, views, steps, rounds, cg_iters, no_graph } => {
            let shape: [usize; 3] = shape.as_slice().try_into().map_err(|_| anyhow::anyhow!("--shape takes nz,ny,nx"))?;
            let case = tomodiff::bench::ReconCase { shape, views, steps, rounds, cg_iters, batch: net.batch, graph: !no_graph };
            let cfg = net_config(&net)?;
            for dev in bench_devices(net.devices)? {
                println!("{}", tomodiff::bench::recon(&dev, &cfg, &case).with_context(|| format!("on {}", dev.name()))?);
            }
            Ok(())
        }
    }
}

/// The named devices, or the cpu and every CUDA device.
pub(crate) fn bench_devices(devices: Vec<String>) -> Result<Vec<Device>> {
    if devices.is_empty() {
        let mut v = vec![Device::Cpu];
        if let Ok(n) = tomodiff::device::cuda_device_count() {
            for i in 0..n {
                v.push(Device::cuda(i)?);
            }
        }
        return Ok(v);
    }
    Ok(devices.iter().map(|d| crate::cli::device(d)).collect::<tomodiff::Result<_>>()?)
}

/// The benchmark's config, with its patch edge when given.
fn net_config(a: &NetBench) -> Result<tomodiff::nn::UNetConfig> {
    let mut cfg = tomodiff::nn::UNetConfig::load(&a.config)?;
    if let Some(p) = a.patch {
        cfg.patch = [p; 3];
    }
    cfg.validate()?;
    Ok(cfg)
}

/// The device's name as the peer scripts take it (cpu, or cuda with the index dropped).
fn peer_device(dev: &Device) -> &'static str {
    if matches!(dev, Device::Cuda(_)) {
        "cuda"
    } else {
        "cpu"
    }
}

/// A network benchmark (forward or training step) on each device, with its peer.
fn bench_net(a: NetBench, report: Report, what: &str, f: fn(&Device, &tomodiff::nn::UNetConfig, usize) -> tomodiff::Result<tomodiff::bench::Row>) -> Result<()> {
    let cfg = net_config(&a)?;
    for dev in bench_devices(a.devices.clone())? {
        let row = f(&dev, &cfg, a.batch).with_context(|| format!("on {}", dev.name()))?;
        let profile = tomodiff::ops::profile::report();
        let peer = report.peer.then(|| {
            if !matches!(a.config.as_str(), "tiny" | "paper") {
                return Err(format!("the PyTorch peer builds the presets only (tiny, paper), not {}", a.config));
            }
            let script = if what == "unet" { "peer_unet_torch.py" } else { "peer_train_torch.py" };
            let mut args = vec!["--config".to_string(), a.config.clone(), "--batch".into(), a.batch.to_string(), "--device".into(), peer_device(&dev).into()];
            args.extend(["--threads".into(), rayon::current_num_threads().to_string()]);
            if let Some(p) = a.patch {
                args.extend(["--patch".into(), p.to_string()]);
            }
            run_peer(script, &args).map(|mut v| v.remove(0))
        });
        let row_json = serde_json::to_value(&row)?;
        emit(&report, &row.line(), &row.timing, row_json, peer, profile);
    }
    Ok(())
}

fn bench_projector(devices: Vec<String>, case: &str, report: Report) -> Result<()> {
    for dev in bench_devices(devices)? {
        let rows = tomodiff::bench::projector(&dev, case)?;
        let peers = report.peer.then(|| match (case, &dev) {
            ("parallel2d", Device::Cpu) => run_peer("peer_astra_cpu.py", &[]),
            ("cone", Device::Cuda(_)) => run_peer("peer_astra_cuda.py", &[]),
            _ => Err(format!("no ASTRA peer for case {case} on {}", dev.name())),
        });
        for row in rows {
            let peer = peers.as_ref().map(|p| {
                p.clone().and_then(|v| v.into_iter().find(|e| e["direction"] == row.direction.as_str()).ok_or_else(|| format!("the peer printed no {} row", row.direction)))
            });
            emit(&report, &row.line(), &row.timing, serde_json::to_value(&row)?, peer, None);
        }
    }
    Ok(())
}

fn bench_gemm(devices: Vec<String>, size: Option<usize>) -> Result<()> {
    for dev in &bench_devices(devices)? {
        let n = size.unwrap_or(match dev {
            Device::Cuda(_) => 4096,
            Device::Cpu => 1024,
            Device::Emu => 256,
        });
        let row = tomodiff::bench::gemm(dev, n).with_context(|| format!("gemm on {}", dev.name()))?;
        println!("{}", row.line());
        println!("  {}", row.timing.line());
    }
    Ok(())
}

/// Prints one row: text (the row, its spread, the peer and the ratio, the op profile) or one JSON
/// object.
fn emit(report: &Report, line: &str, timing: &tomodiff::bench::Timing, row: Value, peer: Option<Result<Value, String>>, profile: Option<String>) {
    // tomodiff's speed over the peer's: above 1 when tomodiff is faster.
    let ratio = |p: &Value| p["median_s"].as_f64().map(|s| s / timing.median_s);
    if report.json {
        let (peer_v, err) = match &peer {
            Some(Ok(p)) => (p.clone(), Value::Null),
            Some(Err(e)) => (Value::Null, json!(e)),
            None => (Value::Null, Value::Null),
        };
        let r = peer.as_ref().and_then(|p| p.as_ref().ok()).and_then(ratio);
        println!("{}", json!({ "tomodiff": row, "peer": peer_v, "peer_error": err, "speed_ratio": r }));
        return;
    }
    println!("{line}");
    println!("  {}", timing.line());
    match peer {
        Some(Ok(p)) => {
            let med = p["median_s"].as_f64().unwrap_or(f64::NAN);
            println!(
                "  peer {}: median {:.3} ms of {} runs (min {:.3}, max {:.3}); tomodiff {:.2}x the peer's speed",
                p["peer"].as_str().unwrap_or("?"),
                med * 1e3,
                p["runs"],
                p["min_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
                p["max_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
                ratio(&p).unwrap_or(f64::NAN)
            );
        }
        Some(Err(e)) => println!("  peer: not run: {e}"),
        None => {}
    }
    if let Some(p) = profile {
        print!("{p}");
    }
}

/// The scripts folder: $TOMODIFF_SCRIPTS, else scripts/ beside the binary or two folders up
/// (target/release), else the source tree this binary was built from.
fn scripts_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TOMODIFF_SCRIPTS") {
        return d.into();
    }
    let exe = std::env::current_exe().ok();
    let near = exe.iter().flat_map(|e| e.ancestors().skip(1).take(3)).map(|d| d.join("scripts"));
    near.chain([PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts")])
        .find(|d| d.join("peer_unet_torch.py").exists())
        .unwrap_or_else(|| PathBuf::from("scripts"))
}

/// Runs a peer script and returns the JSON objects of its `PEER_JSON` lines, or why it could not.
fn run_peer(script: &str, args: &[String]) -> Result<Vec<Value>, String> {
    let python = std::env::var("TOMODIFF_PYTHON").unwrap_or_else(|_| "python3".into());
    let path = scripts_dir().join(script);
    eprintln!("tomodiff bench: running the peer: {python} {} {}", path.display(), args.join(" "));
    let out = Command::new(&python).arg(&path).args(args).output().map_err(|e| format!("{python}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message");
        return Err(format!("{script} failed ({}): {last}", out.status));
    }
    let v: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.strip_prefix("PEER_JSON ")).filter_map(|l| serde_json::from_str(l).ok()).collect();
    if v.is_empty() {
        return Err(format!("{script} printed no PEER_JSON line"));
    }
    Ok(v)
}
