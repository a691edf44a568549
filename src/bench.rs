//! Benchmarks (never asserted in tests): time, achieved rate, and the floor — the counted work
//! over the device's peak — so every figure says how far it is from the hardware's limit.
use crate::device::{Device, GpuTimer};
use crate::error::Result;
use crate::ops::gemm;
use crate::tensor::{DType, Tensor};
use rand::{Rng, SeedableRng};
use std::time::Instant;

/// Repeated measurements of one piece of work: the median is the figure, min and max the spread.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Timing {
    pub median_s: f64,
    pub min_s: f64,
    pub max_s: f64,
    pub runs: usize,
}

impl Timing {
    fn of(mut times: Vec<f64>) -> Timing {
        times.sort_by(f64::total_cmp);
        let n = times.len();
        let median = if n % 2 == 1 { times[n / 2] } else { 0.5 * (times[n / 2 - 1] + times[n / 2]) };
        Timing { median_s: median, min_s: times[0], max_s: times[n - 1], runs: n }
    }

    /// "median of N runs, min .. max (spread %)", for the line under a row.
    pub fn line(&self) -> String {
        format!(
            "median of {} runs; min {:.3} ms, max {:.3} ms (spread {:.1}%)",
            self.runs,
            self.min_s * 1e3,
            self.max_s * 1e3,
            100.0 * (self.max_s - self.min_s) / self.median_s
        )
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub what: String,
    pub device: String,
    /// The median of `timing`.
    pub seconds: f64,
    pub timing: Timing,
    pub flops: f64,
    /// Peak FLOP/s of the device for this work, when known.
    pub peak: Option<f64>,
    pub peak_note: String,
}

impl Row {
    pub fn floor_seconds(&self) -> Option<f64> {
        self.peak.map(|p| self.flops / p)
    }
    pub fn line(&self) -> String {
        let rate = self.flops / self.seconds;
        let (floor, pct) = match self.floor_seconds() {
            Some(f) => (format!("{:.3} ms", f * 1e3), format!("{:.1}%", 100.0 * f / self.seconds)),
            None => ("unknown".into(), "-".into()),
        };
        format!(
            "{:<18} {:<8} {:>10.3} ms {:>10.1} GFLOP/s   floor {:>12}  {:>6} of peak ({})",
            self.what,
            self.device,
            self.seconds * 1e3,
            rate / 1e9,
            floor,
            pct,
            self.peak_note
        )
    }
}

/// Dense bf16 tensor-core peak of known GPUs (datasheet, dense, FLOP/s).
fn gpu_bf16_peak(name: &str) -> Option<(f64, &'static str)> {
    let n = name.to_ascii_uppercase();
    if n.contains("H100") || n.contains("H200") || n.contains("GH200") {
        Some((989e12, "H100/H200 SXM datasheet 989 TFLOP/s; ~800 measured"))
    } else if n.contains("A100") {
        Some((312e12, "A100 datasheet 312 TFLOP/s"))
    } else {
        None
    }
}

/// f32 FMA peak of this CPU, estimated from /proc/cpuinfo: threads x reported clock x FLOP/cycle
/// (64 with AVX-512, 32 with AVX2+FMA, else 8). The reported clock is often the base clock, so
/// the figure is an estimate; boost clocks can beat it.
pub fn cpu_f32_peak(threads: usize) -> Option<(f64, String)> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info.lines().find(|l| l.starts_with("cpu MHz"))?.split(':').nth(1)?.trim().parse().ok()?;
    let has = |f: &str| info.split_whitespace().any(|w| w == f);
    let per_cycle = if has("avx512f") { 64.0 } else if has("fma") && has("avx2") { 32.0 } else { 8.0 };
    let nominal = threads as f64 * mhz * 1e6 * per_cycle;
    // The nominal clock undersells a core that boosts: where AVX2 FMA runs, the peak is measured.
    match measured_fma_peak().map(|per_thread| per_thread * threads as f64) {
        Some(p) if p > nominal => Some((p, format!("measured FMA peak of {threads} threads; nominal {threads} x {mhz:.0} MHz x {per_cycle} FLOP/cycle = {:.0} GFLOP/s", nominal / 1e9))),
        _ => Some((nominal, format!("{threads} threads x {mhz:.0} MHz x {per_cycle} FLOP/cycle"))),
    }
}

