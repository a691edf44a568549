//! Every kernel against its CPU reference on random inputs: emulated always, on CUDA when a device
//! exists. Outputs are poisoned with NaN before each launch, so an unwritten element fails.
mod common;
use common::*;
use half::{bf16, f16};
use tomodiff::ops::{cast, elementwise, gemm, reduce};
use tomodiff::{DType, Device, Tensor};

#[test]
fn axpy_and_scale_match_reference() {
    let mut rng = rng("axpy");
    for dev in kernel_devices("axpy") {
        for n in [1usize, 7, 1000, 65537] {
            let x = uniform(&mut rng, n, -2.0, 2.0);
            let y0 = uniform(&mut rng, n, -2.0, 2.0);
            let (xt, mut yt) = (Tensor::from_f32(&x, &[n], DType::F32, &dev).unwrap(), Tensor::from_f32(&y0, &[n], DType::F32, &dev).unwrap());
            elementwise::axpy(0.75, &xt, &mut yt).unwrap();
            let mut want = y0.clone();
            elementwise::axpy_ref(0.75, &x, &mut want);
            assert_close(&format!("axpy {} n={n}", dev.name()), &yt.to_f32_vec().unwrap(), &want, |_| 0.0);

            let mut st = Tensor::full(&[n], f32::NAN, DType::F32, &dev).unwrap();
            elementwise::scale(-1.5, &xt, &mut st).unwrap();
            elementwise::scale_ref(-1.5, &x, &mut want);
            assert_close(&format!("scale {} n={n}", dev.name()), &st.to_f32_vec().unwrap(), &want, |_| 0.0);
        }
    }
}

/// f32 values that probe rounding: ties, subnormals of both formats, overflow, infinities.
fn cast_probe(rng: &mut impl rand::Rng) -> Vec<f32> {
    let mut v = vec![
        0.0, -0.0, 1.0, -1.0, 65504.0, 65520.0, 1e6, -1e6, 6.1e-5, 5.96e-8, 2.98e-8, 1e-10, 1e-40, -1e-40,
        f32::MAX, f32::MIN_POSITIVE, f32::INFINITY, f32::NEG_INFINITY, 1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0,
        1.0 + 1.0 / 2048.0, 1.0 + 3.0 / 2048.0,
    ];
    for _ in 0..5000 {
        let bits: u32 = rng.random();
        let f = f32::from_bits(bits);
        if !f.is_nan() {
            v.push(f);
        }
    }
    v
}

#[test]
fn casts_are_bit_exact_with_half() {
    let mut rng = rng("cast");
    let x = cast_probe(&mut rng);
    let n = x.len();
    for dev in kernel_devices("cast") {
        let xt = Tensor::from_f32(&x, &[n], DType::F32, &dev).unwrap();
        for (dtype, want) in [
            (DType::BF16, x.iter().map(|&v| bf16::from_f32(v).to_bits()).collect::<Vec<u16>>()),
            (DType::F16, x.iter().map(|&v| f16::from_f32(v).to_bits()).collect()),
        ] {
            let mut yt = Tensor::full(&[n], f32::NAN, dtype, &dev).unwrap();
            cast::cast_into(&xt, &mut yt).unwrap();
            let got: Vec<u16> = bytemuck::cast_slice(&yt.to_bytes().unwrap()).to_vec();
            for i in 0..n {
                assert_eq!(got[i], want[i], "{} f32->{dtype} of {:e} (bits {:#x})", dev.name(), x[i], x[i].to_bits());
            }
            // And back: widening is exact.
            let mut back = Tensor::full(&[n], f32::NAN, DType::F32, &dev).unwrap();
            cast::cast_into(&yt, &mut back).unwrap();
            let wide = dtype.decode(&yt.to_bytes().unwrap());
            let got = back.to_f32_vec().unwrap();
            for i in 0..n {
                assert_eq!(got[i].to_bits(), wide[i].to_bits(), "{} {dtype}->f32 at {i}", dev.name());
            }
        }
    }
}

#[test]
fn row_sums_match_reference() {
    let mut rng = rng("row_sums");
    for dev in kernel_devices("row_sums") {
        for &(rows, n) in &[(1usize, 1usize), (3, 1000), (17, 33), (5, 4097), (300, 64)] {
            for dtype in [DType::F32, DType::BF16] {
                let x = Tensor::from_f32(&uniform(&mut rng, rows * n, -3.0, 3.0), &[rows, n], dtype, &dev).unwrap();
                let xv = x.to_f32_vec().unwrap(); // the values as stored
                let (ws, wq) = reduce::row_sums_ref(&xv, n);
                let mut s = Tensor::full(&[rows], f32::NAN, DType::F32, &dev).unwrap();
                let mut q = Tensor::full(&[rows], f32::NAN, DType::F32, &dev).unwrap();
                reduce::row_sums(&x, &mut s, &mut q).unwrap();
                // f32 accumulation in another order: error bounded by n eps sum|v|.
                let abs: Vec<f32> = xv.chunks(n).map(|r| r.iter().map(|v| v.abs()).sum()).collect();
                let what = format!("row_sums {} {dtype} {rows}x{n}", dev.name());
                assert_close(&format!("{what} sum"), &s.to_f32_vec().unwrap(), &ws, |i| 2e-6 * abs[i] * (n as f32).sqrt() + 1e-6);
                assert_close(&format!("{what} sumsq"), &q.to_f32_vec().unwrap(), &wq, |i| 2e-6 * wq[i] * (n as f32).sqrt() + 1e-6);
            }
        }
    }
}

