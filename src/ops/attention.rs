//! Multi-head self-attention over the flattened patch, guided-diffusion's "legacy" channel order:
//! for head h, channels [3 d h, 3 d h + d) of qkv are q, the next d are k, then v. Scores
//! softmax(q k^T / sqrt(d)); output channel h d + c. Channels-last: qkv is (N, T, 3C).
//! Kernel: kernels/attention.cu (head dims 16, 32, 64).
use super::{expect_dtype, same_device};
use crate::device::Launch;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// CPU reference: returns a (N, T, C) with the heads' outputs side by side. Queries in
/// parallel; scores and softmax in f64.
pub fn attention_ref(qkv: &[f32], n: usize, t: usize, c: usize, heads: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let d = c / heads;
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = vec![0f32; n * t * c];
    out.par_chunks_mut(c).enumerate().for_each(|(bi, o)| {
        let (b, i) = (bi / t, bi % t);
        let q3 = &qkv[b * t * 3 * c..(b + 1) * t * 3 * c];
        let mut row = vec![0f64; t];
        for h in 0..heads {
            let (qo, ko, vo) = (3 * d * h, 3 * d * h + d, 3 * d * h + 2 * d);
            let q = &q3[i * 3 * c + qo..i * 3 * c + qo + d];
            let mut mx = f64::MIN;
            for (j, r) in row.iter_mut().enumerate() {
                let k = &q3[j * 3 * c + ko..j * 3 * c + ko + d];
                *r = q.iter().zip(k).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * scale;
                mx = mx.max(*r);
            }
            let mut z = 0.0;
            for r in row.iter_mut() {
                *r = (*r - mx).exp();
                z += *r;
            }
            let mut acc = vec![0f64; d];
            for (j, p) in row.iter().enumerate() {
                let v = &q3[j * 3 * c + vo..j * 3 * c + vo + d];
                acc.iter_mut().zip(v).for_each(|(a, x)| *a += p * *x as f64);
            }
            for e in 0..d {
                o[h * d + e] = (acc[e] / z) as f32;
            }
        }
    });
    out
}

/// out (N, ..., C) = attention over the T voxels of qkv (N, ..., 3C), `heads` heads.
pub fn attention(qkv: &Tensor, out: &mut Tensor, heads: usize) -> Result<()> {
    let _span = super::profile::span("attention");
    let s = qkv.shape().to_vec();
    let n = s[0];
    let c3 = *s.last().unwrap_or(&0);
    let c = c3 / 3;
    let t = qkv.numel() / (n * c3).max(1);
    let mut os = s.clone();
    *os.last_mut().unwrap() = c;
    if c3 % 3 != 0 || heads == 0 || c % heads != 0 || out.shape() != os.as_slice() {
        return Err(Error::Shape(format!("attention: qkv {s:?}, out {:?}, {heads} heads", out.shape())));
    }
    same_device("attention", &[qkv, out])?;
    let dev = qkv.device().clone();
    if !dev.runs_kernels() {
        let q = super::host_view(qkv)?;
        let o = out.host_f32_mut().ok_or_else(|| Error::DType("attention: the CPU's output must be host f32".into()))?;
        super::attention_cpu::forward(&q, n, t, c, heads, o);
        return Ok(());
    }
    expect_dtype("attention", qkv, DType::BF16)?;
    expect_dtype("attention", out, DType::BF16)?;
    let d = c / heads;
    if ![16, 32, 64].contains(&d) {
        return Err(Error::Shape(format!("attention: head dim {d} (channels {c} / {heads} heads); the kernel takes 16, 32 or 64")));
    }
    Launch::new("attention_bf16")?
        .grid([t.div_ceil(64) as u32, heads as u32, n as u32])
        .block([64, 1, 1])
        .shared_bytes((2 * 64 * d * 4) as u32)
        .buf(qkv.buffer())
        .buf(out.buffer())
        .i32(t as i32)
        .i32(c as i32)
        .i32(d as i32)
        .run(&dev)
}