/// FLOP/s per thread of independent AVX2 FMA chains run on every rayon thread at once (best of
/// three runs of about 20 ms), measured once per process; None without AVX2/FMA.
fn measured_fma_peak() -> Option<f64> {
    static PEAK: std::sync::OnceLock<Option<f64>> = std::sync::OnceLock::new();
    *PEAK.get_or_init(|| {
        if !crate::ops::cpu::avx2() {
            return None;
        }
        use rayon::prelude::*;
        const ITERS: u64 = 1 << 20;
        let threads = rayon::current_num_threads();
        (0..3)
            .map(|_| {
                let t0 = Instant::now();
                let sink: f32 = (0..threads).into_par_iter().map(|i| fma_chains(ITERS, i as f32)).sum();
                std::hint::black_box(sink);
                (ITERS * 12 * 16) as f64 / t0.elapsed().as_secs_f64()
            })
            .reduce(f64::max)
    })
}

/// 12 independent chains of 8-wide FMAs, `iters` times: 192 FLOP an iteration.
#[cfg(target_arch = "x86_64")]
fn fma_chains(iters: u64, seed: f32) -> f32 {
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run(iters: u64, seed: f32) -> f32 {
        use std::arch::x86_64::*;
        let a = _mm256_set1_ps(0.999_999);
        let b = _mm256_set1_ps(1e-7);
        let mut acc = [_mm256_set1_ps(seed); 12];
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm256_fmadd_ps(*v, a, b);
            }
        }
        let mut out = [0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), acc.iter().fold(_mm256_setzero_ps(), |s, v| _mm256_add_ps(s, *v)));
        out.iter().sum()
    }
    // SAFETY: only called where ops::cpu::avx2() found the features.
    unsafe { run(iters, seed) }
}

#[cfg(not(target_arch = "x86_64"))]
fn fma_chains(_: u64, _: f32) -> f32 {
    0.0
}

