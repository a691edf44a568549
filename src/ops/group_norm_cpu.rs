//! The CPU's fast group norm (+ SiLU), forward and backward: statistics from per-channel partial
//! sums over chunks of positions (f32 within a chunk, f64 across), the normalisation as one
//! per-channel affine map, SiLU with the vectorising exp; samples and chunks in parallel. Tested
//! against group_norm_ref / group_norm_backward_ref.
use super::cpu::{silu, silu_grad, vectorized};
use super::group_norm::EPS;
use rayon::prelude::*;

/// Positions per chunk: a chunk's partial sums are f32, so chunks stay short.
const CHUNK: usize = 256;

/// Per-channel sums over positions of f(i, v) for one sample, as f64 (c values).
fn channel_sums(len: usize, c: usize, f: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f64> {
    let rows = len / c;
    let parts: Vec<Vec<f32>> = (0..rows.div_ceil(CHUNK))
        .into_par_iter()
        .map(|k| {
            let mut acc = vec![0f32; c];
            vectorized(#[inline(always)] || {
                for p in k * CHUNK..((k + 1) * CHUNK).min(rows) {
                    f(p, &mut acc);
                }
            });
            acc
        })
        .collect();
    let mut out = vec![0f64; c];
    for p in &parts {
        out.iter_mut().zip(p).for_each(|(o, v)| *o += *v as f64);
    }
    out
}

/// One sample's per-channel statistics (its group's mean and 1/sqrt(var + eps)) of xs
/// (positions, c), in two passes (the variance from centred squares, without cancellation).
fn sample_stats(xs: &[f32], c: usize, groups: usize) -> (Vec<f64>, Vec<f64>) {
    let cg = c / groups;
    let m = (xs.len() / groups) as f64;
    let per_group = |sums: &[f64]| -> Vec<f64> { (0..c).map(|ch| sums[ch / cg * cg..(ch / cg + 1) * cg].iter().sum::<f64>() / m).collect() };
    let mean = per_group(&channel_sums(xs.len(), c, |p, acc| acc.iter_mut().zip(&xs[p * c..(p + 1) * c]).for_each(|(a, v)| *a += v)));
    let mf: Vec<f32> = mean.iter().map(|v| *v as f32).collect();
    let var = per_group(&channel_sums(xs.len(), c, |p, acc| {
        for ((a, v), m) in acc.iter_mut().zip(&xs[p * c..(p + 1) * c]).zip(&mf) {
            *a += (v - m) * (v - m);
        }
    }));
    (mean, var.iter().map(|v| 1.0 / (v + EPS).sqrt()).collect())
}

/// y = group_norm(x) [then SiLU] for x (n, positions, c), written into y.
#[allow(clippy::too_many_arguments)]
pub fn forward(x: &[f32], n: usize, c: usize, groups: usize, gamma: &[f32], beta: &[f32], fuse_silu: bool, y: &mut [f32]) {
    if x.is_empty() {
        return;
    }
    let len = x.len() / n;
    // Samples in parallel (each inner pass splits further only when a thread is idle): a
    // sample's three passes then stay in one core's cache.
    x.par_chunks(len).zip(y.par_chunks_mut(len)).for_each(|(xs, ys)| {
        let (mean, inv) = sample_stats(xs, c, groups);
        // y = (x - mean) a + beta per channel (centred first: no cancellation for large means).
        let a: Vec<f32> = (0..c).map(|ch| (inv[ch] * gamma[ch] as f64) as f32).collect();
        let mf: Vec<f32> = mean.iter().map(|v| *v as f32).collect();
        ys.par_chunks_mut(CHUNK * c).zip(xs.par_chunks(CHUNK * c)).for_each(|(yc, xc)| {
            vectorized(#[inline(always)] || {
                for (yr, xr) in yc.chunks_exact_mut(c).zip(xc.chunks_exact(c)) {
                    for ((((o, v), m), a), b) in yr.iter_mut().zip(xr).zip(&mf).zip(&a).zip(beta) {
                        *o = (v - m) * a + b;
                    }
                    if fuse_silu {
                        yr.iter_mut().for_each(|v| *v = silu(*v));
                    }
                }
            })
        });
    });
}

