//! DICOM CT series input (src/io/dicom.rs): pydicom's CT_small.dcm (tests/fixtures/dicom), and
//! series made from it at test time with dicom-rs. The allocator below refuses (aborting the
//! test) any single allocation over 64 MiB, so no header can make the reader allocate beyond what
//! its files hold.
use std::alloc::{GlobalAlloc, Layout, System};
use dicom_core::value::{DicomValueType, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_object::DefaultDicomObject;
use std::path::{Path, PathBuf};
use std::process::Command;
use tomodiff::ct::units::hu_to_mu;
use tomodiff::io::{self, dicom};

struct Capped;
const CAP: usize = 64 << 20;

// SAFETY: forwards to the system allocator, refusing (null) what is over the cap.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if l.size() > CAP {
            return std::ptr::null_mut();
        }
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if l.size() > CAP {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if n > CAP {
            return std::ptr::null_mut();
        }
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static ALLOC: Capped = Capped;

const ROWS: Tag = Tag(0x0028, 0x0010);
const COLUMNS: Tag = Tag(0x0028, 0x0011);
const SERIES_UID: Tag = Tag(0x0020, 0x000E);
const IMAGE_POSITION: Tag = Tag(0x0020, 0x0032);
const IMAGE_ORIENTATION: Tag = Tag(0x0020, 0x0037);
const RESCALE_INTERCEPT: Tag = Tag(0x0028, 0x1052);
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);
/// CT_small.dcm's ImagePositionPatient.
const IPP: [f64; 3] = [-158.135803, -179.035797, -75.699997];
const N: usize = 128;

/// HU of CT_small.dcm at (row, column), read once with pydicom 3.0.2 (PixelData unpacked as
/// little-endian int16 with Python's struct module, then x RescaleSlope 1 + RescaleIntercept
/// -1024), not with this crate.
const PYDICOM_HU: [((usize, usize), f32); 5] = [((0, 0), -849.0), ((64, 64), 904.0), ((10, 100), 203.0), ((127, 127), -115.0), ((30, 50), 242.0)];
/// The same pydicom read: sum, min and max of all 128 x 128 HU values.
const PYDICOM_SUM_MIN_MAX: (f64, f32, f32) = (-1950906.0, -896.0, 1167.0);

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dicom/CT_small.dcm")
}

fn open() -> DefaultDicomObject {
    dicom_object::open_file(fixture()).unwrap()
}

fn ds(obj: &mut DefaultDicomObject, tag: Tag, v: String) {
    obj.put(DataElement::new(tag, VR::DS, PrimitiveValue::from(v)));
}

fn at(p: [f64; 3]) -> String {
    format!("{:.6}\\{:.6}\\{:.6}", p[0], p[1], p[2])
}

/// CT_small moved `dz` mm along z, its intercept raised by `dhu`, edited further by `edit`.
fn slice(path: &Path, dz: f64, dhu: f64, edit: impl FnOnce(&mut DefaultDicomObject)) {
    let mut o = open();
    ds(&mut o, IMAGE_POSITION, at([IPP[0], IPP[1], IPP[2] + dz]));
    ds(&mut o, RESCALE_INTERCEPT, format!("{}", -1024.0 + dhu));
    edit(&mut o);
    o.write_to_file(path).unwrap();
}

fn pixels_u16(o: &DefaultDicomObject) -> Vec<u16> {
    match o.element(PIXEL_DATA).unwrap().value().primitive().unwrap() {
        PrimitiveValue::U16(v) => v.to_vec(),
        PrimitiveValue::U8(b) => b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect(),
        p => panic!("unexpected pixel value type {:?}", p.value_type()),
    }
}

fn err(path: &Path) -> String {
    let e = dicom::read_series(path).unwrap_err().to_string();
    assert_eq!(e.lines().count(), 1, "one line: {e}");
    e
}

