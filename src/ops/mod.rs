//! Operations, one file each: the CPU reference (the truth that kernels are tested against) and
//! the dispatch to the kernel of kernels/<op>.cu on emu and cuda. Outputs are passed in, so that
//! callers (and tests, which poison them) control allocation.
pub mod attention;
pub mod cast;
pub mod conv3d;
pub mod elementwise;
pub mod embedding;
pub mod gemm;
pub mod group_norm;
pub mod linear;
pub mod reduce;
pub mod resample;
pub mod vector;

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// Grid for a grid-stride kernel over n elements with `block` threads per block.
pub(crate) fn stride_grid(n: usize, block: u32) -> [u32; 3] {
    let blocks = n.div_ceil(block as usize).clamp(1, 65535 * 4);
    [blocks as u32, 1, 1]
}

pub(crate) fn same_device(op: &str, ts: &[&Tensor]) -> Result<()> {
    let d = ts[0].device().name();
    match ts.iter().find(|t| t.device().name() != d) {
        Some(t) => Err(Error::Shape(format!("{op}: tensors on {d} and {}", t.device().name()))),
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
