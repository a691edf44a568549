//! scripts/gpu-check.sh, the one command of a GPU run, rehearsed (`--rehearse`: emu and cpu, tiny
//! sizes, one small test binary): the report it leaves (report.json, report.md, logs), and a stage
//! that fails recorded as failed without stopping the stages after it.
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// Each rehearsal keeps both cores busy: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const STAGES: [&str; 6] = ["env", "correctness", "bench", "recon", "train", "ncu"];

/// The repository root: $TOMODIFF_REPO when set (test binaries run from a GPU bundle), else where
/// the tests were built.
fn repo() -> PathBuf {
    std::env::var("TOMODIFF_REPO").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// gpu-check.sh runs every test binary, this one too: there it must not rehearse itself again.
fn inside_gpu_check() -> bool {
    if std::env::var_os("GPU_CHECK_ACTIVE").is_some() {
        eprintln!("gpu_check: skipped inside a gpu-check.sh run (GPU_CHECK_ACTIVE is set)");
        return true;
    }
    false
}

/// The emulator's test binary beside this one: cargo's target/<profile>/deps/emulator-<hash>, or
/// tests/emulator in a GPU bundle; the newest if there are several.
fn emulator_binary() -> PathBuf {
    let me = std::env::current_exe().expect("current_exe");
    let dir = me.parent().expect("the test binary's folder").to_path_buf();
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            (n == "emulator" || (n.starts_with("emulator-") && !n.contains('.'))) && p.is_file()
        })
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    match found.pop() {
        Some((_, p)) => p,
        None => panic!(
            "no emulator test binary (emulator-<hash>) beside {}: build every test first (`cargo test` builds them all; `cargo test --test gpu_check` alone does not)",
            me.display()
        ),
    }
}

/// Runs `bash scripts/gpu-check.sh --rehearse OUT` with a folder holding only the emulator's test
/// binary; returns the exit code, stderr, report.json and report.md.
fn rehearse(fake_fail: Option<&str>) -> (tempfile::TempDir, i32, String, Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let bins = dir.path().join("bins");
    std::fs::create_dir(&bins).unwrap();
    std::os::unix::fs::symlink(emulator_binary(), bins.join("emulator")).unwrap();
    let out = dir.path().join("out");
    let bin = std::env::var("TOMODIFF_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tomodiff").into());
    let mut c = Command::new("bash");
    c.arg(repo().join("scripts/gpu-check.sh")).arg("--rehearse").arg(&out);
    // Budgets, mirrors and fake failures of the caller's environment stay out.
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("GPU_CHECK_")) {
            c.env_remove(&k);
        }
    }
    c.env("TOMODIFF_BIN", &bin).env("TOMODIFF_TEST_BINS", &bins).env("TOMODIFF_REPO", repo());
    if let Some(stage) = fake_fail {
        c.env("GPU_CHECK_FAKE_FAIL", stage);
    }
    let t0 = std::time::Instant::now();
    let o = c.output().expect("running bash scripts/gpu-check.sh");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    eprintln!("gpu-check.sh --rehearse (fake fail {fake_fail:?}): exit {:?} in {:.1} s", o.status.code(), t0.elapsed().as_secs_f64());
    let json = std::fs::read_to_string(out.join("report.json")).unwrap_or_else(|e| panic!("report.json: {e}; stderr:\n{err}"));
    let rep: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("report.json does not parse: {e}\n{json}"));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap_or_else(|e| panic!("report.md: {e}; stderr:\n{err}"));
    (dir, o.status.code().unwrap_or(-1), err, rep, md)
}

fn stage<'a>(rep: &'a Value, name: &str) -> &'a Value {
    rep["stages"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no stage {name}"))
}

/// The six stages in order, each with a status and its seconds; report.md has a section for each.
fn assert_shape(rep: &Value, md: &str, err: &str) {
    let stages = rep["stages"].as_array().expect("stages");
    let names: Vec<&str> = stages.iter().map(|s| s["name"].as_str().unwrap_or("?")).collect();
    assert_eq!(names, STAGES, "{err}");
    for s in stages {
        assert!(s["status"].is_string(), "{s}");
        assert!(s["seconds"].as_f64().is_some_and(|t| t >= 0.0), "stage {} has no seconds: {s}", s["name"]);
    }
    for name in STAGES {
        assert!(md.contains(&format!("## {name}\n")), "report.md has no section for {name}:\n{md}");
    }
}

#[test]
fn rehearsal_reports_every_stage() {
    if inside_gpu_check() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (dir, code, err, rep, md) = rehearse(None);
    assert_eq!(code, 0, "gpu-check.sh --rehearse failed; stderr:\n{err}\nreport.md:\n{md}");
    assert_shape(&rep, &md, &err);
    for name in ["env", "correctness", "bench", "recon", "train"] {
        assert_eq!(stage(&rep, name)["status"], "pass", "{name}: {}", stage(&rep, name));
    }
    assert_eq!(stage(&rep, "ncu")["status"], "skipped");
    assert_eq!(rep["verdict"]["ok"], true);

    let corr = &stage(&rep, "correctness")["figures"];
    let bins = corr["binaries"].as_array().expect("binaries");
    assert!(bins.iter().any(|b| b["name"] == "emulator" && b["status"] == "pass"), "{corr}");
    let diffs = corr["diffs"].as_array().expect("diffs");
    assert!(!diffs.is_empty(), "no max |diff| line parsed: {corr}");
    assert!(diffs.iter().all(|d| d["max_diff"].is_f64() && d["device"].is_string() && d["kernel"].is_string()), "{corr}");

    let bench = &stage(&rep, "bench")["figures"];
    for what in ["gemm", "unet"] {
        let ms = bench[what]["tomodiff"]["ms"].as_f64();
        assert!(ms.is_some_and(|ms| ms > 0.0), "bench {what}: {}", bench[what]);
        assert!(bench[what]["tomodiff"]["gflops"].is_f64(), "{}", bench[what]);
    }
    // Every step that ran left its log.
    for s in rep["stages"].as_array().unwrap() {
        for step in s["steps"].as_array().unwrap() {
            if step["status"] != "skipped" {
                let log = dir.path().join("out").join(step["log"].as_str().expect("log"));
                assert!(log.is_file(), "{}", log.display());
            }
        }
    }
}

#[test]
fn failed_stage_is_recorded_and_later_stages_run() {
    if inside_gpu_check() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The bench stage runs a tomodiff that does not exist.
    let (_dir, code, err, rep, md) = rehearse(Some("bench"));
    assert_eq!(code, 1, "a failed stage must fail the run; stderr:\n{err}");
    assert_shape(&rep, &md, &err);
    let bench = stage(&rep, "bench");
    assert_eq!(bench["status"], "fail", "{bench}");
    assert!(bench["why"].as_str().unwrap().contains("gemm"), "{bench}");
    for name in ["env", "correctness", "recon", "train"] {
        assert_eq!(stage(&rep, name)["status"], "pass", "{name} after a failed bench: {}", stage(&rep, name));
    }
    assert_eq!(stage(&rep, "ncu")["status"], "skipped");
    assert_eq!(rep["verdict"]["failed"], serde_json::json!(["bench"]));
    assert_eq!(rep["verdict"]["ok"], false);
    assert!(md.contains("| bench | fail |"), "{md}");
}
