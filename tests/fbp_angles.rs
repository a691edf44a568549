//! FDK's redundancy weighting on the angle lists and detectors people bring (src/ct/redundancy.rs):
//! a uniform cylinder (mu 0.02 /mm, radius 18 mm, 8 x 48 x 48 voxels of 1 mm; source and detector
//! 150 mm from the axis, 16 x 96 detector of 1.5 mm pixels) must come back at 0.02 for clockwise
//! scans, lists that wrap through 360, short scans, uneven steps and a half-fan detector; and the
//! same scan listed in any order, direction or wrapping must give the same volume.
use tomodiff::ct::fbp::{self, Window};
use tomodiff::ct::Geometry;

const MU: f32 = 0.02;

fn geometry(angles: &[f64], cols: usize, offset_u: f64) -> Geometry {
    let list: Vec<String> = angles.iter().map(|a| format!("{a}")).collect();
    let json = format!(
        r#"{{"volume": {{"shape": [8, 48, 48], "voxel_size": [1, 1, 1]}},
            "scan": {{"type": "cone", "angles_deg": [{}], "source_origin": 150, "origin_detector": 150,
                      "det_shape": [16, {cols}], "det_spacing": [1.5, 1.5], "det_offset": [0, {offset_u}]}}}}"#,
        list.join(", ")
    );
    Geometry::from_json(&json).unwrap()
}

/// The cylinder, supersampled 4 x 4 in each voxel's xy footprint.
fn cylinder(g: &Geometry) -> Vec<f32> {
    let [nz, ny, nx] = g.volume.shape;
    let mut v = vec![0f32; nz * ny * nx];
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let c = g.volume.voxel_centre(k, j, i);
                let mut inside = 0;
                for a in 0..4 {
                    for b in 0..4 {
                        let (x, y) = (c[0] + (a as f64 - 1.5) / 4.0, c[1] + (b as f64 - 1.5) / 4.0);
                        inside += (x * x + y * y <= 18.0 * 18.0) as i32;
                    }
                }
                v[(k * ny + j) * nx + i] = MU * inside as f32 / 16.0;
            }
        }
    }
    v
}

fn scan(g: &Geometry) -> Vec<f32> {
    let mut p = vec![0f32; g.n_rays()];
    tomodiff::ct::siddon::forward_ref(g, &cylinder(g), &mut p).unwrap();
    p
}

fn fdk(g: &Geometry, proj: &[f32]) -> Vec<f32> {
    fbp::fbp(g, proj, Window::RamLak).unwrap()
}

/// Mean inside r < 14 mm over the middle slices, and the means of the four quadrants there.
fn means(g: &Geometry, rec: &[f32]) -> (f64, [f64; 4]) {
    let [nz, ny, nx] = g.volume.shape;
    let (mut all, mut n) = (0.0, 0);
    let (mut q, mut qn) = ([0.0; 4], [0usize; 4]);
    for k in 2..nz - 2 {
        for j in 0..ny {
            for i in 0..nx {
                let c = g.volume.voxel_centre(k, j, i);
                if c[0] * c[0] + c[1] * c[1] < 14.0 * 14.0 {
                    let v = rec[(k * ny + j) * nx + i] as f64;
                    all += v;
                    n += 1;
                    let quad = (c[0] > 0.0) as usize + 2 * (c[1] > 0.0) as usize;
                    q[quad] += v;
                    qn[quad] += 1;
                }
            }
        }
    }
    (all / n as f64, std::array::from_fn(|i| q[i] / qn[i] as f64))
}

