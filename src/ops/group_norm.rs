//! Group normalisation over channels-last activations (N, S, C), statistics in f64 on the CPU
//! (f32 in kernels), eps 1e-5, optionally fused with the SiLU that follows it in the U-Net.

pub const EPS: f64 = 1e-5;

pub fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

/// CPU reference: y = gamma (x - mean) / sqrt(var + eps) + beta per (sample, group), then SiLU.
pub fn group_norm_ref(x: &[f32], n: usize, c: usize, groups: usize, gamma: &[f32], beta: &[f32], fuse_silu: bool) -> Vec<f32> {
    let s = x.len() / (n * c);
    let cg = c / groups;
    let mut y = vec![0f32; x.len()];
    for b in 0..n {
        let xs = &x[b * s * c..(b + 1) * s * c];
        for g in 0..groups {
            let (mut sum, mut sq) = (0.0f64, 0.0f64);
            for p in 0..s {
                for v in &xs[p * c + g * cg..p * c + (g + 1) * cg] {
                    sum += *v as f64;
                    sq += (*v as f64) * (*v as f64);
                }
            }
            let m = (s * cg) as f64;
            let mean = sum / m;
            let inv = 1.0 / ((sq / m - mean * mean).max(0.0) + EPS).sqrt();
            for p in 0..s {
                for ch in g * cg..(g + 1) * cg {
                    let i = b * s * c + p * c + ch;
                    let v = ((x[i] as f64 - mean) * inv) as f32 * gamma[ch] + beta[ch];
                    y[i] = if fuse_silu { silu(v) } else { v };
                }
            }
        }
    }
    y
}
