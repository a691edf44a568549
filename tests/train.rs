//! Training on the CPU: a fixed batch is overfitted, and a resumed run is bit-identical.
mod common;
use common::*;
use tomodiff::diffusion::train::{Data, TrainOptions, Trainer};
use tomodiff::nn::optim::{AdamConfig, Optimizer};
use tomodiff::ops::adamw::adamw;
use tomodiff::nn::{Arch, Prediction, UNet, UNetConfig, Weights};
use tomodiff::{DType, Device, Tensor};

fn small() -> UNetConfig {
    UNetConfig { patch: [8, 8, 8], ..UNetConfig::tiny() }
}

#[test]
fn a_fixed_batch_is_overfitted() {
    let mut rng = rng("overfit");
    let cfg = small();
    let arch = Arch::new(&cfg);
    let w = Weights::random(&arch, 1).unwrap();
    let cpu = Device::Cpu;
    let map = w.engine_map();
    // The optimiser refreshes the network's weights in place after each update: the network is
    // built once.
    let mut opt = Optimizer::from_maps(&arch, [&map, &map, &Default::default(), &Default::default()]).unwrap();
    let mut net = UNet::new(arch.clone(), &w, &cpu).unwrap();
    let x = uniform(&mut rng, 2 * 512 * 5, -1.0, 1.0);
    let target = uniform(&mut rng, 2 * 512, -1.0, 1.0);
    let xt = Tensor::from_f32(&x, &[2, 8, 8, 8, 5], DType::F32, &cpu).unwrap();
    let tt = Tensor::from_f32(&[100.0, 800.0], &[2], DType::F32, &cpu).unwrap();
    let adam = AdamConfig { lr: 2e-3, warmup_steps: 0, clip_norm: 0.0, ..AdamConfig::default() };
    let mut first = 0.0;
    let mut last = 0.0;
    for step in 0..150 {
        let (loss, grads) = net.mse_backward(&xt, &tt, &target).unwrap();
        if step == 0 {
            first = loss;
        }
        last = loss;
        if loss < first / 10.0 {
            eprintln!("overfit: loss {first:.4} -> {loss:.4} in {step} steps");
            return;
        }
        opt.apply(&adam, step + 1, &grads, &mut net).unwrap();
    }
    panic!("loss {first} -> {last}: not tenfold in 150 steps");
}

fn opts() -> TrainOptions {
    TrainOptions {
        batch: 2,
        seed: 5,
        adam: AdamConfig { lr: 1e-3, warmup_steps: 2, ..AdamConfig::default() },
        data: Data::Phantom { name: "ellipsoids".into(), shape: [12, 12, 12], supersample: 1 },
        units: tomodiff::diffusion::train::Units::Hu,
    }
}

#[test]
fn resumed_run_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Trainer::new(&small(), opts(), vec![]).unwrap();
    for _ in 0..4 {
        a.step().unwrap();
    }
    let mut b = Trainer::new(&small(), opts(), vec![]).unwrap();
    for _ in 0..2 {
        b.step().unwrap();
    }
    b.save_checkpoint(dir.path()).unwrap();
    b.step().unwrap(); // work after the checkpoint is lost with the "crash"
    let mut c = Trainer::resume(dir.path(), vec![]).unwrap();
    assert_eq!(c.step, 2);
    for _ in 0..2 {
        c.step().unwrap();
    }
    assert_eq!(a.step, c.step);
    assert!(a.params().unwrap() == c.params().unwrap(), "parameters differ after resume");
    assert!(a.ema().unwrap() == c.ema().unwrap() && a.moments().unwrap() == c.moments().unwrap(), "EMA or optimizer state differ");
    // Only the newest checkpoint's tensors remain beside the JSON.
    c.save_checkpoint(dir.path()).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, vec!["checkpoint.json", "ckpt-00000004.safetensors"]);
}

