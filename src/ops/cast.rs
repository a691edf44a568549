//! dtype conversion (kernels/elementwise.cu: cast_*). Rounding is to nearest even, as `half`
//! does on the CPU, so every device gives the same bits.
use super::stride_grid;
use crate::device::{Device, Launch};
use crate::error::Result;
use crate::tensor::{DType, Tensor};

/// A new tensor with `x`'s values stored as `dtype`, on `x`'s device.
pub fn cast(x: &Tensor, dtype: DType) -> Result<Tensor> {
    let dev = x.device().clone();
    if x.dtype() == dtype {
        return x.to_device(&dev);
    }
    if !dev.runs_kernels() {
        return Tensor::from_f32(&x.to_f32_vec()?, x.shape(), dtype, &dev);
    }
    // Kernels convert to and from f32; bf16 <-> f16 goes through an f32 temporary.
    if x.dtype() != DType::F32 && dtype != DType::F32 {
        return cast(&cast(x, DType::F32)?, dtype);
    }
    let mut y = Tensor::empty(x.shape(), dtype, &dev)?;
    cast_into(x, &mut y)?;
    Ok(y)
}

/// y = x converted to y's dtype (one side f32), on emu or cuda.
pub fn cast_into(x: &Tensor, y: &mut Tensor) -> Result<()> {
    super::same_device("cast", &[x, y])?;
    super::expect_shape("cast", y, x.shape())?;
    let name = format!("cast_{}_{}", x.dtype(), y.dtype());
    let dev: Device = x.device().clone();
    let n = x.numel();
    Launch::new(&name)?.grid(stride_grid(n, 256)).block([256, 1, 1]).i64(n as i64).buf(x.buffer()).buf(y.buffer()).run(&dev)
}

impl Tensor {
    /// The same values stored as `dtype`, on the same device (kernels on emu/cuda).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        cast(self, dtype)
    }
}
