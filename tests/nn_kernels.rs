//! The U-Net's kernels against their CPU references on random inputs (bf16 on emu and cuda),
//! outputs poisoned before each launch.
mod common;
use common::*;
use tomodiff::ops::conv3d;
use tomodiff::{DType, Device, Tensor};

/// Values rounded to bf16, so both sides see the same inputs.
fn bf16_vals(rng: &mut impl rand::Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    DType::BF16.decode(&DType::BF16.encode(&uniform(rng, n, lo, hi)))
}

#[test]
fn conv3d_matches_reference() {
    let mut rng = rng("conv3d");
    // (N, [D, H, W], Ci, Co, k, stride, per-sample bias, residual): both entry points, strides,
    // 1x1x1, odd extents, more than one column tile.
    let cases = [
        (2, [6, 5, 7], 5, 12, 3, 1, true, false),
        (1, [8, 8, 8], 16, 24, 3, 2, false, true),
        (2, [4, 6, 4], 16, 8, 1, 1, true, true),
        (1, [5, 5, 5], 8, 136, 3, 1, false, false),
        (1, [7, 3, 5], 24, 1, 3, 1, false, false),
    ];
    for dev in kernel_devices("conv3d") {
        for &(n, dims, ci, co, k, stride, with_bn, with_res) in &cases {
            let od = dims.map(|d| conv3d::out_len(d, k, stride));
            let ys = [n, od[0], od[1], od[2], co];
            let xv = bf16_vals(&mut rng, n * dims.iter().product::<usize>() * ci, -1.0, 1.0);
            let wv = bf16_vals(&mut rng, k * k * k * ci * co, -0.5, 0.5);
            let bv = uniform(&mut rng, co, -0.5, 0.5);
            let bnv = uniform(&mut rng, n * co, -0.5, 0.5);
            let rv = bf16_vals(&mut rng, ys.iter().product(), -1.0, 1.0);
            let run = |d: &Device, dt: DType| {
                let x = Tensor::from_f32(&xv, &[n, dims[0], dims[1], dims[2], ci], dt, d).unwrap();
                let w = Tensor::from_f32(&wv, &[k * k * k * ci, co], dt, d).unwrap();
                let b = Tensor::from_f32(&bv, &[co], DType::F32, d).unwrap();
                let bn = Tensor::from_f32(&bnv, &[n, co], DType::F32, d).unwrap();
                let r = Tensor::from_f32(&rv, &ys, dt, d).unwrap();
                let mut y = Tensor::full(&ys, f32::NAN, dt, d).unwrap();
                conv3d::conv3d(&x, &w, &b, with_bn.then_some(&bn), with_res.then_some(&r), &mut y, k, stride).unwrap();
                y.to_f32_vec().unwrap()
            };
            let want = run(&Device::Cpu, DType::F32);
            let got = run(&dev, DType::BF16);
            // bf16 output rounding (2^-8 relative) plus f32 summation order.
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert_close(&format!("conv3d {} {n}x{dims:?}x{ci}->{co} k{k} s{stride}", dev.name()), &got, &want, |i| 4e-3 * want[i].abs() + 1e-4 * scale);
        }
    }
}

/// Runs `f` on the CPU (f32) and on `dev` (activations in `dt`) and returns both outputs.
fn both<F: Fn(&Device, DType) -> Vec<f32>>(dev: &Device, dt: DType, f: F) -> (Vec<f32>, Vec<f32>) {
    (f(&Device::Cpu, DType::F32), f(dev, dt))
}

