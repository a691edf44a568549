//! `tomodiff demo` and `tomodiff reconstruct` end to end, and their refusals of bad input.
mod common;
use common::{run, s};

fn psnr(v: &serde_json::Value, method: &str) -> f64 {
    v[method]["psnr"].as_f64().unwrap_or_else(|| panic!("no {method} PSNR in {v}"))
}

/// The demo (with fewer steps than its defaults, to stay quick) beats FDK and CGLS on its held-out
/// phantom; its files feed `reconstruct`, whose metrics JSON holds the three methods.
#[test]
fn demo_beats_the_baselines_and_feeds_reconstruct() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let (code, o, e) = run(&["demo", "--out", &s(&demo), "--steps", "10", "--rounds", "1", "--device", "cpu"]);
    assert_eq!(code, 0, "{e}");
    assert!(o.contains("diffusion prior") && o.contains("FDK") && o.contains("CGLS"), "{o}");
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(demo.join("metrics.json")).unwrap()).unwrap();
    let (d, f, c) = (psnr(&m, "diffusion"), psnr(&m, "fdk"), psnr(&m, "cgls"));
    eprintln!("demo, 10 steps: prior {d:.2} dB, FDK {f:.2} dB, CGLS {c:.2} dB");
    assert!(d > f && d > c, "prior {d:.2} dB, FDK {f:.2}, CGLS {c:.2}");
    let settings = &m["prior_settings"];
    assert_eq!((settings["steps"].as_u64(), settings["rounds"].as_u64(), settings["final_dc"].as_bool()), (Some(10), Some(1), Some(false)), "{m}");
    assert_eq!(settings["last_pass_solved"].as_bool(), Some(false), "{m}");
    assert_eq!(settings["average_below"].as_u64(), Some(150), "the default averaging: {m}");
    assert!(settings["weights"].as_str().is_some_and(|w| w.contains("(shipped)")), "the prior is named: {m}");
    for f in ["geometry.json", "projections.npy", "truth.nii.gz", "fdk.nii.gz", "cgls.nii.gz", "diffusion.nii.gz", "side-by-side.png"] {
        assert!(demo.join(f).exists(), "{f} missing");
    }
    // The scan comes from a phantom twice as fine as the grid (no inverse crime), and the truth is
    // that phantom averaged over each voxel, as eval's (and training's default since --supersample).
    let geometry = tomodiff::ct::Geometry::from_json(&std::fs::read_to_string(demo.join("geometry.json")).unwrap()).unwrap();
    let averaged = tomodiff::ct::phantom::averaged("chest", &geometry.volume, 20_261_124, 2).unwrap();
    assert_eq!(tomodiff::io::read_array(&demo.join("truth.nii.gz")).unwrap().data, averaged, "the demo's truth is the voxel-averaged phantom");
    let out = dir.path().join("recon.nii.gz");
    let (g, p, t) = (s(&demo.join("geometry.json")), s(&demo.join("projections.npy")), s(&demo.join("truth.nii.gz")));
    let (code, o, e) = run(&[
        "reconstruct", "-g", &g, "-i", &p, "-o", &s(&out), "--steps", "2", "--rounds", "1", "--start", "fdk:200", "--reference", &t,
        "--preview", &s(&dir.path().join("recon.png")), "--device", "cpu",
    ]);
    assert_eq!(code, 0, "{e}");
    assert!(e.contains("memory: about") && e.contains("network passes"), "{e}");
    assert!(o.contains("metrics written"), "{o}");
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("recon.metrics.json")).unwrap()).unwrap();
    assert!(psnr(&m, "diffusion") > 10.0 && psnr(&m, "fdk") > 10.0 && psnr(&m, "cgls") > 10.0, "{m}");
    assert_eq!((m["prior_settings"]["start"].as_str(), m["prior_settings"]["steps"].as_u64()), (Some("fdk:200"), Some(2)), "{m}");
    // A single pass keeps its solve whatever final_dc says, and the report says so.
    let one = dir.path().join("one.npy");
    let (code, _, e) = run(&["reconstruct", "-g", &g, "-i", &p, "-o", &s(&one), "--steps", "1", "--rounds", "1", "--reference", &t, "--average-below", "off", "--device", "cpu"]);
    assert_eq!(code, 0, "{e}");
    let m1: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("one.metrics.json")).unwrap()).unwrap();
    assert_eq!((m1["prior_settings"]["final_dc"].as_bool(), m1["prior_settings"]["last_pass_solved"].as_bool()), (Some(false), Some(true)), "{m1}");
    assert!(m1["prior_settings"]["average_below"].is_null(), "--average-below off: {m1}");
    let v = tomodiff::io::read_array(&out).unwrap();
    assert_eq!(v.shape, vec![64, 64, 64]);
    assert!(dir.path().join("recon.png").exists());

    // Refusals: one message naming the problem, a non-zero exit, no output written.
    let bad = dir.path().join("bad.npy");
    tomodiff::io::npy::write(&bad, &[3, 4, 5], &[0.0; 60]).unwrap();
    let none = dir.path().join("none.nii.gz");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["-i".into(), s(&bad)], "bad.npy: projections of shape [3, 4, 5]"),
        (vec!["-i".into(), p.clone(), "--memory-budget-gb".into(), "0.001".into()], "GiB"),
        (vec!["-i".into(), p.clone(), "--start".into(), "fdk:5000".into()], "--start"),
        (vec!["-i".into(), p.clone(), "--eta".into(), "2".into()], "--eta must be in [0, 1]"),
        (vec!["-i".into(), p.clone(), "--batch".into(), "0".into()], "--batch must be at least 1"),
        (vec!["-i".into(), p.clone(), "--metrics".into(), s(&dir.path().join("m.json"))], "--metrics needs --reference"),
        (vec!["-i".into(), p.clone(), "--gamma=-1".into()], "gamma"),
        (vec!["-i".into(), p.clone(), "--samples".into(), "0".into()], "--samples must be at least 1"),
        (vec!["-i".into(), p.clone(), "--average-below".into(), "1000".into()], "--average-below \"1000\": expected a timestep in 0..999, or off"),
        (vec!["-i".into(), p.clone(), "--astra-layout".into()], "(rows, views, cols)"),
        (vec!["-i".into(), p.clone(), "--weights".into(), s(&bad)], "--config"),
    ];
    for (extra, want) in cases {
        let mut args = vec!["reconstruct".to_string(), "-g".into(), g.clone(), "-o".into(), s(&none), "--device".into(), "cpu".into(), "--steps".into(), "1".into()];
        args.extend(extra);
        let refs: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
        let (code, _, e) = run(&refs);
        assert!(code != 0 && e.contains(want), "{args:?}: {e}");
        assert!(!e.contains("panicked"), "{e}");
        assert!(!none.exists(), "{args:?} wrote its output");
        if want.starts_with("--samples") {
            assert!(!e.contains("prior:"), "the settings are refused before the prior loads: {e}");
        }
    }
    let bad_s = s(&bad);
    // Refused before any work, or failing in it (over the memory budget, after FDK and CGLS):
    // no folder, no file.
    for (args, want) in [
        (vec!["--arc-deg", "400"], "--arc-deg must be in (0, 360] degrees, got 400"),
        (vec!["--views", "0"], "--views must be at least 1, got 0"),
        (vec!["--eta", "3"], "--eta"),
        (vec!["--steps", "0"], "--steps must be at least 1"),
        (vec!["--start", "fdk:0"], "--start"),
        (vec!["--average-below", "last"], "--average-below"),
        (vec!["--weights", &bad_s], "--config"),
        (vec!["--memory-budget-gb", "0.001", "--device", "cpu"], "GiB"),
    ] {
        let mut all = vec!["demo", "--out"];
        let d2 = s(&dir.path().join("d2"));
        all.push(&d2);
        all.extend(args);
        let (code, _, e) = run(&all);
        assert!(code != 0 && e.contains(want), "{all:?}: {e}");
        assert!(!dir.path().join("d2").exists(), "a refused or failed demo left its folder");
    }
    let (code, o, e) = run(&["demo", "--out", &s(&dir.path().join("no/such/folder")), "--device", "cpu"]);
    assert!(code != 0 && e.contains("its parent") && e.contains("no/such") && e.contains("is not an existing folder"), "{e}");
    assert!(!o.contains("held-out chest phantom"), "an unusable --out is refused before the work: {o}");
    let nan = dir.path().join("nan.npy");
    let mut proj = tomodiff::io::read_array(&demo.join("projections.npy")).unwrap();
    proj.data[7] = f32::NAN;
    std::fs::write(&nan, tomodiff::io::npy::encode(&proj.shape, &proj.data)).unwrap(); // the writer refuses NaN
    let (code, _, e) = run(&["reconstruct", "-g", &g, "-i", &s(&nan), "-o", &s(&none), "--device", "cpu"]);
    assert!(code != 0 && e.contains("nan.npy") && e.contains("non-finite value (NaN) at flat index 7"), "{e}");
    assert_eq!(e.matches("non-finite").count(), 1, "said once: {e}");
}
