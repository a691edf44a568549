//! The procedural thorax (src/ct/anatomy): CT numbers where the tissue table puts them, organ
//! volumes within published adult ranges, the same volume on any thread count, and structures
//! where anatomy puts them. Sources of the table and ranges: docs/CT.md.
use tomodiff::ct::anatomy::{thorax_hu, thorax_labels, Thorax, Tissue};
use tomodiff::ct::{phantom, units, VolumeGrid};

/// n^3 voxels spanning `fov` mm, centred on the origin.
fn grid(n: usize, fov: f64) -> VolumeGrid {
    VolumeGrid { shape: [n, n, n], voxel_size: [fov / n as f64; 3], origin: [0.0; 3] }
}

fn count(labels: &[u8], tissues: &[Tissue]) -> usize {
    labels.iter().filter(|l| tissues.iter().any(|t| t.label() == **l)).count()
}

/// The bin centre (10 HU bins) of the fullest bin with lo <= HU < hi, and its count.
fn mode(hu: &[f32], lo: f32, hi: f32) -> (f32, usize) {
    let n = ((hi - lo) / 10.0) as usize;
    let mut bins = vec![0usize; n];
    for v in hu.iter().filter(|v| **v >= lo && **v < hi) {
        bins[(((v - lo) / 10.0) as usize).min(n - 1)] += 1;
    }
    let (i, c) = bins.iter().enumerate().max_by_key(|(i, c)| (**c, usize::MAX - i)).unwrap();
    (lo + 10.0 * i as f32 + 5.0, *c)
}

#[test]
fn histogram_peaks_sit_on_the_tissue_table() {
    let g = grid(96, 440.0);
    let hu = thorax_hu(&g, 3);
    let labels = thorax_labels(&g, 3);
    for (name, t, lo, hi) in [("air", Tissue::Air, -1100.0, -975.0), ("lung", Tissue::Lung, -930.0, -600.0), ("fat", Tissue::Fat, -200.0, -40.0), ("soft tissue", Tissue::Muscle, -20.0, 120.0)] {
        let (m, c) = mode(&hu, lo, hi);
        eprintln!("{name}: mode {m} HU ({c} voxels), table {}", t.hu());
        assert!((m - t.hu()).abs() <= 30.0, "{name}: mode {m} HU, table {}", t.hu());
        assert!(c > 2000, "{name}: only {c} voxels in its peak");
    }
    let body = labels.len() - count(&labels, &[Tissue::Air, Tissue::TableShell, Tissue::TableFoam]);
    let bone = count(&labels, &[Tissue::CorticalBone, Tissue::TrabecularBone]) as f64 / body as f64;
    eprintln!("bone: {:.1}% of the body's voxels", 100.0 * bone);
    assert!((0.015..0.08).contains(&bone), "bone fraction {bone}");
}

#[test]
fn organ_volumes_stay_in_adult_ranges() {
    // 4.6 mm voxels over 440 mm: the whole liver, heart, lungs and spleen lie inside.
    let g = grid(96, 440.0);
    let ml = g.voxel_size.iter().product::<f64>() / 1000.0;
    let organs: [(&str, &[Tissue], f64, f64); 4] = [
        ("lungs", &[Tissue::Lung], 3500.0, 7000.0),
        ("heart", &[Tissue::Myocardium, Tissue::HeartBlood], 400.0, 1000.0),
        ("liver", &[Tissue::Liver], 1000.0, 2200.0),
        ("spleen", &[Tissue::Spleen], 100.0, 400.0),
    ];
    let mut volumes = vec![Vec::new(); organs.len()];
    for seed in 0..8 {
        let labels = thorax_labels(&g, seed);
        let [nz, ny, nx] = g.shape;
        let liver = Tissue::Liver.label();
        let on_edge = (0..ny * nx).any(|i| labels[i] == liver || labels[(nz - 1) * ny * nx + i] == liver);
        assert!(!on_edge, "seed {seed}: the liver reaches the grid's end");
        for (k, (_, tissues, _, _)) in organs.iter().enumerate() {
            volumes[k].push(count(&labels, tissues) as f64 * ml);
        }
    }
    for (k, (name, _, lo, hi)) in organs.iter().enumerate() {
        let v = &volumes[k];
        let (min, max) = v.iter().fold((f64::INFINITY, 0f64), |(a, b), x| (a.min(*x), b.max(*x)));
        eprintln!("{name}: {min:.0}-{max:.0} mL over 8 seeds ({v:.0?})");
        assert!(min >= *lo && max <= *hi, "{name}: {min:.0}-{max:.0} mL outside {lo}-{hi} ({v:.0?})");
        assert!(max > 1.05 * min, "{name}: seeds barely vary it ({min:.0}-{max:.0} mL)");
    }
}