/// (a) The single slice: shape, spacing, HU against pydicom's, and mu through read_array.
#[test]
fn single_slice_matches_pydicom() {
    let s = dicom::read_series(&fixture()).unwrap();
    assert_eq!(s.hu.shape, vec![1, N, N]);
    // One slice: sz from SpacingBetweenSlices (5 mm); (sy, sx) = PixelSpacing.
    assert_eq!(s.hu.voxel_size, Some([5.0, 0.661468, 0.661468]));
    for ((r, c), hu) in PYDICOM_HU {
        assert_eq!(s.hu.data[r * N + c], hu, "pixel ({r}, {c})");
    }
    let sum: f64 = s.hu.data.iter().map(|&v| v as f64).sum();
    let min = s.hu.data.iter().copied().fold(f32::INFINITY, f32::min);
    let max = s.hu.data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    assert_eq!((sum, min, max), PYDICOM_SUM_MIN_MAX);
    assert_eq!(s.files, vec![fixture()]);
    assert!(s.skipped.is_empty());

    // read_array reorients to the world axes as NIfTI does (RAS+): this axial slice's rows run
    // anterior to posterior and its columns right to left in patient LPS, so both flip.
    let a = io::read_array(&fixture()).unwrap();
    assert_eq!((a.shape.clone(), a.voxel_size), (vec![1, N, N], s.hu.voxel_size));
    for ((r, c), hu) in PYDICOM_HU {
        assert_eq!(a.data[(N - 1 - r) * N + (N - 1 - c)], hu_to_mu(hu));
    }
    // Water is 0.0193 /mm: 904 HU.
    assert!((a.data[(N - 1 - 64) * N + (N - 1 - 64)] - 0.0193 * 1.904).abs() < 1e-6);
}

/// Five slices 2.5 mm apart under shuffled names: file k holds slice k, intercept -1024 + 10 k.
fn make_series(dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let names = ["m_02.dcm", "z_03.dcm", "a_01.dcm", "slice5", "b_04.dcm"];
    let order = [2usize, 4, 0, 3, 1]; // position index of each name
    let mut by_k = vec![PathBuf::new(); 5];
    for (name, &k) in names.iter().zip(&order) {
        let p = dir.join(name);
        slice(&p, 2.5 * k as f64, 10.0 * k as f64, |_| {});
        by_k[k] = p;
    }
    by_k
}

/// (b) A series: sorted by position whatever the names, sz from the positions, values per slice.
#[test]
fn series_sorted_by_position() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("series");
    let by_k = make_series(&dir);
    std::fs::write(dir.join("README.txt"), "not DICOM").unwrap();
    let s = dicom::read_series(&dir).unwrap();
    assert_eq!(s.hu.shape, vec![5, N, N]);
    let [sz, sy, sx] = s.hu.voxel_size.unwrap();
    assert!((sz - 2.5).abs() < 1e-6 && sy == 0.661468 && sx == 0.661468, "{:?}", s.hu.voxel_size);
    assert_eq!(s.files, by_k);
    for (k, p) in s.positions.iter().enumerate() {
        assert!((p - (IPP[2] + 2.5 * k as f64)).abs() < 1e-5, "{:?}", s.positions);
    }
    for k in 0..5 {
        for ((r, c), hu) in PYDICOM_HU {
            assert_eq!(s.hu.data[(k * N + r) * N + c], hu + 10.0 * k as f32, "slice {k}, pixel ({r}, {c})");
        }
    }
    assert_eq!(s.skipped, vec![dir.join("README.txt")]);
    assert!(s.notes()[0].contains("skipped 1 file(s)") && s.notes()[0].contains("README.txt"), "{:?}", s.notes());
    // read_array: the same in mu, in the world's axes (x and y flipped from LPS to RAS).
    let a = io::read_array(&dir).unwrap();
    assert_eq!(a.shape, vec![5, N, N]);
    for k in 0..5 {
        for r in 0..N {
            for c in 0..N {
                assert_eq!(a.data[(k * N + N - 1 - r) * N + N - 1 - c], hu_to_mu(s.hu.data[(k * N + r) * N + c]));
            }
        }
    }
}

/// A coronal stack is read in its own frame: normal = row x column direction = +y here.
#[test]
fn coronal_series_in_its_own_frame() {
    let d = tempfile::tempdir().unwrap();
    for (name, k) in [("c.dcm", 2), ("a.dcm", 1), ("b.dcm", 0)] {
        slice(&d.path().join(name), 0.0, 10.0 * k as f64, |o| {
            ds(o, IMAGE_ORIENTATION, "1\\0\\0\\0\\0\\-1".into());
            ds(o, IMAGE_POSITION, at([IPP[0], IPP[1] + 2.0 * k as f64, IPP[2]]));
        });
    }
    let s = dicom::read_series(d.path()).unwrap();
    assert_eq!(s.hu.shape, vec![3, N, N]);
    assert!((s.hu.voxel_size.unwrap()[0] - 2.0).abs() < 1e-6);
    let names: Vec<_> = s.files.iter().map(|f| f.file_name().unwrap().to_str().unwrap()).collect();
    assert_eq!(names, ["b.dcm", "a.dcm", "c.dcm"]);
    assert_eq!(s.hu.data[2 * N * N], -849.0 + 20.0);
}