#[test]
fn group_norm_matches_reference() {
    use tomodiff::ops::group_norm::group_norm;
    let mut rng = rng("group_norm");
    for dev in kernel_devices("group_norm") {
        for &(n, s, c, g, silu) in &[(2usize, 37usize, 16usize, 8usize, true), (1, 300, 32, 4, false), (3, 8, 64, 32, true)] {
            let xv = bf16_vals(&mut rng, n * s * c, -2.0, 3.0);
            let gv = uniform(&mut rng, c, 0.5, 1.5);
            let bv = uniform(&mut rng, c, -0.5, 0.5);
            let (want, got) = both(&dev, DType::BF16, |d, dt| {
                let x = Tensor::from_f32(&xv, &[n, s, c], dt, d).unwrap();
                let (gm, bt) = (Tensor::from_f32(&gv, &[c], DType::F32, d).unwrap(), Tensor::from_f32(&bv, &[c], DType::F32, d).unwrap());
                let mut y = Tensor::full(&[n, s, c], f32::NAN, dt, d).unwrap();
                group_norm(&x, &gm, &bt, g, silu, &mut y).unwrap();
                y.to_f32_vec().unwrap()
            });
            assert_close(&format!("group_norm {} {n}x{s}x{c}/{g}", dev.name()), &got, &want, |i| 4e-3 * want[i].abs() + 2e-3);
        }
    }
}

#[test]
fn linear_and_embedding_match_reference() {
    use tomodiff::ops::{embedding, linear};
    let mut rng = rng("linear");
    for dev in kernel_devices("linear") {
        let (n, din, dout) = (3, 40, 24);
        let (xv, wv, bv) = (uniform(&mut rng, n * din, -2.0, 2.0), uniform(&mut rng, dout * din, -0.5, 0.5), uniform(&mut rng, dout, -1.0, 1.0));
        for silu in [false, true] {
            let (want, got) = both(&dev, DType::F32, |d, _| {
                let x = Tensor::from_f32(&xv, &[n, din], DType::F32, d).unwrap();
                let w = Tensor::from_f32(&wv, &[dout, din], DType::F32, d).unwrap();
                let b = Tensor::from_f32(&bv, &[dout], DType::F32, d).unwrap();
                let mut y = Tensor::full(&[n, dout], f32::NAN, DType::F32, d).unwrap();
                linear::linear(&x, &w, &b, &mut y, silu).unwrap();
                y.to_f32_vec().unwrap()
            });
            assert_close(&format!("linear {} silu {silu}", dev.name()), &got, &want, |i| 1e-5 * want[i].abs() + 1e-5);
        }
        let tv = vec![0.0, 1.0, 10.0, 999.0];
        let (want, got) = both(&dev, DType::F32, |d, _| {
            let t = Tensor::from_f32(&tv, &[4], DType::F32, d).unwrap();
            let mut y = Tensor::full(&[4, 64], f32::NAN, DType::F32, d).unwrap();
            embedding::timestep_embedding(&t, &mut y).unwrap();
            y.to_f32_vec().unwrap()
        });
        // f32 sin/cos of arguments up to 999: about 1e-4 absolute.
        assert_close(&format!("embedding {}", dev.name()), &got, &want, |_| 2e-4);
    }
}

#[test]
fn attention_matches_reference() {
    use tomodiff::ops::attention::attention;
    let mut rng = rng("attention");
    for dev in kernel_devices("attention") {
        for &(n, t, c, heads) in &[(2usize, 75usize, 32usize, 2usize), (1, 130, 64, 2), (1, 64, 128, 2)] {
            let qv = bf16_vals(&mut rng, n * t * 3 * c, -1.5, 1.5);
            let (want, got) = both(&dev, DType::BF16, |d, dt| {
                let qkv = Tensor::from_f32(&qv, &[n, t, 3 * c], dt, d).unwrap();
                let mut y = Tensor::full(&[n, t, c], f32::NAN, dt, d).unwrap();
                attention(&qkv, &mut y, heads).unwrap();
                y.to_f32_vec().unwrap()
            });
            assert_close(&format!("attention {} {n}x{t}x{c}/{heads}", dev.name()), &got, &want, |i| 4e-3 * want[i].abs() + 1e-3);
        }
    }
}

