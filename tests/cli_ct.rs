//! The CT commands end to end on tiny inputs, and their errors on bad input.
mod common;
use common::{read_png, run, s};

fn ok(args: &[&str]) -> String {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "{args:?} failed: {err}");
    out
}

fn fails(args: &[&str], needle: &str) {
    let (code, _, err) = run(args);
    assert_eq!(code, 1, "{args:?} should fail; stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: not one line: {err}");
    assert!(err.contains(needle) && !err.contains("panicked"), "{args:?}: {err} (wanted {needle:?})");
}

const GEOMETRY: &str = r#"{"volume": {"shape": [16, 24, 24], "voxel_size": [1, 1, 1]},
  "scan": {"type": "cone", "n_views": 60, "source_origin": 80, "origin_detector": 40, "det_shape": [28, 40]}}"#;

#[test]
fn phantom_project_reconstruct_measure() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let g = d.join("g.json");
    std::fs::write(&g, GEOMETRY).unwrap();
    let (vol, proj, fdk, cg, bp, m) = (d.join("vol.npy"), d.join("proj.npy"), d.join("fdk.nii.gz"), d.join("cgls.npy"), d.join("bp.npy"), d.join("m.json"));
    ok(&["phantom", "shepp-logan", "--geometry", &s(&g), "-o", &s(&vol), "--preview", &s(&d.join("p.png"))]);
    assert!(d.join("p.png").exists());
    ok(&["project", "--geometry", &s(&g), "-i", &s(&vol), "-o", &s(&proj), "--device", "cpu", "--noise-i0", "1e6"]);
    assert_eq!(tomodiff::io::read_array(&proj).unwrap().shape, vec![60, 28, 40]);
    ok(&["fbp", "--geometry", &s(&g), "-i", &s(&proj), "-o", &s(&fdk)]);
    let out = ok(&["iterative", "--method", "cgls", "--iters", "8", "--geometry", &s(&g), "-i", &s(&proj), "-o", &s(&cg), "--device", "emu"]);
    assert!(out.contains("cgls x 8"), "{out}");
    ok(&["backproject", "--geometry", &s(&g), "-i", &s(&proj), "-o", &s(&bp), "--device", "cpu"]);
    let out = ok(&["metrics", "-i", &s(&cg), "--reference", &s(&vol), "--json", &s(&m)]);
    assert!(out.starts_with("PSNR "), "{out}");
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&m).unwrap()).unwrap();
    let psnr = j["psnr"].as_f64().unwrap();
    assert!(psnr > 20.0, "CGLS on 60 views should reconstruct the phantom: {psnr} dB");
    // ASTRA's (rows, views, cols) layout gives the same reconstruction.
    let (pa, fa) = (d.join("pa.npy"), d.join("fa.npy"));
    ok(&["project", "--geometry", &s(&g), "-i", &s(&vol), "-o", &s(&pa), "--device", "cpu", "--astra-layout"]);
    assert_eq!(tomodiff::io::read_array(&pa).unwrap().shape, vec![28, 60, 40]);
    ok(&["fbp", "--geometry", &s(&g), "-i", &s(&pa), "-o", &s(&fa), "--astra-layout"]);
    let (p2, f2) = (d.join("p2.npy"), d.join("f2.npy"));
    ok(&["project", "--geometry", &s(&g), "-i", &s(&vol), "-o", &s(&p2), "--device", "cpu"]);
    ok(&["fbp", "--geometry", &s(&g), "-i", &s(&p2), "-o", &s(&f2)]);
    assert_eq!(tomodiff::io::read_array(&fa).unwrap().data, tomodiff::io::read_array(&f2).unwrap().data);
}

/// A folder with GEOMETRY as g.json and an ellipsoid phantom of its shape as vol.npy.
fn scene() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (g, vol) = (dir.path().join("g.json"), dir.path().join("vol.npy"));
    std::fs::write(&g, GEOMETRY).unwrap();
    ok(&["phantom", "ellipsoids", "--shape", "16,24,24", "-o", &s(&vol)]);
    (dir, g, vol)
}

