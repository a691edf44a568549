//! Image quality against a reference: PSNR (data range = reference max - min) and SSIM (7x7
//! Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03), on the whole volume and per plane (mean over
//! the slices of each orientation), as reconstruction papers report them.
use crate::error::{Error, Result};
use serde::Serialize;

/// A volume's quality against its reference, from `compare`. PSNR in dB with the whole reference's
/// range (max - min) as the peak; per-plane values are means over the slices of a (z, y, x) volume.
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    /// PSNR of the whole volume, dB; capped at `MAX_PSNR_DB`, NaN when a value is NaN.
    pub psnr: f64,
    /// Mean PSNR of the axial slices (planes of constant z), each capped at 100 dB.
    pub psnr_axial: f64,
    /// Mean PSNR of the coronal slices (planes of constant y), each capped at 100 dB.
    pub psnr_coronal: f64,
    /// Mean PSNR of the sagittal slices (planes of constant x), each capped at 100 dB.
    pub psnr_sagittal: f64,
    /// Mean SSIM (Wang et al. 2004) of the axial slices.
    pub ssim_axial: f64,
    /// Mean SSIM of the coronal slices.
    pub ssim_coronal: f64,
    /// Mean SSIM of the sagittal slices.
    pub ssim_sagittal: f64,
}

fn range(v: &[f32]) -> f64 {
    let (mn, mx) = v.iter().fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    (mx - mn).max(f32::MIN_POSITIVE) as f64
}

/// The cap of every PSNR, reached by identical images (a finite number, so JSON can hold it).
pub const MAX_PSNR_DB: f64 = 100.0;

fn psnr_of(mse: f64, l: f64) -> f64 {
    match mse {
        // f64::min would turn a NaN (a diverged reconstruction) into a perfect score.
        m if m.is_nan() => f64::NAN,
        0.0 => MAX_PSNR_DB,
        m => (10.0 * (l * l / m).log10()).min(MAX_PSNR_DB),
    }
}

fn same_length(what: &str, x: &[f32], reference: &[f32], n: usize) -> Result<()> {
    if x.len() != n || reference.len() != n {
        return Err(Error::Shape(format!("{what}: {} and {} values, {n} expected", x.len(), reference.len())));
    }
    Ok(())
}

/// PSNR in dB of `x` against `reference` (same length, any shape): 10 log10(L^2 / MSE), L the
/// reference's max - min; capped at `MAX_PSNR_DB`. `Error::Shape` when the lengths differ.
pub fn psnr(x: &[f32], reference: &[f32]) -> Result<f64> {
    same_length("psnr", x, reference, reference.len())?;
    let mse = x.iter().zip(reference).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / x.len().max(1) as f64;
    Ok(psnr_of(mse, range(reference)))
}

/// Slices of a (nz, ny, nx) volume along `axis` (0 axial, 1 coronal, 2 sagittal) as 2D images.
fn slices(shape: [usize; 3], v: &[f32], axis: usize) -> Vec<(usize, usize, Vec<f32>)> {
    let [nz, ny, nx] = shape;
    let at = |k: usize, j: usize, i: usize| v[(k * ny + j) * nx + i];
    match axis {
        0 => (0..nz).map(|k| (ny, nx, (0..ny * nx).map(|p| at(k, p / nx, p % nx)).collect())).collect(),
        1 => (0..ny).map(|j| (nz, nx, (0..nz * nx).map(|p| at(p / nx, j, p % nx)).collect())).collect(),
        _ => (0..nx).map(|i| (nz, ny, (0..nz * ny).map(|p| at(p / ny, p % ny, i)).collect())).collect(),
    }
}

fn gauss7() -> [f64; 7] {
    let w: Vec<f64> = (-3..=3).map(|i: i32| (-(i * i) as f64 / (2.0 * 1.5 * 1.5)).exp()).collect();
    let s: f64 = w.iter().sum();
    std::array::from_fn(|i| w[i] / s)
}

/// Mean SSIM of a 2D image over the valid 7x7 windows (images smaller than 7 count as one window
/// of global statistics).
pub fn ssim2d(h: usize, w: usize, x: &[f32], y: &[f32], l: f64) -> f64 {
    let (c1, c2) = ((0.01 * l).powi(2), (0.03 * l).powi(2));
    let ssim = |mx: f64, my: f64, vx: f64, vy: f64, cxy: f64| ((2.0 * mx * my + c1) * (2.0 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2));
    if h < 7 || w < 7 {
        let n = x.len() as f64;
        let mx = x.iter().map(|v| *v as f64).sum::<f64>() / n;
        let my = y.iter().map(|v| *v as f64).sum::<f64>() / n;
        let vx = x.iter().map(|v| (*v as f64 - mx).powi(2)).sum::<f64>() / n;
        let vy = y.iter().map(|v| (*v as f64 - my).powi(2)).sum::<f64>() / n;
        let cxy = x.iter().zip(y).map(|(a, b)| (*a as f64 - mx) * (*b as f64 - my)).sum::<f64>() / n;
        return ssim(mx, my, vx, vy, cxy);
    }
    let g = gauss7();
    let mut total = 0.0;
    for r in 0..=h - 7 {
        for c in 0..=w - 7 {
            let (mut mx, mut my, mut xx, mut yy, mut xy) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for a in 0..7 {
                for b in 0..7 {
                    let wt = g[a] * g[b];
                    let (p, q) = (x[(r + a) * w + c + b] as f64, y[(r + a) * w + c + b] as f64);
                    mx += wt * p;
                    my += wt * q;
                    xx += wt * p * p;
                    yy += wt * q * q;
                    xy += wt * p * q;
                }
            }
            total += ssim(mx, my, xx - mx * mx, yy - my * my, xy - mx * my);
        }
    }
    total / ((h - 6) * (w - 6)) as f64
}

/// All metrics of x against the reference, both (nz, ny, nx). `Error::Shape` when either length
/// is not nz ny nx.
pub fn compare(shape: [usize; 3], x: &[f32], reference: &[f32]) -> Result<Metrics> {
    same_length("metrics", x, reference, shape.iter().product())?;
    let l = range(reference);
    let per = |axis: usize| -> (f64, f64) {
        let (xs, rs) = (slices(shape, x, axis), slices(shape, reference, axis));
        let n = xs.len() as f64;
        let (mut p, mut s) = (0.0, 0.0);
        for ((h, w, a), (_, _, b)) in xs.iter().zip(&rs) {
            let mse = a.iter().zip(b).map(|(u, v)| ((u - v) as f64).powi(2)).sum::<f64>() / a.len() as f64;
            p += psnr_of(mse, l);
            s += ssim2d(*h, *w, a, b, l);
        }
        (p / n, s / n)
    };
    let (a, c, s) = (per(0), per(1), per(2));
    Ok(Metrics {
        psnr: psnr(x, reference)?,
        psnr_axial: a.0,
        psnr_coronal: c.0,
        psnr_sagittal: s.0,
        ssim_axial: a.1,
        ssim_coronal: c.1,
        ssim_sagittal: s.1,
    })
}