#[test]
fn batches_follow_the_method() {
    let t = Trainer::new(&small(), opts(), vec![]).unwrap();
    let (x, target, ts) = t.batch(3).unwrap();
    assert_eq!((x.len(), target.len(), ts.len()), (2 * 512 * 5, 2 * 512, 2));
    assert!(ts.iter().all(|t| (0.0..1000.0).contains(t)));
    // Same step, same batch; another step, another batch.
    assert_eq!(t.batch(3).unwrap().0, x);
    assert_ne!(t.batch(4).unwrap().0, x);
    // Where the patch lies in the padding, both the noisy input and the target are zero, and
    // the positional channels leave [-1, 1].
    for (i, v) in x.chunks(5).enumerate() {
        let outside = v[2..].iter().any(|p| p.abs() > 1.0 + 1e-6);
        if outside {
            assert_eq!((v[0], target[i]), (0.0, 0.0));
        }
    }
}

/// With v-prediction the batch is the same draw (volumes, t, noise, starts) with the target
/// v = sqrt(abar) eps - sqrt(1 - abar) x0, x0 recovered from the input and the eps target.
#[test]
fn v_targets_follow_from_the_same_draw() {
    let v_cfg = UNetConfig { prediction: Prediction::V, ..small() };
    let (e, v) = (Trainer::new(&small(), opts(), vec![]).unwrap(), Trainer::new(&v_cfg, opts(), vec![]).unwrap());
    let ((x, eps, ts), (xv, vt, tv)) = (e.batch(7).unwrap(), v.batch(7).unwrap());
    assert_eq!((&x, &ts), (&xv, &tv));
    let sched = tomodiff::diffusion::schedule::Schedule::default();
    let mut worst = 0f64;
    for (i, want) in vt.iter().enumerate() {
        let ab = sched.abar[ts[i / 512] as usize];
        let (sa, sb) = (ab.sqrt(), (1.0 - ab).sqrt());
        let x0 = (x[i * 5] as f64 - sb * eps[i] as f64) / sa;
        worst = worst.max((sa * eps[i] as f64 - sb * x0 - *want as f64).abs());
        // and the sampler's coefficients map (x_t, v) back to x0
        let (cx, co) = Prediction::V.x0_coefficients(ab);
        assert!((cx * x[i * 5] as f64 - co * *want as f64 - x0).abs() < 1e-3 / sa.max(1e-3), "x0 at {i}");
    }
    assert!(worst < 1e-4, "v target off by {worst}");
    assert!(vt != eps, "the targets differ");
}

/// Fine-tuning starts from the given weights, with the EMA equal to them.
#[test]
fn a_run_starts_from_given_weights() {
    let arch = Arch::new(&small());
    let w = Weights::random(&arch, 77).unwrap();
    let t = Trainer::from_weights(&UNetConfig { prediction: Prediction::V, ..small() }, opts(), vec![], &w).unwrap();
    assert!(t.params().unwrap() == w.engine_map() && t.ema().unwrap() == w.engine_map());
    assert!(Trainer::new(&small(), opts(), vec![]).unwrap().params().unwrap() != w.engine_map());
}

