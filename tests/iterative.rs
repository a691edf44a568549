//! CGLS and SIRT on the projector pair, on the CPU and emulated.
mod common;
use common::*;
use tomodiff::ct::iterative::{cgls, cgls_damped, sirt};
use tomodiff::ct::phantom::{self, SheppLogan};
use tomodiff::ct::{siddon::Projector, Geometry};
use tomodiff::{DType, Device, Tensor};

fn setup() -> (Geometry, Vec<f32>, Vec<f32>) {
    let g = Geometry::from_json(
        r#"{"volume": {"shape": [12, 20, 20], "voxel_size": [1, 1, 1]},
            "scan": {"type": "cone", "n_views": 24, "source_origin": 80, "origin_detector": 40, "det_shape": [20, 32]}}"#,
    )
    .unwrap();
    let truth = phantom::voxelize(&phantom::shepp_logan(SheppLogan::YuYeWang), &g.volume, 1);
    let mut y = vec![0f32; g.n_rays()];
    tomodiff::ct::siddon::forward_ref(&g, &truth, &mut y).unwrap();
    (g, truth, y)
}

fn devices() -> Vec<Device> {
    let mut d = vec![Device::Cpu];
    d.extend(kernel_devices("iterative"));
    d
}

#[test]
fn cgls_residuals_fall_monotonically() {
    let (g, _, y) = setup();
    let mut finals = Vec::new();
    for dev in devices() {
        let p = Projector::new(g.clone(), &dev).unwrap();
        let yt = Tensor::from_f32(&y, &g.proj_shape(), DType::F32, &dev).unwrap();
        let mut x = Tensor::zeros(&g.volume.shape, DType::F32, &dev).unwrap();
        let mut calls = 0;
        let h = cgls(&p, &yt, &mut x, 15, |_, _| calls += 1).unwrap();
        let r = &h.residuals;
        eprintln!("cgls {}: residuals {:.3e} -> {:.3e}", dev.name(), r[0], r[r.len() - 1]);
        assert_eq!(calls, 15);
        assert!(r.windows(2).all(|w| w[1] < w[0]), "{}: not monotone: {r:?}", dev.name());
        assert!(r[15] < 0.05 * r[0], "{}: {r:?}", dev.name());
        finals.push(x.to_f32_vec().unwrap());
    }
    for f in &finals[1..] {
        let scale = finals[0].iter().fold(0f32, |m, v| m.max(v.abs()));
        assert_close("cgls kernel vs cpu", f, &finals[0], |_| 1e-3 * scale);
    }
}

#[test]
fn sirt_residuals_fall_and_stay_nonnegative() {
    let (g, _, y) = setup();
    for dev in devices() {
        let p = Projector::new(g.clone(), &dev).unwrap();
        let yt = Tensor::from_f32(&y, &g.proj_shape(), DType::F32, &dev).unwrap();
        let mut x = Tensor::zeros(&g.volume.shape, DType::F32, &dev).unwrap();
        let h = sirt(&p, &yt, &mut x, 20, 1.0, true, |_, _| {}).unwrap();
        let r = &h.residuals;
        eprintln!("sirt {}: residuals {:.3e} -> {:.3e}", dev.name(), r[0], r[r.len() - 1]);
        assert!(r.windows(2).all(|w| w[1] <= w[0] * (1.0 + 1e-6)), "{}: {r:?}", dev.name());
        assert!(r[20] < 0.5 * r[0]);
        assert!(x.to_f32_vec().unwrap().iter().all(|v| *v >= 0.0));
    }
    let p = Projector::new(g.clone(), &Device::Cpu).unwrap();
    let yt = Tensor::from_f32(&y, &g.proj_shape(), DType::F32, &Device::Cpu).unwrap();
    let mut x = Tensor::zeros(&g.volume.shape, DType::F32, &Device::Cpu).unwrap();
    assert!(sirt(&p, &yt, &mut x, 1, 2.5, false, |_, _| {}).unwrap_err().to_string().contains("(0, 2)"));
}

/// Damped CG (reconstruction's data consistency) solves (A^T A + gamma I) x = A^T y + gamma x0
/// from x0: the normal-equation residual falls far below the right-hand side; gamma = 0 is CGLS.
#[test]
fn damped_cg_solves_the_regularised_normal_equations() {
    let (g, truth, y) = setup();
    let x0: Vec<f32> = truth.iter().enumerate().map(|(i, v)| v * 0.7 + 0.1 * ((i * 7919 % 13) as f32 / 13.0)).collect();
    let gamma = 5.0f64;
    let aat = |v: &[f32]| {
        let mut p = vec![0f32; g.n_rays()];
        tomodiff::ct::siddon::forward_ref(&g, v, &mut p).unwrap();
        let mut b = vec![0f32; g.volume.len()];
        tomodiff::ct::siddon::adjoint_ref(&g, &p, &mut b).unwrap();
        b
    };
    let mut aty = vec![0f32; g.volume.len()];
    tomodiff::ct::siddon::adjoint_ref(&g, &y, &mut aty).unwrap();
    let rhs: Vec<f64> = aty.iter().zip(&x0).map(|(a, b)| *a as f64 + gamma * *b as f64).collect();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    for dev in devices() {
        let p = Projector::new(g.clone(), &dev).unwrap();
        let yt = Tensor::from_f32(&y, &g.proj_shape(), DType::F32, &dev).unwrap();
        let solve = |gamma: f64, iters: usize| {
            let mut x = Tensor::from_f32(&x0, &g.volume.shape, DType::F32, &dev).unwrap();
            cgls_damped(&p, &yt, &mut x, gamma, iters, |_, _| {}).unwrap();
            x.to_f32_vec().unwrap()
        };
        let x = solve(gamma, 40);
        let lhs = aat(&x);
        let res: Vec<f64> = lhs.iter().zip(&x).zip(&rhs).map(|((l, xv), r)| *l as f64 + gamma * *xv as f64 - r).collect();
        let rel = norm(&res) / norm(&rhs);
        eprintln!("damped CG {}: normal-equation residual {rel:.2e} of the right-hand side", dev.name());
        assert!(rel < 1e-4, "{}: {rel}", dev.name());
        // Without damping the same solver is CGLS from x0.
        let mut xc = Tensor::from_f32(&x0, &g.volume.shape, DType::F32, &dev).unwrap();
        cgls(&p, &yt, &mut xc, 3, |_, _| {}).unwrap();
        assert_eq!(solve(0.0, 3), xc.to_f32_vec().unwrap());
        // Strong damping keeps x at x0.
        let far = solve(1e6, 5);
        let moved = far.iter().zip(&x0).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(moved < 1e-3, "{}: moved {moved}", dev.name());
    }
    assert!(matches!(cgls_damped(&Projector::new(g.clone(), &Device::Cpu).unwrap(), &Tensor::from_f32(&y, &g.proj_shape(), DType::F32, &Device::Cpu).unwrap(), &mut Tensor::zeros(&g.volume.shape, DType::F32, &Device::Cpu).unwrap(), f64::NAN, 1, |_, _| {}), Err(_)));
}
