//! `Tensor`: a shape, a dtype and a buffer on a device.
//!
//! Layout convention: row-major, last axis fastest. Activations are channels-last,
//! (N, D, H, W, C), so that a convolution's implicit GEMM reads contiguous channels; files at the
//! user boundary hold NCDHW as PyTorch users do, and are permuted once on load.
mod dtype;
pub mod safetensors;

pub use dtype::DType;

use crate::device::{Buffer, Device};
use crate::error::{Error, Result};

/// An n-dimensional array on a device: a shape (row-major, the last axis fastest), a dtype (f32,
/// bf16, f16) and one buffer (host memory on cpu and emu, GPU memory on cuda). Activations are
/// channels-last (N, D, H, W, C); volumes (nz, ny, nx); projections (views, rows, cols).
pub struct Tensor {
    shape: Vec<usize>,
    dtype: DType,
    buf: Buffer,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {}, {})", self.shape, self.dtype, self.buf.device().name())
    }
}

impl Tensor {
    /// A tensor of zeros (a fill on the device's stream).
    pub fn zeros(shape: &[usize], dtype: DType, dev: &Device) -> Result<Tensor> {
        let n = checked_numel(shape)?;
        Ok(Tensor { shape: shape.to_vec(), dtype, buf: dev.alloc_zeroed(n * dtype.size())? })
    }

    /// A tensor whose values are not initialised (see [`Device::alloc`]): for outputs that an op
    /// writes whole.
    pub fn empty(shape: &[usize], dtype: DType, dev: &Device) -> Result<Tensor> {
        let n = checked_numel(shape)?;
        Ok(Tensor { shape: shape.to_vec(), dtype, buf: dev.alloc(n * dtype.size())? })
    }

    /// A tensor holding `bytes` (little-endian values of `dtype`).
    pub fn from_bytes(bytes: &[u8], shape: &[usize], dtype: DType, dev: &Device) -> Result<Tensor> {
        let n = checked_numel(shape)?;
        if bytes.len() != n * dtype.size() {
            return Err(Error::Shape(format!(
                "{} bytes do not hold a {dtype} tensor of shape {shape:?} ({} bytes)",
                bytes.len(),
                n * dtype.size()
            )));
        }
        Ok(Tensor { shape: shape.to_vec(), dtype, buf: dev.upload(bytes)? })
    }

    /// f32 values stored as `dtype` (rounded to nearest even for bf16 and f16).
    pub fn from_f32(values: &[f32], shape: &[usize], dtype: DType, dev: &Device) -> Result<Tensor> {
        Tensor::from_bytes(&dtype.encode(values), shape, dtype, dev)
    }

    /// Every element set to `v` (NaN poisons an output before a kernel runs).
    pub fn full(shape: &[usize], v: f32, dtype: DType, dev: &Device) -> Result<Tensor> {
        let n = checked_numel(shape)?;
        Tensor::from_f32(&vec![v; n], shape, dtype, dev)
    }

    /// The extents, outermost first (row-major, the last axis fastest).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// The element type the data is stored as.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// The device the data lives on.
    pub fn device(&self) -> &Device {
        self.buf.device()
    }
    /// Number of elements: the product of the shape (1 for the empty shape).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// The memory holding the data: `numel() * dtype().size()` bytes of little-endian values, as
    /// a kernel launch takes it.
    pub fn buffer(&self) -> &Buffer {
        &self.buf
    }
    /// The memory holding the data, writable (e.g. as a kernel's output).
    pub fn buffer_mut(&mut self) -> &mut Buffer {
        &mut self.buf
    }

    /// The raw little-endian bytes, copied to the host.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.buf.read()
    }

    /// The values as f32 on the host.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        Ok(self.dtype.decode(&self.buf.read()?))
    }

    /// f32 view of host-resident f32 data (the cpu reference path works in place on it).
    pub fn host_f32(&self) -> Option<&[f32]> {
        match self.dtype {
            DType::F32 => self.buf.host_slice().map(bytemuck::cast_slice),
            _ => None,
        }
    }
    /// As `host_f32`, writable: None unless the tensor is f32 in host memory (cpu, emu).
    pub fn host_f32_mut(&mut self) -> Option<&mut [f32]> {
        match self.dtype {
            DType::F32 => self.buf.host_slice_mut().map(bytemuck::cast_slice_mut),
            _ => None,
        }
    }

    /// A copy on `dev`: a device-side copy when `dev` is this tensor's own device.
    pub fn to_device(&self, dev: &Device) -> Result<Tensor> {
        if dev.name() == self.device().name() {
            let mut t = Tensor::empty(&self.shape, self.dtype, dev)?;
            t.buf.copy_from(&self.buf)?;
            return Ok(t);
        }
        Tensor::from_bytes(&self.to_bytes()?, &self.shape, self.dtype, dev)
    }

    /// Same data, new shape with the same number of elements.
    pub fn reshape(self, shape: &[usize]) -> Result<Tensor> {
        if checked_numel(shape)? != self.numel() {
            return Err(Error::Shape(format!("cannot reshape {:?} to {shape:?}", self.shape)));
        }
        Ok(Tensor { shape: shape.to_vec(), ..self })
    }
}

fn checked_numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|n| n.checked_mul(4).is_some())
        .ok_or_else(|| Error::Shape(format!("shape {shape:?} is too large")))
}
