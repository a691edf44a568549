//! The CPU's fast paths against the plain references they replace: the direct convolution
//! (forward, data and weight gradients) against im2col + sgemm, on random shapes with the
//! outputs poisoned first.
mod common;
use common::*;
use tomodiff::ops::{conv3d, conv3d_cpu};
use tomodiff::{DType, Device, Tensor};

#[test]
fn direct_convolution_is_used_where_the_cpu_has_avx2() {
    #[cfg(target_arch = "x86_64")]
    assert_eq!(conv3d_cpu::available(), std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"));
}

/// (N, [D, H, W], Ci, Co, k, stride): odd extents, both strides, 1x1x1, channel counts that are
/// and are not whole register tiles (16), the network's 5-channel input and 1-channel output,
/// few output channels (the dot-product path) with input channels that are not a multiple of 8.
const CASES: [(usize, [usize; 3], usize, usize, usize, usize); 9] = [
    (2, [6, 5, 7], 5, 16, 3, 1),
    (1, [8, 8, 8], 16, 32, 3, 2),
    (3, [4, 6, 4], 16, 8, 1, 1),
    (1, [5, 5, 5], 8, 136, 3, 1),
    (1, [7, 3, 5], 24, 1, 3, 1),
    (2, [9, 7, 6], 48, 16, 3, 2),
    (1, [3, 3, 3], 32, 48, 3, 1),
    (2, [1, 2, 13], 7, 32, 3, 1),
    (2, [5, 6, 4], 13, 3, 3, 2),
];

#[test]
fn direct_convolution_matches_im2col_reference() {
    let mut rng = rng("cpu conv3d");
    for &(n, dims, ci, co, k, stride) in &CASES {
        for (with_bn, with_res) in [(false, false), (true, true)] {
            let od = dims.map(|d| conv3d::out_len(d, k, stride));
            let ys = [n, od[0], od[1], od[2], co];
            let xv = uniform(&mut rng, n * dims.iter().product::<usize>() * ci, -1.0, 1.0);
            let wv = uniform(&mut rng, k * k * k * ci * co, -0.5, 0.5);
            let bv = uniform(&mut rng, co, -0.5, 0.5);
            let bnv = uniform(&mut rng, n * co, -0.5, 0.5);
            let rv = uniform(&mut rng, ys.iter().product(), -1.0, 1.0);
            let (mut want, _) = conv3d::conv3d_ref(&xv, n, dims, ci, &wv, &bv, co, k, stride);
            let per = od.iter().product::<usize>();
            for (i, o) in want.iter_mut().enumerate() {
                let (s, c) = (i / co / per, i % co);
                *o += if with_bn { bnv[s * co + c] } else { 0.0 } + if with_res { rv[i] } else { 0.0 };
            }
            let d = Device::Cpu;
            let x = Tensor::from_f32(&xv, &[n, dims[0], dims[1], dims[2], ci], DType::F32, &d).unwrap();
            let w = Tensor::from_f32(&wv, &[k * k * k * ci, co], DType::F32, &d).unwrap();
            let b = Tensor::from_f32(&bv, &[co], DType::F32, &d).unwrap();
            let bn = Tensor::from_f32(&bnv, &[n, co], DType::F32, &d).unwrap();
            let r = Tensor::from_f32(&rv, &ys, DType::F32, &d).unwrap();
            let mut y = Tensor::full(&ys, f32::NAN, DType::F32, &d).unwrap();
            conv3d::conv3d(&x, &w, &b, with_bn.then_some(&bn), with_res.then_some(&r), &mut y, k, stride).unwrap();
            let got = y.to_f32_vec().unwrap();
            // f32 throughout: only the order of the k^3 Ci products differs.
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert_close(&format!("cpu conv3d {n}x{dims:?}x{ci}->{co} k{k} s{stride} bn={with_bn} res={with_res}"), &got, &want, |i| 1e-5 * want[i].abs() + 2e-6 * scale);
        }
    }
}

#[test]
fn direct_convolution_gradients_match_im2col_reference() {
    if !conv3d_cpu::available() {
        eprintln!("cpu conv3d backward: no AVX2/FMA, the reference is the only path");
        return;
    }
    let mut rng = rng("cpu conv3d backward");
    for &(n, dims, ci, co, k, stride) in &CASES {
        let od = dims.map(|d| conv3d::out_len(d, k, stride));
        let xv = uniform(&mut rng, n * dims.iter().product::<usize>() * ci, -1.0, 1.0);
        let wv = uniform(&mut rng, k * k * k * ci * co, -0.5, 0.5);
        let gv = uniform(&mut rng, n * od.iter().product::<usize>() * co, -1.0, 1.0);
        let want = conv3d::conv3d_backward_ref(&xv, n, dims, ci, &wv, &gv, co, k, stride);
        let got = conv3d::conv3d_backward_direct(&xv, n, dims, ci, &wv, &gv, co, k, stride, true);
        assert!(conv3d::conv3d_backward_direct(&xv, n, dims, ci, &wv, &gv, co, k, stride, false).0.is_none());
        for (what, g, w) in [("dx", got.0.as_ref().unwrap(), &want.0), ("dw", &got.1, &want.1), ("db", &got.2, &want.2)] {
            let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert_close(&format!("cpu conv3d {what} {n}x{dims:?}x{ci}->{co} k{k} s{stride}"), g, w, |i| 1e-5 * w[i].abs() + 2e-6 * scale);
        }
    }
}

#[test]
fn vectorised_exp_is_accurate() {
    use tomodiff::ops::cpu::exp;
    let mut worst = 0f64;
    for i in 0..=200_000 {
        let x = (-87.0 + 175.0 * i as f64 / 200_000.0) as f32;
        let want = (x as f64).exp();
        let rel = ((exp(x) as f64 - want) / want).abs();
        worst = worst.max(rel);
    }
    eprintln!("exp: worst relative error {worst:.2e} on [-87, 88]");
    assert!(worst < 3e-7, "exp: relative error {worst:e}");
    assert_eq!(exp(-1e4), exp(-87.0));
    assert!(exp(1e4).is_finite());
}

#[test]
fn fast_group_norm_matches_reference() {
    use tomodiff::ops::group_norm::{group_norm, group_norm_backward, group_norm_backward_ref, group_norm_ref};
    let mut rng = rng("cpu group_norm");
    // (N, positions, C, groups): more positions than one chunk (256), one group, groups of one.
    for &(n, s, c, g) in &[(2usize, 700usize, 32usize, 8usize), (1, 37, 16, 1), (3, 300, 24, 24)] {
        for silu in [false, true] {
            // An offset mean, as activations have, so that centring matters.
            let xv = uniform(&mut rng, n * s * c, 1.0, 4.0);
            let gv = uniform(&mut rng, c, 0.5, 1.5);
            let bv = uniform(&mut rng, c, -0.5, 0.5);
            let dyv = uniform(&mut rng, n * s * c, -1.0, 1.0);
            let d = Device::Cpu;
            let t = |v: &[f32], sh: &[usize]| Tensor::from_f32(v, sh, DType::F32, &d).unwrap();
            let (x, gm, bt, dy) = (t(&xv, &[n, s, c]), t(&gv, &[c]), t(&bv, &[c]), t(&dyv, &[n, s, c]));
            let mut y = Tensor::full(&[n, s, c], f32::NAN, DType::F32, &d).unwrap();
            group_norm(&x, &gm, &bt, g, silu, &mut y).unwrap();
            let want = group_norm_ref(&xv, n, c, g, &gv, &bv, silu);
            let tag = format!("{n}x{s}x{c}/{g} silu={silu}");
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert_close(&format!("cpu group_norm {tag}"), &y.to_f32_vec().unwrap(), &want, |i| 2e-6 * want[i].abs() + 2e-6 * scale);
            let mut dx = Tensor::full(&[n, s, c], f32::NAN, DType::F32, &d).unwrap();
            let mut dg = Tensor::full(&[c], f32::NAN, DType::F32, &d).unwrap();
            let mut db = Tensor::full(&[c], f32::NAN, DType::F32, &d).unwrap();
            group_norm_backward(&x, &gm, &bt, g, silu, &dy, &mut dx, &mut dg, &mut db).unwrap();
            let (wx, wg, wb) = group_norm_backward_ref(&xv, n, c, g, &gv, &bv, silu, &dyv);
            for (what, got, want) in [("dx", dx.to_f32_vec().unwrap(), wx), ("dgamma", dg.to_f32_vec().unwrap(), wg), ("dbeta", db.to_f32_vec().unwrap(), wb)] {
                let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                assert_close(&format!("cpu group_norm {what} {tag}"), &got, &want, |i| 1e-5 * want[i].abs() + 1e-5 * scale);
            }
        }
    }
}

#[test]
fn fast_attention_matches_reference() {
    use tomodiff::ops::attention::{attention, attention_backward, attention_backward_ref, attention_ref};
    let mut rng = rng("cpu attention");
    // (N, T, C, heads): one head, several, a token count that is no multiple of anything.
    for &(n, t, c, heads) in &[(2usize, 64usize, 32usize, 2usize), (1, 37, 16, 1), (2, 125, 48, 3)] {
        let qv = uniform(&mut rng, n * t * 3 * c, -1.5, 1.5);
        let gv = uniform(&mut rng, n * t * c, -1.0, 1.0);
        let d = Device::Cpu;
        let q = Tensor::from_f32(&qv, &[n, t, 3 * c], DType::F32, &d).unwrap();
        let mut o = Tensor::full(&[n, t, c], f32::NAN, DType::F32, &d).unwrap();
        attention(&q, &mut o, heads).unwrap();
        let want = attention_ref(&qv, n, t, c, heads);
        let tag = format!("{n}x{t}x{c}/{heads}");
        assert_close(&format!("cpu attention {tag}"), &o.to_f32_vec().unwrap(), &want, |i| 1e-5 * want[i].abs() + 2e-6);
        let g = Tensor::from_f32(&gv, &[n, t, c], DType::F32, &d).unwrap();
        let mut dq = Tensor::full(&[n, t, 3 * c], f32::NAN, DType::F32, &d).unwrap();
        attention_backward(&q, &g, heads, &mut dq).unwrap();
        let want = attention_backward_ref(&qv, n, t, c, heads, &gv);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert_close(&format!("cpu attention backward {tag}"), &dq.to_f32_vec().unwrap(), &want, |i| 1e-5 * want[i].abs() + 1e-5 * scale);
    }
}

#[test]
fn empty_batches_are_no_work_not_a_panic() {
    use tomodiff::ops::{attention, group_norm};
    let d = Device::Cpu;
    let z = |s: &[usize]| Tensor::zeros(s, DType::F32, &d).unwrap();
    let (x, w, b) = (z(&[0, 4, 4, 4, 16]), z(&[27 * 16, 16]), z(&[16]));
    let mut y = z(&[0, 4, 4, 4, 16]);
    conv3d::conv3d(&x, &w, &b, None, None, &mut y, 3, 1).unwrap();
    let (mut dx, mut dw, mut db) = (z(&[0, 4, 4, 4, 16]), Tensor::full(&[27 * 16, 16], f32::NAN, DType::F32, &d).unwrap(), z(&[16]));
    conv3d::conv3d_backward(&x, &w, &y, Some(&mut dx), &mut dw, &mut db, 3, 1).unwrap();
    assert!(dw.to_f32_vec().unwrap().iter().all(|v| *v == 0.0), "no voxels: a zero weight gradient");
    group_norm::group_norm(&x, &b, &b, 4, true, &mut y).unwrap();
    let mut a = z(&[0, 8, 16]);
    attention::attention(&z(&[0, 8, 48]), &mut a, 1).unwrap();
}
