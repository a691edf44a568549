//! The Siddon pair held to the truth: the geometry convention against hand-computed rays, exact
//! chords, the adjoint identity on random geometries of every type, and kernels against the CPU.
mod common;
use common::*;
use rand::Rng;
use tomodiff::ct::{siddon, Geometry};
use tomodiff::{DType, Device, Tensor};

fn close3(a: [f64; 3], b: [f64; 3]) -> bool {
    (0..3).all(|i| (a[i] - b[i]).abs() < 1e-9)
}

#[test]
fn circular_convention_by_hand() {
    let cone = Geometry::from_json(
        r#"{"volume": {"shape": [4, 4, 4]}, "scan": {"type": "cone", "angles_deg": [90], "source_origin": 100,
            "origin_detector": 50, "det_shape": [3, 5], "det_spacing": [2.0, 1.5]}}"#,
    )
    .unwrap();
    // b = 90 deg: source on +y, detector centre on -y, u = 1.5 (-1, 0, 0), v = 2 (0, 0, 1).
    // Pixel (r=0, c=4): fc = 2, fr = -1 -> (-3, -50, -2).
    let (o, d, t0, t1) = cone.ray(0, 0, 4);
    assert!(close3(o, [0.0, 100.0, 0.0]), "{o:?}");
    assert!(close3(d, [-3.0, -150.0, -2.0]), "{d:?}");
    assert_eq!((t0, t1), (0.0, 1.0));

    let fan = Geometry::from_json(
        r#"{"volume": {"shape": [4, 4, 4]}, "scan": {"type": "fan", "angles_deg": [0], "source_origin": 100,
            "origin_detector": 50, "det_shape": [3, 5], "det_spacing": [2.0, 1.5]}}"#,
    )
    .unwrap();
    // b = 0: source on +x; a fan ray stays in its row's z-plane (row 2: z = +2).
    let (o, d, ..) = fan.ray(0, 2, 0);
    assert!(close3(o, [100.0, 0.0, 2.0]) && close3(d, [-150.0, -3.0, 0.0]), "{o:?} {d:?}");

    let par = Geometry::from_json(
        r#"{"volume": {"shape": [4, 4, 4]}, "scan": {"type": "parallel", "angles_deg": [0], "det_shape": [1, 3],
            "det_offset": [0.5, 0.25]}}"#,
    )
    .unwrap();
    // b = 0: rays along -x through pixel centres on the y axis, shifted by the offsets.
    let (o, d, ..) = par.ray(0, 0, 2);
    assert!(close3(o, [0.0, 1.25, 0.5]) && close3(d, [-1.0, 0.0, 0.0]), "{o:?} {d:?}");
    // Default arcs: 180 deg for parallel, 360 for divergent beams.
    let p = Geometry::from_json(r#"{"volume": {"shape": [2, 2, 2]}, "scan": {"type": "parallel", "n_views": 4, "det_shape": [2, 4]}}"#).unwrap();
    assert_eq!(p.angles_deg.unwrap(), vec![0.0, 45.0, 90.0, 135.0]);
}

/// Exact length of the segment of the ray (o + t d, t in [t0, t1]) inside [lo, hi], in f64.
fn chord(o: [f64; 3], d: [f64; 3], t0: f64, t1: f64, lo: [f64; 3], hi: [f64; 3]) -> f64 {
    let (mut a, mut b) = (t0, t1);
    for k in 0..3 {
        if d[k] == 0.0 {
            if o[k] < lo[k] || o[k] > hi[k] {
                return 0.0;
            }
            continue;
        }
        let (x, y) = ((lo[k] - o[k]) / d[k], (hi[k] - o[k]) / d[k]);
        a = a.max(x.min(y));
        b = b.min(x.max(y));
    }
    if b <= a { 0.0 } else { (b - a) * (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt() }
}

fn cone_json(rng: &mut impl Rng, shape: [usize; 3], det: [usize; 2], n_views: usize) -> String {
    let angles: Vec<f64> = (0..n_views).map(|_| rng.random_range(0.0..360.0)).collect();
    format!(
        r#"{{"volume": {{"shape": {shape:?}, "voxel_size": [0.9, 1.1, 0.7], "origin": [0.6, -0.4, 0.3]}},
            "scan": {{"type": "cone", "angles_deg": {angles:?}, "source_origin": 60, "origin_detector": 40,
            "det_shape": {det:?}, "det_spacing": [0.8, 0.9], "det_offset": [0.7, -1.3]}}}}"#
    )
}