#[test]
fn upsample_and_concat_are_exact() {
    use tomodiff::ops::resample::{concat, upsample2};
    let mut rng = rng("resample");
    for dev in kernel_devices("resample") {
        let xv = bf16_vals(&mut rng, 2 * 3 * 2 * 5 * 6, -1.0, 1.0);
        let (want, got) = both(&dev, DType::BF16, |d, dt| {
            let x = Tensor::from_f32(&xv, &[2, 3, 2, 5, 6], dt, d).unwrap();
            let mut y = Tensor::full(&[2, 6, 4, 10, 6], f32::NAN, dt, d).unwrap();
            upsample2(&x, &mut y).unwrap();
            y.to_f32_vec().unwrap()
        });
        assert_close(&format!("upsample2 {}", dev.name()), &got, &want, |_| 0.0);
        let bv = bf16_vals(&mut rng, 2 * 3 * 2 * 5 * 4, -1.0, 1.0);
        let (want, got) = both(&dev, DType::BF16, |d, dt| {
            let a = Tensor::from_f32(&xv, &[2, 3, 2, 5, 6], dt, d).unwrap();
            let b = Tensor::from_f32(&bv, &[2, 3, 2, 5, 4], dt, d).unwrap();
            let mut y = Tensor::full(&[2, 3, 2, 5, 10], f32::NAN, dt, d).unwrap();
            concat(&a, &b, &mut y).unwrap();
            y.to_f32_vec().unwrap()
        });
        assert_close(&format!("concat {}", dev.name()), &got, &want, |_| 0.0);
    }
}

#[test]
fn conv3d_backward_matches_reference() {
    let mut rng = rng("conv3d_backward");
    let cases = [(2usize, [5usize, 4, 6], 5usize, 12usize, 3usize, 1usize), (1, [8, 6, 7], 16, 8, 3, 2), (2, [3, 4, 5], 16, 24, 1, 1)];
    for dev in kernel_devices("conv3d_backward") {
        for &(n, dims, ci, co, k, stride) in &cases {
            let od = dims.map(|d| conv3d::out_len(d, k, stride));
            let ys = [n, od[0], od[1], od[2], co];
            let xs = [n, dims[0], dims[1], dims[2], ci];
            let xv = bf16_vals(&mut rng, xs.iter().product(), -1.0, 1.0);
            let wv = bf16_vals(&mut rng, k * k * k * ci * co, -0.5, 0.5);
            let gv = bf16_vals(&mut rng, ys.iter().product(), -1.0, 1.0);
            let run = |d: &Device, dt: DType| {
                let x = Tensor::from_f32(&xv, &xs, dt, d).unwrap();
                let w = Tensor::from_f32(&wv, &[k * k * k * ci, co], dt, d).unwrap();
                // Gradients are f32 on every device.
                let dy = Tensor::from_f32(&gv, &ys, DType::F32, d).unwrap();
                let mut dx = Tensor::full(&xs, f32::NAN, DType::F32, d).unwrap();
                let mut dw = Tensor::full(&[k * k * k * ci, co], f32::NAN, DType::F32, d).unwrap();
                let mut db = Tensor::full(&[co], f32::NAN, DType::F32, d).unwrap();
                conv3d::conv3d_backward(&x, &w, &dy, Some(&mut dx), &mut dw, &mut db, k, stride).unwrap();
                (dx.to_f32_vec().unwrap(), dw.to_f32_vec().unwrap(), db.to_f32_vec().unwrap())
            };
            let want = run(&Device::Cpu, DType::F32);
            let got = run(&dev, DType::BF16);
            let tag = format!("{} {n}x{dims:?}x{ci}->{co} k{k} s{stride}", dev.name());
            for (what, g, w, out_bf16) in [("dx", &got.0, &want.0, true), ("dw", &got.1, &want.1, false), ("db", &got.2, &want.2, false)] {
                let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
                let rel = if out_bf16 { 4e-3 } else { 1e-5 };
                assert_close(&format!("conv3d {what} {tag}"), g, w, |i| rel * w[i].abs() + 1e-4 * scale);
            }
        }
    }
}