/// The same slices in implicit VR little endian and explicit VR big endian read the same.
#[test]
fn other_transfer_syntaxes() {
    let d = tempfile::tempdir().unwrap();
    let reference = dicom::read_series(&fixture()).unwrap().hu.data;
    for ts in ["1.2.840.10008.1.2", "1.2.840.10008.1.2.2"] {
        let dir = d.path().join(ts);
        std::fs::create_dir(&dir).unwrap();
        for k in [1, 0] {
            slice(&dir.join(format!("{k}.dcm")), 2.5 * k as f64, 10.0 * k as f64, |o| o.update_meta(|m| m.transfer_syntax = ts.into()));
        }
        // The PixelData header as each syntax writes it: tag, (VR,) length 32768.
        let header: &[u8] = if ts.ends_with(".2.2") { b"\x7f\xe0\x00\x10OW\0\0\x00\x00\x80\x00" } else { b"\xe0\x7f\x10\x00\x00\x80\x00\x00" };
        let b = std::fs::read(dir.join("0.dcm")).unwrap();
        assert!(b.windows(header.len()).any(|w| w == header), "{ts}: PixelData not encoded as expected");
        let s = dicom::read_series(&dir).unwrap();
        assert_eq!(s.hu.shape, vec![2, N, N], "{ts}");
        assert_eq!(&s.hu.data[..N * N], &reference[..], "{ts}");
        assert!(s.hu.data[N * N..].iter().zip(&reference).all(|(a, b)| *a == b + 10.0), "{ts}");
    }
}

/// PixelPaddingValue marks pixels that are not measurements: they read as air.
#[test]
fn padding_reads_as_air() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("pad.dcm");
    // Pixel (0, 0) is stored as 175 (-849 HU).
    slice(&p, 0.0, 0.0, |o| {
        o.put(DataElement::new(Tag(0x0028, 0x0120), VR::SS, PrimitiveValue::from(175i16)));
    });
    let s = dicom::read_series(&p).unwrap();
    assert_eq!((s.hu.data[0], s.hu.data[64 * N + 64]), (-1000.0, 904.0));
}

fn fixture_bytes() -> Vec<u8> {
    std::fs::read(fixture()).unwrap()
}