#[test]
fn emulated_training_steps_follow_the_cpu() {
    // The same first step on emu (bf16 forward and backward) and on the CPU (f32): the losses
    // agree, and both runs move the weights.
    let mut o = opts();
    o.batch = 1;
    let mut a = Trainer::new(&small(), o.clone(), vec![]).unwrap();
    let mut b = Trainer::new(&small(), o, vec![]).unwrap();
    b.set_device(&Device::Emu).unwrap();
    let w0 = a.params().unwrap();
    for step in 0..3 {
        let (la, lb) = (a.step().unwrap().loss, b.step().unwrap().loss);
        eprintln!("step {step}: cpu loss {la:.5}, emu loss {lb:.5}");
        assert!((la - lb).abs() < 2e-2 * la, "step {step}: cpu loss {la}, emu loss {lb}");
    }
    // The device-resident optimiser moves the weights as the CPU's does: after three steps the
    // two runs' weights differ from the start by nearly the same amount, and from each other by
    // far less (bf16 gradients).
    let (pa, pb) = (a.params().unwrap(), b.params().unwrap());
    let dist = |x: &std::collections::BTreeMap<String, Vec<f32>>, y: &std::collections::BTreeMap<String, Vec<f32>>| {
        x.iter().map(|(k, v)| v.iter().zip(&y[k]).map(|(p, q)| ((p - q) as f64).powi(2)).sum::<f64>()).sum::<f64>().sqrt()
    };
    let (moved_a, moved_b, apart) = (dist(&pa, &w0), dist(&pb, &w0), dist(&pa, &pb));
    eprintln!("moved: cpu {moved_a:.4}, emu {moved_b:.4}; apart {apart:.4}");
    assert!(moved_a > 0.0 && (moved_a - moved_b).abs() < 0.1 * moved_a && apart < 0.5 * moved_a);
    // The EMA on the device follows its warm-up, as on the CPU.
    let (ea, eb) = (a.ema().unwrap(), b.ema().unwrap());
    assert!(dist(&ea, &eb) < 0.5 * dist(&ea, &w0).max(1e-9));
}

#[test]
fn ema_warms_up() {
    // Step 1 averages with decay min(0.999, 2 / 11): the EMA is mostly the new weights, not the
    // random initialisation.
    let mut t = Trainer::new(&small(), opts(), vec![]).unwrap();
    let init = t.params().unwrap();
    t.step().unwrap();
    let d = 2.0f32 / 11.0;
    let now = t.params().unwrap();
    for (name, e) in &t.ema().unwrap() {
        let (p0, p1) = (&init[name], &now[name]);
        for i in 0..e.len().min(50) {
            let want = d * p0[i] + (1.0 - d) * p1[i];
            assert!((e[i] - want).abs() <= 1e-6 * want.abs().max(1.0), "{name}[{i}]: {} vs {want}", e[i]);
        }
    }
}

#[test]
fn adamw_kernel_matches_reference() {
    let mut rng = rng("adamw");
    for dev in kernel_devices("adamw") {
        for (n, step, gscale) in [(1usize, 1u64, 1.0f32), (1000, 7, 0.3), (70_001, 300, 1.0)] {
            let cfg = AdamConfig { weight_decay: 0.01, warmup_steps: 10, ..AdamConfig::default() };
            let st = cfg.step(step, gscale);
            let (p, g, m, e) = (uniform(&mut rng, n, -1.0, 1.0), uniform(&mut rng, n, -2.0, 2.0), uniform(&mut rng, n, -0.1, 0.1), uniform(&mut rng, n, -1.0, 1.0));
            let v = uniform(&mut rng, n, 0.0, 0.01);
            let (mut wp, mut wm, mut wv, mut we) = (p.clone(), m.clone(), v.clone(), e.clone());
            tomodiff::ops::adamw::adamw_ref(&st, &mut wp, &g, &mut wm, &mut wv, &mut we);
            let t = |x: &[f32]| Tensor::from_f32(x, &[n], DType::F32, &dev).unwrap();
            let (mut tp, mut tm, mut tv, mut te) = (t(&p), t(&m), t(&v), t(&e));
            adamw(&st, &mut tp, &t(&g), &mut tm, &mut tv, &mut te).unwrap();
            for (what, got, want) in [("p", &tp, &wp), ("m", &tm, &wm), ("v", &tv, &wv), ("ema", &te, &we)] {
                let got = got.to_f32_vec().unwrap();
                assert_close(&format!("adamw {what} {} n={n}", dev.name()), &got, want, |i| 1e-6 * (1.0 + want[i].abs()));
            }
        }
    }
}

