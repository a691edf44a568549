//! The mean of a run's last x0 estimates: a cheap step towards the posterior mean
//! (docs/RECONSTRUCTION.md, "Averaging the last passes").
use crate::error::Result;
use crate::ops::elementwise::{axpy, scale};
use crate::ops::vector::copy;
use crate::tensor::Tensor;

/// Sums the network's estimates x0 (model range, on their device) of the passes at timesteps
/// `t <= below`, as the sampler's hook sees them before data consistency, and replaces the last
/// pass's estimate by their mean. The passes near t = 0 each draw the small-scale detail anew
/// (fresh noise and tiling offsets at every pass), so their mean keeps what they agree on; the
/// sampler's trajectory is unchanged, and so is the cost (one volume and one axpy per pass).
pub struct TailMean {
    below: usize,
    sum: Option<Tensor>,
    count: usize,
}

impl TailMean {
    /// Averaging over the passes at t <= `below`.
    pub fn new(below: usize) -> TailMean {
        TailMean { below, sum: None, count: 0 }
    }

    /// Adds `x0`, the estimate of a pass at timestep `t`, when t <= `below`.
    pub fn add(&mut self, x0: &Tensor, t: usize) -> Result<()> {
        if t > self.below {
            return Ok(());
        }
        match &mut self.sum {
            Some(s) => axpy(1.0, x0, s)?,
            None => self.sum = Some(copy(x0)?),
        }
        self.count += 1;
        Ok(())
    }

    /// The last pass: adds its `x0` (timestep `t`) and overwrites it with the mean of every
    /// estimate added; with one estimate (or none) `x0` is left as it is.
    pub fn finish(&mut self, x0: &mut Tensor, t: usize) -> Result<()> {
        self.add(x0, t)?;
        match &self.sum {
            Some(s) if self.count > 1 => scale(1.0 / self.count as f32, s, x0),
            _ => Ok(()),
        }
    }

    /// The estimates averaged so far.
    pub fn count(&self) -> usize {
        self.count
    }
}
