//! Linear layers: y (N, out) = x (N, in) W^T + b with W as PyTorch stores it (out, in); also the
//! 1x1 convolutions of attention, which are the same product over voxels.

/// CPU reference.
pub fn linear_ref(x: &[f32], n: usize, w: &[f32], b: &[f32], d_in: usize, d_out: usize) -> Vec<f32> {
    let mut y = vec![0f32; n * d_out];
    for r in 0..n {
        y[r * d_out..(r + 1) * d_out].copy_from_slice(b);
    }
    // SAFETY: x is n x d_in, w is d_out x d_in (read transposed), y is n x d_out.
    unsafe {
        matrixmultiply::sgemm(n, d_in, d_out, 1.0, x.as_ptr(), d_in as isize, 1, w.as_ptr(), 1, d_in as isize, 1.0, y.as_mut_ptr(), d_out as isize, 1);
    }
    y
}
