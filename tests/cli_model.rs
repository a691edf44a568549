//! `tomodiff model info` and `model run` end to end, against the PyTorch fixture.
mod common;
use common::run;
use std::path::Path;
use tomodiff::tensor::safetensors;
use tomodiff::{DType, Device, Tensor};

fn fixture(name: &str) -> String {
    common::fixture(name).to_string_lossy().into_owned()
}

#[test]
fn info_reports_the_paper_network() {
    let (code, out, err) = run(&["model", "info", "--config", "paper"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("total: 68590209 parameters, 227.73 GFLOP per [32, 32, 32] patch"), "{out}");
    assert!(out.contains("middle_block.1"), "{out}");
}

#[test]
fn run_matches_the_fixture_and_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let io = safetensors::load(Path::new(&fixture("unet_tiny_io.safetensors")), &Device::Cpu).unwrap();
    let input = dir.path().join("in.safetensors");
    safetensors::save(&input, &[("x", &io["x"]), ("t", &io["t"])]).unwrap();
    let output = dir.path().join("out.safetensors");
    let (w, i, o) = (fixture("unet_tiny_weights.safetensors"), input.to_string_lossy().into_owned(), output.to_string_lossy().into_owned());
    let want = io["eps"].to_f32_vec().unwrap();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    // f32 on the CPU within 1e-4, bf16 emulated within 2e-2 (relative to the largest value).
    for (device, tol) in [("cpu", 1e-4), ("emu", 2e-2)] {
        let (code, out, err) = run(&["model", "run", "--config", "tiny", "--weights", &w, "--input", &i, "--output", &o, "--device", device]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("eps [2, 1, 16, 16, 16]"), "{out}");
        let eps = safetensors::load(&output, &Device::Cpu).unwrap()["eps"].to_f32_vec().unwrap();
        assert!(eps.iter().zip(&want).all(|(a, b)| (a - b).abs() <= tol * scale), "{device}");
    }

    let one_line = |args: &[&str], needle: &str| {
        let (code, _, err) = run(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.trim_end().lines().count() == 1 && err.contains(needle) && !err.contains("panicked"), "{args:?}: {err}");
    };
    let bad = dir.path().join("bad.safetensors");
    let x4 = Tensor::zeros(&[2, 4, 16, 16, 16], DType::F32, &Device::Cpu).unwrap();
    safetensors::save(&bad, &[("x", &x4), ("t", &io["t"])]).unwrap();
    let b = bad.to_string_lossy().into_owned();
    one_line(&["model", "run", "--config", "tiny", "--weights", &w, "--input", &b, "--output", &o], "expected (N, 5, D, H, W)");
    safetensors::save(&bad, &[("x", &io["x"])]).unwrap();
    one_line(&["model", "run", "--config", "tiny", "--weights", &w, "--input", &b, "--output", &o], "no tensor \"t\"");
    one_line(&["model", "run", "--config", "paper", "--weights", &w, "--input", &i, "--output", &o], "time_embed.0.weight");
    one_line(&["model", "run", "--config", "huge", "--weights", &w, "--input", &i, "--output", &o], "huge");
    one_line(&["model", "run", "--config", "tiny", "--weights", &w, "--input", &i, "--output", &o, "--device", "tpu"], "unknown device");
}