/// (dgamma, dbeta) of group_norm for dy, with dx written: the fast twin of
/// group_norm_backward_ref. dz (dy through the SiLU) is kept in dx between the passes.
#[allow(clippy::too_many_arguments)]
pub fn backward(x: &[f32], n: usize, c: usize, groups: usize, gamma: &[f32], beta: &[f32], fuse_silu: bool, dy: &[f32], dx: &mut [f32]) -> (Vec<f32>, Vec<f32>) {
    if x.is_empty() {
        return (vec![0.0; c], vec![0.0; c]);
    }
    let len = x.len() / n;
    let cg = c / groups;
    let per_sample = x.par_chunks(len).zip(dy.par_chunks(len)).zip(dx.par_chunks_mut(len)).map(|((xs, dys), dxs)| {
        let (mean, inv) = sample_stats(xs, c, groups);
        let (mf, invf): (Vec<f32>, Vec<f32>) = (mean.iter().map(|v| *v as f32).collect(), inv.iter().map(|v| *v as f32).collect());
        let a: Vec<f32> = invf.iter().zip(gamma).map(|(i, g)| i * g).collect();
        // dz = dy silu'(z), z = xhat gamma + beta.
        dxs.par_chunks_mut(CHUNK * c).zip(xs.par_chunks(CHUNK * c)).zip(dys.par_chunks(CHUNK * c)).for_each(|((dc, xc), gc)| {
            vectorized(#[inline(always)] || {
                for ((dr, xr), gr) in dc.chunks_exact_mut(c).zip(xc.chunks_exact(c)).zip(gc.chunks_exact(c)) {
                    if !fuse_silu {
                        dr.copy_from_slice(gr);
                        continue;
                    }
                    for (((((d, v), g), m), a), b) in dr.iter_mut().zip(xr).zip(gr).zip(&mf).zip(&a).zip(beta) {
                        *d = g * silu_grad((v - m) * a + b);
                    }
                }
            })
        });
        let dzs: &[f32] = dxs;
        // Per channel: sum dz and sum dz xhat; a group's s1, s2 are their gamma-weighted sums.
        let sdz = channel_sums(len, c, |p, acc| acc.iter_mut().zip(&dzs[p * c..(p + 1) * c]).for_each(|(a, v)| *a += v));
        let sdzh = channel_sums(len, c, |p, acc| {
            for (((a, d), v), (m, i)) in acc.iter_mut().zip(&dzs[p * c..(p + 1) * c]).zip(&xs[p * c..(p + 1) * c]).zip(mf.iter().zip(&invf)) {
                *a += d * (v - m) * i;
            }
        });
        let m = (len / c * cg) as f64;
        let (mut k1, mut k2, mut k3) = (vec![0f32; c], vec![0f32; c], vec![0f32; c]);
        for g in 0..groups {
            let r = g * cg..(g + 1) * cg;
            let s1: f64 = r.clone().map(|ch| sdz[ch] * gamma[ch] as f64).sum();
            let s2: f64 = r.clone().map(|ch| sdzh[ch] * gamma[ch] as f64).sum();
            for ch in r {
                // dx = inv / m (m dz gamma - s1 - xhat s2) = dz k1 + (x - mean) k2 + k3.
                let k = inv[ch] / m;
                (k1[ch], k2[ch], k3[ch]) = ((k * m * gamma[ch] as f64) as f32, (-k * s2 * inv[ch]) as f32, (-k * s1) as f32);
            }
        }
        dxs.par_chunks_mut(CHUNK * c).zip(xs.par_chunks(CHUNK * c)).for_each(|(dc, xc)| {
            vectorized(#[inline(always)] || {
                for (dr, xr) in dc.chunks_exact_mut(c).zip(xc.chunks_exact(c)) {
                    for ((((d, v), m), k1), (k2, k3)) in dr.iter_mut().zip(xr).zip(&mf).zip(&k1).zip(k2.iter().zip(&k3)) {
                        *d = *d * k1 + (v - m) * k2 + k3;
                    }
                }
            })
        });
        (sdzh, sdz)
    });
    // Summed in sample order: the same dgamma, dbeta on any thread count.
    let parts: Vec<(Vec<f64>, Vec<f64>)> = per_sample.collect();
    let (mut dg, mut db) = (vec![0f64; c], vec![0f64; c]);
    for (g, b) in &parts {
        dg.iter_mut().zip(g).for_each(|(a, v)| *a += v);
        db.iter_mut().zip(b).for_each(|(a, v)| *a += v);
    }
    (dg.into_iter().map(|v| v as f32).collect(), db.into_iter().map(|v| v as f32).collect())
}
