//! `tomodiff train` end to end: weights that `model run` loads, resume, an interrupted run, errors.
mod common;
use common::{bin, run, s};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SMALL: &[&str] = &["--data", "phantom:ellipsoids", "--volume-shape", "16,16,16", "--batch", "1"];

#[test]
fn train_resume_and_run_the_weights() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out_s = s(&out);
    let mut args = vec!["train", "--out", &out_s, "--steps", "3", "--checkpoint-every", "2", "--device", "cpu", "--warmup", "1"];
    args.extend_from_slice(SMALL);
    let (code, o, e) = run(&args);
    assert_eq!(code, 0, "{e}");
    assert!(o.contains("3 steps"), "{o}");
    let csv = std::fs::read_to_string(out.join("loss.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    // A step logged after the last checkpoint (a run killed before its next one) is dropped on
    // resume and logged again: the log continues with each step once.
    std::fs::write(out.join("loss.csv"), format!("{csv}4,9.9,9.9,1e-4,9.9\n")).unwrap();
    // The run's own settings cannot change on resume; the learning rate can (from the next step).
    let (code, _, e) = run(&["train", "--out", &s(&out), "--steps", "5", "--resume", "--data", "phantom:ellipsoids", "--batch", "4", "--seed", "3"]);
    assert_eq!(code, 1, "{e}");
    assert!(e.contains("--batch, --seed belong to the run being resumed"), "{e}");
    // Other data than the run's is refused, not trained on (or panicked on) silently.
    let (code, _, e) = run(&["train", "--out", &s(&out), "--steps", "5", "--resume", "--data", "phantom:chest"]);
    assert_eq!(code, 1, "{e}");
    assert!(e.contains("--data phantom:chest (with --volume-shape, --supersample or --units) is not the data of the run being resumed, phantom:ellipsoids, --volume-shape 16,16,16, --supersample 1 (its checkpoint.json)"), "{e}");
    // The ellipsoids (2^3 points per voxel already) default to no supersampling; the run keeps its factor.
    let meta = std::fs::read_to_string(out.join("checkpoint.json")).unwrap();
    assert!(meta.contains("\"supersample\": 1"), "{meta}");
    let (code, _, e) = run(&["train", "--out", &s(&out), "--steps", "5", "--resume", "--data", "phantom:ellipsoids", "--supersample", "3"]);
    assert_eq!(code, 1, "{e}");
    assert!(e.contains("--supersample 3: the run being resumed draws its phantoms with 1"), "{e}");
    let (code, _, e) = run(&["train", "--out", &s(&out), "--steps", "5", "--resume", "--data", "phantom:ellipsoids", "--lr", "3e-5"]);
    assert_eq!(code, 0, "{e}");
    let csv = std::fs::read_to_string(out.join("loss.csv")).unwrap();
    let steps: Vec<&str> = csv.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(steps, ["1", "2", "3", "4", "5"], "{csv}");
    assert!(!csv.contains("9.9"), "{csv}");
    let lr: Vec<f64> = csv.lines().skip(1).map(|l| l.split(',').nth(3).unwrap().parse().unwrap()).collect();
    assert!(lr[3] == 3e-5 && lr[4] == 3e-5 && lr[2] != 3e-5, "the new rate from step 4 on: {lr:?}");
    let meta = std::fs::read_to_string(out.join("checkpoint.json")).unwrap();
    assert!(meta.contains("3e-5") || meta.contains("0.00003"), "the checkpoint records the rate: {meta}");
    // The EMA weights load into the network.
    let input = dir.path().join("in.safetensors");
    let x = tomodiff::Tensor::zeros(&[1, 5, 16, 16, 16], tomodiff::DType::F32, &tomodiff::Device::Cpu).unwrap();
    let t = tomodiff::Tensor::from_f32(&[500.0], &[1], tomodiff::DType::F32, &tomodiff::Device::Cpu).unwrap();
    tomodiff::tensor::safetensors::save(&input, &[("x", &x), ("t", &t)]).unwrap();
    let (code, o, e) = run(&["model", "run", "--config", "tiny", "--weights", &s(&out.join("weights.safetensors")), "--input", &s(&input), "--output", &s(&dir.path().join("eps.safetensors")), "--device", "cpu"]);
    assert_eq!(code, 0, "{e}");
    assert!(o.contains("eps [1, 1, 16, 16, 16]"), "{o}");
    // export writes the last checkpoint's EMA as a model folder: the same tensors as the run's
    // weights.safetensors; --raw gives the parameters, which differ from the EMA.
    let model = dir.path().join("model");
    let (code, o, e) = run(&["export", &s(&out), "-o", &s(&model)]);
    assert_eq!(code, 0, "{e}");
    assert!(o.contains("EMA weights of step 5"), "{o}");
    let load = |p: &Path| tomodiff::tensor::safetensors::load(p, &tomodiff::Device::Cpu).unwrap();
    let (a, b) = (load(&model.join("weights.safetensors")), load(&out.join("weights.safetensors")));
    assert!(a.iter().zip(&b).all(|((n1, t1), (n2, t2))| n1 == n2 && t1.to_f32_vec().unwrap() == t2.to_f32_vec().unwrap()));
    let cfg: tomodiff::nn::UNetConfig = serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg, tomodiff::nn::UNetConfig::tiny());
    let (code, _, e) = run(&["export", &s(&out), "-o", &s(&dir.path().join("raw")), "--raw"]);
    assert_eq!(code, 0, "{e}");
    let raw = load(&dir.path().join("raw/weights.safetensors"));
    assert!(raw.iter().zip(&a).any(|((_, t1), (_, t2))| t1.to_f32_vec().unwrap() != t2.to_f32_vec().unwrap()));
    let (code, _, e) = run(&["export", &s(&dir.path().join("nothing")), "-o", &s(&model)]);
    assert!(code != 0 && e.contains("checkpoint.json"), "{e}");
    // Fine-tuning the exported model to predict v: the run's config says so, and the sampler
    // reads it from there.
    let tuned = dir.path().join("tuned");
    let mut args = vec!["train", "--init", "", "--prediction", "v", "--out", "", "--steps", "1", "--device", "cpu"];
    let (model_s, tuned_s) = (s(&model), s(&tuned));
    (args[2], args[6]) = (&model_s, &tuned_s);
    args.extend_from_slice(SMALL);
    let (code, _, e) = run(&args);
    assert_eq!(code, 0, "{e}");
    let cfg: tomodiff::nn::UNetConfig = serde_json::from_str(&std::fs::read_to_string(tuned.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg, tomodiff::nn::UNetConfig { prediction: tomodiff::nn::Prediction::V, ..tomodiff::nn::UNetConfig::tiny() });
    let vol = dir.path().join("v.npy");
    let (code, o, e) = run(&["sample", "--weights", &s(&tuned.join("weights.safetensors")), "--shape", "16,16,16", "--steps", "2", "--device", "cpu", "-o", &s(&vol)]);
    assert_eq!(code, 0, "{e}");
    assert!(o.contains("2 passes"), "{o}");
    let (code, o, e) = run(&["model", "run", "--config", &s(&tuned.join("config.json")), "--weights", &s(&tuned.join("weights.safetensors")), "--input", &s(&input), "--output", &s(&dir.path().join("v.safetensors")), "--device", "cpu"]);
    assert_eq!(code, 0, "{e}");
    assert!(o.contains("v [1, 1, 16, 16, 16]"), "{o}");
}

#[test]
fn an_interrupted_run_keeps_its_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut args = vec!["train".to_string(), "--out".into(), s(&out), "--steps".into(), "1000".into(), "--checkpoint-every".into(), "1".into(), "--device".into(), "cpu".into()];
    args.extend(SMALL.iter().map(|a| a.to_string()));
    let mut child = Command::new(bin()).args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let meta = out.join("checkpoint.json");
    let t0 = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&meta) {
            let v: serde_json::Value = serde_json::from_str(&text).expect("checkpoint.json is always complete");
            if v["step"].as_u64().unwrap() >= 3 {
                break;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "no checkpoint in time");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL, wherever it is: maybe in the middle of writing a checkpoint
    child.wait().unwrap();
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    let step = v["step"].as_u64().unwrap();
    let file = out.join(v["file"].as_str().unwrap());
    tomodiff::tensor::safetensors::load(&file, &tomodiff::Device::Cpu).expect("the checkpoint the JSON names is whole");
    // Resuming loses at most the steps since that checkpoint.
    let target = (step + 1).to_string();
    let (code, _, e) = run(&["train", "--out", &s(&out), "--steps", &target, "--resume", "--data", "phantom:ellipsoids"]);
    assert_eq!(code, 0, "{e}");
}