#[test]
fn exact_chords_through_a_cuboid() {
    let mut rng = rng("chords");
    let shape = [9, 10, 11];
    let g = Geometry::from_json(&cone_json(&mut rng, shape, [13, 17], 5)).unwrap();
    // A cuboid of ones: k in [2, 6), j in [3, 8), i in [1, 9).
    let mut vol = vec![0f32; 9 * 10 * 11];
    for k in 2..6 {
        for j in 3..8 {
            for i in 1..9 {
                vol[(k * 10 + j) * 11 + i] = 1.0;
            }
        }
    }
    let c = g.volume.corner();
    let s = g.volume.step_xyz();
    let lo = [c[0] + s[0], c[1] + 3.0 * s[1], c[2] + 2.0 * s[2]];
    let hi = [c[0] + 9.0 * s[0], c[1] + 8.0 * s[1], c[2] + 6.0 * s[2]];
    let mut want = vec![0f32; g.n_rays()];
    let [rows, cols] = g.det_shape;
    let mut hits = 0;
    for v in 0..g.n_views() {
        for r in 0..rows {
            for cc in 0..cols {
                let (o, d, t0, t1) = g.ray(v, r, cc);
                let l = chord(o, d, t0, t1, lo, hi);
                hits += (l > 0.0) as usize;
                want[(v * rows + r) * cols + cc] = l as f32;
            }
        }
    }
    assert!(hits > 100, "the test geometry must hit the cuboid ({hits} rays do)");
    let mut devs = vec![Device::Cpu];
    devs.extend(kernel_devices("chords"));
    for dev in devs {
        let p = siddon::Projector::new(g.clone(), &dev).unwrap();
        let vt = Tensor::from_f32(&vol, &shape, DType::F32, &dev).unwrap();
        let mut pt = Tensor::full(&g.proj_shape(), f32::NAN, DType::F32, &dev).unwrap();
        p.forward(&vt, &mut pt).unwrap();
        // Relative 1e-5 of the chord (of a voxel, for grazing rays).
        assert_close(&format!("chords {}", dev.name()), &pt.to_f32_vec().unwrap(), &want, |i| 1e-5 * want[i].max(1.0));
    }
}

