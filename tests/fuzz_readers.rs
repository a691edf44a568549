//! Every reader of outside files, fed mutations of a valid file (bytes replaced, the file cut
//! short, junk appended) by proptest: each input is read or refused with an error, never a panic,
//! and no reader allocates more than its input warrants (the allocator below refuses any single
//! allocation over 256 MiB, which aborts the test). A bounded run here (PROPTEST_CASES, default
//! 64 per reader); a longer one: `PROPTEST_CASES=20000 cargo test --release --test fuzz_readers`.
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;

struct Capped;

// SAFETY: forwards to the system allocator, refusing (null) what is over the cap.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if l.size() > 256 << 20 {
            return std::ptr::null_mut();
        }
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if l.size() > 256 << 20 {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if n > 256 << 20 {
            return std::ptr::null_mut();
        }
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static ALLOC: Capped = Capped;

/// A mutation of `seed`: some bytes replaced (biased to the header, where sizes live), then cut
/// or extended.
fn mutate(seed: &[u8], edits: &[(usize, u8)], cut: Option<usize>, junk: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for &(i, v) in edits {
        let i = if i % 2 == 0 { i % b.len().min(400) } else { i % b.len() };
        b[i] = v;
    }
    if let Some(c) = cut {
        b.truncate(c % (b.len() + 1));
    }
    b.extend_from_slice(junk);
    b
}

fn mutations() -> impl Strategy<Value = (Vec<(usize, u8)>, Option<usize>, Vec<u8>)> {
    (prop::collection::vec((any::<usize>(), any::<u8>()), 0..12), prop::option::of(any::<usize>()), prop::collection::vec(any::<u8>(), 0..16))
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64), ..ProptestConfig::default() }
}

fn text_mutation(seed: &str, edits: &[(usize, u8)], cut: Option<usize>, junk: &[u8]) -> String {
    // Text readers get printable edits, so that numbers and keys change rather than only UTF-8.
    let edits: Vec<(usize, u8)> = edits.iter().map(|&(i, v)| (i, b" 0123456789-.e,:[]{}\"x"[v as usize % 22])).collect();
    String::from_utf8_lossy(&mutate(seed.as_bytes(), &edits, cut, junk)).into_owned()
}

const GEOMETRY: &str = r#"{"volume": {"shape": [16, 24, 24], "voxel_size": [1, 1, 1], "origin": [0, 0, 0]},
  "scan": {"type": "cone", "n_views": 60, "arc_deg": 360, "source_origin": 150, "origin_detector": 100, "det_shape": [28, 40], "det_spacing": [1.5, 1.5], "det_offset": [0, 0]}}"#;