/// The peak this device reaches on the work measured: dense bf16 on GPUs, f32 FMA on the CPU
/// (one core for the emulator), with a note saying where the figure comes from.
fn device_peak(dev: &Device) -> (Option<f64>, String) {
    match dev {
        Device::Cuda(d) => match gpu_bf16_peak(&d.info().name) {
            Some((p, note)) => (Some(p), note.to_string()),
            None => (None, format!("peak of {} unknown", d.info().name)),
        },
        Device::Cpu => cpu_f32_peak(rayon::current_num_threads()).map_or((None, "cpu peak unknown".into()), |(p, s)| (Some(p), s)),
        Device::Emu => cpu_f32_peak(1).map_or((None, "cpu peak unknown".into()), |(p, s)| (Some(p), format!("emulated, {s}"))),
    }
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Times `f` (after one warm-up call): CUDA events on a GPU, wall clock elsewhere. Repeats until
/// about `budget` seconds are spent and at least MIN_RUNS runs are done.
fn time(dev: &Device, budget: f64, mut f: impl FnMut() -> Result<()>) -> Result<Timing> {
    const MIN_RUNS: usize = 5;
    f()?;
    dev.synchronize()?;
    let mut times = Vec::new();
    let mut total = 0.0;
    while total < budget || times.len() < MIN_RUNS {
        let t = match dev {
            Device::Cuda(d) => {
                let timer = GpuTimer::start(d)?;
                f()?;
                timer.stop()?
            }
            _ => {
                let t0 = Instant::now();
                f()?;
                t0.elapsed().as_secs_f64()
            }
        };
        total += t;
        times.push(t);
    }
    Ok(Timing::of(times))
}

/// C = A B for an n x n x n problem: bf16 tensor cores on emu/cuda, f32 on the CPU.
pub fn gemm(dev: &Device, n: usize) -> Result<Row> {
    let dtype = if dev.runs_kernels() { DType::BF16 } else { DType::F32 };
    let a = Tensor::from_f32(&random(n * n, 1), &[n, n], dtype, dev)?;
    let b = Tensor::from_f32(&random(n * n, 2), &[n, n], dtype, dev)?;
    let mut c = Tensor::zeros(&[n, n], DType::F32, dev)?;
    let budget = if matches!(dev, Device::Cuda(_)) { 0.5 } else { 2.0 };
    let timing = time(dev, budget, || gemm::matmul(&a, &b, &mut c))?;
    let seconds = timing.median_s;
    let (peak, peak_note) = device_peak(dev);
    Ok(Row {
        what: format!("gemm {n}^3 {}", if dev.runs_kernels() { "bf16" } else { "f32" }),
        device: dev.name(),
        seconds,
        timing,
        flops: 2.0 * (n as f64).powi(3),
        peak,
        peak_note,
    })
}

/// Siddon projector throughput: rays/s and voxel intersections/s, forward and adjoint.
/// Cases: `parallel2d` (one 512x512 slice, 360 views x 768 columns over 180 degrees: the issue's
/// CPU comparison with ASTRA's 'line' projector) and `cone` (512x512x256 to 360 views of 512x768).
pub fn projector(dev: &Device, case: &str) -> Result<Vec<ProjectorRow>> {
    use crate::ct::{phantom, siddon, Geometry};
    let json = match case {
        "parallel2d" => r#"{"volume": {"shape": [1, 512, 512]}, "scan": {"type": "parallel", "n_views": 360, "det_shape": [1, 768]}}"#,
        "cone" => r#"{"volume": {"shape": [256, 512, 512]}, "scan": {"type": "cone", "n_views": 360, "source_origin": 1000,
            "origin_detector": 500, "det_shape": [512, 768], "det_spacing": [1.2, 1.2]}}"#,
        _ => return Err(crate::Error::Shape(format!("unknown projector case {case:?}: expected parallel2d or cone"))),
    };
    let g = Geometry::from_json(json)?;
    let vol = phantom::voxelize(&phantom::shepp_logan(phantom::SheppLogan::YuYeWang), &g.volume, 1);
    // Intersections counted on a sample of rays (every 101st) and scaled.
    let [rows, cols] = g.det_shape;
    let mut sampled = 0usize;
    let mut hits = 0usize;
    for ray in (0..g.n_rays()).step_by(101) {
        let (v, r, c) = (ray / (rows * cols), (ray / cols) % rows, ray % cols);
        siddon::trace(&g.volume, g.ray(v, r, c), 0, g.volume.shape[0], |_, _| hits += 1);
        sampled += 1;
    }
    let intersections = hits as f64 * g.n_rays() as f64 / sampled as f64;
    let p = siddon::Projector::new(g.clone(), dev)?;
    let vt = Tensor::from_f32(&vol, &g.volume.shape, DType::F32, dev)?;
    let mut pt = Tensor::zeros(&g.proj_shape(), DType::F32, dev)?;
    let budget = if matches!(dev, Device::Cuda(_)) { 1.0 } else { 3.0 };
    let fwd = time(dev, budget, || p.forward(&vt, &mut pt))?;
    let mut back = Tensor::zeros(&g.volume.shape, DType::F32, dev)?;
    let adj = time(dev, budget, || p.adjoint(&pt, &mut back))?;
    let rays = g.n_rays() as f64;
    Ok([("forward", fwd), ("adjoint", adj)]
        .into_iter()
        .map(|(what, timing)| ProjectorRow { case: case.into(), direction: what.into(), device: dev.name(), timing, rays, intersections })
        .collect())
}

/// One direction of `projector`: rays/s and voxel intersections/s at the median time.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProjectorRow {
    pub case: String,
    pub direction: String,
    pub device: String,
    pub timing: Timing,
    pub rays: f64,
    pub intersections: f64,
}

