//! The diffusion method around the network: tiling and patch inputs (METHOD.md sections 2 and 7).
pub mod recon;
pub mod sampler;
pub mod schedule;
pub mod tiling;
pub mod train;
