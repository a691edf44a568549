//! Files (.npy, NIfTI, PNG), noise and metrics.
mod common;
use common::read_png;
use tomodiff::ct::noise;
use tomodiff::io::{self, nifti, npy, preview};
use tomodiff::metrics;

#[test]
fn npy_round_trip_and_foreign_dtypes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.npy");
    let data: Vec<f32> = (0..60).map(|i| i as f32 * 0.5 - 3.0).collect();
    npy::write(&p, &[3, 4, 5], &data).unwrap();
    let a = io::read_array(&p).unwrap();
    assert_eq!((a.shape, a.data), (vec![3, 4, 5], data.clone()));
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!((bytes.len() - 60 * 4) % 64, 0, "data starts on a 64-byte boundary");
    // Big-endian int16, version 2 header, hand-made.
    let header = "{'descr': '>i2', 'fortran_order': False, 'shape': (3,), }\n";
    let mut raw = b"\x93NUMPY\x02\x00".to_vec();
    raw.extend((header.len() as u32).to_le_bytes());
    raw.extend(header.as_bytes());
    for v in [1i16, -2, 300] {
        raw.extend(v.to_be_bytes());
    }
    let a = npy::parse(&p, &raw).unwrap();
    assert_eq!((a.shape, a.data), (vec![3], vec![1.0, -2.0, 300.0]));
    // Errors name the problem.
    let e = npy::parse(&p, &raw[..raw.len() - 1]).unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
    let swap = |from: &[u8], to: &[u8]| {
        let i = raw.windows(from.len()).position(|w| w == from).unwrap();
        let mut b = raw.clone();
        b[i..i + to.len()].copy_from_slice(to);
        b
    };
    assert!(npy::parse(&p, &swap(b"False", b"True ")).unwrap_err().to_string().contains("Fortran"));
    assert!(npy::parse(&p, b"PK\x03\x04 not npy").unwrap_err().to_string().contains("magic"));
    assert!(npy::parse(&p, &swap(b">i2", b"<c8")).unwrap_err().to_string().contains("unsupported dtype"));
}

#[test]
fn nifti_round_trip_plain_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<f32> = (0..2 * 3 * 4).map(|i| i as f32).collect();
    for name in ["v.nii", "v.nii.gz"] {
        let p = dir.path().join(name);
        nifti::write(&p, &[2, 3, 4], &data, [2.5, 1.5, 0.5]).unwrap();
        let a = io::read_array(&p).unwrap();
        assert_eq!(a.shape, vec![2, 3, 4], "{name}");
        assert_eq!(a.data, data, "{name}");
        assert_eq!(a.voxel_size, Some([2.5, 1.5, 0.5]), "{name}");
    }
    // int16 with a scale: value = raw * slope + inter.
    let mut b = nifti::encode(&[1, 1, 2], &[0.0, 0.0], [1.0; 3]);
    b.truncate(352);
    b[70..72].copy_from_slice(&4i16.to_le_bytes());
    b[112..116].copy_from_slice(&2.0f32.to_le_bytes());
    b[116..120].copy_from_slice(&(-1.0f32).to_le_bytes());
    b.extend(7i16.to_le_bytes());
    b.extend((-3i16).to_le_bytes());
    let p = dir.path().join("s.nii");
    assert_eq!(nifti::parse(&p, &b).unwrap().data, vec![13.0, -7.0]);
    assert!(nifti::parse(&p, &b[..353]).unwrap_err().to_string().contains("truncated"));
    let mut two = b.clone();
    two[0..4].copy_from_slice(&540i32.to_le_bytes());
    assert!(nifti::parse(&p, &two).unwrap_err().to_string().contains("NIfTI-2"));
}

