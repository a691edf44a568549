//! A held-out phantom and its simulated scans, shared by `demo` and `eval`: the scans come from
//! the phantom on a grid twice as fine as the reconstruction's, so the data hold detail finer than
//! a voxel, as a real scan of a continuous object does (no "inverse crime"), and the truth is that
//! fine phantom averaged over each voxel of the reconstruction's grid.
use anyhow::Result;
use tomodiff::ct::{noise, phantom, siddon, Geometry, VolumeGrid};

/// How many times finer per axis the scans' object is than the reconstruction's grid.
pub const FINER: usize = 2;

pub struct HeldOut {
    fine_grid: VolumeGrid,
    fine: Vec<f32>,
    /// The fine phantom averaged over each voxel of the reconstruction's grid (the same values as
    /// `phantom::averaged(name, grid, seed, FINER)`, which training draws).
    pub truth: Vec<f32>,
    seed: u64,
}

impl HeldOut {
    /// Phantom `name` of seed `seed` for a reconstruction on `grid`.
    pub fn new(name: &str, grid: &VolumeGrid, seed: u64) -> Result<HeldOut> {
        let (fine_grid, fine) = phantom::supersampled(name, grid, seed, FINER)?;
        let truth = tomodiff::ops::resample::area_ref(&fine, fine_grid.shape, grid.shape);
        Ok(HeldOut { fine_grid, fine, truth, seed })
    }

    /// The scan `g` (whose volume is the reconstruction's grid) of the fine phantom, in line
    /// integrals, with Poisson noise at `i0` photons per ray drawn from the phantom's seed.
    pub fn scan(&self, g: &Geometry, i0: f64) -> Result<Vec<f32>> {
        let gf = Geometry { volume: self.fine_grid.clone(), ..g.clone() };
        let mut proj = vec![0f32; g.n_rays()];
        siddon::forward_ref(&gf, &self.fine, &mut proj)?;
        noise::poisson(&mut proj, g.det_shape[1], i0, self.seed)?;
        Ok(proj)
    }
}