/// (c) Refusals: one clear line naming the file or the positions, never a panic.
#[test]
fn refusals() {
    let d = tempfile::tempdir().unwrap();
    let sub = |n: &str| {
        let p = d.path().join(n);
        std::fs::create_dir_all(&p).unwrap();
        p
    };

    // No DICOM at all.
    let none = sub("none");
    std::fs::write(none.join("notes.txt"), "hello").unwrap();
    std::fs::write(none.join("x.npy"), b"\x93NUMPY").unwrap();
    let e = err(&none);
    assert!(e.contains("holds no DICOM file") && e.contains("2 file(s)"), "{e}");
    let e = io::read_array(&none).unwrap_err().to_string();
    assert!(e.contains("holds no DICOM file"), "{e}");

    // A duplicated position.
    let dup = sub("dup");
    for (n, dz) in [("a.dcm", 0.0), ("b.dcm", 2.5), ("c.dcm", 2.5), ("d.dcm", 5.0)] {
        slice(&dup.join(n), dz, 0.0, |_| {});
    }
    let e = err(&dup);
    assert!(e.contains("b.dcm and c.dcm are both at -73.200 mm"), "{e}");

    // A missing slice: uneven spacing, naming the positions.
    let gap = sub("gap");
    for (n, dz) in [("a.dcm", 0.0), ("b.dcm", 2.5), ("c.dcm", 5.0), ("d.dcm", 10.0)] {
        slice(&gap.join(n), dz, 0.0, |_| {});
    }
    let e = err(&gap);
    assert!(e.contains("uneven slice spacing") && e.contains("5.0000 mm between c.dcm at -70.700 mm and d.dcm at -65.700 mm"), "{e}");

    // Mixed sizes: a 64 x 64 slice among 128 x 128 ones.
    let mixed = sub("mixed");
    slice(&mixed.join("a.dcm"), 0.0, 0.0, |_| {});
    slice(&mixed.join("b.dcm"), 2.5, 0.0, |o| {
        let px: Vec<u16> = pixels_u16(o).into_iter().take(64 * 64).collect();
        o.put(DataElement::new(ROWS, VR::US, PrimitiveValue::from(64u16)));
        o.put(DataElement::new(COLUMNS, VR::US, PrimitiveValue::from(64u16)));
        o.put(DataElement::new(PIXEL_DATA, VR::OW, PrimitiveValue::U16(px.into())));
    });
    let e = err(&mixed);
    assert!(e.contains("b.dcm") && e.contains("Rows") && e.contains("64 x 64 differ from 128 x 128"), "{e}");

    // Mixed series.
    let two = sub("two");
    slice(&two.join("a.dcm"), 0.0, 0.0, |_| {});
    slice(&two.join("b.dcm"), 2.5, 0.0, |o| {
        o.put(DataElement::new(SERIES_UID, VR::UI, PrimitiveValue::from("1.2.3.4")));
    });
    let e = err(&two);
    assert!(e.contains("b.dcm") && e.contains("SeriesInstanceUID: 1.2.3.4 differs"), "{e}");

    // A sheared stack (positions sliding across the plane).
    let shear = sub("shear");
    for k in 0..3 {
        slice(&shear.join(format!("{k}.dcm")), 2.5 * k as f64, 0.0, |o| {
            ds(o, IMAGE_POSITION, at([IPP[0] + 1.0 * k as f64, IPP[1], IPP[2] + 2.5 * k as f64]));
        });
    }
    let e = err(&shear);
    assert!(e.contains("across the slice plane"), "{e}");

    // A missing required tag, and rows x columns beyond the pixel data (no allocation from it).
    let one = d.path().join("one.dcm");
    slice(&one, 0.0, 0.0, |o| {
        o.remove_element(Tag(0x0028, 0x0030));
    });
    let e = err(&one);
    assert!(e.contains("one.dcm") && e.contains("(0028,0030) PixelSpacing: missing"), "{e}");
    slice(&one, 0.0, 0.0, |o| {
        o.put(DataElement::new(ROWS, VR::US, PrimitiveValue::from(65535u16)));
        o.put(DataElement::new(COLUMNS, VR::US, PrimitiveValue::from(65535u16)));
    });
    let e = err(&one);
    assert!(e.contains("(7FE0,0010) PixelData: 32768 bytes, 65535 rows x 65535 columns x 16 bits need 8589672450"), "{e}");
    slice(&one, 0.0, 0.0, |o| {
        o.put(DataElement::new(IMAGE_POSITION, VR::DS, PrimitiveValue::from("1\\2")));
    });
    let e = err(&one);
    assert!(e.contains("(0020,0032) ImagePositionPatient: 3 finite numbers expected"), "{e}");

    // A truncated file: cut inside the pixel data, and at every 61st byte, all refused.
    let full = fixture_bytes();
    let cut = d.path().join("cut.dcm");
    std::fs::write(&cut, &full[..full.len() - 1000]).unwrap();
    let e = err(&cut);
    assert!(e.contains("cut.dcm") && e.contains("(7FE0,0010) PixelData") && e.contains("truncated"), "{e}");
    for len in (0..full.len()).step_by(61) {
        std::fs::write(&cut, &full[..len]).unwrap();
        assert!(dicom::read_series(&cut).is_err(), "{len} bytes read without error");
    }

    // A header that declares 4 GiB of pixels in a 39 kB file: refused before the parser allocates.
    let i = full.windows(6).position(|w| w == b"\xe0\x7f\x10\x00OW").unwrap();
    let mut b = full.clone();
    b[i + 8..i + 12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    std::fs::write(&cut, &b).unwrap();
    let e = err(&cut);
    assert!(e.contains("(7FE0,0010) PixelData at byte") && e.contains("declares 4294967280 bytes"), "{e}");

    // A compressed transfer syntax (RLE, a UID of the same length), and a file that is not DICOM.
    let mut b = full.clone();
    let i = full.windows(20).position(|w| w == b"1.2.840.10008.1.2.1\0").unwrap();
    b[i..i + 20].copy_from_slice(b"1.2.840.10008.1.2.5\0");
    std::fs::write(&cut, &b).unwrap();
    let e = err(&cut);
    assert!(e.contains("transfer syntax 1.2.840.10008.1.2.5 (compressed pixel data) is not read"), "{e}");
    std::fs::write(&cut, b"just text").unwrap();
    assert!(err(&cut).contains("not a DICOM file"));
}

/// Every byte of the header (up to the pixel data) replaced by 0x00, 0xFF and itself ^ 0x80 in
/// turn: each file is read or refused, never a panic, and never an allocation over the cap.
#[test]
fn mutated_headers_never_panic() {
    let d = tempfile::tempdir().unwrap();
    let full = fixture_bytes();
    let pixel_data = full.windows(6).position(|w| w == b"\xe0\x7f\x10\x00OW").unwrap();
    let (mut read, mut refused) = (0, 0);
    for i in 128..pixel_data + 12 {
        for v in [0x00, 0xFF, full[i] ^ 0x80] {
            let mut b = full.clone();
            b[i] = v;
            let p = d.path().join("m.dcm");
            std::fs::write(&p, &b).unwrap();
            match dicom::read_series(&p) {
                Ok(s) => {
                    assert_eq!(s.hu.data.len(), s.hu.shape.iter().product::<usize>());
                    read += 1;
                }
                Err(e) => {
                    assert_eq!(e.to_string().lines().count(), 1, "{e}");
                    refused += 1;
                }
            }
        }
    }
    assert!(read > 0 && refused > 0, "{read} read, {refused} refused");
}

/// Training data: a folder of series sub-folders is one volume per series, in mu (1/mm), the
/// same volume read_array gives; `--voxel-size` resamples it.
#[test]
fn training_folder_of_series() {
    use tomodiff::diffusion::train::{load_folder, Units};
    let d = tempfile::tempdir().unwrap();
    make_series(&d.path().join("s1"));
    make_series(&d.path().join("s2"));
    let v = load_folder(d.path(), Units::Hu, None).unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].1, [5, N, N]);
    assert_eq!(v[0].2, io::read_array(&d.path().join("s1")).unwrap().data, "DICOM is read as mu whatever --units says");
    // The series folder itself, resampled from 2.5 mm slices to 5 mm.
    let v = load_folder(&d.path().join("s1"), Units::Mu, Some([5.0, 0.661468, 0.661468])).unwrap();
    assert_eq!((v.len(), v[0].1), (1, [3, N, N]));
}