#[test]
fn same_seed_same_volume_on_any_thread_count() {
    let g = VolumeGrid { shape: [40, 56, 48], voxel_size: [8.0, 7.0, 9.0], origin: [5.0, -3.0, 2.0] };
    let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
    let (hu1, lab1) = pool(1).install(|| (thorax_hu(&g, 11), thorax_labels(&g, 11)));
    let (hu, lab) = pool(7).install(|| (thorax_hu(&g, 11), thorax_labels(&g, 11)));
    assert!(hu1.iter().zip(&hu).all(|(a, b)| a.to_bits() == b.to_bits()), "HU differ between thread counts");
    assert_eq!(lab1, lab);
    assert_ne!(hu, thorax_hu(&g, 12), "another seed, another thorax");
    assert_ne!(lab, thorax_labels(&g, 12));
}

/// Mean (x, y) of the points of an axial plane at z (1 mm steps over 440 mm) whose tissue is
/// one of `tissues`, and their number.
fn centroid(th: &Thorax, z: f64, tissues: &[Tissue]) -> ([f64; 2], usize) {
    let (mut s, mut n) = ([0.0; 2], 0);
    for j in -220..220 {
        for i in -220..220 {
            let p = [i as f64, j as f64, z];
            if tissues.contains(&th.tissue_at(p)) {
                s[0] += p[0];
                s[1] += p[1];
                n += 1;
            }
        }
    }
    ([s[0] / n.max(1) as f64, s[1] / n.max(1) as f64], n)
}

#[test]
fn structures_lie_where_anatomy_puts_them() {
    for seed in [1, 5] {
        let th = Thorax::new(seed);
        // The spinal canal runs in the midline, right behind a vertebral body or disc, at every
        // level: along x = 0 from front to back, bone or disc, then CSF or cord.
        for z in [-150.0, -60.0, 0.0, 60.0, 140.0] {
            let line: Vec<(f64, Tissue)> = (0..600).map(|j| 150.0 - 0.5 * j as f64).map(|y| (y, th.tissue_at([0.0, y, z]))).collect();
            let canal: Vec<f64> = line.iter().filter(|(_, t)| matches!(t, Tissue::Csf | Tissue::SpinalCord)).map(|(y, _)| *y).collect();
            assert!(canal.len() > 15, "seed {seed}, z {z}: no canal in the midline");
            let front = canal.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let column = line.iter().filter(|(y, t)| *y > front && *y < front + 50.0 && (t.is_bone() || *t == Tissue::Disc)).count();
            assert!(column > 20, "seed {seed}, z {z}: {column} half-mm of bone or disc in front of the canal");
            let off = [-1.0, 1.0].iter().all(|s| !matches!(th.tissue_at([s * 25.0, front - 4.0, z]), Tissue::Csf | Tissue::SpinalCord));
            assert!(off, "seed {seed}, z {z}: the canal is wider than the column");
        }
        // The heart lies in front of the spine and left of the midline (-x).
        let g = grid(96, 440.0);
        let labels = thorax_labels(&g, seed);
        let mean = |tissues: &[Tissue]| {
            let pts: Vec<[f64; 3]> = (0..labels.len()).filter(|&i| tissues.iter().any(|t| t.label() == labels[i])).map(|i| g.voxel_centre(i / 9216, (i / 96) % 96, i % 96)).collect();
            let n = pts.len().max(1) as f64;
            (std::array::from_fn::<f64, 3, _>(|a| pts.iter().map(|p| p[a]).sum::<f64>() / n), pts.len())
        };
        let (heart, nh) = mean(&[Tissue::Myocardium, Tissue::HeartBlood]);
        let (canal, _) = mean(&[Tissue::Csf, Tissue::SpinalCord]);
        assert!(nh > 1000 && heart[0] < -3.0 && heart[1] > canal[1] + 50.0, "seed {seed}: heart at {heart:?}, canal at {canal:?}");
        // Ribs: bone in the lateral chest wall on both sides at every level from apex to base.
        for z in [-80.0, -40.0, 0.0, 40.0, 80.0, 120.0] {
            for s in [-1.0, 1.0] {
                let bone = (60..=200).flat_map(|x| (-150..150).map(move |y| [s * x as f64, y as f64, z])).filter(|p| th.tissue_at(*p).is_bone()).count();
                assert!(bone > 20, "seed {seed}: no ribs at z {z}, side {s}");
            }
        }
        // The liver lies right (+x) under the higher right dome, the spleen and stomach left.
        let (liver, _) = centroid(&th, -110.0, &[Tissue::Liver]);
        let (spleen, ns) = centroid(&th, -110.0, &[Tissue::Spleen]);
        assert!(liver[0] > 20.0 && spleen[0] < -40.0 && ns > 0, "seed {seed}: liver {liver:?}, spleen {spleen:?}");
        let dome = |x: f64| (-200..60).rev().map(|z| z as f64).find(|&z| th.tissue_at([x, 0.0, z]) == Tissue::Lung).unwrap_or(f64::NAN);
        assert!(dome(-60.0) < dome(60.0), "seed {seed}: the right dome must be the higher");
        // The trachea is air in the midline above the carina.
        assert_eq!(th.tissue_at([1.0, centroid(&th, 120.0, &[Tissue::Airway]).0[1], 120.0]), Tissue::Airway);
    }
}

