//! The binary end to end: `info` without a GPU, and bad input giving one line and a non-zero exit.
use std::process::Command;

fn tomodiff(args: &[&str]) -> (i32, String, String) {
    // TOMODIFF_BIN: where the binary is when the test runs away from its build (GPU bundles).
    let bin = std::env::var("TOMODIFF_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tomodiff").into());
    let o = Command::new(bin).args(args).output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

/// Exit 1, one line on stderr containing `needle`, no panic.
fn assert_one_line_error(args: &[&str], needle: &str) {
    let (code, _, err) = tomodiff(args);
    assert_eq!(code, 1, "{args:?}: exit code; stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: stderr is not one line: {err}");
    assert!(err.starts_with("error: ") && err.contains(needle), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn info_reports_build_devices_and_kernels() {
    let (code, out, err) = tomodiff(&["info", "--kernels"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("tomodiff 0.1.0") && out.contains("build: "), "{out}");
    assert!(out.contains("gemm.cu  gemm_bf16_f32_vec(int M"), "{out}");
    if tomodiff::Device::cuda(0).is_err() {
        assert!(out.contains("cuda: none") && out.contains("no CUDA driver found"), "{out}");
    }
    if let Some(nvcc) = tomodiff::kernels::NVCC_VERSION {
        assert!(out.contains("sm_90 gemm_bf16_f32_vec: Used"), "{out}");
        // Which compiler built the kernels, and the targets read back from the fatbins.
        assert!(out.contains("fatbins with compute_80 PTX, sm_80 SASS, sm_90 SASS, from nvcc") && out.contains(nvcc), "{out}");
    }
}

#[test]
fn bad_input_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = d.join("good.safetensors");
    let t = tomodiff::Tensor::from_f32(&[1.0, 2.0], &[2], tomodiff::DType::F32, &tomodiff::Device::Cpu).unwrap();
    tomodiff::tensor::safetensors::save(&good, &[("w", &t)]).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(d.join("trunc.safetensors"), &bytes[..bytes.len() - 3]).unwrap();
    std::fs::write(d.join("corrupt.safetensors"), b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage").unwrap();
    let p = |n: &str| d.join(n).to_string_lossy().into_owned();
    let out = p("out.safetensors");

    assert_one_line_error(&["convert", &p("good.safetensors"), &out, "--dtype", "bf16", "--device", "tpu"], "unknown device \"tpu\"");
    assert_one_line_error(&["convert", &p("missing.safetensors"), &out, "--dtype", "bf16", "--device", "cpu"], "missing.safetensors");
    assert_one_line_error(&["inspect", &p("trunc.safetensors")], "trunc.safetensors: not a valid safetensors file");
    assert_one_line_error(&["inspect", &p("corrupt.safetensors")], "corrupt.safetensors: not a valid safetensors file");
    assert_one_line_error(&["convert", &p("good.safetensors"), &out, "--dtype", "int8", "--device", "cpu"], "unknown dtype");
    assert!(!d.join("out.safetensors").exists(), "no output after a failure");
}

#[test]
fn convert_and_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("w.safetensors");
    let t = tomodiff::Tensor::from_f32(&[1.0, 2.5, -3.0], &[3, 1], tomodiff::DType::F32, &tomodiff::Device::Cpu).unwrap();
    tomodiff::tensor::safetensors::save(&src, &[("layer.weight", &t)]).unwrap();
    let dst = dir.path().join("w16.safetensors");
    let (code, out, err) = tomodiff(&["convert", src.to_str().unwrap(), dst.to_str().unwrap(), "--dtype", "bf16", "--device", "emu"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 tensors written"), "{out}");
    let (code, out, _) = tomodiff(&["inspect", dst.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "layer.weight\tbf16\t[3, 1]");
}

#[test]
fn negative_numbers_are_option_values() {
    // Read as values, so tomodiff's own range check answers, naming the value.
    assert_one_line_error(&["sample", "--eta", "-1", "-o", "/tmp/never-written.npy"], "--eta must be in [0, 1], got -1");
    let (code, _, err) = tomodiff(&["reconstruct", "--gamma", "-1", "-g", "/nonexistent/g.json", "-i", "p.npy", "-o", "r.npy"]);
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains("unexpected argument"), "--gamma -1 taken as a flag: {err}");
}

/// A float64 .npy file of `vals` with `shape`.
fn npy_f64(path: &std::path::Path, shape: &[usize], vals: &[f64]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut header = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({},), }}", dims.join(", "));
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for v in vals {
        bytes.extend(v.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn overflow_is_an_error_naming_the_value_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    std::fs::write(p("g.json"), r#"{"volume": {"shape": [4, 8, 8]}, "scan": {"type": "parallel", "n_views": 4, "det_shape": [4, 12]}}"#).unwrap();
    // float64 beyond float32's range: named as such, not as "non-finite".
    let mut vals = vec![0.0; 256];
    vals[5] = 1e39;
    npy_f64(&dir.path().join("big64.npy"), &[4, 8, 8], &vals);
    assert_one_line_error(&["project", "--geometry", &p("g.json"), "-i", &p("big64.npy"), "-o", &p("a.npy")], "1e39 at flat index 5 is out of float32 range");
    // Finite input whose line integrals overflow: refused with the index, no file left behind.
    let mut vol = vec![0f32; 256];
    vol.iter_mut().take(64).for_each(|v| *v = 1e38);
    tomodiff::io::npy::write(&dir.path().join("big.npy"), &[4, 8, 8], &vol).unwrap();
    assert_one_line_error(&["project", "--geometry", &p("g.json"), "-i", &p("big.npy"), "-o", &p("proj.npy")], "float32 overflowed");
    assert!(!dir.path().join("proj.npy").exists());
    // A cast to f16 that overflows: refused, naming the tensor and the value.
    let t = tomodiff::Tensor::from_f32(&[7e4, -1e5, 3e38, 1.0], &[4], tomodiff::DType::F32, &tomodiff::Device::Cpu).unwrap();
    tomodiff::tensor::safetensors::save(&dir.path().join("w.safetensors"), &[("w", &t)]).unwrap();
    assert_one_line_error(&["convert", &p("w.safetensors"), &p("h.safetensors"), "--dtype", "f16", "--device", "cpu"], "tensor w: 7e4 at flat index 0 overflows f16");
    assert!(!dir.path().join("h.safetensors").exists());
    // bf16 holds 3e38.
    let (code, _, err) = tomodiff(&["convert", &p("w.safetensors"), &p("b.safetensors"), "--dtype", "bf16", "--device", "cpu"]);
    assert_eq!(code, 0, "{err}");
}
