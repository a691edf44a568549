//! Reconstruction end to end with the shipped tiny prior, on the CPU and emulated: a chest
//! phantom that training never drew, a sparse cone-beam scan, and the prior with data
//! consistency, judged against the truth and the analytic baseline.
mod common;
use common::*;
use tomodiff::ct::{fbp, siddon::Projector, Geometry};
use tomodiff::diffusion::recon::{memory_estimate, reconstruct, ReconOptions, Start};
use tomodiff::diffusion::sampler::SamplerOptions;
use tomodiff::metrics::psnr;
use tomodiff::nn::{model_files, Arch, UNet, UNetConfig};
use tomodiff::{DType, Device, Tensor};

fn scan(n: usize, views: usize) -> (Geometry, Vec<f32>, Vec<f32>) {
    let g = Geometry::from_json(&tomodiff::ct::geometry::cone_scan_json([n, n, n], views, 360.0)).unwrap();
    let truth = tomodiff::ct::chest::chest(&g.volume, 424_242);
    let mut y = vec![0f32; g.n_rays()];
    tomodiff::ct::siddon::forward_ref(&g, &truth, &mut y).unwrap();
    (g, truth, y)
}

#[test]
fn tiny_prior_reconstructs_a_phantom_on_every_device() {
    let (cfg, w) = model_files::shipped().unwrap();
    let mut devices = vec![Device::Cpu];
    devices.extend(kernel_devices("recon"));
    for dev in devices {
        // The emulator runs the network's kernels one thread at a time: a smaller volume and
        // fewer steps there.
        let emu = matches!(dev, Device::Emu);
        let (n, steps) = if emu { (16, 2) } else { (32, 4) };
        let (g, truth, y) = scan(n, 12);
        let fdk = fbp::fbp(&g, &y, fbp::Window::Hann).unwrap();
        dev.reset_peak_memory();
        let base = dev.memory_stats().map(|m| (m.in_use, m.allocated));
        let net = UNet::new(Arch::new(&cfg), &w, &dev).unwrap();
        let p = Projector::new(g.clone(), &dev).unwrap();
        let yt = Tensor::from_f32(&y, &g.proj_shape(), DType::F32, &dev).unwrap();
        let opts = ReconOptions {
            sampler: SamplerOptions { steps, rounds: 1, batch: 8, seed: 1, ..SamplerOptions::default() },
            start: Start::Noised(400),
            ..ReconOptions::default()
        };
        let mut passes = 0;
        let (mu, stats) = reconstruct(&net, &p, &yt, cfg.intensity(), Some(&fdk), &opts, |k, _| passes = k).unwrap();
        let (pr, pf) = (psnr(&mu, &truth).unwrap(), psnr(&fdk, &truth).unwrap());
        eprintln!("recon {} {n}^3, 12 views: prior {pr:.2} dB, FDK {pf:.2} dB ({:.1} s, projector {:.1} s)", dev.name(), stats.sample.total_s, stats.projector_s);
        assert_eq!((passes, stats.sample.passes), (steps, steps));
        // On kernel devices every pass after the first replays the captured network pass.
        let replayed = if dev.runs_kernels() && opts.sampler.graph { steps - 1 } else { 0 };
        assert_eq!((stats.sample.replayed, &stats.sample.graph_fallback), (replayed, &None), "{}", dev.name());
        assert!(mu.iter().all(|v| v.is_finite()));
        assert!(stats.projector_s > 0.0 && stats.sample.network_s > 0.0);
        assert!(pr > pf + 1.0, "{}: prior {pr:.2} dB vs FDK {pf:.2} dB", dev.name());
        if let (Some(base), Some(m)) = (base, dev.memory_stats()) {
            // What the run took from the memory pool against the estimate `reconstruct` prints:
            // an upper bound, and not a loose one.
            let est = memory_estimate(&cfg, &w, 8, [n; 3], g.n_rays(), &dev).unwrap();
            let (peak, taken) = (m.peak_in_use - base.0, m.allocated - base.1);
            eprintln!("recon {}: {taken} bytes taken, peak {peak} in use, estimate {est}", dev.name());
            assert!(peak <= taken && taken <= est && est < taken + taken / 2, "{}: taken {taken}, estimate {est}", dev.name());
        }
        if emu {
            continue;
        }
        // Same seed, same device: the same volume.
        let (again, _) = reconstruct(&net, &p, &yt, cfg.intensity(), Some(&fdk), &opts, |_, _| {}).unwrap();
        assert_eq!(again, mu, "{}: not reproducible", dev.name());
    }
}

