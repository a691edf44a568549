//! The CPU's fast attention, forward and backward: per sample and head, the score matrix
//! S = Q K^T / sqrt(d) and the products with it as sgemm calls on strided views of qkv (legacy
//! channel order, see attention.rs), the softmax in f32 with the vectorising exp. Tested against
//! attention_ref / attention_backward_ref (f64).
use super::cpu::{exp, vectorized};
use super::cpu_sgemm;
use rayon::prelude::*;

/// P = softmax(Q K^T s) of one sample's head, (t, t) row-major; q3 is the sample's (t, 3c) qkv.
fn probabilities(q3: &[f32], t: usize, c: usize, d: usize, h: usize) -> Vec<f32> {
    let (qo, ko) = (3 * d * h, 3 * d * h + d);
    let mut p = vec![0f32; t * t];
    cpu_sgemm(t, t, d, &q3[qo..], 3 * c, 1, &q3[ko..], 1, 3 * c, &mut p, t, false);
    let scale = 1.0 / (d as f32).sqrt();
    p.par_chunks_mut(t).for_each(|row| {
        vectorized(#[inline(always)] || {
            let mx = row.iter().fold(f32::MIN, |m, v| m.max(*v));
            let mut z = 0f32;
            for v in row.iter_mut() {
                *v = exp((*v - mx) * scale);
                z += *v;
            }
            let inv = 1.0 / z;
            row.iter_mut().for_each(|v| *v *= inv);
        })
    });
    p
}

/// out (n, t, c) = attention of qkv (n, t, 3c), `heads` heads.
pub fn forward(qkv: &[f32], n: usize, t: usize, c: usize, heads: usize, out: &mut [f32]) {
    if t == 0 || c == 0 {
        return;
    }
    let d = c / heads;
    for b in 0..n {
        let q3 = &qkv[b * t * 3 * c..(b + 1) * t * 3 * c];
        for h in 0..heads {
            let p = probabilities(q3, t, c, d, h);
            // O = P V, into the head's columns of out.
            cpu_sgemm(t, d, t, &p, t, 1, &q3[3 * d * h + 2 * d..], 3 * c, 1, &mut out[b * t * c + h * d..], c, false);
        }
    }
}

/// dqkv (n, t, 3c) of attention for dout (n, t, c): dV = P^T dO, dP = dO V^T,
/// dS = P (dP - rowsum(dP P)) s, dQ = dS K, dK = dS^T Q.
pub fn backward(qkv: &[f32], n: usize, t: usize, c: usize, heads: usize, dout: &[f32], dqkv: &mut [f32]) {
    if t == 0 || c == 0 {
        return;
    }
    let d = c / heads;
    let scale = 1.0 / (d as f32).sqrt();
    for b in 0..n {
        let q3 = &qkv[b * t * 3 * c..(b + 1) * t * 3 * c];
        let g = &mut dqkv[b * t * 3 * c..(b + 1) * t * 3 * c];
        let dob = &dout[b * t * c..(b + 1) * t * c];
        for h in 0..heads {
            let (qo, ko, vo) = (3 * d * h, 3 * d * h + d, 3 * d * h + 2 * d);
            let p = probabilities(q3, t, c, d, h);
            let dov = &dob[h * d..];
            cpu_sgemm(t, d, t, &p, 1, t, dov, c, 1, &mut g[vo..], 3 * c, false);
            let mut ds = vec![0f32; t * t];
            cpu_sgemm(t, t, d, dov, c, 1, &q3[vo..], 1, 3 * c, &mut ds, t, false);
            ds.par_chunks_mut(t).zip(p.par_chunks(t)).for_each(|(dr, pr)| {
                vectorized(#[inline(always)] || {
                    let dot: f32 = dr.iter().zip(pr).map(|(a, b)| a * b).sum();
                    dr.iter_mut().zip(pr).for_each(|(v, p)| *v = p * (*v - dot) * scale);
                })
            });
            cpu_sgemm(t, d, t, &ds, t, 1, &q3[ko..], 3 * c, 1, &mut g[qo..], 3 * c, false);
            cpu_sgemm(t, d, t, &ds, 1, t, &q3[qo..], 3 * c, 1, &mut g[ko..], 3 * c, false);
        }
    }
}