fn assert_cylinder(name: &str, g: &Geometry, rec: &[f32]) {
    let (m, q) = means(g, rec);
    eprintln!("{name}: mean {m:.5}, quadrants {q:.5?}");
    assert!((m - MU as f64).abs() < 0.01 * MU as f64, "{name}: mean {m}, want {MU}");
    for v in q {
        assert!((v - MU as f64).abs() < 0.02 * MU as f64, "{name}: a quadrant's mean is {v} (shading), want {MU}");
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn short_scans_in_any_direction_order_and_wrapping() {
    // 210 degrees in 1.5-degree steps (a short scan needs 180 + 27 = 207).
    let ccw: Vec<f64> = (0..140).map(|i| 1.5 * i as f64).collect();
    let g = geometry(&ccw, 96, 0.0);
    assert!(fbp::warnings(&g).unwrap().is_empty(), "{:?}", fbp::warnings(&g));
    let p = scan(&g);
    let reference = fdk(&g, &p);
    assert_cylinder("counter-clockwise 210", &g, &reference);

    // The same source positions listed clockwise (descending), and scanned clockwise from 0.
    let cw: Vec<f64> = ccw.iter().rev().copied().collect();
    let gcw = geometry(&cw, 96, 0.0);
    let rec = fdk(&gcw, &scan(&gcw));
    assert!(max_diff(&rec, &reference) < 1e-6, "descending list: {}", max_diff(&rec, &reference));
    let clockwise: Vec<f64> = (0..140).map(|i| -1.5 * i as f64).collect();
    let g2 = geometry(&clockwise, 96, 0.0);
    assert_cylinder("clockwise 210 (-1.5 i)", &g2, &fdk(&g2, &scan(&g2)));

    // Shuffled view order: the same volume.
    let perm: Vec<usize> = (0..140).map(|i| (i * 37) % 140).collect();
    let shuffled: Vec<f64> = perm.iter().map(|&i| ccw[i]).collect();
    let view = 16 * 96;
    let mut ps = vec![0f32; p.len()];
    for (k, &i) in perm.iter().enumerate() {
        ps[k * view..(k + 1) * view].copy_from_slice(&p[i * view..(i + 1) * view]);
    }
    let rec = fdk(&geometry(&shuffled, 96, 0.0), &ps);
    assert!(max_diff(&rec, &reference) < 1e-6, "shuffled views: {}", max_diff(&rec, &reference));

    // A list that wraps through 360, written unwrapped and modulo 360: the same volume, no shading.
    let unwrapped: Vec<f64> = (0..140).map(|i| 260.0 + 1.5 * i as f64).collect();
    let wrapped: Vec<f64> = unwrapped.iter().map(|a| a % 360.0).collect();
    let (gu, gw) = (geometry(&unwrapped, 96, 0.0), geometry(&wrapped, 96, 0.0));
    let (ru, rw) = (fdk(&gu, &scan(&gu)), fdk(&gw, &scan(&gw)));
    assert_cylinder("wrapped (260 + 1.5 i) mod 360", &gw, &rw);
    assert!(max_diff(&ru, &rw) < 1e-6, "wrapped vs unwrapped: {}", max_diff(&ru, &rw));
}

#[test]
fn uneven_steps_sparse_full_scans_and_overscans() {
    // Uneven steps over 360: each view weighs its own interval.
    let uneven: Vec<f64> = (0..180).map(|i| 2.0 * i as f64 + if i % 2 == 0 { 0.6 } else { -0.6 }).collect();
    let g = geometry(&uneven, 96, 0.0);
    assert_cylinder("uneven steps", &g, &fdk(&g, &scan(&g)));
    // 400 degrees: the 40 degrees scanned twice share their weight.
    let over: Vec<f64> = (0..200).map(|i| 2.0 * i as f64).collect();
    let g = geometry(&over, 96, 0.0);
    assert!(fbp::warnings(&g).unwrap().is_empty());
    assert_cylinder("overscan 400", &g, &fdk(&g, &scan(&g)));
    // A scan between short and full (270 degrees), started at 100.
    let mid: Vec<f64> = (0..135).map(|i| 100.0 + 2.0 * i as f64).collect();
    let g = geometry(&mid, 96, 0.0);
    assert_cylinder("270 degrees", &g, &fdk(&g, &scan(&g)));
}

#[test]
fn half_fan_detector() {
    // A full scan with the detector displaced by 36 mm: 16 x 64 pixels reach -6 .. 42 mm at the axis.
    let angles: Vec<f64> = (0..240).map(|i| 1.5 * i as f64).collect();
    let g = geometry(&angles, 64, 36.0);
    assert!(fbp::warnings(&g).unwrap().is_empty(), "{:?}", fbp::warnings(&g));
    assert_cylinder("half fan", &g, &fdk(&g, &scan(&g)));
    // The same detector on a short scan cannot see every line: said, with the fraction.
    let short: Vec<f64> = (0..140).map(|i| 1.5 * i as f64).collect();
    let w = fbp::warnings(&geometry(&short, 64, 36.0)).unwrap();
    assert!(w.iter().any(|w| w.contains("never measured") && w.contains("a displaced detector needs a full scan")), "{w:?}");
    // A detector that misses the axis leaves a hole, said as such.
    let w = fbp::warnings(&geometry(&angles, 64, 80.0)).unwrap();
    assert!(w.iter().any(|w| w.contains("does not reach the rotation axis")), "{w:?}");
}

#[test]
fn incomplete_and_degenerate_scans_are_named() {
    // Less than a short scan (207 degrees): a warning naming what is needed.
    let limited: Vec<f64> = (0..60).map(|i| 2.0 * i as f64).collect();
    let w = fbp::warnings(&geometry(&limited, 96, 0.0)).unwrap();
    assert!(w.iter().any(|w| w.contains("cover 120.0 degrees") && w.contains("180 + the fan angle")), "{w:?}");
    // Radians given as degrees: 90 values in [0, pi).
    let radians: Vec<f64> = (0..90).map(|i| std::f64::consts::PI * i as f64 / 90.0).collect();
    let w = fbp::warnings(&geometry(&radians, 96, 0.0)).unwrap();
    assert!(w.iter().any(|w| w.contains("if they are radians")), "{w:?}");
    // Every view at one angle (arc_deg 0): an error, not an all-zero volume.
    let e = fbp::warnings(&geometry(&[30.0; 8], 96, 0.0)).unwrap_err().to_string();
    assert!(e.contains("all 8 views are at 30.000 degrees"), "{e}");
    let g = geometry(&[30.0; 8], 96, 0.0);
    assert!(fbp::fbp(&g, &vec![0.0; g.n_rays()], Window::RamLak).is_err());
}

/// A full scan whose detector misses the axis is told about the hole only, not about the arc.
#[test]
fn a_detector_missing_the_axis_is_not_a_short_arc() {
    let angles: Vec<f64> = (0..240).map(|i| 1.5 * i as f64).collect();
    let w = fbp::warnings(&geometry(&angles, 64, 80.0)).unwrap();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("does not reach the rotation axis"), "{w:?}");
}
