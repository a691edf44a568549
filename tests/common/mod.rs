//! Helpers shared by the tests: the devices that run kernels, seeded inputs, comparisons, and
//! running the `tomodiff` binary.
#![allow(dead_code)]
use rand::{Rng, SeedableRng};
use tomodiff::Device;

/// Set to 1 on GPU machines: a missing CUDA device then fails the tests instead of skipping.
pub const REQUIRE_GPU: &str = "TOMODIFF_REQUIRE_GPU";

/// Set to 1 by the GPU check: the kernel tests leave out the emulator (verified on every CPU
/// run) and spend the GPU machine's minutes on cuda alone.
pub const GPU_ONLY: &str = "TOMODIFF_GPU_ONLY";

/// emu (unless TOMODIFF_GPU_ONLY=1); cuda:0 when a device exists. Prints the skip, or panics if a
/// GPU is required.
pub fn kernel_devices(test: &str) -> Vec<Device> {
    let gpu_only = std::env::var(GPU_ONLY).is_ok_and(|v| v == "1");
    let mut v = if gpu_only { vec![] } else { vec![Device::Emu] };
    match Device::cuda(0) {
        Ok(d) => v.push(d),
        Err(e) => {
            if std::env::var(REQUIRE_GPU).is_ok_and(|v| v == "1") {
                panic!("{test}: {REQUIRE_GPU}=1 but no CUDA device: {e}");
            }
            report_line(&format!("{test}: cuda skipped ({e})"));
        }
    }
    v
}

pub fn rng(test: &str) -> rand::rngs::StdRng {
    let seed: u64 = std::env::var("TOMODIFF_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x7011_0d1f);
    report_line(&format!("{test}: seed {seed} (set TOMODIFF_SEED to change)"));
    rand::rngs::StdRng::seed_from_u64(seed)
}

pub fn uniform(rng: &mut impl Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// Asserts |got - want| <= tol[i] elementwise, naming the first bad index.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: impl Fn(usize) -> f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0f32);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        assert!(d <= tol(i), "{what}: element {i}: got {g}, want {w} (|diff| {d} > {})", tol(i));
        if d > worst.1 {
            worst = (i, d);
        }
    }
    report_line(&format!("{what}: max |diff| {:.3e} at {}", worst.1, worst.0));
}

/// One line to stderr in a single write, on a line of its own. gpu-check.sh parses these lines
/// from tests that run in parallel (--nocapture): `eprintln!` writes a line in pieces, and
/// libtest writes "test NAME ... ", "ok" and the newline apart, so without the leading newline
/// and the single write another thread's output can land inside the line or in front of it.
/// `eprint!` of one string is one write, and keeps libtest's capture of a test's output.
pub fn report_line(line: &str) {
    eprint!("{}", format!("\n{line}\n"));
}

/// A file of tests/fixtures. The repository root is $TOMODIFF_REPO when set (test binaries run
/// from a bundle on another machine), else where the tests were built.
pub fn fixture(name: &str) -> std::path::PathBuf {
    let root = std::env::var("TOMODIFF_REPO").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    std::path::Path::new(&root).join("tests/fixtures").join(name)
}

/// The `tomodiff` binary under test: $TOMODIFF_BIN, else the one cargo built.
pub fn bin() -> String {
    std::env::var("TOMODIFF_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tomodiff").into())
}

/// Runs `tomodiff args`: (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let o = std::process::Command::new(bin()).args(args).output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

/// A path as a command-line argument.
pub fn s(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

/// (width, height, grey pixels) of an 8-bit grey PNG.
#[cfg(feature = "preview")]
pub fn read_png(p: &std::path::Path) -> (usize, usize, Vec<u8>) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(p).unwrap()));
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info.width as usize, info.height as usize, buf)
}
