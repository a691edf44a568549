//! Multi-head self-attention over the flattened patch, guided-diffusion's "legacy" channel order:
//! for head h, channels [3 d h, 3 d h + d) of qkv are q, the next d are k, then v. Scores
//! softmax(q k^T / sqrt(d)); output channel h d + c. Channels-last: qkv is (N, T, 3C).

/// CPU reference: returns a (N, T, C) with the heads' outputs side by side.
pub fn attention_ref(qkv: &[f32], n: usize, t: usize, c: usize, heads: usize) -> Vec<f32> {
    let d = c / heads;
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = vec![0f32; n * t * c];
    let mut row = vec![0f64; t];
    for b in 0..n {
        let q3 = &qkv[b * t * 3 * c..(b + 1) * t * 3 * c];
        for h in 0..heads {
            let (qo, ko, vo) = (3 * d * h, 3 * d * h + d, 3 * d * h + 2 * d);
            for i in 0..t {
                let mut mx = f64::MIN;
                for (j, r) in row.iter_mut().enumerate() {
                    let s: f64 = (0..d).map(|e| q3[i * 3 * c + qo + e] as f64 * q3[j * 3 * c + ko + e] as f64).sum::<f64>() * scale;
                    *r = s;
                    mx = mx.max(s);
                }
                let mut z = 0.0;
                for r in row.iter_mut() {
                    *r = (*r - mx).exp();
                    z += *r;
                }
                for e in 0..d {
                    let a: f64 = row.iter().enumerate().map(|(j, p)| p * q3[j * 3 * c + vo + e] as f64).sum();
                    out[(b * t + i) * c + h * d + e] = (a / z) as f32;
                }
            }
        }
    }
    out
}