#[test]
fn gemm_matches_reference_on_ragged_shapes() {
    let mut rng = rng("gemm");
    // (M, N, K): single elements, exact tiles, ragged edges on each axis, both entry points.
    let shapes = [(1, 1, 1), (16, 16, 16), (128, 128, 32), (130, 70, 33), (64, 136, 40), (257, 129, 200), (200, 264, 96), (33, 8, 520)];
    for dev in kernel_devices("gemm") {
        for &(m, n, k) in &shapes {
            let a = Tensor::from_f32(&uniform(&mut rng, m * k, -1.0, 1.0), &[m, k], DType::BF16, &dev).unwrap();
            let b = Tensor::from_f32(&uniform(&mut rng, k * n, -1.0, 1.0), &[k, n], DType::BF16, &dev).unwrap();
            let (av, bv) = (a.to_f32_vec().unwrap(), b.to_f32_vec().unwrap());
            let mut want = vec![0f32; m * n];
            gemm::matmul_ref(&av, &bv, &mut want, m, n, k);
            let mut mag = vec![0f32; m * n];
            let (aa, ba): (Vec<f32>, Vec<f32>) = (av.iter().map(|v| v.abs()).collect(), bv.iter().map(|v| v.abs()).collect());
            gemm::matmul_ref(&aa, &ba, &mut mag, m, n, k);
            let mut c = Tensor::full(&[m, n], f32::NAN, DType::F32, &dev).unwrap();
            gemm::matmul(&a, &b, &mut c).unwrap();
            // bf16 products are exact in f32; only the summation order differs.
            assert_close(&format!("gemm {} {m}x{n}x{k}", dev.name()), &c.to_f32_vec().unwrap(), &want, |i| 1e-5 * mag[i] + 1e-6);
        }
    }
}

#[test]
fn gemm_rejects_mismatched_shapes() {
    let dev = Device::Emu;
    let a = Tensor::zeros(&[4, 5], DType::BF16, &dev).unwrap();
    let b = Tensor::zeros(&[6, 3], DType::BF16, &dev).unwrap();
    let mut c = Tensor::zeros(&[4, 3], DType::F32, &dev).unwrap();
    let e = gemm::matmul(&a, &b, &mut c).unwrap_err().to_string();
    assert!(e.contains("[4, 5] x [6, 3]"), "{e}");
    let b = Tensor::zeros(&[5, 3], DType::F32, &dev).unwrap();
    let e = gemm::matmul(&a, &b, &mut c).unwrap_err().to_string();
    assert!(e.contains("expected bf16"), "{e}");
}

#[test]
fn vector_ops_match_reference() {
    use tomodiff::ops::vector;
    let mut rng = rng("vector");
    for dev in kernel_devices("vector") {
        for n in [1usize, 255, 256 * 1024 + 3] {
            let a = uniform(&mut rng, n, -2.0, 2.0);
            let mut b = uniform(&mut rng, n, -2.0, 2.0);
            b[0] = 1e-9; // below recip's eps
            let (at, bt) = (Tensor::from_f32(&a, &[n], DType::F32, &dev).unwrap(), Tensor::from_f32(&b, &[n], DType::F32, &dev).unwrap());
            let d = vector::dot(&at, &bt).unwrap();
            let want = vector::dot_ref(&a, &b);
            let mag = vector::dot_ref(&a.iter().map(|v| v.abs()).collect::<Vec<_>>(), &b.iter().map(|v| v.abs()).collect::<Vec<_>>());
            assert!((d - want).abs() <= 1e-6 * mag + 1e-12, "dot {} n={n}: {d} vs {want}", dev.name());
            let mut y = Tensor::full(&[n], f32::NAN, DType::F32, &dev).unwrap();
            vector::mul(&at, &bt, &mut y).unwrap();
            let w: Vec<f32> = a.iter().zip(&b).map(|(x, z)| x * z).collect();
            assert_close(&format!("mul {} n={n}", dev.name()), &y.to_f32_vec().unwrap(), &w, |_| 0.0);
            let mut y = Tensor::full(&[n], f32::NAN, DType::F32, &dev).unwrap();
            vector::recip(1e-6, &bt, &mut y).unwrap();
            let w: Vec<f32> = b.iter().map(|v| if v.abs() > 1e-6 { 1.0 / v } else { 0.0 }).collect();
            assert_close(&format!("recip {} n={n}", dev.name()), &y.to_f32_vec().unwrap(), &w, |_| 0.0);
            let mut y = Tensor::full(&[n], f32::NAN, DType::F32, &dev).unwrap();
            vector::clamp_min(0.25, &at, &mut y).unwrap();
            let w: Vec<f32> = a.iter().map(|v| v.max(0.25)).collect();
            assert_close(&format!("clamp_min {} n={n}", dev.name()), &y.to_f32_vec().unwrap(), &w, |_| 0.0);
            let mut y = Tensor::full(&[n], f32::NAN, DType::F32, &dev).unwrap();
            vector::fill(-3.5, &mut y).unwrap();
            assert!(y.to_f32_vec().unwrap().iter().all(|v| *v == -3.5));
        }
    }
}