impl ProjectorRow {
    pub fn line(&self) -> String {
        let s = self.timing.median_s;
        format!(
            "projector {:<10} {:<8} {:<8} {:>10.3} s  {:>8.2} M rays/s  {:>8.1} M intersections/s",
            self.case,
            self.direction,
            self.device,
            s,
            self.rays / s / 1e6,
            self.intersections / s / 1e6
        )
    }
}

/// One U-Net forward over a batch of patches (random weights and inputs): patches/s and achieved
/// FLOP/s against the device's peak (f32 FMA on the CPU, dense bf16 on GPUs).
pub fn unet(dev: &Device, cfg: &crate::nn::UNetConfig, batch: usize) -> Result<Row> {
    use crate::nn::{Arch, UNet, Weights};
    cfg.validate()?;
    let arch = Arch::new(cfg);
    let flops = arch.total_flops() * batch as f64;
    let net = UNet::new(arch, &Weights::random(&Arch::new(cfg), 7)?, dev)?;
    let p = cfg.patch;
    let x = Tensor::from_f32(&random(batch * p.iter().product::<usize>() * cfg.in_channels, 3), &[batch, p[0], p[1], p[2], cfg.in_channels], net.act_dtype(), dev)?;
    let t = Tensor::from_f32(&(0..batch).map(|i| (i * 997 % 1000) as f32).collect::<Vec<_>>(), &[batch], DType::F32, dev)?;
    let budget = if matches!(dev, Device::Cuda(_)) { 1.0 } else { 3.0 };
    let timing = time(dev, budget, || net.forward(&x, &t, None).map(|_| ()))?;
    let seconds = timing.median_s;
    let (peak, peak_note) = device_peak(dev);
    Ok(Row {
        what: format!("unet {}x{:?} ({:.1} patches/s)", batch, p, batch as f64 / seconds),
        device: dev.name(),
        seconds,
        timing,
        flops,
        peak,
        peak_note,
    })
}

/// One training step over a batch of patches (random weights, inputs and targets): forward,
/// backward and the optimiser (AdamW and EMA on the device, the network's weights refreshed):
/// patches/s and achieved FLOP/s, counting the backward as twice the forward.
pub fn train(dev: &Device, cfg: &crate::nn::UNetConfig, batch: usize) -> Result<Row> {
    use crate::nn::optim::{AdamConfig, Optimizer};
    use crate::nn::{Arch, UNet, Weights};
    cfg.validate()?;
    let arch = Arch::new(cfg);
    let flops = 3.0 * arch.total_flops() * batch as f64;
    let w = Weights::random(&arch, 7)?;
    let mut net = UNet::new(arch.clone(), &w, dev)?;
    let map = w.engine_map();
    let mut opt = Optimizer::from_maps(&arch, [&map, &map, &Default::default(), &Default::default()])?;
    opt.to_device(dev)?;
    let p = cfg.patch;
    let pv: usize = p.iter().product();
    let x = Tensor::from_f32(&random(batch * pv * cfg.in_channels, 3), &[batch, p[0], p[1], p[2], cfg.in_channels], net.act_dtype(), dev)?;
    let t = Tensor::from_f32(&(0..batch).map(|i| (i * 997 % 1000) as f32).collect::<Vec<_>>(), &[batch], DType::F32, dev)?;
    let target = random(batch * pv * cfg.out_channels, 4);
    let budget = if matches!(dev, Device::Cuda(_)) { 1.0 } else { 3.0 };
    let adam = AdamConfig::default();
    let mut step = 0;
    let timing = time(dev, budget, || {
        let (_, grads) = net.mse_backward(&x, &t, &target)?;
        step += 1;
        opt.apply(&adam, step, &grads, &mut net).map(|_| ())
    })?;
    let (peak, peak_note) = device_peak(dev);
    let seconds = timing.median_s;
    Ok(Row { what: format!("train {}x{:?} ({:.2} patches/s)", batch, p, batch as f64 / seconds), device: dev.name(), seconds, timing, flops, peak, peak_note })
}

