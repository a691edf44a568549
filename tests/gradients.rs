//! Backward references against central finite differences: for L = sum_i w_i y_i with random w,
//! dL/dp from each op's backward equals (L(p + h) - L(p - h)) / 2h at random coordinates, the
//! sums taken in f64.
mod common;
use common::*;
use rand::Rng;
use tomodiff::ops::{attention, conv3d, group_norm, linear, resample};

/// Checks `grad` (the analytic dL/dp) at `checks` random coordinates of p.
fn fd_check(what: &str, p: &[f32], grad: &[f32], wts: &[f32], f: &dyn Fn(&[f32]) -> Vec<f32>, rng: &mut impl Rng) {
    assert_eq!(p.len(), grad.len(), "{what}: gradient length");
    let loss = |q: &[f32]| -> f64 { f(q).iter().zip(wts).map(|(y, w)| *y as f64 * *w as f64).sum() };
    let gmax = grad.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    let h = 1e-2f32;
    for _ in 0..12 {
        let k = rng.random_range(0..p.len());
        let mut q = p.to_vec();
        q[k] = p[k] + h;
        let lp = loss(&q);
        q[k] = p[k] - h;
        let lm = loss(&q);
        let fd = (lp - lm) / (2.0 * h as f64);
        let an = grad[k] as f64;
        assert!((fd - an).abs() <= 2e-2 * an.abs() + 3e-3 * gmax, "{what}[{k}]: finite difference {fd}, backward {an}");
    }
}

#[test]
fn conv3d_gradients() {
    let mut rng = rng("grad-conv3d");
    for &(dims, ci, co, k, stride) in &[([4usize, 5, 3], 3usize, 4usize, 3usize, 1usize), ([6, 4, 5], 2, 3, 3, 2), ([3, 3, 4], 5, 2, 1, 1)] {
        let x = uniform(&mut rng, dims.iter().product::<usize>() * ci, -1.0, 1.0);
        let w = uniform(&mut rng, k * k * k * ci * co, -0.5, 0.5);
        let b = uniform(&mut rng, co, -0.5, 0.5);
        let fwd = |x: &[f32], w: &[f32], b: &[f32]| conv3d::conv3d_ref(x, 1, dims, ci, w, b, co, k, stride).0;
        let ny = fwd(&x, &w, &b).len();
        let wts = uniform(&mut rng, ny, -1.0, 1.0);
        let (dx, dw, db) = conv3d::conv3d_backward_ref(&x, 1, dims, ci, &w, &wts, co, k, stride);
        let tag = format!("conv3d {dims:?} {ci}->{co} k{k} s{stride}");
        fd_check(&format!("{tag} dx"), &x, &dx, &wts, &|q| fwd(q, &w, &b), &mut rng);
        fd_check(&format!("{tag} dw"), &w, &dw, &wts, &|q| fwd(&x, q, &b), &mut rng);
        fd_check(&format!("{tag} db"), &b, &db, &wts, &|q| fwd(&x, &w, q), &mut rng);
    }
}

#[test]
fn group_norm_gradients() {
    let mut rng = rng("grad-gn");
    for &(n, s, c, g, silu) in &[(2usize, 7usize, 8usize, 4usize, true), (1, 9, 6, 2, false)] {
        let x = uniform(&mut rng, n * s * c, -2.0, 2.0);
        let gm = uniform(&mut rng, c, 0.5, 1.5);
        let bt = uniform(&mut rng, c, -0.5, 0.5);
        let fwd = |x: &[f32], gm: &[f32], bt: &[f32]| group_norm::group_norm_ref(x, n, c, g, gm, bt, silu);
        let wts = uniform(&mut rng, x.len(), -1.0, 1.0);
        let (dx, dg, db) = group_norm::group_norm_backward_ref(&x, n, c, g, &gm, &bt, silu, &wts);
        fd_check("group_norm dx", &x, &dx, &wts, &|q| fwd(q, &gm, &bt), &mut rng);
        fd_check("group_norm dgamma", &gm, &dg, &wts, &|q| fwd(&x, q, &bt), &mut rng);
        fd_check("group_norm dbeta", &bt, &db, &wts, &|q| fwd(&x, &gm, q), &mut rng);
    }
}

#[test]
fn linear_attention_upsample_gradients() {
    let mut rng = rng("grad-misc");
    let (n, din, dout) = (3, 7, 5);
    let x = uniform(&mut rng, n * din, -1.0, 1.0);
    let w = uniform(&mut rng, dout * din, -1.0, 1.0);
    let b = uniform(&mut rng, dout, -1.0, 1.0);
    let wts = uniform(&mut rng, n * dout, -1.0, 1.0);
    let (dx, dw, db) = linear::linear_backward_ref(&x, n, &w, din, dout, &wts);
    fd_check("linear dx", &x, &dx, &wts, &|q| linear::linear_ref(q, n, &w, &b, din, dout), &mut rng);
    fd_check("linear dw", &w, &dw, &wts, &|q| linear::linear_ref(&x, n, q, &b, din, dout), &mut rng);
    fd_check("linear db", &b, &db, &wts, &|q| linear::linear_ref(&x, n, &w, q, din, dout), &mut rng);

    let (n, t, c, heads) = (2, 6, 8, 2);
    let qkv = uniform(&mut rng, n * t * 3 * c, -1.0, 1.0);
    let wts = uniform(&mut rng, n * t * c, -1.0, 1.0);
    let g = attention::attention_backward_ref(&qkv, n, t, c, heads, &wts);
    fd_check("attention dqkv", &qkv, &g, &wts, &|q| attention::attention_ref(q, n, t, c, heads), &mut rng);

    let x = uniform(&mut rng, 2 * 2 * 3 * 2 * 3, -1.0, 1.0);
    let wts = uniform(&mut rng, x.len() * 8, -1.0, 1.0);
    let g = resample::upsample2_backward_ref(&wts, 2, [2, 3, 2], 3);
    fd_check("upsample2 dx", &x, &g, &wts, &|q| resample::upsample2_ref(q, 2, [2, 3, 2], 3), &mut rng);
}