/// Folder volumes in HU and in mu reach the model's range through the config's mu_max, the same
/// map as phantoms: HU +1000 (mu 0.0386 /mm) is not clipped to 1 as the old window did, and the
/// trainer holds x = 2 mu / mu_max - 1.
#[test]
fn folder_volumes_map_through_mu_max() {
    use tomodiff::diffusion::train::{load_folder, Units};
    let dir = tempfile::tempdir().unwrap();
    let hu: Vec<f32> = (0..8 * 8 * 8).map(|i| -1000.0 + (i % 5) as f32 * 500.0).collect();
    tomodiff::io::nifti::write(&dir.path().join("a.nii"), &[8, 8, 8], &hu, [2.0, 2.0, 2.0]).unwrap();
    let v = load_folder(dir.path(), Units::Hu, None).unwrap();
    let mu = &v[0].2;
    assert!((mu[0] - 0.0).abs() < 1e-7 && (mu[2] - 0.0193).abs() < 1e-6 && (mu[4] - 0.0386).abs() < 1e-6, "{:?}", &mu[..5]);
    let x = tomodiff::diffusion::train::to_model_range(mu, UNetConfig::tiny().intensity(), true);
    assert!((x[4] - (2.0 * 0.0386 / 0.04 - 1.0)).abs() < 1e-5, "HU +1000 -> {}", x[4]);
    let as_mu = load_folder(dir.path(), Units::Mu, None).unwrap();
    assert_eq!(as_mu[0].2, hu, "mu files are taken as they are");
    let half = load_folder(dir.path(), Units::Hu, Some([4.0, 4.0, 4.0])).unwrap();
    assert_eq!(half[0].1, [4, 4, 4], "2 mm voxels resampled to 4 mm");
    let e = load_folder(dir.path(), Units::Hu, Some([0.001, 0.001, 0.001])).unwrap_err().to_string();
    assert!(e.contains("a.nii") && e.contains("choose a larger voxel size"), "refused before allocating: {e}");
    assert!(tomodiff::diffusion::train::Units::parse("kelvin").is_err());
}

/// The thorax anatomy as a training stream: drawn at its default voxel size (the body in view),
/// mapped by the small preset's intensity map (dense bone inside [-1, 1]), and the step runs.
#[test]
fn thorax_phantoms_train_the_small_preset() {
    let cfg = UNetConfig { patch: [8, 8, 8], ..UNetConfig::small() };
    assert!((cfg.mu_max - tomodiff::ct::units::hu_to_mu(2000.0)).abs() < 1e-7);
    let o = TrainOptions { data: Data::Phantom { name: "thorax".into(), shape: [16, 16, 16], supersample: 2 }, ..opts() };
    let mut t = Trainer::new(&cfg, o, vec![]).unwrap();
    let (x, _, _) = t.batch(0).unwrap();
    assert_eq!(t.batch(0).unwrap().0, x, "a step's batch is a function of (seed, step)");
    assert_ne!(t.batch(1).unwrap().0, x);
    // Channel 1 is the global context (the whole volume resized): it holds air (-1) and tissue.
    let ctx: Vec<f32> = x.chunks(5).map(|c| c[1]).collect();
    let (lo, hi) = ctx.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert!(lo < -0.9 && hi > -0.4 && hi <= 1.0, "context range {lo}..{hi}");
    assert!(t.step().unwrap().loss.is_finite());
}

/// Checkpoints written before `supersample` existed read as 1 (each sample its own voxel-centre
/// volume), so those runs resume with the stream they had; new runs record theirs.
#[test]
fn phantom_data_without_supersample_reads_as_voxel_centres() {
    let old: Data = serde_json::from_str(r#"{"Phantom": {"name": "thorax", "shape": [64, 64, 64]}}"#).unwrap();
    assert_eq!(old, Data::Phantom { name: "thorax".into(), shape: [64, 64, 64], supersample: 1 });
    let new = Data::Phantom { name: "thorax".into(), shape: [64, 64, 64], supersample: 2 };
    assert_eq!(serde_json::from_str::<Data>(&serde_json::to_string(&new).unwrap()).unwrap(), new);
}
