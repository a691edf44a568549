//! The patch diffusion network: a 3D ADM U-Net with global context (docs/METHOD.md sections 2 and 4).
pub mod arch;
pub mod config;
pub mod model_files;
pub mod optim;
pub mod unet;
#[doc(hidden)]
pub mod unet_backward;
pub mod weights;

pub use arch::{Arch, Block, Param};
pub use config::{ContextMode, Intensity, Prediction, UNetConfig};
pub use unet::UNet;
pub use weights::Weights;