/// Random geometries of every type: odd shapes, offset volumes and detectors, rays that miss.
fn random_geometries(rng: &mut impl Rng) -> Vec<Geometry> {
    let mut out = Vec::new();
    let vol = r#""volume": {"shape": [7, 6, 9], "voxel_size": [1.2, 0.8, 1.0], "origin": [0.5, 1.5, -1.0]}"#;
    let ang = |rng: &mut dyn rand::RngCore, n: usize| -> Vec<f64> { (0..n).map(|_| rng.random_range(0.0..360.0)).collect() };
    // Detectors wider than the volume's shadow, so some rays miss.
    out.push(format!(r#"{{{vol}, "scan": {{"type": "parallel", "angles_deg": {:?}, "det_shape": [9, 17], "det_spacing": [1.1, 0.9], "det_offset": [0.33, 0.8]}}}}"#, ang(rng, 4)));
    out.push(format!(r#"{{{vol}, "scan": {{"type": "fan", "angles_deg": {:?}, "source_origin": 30, "origin_detector": 25, "det_shape": [5, 21], "det_spacing": [1.3, 1.2]}}}}"#, ang(rng, 3)));
    out.push(format!(r#"{{{vol}, "scan": {{"type": "cone", "angles_deg": {:?}, "source_origin": 35, "origin_detector": 20, "det_shape": [11, 19], "det_spacing": [1.4, 1.3], "det_offset": [-2.0, 1.5]}}}}"#, ang(rng, 3)));
    let mut recs = Vec::new();
    for _ in 0..3 {
        let r: [f64; 3] = [rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0), rng.random_range(-0.3..0.3)];
        recs.push(format!(r#"{{"ray": {r:?}, "det": [0.3, -0.2, 0.4], "u": [0.0, 0.9, 0.2], "v": [0.1, 0.0, 1.1]}}"#));
    }
    out.push(format!(r#"{{{vol}, "scan": {{"type": "parallel_vec", "det_shape": [10, 14], "views": [{}]}}}}"#, recs.join(",")));
    let mut recs = Vec::new();
    for _ in 0..3 {
        let b: f64 = rng.random_range(0.0..std::f64::consts::TAU);
        let (s, c) = b.sin_cos();
        recs.push(format!(
            r#"{{"source": [{}, {}, 3.0], "det": [{}, {}, -1.0], "u": [{}, {}, 0.1], "v": [0.0, 0.1, 1.0]}}"#,
            40.0 * c, 40.0 * s, -20.0 * c, -20.0 * s, -1.1 * s, 1.1 * c
        ));
    }
    out.push(format!(r#"{{{vol}, "scan": {{"type": "cone_vec", "det_shape": [12, 16], "views": [{}]}}}}"#, recs.join(",")));
    out.iter().map(|j| Geometry::from_json(j).unwrap()).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}
fn norm(a: &[f32]) -> f64 {
    dot(a, a).sqrt()
}

#[test]
fn adjoint_identity_on_every_geometry_type() {
    let mut rng = rng("adjoint");
    let mut devs = vec![Device::Cpu];
    devs.extend(kernel_devices("adjoint"));
    for g in random_geometries(&mut rng) {
        let x = uniform(&mut rng, g.volume.len(), 0.0, 1.0);
        let y = uniform(&mut rng, g.n_rays(), 0.0, 1.0);
        for dev in &devs {
            let p = siddon::Projector::new(g.clone(), dev).unwrap();
            let xt = Tensor::from_f32(&x, &g.volume.shape, DType::F32, dev).unwrap();
            let yt = Tensor::from_f32(&y, &g.proj_shape(), DType::F32, dev).unwrap();
            let mut ax = Tensor::full(&g.proj_shape(), f32::NAN, DType::F32, dev).unwrap();
            let mut aty = Tensor::full(&g.volume.shape, f32::NAN, DType::F32, dev).unwrap();
            p.forward(&xt, &mut ax).unwrap();
            p.adjoint(&yt, &mut aty).unwrap();
            let (ax, aty) = (ax.to_f32_vec().unwrap(), aty.to_f32_vec().unwrap());
            let misses = ax.iter().filter(|v| **v == 0.0).count();
            let rel = (dot(&ax, &y) - dot(&x, &aty)).abs() / (norm(&ax) * norm(&y));
            let tol = if matches!(dev, Device::Cpu) { 1e-6 } else { 1e-5 };
            eprintln!("adjoint {:?} {}: rel {rel:.2e} ({misses} of {} rays miss)", g.kind, dev.name(), ax.len());
            assert!(rel <= tol, "{:?} on {}: |<Ax,y> - <x,A^T y>| / (|Ax||y|) = {rel:e}", g.kind, dev.name());
            assert!(misses > 0 && misses < ax.len(), "{:?}: the geometry must have rays that hit and rays that miss", g.kind);
        }
    }
}

#[test]
fn kernels_match_cpu_projector() {
    let mut rng = rng("siddon-kernels");
    for g in random_geometries(&mut rng) {
        let x = uniform(&mut rng, g.volume.len(), 0.0, 1.0);
        let y = uniform(&mut rng, g.n_rays(), 0.0, 1.0);
        let run = |dev: &Device| {
            let p = siddon::Projector::new(g.clone(), dev).unwrap();
            let mut ax = Tensor::full(&g.proj_shape(), f32::NAN, DType::F32, dev).unwrap();
            let mut aty = Tensor::full(&g.volume.shape, f32::NAN, DType::F32, dev).unwrap();
            p.forward(&Tensor::from_f32(&x, &g.volume.shape, DType::F32, dev).unwrap(), &mut ax).unwrap();
            p.adjoint(&Tensor::from_f32(&y, &g.proj_shape(), DType::F32, dev).unwrap(), &mut aty).unwrap();
            (ax.to_f32_vec().unwrap(), aty.to_f32_vec().unwrap())
        };
        let (fa, fb) = run(&Device::Cpu);
        let scale_f = fa.iter().cloned().fold(0.0f32, f32::max);
        let scale_b = fb.iter().cloned().fold(0.0f32, f32::max);
        for dev in kernel_devices("siddon-kernels") {
            let (ka, kb) = run(&dev);
            assert_close(&format!("siddon fwd {:?} {}", g.kind, dev.name()), &ka, &fa, |_| 1e-5 * scale_f);
            assert_close(&format!("siddon adj {:?} {}", g.kind, dev.name()), &kb, &fb, |_| 1e-5 * scale_b);
        }
    }
}

#[test]
fn bad_geometry_names_the_problem() {
    let base = |scan: &str| format!(r#"{{"volume": {{"shape": [8, 8, 8]}}, "scan": {scan}}}"#);
    let cases = [
        (base(r#"{"type": "helix", "n_views": 4, "det_shape": [8, 8]}"#), "unknown type \"helix\""),
        (base(r#"{"type": "parallel", "n_views": 0, "det_shape": [8, 8]}"#), "scan.n_views"),
        (base(r#"{"type": "parallel", "n_views": 4, "det_shape": [8, 0]}"#), "scan.det_shape[1]"),
        (base(r#"{"type": "parallel", "n_views": 4, "det_shape": [8, 8], "det_spacing": [1, -1]}"#), "scan.det_spacing[1]"),
        (base(r#"{"type": "cone", "n_views": 4, "det_shape": [8, 8], "origin_detector": 10}"#), "scan.source_origin"),
        (base(r#"{"type": "cone", "n_views": 4, "det_shape": [8, 8], "source_origin": 2, "origin_detector": 10}"#), "inside the volume"),
        (base(r#"{"type": "parallel", "n_views": 4, "angles_deg": [1], "det_shape": [8, 8]}"#), "not both"),
        (base(r#"{"type": "parallel", "n_views": 4, "det_shape": [8, 8], "det_offset": [0, 500]}"#), "no ray of the scan crosses the volume"),
        (base(r#"{"type": "cone_vec", "det_shape": [8, 8], "views": [{"ray": [1, 0, 0], "det": [0, 0, 0], "u": [0, 1, 0], "v": [0, 0, 1]}]}"#), "give `source`"),
        (r#"{"volume": {"shape": [8, 8, 8], "voxel_size": [1, 0, 1]}, "scan": {"type": "parallel", "n_views": 1, "det_shape": [8, 8]}}"#.to_string(), "volume.voxel_size[1]"),
        (base(r#"{"type": "parallel", "n_views": 4, "det_shape": [8, 8], "colour": 3}"#), "unknown field `colour`"),
        // Fields the scan type does not read are named, not ignored.
        (base(r#"{"type": "parallel", "n_views": 4, "det_shape": [8, 8], "source_origin": 500}"#), "scan.source_origin: does not apply to a parallel scan"),
        (base(r#"{"type": "cone", "n_views": 4, "det_shape": [8, 8], "source_origin": 50, "origin_detector": 50, "views": []}"#), "scan.views: does not apply to a cone scan"),
        (base(r#"{"type": "cone_vec", "det_shape": [8, 8], "det_spacing": [2, 2], "views": [{"source": [-50, 0, 0], "det": [50, 0, 0], "u": [0, 1, 0], "v": [0, 0, 1]}]}"#), "scan.det_spacing: does not apply to a cone_vec scan (it reads views)"),
        (base(r#"{"type": "parallel_vec", "n_views": 1, "det_shape": [8, 8], "views": [{"ray": [1, 0, 0], "det": [0, 0, 0], "u": [0, 1, 0], "v": [0, 0, 1]}]}"#), "scan.n_views: does not apply"),
        (base(r#"{"type": "parallel", "n_views": 4, "det_shape": [8, 8], "start_deg": NaN}"#), "line 1"),
    ];
    for (json, needle) in cases {
        let e = Geometry::from_json(&json).unwrap_err().to_string();
        assert!(e.starts_with("geometry: ") && e.contains(needle), "{json}\n-> {e}\n(wanted {needle:?})");
    }
}

#[test]
fn slabs_of_views_give_the_whole_projection() {
    let mut rng = rng("slabs");
    let g = Geometry::from_json(&cone_json(&mut rng, [9, 10, 11], [13, 17], 7)).unwrap();
    let x = uniform(&mut rng, g.volume.len(), 0.0, 1.0);
    let y = uniform(&mut rng, g.n_rays(), 0.0, 1.0);
    for dev in kernel_devices("slabs") {
        let p = siddon::Projector::new(g.clone(), &dev).unwrap();
        let xt = Tensor::from_f32(&x, &g.volume.shape, DType::F32, &dev).unwrap();
        let mut whole = Tensor::zeros(&g.proj_shape(), DType::F32, &dev).unwrap();
        p.forward(&xt, &mut whole).unwrap();
        let mut back_whole = Tensor::zeros(&g.volume.shape, DType::F32, &dev).unwrap();
        p.adjoint(&Tensor::from_f32(&y, &g.proj_shape(), DType::F32, &dev).unwrap(), &mut back_whole).unwrap();
        // A budget for the volume, the views and 3 detector images: slabs of 3, 3 and 1 views.
        let budget = (g.volume.len() + g.n_views() * 15 + 3 * 13 * 17) * 4;
        assert_eq!(p.slab_views(budget).unwrap(), 3);
        let mut out = vec![f32::NAN; g.n_rays()];
        let mut slabs = Vec::new();
        p.forward_to_host(&xt, &mut out, budget, |done, _| slabs.push(done)).unwrap();
        assert_eq!(slabs, vec![3, 6, 7]);
        assert_eq!(out, whole.to_f32_vec().unwrap(), "{}", dev.name());
        let mut back = Tensor::full(&g.volume.shape, f32::NAN, DType::F32, &dev).unwrap();
        p.adjoint_from_host(&y, &mut back, budget, |_, _| {}).unwrap();
        let scale = back_whole.to_f32_vec().unwrap().iter().fold(0f32, |m, v| m.max(*v));
        assert_close(&format!("adjoint slabs {}", dev.name()), &back.to_f32_vec().unwrap(), &back_whole.to_f32_vec().unwrap(), |_| 1e-6 * scale);
        let e = p.slab_views(budget - 3 * 13 * 17 * 4).unwrap_err().to_string();
        assert!(e.contains("cannot hold the volume"), "{e}");
    }
}

#[test]
fn reference_pair_refuses_wrong_lengths() {
    let g = Geometry::from_json(r#"{"volume": {"shape": [4, 6, 8]}, "scan": {"type": "parallel", "det_shape": [4, 12], "n_views": 3}}"#).unwrap();
    let (vol, mut proj) = (vec![0f32; 4 * 6 * 8], vec![0f32; 3 * 4 * 12]);
    let e = siddon::forward_ref(&g, &vol[1..], &mut proj).unwrap_err().to_string();
    assert!(e.contains("191 volume and 144 projection values") && e.contains("192 voxels"), "{e}");
    assert!(siddon::adjoint_ref(&g, &proj[..10], &mut vol.clone()).is_err());
    siddon::forward_ref(&g, &vol, &mut proj).unwrap();
}

/// The reference adjoint sums every voxel in an order set by the geometry alone: thin volumes
/// (view groups) and thick ones (slabs) give the same bits on 1 and 5 threads.
#[test]
fn reference_adjoint_is_the_same_on_any_thread_count() {
    let mut rng = rng("adjoint-threads");
    for nz in [4, 20] {
        let g = Geometry::from_json(&format!(r#"{{"volume": {{"shape": [{nz}, 12, 10]}}, "scan": {{"type": "cone", "det_shape": [{}, 16], "n_views": 11, "source_origin": 60, "origin_detector": 30}}}}"#, nz + 6)).unwrap();
        let y = uniform(&mut rng, g.n_rays(), 0.0, 1.0);
        let run = |threads| {
            let mut v = vec![0f32; g.volume.len()];
            rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| siddon::adjoint_ref(&g, &y, &mut v)).unwrap();
            v
        };
        let (a, b) = (run(1), run(5));
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "nz {nz}: the adjoint depends on the thread count");
        assert!(a.iter().any(|&x| x != 0.0));
    }
}