#[test]
fn non_finite_input_is_rejected_with_its_index() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nan.npy");
    assert!(npy::write(&p, &[4], &[0.0, 1.0, f32::NAN, 2.0]).unwrap_err().to_string().contains("NaN at index [2]"));
    std::fs::write(&p, npy::encode(&[4], &[0.0, 1.0, f32::NAN, 2.0])).unwrap();
    let e = io::read_array(&p).unwrap_err().to_string();
    assert!(e.contains("nan.npy") && e.contains("flat index 2"), "{e}");
    // scl_slope 1e38 takes the voxels of value 10 and above past float32's range.
    let big = dir.path().join("big.nii");
    std::fs::write(&big, nifti_with(&[(112, 1e38f32.to_le_bytes().to_vec())])).unwrap();
    let e = io::read_array(&big).unwrap_err().to_string();
    assert!(e.contains("big.nii") && e.contains("(inf)") && e.contains("beyond float32's range as stored or once scaled"), "{e}");
    assert!(io::read_array(&dir.path().join("x.txt")).unwrap_err().to_string().contains("unknown file type"));
}

#[test]
fn preview_png_has_three_panes_per_volume() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.png");
    let v: Vec<f32> = (0..5 * 6 * 7).map(|i| i as f32).collect();
    preview::write(&p, [5, 6, 7], [1.0; 3], &[&v, &v]).unwrap();
    let (w, h, _) = read_png(&p);
    // Each row: axial nx + coronal nx + sagittal ny pixels enlarged s times, with two gaps, then
    // a gap below: small volumes are enlarged to a legible size.
    let s = preview::MIN_PANE.div_ceil(7);
    assert_eq!(preview::pane_pixels([5, 6, 7], [1.0; 3]), [5 * s, 6 * s, 7 * s]);
    assert_eq!((w, h), (s * (7 + 7 + 6) + 2 * preview::GAP, 2 * (s * 6 + preview::GAP)));
    assert_eq!(preview::pane_pixels([256, 256, 256], [0.5; 3]), [256; 3]);
    assert_eq!(preview::pane_pixels([64, 64, 64], [0.7; 3]), [192; 3], "a whole factor of 3 at voxel sizes floats do not hold exactly");
    // A size in m among sizes in mm: panes held to 192 + 4 pixels per voxel, not 64,000 pixels.
    assert_eq!(preview::pane_pixels([64, 64, 64], [0.001, 1.0, 1.0]).iter().max(), Some(&448));
    assert!(matches!(preview::write(&p, [5, 6, 7], [1.0; 3], &[&v[1..]]), Err(tomodiff::Error::Shape(_))), "a length that disagrees with the shape");
    assert!(matches!(preview::write(&p, [5, 6, 7], [1.0; 3], &[]), Err(tomodiff::Error::Shape(_))));
}

/// Thick slices keep their proportions: 40 slices of 2.5 mm under 0.5 mm pixels draw the
/// coronal and sagittal panes 100 mm tall against 100 mm wide, and each slice as a band of 5
/// pixel rows.
#[test]
fn preview_of_anisotropic_voxels_is_square_in_mm() {
    let (nz, ny, nx) = (40, 200, 200);
    assert_eq!(preview::pane_pixels([nz, ny, nx], [2.5, 0.5, 0.5]), [200, 200, 200]);
    // Slice k holds the value k: in the coronal pane each value fills 5 rows.
    let v: Vec<f32> = (0..nz * ny * nx).map(|i| (i / (ny * nx)) as f32).collect();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.png");
    preview::write(&p, [nz, ny, nx], [2.5, 0.5, 0.5], &[&v]).unwrap();
    let (w, h, px) = read_png(&p);
    assert_eq!((w, h), (3 * 200 + 2 * preview::GAP, 200 + preview::GAP));
    let col = 200 + preview::GAP + 100; // the coronal pane's middle column
    let rows: Vec<u8> = (0..200).map(|r| px[r * w + col]).collect();
    let bands = rows.windows(2).filter(|p| p[0] != p[1]).count() + 1;
    assert_eq!(bands, nz, "one band per slice");
    assert!(rows.chunks(5).all(|c| c.iter().all(|&g| g == c[0])), "each slice 5 rows: {rows:?}");
    assert!(rows[0] > rows[199], "superior (the last slice) at the top");
}