#[test]
fn the_table_lies_under_the_back() {
    let g = grid(64, 440.0);
    let labels = thorax_labels(&g, 4);
    let [nz, ny, nx] = g.shape;
    let table = [Tissue::TableShell.label(), Tissue::TableFoam.label()];
    let row = |i: usize| (i / nx) % ny;
    let top_of_table = (0..nz * ny * nx).filter(|&i| table.contains(&labels[i])).map(row).max().expect("a table");
    let lowest_body = (0..nz * ny * nx).filter(|&i| labels[i] != Tissue::Air.label() && !table.contains(&labels[i])).map(row).min().expect("a body");
    assert!(top_of_table < lowest_body, "table row {top_of_table}, body from row {lowest_body}");
}

#[test]
fn registered_as_a_phantom_in_attenuation() {
    assert!(phantom::NAMES.contains(&"thorax"));
    let g = grid(24, 240.0);
    let mu = phantom::by_name("thorax", &g, 2).unwrap();
    let hu = thorax_hu(&g, 2);
    assert!(mu.iter().zip(&hu).all(|(m, h)| *m == units::hu_to_mu(*h)));
    assert_eq!(phantom::default_voxel_mm("thorax", [64, 128, 100]), [440.0 / 128.0; 3]);
    assert_eq!(phantom::default_voxel_mm("chest", [64, 128, 100]), [1.0; 3]);
    for (i, t) in Tissue::ALL.iter().enumerate() {
        assert_eq!((t.label() as usize, Tissue::from_label(t.label())), (i, Some(*t)));
    }
}


#[test]
fn body_size_varies_in_the_adult_range() {
    // Width and depth of the trunk at the mid-thorax (z = 0), sampled every 2 mm.
    let mut sizes = Vec::new();
    for seed in 0..8 {
        let th = Thorax::new(seed);
        let body: Vec<[f64; 2]> = (-130..130)
            .flat_map(|j| (-130..130).map(move |i| [2.0 * i as f64, 2.0 * j as f64]))
            .filter(|p| !matches!(th.tissue_at([p[0], p[1], 0.0]), Tissue::Air | Tissue::TableShell | Tissue::TableFoam))
            .collect();
        let extent = |a: usize| body.iter().map(|p| p[a]).fold(f64::NEG_INFINITY, f64::max) - body.iter().map(|p| p[a]).fold(f64::INFINITY, f64::min);
        sizes.push([extent(0), extent(1)]);
    }
    eprintln!("body width x depth at z = 0, mm: {sizes:.0?}");
    for s in &sizes {
        assert!((310.0..=390.0).contains(&s[0]) && (200.0..=270.0).contains(&s[1]), "{s:?}");
    }
    assert!(sizes.iter().any(|s| (s[0] - sizes[0][0]).abs() > 10.0), "seeds barely vary the width");
}
