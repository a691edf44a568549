//! The CUDA layer against stub drivers (tests/stubs/libcuda_stub.c, built here with the C
//! compiler): the paths a first GPU session must not trip on, run on machines without one.
//! - `tomodiff info`, `--device auto` and `--device cuda` with an old driver, a partial one, no
//!   device and a GPU older than sm_80: one line naming the cause, never a panic;
//! - in-process, against a stub that runs no kernel but keeps the driver's rules: allocations
//!   are not zeroed, launches are checked against the device's and the function's limits, a
//!   fault names the kernel, a panic inside a capture ends it, another thread cannot launch into
//!   it, a module the driver refuses and a missing NVRTC are one clear error.
//!
//! Each in-process case runs in a child process of this test binary (the driver is loaded once
//! per process, with the stub's settings from the environment): `child_*` tests are ignored and
//! return at once unless TOMODIFF_LIBCUDA is set.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use tomodiff::{DType, Device, Tensor};

fn repo() -> PathBuf {
    PathBuf::from(std::env::var("TOMODIFF_REPO").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()))
}

/// The stub built with `defines`, once per process, in a folder of its own.
fn stub(variant: &str, defines: &[&str]) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    let out = dir.path().join(format!("libcuda_{variant}.so"));
    if out.exists() {
        return out;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let src = repo().join("tests/stubs/libcuda_stub.c");
    let tmp = dir.path().join(format!("{variant}.{:?}.tmp", std::thread::current().id()));
    let o = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&tmp)
        .arg(&src)
        .args(defines)
        .arg("-lpthread")
        .output()
        .unwrap_or_else(|e| panic!("the stub driver needs a C compiler ({cc}): {e}"));
    assert!(o.status.success(), "{cc} {}: {}", src.display(), String::from_utf8_lossy(&o.stderr));
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// The GPU check runs the test binaries against the real driver: the stubs are for CPU runs.
fn on_gpu_run() -> bool {
    std::env::var("TOMODIFF_GPU_ONLY").is_ok_and(|v| v == "1")
}

fn full() -> PathBuf {
    stub("full", &[])
}

fn tomodiff(args: &[&str], lib: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let bin = std::env::var("TOMODIFF_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tomodiff").into());
    let o = Command::new(bin).args(args).env("TOMODIFF_LIBCUDA", lib).envs(env.iter().copied()).output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