/// The memory estimate that `reconstruct` prints and enforces (a dry run of the network pass,
/// measured): the paper preset at 512x512x256 (8 views) fits in 16 GB, and grows with the batch.
#[test]
fn the_paper_preset_at_512x512x256_fits_in_16_gb() {
    let cfg = tomodiff::nn::UNetConfig::paper();
    let w = tomodiff::nn::Weights::random(&Arch::new(&cfg), 1).unwrap();
    let g = Geometry::from_json(&tomodiff::ct::geometry::cone_scan_json([512, 512, 256], 8, 360.0)).unwrap();
    let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
    let est = |batch| memory_estimate(&cfg, &w, batch, [512, 512, 256], g.n_rays(), &Device::Emu).unwrap();
    eprintln!("paper 512x512x256, 8 views: batch 16 {:.2} GiB, batch 32 {:.2} GiB", gib(est(16)), gib(est(32)));
    assert!(gib(est(16)) < 16.0 && gib(est(16)) > gib(9 * g.volume.len() * 4));
    assert!(est(32) > est(16));
}

/// The shipped prior has learned the phantoms: on a chest that training never drew, its Tweedie
/// estimate x0 from x_t is far closer to the truth than x_t / sqrt(abar) (what a network that
/// learned nothing, eps = 0, gives), at low, middle and high noise.
#[test]
fn the_shipped_prior_denoises_held_out_phantoms() {
    use tomodiff::diffusion::sampler::predict_eps;
    use tomodiff::diffusion::schedule::Schedule;
    use tomodiff::ops::sampler::normal_at;
    let (cfg, w) = model_files::shipped().unwrap();
    let net = UNet::new(Arch::new(&cfg), &w, &Device::Cpu).unwrap();
    let grid = tomodiff::ct::VolumeGrid { shape: [64, 64, 64], voxel_size: [1.0; 3], origin: [0.0; 3] };
    let x0 = tomodiff::diffusion::train::to_model_range(&tomodiff::ct::chest::chest(&grid, 31_337), cfg.intensity(), cfg.clip_x0);
    let sched = Schedule::default();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
    for t in [100usize, 400, 700] {
        let ab = sched.abar[t];
        let xt: Vec<f32> = x0.iter().enumerate().map(|(i, v)| (ab.sqrt() * *v as f64 + (1.0 - ab).sqrt() * normal_at(5, t as u64, i as u64) as f64) as f32).collect();
        let xtt = Tensor::from_f32(&xt, &grid.shape, DType::F32, &Device::Cpu).unwrap();
        let mut eps = Tensor::zeros(&grid.shape, DType::F32, &Device::Cpu).unwrap();
        predict_eps(&net, &xtt, t, 32, &mut rng, &mut eps).unwrap();
        let eps = eps.to_f32_vec().unwrap();
        let mse = |f: &dyn Fn(usize) -> f64| (0..x0.len()).map(|i| (f(i) - x0[i] as f64).powi(2)).sum::<f64>() / x0.len() as f64;
        let naive = mse(&|i| xt[i] as f64 / ab.sqrt());
        let (cx, co) = cfg.prediction.x0_coefficients(ab);
        let model = mse(&|i| cx * xt[i] as f64 - co * eps[i] as f64);
        eprintln!("t {t}: Tweedie MSE {model:.4}, x_t / sqrt(abar) MSE {naive:.4} (ratio {:.3})", model / naive);
        assert!(model < 0.2 * naive, "t {t}: {model} vs {naive}");
    }
}

/// Data outside the prior's range are named with the factor: the same chest scan with its line
/// integrals x10 (1/cm read as 1/mm) against the shipped prior's mu_max.
#[test]
fn data_outside_the_priors_range_are_named() {
    let json = tomodiff::ct::geometry::cone_scan_json([32, 32, 32], 60, 360.0);
    let g = tomodiff::ct::Geometry::from_json(&json).unwrap();
    let vol = tomodiff::ct::phantom::by_name("chest", &g.volume, 3).unwrap();
    let mut proj = vec![0f32; g.n_rays()];
    tomodiff::ct::siddon::forward_ref(&g, &vol, &mut proj).unwrap();
    let fdk = tomodiff::ct::fbp::fbp(&g, &proj, tomodiff::ct::fbp::Window::Hann).unwrap();
    let mu_max = 0.04;
    assert_eq!(tomodiff::diffusion::recon::range_warning(&fdk, mu_max), None);
    let ten: Vec<f32> = proj.iter().map(|p| p * 10.0).collect();
    let w = tomodiff::diffusion::recon::range_warning(&tomodiff::ct::fbp::fbp(&g, &ten, tomodiff::ct::fbp::Window::Hann).unwrap(), mu_max)
        .expect("x10 data are out of range");
    eprintln!("{w}");
    assert!(w.contains("times the prior's range") && w.contains("1/cm"), "{w}");
}