#[test]
fn preview_is_radiological_for_ras_arrays() {
    // One bright voxel anterior (+y), at the patient's right (+x) and superior (+z) of the middle
    // slices: radiologically it shows up and left in the axial pane (seen from the feet), up
    // and left in the coronal pane (seen from the front), up and left in the sagittal pane
    // (anterior on the left).
    let (nz, ny, nx) = (9, 10, 11);
    let mut v = vec![0f32; nz * ny * nx];
    let at = |k: usize, j: usize, i: usize| (k * ny + j) * nx + i;
    // Each marker sits at a different distance from its pane's two edges, so a pane drawn
    // transposed misses it.
    v[at(nz / 2, ny - 2, nx - 4)] = 1.0; // axial pane: row 1, column 3
    v[at(nz - 2, ny / 2, nx - 4)] = 1.0; // coronal pane: row 1, column 3
    v[at(nz - 4, ny - 2, nx / 2)] = 1.0; // sagittal pane: row 3, column 1
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.png");
    preview::write(&p, [nz, ny, nx], [1.0; 3], &[&v]).unwrap();
    let (w, _, px) = read_png(&p);
    let s = preview::pane_pixels([nz, ny, nx], [1.0; 3])[2] / nx;
    let g = preview::GAP;
    let bright = |row: usize, col: usize| px[(row * s + s / 2) * w + col + s / 2] == 255;
    assert!(bright(1, 3 * s), "axial: anterior up, the patient's right on the left");
    assert!(bright(1, nx * s + g + 3 * s), "coronal: superior up, the patient's right on the left");
    assert!(bright(3, 2 * nx * s + 2 * g + s), "sagittal: superior up, anterior on the left");
    let lit = px.iter().filter(|&&g| g == 255).count();
    assert_eq!(lit, 3 * s * s, "three voxels, nothing else at full grey");
}

#[test]
fn psnr_and_ssim_known_values() {
    let shape = [8, 9, 10];
    let n = 720;
    let reference: Vec<f32> = (0..n).map(|i| (i % 17) as f32 / 16.0).collect(); // range exactly 1
    let m = metrics::compare(shape, &reference, &reference).unwrap();
    assert!(m.psnr == metrics::MAX_PSNR_DB && m.psnr_axial == metrics::MAX_PSNR_DB && (m.ssim_axial - 1.0).abs() < 1e-12 && (m.ssim_sagittal - 1.0).abs() < 1e-12);
    let off: Vec<f32> = reference.iter().map(|v| v + 0.1).collect();
    let m = metrics::compare(shape, &off, &reference).unwrap();
    assert!((m.psnr - 20.0).abs() < 1e-4, "{}", m.psnr);
    assert!((m.psnr_coronal - 20.0).abs() < 1e-4);
    assert!(m.ssim_axial < 1.0 && m.ssim_axial > 0.8, "{}", m.ssim_axial);
    let noisy: Vec<f32> = reference.iter().enumerate().map(|(i, v)| v + if i % 2 == 0 { 0.3 } else { -0.3 }).collect();
    assert!(metrics::compare(shape, &noisy, &reference).unwrap().ssim_axial < m.ssim_axial);
    // Lengths that do not match the shape: an error naming both, not a panic.
    let e = metrics::compare(shape, &reference[1..], &reference).unwrap_err().to_string();
    assert!(e.contains("719 and 720 values, 720 expected"), "{e}");
    assert!(metrics::psnr(&reference[1..], &reference).is_err());
    // A NaN (a diverged reconstruction) is NaN, not the cap.
    let mut nan = reference.clone();
    nan[3] = f32::NAN;
    let m = metrics::compare(shape, &nan, &reference).unwrap();
    assert!(m.psnr.is_nan() && m.psnr_axial.is_nan(), "{m:?}");
}

#[test]
fn poisson_noise_statistics() {
    let p0 = 2.0f32;
    let mut p = vec![p0; 200_000];
    let i0 = 1e4;
    noise::poisson(&mut p, 1000, i0, 5).unwrap();
    let n = p.len() as f64;
    let mean = p.iter().map(|v| *v as f64).sum::<f64>() / n;
    let var = p.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n;
    // Delta method: var(-ln(c/I0)) = 1 / (I0 e^-p).
    let want_var = 1.0 / (i0 * (-(p0 as f64)).exp());
    eprintln!("poisson: mean {mean:.5} var {var:.3e} (expected {want_var:.3e})");
    assert!((mean - p0 as f64).abs() < 0.01 && (var / want_var - 1.0).abs() < 0.05);
    let mut q = vec![p0; 200_000];
    noise::poisson(&mut q, 1000, i0, 5).unwrap();
    assert_eq!(p, q, "same seed, same noise");
    assert!(noise::poisson(&mut q, 10, 0.5, 1).is_err());
}

