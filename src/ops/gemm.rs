//! C (f32, M x N) = A (M x K) . B (K x N), row-major. On emu/cuda A and B are bf16 and the
//! product runs on tensor cores (kernels/gemm.cu); the CPU reference takes f32 (or widens).
use super::{expect_dtype, same_device};
use crate::device::Launch;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// Dynamic shared memory of the kernel's 3-stage pipeline (gemm_cfg::SMEM_BYTES in gemm.cu).
pub const SMEM_BYTES: u32 = 3 * (128 * 40 + 32 * 136) * 2;
const TILE: usize = 128;

/// CPU reference: c = a b, f32 throughout.
pub fn matmul_ref(a: &[f32], b: &[f32], c: &mut [f32], m: usize, n: usize, k: usize) {
    assert_eq!(a.len(), m * k);
    assert_eq!(b.len(), k * n);
    assert_eq!(c.len(), m * n);
    super::cpu_sgemm(m, n, k, a, k, 1, b, n, 1, c, n, false);
}

fn dims(a: &Tensor, b: &Tensor, c: &Tensor) -> Result<(usize, usize, usize)> {
    let (sa, sb, sc) = (a.shape(), b.shape(), c.shape());
    if sa.len() != 2 || sb.len() != 2 || sc.len() != 2 || sa[1] != sb[0] || sc != [sa[0], sb[1]] {
        return Err(Error::Shape(format!("matmul: {sa:?} x {sb:?} -> {sc:?} does not fit (M,K) x (K,N) -> (M,N)")));
    }
    Ok((sa[0], sb[1], sa[1]))
}

/// c = a b.
pub fn matmul(a: &Tensor, b: &Tensor, c: &mut Tensor) -> Result<()> {
    same_device("matmul", &[a, b, c])?;
    expect_dtype("matmul", c, DType::F32)?;
    let (m, n, k) = dims(a, b, c)?;
    let dev = a.device().clone();
    if !dev.runs_kernels() {
        let (av, bv) = (a.to_f32_vec()?, b.to_f32_vec()?);
        matmul_ref(&av, &bv, c.host_f32_mut().ok_or_else(|| Error::DType("host f32 expected".into()))?, m, n, k);
        return Ok(());
    }
    expect_dtype("matmul", a, DType::BF16)?;
    expect_dtype("matmul", b, DType::BF16)?;
    let dim = |v: usize| i32::try_from(v).map_err(|_| Error::Shape(format!("matmul: dimension {v} exceeds i32")));
    let (mi, ni, ki) = (dim(m)?, dim(n)?, dim(k)?);
    if m == 0 || n == 0 {
        return Ok(());
    }
    // 16-byte cp.async chunks need rows of whole chunks; other shapes take the scalar-load entry.
    let kernel = if k % 8 == 0 && n % 8 == 0 { "gemm_bf16_f32_vec" } else { "gemm_bf16_f32_any" };
    let grid_y = m.div_ceil(TILE);
    if grid_y > 65535 {
        return Err(Error::Shape(format!("matmul: M = {m} exceeds {} rows", 65535 * TILE)));
    }
    Launch::new(kernel)?
        .grid([n.div_ceil(TILE) as u32, grid_y as u32, 1])
        .block([256, 1, 1])
        .shared_bytes(SMEM_BYTES)
        .i32(mi)
        .i32(ni)
        .i32(ki)
        .buf(a.buffer())
        .i32(ki)
        .buf(b.buffer())
        .i32(ni)
        .buf(c.buffer())
        .i32(ni)
        .run(&dev)
}