#[test]
fn bad_training_input_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = s(&dir.path().join("run"));
    for (args, needle) in [
        (vec!["train", "--out", &out, "--steps", "1", "--data", "phantom:brain"], "unknown phantom"),
        (vec!["train", "--out", &out, "--steps", "1", "--data", "/nonexistent/volumes"], "/nonexistent/volumes"),
        (vec!["train", "--out", &out, "--steps", "1", "--data", "phantom:chest", "--device", "tpu"], "unknown device"),
        (vec!["train", "--out", &out, "--steps", "1", "--data", "phantom:chest", "--volume-shape", "8,8,8"], "smaller than the patch"),
        (vec!["train", "--out", &out, "--steps", "1", "--data", "phantom:chest", "--resume"], "checkpoint.json"),
        (vec!["train", "--out", &out, "--steps", "1", "--data", "phantom:chest", "--minutes", "0"], "--minutes must be positive"),
        (vec!["train", "--out", &out, "--steps", "1", "--data", "phantom:chest", "--lr", "-1"], "--lr must be positive"),
        (vec!["train", "--out", &out, "--steps", "1", "--data", "phantom:chest", "--init", "/nonexistent/model"], "/nonexistent/model"),
        (vec!["train", "--out", &out, "--steps", "1", "--data", "phantom:chest", "--prediction", "x0"], "expected eps or v"),
        (vec!["train", "--out", &out, "--steps", "1", "--data", "phantom:chest", "--supersample", "0"], "--supersample: supersampling [32, 32, 32] voxels by 0"),
        (vec!["train", "--out", &out, "--steps", "1", "--data", "/nonexistent/volumes", "--supersample", "2"], "--supersample applies to phantom:NAME data"),
    ] {
        let (code, _, e) = run(&args);
        assert_eq!(code, 1, "{args:?}: {e}");
        assert!(e.trim_end().lines().count() == 1 && e.contains(needle) && !e.contains("panicked"), "{args:?}: {e}");
    }
    assert!(!dir.path().join("run").exists(), "a refused run left its --out folder behind");
}