#[test]
fn bad_ct_input_is_one_line() {
    let (dir, g, vol) = scene();
    let d = dir.path();
    let out = d.join("out.npy");
    // A geometry in which no ray crosses the volume.
    let far = d.join("far.json");
    std::fs::write(&far, GEOMETRY.replace(r#""voxel_size": [1, 1, 1]"#, r#""voxel_size": [1, 1, 1], "origin": [500, 0, 0]"#)).unwrap();
    fails(&["project", "--geometry", &s(&far), "-i", &s(&vol), "-o", &s(&out)], "no ray of the scan crosses the volume");
    let helix = d.join("helix.json");
    std::fs::write(&helix, GEOMETRY.replace("cone", "helix")).unwrap();
    fails(&["project", "--geometry", &s(&helix), "-i", &s(&vol), "-o", &s(&out)], "unknown type \"helix\"");
    // Projections that do not match the geometry.
    let small = d.join("small.npy");
    tomodiff::io::npy::write(&small, &[60, 28, 39], &vec![0.0; 60 * 28 * 39]).unwrap();
    fails(&["fbp", "--geometry", &s(&g), "-i", &s(&small), "-o", &s(&out)], "the geometry needs [60, 28, 40]");
    // NaN in the input.
    let nan = d.join("nan.npy");
    let mut v = vec![0.0f32; 16 * 24 * 24];
    v[77] = f32::NAN;
    std::fs::write(&nan, tomodiff::io::npy::encode(&[16, 24, 24], &v)).unwrap(); // the writer refuses NaN
    fails(&["project", "--geometry", &s(&g), "-i", &s(&nan), "-o", &s(&out)], "flat index 77");
    fails(&["project", "--geometry", &s(&d.join("missing.json")), "-i", &s(&vol), "-o", &s(&out)], "missing.json");
    fails(&["phantom", "brain", "--shape", "8,8,8", "-o", &s(&out)], "unknown phantom");
    fails(&["phantom", "thorax", "--shape", "8,8,8", "--supersample", "0", "-o", &s(&out)], "--supersample: supersampling [8, 8, 8] voxels by 0");
    fails(&["iterative", "--method", "art", "--geometry", &s(&g), "-i", &s(&small), "-o", &s(&out)], "the geometry needs");
    // A memory budget that cannot hold the volume; one that streams slabs of two views.
    fails(&["project", "--geometry", &s(&g), "-i", &s(&vol), "-o", &s(&out), "--device", "emu", "--memory-budget-gb", "0.00002"], "cannot hold the volume");
    assert!(!out.exists(), "no output after a failure");
    let (slabbed, whole) = (d.join("slabbed.npy"), d.join("whole.npy"));
    ok(&["project", "--geometry", &s(&g), "-i", &s(&vol), "-o", &s(&slabbed), "--device", "emu", "--memory-budget-gb", "0.00005"]);
    ok(&["project", "--geometry", &s(&g), "-i", &s(&vol), "-o", &s(&whole), "--device", "emu"]);
    assert_eq!(tomodiff::io::read_array(&slabbed).unwrap().data, tomodiff::io::read_array(&whole).unwrap().data);
}

/// Every output is checked before the work: extension, folder, writability; a refused command
/// leaves no file behind.
#[test]
fn outputs_are_checked_before_the_work() {
    let (dir, g, vol) = scene();
    let d = dir.path();
    let proj = d.join("proj.npy");
    ok(&["project", "--geometry", &s(&g), "-i", &s(&vol), "-o", &s(&proj)]);
    let out = d.join("fdk.npy");
    fails(&["fbp", "--geometry", &s(&g), "-i", &s(&proj), "-o", &s(&d.join("fdk.txt"))], "output must end in .npy, .nii, .nii.gz");
    fails(&["fbp", "--geometry", &s(&g), "-i", &s(&proj), "-o", &s(&out), "--preview", &s(&d.join("missing/p.png"))], "does not exist");
    fails(&["fbp", "--geometry", &s(&g), "-i", &s(&proj), "-o", &s(&out), "--preview", &s(&d.join("p.jpg"))], "output must end in .png");
    fails(&["fbp", "--geometry", &s(&g), "-i", &s(&proj), "-o", &s(d)], "output must end in");
    fails(&["project", "--geometry", &s(&g), "-i", &s(&vol), "-o", &s(&d.join("p.nii.gz"))], "output must end in .npy");
    fails(&["metrics", "-i", &s(&vol), "--reference", &s(&vol), "--json", &s(&d.join("no/m.json"))], "does not exist");
    // The reconstruction refuses before loading a model or sampling anything.
    fails(&["reconstruct", "-g", &s(&g), "-i", &s(&proj), "-o", &s(&d.join("rec.txt")), "--device", "cpu"], "output must end in");
    assert!(!out.exists(), "no volume after a refused preview");
}

/// `preview` stacks volumes as rows at the first one's grey levels: a volume at half the
/// attenuation comes out darker than the reference above it, not stretched to the same range.
#[test]
fn preview_rows_share_the_first_volumes_scale() {
    let (dir, _g, vol) = scene();
    let d = dir.path();
    let a = tomodiff::io::read_array(&vol).unwrap();
    let half: Vec<f32> = a.data.iter().map(|v| 0.5 * v).collect();
    let (hv, one, two) = (d.join("half.npy"), d.join("one.png"), d.join("two.png"));
    tomodiff::io::write_array(&hv, &a.shape, &half, [1.0; 3]).unwrap();
    ok(&["preview", &s(&hv), "-o", &s(&one)]);
    let out = ok(&["preview", &s(&vol), &s(&hv), "-o", &s(&two)]);
    assert!(out.contains("2 rows"), "{out}");
    let ((w1, _, p1), (w2, _, p2)) = (read_png(&one), read_png(&two));
    assert_eq!(w1, w2);
    assert_eq!(p2.len(), 2 * p1.len(), "two rows, each as high as one volume's preview");
    let mean = |p: &[u8]| p.iter().map(|&v| v as f64).sum::<f64>() / p.len() as f64;
    let (top, bottom) = p2.split_at(p1.len());
    assert!(mean(bottom) < 0.75 * mean(top), "the half volume is darker on the reference's scale: {} vs {}", mean(bottom), mean(top));
    assert!(mean(&p1) > 0.9 * mean(top), "alone, it spans its own range: {} vs {}", mean(&p1), mean(top));
    fails(&["preview", &s(&vol), "-o", &s(&d.join("p.jpg"))], "output must end in .png");
    let small = d.join("small.npy");
    tomodiff::io::write_array(&small, &[2, 2, 2], &[0.0; 8], [1.0; 3]).unwrap();
    let bad = d.join("bad.png");
    fails(&["preview", &s(&vol), &s(&small), "-o", &s(&bad)], "the rows need one shape");
    fails(&["preview", &s(&vol), &s(&d.join("missing.npy")), "-o", &s(&bad)], "missing.npy");
    assert!(!bad.exists(), "no picture after a refusal");
}

/// A set of outputs is all or nothing: files written before a failure are removed.
#[test]
fn outputs_are_all_or_nothing() {
    use tomodiff::io::output::Outputs;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.npy"), dir.path().join("b.png"));
    {
        let mut outs = Outputs::default();
        outs.write(&a, |p| tomodiff::io::npy::write(p, &[2], &[1.0, 2.0])).unwrap();
        let e = outs.write(&b, |p| tomodiff::io::npy::write(p, &[1], &[f32::NAN]));
        assert!(e.is_err());
        assert!(a.exists());
    }
    assert!(!a.exists() && !b.exists(), "the first file goes when the second fails");
    let mut outs = Outputs::default();
    outs.write(&a, |p| tomodiff::io::npy::write(p, &[2], &[1.0, 2.0])).unwrap();
    outs.commit();
    assert!(a.exists());
}

/// A NIfTI whose voxel size disagrees with the geometry's is an error unless a flag says which
/// wins; `file` projects with the file's voxels (a 2 mm volume casts longer shadows).
#[test]
fn voxel_size_disagreement_needs_a_decision() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let g = d.join("g.json");
    std::fs::write(&g, GEOMETRY).unwrap();
    let vol = d.join("vol.nii");
    let v: Vec<f32> = (0..16 * 24 * 24).map(|i| (i % 7) as f32 * 0.01).collect();
    tomodiff::io::nifti::write(&vol, &[16, 24, 24], &v, [2.0, 2.0, 2.0]).unwrap();
    let p = |n: &str| s(&d.join(n));
    fails(&["project", "--geometry", &s(&g), "-i", &s(&vol), "-o", &p("a.npy")], "say which wins with --voxel-size-from");
    ok(&["project", "--geometry", &s(&g), "-i", &s(&vol), "-o", &p("geo.npy"), "--voxel-size-from", "geometry"]);
    ok(&["project", "--geometry", &s(&g), "-i", &s(&vol), "-o", &p("file.npy"), "--voxel-size-from", "file"]);
    let sum = |n: &str| tomodiff::io::read_array(&d.join(n)).unwrap().data.iter().map(|x| *x as f64).sum::<f64>();
    assert!(sum("file.npy") > 1.5 * sum("geo.npy"), "2 mm voxels integrate to more than 1 mm ones");
    fails(&["project", "--geometry", &s(&g), "-i", &s(&vol), "-o", &p("b.npy"), "--voxel-size-from", "both"], "takes file or geometry");
}