/// `info` exits 0 and names `cause`; `--device auto` runs on the CPU and says why on one line;
/// `--device cuda` fails with one line naming `cause`.
fn unusable_driver(lib: &Path, env: &[(&str, &str)], cause: &str) {
    let (code, out, err) = tomodiff(&["info"], lib, env);
    assert_eq!(code, 0, "info: {err}");
    assert!(out.contains("cuda: none") || out.contains("unusable"), "{out}");
    assert!(out.contains(cause), "info does not say {cause:?}: {out}");
    assert!(!err.contains("panicked"), "{err}");

    let (code, out, err) = tomodiff(&["bench", "gemm", "--device", "auto", "--size", "16"], lib, env);
    assert_eq!(code, 0, "auto: {err}");
    assert!(out.contains(" cpu "), "auto did not fall back to the cpu: {out}");
    assert!(err.contains("running on the CPU") && err.contains(cause), "auto does not say why: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    let (code, _, err) = tomodiff(&["bench", "gemm", "--device", "cuda", "--size", "16"], lib, env);
    assert_eq!(code, 1, "cuda: {err}");
    assert!(err.starts_with("error: ") && err.contains(cause) && !err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn old_driver_exporting_a_subset_is_named_with_its_version() {
    if on_gpu_run() {
        return;
    }
    unusable_driver(&stub("minimal", &["-DTDSTUB_MINIMAL"]), &[], "supports CUDA 12.4");
    unusable_driver(&stub("minimal", &["-DTDSTUB_MINIMAL"]), &[], "R580");
}

#[test]
fn a_driver_missing_an_entry_point_is_named() {
    if on_gpu_run() {
        return;
    }
    unusable_driver(&stub("nograph", &["-DTDSTUB_OMIT_GRAPH_INSTANTIATE"]), &[], "lacks cuGraphInstantiateWithFlags");
}

#[test]
fn no_device_and_old_gpus_fall_back() {
    if on_gpu_run() {
        return;
    }
    unusable_driver(&full(), &[("TDSTUB_INIT_ERROR", "100")], "no CUDA device");
    unusable_driver(&full(), &[("TDSTUB_DEVICES", "0")], "no devices");
    unusable_driver(&full(), &[("TDSTUB_CC", "7.5")], "compute capability 7.5");
}

#[test]
fn no_driver_library_is_quiet_under_auto() {
    if on_gpu_run() {
        return;
    }
    // A TOMODIFF_LIBCUDA that cannot be loaded was named on purpose: auto says so.
    let (code, out, err) = tomodiff(&["bench", "gemm", "--device", "auto", "--size", "16"], Path::new("/nonexistent/libcuda.so"), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(" cpu ") && err.contains("TOMODIFF_LIBCUDA=/nonexistent/libcuda.so could not be loaded"), "{out} {err}");
    // SAFETY: probing whether this machine has a driver; nothing in it is called.
    if unsafe { libloading::Library::new("libcuda.so.1") }.is_ok() {
        return;
    }
    let bin = std::env::var("TOMODIFF_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tomodiff").into());
    let o = Command::new(bin).args(["bench", "gemm", "--device", "auto", "--size", "16"]).env_remove("TOMODIFF_LIBCUDA").output().unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success() && out.contains(" cpu ") && err.is_empty(), "a machine without CUDA needs no note: {out} {err}");
}

#[test]
fn info_reports_a_usable_stub_device_and_its_limits() {
    if on_gpu_run() {
        return;
    }
    let (code, out, err) = tomodiff(&["info"], &full(), &[("TDSTUB_SMEM_OPTIN", "167936")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("CUDA driver: CUDA 13.0"), "{out}");
    assert!(out.contains("cuda:0: tomodiff stub GPU") && out.contains("compute capability 9.0") && out.contains("164 KiB shared memory"), "{out}");
}

/// Runs the ignored test `name` of this binary in a child process against `lib`, with `env`.
fn child(name: &str, lib: &Path, env: &[(&str, &str)]) {
    let o = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env("TOMODIFF_LIBCUDA", lib)
        .env_remove("TOMODIFF_SYNC")
        .env_remove("TOMODIFF_JIT")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success() && text.contains("1 passed"), "{name} failed:\n{text}");
}

#[test]
fn stub_cases() {
    if on_gpu_run() {
        return;
    }
    let lib = full();
    child("child_allocations_are_not_zeroed", &lib, &[]);
    child("child_launches_are_checked_against_the_device", &lib, &[("TDSTUB_SMEM_OPTIN", "40960"), ("TDSTUB_FUNC_MAX_THREADS", "128")]);
    child("child_faults_name_the_kernel", &lib, &[("TDSTUB_FAULT_KERNEL", "axpy_f32")]);
    child("child_faults_name_the_kernel_at_once_with_sync", &lib, &[("TDSTUB_FAULT_KERNEL", "axpy_f32"), ("TOMODIFF_SYNC", "1")]);
    child("child_capture_ends_on_panic_and_refuses_other_threads", &lib, &[]);
    child("child_module_the_driver_refuses", &lib, &[("TDSTUB_MODULE_ERROR", "222")]);
    child("child_missing_nvrtc", &lib, &[("TOMODIFF_JIT", "nvrtc"), ("TOMODIFF_LIBNVRTC", "/nonexistent/libnvrtc.so")]);
}

/// The stub's counters, read through its extra entry point.
fn count(what: &str) -> i64 {
    let lib = std::env::var("TOMODIFF_LIBCUDA").unwrap();
    // SAFETY: the stub exports `long long tdstub_count(const char *)`; the same library the
    // driver layer loaded, so the counters are its.
    unsafe {
        let l = libloading::Library::new(lib).unwrap();
        let f: libloading::Symbol<unsafe extern "C" fn(*const std::ffi::c_char) -> i64> = l.get(b"tdstub_count\0").unwrap();
        let name = std::ffi::CString::new(what).unwrap();
        f(name.as_ptr())
    }
}

/// Two f32 vectors of `n` values on `dev`, uninitialised (the stub runs no kernel).
fn xy(dev: &Device, n: usize) -> (Tensor, Tensor) {
    (Tensor::empty(&[n], DType::F32, dev).unwrap(), Tensor::empty(&[n], DType::F32, dev).unwrap())
}

fn stub_device() -> Option<Device> {
    std::env::var("TOMODIFF_LIBCUDA").ok()?;
    Some(Device::cuda(0).expect("the stub opens"))
}

#[test]
#[ignore]
fn child_allocations_are_not_zeroed() {
    let Some(dev) = stub_device() else { return };
    let before = count("memsets");
    let t = Tensor::empty(&[1 << 20], DType::F32, &dev).unwrap();
    assert_eq!(count("memsets"), before, "Tensor::empty must not fill");
    let z = Tensor::zeros(&[1 << 20], DType::F32, &dev).unwrap();
    assert_eq!(count("memsets"), before + 1, "Tensor::zeros fills once, on the stream");
    assert!(z.to_f32_vec().unwrap().iter().all(|&v| v == 0.0));
    let u = Tensor::from_f32(&[1.0, 2.0], &[2], DType::F32, &dev).unwrap();
    assert_eq!(count("memsets"), before + 1, "an upload needs no fill");
    assert_eq!(u.to_f32_vec().unwrap(), vec![1.0, 2.0]);
    drop(t);
    // While a handle lives, opening the GPU again gives the same one (one stream, one pool).
    let (Device::Cuda(a), Ok(Device::Cuda(b))) = (&dev, Device::parse("cuda:0")) else { panic!("cuda expected") };
    assert!(std::sync::Arc::ptr_eq(a, &b), "a second handle to cuda:0");
}

#[test]
#[ignore]
fn child_launches_are_checked_against_the_device() {
    let Some(dev) = stub_device() else { return };
    if let Device::Cuda(d) = &dev {
        assert_eq!(d.info().max_shared_per_block_optin, 40960);
    }
    // gemm asks for 56,832 bytes of dynamic shared memory; this device allows 40,960.
    let a = Tensor::empty(&[128, 64], DType::BF16, &dev).unwrap();
    let b = Tensor::empty(&[64, 128], DType::BF16, &dev).unwrap();
    let mut c = Tensor::empty(&[128, 128], DType::F32, &dev).unwrap();
    let launches = count("launches");
    let e = tomodiff::ops::gemm::matmul(&a, &b, &mut c).unwrap_err().to_string();
    assert!(e.contains("gemm_bf16_f32_vec") && e.contains("56832 bytes of shared memory") && e.contains("allows 40960"), "{e}");
    // axpy runs 256-thread blocks; the stub's functions allow 128 (as registers would limit).
    let (x, mut y) = xy(&dev, 1000);
    let e = tomodiff::ops::elementwise::axpy(1.0, &x, &mut y).unwrap_err().to_string();
    assert!(e.contains("axpy_f32") && e.contains("256 threads") && e.contains("allows 128 threads"), "{e}");
    assert_eq!(count("launches"), launches, "refused launches never reach the driver");
}

#[test]
#[ignore]
fn child_faults_name_the_kernel() {
    let Some(dev) = stub_device() else { return };
    let (x, mut y) = xy(&dev, 1000);
    // Asynchronous: the launch is queued; the fault surfaces at the next synchronize.
    tomodiff::ops::elementwise::axpy(1.0, &x, &mut y).unwrap();
    let e = y.to_f32_vec().unwrap_err().to_string();
    assert!(e.contains("CUDA_ERROR_ILLEGAL_ADDRESS") && e.contains("axpy_f32") && e.contains("TOMODIFF_SYNC=1"), "{e}");
}

#[test]
#[ignore]
fn child_faults_name_the_kernel_at_once_with_sync() {
    let Some(dev) = stub_device() else { return };
    let (x, mut y) = xy(&dev, 1000);
    let e = tomodiff::ops::elementwise::axpy(1.0, &x, &mut y).unwrap_err().to_string();
    assert!(e.contains("CUDA_ERROR_ILLEGAL_ADDRESS") && e.contains("axpy_f32 grid [") && e.contains("synchronized after the launch"), "{e}");
}

#[test]
#[ignore]
fn child_capture_ends_on_panic_and_refuses_other_threads() {
    let Some(dev) = stub_device() else { return };
    let (x, mut y) = xy(&dev, 1000);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = dev.capture(|| -> tomodiff::Result<()> {
            tomodiff::ops::elementwise::axpy(1.0, &x, &mut y)?;
            panic!("a bug inside the captured work");
        });
    }));
    assert!(r.is_err());
    assert_eq!(count("capturing"), 0, "the stream was left capturing after the panic");
    assert!(!dev.capturing());

    // While this thread captures, another thread's work is refused, not recorded into the graph.
    let (g, refused) = dev
        .capture(|| {
            tomodiff::ops::elementwise::axpy(1.0, &x, &mut y)?;
            let other = std::thread::scope(|s| s.spawn(|| Tensor::empty(&[8], DType::F32, &dev).map(|_| ())).join().unwrap());
            Ok(other.unwrap_err().to_string())
        })
        .unwrap();
    assert!(refused.contains("capturing a graph on another thread"), "{refused}");
    assert_eq!(count("captured_launches"), 2, "the panicked capture's launch and this one");
    let replays = count("graph_launches");
    // SAFETY: x and y, the buffers the graph uses, are alive.
    unsafe { g.replay() }.unwrap();
    assert_eq!(count("graph_launches"), replays + 1);
}

#[test]
#[ignore]
fn child_module_the_driver_refuses() {
    let Some(dev) = stub_device() else { return };
    let (x, mut y) = xy(&dev, 10);
    let e = tomodiff::ops::elementwise::axpy(1.0, &x, &mut y).unwrap_err().to_string();
    assert!(e.contains("loading module elementwise") && e.contains("newer than this driver, CUDA 13.0") && e.contains("pinned"), "{e}");
}

#[test]
#[ignore]
fn child_missing_nvrtc() {
    let Some(dev) = stub_device() else { return };
    let (x, mut y) = xy(&dev, 10);
    let e = tomodiff::ops::elementwise::axpy(1.0, &x, &mut y).unwrap_err().to_string();
    assert!(e.contains("no NVRTC library was found") && e.contains("/nonexistent/libnvrtc.so"), "{e}");
}