#[test]
fn group_norm_and_upsample_backward_match_reference() {
    use tomodiff::ops::group_norm::group_norm_backward;
    use tomodiff::ops::resample::upsample2_backward;
    let mut rng = rng("gn_backward");
    for dev in kernel_devices("gn_backward") {
        for &(n, s, c, g, silu) in &[(2usize, 37usize, 16usize, 8usize, true), (1, 100, 32, 4, false)] {
            let xv = bf16_vals(&mut rng, n * s * c, -2.0, 3.0);
            let dv = bf16_vals(&mut rng, n * s * c, -1.0, 1.0);
            let gv = uniform(&mut rng, c, 0.5, 1.5);
            let bv = uniform(&mut rng, c, -0.5, 0.5);
            let run = |d: &Device, dt: DType| {
                let x = Tensor::from_f32(&xv, &[n, s, c], dt, d).unwrap();
                let dy = Tensor::from_f32(&dv, &[n, s, c], DType::F32, d).unwrap();
                let (gm, bt) = (Tensor::from_f32(&gv, &[c], DType::F32, d).unwrap(), Tensor::from_f32(&bv, &[c], DType::F32, d).unwrap());
                let mut dx = Tensor::full(&[n, s, c], f32::NAN, DType::F32, d).unwrap();
                let mut dg = Tensor::full(&[c], f32::NAN, DType::F32, d).unwrap();
                let mut db = Tensor::full(&[c], f32::NAN, DType::F32, d).unwrap();
                group_norm_backward(&x, &gm, &bt, g, silu, &dy, &mut dx, &mut dg, &mut db).unwrap();
                (dx.to_f32_vec().unwrap(), dg.to_f32_vec().unwrap(), db.to_f32_vec().unwrap())
            };
            let (want, got) = (run(&Device::Cpu, DType::F32), run(&dev, DType::BF16));
            for (what, gt, w) in [("dx", &got.0, &want.0), ("dgamma", &got.1, &want.1), ("dbeta", &got.2, &want.2)] {
                let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
                assert_close(&format!("group_norm {what} {} {n}x{s}x{c}/{g}", dev.name()), gt, w, |i| 4e-3 * w[i].abs() + 2e-3 * scale);
            }
        }
        let gv = bf16_vals(&mut rng, 2 * 6 * 4 * 10 * 3, -1.0, 1.0);
        let run = |d: &Device| {
            let dy = Tensor::from_f32(&gv, &[2, 6, 4, 10, 3], DType::F32, d).unwrap();
            let mut dx = Tensor::full(&[2, 3, 2, 5, 3], f32::NAN, DType::F32, d).unwrap();
            upsample2_backward(&dy, &mut dx).unwrap();
            dx.to_f32_vec().unwrap()
        };
        let (want, got) = (run(&Device::Cpu), run(&dev));
        assert_close(&format!("upsample2 backward {}", dev.name()), &got, &want, |i| 1e-6 * want[i].abs() + 1e-6);
    }
}