/// What `bench recon` reconstructs: a chest phantom of `shape` (1 mm voxels) from `views` cone-beam
/// views, with random weights (the work, not the quality, is measured).
#[derive(Clone, Debug)]
pub struct ReconCase {
    pub shape: [usize; 3],
    pub views: usize,
    pub steps: usize,
    pub rounds: usize,
    pub cg_iters: usize,
    pub batch: usize,
    /// Replay the network pass from a captured graph (emu, cuda).
    pub graph: bool,
}

/// One reconstruction: wall time, network passes per second, and the split (network,
/// projector, CG's vector work, the rest), with the network's floor (its FLOPs over the peak).
pub fn recon(dev: &Device, cfg: &crate::nn::UNetConfig, case: &ReconCase) -> Result<String> {
    use crate::diffusion::recon::{reconstruct, ReconOptions};
    use crate::diffusion::sampler::SamplerOptions;
    use crate::nn::{Arch, UNet, Weights};
    cfg.validate()?;
    let g = crate::ct::Geometry::from_json(&crate::ct::geometry::cone_scan_json(case.shape, case.views, 360.0))?;
    let arch = Arch::new(cfg);
    let flops_per_patch = arch.total_flops();
    let w = Weights::random(&Arch::new(cfg), 7)?;
    let estimate = crate::diffusion::recon::memory_estimate(cfg, &w, case.batch, case.shape, g.n_rays(), dev)?;
    dev.reset_peak_memory();
    let net = UNet::new(arch, &w, dev)?;
    let p = crate::ct::siddon::Projector::new(g.clone(), dev)?;
    let truth = crate::ct::chest::chest(&g.volume, 1);
    let vol = Tensor::from_f32(&truth, &g.volume.shape, DType::F32, dev)?;
    let mut y = Tensor::zeros(&g.proj_shape(), DType::F32, dev)?;
    p.forward(&vol, &mut y)?;
    drop(vol);
    let opts = ReconOptions {
        sampler: SamplerOptions { steps: case.steps, rounds: case.rounds, batch: case.batch, graph: case.graph, ..SamplerOptions::default() },
        cg_iters: case.cg_iters,
        ..ReconOptions::default()
    };
    let (_, s) = reconstruct(&net, &p, &y, cfg.intensity(), None, &opts, |_, _| {})?;
    let patches = crate::diffusion::tiling::tiling(case.shape, cfg.patch, [0; 3]).len();
    let net_flops = flops_per_patch * (patches * s.sample.passes) as f64;
    let (peak, note) = device_peak(dev);
    let floor = peak.map(|pk| format!("{:.2} s ({note})", net_flops / pk)).unwrap_or_else(|| "unknown".into());
    let t = &s.sample;
    let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
    let memory = match dev.memory_stats() {
        Some(m) => format!("memory {:.2} GiB taken (peak {:.2} GiB in use), estimate {:.2} GiB", gib(m.allocated), gib(m.peak_in_use), gib(estimate)),
        None => format!("memory estimate {:.2} GiB", gib(estimate)),
    };
    Ok(format!(
        "recon {:?} {} views, {} steps x {} rounds, {} CG, batch {} on {}: {:.2} s, {:.3} passes/s ({} patches per pass); \
         network {:.2} s ({:.1} GFLOP/s, floor {floor}), projector {:.2} s, CG vectors {:.2} s, rest {:.2} s; {}; {memory}",
        case.shape,
        case.views,
        case.steps,
        case.rounds,
        case.cg_iters,
        case.batch,
        dev.name(),
        t.total_s,
        t.passes as f64 / t.total_s,
        patches,
        t.network_s,
        net_flops / t.network_s / 1e9,
        s.projector_s,
        (t.hook_s - s.projector_s).max(0.0),
        (t.total_s - t.network_s - t.hook_s).max(0.0),
        t.graph_note()
    ))
}
