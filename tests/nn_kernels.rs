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