/// The intensity map: the default (mu_min 0) is the old x = 2 mu / mu_max - 1 bit for bit; a
/// z-score map round-trips; configs without the fields read as mu_min 0, clip_x0 true.
#[test]
fn intensity_maps() {
    let cfg = UNetConfig::tiny();
    let m = cfg.intensity();
    for mu in [0.0f32, 0.013, 0.02, 0.04, 0.07] {
        assert_eq!(m.to_model(mu), 2.0 * mu / cfg.mu_max - 1.0);
        assert_eq!(m.to_mu(m.to_model(mu)), (m.to_model(mu) + 1.0) * 0.5 * cfg.mu_max);
    }
    assert_eq!((m.to_mu_affine(), m.to_model_affine()), ((0.5 * cfg.mu_max, 0.5 * cfg.mu_max), (2.0 / cfg.mu_max, -1.0)));
    let z = tomodiff::nn::Intensity { mu_min: 0.015, mu_max: 0.025 }; // mean 0.02, std 0.005
    for mu in [-0.01f32, 0.0, 0.02, 0.05] {
        let ((a, b), (c, d)) = (z.to_mu_affine(), z.to_model_affine());
        assert!((z.to_mu(z.to_model(mu)) - mu).abs() < 1e-7);
        assert!((a * (c * mu + d) + b - mu).abs() < 1e-7);
        assert!((z.to_model(mu) - (mu - 0.02) / 0.005).abs() < 1e-4);
    }
    let json = serde_json::to_string(&cfg).unwrap();
    assert!(!json.contains("mu_min") && !json.contains("clip_x0"), "{json}");
    let z_cfg: UNetConfig = serde_json::from_str(&json.replace("\"mu_max\":0.04", "\"mu_max\":0.025,\"mu_min\":0.015,\"clip_x0\":false")).unwrap();
    assert_eq!((z_cfg.mu_min, z_cfg.clip_x0), (0.015, false));
    z_cfg.validate().unwrap();
    let bad = UNetConfig { mu_min: 0.05, ..UNetConfig::tiny() };
    assert!(bad.validate().unwrap_err().to_string().contains("above mu_min"));
}

/// Progressive sampling (`reconstruct_scan`): a half-resolution run from noise, then the full one
/// from its upsampled estimate. The progress counts both runs' passes in one sequence; the
/// result beats FDK; a volume whose half is smaller than the patch is refused before any work.
#[test]
fn progressive_sampling_runs_coarse_then_fine() {
    use tomodiff::diffusion::recon::{reconstruct_scan, Progressive};
    let (cfg, w) = model_files::shipped().unwrap();
    let (g, truth, y) = scan(48, 8);
    let fdk = fbp::fbp(&g, &y, fbp::Window::Hann).unwrap();
    let opts = ReconOptions {
        sampler: SamplerOptions { steps: 3, rounds: 1, batch: 8, seed: 1, ..SamplerOptions::default() },
        progressive: Some(Progressive::parse("4:300").unwrap()),
        ..ReconOptions::default()
    };
    assert_eq!(opts.passes(), 4 + 3);
    assert_eq!(ReconOptions { samples: 2, ..opts.clone() }.passes(), 14);
    let mut seen = vec![];
    let (mu, stats) = reconstruct_scan(&cfg, &w, &g, &y, None, &opts, &Device::Cpu, None, |k, n| seen.push((k, n))).unwrap();
    assert_eq!(seen, (1..=7).map(|k| (k, 7)).collect::<Vec<_>>());
    assert_eq!(stats.sample.passes, 7);
    let (pp, pf) = (psnr(&mu, &truth).unwrap(), psnr(&fdk, &truth).unwrap());
    eprintln!("progressive 4 coarse + 3 fine passes: {pp:.2} dB, FDK {pf:.2} dB");
    assert!(pp > pf + 3.0, "progressive {pp} vs FDK {pf}");
    let (g2, _, y2) = scan(24, 4);
    let e = reconstruct_scan(&cfg, &w, &g2, &y2, None, &opts, &Device::Cpu, None, |_, _| ()).unwrap_err().to_string();
    assert!(e.contains("half the volume, [12, 12, 12], is smaller than the network's patch"), "{e}");
    for bad in ["4", "0:300", "4:1000", "a:b"] {
        assert!(Progressive::parse(bad).is_err(), "{bad}");
    }
}

