//! The diffusion method around the network (docs/METHOD.md): the noise schedule, tiling, training,
//! the sampler and reconstruction.
pub mod recon;
pub mod sampler;
pub mod schedule;
pub mod tail_mean;
pub mod tiling;
pub mod train;

/// What a progress callback returns: `()` or `true` to go on; `false` or `ControlFlow::Break` to
/// stop the work, which then ends with `Error::Cancelled`.
pub trait Proceed {
    /// Whether the work goes on.
    fn proceed(self) -> bool;
}

impl Proceed for () {
    fn proceed(self) -> bool {
        true
    }
}

impl Proceed for bool {
    fn proceed(self) -> bool {
        self
    }
}

impl Proceed for std::ops::ControlFlow<()> {
    fn proceed(self) -> bool {
        self.is_continue()
    }
}