#[test]
fn linear_and_attention_backward_match_reference() {
    use tomodiff::ops::{attention, linear};
    let mut rng = rng("lin_attn_backward");
    for dev in kernel_devices("lin_attn_backward") {
        let (n, din, dout) = (3, 40, 24);
        let (xv, wv, gv) = (uniform(&mut rng, n * din, -2.0, 2.0), uniform(&mut rng, dout * din, -0.5, 0.5), uniform(&mut rng, n * dout, -1.0, 1.0));
        for silu in [false, true] {
            let run = |d: &Device| {
                let x = Tensor::from_f32(&xv, &[n, din], DType::F32, d).unwrap();
                let w = Tensor::from_f32(&wv, &[dout, din], DType::F32, d).unwrap();
                let dy = Tensor::from_f32(&gv, &[n, dout], DType::F32, d).unwrap();
                let mut dx = Tensor::full(&[n, din], f32::NAN, DType::F32, d).unwrap();
                let mut dw = Tensor::full(&[dout, din], f32::NAN, DType::F32, d).unwrap();
                let mut db = Tensor::full(&[dout], f32::NAN, DType::F32, d).unwrap();
                linear::linear_backward(&x, &w, &dy, silu, &mut dx, &mut dw, &mut db).unwrap();
                [dx.to_f32_vec().unwrap(), dw.to_f32_vec().unwrap(), db.to_f32_vec().unwrap()]
            };
            let (want, got) = (run(&Device::Cpu), run(&dev));
            for (k, what) in ["dx", "dw", "db"].iter().enumerate() {
                assert_close(&format!("linear {what} {} silu {silu}", dev.name()), &got[k], &want[k], |i| 1e-5 * want[k][i].abs() + 1e-5);
            }
        }
        for &(n, t, c, heads) in &[(2usize, 75usize, 32usize, 2usize), (1, 40, 128, 2)] {
            let qv = bf16_vals(&mut rng, n * t * 3 * c, -1.5, 1.5);
            let gv = bf16_vals(&mut rng, n * t * c, -1.0, 1.0);
            let run = |d: &Device, dt: DType| {
                let qkv = Tensor::from_f32(&qv, &[n, t, 3 * c], dt, d).unwrap();
                let dout = Tensor::from_f32(&gv, &[n, t, c], DType::F32, d).unwrap();
                let mut g = Tensor::full(&[n, t, 3 * c], f32::NAN, DType::F32, d).unwrap();
                attention::attention_backward(&qkv, &dout, heads, &mut g).unwrap();
                g.to_f32_vec().unwrap()
            };
            let (want, got) = (run(&Device::Cpu, DType::F32), run(&dev, DType::BF16));
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert_close(&format!("attention backward {} {n}x{t}x{c}/{heads}", dev.name()), &got, &want, |i| 4e-3 * want[i].abs() + 2e-3 * scale);
        }
    }
}

#[test]
fn add_split_and_sample_sums_match_reference() {
    use tomodiff::ops::{resample, vector};
    let mut rng = rng("add_split");
    for dev in kernel_devices("add_split") {
        let (av, bv) = (bf16_vals(&mut rng, 2 * 30 * 10, -1.0, 1.0), bf16_vals(&mut rng, 2 * 30 * 10, -1.0, 1.0));
        let run_add = |d: &Device, dt: DType| {
            let (a, b) = (Tensor::from_f32(&av, &[2, 30, 10], dt, d).unwrap(), Tensor::from_f32(&bv, &[2, 30, 10], dt, d).unwrap());
            let mut y = Tensor::full(&[2, 30, 10], f32::NAN, dt, d).unwrap();
            vector::add(&a, &b, &mut y).unwrap();
            y.to_f32_vec().unwrap()
        };
        let (want, got) = (run_add(&Device::Cpu, DType::F32), run_add(&dev, DType::BF16));
        assert_close(&format!("add {}", dev.name()), &got, &want, |i| 4e-3 * want[i].abs() + 1e-7);
        // split and per-sample sums act on gradients: f32 everywhere.
        let run_split = |d: &Device| {
            let y = Tensor::from_f32(&av, &[2, 30, 10], DType::F32, d).unwrap();
            let (mut a, mut b) = (Tensor::full(&[2, 30, 3], f32::NAN, DType::F32, d).unwrap(), Tensor::full(&[2, 30, 7], f32::NAN, DType::F32, d).unwrap());
            resample::split(&y, &mut a, &mut b).unwrap();
            let mut s = Tensor::full(&[2, 10], f32::NAN, DType::F32, d).unwrap();
            resample::sample_sums(&y, &mut s).unwrap();
            (a.to_f32_vec().unwrap(), b.to_f32_vec().unwrap(), s.to_f32_vec().unwrap())
        };
        let (want, got) = (run_split(&Device::Cpu), run_split(&dev));
        assert_close(&format!("split a {}", dev.name()), &got.0, &want.0, |_| 0.0);
        assert_close(&format!("split b {}", dev.name()), &got.1, &want.1, |_| 0.0);
        assert_close(&format!("sample_sums {}", dev.name()), &got.2, &want.2, |_| 1e-5);
    }
}
