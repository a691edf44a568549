//! Storage types. Compute is f32 on the CPU; bf16 (and f16 for imported weights) are storage
//! formats that kernels widen to f32.
use crate::error::{Error, Result};
use half::{bf16, f16};

/// Element types: f32 everywhere; bf16 for activations and weights on kernel devices (f32
/// accumulation); f16 for weights in files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float (4 bytes): the compute type, on every device.
    F32,
    /// bfloat16 (2 bytes, f32's exponent range): activations and weights on the kernel devices
    /// (emu, cuda), widened to f32 in the kernels.
    BF16,
    /// IEEE half (2 bytes): weights as files hold them; widened to f32 on use.
    F16,
}

impl DType {
    /// Bytes per element: 4 for f32, 2 for bf16 and f16.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
        }
    }

    /// The lower-case name (`f32`, `bf16`, `f16`), as `Display` prints it and `parse` takes it.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
        }
    }

    /// The dtype named `s`: `f32`/`F32`/`float32`, `bf16`/`BF16`/`bfloat16` or
    /// `f16`/`F16`/`float16`; `Error::DType` for any other name.
    pub fn parse(s: &str) -> Result<DType> {
        match s {
            "f32" | "F32" | "float32" => Ok(DType::F32),
            "bf16" | "BF16" | "bfloat16" => Ok(DType::BF16),
            "f16" | "F16" | "float16" => Ok(DType::F16),
            _ => Err(Error::DType(format!("unknown dtype {s:?}: expected f32, bf16 or f16"))),
        }
    }

    /// Little-endian bytes of this dtype -> f32 values (round trip is exact for every dtype).
    pub fn decode(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            DType::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            DType::BF16 => bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            DType::F16 => bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        }
    }

    /// f32 values -> little-endian bytes of this dtype, rounding to nearest even.
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::BF16 => values.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect(),
            DType::F16 => values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
