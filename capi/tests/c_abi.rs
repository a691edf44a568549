//! The C ABI: the committed header is what cbindgen makes of src/lib.rs; the C example compiles
//! against it and runs; the entry points give the library's results and name bad input.
use std::ffi::{c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::ptr::{null, null_mut};
use tomodiff_capi::*;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The folder holding libtomodiff_capi.so: target/<profile>, above this test's deps/.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(td_last_error()) }.to_string_lossy().into_owned()
}

#[test]
fn the_header_is_what_cbindgen_makes() {
    let cfg = cbindgen::Config::from_file(crate_dir().join("cbindgen.toml")).unwrap();
    let mut made = Vec::new();
    cbindgen::Builder::new().with_src(crate_dir().join("src/lib.rs")).with_config(cfg).generate().expect("cbindgen").write(&mut made);
    let path = crate_dir().join("include/tomodiff.h");
    if std::env::var("TOMODIFF_BLESS").is_ok() {
        std::fs::write(&path, &made).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(committed == made, "capi/include/tomodiff.h is stale: regenerate it with TOMODIFF_BLESS=1 cargo test --release -p tomodiff-capi");
}

const JSON: &str = r#"{"volume": {"shape": [20, 24, 28]}, "scan": {"type": "cone", "n_views": 6, "source_origin": 80, "origin_detector": 40, "det_shape": [30, 44], "det_spacing": [1.5, 1.5]}}"#;

fn geometry() -> *mut TdGeometry {
    let json = CString::new(JSON).unwrap();
    let mut g = null_mut();
    assert_eq!(unsafe { td_geometry_from_json(json.as_ptr(), &mut g) }, TdStatus::Ok, "{}", last_error());
    g
}

#[test]
fn projector_pair_and_fdk_match_the_library() {
    let g = geometry();
    let (mut vs, mut ps) = ([0usize; 3], [0usize; 3]);
    assert_eq!(unsafe { td_geometry_shapes(g, vs.as_mut_ptr(), ps.as_mut_ptr()) }, TdStatus::Ok);
    assert_eq!((vs, ps), ([20, 24, 28], [6, 30, 44]));
    let (nv, np) = (vs.iter().product::<usize>(), ps.iter().product::<usize>());
    let vol: Vec<f32> = (0..nv).map(|i| ((i * 7919) % 101) as f32 * 1e-4).collect();
    let cpu = CString::new("cpu").unwrap();
    let mut proj = vec![f32::NAN; np];
    assert_eq!(unsafe { td_project(g, vol.as_ptr(), nv, proj.as_mut_ptr(), np, cpu.as_ptr()) }, TdStatus::Ok, "{}", last_error());
    let geo = tomodiff::ct::Geometry::from_json(JSON).unwrap();
    let mut want = vec![0f32; np];
    tomodiff::ct::siddon::forward_ref(&geo, &vol, &mut want).unwrap();
    let e = proj.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(e <= 1e-5 * want.iter().fold(0f32, |m, v| m.max(v.abs())), "forward differs by {e}");
    // <A x, y> = <x, A^T y>.
    let mut back = vec![f32::NAN; nv];
    assert_eq!(unsafe { td_backproject(g, proj.as_ptr(), np, back.as_mut_ptr(), nv, cpu.as_ptr()) }, TdStatus::Ok, "{}", last_error());
    let lhs: f64 = proj.iter().map(|v| (*v as f64).powi(2)).sum();
    let rhs: f64 = vol.iter().zip(&back).map(|(a, b)| *a as f64 * *b as f64).sum();
    assert!((lhs - rhs).abs() <= 1e-4 * lhs, "<Ax, Ax> {lhs} vs <x, A^T A x> {rhs}");
    let mut fdk = vec![f32::NAN; nv];
    assert_eq!(unsafe { td_fbp(g, proj.as_ptr(), np, null(), fdk.as_mut_ptr(), nv) }, TdStatus::Ok, "{}", last_error());
    assert_eq!(fdk, tomodiff::ct::fbp::fbp(&geo, &proj, tomodiff::ct::fbp::Window::Hann).unwrap());
    unsafe { td_geometry_free(g) };
}

#[test]
fn bad_input_is_named_and_nothing_panics() {
    let bad = CString::new(r#"{"volume": {"shape": [0, 4, 4]}, "scan": {"type": "cone"}}"#).unwrap();
    let mut g = null_mut();
    assert_eq!(unsafe { td_geometry_from_json(bad.as_ptr(), &mut g) }, TdStatus::Geometry);
    assert!(g.is_null() && last_error().contains("det_shape"), "{}", last_error());
    assert_eq!(unsafe { td_geometry_from_json(null(), &mut g) }, TdStatus::Argument);
    assert!(last_error().contains("json is NULL"));
    let g = geometry();
    let mut proj = vec![0f32; 10];
    let vol = vec![0f32; 20 * 24 * 28];
    assert_eq!(unsafe { td_project(g, vol.as_ptr(), vol.len(), proj.as_mut_ptr(), proj.len(), null()) }, TdStatus::Shape);
    assert!(last_error().contains("proj holds 10 values, the geometry needs 7920"), "{}", last_error());
    let gpu9 = CString::new("tpu").unwrap();
    let mut proj = vec![0f32; 7920];
    assert_eq!(unsafe { td_project(g, vol.as_ptr(), vol.len(), proj.as_mut_ptr(), proj.len(), gpu9.as_ptr()) }, TdStatus::Argument);
    assert!(last_error().contains("unknown device"), "{}", last_error());
    let window = CString::new("box").unwrap();
    let mut out = vec![0f32; vol.len()];
    assert_eq!(unsafe { td_fbp(g, proj.as_ptr(), proj.len(), window.as_ptr(), out.as_mut_ptr(), out.len()) }, TdStatus::Argument);
    assert!(last_error().contains("unknown filter window"), "{}", last_error());
    let missing = CString::new("/nonexistent/w.safetensors").unwrap();
    let mut prior = null_mut();
    assert_eq!(unsafe { td_prior_load(missing.as_ptr(), null(), &mut prior) }, TdStatus::Io);
    assert!(prior.is_null() && last_error().contains("/nonexistent/w.safetensors"), "{}", last_error());
    let mut nan = vol.clone();
    nan[7] = f32::NAN;
    assert_eq!(unsafe { td_project(g, nan.as_ptr(), nan.len(), proj.as_mut_ptr(), proj.len(), null()) }, TdStatus::Shape);
    assert!(last_error().contains("non-finite value (NaN) at index 7"), "{}", last_error());
    unsafe { td_geometry_free(g) };
}

unsafe extern "C" fn stop_after_two(done: usize, _total: usize, user: *mut c_void) -> i32 {
    *(user as *mut usize) = done;
    (done >= 2) as i32
}

/// Writes the pass count into `user` and cancels.
unsafe extern "C" fn note_total(_done: usize, total: usize, user: *mut c_void) -> i32 {
    *(user as *mut usize) = total;
    1
}

#[test]
fn reconstruct_is_cancelled_by_its_callback_and_checks_memory() {
    let json = CString::new(tomodiff::ct::geometry::cone_scan_json([16, 16, 16], 4, 360.0)).unwrap();
    let mut g = null_mut();
    assert_eq!(unsafe { td_geometry_from_json(json.as_ptr(), &mut g) }, TdStatus::Ok, "{}", last_error());
    let mut prior = null_mut();
    assert_eq!(unsafe { td_prior_load(null(), null(), &mut prior) }, TdStatus::Ok, "{}", last_error());
    let mut ps = [0usize; 3];
    unsafe { td_geometry_shapes(g, null_mut(), ps.as_mut_ptr()) };
    let proj = vec![0.1f32; ps.iter().product()];
    let mut vol = vec![-7f32; 16 * 16 * 16];
    let mut o = std::mem::MaybeUninit::<TdReconOptions>::uninit();
    assert_eq!(unsafe { td_recon_options_init(o.as_mut_ptr(), std::mem::size_of::<TdReconOptions>() - 8) }, TdStatus::Argument);
    assert!(last_error().contains("td_recon_options_init: size"), "{}", last_error());
    assert_eq!(unsafe { td_recon_options_init(o.as_mut_ptr(), std::mem::size_of::<TdReconOptions>()) }, TdStatus::Ok, "{}", last_error());
    let mut o = unsafe { o.assume_init() };
    o.steps = 5;
    let cpu = CString::new("cpu").unwrap();
    let mut seen = 0usize;
    let s = unsafe { td_reconstruct(prior, g, proj.as_ptr(), proj.len(), &o, cpu.as_ptr(), Some(stop_after_two), &mut seen as *mut usize as *mut c_void, vol.as_mut_ptr(), vol.len()) };
    assert_eq!((s, seen), (TdStatus::Cancelled, 2), "{}", last_error());
    assert!(vol.iter().all(|v| *v == -7.0), "a cancelled reconstruction wrote its output");
    // The pass count, seen by the progress callback.
    let mut passes = |o: &TdReconOptions| {
        let mut total = 0usize;
        let s = unsafe { td_reconstruct(prior, g, proj.as_ptr(), proj.len(), o, cpu.as_ptr(), Some(note_total), &mut total as *mut usize as *mut c_void, vol.as_mut_ptr(), vol.len()) };
        assert_eq!(s, TdStatus::Cancelled, "{}", last_error());
        total
    };
    let from_noise = passes(&o);
    assert_eq!(from_noise, 10, "5 steps x 2 rounds");
    let progressive = TdReconOptions { progressive_steps: 5, progressive_t: 400, rounds: 1, ..o };
    let s = unsafe { td_reconstruct(prior, g, proj.as_ptr(), proj.len(), &progressive, cpu.as_ptr(), None, null_mut(), vol.as_mut_ptr(), vol.len()) };
    assert_eq!(s, TdStatus::Shape, "a 16^3 volume has no half-resolution run for a 16^3 patch");
    assert!(last_error().contains("half the volume, [8, 8, 8]"), "{}", last_error());
    // The start from FDK noised to t = 300, gamma, final_dc and average_below (both passes, t =
    // 300 and 0) reach the library: the same volume as its own call.
    let late = TdReconOptions { start_t: 300, gamma: 0.5, steps: 2, rounds: 1, final_dc: 1, average_below: 300, ..o };
    assert_eq!(unsafe { td_reconstruct(prior, g, proj.as_ptr(), proj.len(), &late, cpu.as_ptr(), None, null_mut(), vol.as_mut_ptr(), vol.len()) }, TdStatus::Ok, "{}", last_error());
    let ro = tomodiff::diffusion::recon::ReconOptions {
        sampler: tomodiff::diffusion::sampler::SamplerOptions { steps: 2, rounds: 1, ..Default::default() },
        gamma: 0.5,
        start: tomodiff::diffusion::recon::Start::Noised(300),
        final_dc: true,
        average_below: Some(300),
        ..Default::default()
    };
    let (cfg, w) = tomodiff::nn::model_files::shipped().unwrap();
    let geo = tomodiff::ct::Geometry::from_json(&tomodiff::ct::geometry::cone_scan_json([16, 16, 16], 4, 360.0)).unwrap();
    let (fdk, _) = tomodiff::diffusion::recon::fdk_start(&geo, &proj, &cfg, &ro).unwrap();
    assert!(fdk.is_some(), "a noised start takes the FDK volume");
    let (want, _) = tomodiff::diffusion::recon::reconstruct_scan(&cfg, &w, &geo, &proj, fdk.as_deref(), &ro, &tomodiff::Device::Cpu, None, |_, _| ()).unwrap();
    assert!(vol == want, "the C call and the library's differ");
    for (bad, needle) in [(TdReconOptions { start_t: 1000, ..o }, "start_t 1000"), (TdReconOptions { gamma: f64::NAN, ..o }, "gamma"), (TdReconOptions { samples: 0, ..o }, "samples must be at least 1"), (TdReconOptions { average_below: 1000, ..o }, "average_below must be a timestep below 1000"), (TdReconOptions { struct_size: 8, ..o }, "opts.struct_size is 8, but this library's TdReconOptions is"), (TdReconOptions { progressive_steps: 5, ..o }, "progressive_t 0: progressive sampling takes"), (TdReconOptions { progressive_steps: 5, progressive_t: 400, start_t: 100, ..o }, "set start_t to 0")] {
        let s = unsafe { td_reconstruct(prior, g, proj.as_ptr(), proj.len(), &bad, cpu.as_ptr(), None, null_mut(), vol.as_mut_ptr(), vol.len()) };
        assert_eq!(s, TdStatus::Argument, "{needle}");
        assert!(last_error().contains(needle), "{}", last_error());
    }
    // Progressive sampling on a 32^3 volume: the coarse run's 5 passes, then the fine run's.
    let json32 = CString::new(tomodiff::ct::geometry::cone_scan_json([32, 32, 32], 4, 360.0)).unwrap();
    let mut g32 = null_mut();
    assert_eq!(unsafe { td_geometry_from_json(json32.as_ptr(), &mut g32) }, TdStatus::Ok, "{}", last_error());
    unsafe { td_geometry_shapes(g32, null_mut(), ps.as_mut_ptr()) };
    let proj32 = vec![0.1f32; ps.iter().product()];
    let mut vol32 = vec![-7f32; 32 * 32 * 32];
    let mut total = 0usize;
    let s = unsafe { td_reconstruct(prior, g32, proj32.as_ptr(), proj32.len(), &progressive, cpu.as_ptr(), Some(note_total), &mut total as *mut usize as *mut c_void, vol32.as_mut_ptr(), vol32.len()) };
    assert_eq!(s, TdStatus::Cancelled, "{}", last_error());
    assert!(total > 5 && total < from_noise + 5, "5 coarse passes and a fine run from t = 400: {total}");
    unsafe { td_geometry_free(g32) };
    o.memory_budget = 1000;
    let s = unsafe { td_reconstruct(prior, g, proj.as_ptr(), proj.len(), &o, cpu.as_ptr(), None, null_mut(), vol.as_mut_ptr(), vol.len()) };
    assert_eq!(s, TdStatus::Memory);
    assert!(last_error().contains("the budget is"), "{}", last_error());
    unsafe { (td_prior_free(prior), td_geometry_free(g)) };
}

#[test]
fn the_c_example_compiles_and_reconstructs() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("reconstruct");
    let root = crate_dir().join("..");
    let lib = lib_dir();
    assert!(lib.join("libtomodiff_capi.so").exists() || lib.join("libtomodiff_capi.dylib").exists(), "no libtomodiff_capi in {}: build it first with cargo build --release -p tomodiff-capi (scripts/test.sh does)", lib.display());
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2"])
        .arg(root.join("examples/c/reconstruct.c"))
        .arg(format!("-I{}", crate_dir().join("include").display()))
        .arg(format!("-L{}", lib.display()))
        .args(["-ltomodiff_capi", "-lm", "-o"])
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| panic!("running {cc}: {e}"));
    assert!(out.status.success(), "{cc} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let run = Command::new(&exe).arg("2").env("LD_LIBRARY_PATH", &lib).env("DYLD_LIBRARY_PATH", &lib).output().unwrap();
    let text = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "{text}\n{}", String::from_utf8_lossy(&run.stderr));
    let rmse = |name: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} line in:\n{text}"));
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    // The ball's RMS is about 0.0074 /mm: every method must do far better than a zero volume, and
    // the prior (2 DDIM steps; 0.0018 against FDK's 0.0027 when written) better than FDK.
    for m in ["FDK", "CGLS", "prior"] {
        assert!(rmse(m) < 0.004, "{m}: rmse {} in:\n{text}", rmse(m));
    }
    assert!(rmse("prior") < rmse("FDK"), "{text}");
}
