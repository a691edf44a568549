//! 3D convolution, channels-last: x (N, D, H, W, Ci) -> y (N, D', H', W', Co), kernel k^3
//! (k = 3 with padding 1, or k = 1), stride 1 or 2. Weights are repacked once from PyTorch's
//! (Co, Ci, kd, kh, kw) into (kd, kh, kw, Ci, Co): one GEMM [voxels, k^3 Ci] x [k^3 Ci, Co].
//! CPU reference: im2col one output plane at a time, then sgemm.

/// PyTorch (Co, Ci, k, k, k) -> (k, k, k, Ci, Co).
pub fn repack_weight(w: &[f32], co: usize, ci: usize, k: usize) -> Vec<f32> {
    let k3 = k * k * k;
    let mut out = vec![0f32; w.len()];
    for o in 0..co {
        for i in 0..ci {
            for t in 0..k3 {
                out[(t * ci + i) * co + o] = w[(o * ci + i) * k3 + t];
            }
        }
    }
    out
}

/// Output extent along one axis.
pub fn out_len(n: usize, k: usize, stride: usize) -> usize {
    let pad = k / 2;
    (n + 2 * pad - k) / stride + 1
}

/// CPU reference. `w` is repacked (k, k, k, Ci, Co); returns y and its spatial shape.
#[allow(clippy::too_many_arguments)]
pub fn conv3d_ref(x: &[f32], n: usize, dims: [usize; 3], ci: usize, w: &[f32], bias: &[f32], co: usize, k: usize, stride: usize) -> (Vec<f32>, [usize; 3]) {
    let [d, h, wd] = dims;
    let od = [out_len(d, k, stride), out_len(h, k, stride), out_len(wd, k, stride)];
    let pad = (k / 2) as isize;
    let plane = od[1] * od[2];
    let kk = k * k * k * ci;
    let mut y = vec![0f32; n * od[0] * plane * co];
    let mut cols = vec![0f32; plane * kk];
    for b in 0..n {
        for oz in 0..od[0] {
            // im2col for this output plane: row (oy, ox), column (tz, ty, tx, ci).
            for oy in 0..od[1] {
                for ox in 0..od[2] {
                    let row = &mut cols[(oy * od[2] + ox) * kk..(oy * od[2] + ox + 1) * kk];
                    for tz in 0..k {
                        for ty in 0..k {
                            for tx in 0..k {
                                let (z, yy, xx) = (
                                    (oz * stride) as isize + tz as isize - pad,
                                    (oy * stride) as isize + ty as isize - pad,
                                    (ox * stride) as isize + tx as isize - pad,
                                );
                                let dst = &mut row[((tz * k + ty) * k + tx) * ci..((tz * k + ty) * k + tx + 1) * ci];
                                if z < 0 || yy < 0 || xx < 0 || z >= d as isize || yy >= h as isize || xx >= wd as isize {
                                    dst.fill(0.0);
                                } else {
                                    let s = (((b * d + z as usize) * h + yy as usize) * wd + xx as usize) * ci;
                                    dst.copy_from_slice(&x[s..s + ci]);
                                }
                            }
                        }
                    }
                }
            }
            let out = &mut y[(b * od[0] + oz) * plane * co..(b * od[0] + oz + 1) * plane * co];
            for r in 0..plane {
                out[r * co..(r + 1) * co].copy_from_slice(bias);
            }
            // SAFETY: cols is plane x kk, w is kk x co, out is plane x co, all row-major.
            unsafe {
                matrixmultiply::sgemm(plane, kk, co, 1.0, cols.as_ptr(), kk as isize, 1, w.as_ptr(), co as isize, 1, 1.0, out.as_mut_ptr(), co as isize, 1);
            }
        }
    }
    (y, od)
}