/// `samples: 2` is the voxel-wise mean of the runs with seeds s and s + 1 (two different
/// volumes), its progress counts the passes of both, and the mean has a lower error than either
/// run; no samples, or seeds past 2^64, are refused.
#[test]
fn samples_average_the_runs_of_consecutive_seeds() {
    use tomodiff::diffusion::recon::reconstruct_scan;
    let (cfg, w) = model_files::shipped().unwrap();
    let (g, truth, y) = scan(32, 8);
    let one = |seed| ReconOptions { sampler: SamplerOptions { steps: 3, rounds: 1, batch: 8, seed, ..SamplerOptions::default() }, ..ReconOptions::default() };
    let run = |o: &ReconOptions| {
        let mut seen = vec![];
        let (mu, stats) = reconstruct_scan(&cfg, &w, &g, &y, None, o, &Device::Cpu, None, |k, n| seen.push((k, n))).unwrap();
        (mu, stats.sample.passes, seen)
    };
    let ((a, ..), (b, ..)) = (run(&one(5)), run(&one(6)));
    assert!(a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-4), "two seeds, two volumes");
    let (mean, passes, seen) = run(&ReconOptions { samples: 2, ..one(5) });
    assert_eq!((passes, seen), (6, (1..=6).map(|k| (k, 6)).collect::<Vec<_>>()));
    for ((m, x), y) in mean.iter().zip(&a).zip(&b) {
        assert!((m - (x + y) / 2.0).abs() <= 1e-6 * (1.0 + m.abs()), "{m} vs ({x} + {y}) / 2");
    }
    let [pm, pa, pb] = [&mean, &a, &b].map(|v| psnr(v, &truth).unwrap());
    eprintln!("two samples: {pa:.2} and {pb:.2} dB, their mean {pm:.2} dB");
    assert!(pm > pa.max(pb), "mean {pm} vs samples {pa}, {pb}");
    for (bad, needle) in [(ReconOptions { samples: 0, ..one(5) }, "samples must be at least 1"), (ReconOptions { samples: 2, ..one(u64::MAX) }, "lower the seed"), (ReconOptions { samples: usize::MAX, ..one(0) }, "too many")] {
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }
}

/// By default the output is the network's clamped estimate of the last pass (inside the model's
/// range [mu_min, mu_max]); `final_dc` carries that same estimate through one more
/// data-consistency solve, which lowers the data residual.
#[test]
fn final_dc_is_one_more_consistency_solve_on_the_default_output() {
    use tomodiff::diffusion::recon::{data_consistency, reconstruct_scan};
    let (cfg, w) = model_files::shipped().unwrap();
    let (g, _, y) = scan(32, 8);
    let o = ReconOptions { sampler: SamplerOptions { steps: 3, rounds: 2, batch: 8, seed: 3, ..SamplerOptions::default() }, ..ReconOptions::default() };
    assert!(!o.final_dc, "off by default");
    let run = |o: &ReconOptions| reconstruct_scan(&cfg, &w, &g, &y, None, o, &Device::Cpu, None, |_, _| {}).unwrap().0;
    let (plain, dc) = (run(&o), run(&ReconOptions { final_dc: true, ..o.clone() }));
    let map = cfg.intensity();
    assert!(plain.iter().all(|v| (map.mu_min - 1e-7..=map.mu_max + 1e-7).contains(v)), "the clamped estimate");
    let dev = Device::Cpu;
    let p = Projector::new(g.clone(), &dev).unwrap();
    let yt = Tensor::from_f32(&y, &g.proj_shape(), DType::F32, &dev).unwrap();
    let x: Vec<f32> = plain.iter().map(|v| map.to_model(*v)).collect();
    let mut x0 = Tensor::from_f32(&x, &g.volume.shape, DType::F32, &dev).unwrap();
    data_consistency(&p, &yt, &mut x0, map, o.cg_iters, o.gamma).unwrap();
    let by_hand: Vec<f32> = x0.to_f32_vec().unwrap().iter().map(|v| map.to_mu(*v)).collect();
    let worst = by_hand.iter().zip(&dc).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-5 * map.mu_max, "final_dc differs from one solve on the default output by {worst}");
    let residual = |mu: &[f32]| {
        let mut r = vec![0f32; g.n_rays()];
        tomodiff::ct::siddon::forward_ref(&g, mu, &mut r).unwrap();
        r.iter().zip(&y).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt()
    };
    let (rp, rd) = (residual(&plain), residual(&dc));
    eprintln!("data residual: {rp:.4} without the last solve, {rd:.4} with it");
    assert!(rd < rp, "{rd} vs {rp}");
}