fn tomodiff(args: &[&str]) -> (i32, String, String) {
    // TOMODIFF_BIN: where the binary is when the test runs away from its build (GPU bundles).
    let bin = std::env::var("TOMODIFF_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tomodiff").into());
    let o = Command::new(bin).args(args).output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

/// (d) The CLI reads a series wherever it reads a volume.
#[test]
fn cli_metrics_on_a_series() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("series");
    make_series(&dir);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (code, out, err) = tomodiff(&["metrics", "-i", &s(&dir), "--reference", &s(&dir)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("SSIM axial 1.0000, coronal 1.0000, sagittal 1.0000"), "{out}");
    // Against the same volume as .npy (mu), and against the single slice's file.
    let a = io::read_array(&dir).unwrap();
    let npy = d.path().join("series.npy");
    io::npy::write(&npy, &a.shape, &a.data).unwrap();
    let (code, out, err) = tomodiff(&["metrics", "-i", &s(&npy), "--reference", &s(&dir)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("SSIM axial 1.0000"), "{out}");
    let (code, _, err) = tomodiff(&["metrics", "-i", &s(&fixture()), "--reference", &s(&dir)]);
    assert_eq!(code, 1);
    assert!(err.starts_with("error: ") && err.contains("[1, 128, 128]") && err.trim_end().lines().count() == 1, "{err}");
    // An empty folder: one line.
    let empty = d.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (code, _, err) = tomodiff(&["metrics", "-i", &s(&empty), "--reference", &s(&dir)]);
    assert_eq!(code, 1);
    assert!(err.starts_with("error: ") && err.contains("holds no DICOM file") && err.trim_end().lines().count() == 1, "{err}");
}

/// `tomodiff train` on a folder holding a DICOM series (16 slices made from CT_small.dcm),
/// resampled to 2.5 x 2 x 2 mm: two steps run and are logged.
#[test]
fn train_cli_on_a_dicom_folder() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("data").join("series");
    std::fs::create_dir_all(&dir).unwrap();
    for k in 0..16 {
        slice(&dir.join(format!("s{:02}.dcm", (k * 7) % 16)), 2.5 * k as f64, 0.0, |_| {});
    }
    let out = d.path().join("run");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (code, _, err) = tomodiff(&[
        "train", "--config", "tiny", "--data", &s(&d.path().join("data")), "--voxel-size", "2.5,2,2", "--steps", "2", "--batch", "1", "--device", "cpu", "--out", &s(&out),
    ]);
    assert_eq!(code, 0, "{err}");
    let log = std::fs::read_to_string(out.join("loss.csv")).unwrap();
    assert_eq!(log.lines().count(), 3, "{log}");
    let (code, _, err) = tomodiff(&["train", "--config", "tiny", "--data", &s(&d.path().join("data")), "--units", "kelvin", "--steps", "1", "--out", &s(&d.path().join("r2"))]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("expected hu or mu"), "{err}");
    assert!(!d.path().join("r2").exists(), "options are checked before the run folder is made");
}
