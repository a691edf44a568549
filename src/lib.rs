//! tomodiff: 3D patch diffusion priors with global context for CT reconstruction.
//!
//! Layers, each calling only the one below: `ops` (one operation per file: CPU reference and
//! kernel dispatch), `tensor`, `device` (cpu, emu, cuda; memory and launches), `kernels` (the
//! table of CUDA entry points built from kernels/*.cu). See docs/ARCHITECTURE.md.
pub mod bench;
pub mod ct;
pub mod device;
pub mod diffusion;
pub mod error;
pub mod info;
pub mod io;
pub mod kernels;
pub mod metrics;
pub mod nn;
pub mod ops;
pub mod tensor;

pub use device::Device;
pub use error::{Error, Result};
pub use tensor::{DType, Tensor};