proptest! {
    #![proptest_config(config())]

    #[test]
    fn npy((edits, cut, junk) in mutations()) {
        let seed = tomodiff::io::npy::encode(&[3, 4, 5], &(0..60).map(|i| i as f32).collect::<Vec<_>>());
        let _ = tomodiff::io::npy::parse(Path::new("fuzz.npy"), &mutate(&seed, &edits, cut, &junk));
    }

    #[test]
    fn nifti((edits, cut, junk) in mutations()) {
        let seed = tomodiff::io::nifti::encode(&[3, 4, 5], &(0..60).map(|i| i as f32).collect::<Vec<_>>(), [1.0, 0.5, 0.5]);
        let _ = tomodiff::io::nifti::parse(Path::new("fuzz.nii"), &mutate(&seed, &edits, cut, &junk));
    }

    #[test]
    fn safetensors((edits, cut, junk) in mutations()) {
        let t = tomodiff::Tensor::from_f32(&[1.0, 2.0, 3.0, 4.0], &[2, 2], tomodiff::DType::F32, &tomodiff::Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        tomodiff::tensor::safetensors::save(&p, &[("w", &t)]).unwrap();
        let seed = std::fs::read(&p).unwrap();
        let _ = tomodiff::tensor::safetensors::load_bytes(&p, &mutate(&seed, &edits, cut, &junk), &tomodiff::Device::Cpu);
    }

    #[test]
    fn geometry_json((edits, cut, junk) in mutations()) {
        let _ = tomodiff::ct::Geometry::from_json(&text_mutation(GEOMETRY, &edits, cut, &junk));
    }

    #[test]
    fn model_config((edits, cut, junk) in mutations()) {
        let seed = serde_json::to_string(&tomodiff::nn::UNetConfig::tiny()).unwrap();
        let _ = tomodiff::nn::UNetConfig::from_json(&text_mutation(&seed, &edits, cut, &junk));
    }
}

/// Sizes a header may state but no machine holds are refused by the reader, not left to abort an
/// allocation later.
#[test]
fn geometry_sizes_beyond_memory_are_refused() {
    let huge = GEOMETRY.replace("[16, 24, 24]", "[1048576, 1048576, 1048576]");
    let e = tomodiff::ct::Geometry::from_json(&huge).unwrap_err().to_string();
    assert!(e.contains("more than 2^34 voxels"), "{e}");
    let rays = GEOMETRY.replace(r#""n_views": 60"#, r#""n_views": 1048576"#).replace("[28, 40]", "[1048576, 1024]");
    let e = tomodiff::ct::Geometry::from_json(&rays).unwrap_err().to_string();
    assert!(e.contains("more than 2^34 rays"), "{e}");
}

/// Headers that state an empty axis, a size past the address space or an offset past any file,
/// and configs and scans whose buffers no machine holds: each refused with its reason.
#[test]
fn empty_and_unaddressable_sizes_are_refused() {
    let npy = |shape: &str| {
        let h = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        tomodiff::io::npy::parse(Path::new("x.npy"), &b).unwrap_err().to_string()
    };
    assert!(npy("(0, 64, 64)").contains("at least one value"));
    assert!(npy("(2147483648, 2147483648, 1)").contains("too large"));
    let nii = |at: usize, bytes: &[u8]| {
        let mut b = tomodiff::io::nifti::encode(&[3, 4, 5], &[0.0; 60], [1.0; 3]);
        b[at..at + bytes.len()].copy_from_slice(bytes);
        tomodiff::io::nifti::parse(Path::new("x.nii"), &b).unwrap_err().to_string()
    };
    assert!(nii(42, &0i16.to_le_bytes()).contains("at least one voxel"), "dim[1] = 0");
    assert!(nii(44, &(-3i16).to_le_bytes()).contains("at least one voxel"), "dim[2] < 0");
    assert!(nii(108, &1e30f32.to_le_bytes()).contains("bad vox_offset"));
    let mut c = tomodiff::nn::UNetConfig::tiny();
    c.model_channels = 1_000_000;
    assert!(c.validate().unwrap_err().to_string().contains("exceeds 4096 channels"));
    let mut c = tomodiff::nn::UNetConfig::tiny();
    c.channel_mult = vec![1; 65];
    assert!(c.validate().unwrap_err().to_string().contains("65 levels"));
    // A detector displaced 4 mm with columns 1e-6 mm apart: every ray crosses the volume, but
    // FBP would pad each row by 8e6 columns.
    let far = r#"{"volume": {"shape": [16, 16, 16], "voxel_size": [1, 1, 1], "origin": [0, 0, 0]},
      "scan": {"type": "parallel", "n_views": 4, "arc_deg": 180, "det_shape": [16, 4], "det_spacing": [1, 1e-6], "det_offset": [0, 4]}}"#;
    let g = tomodiff::ct::Geometry::from_json(far).unwrap();
    let e = tomodiff::ct::fbp::fbp(&g, &vec![0.0; g.n_rays()], tomodiff::ct::fbp::Window::Hann).unwrap_err().to_string();
    assert!(e.contains("det_offset u = 4 mm") && e.contains("more than its width"), "{e}");
}

/// A .nii.gz whose gzip stream runs on far past the data (300 MiB of zeros, which the capped
/// allocator could not hold) is read as far as its header declares.
#[test]
fn gzip_nifti_is_inflated_only_as_far_as_its_header_declares() {
    use std::io::Write;
    let vals: Vec<f32> = (0..60).map(|i| i as f32).collect();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bomb.nii.gz");
    let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&p).unwrap(), flate2::Compression::fast());
    enc.write_all(&tomodiff::io::nifti::encode(&[3, 4, 5], &vals, [1.0; 3])).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..300 {
        enc.write_all(&zeros).unwrap();
    }
    enc.finish().unwrap();
    let a = tomodiff::io::nifti::read(&p).unwrap();
    assert_eq!((a.shape.as_slice(), a.data.len()), (&[3usize, 4, 5][..], 60));
    let mut sorted = a.data.clone();
    sorted.sort_by(f32::total_cmp);
    assert_eq!(sorted, vals, "the voxels, reoriented");
    let gz = |b: &[u8]| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b).unwrap();
        enc.finish().unwrap()
    };
    let read = |name: &str, b: &[u8]| {
        std::fs::write(dir.path().join(name), b).unwrap();
        tomodiff::io::nifti::read(&dir.path().join(name)).map_err(|e| e.to_string())
    };
    // A header declaring 30,000^3 voxels in a file of a few hundred bytes is refused unread.
    let mut b = tomodiff::io::nifti::encode(&[3, 4, 5], &vals, [1.0; 3]);
    for o in [42, 44, 46] {
        b[o..o + 2].copy_from_slice(&30000i16.to_le_bytes());
    }
    let e = read("big.nii.gz", &gz(&b)).unwrap_err();
    assert!(e.contains("the header declares 108000000000352 bytes"), "{e}");
    // A stream ending where the data end has its CRC checked.
    let mut c = gz(&tomodiff::io::nifti::encode(&[3, 4, 5], &vals, [1.0; 3]));
    assert!(read("ok.nii.gz", &c).is_ok());
    let n = c.len();
    c[n - 8] ^= 1;
    let e = read("crc.nii.gz", &c).unwrap_err();
    assert!(e.contains("crc.nii.gz") && e.contains("gzip"), "{e}");
}
