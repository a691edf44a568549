//! Phantoms: known values, determinism, and the Siddon projection of voxelised ellipsoids
//! converging to the exact line integrals as the voxels shrink.
use tomodiff::ct::phantom::{self, SheppLogan};
use tomodiff::ct::{siddon, Geometry, VolumeGrid};

fn grid(n: usize, size_mm: f64) -> VolumeGrid {
    VolumeGrid { shape: [n, n, n], voxel_size: [size_mm / n as f64; 3], origin: [0.0; 3] }
}

#[test]
fn shepp_logan_values() {
    let g = grid(33, 66.0);
    let yyw = phantom::voxelize(&phantom::shepp_logan(SheppLogan::YuYeWang), &g, 1);
    let ks = phantom::voxelize(&phantom::shepp_logan(SheppLogan::KakSlaney), &g, 1);
    let centre = (16 * 33 + 16) * 33 + 16;
    // Outer shell plus the "brain" ellipsoid: 1.0 - 0.8 and 2.0 - 0.98.
    assert!((yyw[centre] - 0.2).abs() < 1e-6 && (ks[centre] - 1.02).abs() < 1e-6, "{} {}", yyw[centre], ks[centre]);
    assert_eq!(yyw[0], 0.0, "corners are outside the head");
    // The skull (outer shell only): y = 63/33 - 1 ~ 0.909 lies between semi-axes 0.874 and 0.92.
    let skull = (16 * 33 + 31) * 33 + 16;
    assert!((yyw[skull] - 1.0).abs() < 1e-6, "{}", yyw[skull]);
}

#[test]
fn phantoms_are_deterministic_per_seed() {
    let g = grid(24, 48.0);
    for name in phantom::NAMES {
        let a = phantom::by_name(name, &g, 7).unwrap();
        let b = phantom::by_name(name, &g, 7).unwrap();
        assert_eq!(a, b, "{name}");
        assert!(a.iter().any(|v| *v != 0.0), "{name} is empty");
        if name == "ellipsoids" || name == "chest" {
            assert_ne!(a, phantom::by_name(name, &g, 8).unwrap(), "{name}: another seed, another phantom");
        }
    }
    assert!(phantom::by_name("brain", &g, 1).unwrap_err().to_string().contains("unknown phantom"));
}

#[test]
fn chest_has_its_tissues() {
    let g = grid(64, 320.0);
    let v = phantom::by_name("chest", &g, 3).unwrap();
    let count = |lo: f32, hi: f32| v.iter().filter(|x| **x >= lo && **x < hi).count() as f64 / v.len() as f64;
    let air = v.iter().filter(|x| **x == 0.0).count() as f64 / v.len() as f64;
    let lung = count(0.004, 0.005);
    let soft = count(0.015, 0.021);
    let bone = count(0.03, 0.04);
    eprintln!("chest fractions: air {air:.3} lung {lung:.3} soft {soft:.3} bone {bone:.3}");
    assert!(air > 0.15 && lung > 0.1 && soft > 0.15 && bone > 0.005 && bone < 0.1);
    assert!(v.iter().all(|x| (0.0..0.04).contains(x)));
}

#[test]
fn siddon_of_voxelised_ellipsoids_converges_to_analytic() {
    let els = phantom::shepp_logan(SheppLogan::KakSlaney);
    let mut errors = Vec::new();
    for n in [16usize, 32, 64] {
        let json = format!(
            r#"{{"volume": {{"shape": [{n}, {n}, {n}], "voxel_size": [{s}, {s}, {s}]}},
                "scan": {{"type": "cone", "n_views": 4, "source_origin": 200, "origin_detector": 100,
                "det_shape": [40, 40], "det_spacing": [2.5, 2.5]}}}}"#,
            s = 64.0 / n as f64
        );
        let g = Geometry::from_json(&json).unwrap();
        let exact = phantom::analytic_projection(&els, &g);
        let vol = phantom::voxelize(&els, &g.volume, 3);
        let mut proj = vec![0f32; g.n_rays()];
        siddon::forward_ref(&g, &vol, &mut proj).unwrap();
        let num: f64 = proj.iter().zip(&exact).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
        let den: f64 = exact.iter().map(|b| (*b as f64).powi(2)).sum();
        let rel = (num / den).sqrt();
        eprintln!("ellipsoid projection, {n}^3 voxels: relative L2 error {rel:.4}");
        errors.push(rel);
    }
    assert!(errors[1] < 0.8 * errors[0] && errors[2] < 0.8 * errors[1], "errors must fall as voxels shrink: {errors:?}");
    assert!(errors[2] < 0.05, "{errors:?}");
}

/// `averaged`: k = 1 is the voxel-centre render; k = 2 is the mean of the eight voxels of the
/// render on the grid twice as fine (`supersampled`), voxel by voxel; k = 0 and a refined grid
/// past the voxel limit are refused.
#[test]
fn averaged_phantom_is_the_mean_over_each_voxel() {
    let grid = VolumeGrid { shape: [6, 8, 10], voxel_size: [27.5, 27.5, 27.5], origin: [0.0; 3] };
    let seed = 31;
    assert_eq!(phantom::averaged("thorax", &grid, seed, 1).unwrap(), phantom::by_name("thorax", &grid, seed).unwrap());
    let avg = phantom::averaged("thorax", &grid, seed, 2).unwrap();
    let fine_grid = VolumeGrid { shape: [12, 16, 20], voxel_size: [13.75; 3], origin: [0.0; 3] };
    let fine = phantom::by_name("thorax", &fine_grid, seed).unwrap();
    assert_eq!(phantom::supersampled("thorax", &grid, seed, 2).unwrap(), (fine_grid, fine.clone()));
    for i in 0..avg.len() {
        let (z, y, x) = (i / 80, i / 10 % 8, i % 10);
        let mut sum = 0.0;
        for (dz, dy, dx) in (0..8).map(|i| (i / 4, i / 2 % 2, i % 2)) {
            sum += fine[((2 * z + dz) * 16 + 2 * y + dy) * 20 + 2 * x + dx] as f64;
        }
        assert!((avg[i] as f64 - sum / 8.0).abs() < 1e-6, "voxel ({z}, {y}, {x}): {} vs {}", avg[i], sum / 8.0);
    }
    assert!(avg != phantom::by_name("thorax", &grid, seed).unwrap(), "the mean differs from the centre values");
    for k in [0, 1 << 12] {
        let e = phantom::averaged("thorax", &grid, seed, k).unwrap_err().to_string();
        assert!(e.contains("expected a factor of at least 1, and at most"), "{e}");
    }
}