/// A NIfTI of shape (nz, ny, nx) = (2, 3, 4) with value 100 k + 10 j + i, its header patched by
/// `patch` (byte offset, little-endian bytes).
fn nifti_with(patch: &[(usize, Vec<u8>)]) -> Vec<u8> {
    let vals: Vec<f32> = (0..24).map(|f| (100 * (f / 12) + 10 * (f / 4 % 3) + f % 4) as f32).collect();
    let mut b = tomodiff::io::nifti::encode(&[2, 3, 4], &vals, [3.0, 2.0, 1.0]);
    for (o, bytes) in patch {
        b[*o..*o + bytes.len()].copy_from_slice(bytes);
    }
    b
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn at(a: &tomodiff::io::Array, z: usize, y: usize, x: usize) -> f32 {
    a.data[(z * a.shape[1] + y) * a.shape[2] + x]
}

#[test]
fn nifti_orientation_is_read_and_written() {
    use tomodiff::io::nifti;
    let p = std::path::Path::new("o.nii");
    // As written: sform and qform both aligned, read back unchanged.
    let b = nifti_with(&[]);
    assert_eq!(i16::from_le_bytes([b[252], b[253]]), 2, "qform_code");
    assert_eq!(i16::from_le_bytes([b[254], b[255]]), 2, "sform_code");
    let a = nifti::parse(p, &b).unwrap();
    assert_eq!((a.shape.as_slice(), a.voxel_size), (&[2, 3, 4][..], Some([3.0, 2.0, 1.0])));
    assert_eq!((at(&a, 1, 2, 3), at(&a, 0, 1, 2)), (123.0, 12.0));
    // sform running x backwards: the array is flipped along x.
    let a = nifti::parse(p, &nifti_with(&[(280, f32s(&[-1.0, 0.0, 0.0, 5.0]))])).unwrap();
    assert_eq!((at(&a, 1, 2, 0), at(&a, 0, 0, 3)), (123.0, 0.0));
    // sform swapping i and j: array axis i runs along world y (2 mm), j along world x (1 mm).
    let a = nifti::parse(p, &nifti_with(&[(280, f32s(&[0.0, 1.0, 0.0, 0.0])), (296, f32s(&[2.0, 0.0, 0.0, 0.0]))])).unwrap();
    assert_eq!((a.shape.as_slice(), a.voxel_size), (&[2, 4, 3][..], Some([3.0, 2.0, 1.0])));
    assert_eq!(at(&a, 1, 3, 2), 123.0, "world (x 2, y 3) is array (j 2, i 3)");
    // No sform; a qform turned 180 degrees about z (quatern_d = 1): x and y flipped.
    let q = nifti_with(&[(254, 0i16.to_le_bytes().to_vec()), (256, f32s(&[0.0, 0.0, 1.0]))]);
    let a = nifti::parse(p, &q).unwrap();
    assert_eq!((at(&a, 1, 0, 0), at(&a, 0, 2, 3)), (123.0, 0.0));
    // qfac -1 (pixdim[0]) runs k backwards: z flipped.
    let a = nifti::parse(p, &nifti_with(&[(254, 0i16.to_le_bytes().to_vec()), (76, f32s(&[-1.0]))])).unwrap();
    assert_eq!((at(&a, 0, 2, 3), at(&a, 1, 0, 0)), (123.0, 0.0));
    // Two array axes on one world axis: refused.
    let e = nifti::parse(p, &nifti_with(&[(296, f32s(&[2.0, 0.0, 0.0, 0.0]))])).unwrap_err().to_string();
    assert!(e.contains("distinct world axes"), "{e}");
}