/// Gradient of attention_ref with respect to qkv (N, T, 3C, legacy order) for d out (N, T, C).
/// Per head: P = softmax(Q K^T s), O = P V; dV = P^T dO, dP = dO V^T,
/// dS = P (dP - rowsum(dP P)), dQ = dS K s, dK = dS^T Q s.
pub fn attention_backward_ref(qkv: &[f32], n: usize, t: usize, c: usize, heads: usize, dout: &[f32]) -> Vec<f32> {
    let d = c / heads;
    let scale = 1.0 / (d as f64).sqrt();
    let mut dqkv = vec![0f32; qkv.len()];
    for b in 0..n {
        let q3 = &qkv[b * t * 3 * c..(b + 1) * t * 3 * c];
        let g = &mut dqkv[b * t * 3 * c..(b + 1) * t * 3 * c];
        for h in 0..heads {
            let (qo, ko, vo) = (3 * d * h, 3 * d * h + d, 3 * d * h + 2 * d);
            let at = |j: usize, o: usize, e: usize| q3[j * 3 * c + o + e] as f64;
            let dout_at = |i: usize, e: usize| dout[(b * t + i) * c + h * d + e] as f64;
            for i in 0..t {
                let mut p: Vec<f64> = (0..t).map(|j| (0..d).map(|e| at(i, qo, e) * at(j, ko, e)).sum::<f64>() * scale).collect();
                let mx = p.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = p.iter_mut().map(|v| {
                    *v = (*v - mx).exp();
                    *v
                }).sum();
                p.iter_mut().for_each(|v| *v /= z);
                let dp: Vec<f64> = (0..t).map(|j| (0..d).map(|e| dout_at(i, e) * at(j, vo, e)).sum()).collect();
                let dot: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
                for j in 0..t {
                    let ds = p[j] * (dp[j] - dot) * scale;
                    for e in 0..d {
                        g[i * 3 * c + qo + e] += (ds * at(j, ko, e)) as f32;
                        g[j * 3 * c + ko + e] += (ds * at(i, qo, e)) as f32;
                        g[j * 3 * c + vo + e] += (p[j] * dout_at(i, e)) as f32;
                    }
                }
            }
        }
    }
    dqkv
}

/// Gradient of `attention`: dqkv (shaped like qkv) for dout (shaped like the output), both f32.
pub fn attention_backward(qkv: &Tensor, dout: &Tensor, heads: usize, dqkv: &mut Tensor) -> Result<()> {
    let _span = super::profile::span("attention_backward");
    let s = qkv.shape().to_vec();
    let n = s[0];
    let c = s.last().copied().unwrap_or(0) / 3;
    let t = qkv.numel() / (n * 3 * c).max(1);
    if heads == 0 || c % heads != 0 || dqkv.shape() != s.as_slice() || dout.numel() != n * t * c {
        return Err(Error::Shape(format!("attention_backward: qkv {s:?}, dout {:?}, dqkv {:?}", dout.shape(), dqkv.shape())));
    }
    same_device("attention_backward", &[qkv, dout, dqkv])?;
    let dev = qkv.device().clone();
    if !dev.runs_kernels() {
        let (q, go) = (super::host_view(qkv)?, super::host_view(dout)?);
        let g = dqkv.host_f32_mut().ok_or_else(|| Error::DType("attention_backward: the CPU's dqkv must be host f32".into()))?;
        super::attention_cpu::backward(&q, n, t, c, heads, &go, g);
        return Ok(());
    }
    let d = c / heads;
    if ![16, 32, 64].contains(&d) {
        return Err(Error::Shape(format!("attention_backward: head dim {d}; the kernel takes 16, 32 or 64")));
    }
    expect_dtype("attention_backward", dout, DType::F32)?;
    expect_dtype("attention_backward", dqkv, DType::F32)?;
    dqkv.buffer_mut().zero()?;
    Launch::new("attention_backward_f32")?
        .grid([t.div_ceil(64) as u32, heads as u32, n as u32])
        .block([64, 1, 1])
        .buf(qkv.buffer())
        .buf(dout.buffer())
        .buf(dqkv.buffer())
        .i32(t as i32)
        .i32(c as i32)
        .i32(d as i32)
        .run(&dev)
}
