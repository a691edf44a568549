//! The mean of a run's last x0 estimates: a cheap step towards the posterior mean
//! (docs/RECONSTRUCTION.md, "Averaging the last passes").
use crate::error::Result;
use crate::ops::elementwise::{axpy, scale};
use crate::ops::vector::copy;
use crate::tensor::Tensor;

/// Sums the network's estimates x0 (model range, f32 on their device) of the passes at timesteps
/// `t <= below`, as the sampler's hook sees them before data consistency, and replaces the last
/// pass's estimate by their mean. The passes near t = 0 each draw the small-scale detail anew
/// (fresh noise and tiling offsets at every pass), so their mean keeps what they agree on; the
/// sampler's trajectory is unchanged, and so is the cost (one volume and one axpy per pass).
pub struct TailMean {
    below: usize,
    passes: usize,
    pass: usize,
    sum: Option<Tensor>,
    count: usize,
}

impl TailMean {
    /// Averaging over the passes at t <= `below` of a run of `passes` network passes.
    pub fn new(below: usize, passes: usize) -> TailMean {
        TailMean { below, passes, pass: 0, sum: None, count: 0 }
    }

    /// Called with every pass's estimate `x0` (timestep `t`) before its solve: adds it when
    /// t <= `below`; at the last pass overwrites it with the mean of every estimate added
    /// (unchanged when it is the only one, or when none was added).
    pub fn observe(&mut self, x0: &mut Tensor, t: usize) -> Result<()> {
        self.pass += 1;
        let last = self.pass == self.passes;
        if t > self.below {
            return Ok(());
        }
        self.count += 1;
        match &mut self.sum {
            Some(s) if last => {
                axpy(1.0, x0, s)?;
                scale(1.0 / self.count as f32, s, x0)
            }
            Some(s) => axpy(1.0, x0, s),
            // The only estimate is its own mean.
            None if last => Ok(()),
            None => {
                self.sum = Some(copy(x0)?);
                Ok(())
            }
        }
    }

    /// The estimates added so far.
    pub fn count(&self) -> usize {
        self.count
    }
}
