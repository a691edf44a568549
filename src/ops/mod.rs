//! Operations, one file each: the CPU reference (the truth that kernels are tested against) and
//! the dispatch to the kernel of `kernels/<op>.cu` on emu and cuda. Outputs are passed in, so that
//! callers (and tests, which poison them) control allocation.
pub mod adamw;
pub mod attention;
pub mod attention_cpu;
pub mod cast;
pub mod conv3d;
pub mod cpu;
pub mod conv3d_cpu;
pub mod elementwise;
pub mod embedding;
pub mod gemm;
pub mod group_norm;
pub mod group_norm_cpu;
pub mod linear;
pub mod patches;
pub mod profile;
pub mod reduce;
pub mod resample;
pub mod sampler;
pub mod vector;

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// Grid for a grid-stride kernel over n elements with `block` threads per block.
pub(crate) fn stride_grid(n: usize, block: u32) -> [u32; 3] {
    let blocks = n.div_ceil(block as usize).clamp(1, 65535 * 4);
    [blocks as u32, 1, 1]
}

/// A tensor's values as f32 on the host: borrowed when it already is a host f32 tensor (the CPU
/// references read their inputs in place), converted otherwise.
pub(crate) fn host_view(t: &Tensor) -> Result<std::borrow::Cow<'_, [f32]>> {
    match t.host_f32() {
        Some(s) => Ok(std::borrow::Cow::Borrowed(s)),
        None => Ok(std::borrow::Cow::Owned(t.to_f32_vec()?)),
    }
}

pub(crate) fn same_device(op: &str, ts: &[&Tensor]) -> Result<()> {
    let d = ts[0].device().name();
    match ts.iter().find(|t| t.device().name() != d) {
        Some(t) => Err(Error::DeviceMismatch(format!("{op}: tensors on {d} and {}", t.device().name()))),
        None => Ok(()),
    }
}

pub(crate) fn expect_dtype(op: &str, t: &Tensor, d: DType) -> Result<()> {
    if t.dtype() != d {
        return Err(Error::DType(format!("{op}: expected {d}, got {}", t.dtype())));
    }
    Ok(())
}

pub(crate) fn expect_shape(op: &str, t: &Tensor, shape: &[usize]) -> Result<()> {
    if t.shape() != shape {
        return Err(Error::Shape(format!("{op}: expected shape {shape:?}, got {:?}", t.shape())));
    }
    Ok(())
}

/// The CPU's f32 matrix product, in one place: c (m x n, row stride ldc) = a b + (c if
/// `accumulate`), with a (m x k) and b (k x n) given by row and column strides. Uses the `gemm`
/// crate (AVX2/AVX-512 kernels, rayon threads).
#[allow(clippy::too_many_arguments)]
pub(crate) fn cpu_sgemm(m: usize, n: usize, k: usize, a: &[f32], a_rs: usize, a_cs: usize, b: &[f32], b_rs: usize, b_cs: usize, c: &mut [f32], ldc: usize, accumulate: bool) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(k == 0 || (a.len() > (m - 1) * a_rs + (k - 1) * a_cs && b.len() > (k - 1) * b_rs + (n - 1) * b_cs), "sgemm operands too short");
    assert!(c.len() >= (m - 1) * ldc + n, "sgemm output too short");
    // SAFETY: the asserts above keep every index of the strided operands inside their slices.
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            ::gemm::Parallelism::Rayon(0),
        )
    }
}
