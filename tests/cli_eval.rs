//! `tomodiff eval`: the protocol's table and JSON over held-out volumes, and its refusals.
mod common;
use common::{run, s};

/// Two scans (8 views over 180 degrees, 16 views over 120) of two held-out chests: one table row
/// per scan and method, every volume's metrics in the JSON, and the prior (3 DDIM steps) ahead of
/// CGLS on the sparse-view scan. A scan named twice runs once.
#[test]
fn eval_reports_every_scan_and_method() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("eval.md");
    let args = ["eval", "--volumes", "2", "--views", "8,8", "--limited-deg", "120", "--beams", "parallel,parallel", "--steps", "3", "--rounds", "1"];
    let pics = dir.path().join("previews");
    let (code, o, e) = run(&[&args[..], &["--device", "cpu", "--output", &s(&md), "--previews", &s(&pics)]].concat());
    assert_eq!(code, 0, "{e}");
    // One picture per scan: the truth and the three methods as rows, each row as high as the
    // enlarged 64-voxel slices plus its gap.
    for name in ["parallel-8views-180deg.png", "parallel-16views-120deg.png"] {
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(pics.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))));
        let h = dec.read_info().unwrap().info().height as usize;
        assert_eq!(h, 4 * (tomodiff::io::preview::pane_pixels([64, 64, 64], [1.0; 3])[1] + tomodiff::io::preview::GAP), "{name}");
    }
    let table = std::fs::read_to_string(&md).unwrap();
    assert!(o.contains(&table), "the table is printed as written");
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| parallel")).collect();
    assert_eq!(rows.len(), 6, "{table}");
    for (scan, method) in [("8 views / 180 deg", "FBP (Hann)"), ("16 views / 120 deg", "CGLS (20 iters)"), ("16 views / 120 deg", "prior")] {
        assert!(rows.iter().any(|r| r.contains(scan) && r.contains(method)), "{scan} {method} missing:\n{table}");
    }
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("eval.json")).unwrap()).unwrap();
    let cases = j["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    let psnr = |case: usize, method: &str| -> Vec<f64> {
        let vols = cases[case]["methods"][method]["volumes"].as_array().unwrap_or_else(|| panic!("{method} missing in {j}"));
        vols.iter().map(|v| v["psnr"].as_f64().unwrap()).collect()
    };
    assert_eq!(psnr(0, "fdk").len(), 2);
    let (p, c) = (psnr(0, "diffusion"), psnr(0, "cgls"));
    assert!(p.iter().zip(&c).all(|(p, c)| p > c), "prior {p:?} vs CGLS {c:?} at 8 views");
    assert_eq!(cases[1]["arc_deg"], 120.0);
    assert_eq!((j["prior_settings"]["steps"].as_u64(), j["prior_settings"]["final_dc"].as_bool()), (Some(3), Some(false)), "the settings recorded: {j}");
    assert!(j["prior_settings"]["weights"].as_str().is_some_and(|w| w.contains("(shipped)")), "the prior is named: {j}");
    // Each method's wall time per volume: the prior's network passes take longer than FBP.
    let secs = |method: &str| -> Vec<f64> { cases[0]["methods"][method]["seconds"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect() };
    let (sp, sf) = (secs("diffusion"), secs("fdk"));
    assert!(sp.len() == 2 && sf.len() == 2 && sp.iter().zip(&sf).all(|(p, f)| p > f && *f >= 0.0), "prior {sp:?} vs FBP {sf:?}");
    assert!(table.lines().nth(2).unwrap().ends_with("| seconds |"), "{table}");
    // The two volumes are different seeds: their figures differ.
    assert_ne!(c[0], c[1]);
}

#[test]
fn eval_refuses_bad_input_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("e.md");
    for (args, want) in [
        (vec!["--phantom", "ellipsoids"], "expected chest or thorax"),
        (vec!["--beams", "fan"], "unknown beam \"fan\""),
        (vec!["--views", "--limited-deg"], "no scans to run"),
        (vec!["--views", "0"], "--views: views must be positive, got 0"),
        (vec!["--limited-views", "0"], "--limited-views: views must be positive, got 0"),
        (vec!["--limited-deg", "400"], "--limited-deg: arcs must be in (0, 360] degrees, got 400"),
        (vec!["--shape", "64,64"], "three values"),
    ] {
        let (code, _, e) = run(&[&["eval", "--no-prior", "--output", &s(&out)], &args[..]].concat());
        assert!(code != 0 && e.contains(want), "{args:?}: {e}");
    }
    // The prior's settings are checked before any volume is made (which would print its rows).
    for (args, want) in [(vec!["--steps", "0"], "--steps must be at least 1"), (vec!["--eta", "2"], "--eta must be in [0, 1]")] {
        let (code, _, e) = run(&[&["eval", "--volumes", "1", "--views", "8", "--limited-deg", "--output", &s(&out)], &args[..]].concat());
        assert!(!e.contains("volume 1"), "{args:?}: work began: {e}");
        assert!(code != 0 && e.contains(want), "{args:?}: {e}");
    }
    let (code, _, e) = run(&["eval", "--no-prior", "--output", &s(&dir.path().join("e.txt"))]);
    assert!(code != 0 && e.contains(".md"), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
}
