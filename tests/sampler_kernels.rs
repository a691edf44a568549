//! The sampler's kernels (kernels/sampler.cu, affine) against their CPU references on random
//! inputs, outputs poisoned before each launch; and the counter-based normal numbers' statistics.
mod common;
use common::*;
use rand::Rng;
use tomodiff::ops::{elementwise, patches, sampler};
use tomodiff::nn::Prediction;
use tomodiff::{DType, Device, Tensor};

fn t(v: &[f32], shape: &[usize], dev: &Device) -> Tensor {
    Tensor::from_f32(v, shape, DType::F32, dev).unwrap()
}

#[test]
fn normal_numbers_are_standard_and_streams_independent() {
    let n = 200_000u64;
    let z: Vec<f64> = (0..n).map(|i| sampler::normal_at(7, 3, i) as f64).collect();
    let mean = z.iter().sum::<f64>() / n as f64;
    let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
    let kurt = z.iter().map(|v| (v - mean).powi(4)).sum::<f64>() / n as f64 / (var * var);
    let tail = z.iter().filter(|v| v.abs() > 1.96).count() as f64 / n as f64;
    eprintln!("normal: mean {mean:.4}, var {var:.4}, kurtosis {kurt:.3}, P(|z| > 1.96) {tail:.4}");
    assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.01 && (kurt - 3.0).abs() < 0.05 && (tail - 0.05).abs() < 0.003);
    // Neighbouring streams and seeds are uncorrelated.
    for (s2, st2) in [(7, 4), (8, 3)] {
        let w: Vec<f64> = (0..n).map(|i| sampler::normal_at(s2, st2, i) as f64).collect();
        let corr = z.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() / n as f64;
        assert!(corr.abs() < 0.01, "seed {s2} stream {st2}: correlation {corr}");
    }
}

#[test]
fn sampler_kernels_match_references() {
    let mut rng = rng("sampler kernels");
    for dev in kernel_devices("sampler kernels") {
        for n in [1usize, 1000, 70_001] {
            let x = uniform(&mut rng, n, -3.0, 3.0);
            let e = uniform(&mut rng, n, -3.0, 3.0);
            let abar = rng.random_range(0.001..0.999f64);
            for (clip, pred) in [(false, Prediction::Eps), (true, Prediction::Eps), (false, Prediction::V), (true, Prediction::V)] {
                let (mut we, mut w0) = (e.clone(), vec![0f32; n]);
                sampler::tweedie_ref(&x, &mut we, &mut w0, pred.tweedie_coefficients(abar), clip);
                let mut et = t(&e, &[n], &dev);
                let mut x0 = Tensor::full(&[n], f32::NAN, DType::F32, &dev).unwrap();
                sampler::tweedie(&t(&x, &[n], &dev), &mut et, &mut x0, pred.tweedie_coefficients(abar), clip).unwrap();
                let what = format!("tweedie {} n={n} clip={clip} {pred:?}", dev.name());
                assert_close(&what, &x0.to_f32_vec().unwrap(), &w0, |i| 1e-6 * (1.0 + w0[i].abs()));
                // eps = (x - sqrt(abar) x0) / sqrt(1 - abar) divides x0's rounding (FMA on a GPU) by sqrt(1 - abar).
                let sb = (1.0 - abar).sqrt() as f32;
                assert_close(&what, &et.to_f32_vec().unwrap(), &we, |i| 1e-6 * (1.0 + we[i].abs() + x[i].abs() / sb));
            }
            let (a, c, sigma, seed, stream) = (0.7f32, -0.4f32, 0.9f32, rng.random::<u64>(), rng.random_range(0..1000u64));
            let mut want = vec![0f32; n];
            sampler::ddim_ref(&mut want, &x, &e, a, c, sigma, seed, stream);
            let mut got = Tensor::full(&[n], f32::NAN, DType::F32, &dev).unwrap();
            sampler::ddim(&mut got, &t(&x, &[n], &dev), &t(&e, &[n], &dev), a, c, sigma, seed, stream).unwrap();
            // log and cos may differ in the last bits between the device and Rust's libm.
            assert_close(&format!("ddim {} n={n}", dev.name()), &got.to_f32_vec().unwrap(), &want, |i| 1e-5 * (1.0 + want[i].abs()));
            let mut y = t(&x, &[n], &dev);
            elementwise::affine_inplace(1.5, -0.25, &mut y).unwrap();
            let w: Vec<f32> = x.iter().map(|v| 1.5 * v - 0.25).collect();
            assert_close(&format!("affine {} n={n}", dev.name()), &y.to_f32_vec().unwrap(), &w, |_| 0.0);
        }
        // Stitching: one tiling of a ragged volume; every voxel written once, from its patch.
        let (dims, patch) = ([13usize, 9, 20], [4usize, 8, 8]);
        let offset = [1usize, 5, 3];
        let starts = tomodiff::diffusion::tiling::tiling(dims, patch, offset);
        let pv: usize = patch.iter().product();
        let vals = uniform(&mut rng, starts.len() * pv, -1.0, 1.0);
        let mut want = vec![f32::NAN; dims.iter().product()];
        patches::stitch_ref(&vals, &starts, patch, &mut want, dims);
        assert!(want.iter().all(|v| v.is_finite()), "the tiling covers the volume");
        let mut got = Tensor::full(&dims, f32::NAN, DType::F32, &dev).unwrap();
        let starts = tomodiff::diffusion::tiling::Starts::new(&starts, &dev).unwrap();
        patches::stitch(&t(&vals, &[starts.len(), patch[0], patch[1], patch[2]], &dev), &starts, &mut got).unwrap();
        assert_close(&format!("stitch {}", dev.name()), &got.to_f32_vec().unwrap(), &want, |_| 0.0);
        let bad = patches::stitch(&t(&vals, &[starts.len(), pv], &dev), &starts, &mut got).unwrap_err().to_string();
        assert!(bad.contains("stitch"), "{bad}");
    }
}
