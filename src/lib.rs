#![deny(missing_docs)]
//! tomodiff: 3D patch diffusion priors with global context for CT reconstruction.
//!
//! Layers, each calling only the one below: `ops` (one operation per file: CPU reference and
//! kernel dispatch), `tensor`, `device` (cpu, emu, cuda; memory and launches), `kernels` (the
//! table of CUDA entry points built from kernels/*.cu). See docs/ARCHITECTURE.md.
// Internal: the tomodiff binary's benchmarks and reports, and the kernel table (used by the
// binary and the tests); no stability promised, hidden from the docs.
#[doc(hidden)]
pub mod bench;
#[doc(hidden)]
pub mod info;
#[doc(hidden)]
pub mod kernels;

pub mod ct;
pub mod device;
pub mod diffusion;
pub mod error;
pub mod io;
pub mod metrics;
pub mod nn;
// Internal: one operation per file (CPU reference + kernel dispatch), used by the layers above,
// the tests and the benchmarks; no stability promised.
#[doc(hidden)]
pub mod ops;
pub mod tensor;

pub use device::Device;
pub use error::{Error, Result};
pub use tensor::{DType, Tensor};
