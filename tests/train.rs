//! Training on the CPU: a fixed batch is overfitted, and a resumed run is bit-identical.
mod common;
use common::*;
use tomodiff::diffusion::train::{Data, TrainOptions, Trainer};
use tomodiff::nn::optim::{AdamConfig, AdamState, Grads};
use tomodiff::nn::{Arch, UNet, UNetConfig, Weights};
use tomodiff::{DType, Device, Tensor};

fn small() -> UNetConfig {
    UNetConfig { patch: [8, 8, 8], ..UNetConfig::tiny() }
}

#[test]
fn a_fixed_batch_is_overfitted() {
    let mut rng = rng("overfit");
    let cfg = small();
    let arch = Arch::new(&cfg);
    let mut params = Weights::random(&arch, 1).unwrap().engine_map();
    let x = uniform(&mut rng, 2 * 512 * 5, -1.0, 1.0);
    let target = uniform(&mut rng, 2 * 512, -1.0, 1.0);
    let t = [100.0, 800.0];
    let adam = AdamConfig { lr: 2e-3, warmup_steps: 0, clip_norm: 0.0, ..AdamConfig::default() };
    let mut state = AdamState::default();
    let mut first = 0.0;
    let mut last = 0.0;
    for step in 0..150 {
        let net = UNet::new(arch.clone(), &Weights::from_engine(&arch, &params).unwrap(), &Device::Cpu).unwrap();
        let xt = Tensor::from_f32(&x, &[2, 8, 8, 8, 5], DType::F32, &Device::Cpu).unwrap();
        let tt = Tensor::from_f32(&t, &[2], DType::F32, &Device::Cpu).unwrap();
        let (loss, tg) = net.mse_backward(&xt, &tt, &target).unwrap();
        let g: Grads = tg.into_iter().map(|(k, v)| (k, v.to_f32_vec().unwrap())).collect();
        if step == 0 {
            first = loss;
        }
        last = loss;
        if loss < first / 10.0 {
            eprintln!("overfit: loss {first:.4} -> {loss:.4} in {step} steps");
            return;
        }
        state.update(&adam, &mut params, &g);
    }
    panic!("loss {first} -> {last}: not tenfold in 150 steps");
}

fn opts() -> TrainOptions {
    TrainOptions {
        batch: 2,
        seed: 5,
        adam: AdamConfig { lr: 1e-3, warmup_steps: 2, ..AdamConfig::default() },
        data: Data::Phantom { name: "ellipsoids".into(), shape: [12, 12, 12] },
        window: [-1000.0, 1000.0],
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
    assert_eq!(c.adam.step, 2);
    for _ in 0..2 {
        c.step().unwrap();
    }
    assert_eq!(a.adam.step, c.adam.step);
    assert!(a.params == c.params, "parameters differ after resume");
    assert!(a.ema == c.ema && a.adam.m == c.adam.m && a.adam.v == c.adam.v, "EMA or optimizer state differ");
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

#[test]
fn emulated_training_steps_follow_the_cpu() {
    // The same first step on emu (bf16 forward and backward) and on the CPU (f32): the losses
    // agree, and both runs move the weights.
    let mut o = opts();
    o.batch = 1;
    let mut a = Trainer::new(&small(), o.clone(), vec![]).unwrap();
    let mut b = Trainer::new(&small(), o, vec![]).unwrap();
    b.set_device(&Device::Emu);
    let (la, lb) = (a.step().unwrap().loss, b.step().unwrap().loss);
    assert!((la - lb).abs() < 2e-2 * la, "cpu loss {la}, emu loss {lb}");
    let w0 = Trainer::new(&small(), opts(), vec![]).unwrap().params;
    assert!(a.params != w0 && b.params != w0);
}

#[test]
fn ema_warms_up() {
    // Step 1 averages with decay min(0.999, 2 / 11): the EMA is mostly the new weights, not the
    // random initialisation.
    let mut t = Trainer::new(&small(), opts(), vec![]).unwrap();
    let init = t.params.clone();
    t.step().unwrap();
    let d = 2.0f32 / 11.0;
    for (name, e) in &t.ema {
        let (p0, p1) = (&init[name], &t.params[name]);
        for i in 0..e.len().min(50) {
            let want = d * p0[i] + (1.0 - d) * p1[i];
            assert!((e[i] - want).abs() <= 1e-6 * want.abs().max(1.0), "{name}[{i}]: {} vs {want}", e[i]);
        }
    }
}