#[test]
fn sample_writes_a_volume_and_preview() {
    let dir = tempfile::tempdir().unwrap();
    let w = common::fixture("unet_tiny_weights.safetensors");
    let (out, png) = (dir.path().join("s.npy"), dir.path().join("s.png"));
    for dev in ["cpu"] {
        let (code, o, e) = run(&["sample", "--weights", &s(&w), "--config", "tiny", "--shape", "20,16,16", "--steps", "2", "--device", dev, "-o", &s(&out), "--preview", &s(&png)]);
        assert_eq!(code, 0, "{e}");
        assert!(o.contains("2 passes"), "{o}");
        let a = tomodiff::io::read_array(&out).unwrap();
        assert_eq!(a.shape, vec![20, 16, 16]);
        // Clamped x0 maps into [0, mu_max].
        assert!(a.data.iter().all(|v| (0.0..=0.04).contains(v)), "{dev}");
        assert!(png.exists());
    }
    let (code, _, e) = run(&["sample", "--weights", &s(&w), "--config", "tiny", "--shape", "20,0,16", "-o", &s(&out)]);
    assert!(code == 1 && e.contains("must be positive"), "{e}");
    // A weights file with no config.json beside it needs --config.
    let (code, _, e) = run(&["sample", "--weights", &s(&w), "--shape", "16,16,16", "-o", &s(&out)]);
    assert!(code == 1 && e.contains("no config.json beside the weights"), "{e}");
    // Without --weights: the shipped prior.
    let (code, o, e) = run(&["sample", "--shape", "16,16,16", "--steps", "1", "--device", "cpu", "-o", &s(&out)]);
    assert_eq!(code, 0, "{e}");
    assert!(o.contains("1 passes"), "{o}");
}

#[test]
fn a_time_limit_stops_with_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut args = vec!["train", "--out", "", "--steps", "100000", "--checkpoint-every", "1000", "--minutes", "0.0001", "--device", "cpu"];
    let out_s = s(&out);
    args[2] = &out_s;
    args.extend_from_slice(SMALL);
    let (code, o, e) = run(&args);
    assert_eq!(code, 0, "{e}");
    assert!(e.contains("stopping at step 1"), "{e}");
    assert!(o.contains("1 steps"), "{o}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("checkpoint.json")).unwrap()).unwrap();
    assert_eq!(v["step"].as_u64(), Some(1));
    assert!(out.join("weights.safetensors").exists() && out.join("config.json").exists());
}
