//! Sinusoidal timestep embedding: [cos(t f_k), sin(t f_k)] with f_k = exp(-ln(10000) k / half),
//! k < half = dim / 2 (cosines first, as guided-diffusion).

pub fn timestep_embedding_ref(t: &[f32], dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let mut out = vec![0f32; t.len() * dim];
    for (i, &tv) in t.iter().enumerate() {
        for k in 0..half {
            let f = (-(10000f64.ln()) * k as f64 / half as f64).exp();
            let a = tv as f64 * f;
            out[i * dim + k] = a.cos() as f32;
            out[i * dim + half + k] = a.sin() as f32;
        }
    }
    out
}
