//! A sparse-view cone-beam reconstruction from Rust, end to end: a geometry built in code, a
//! procedural chest phantom, its Siddon projections with Poisson noise, FDK, and the shipped
//! diffusion prior with data consistency; PSNR of each against the phantom.
//!
//!     cargo run --release --example reconstruct_phantom [-- STEPS]
//!
//! The tests run it with 2 DDIM steps (`cargo test --release --example reconstruct_phantom`).
use std::ops::ControlFlow;
use tomodiff::ct::{chest, fbp, noise, siddon, Geometry, GeometrySpec};
use tomodiff::diffusion::recon::{reconstruct_scan, ReconOptions, Start};
use tomodiff::metrics::psnr;
use tomodiff::nn::model_files;
use tomodiff::Device;

/// PSNR (dB) of FDK and of the prior against the phantom.
fn run(steps: usize) -> tomodiff::Result<(f64, f64)> {
    // 64^3 voxels of 1 mm; 8 views over 360 degrees; source 192 mm and detector 96 mm from the axis.
    let spec = GeometrySpec::cone([64, 64, 64], [104, 128], 8, 192.0, 96.0).det_spacing([1.5, 1.5]);
    let g = Geometry::new(&spec)?;
    let truth = chest::chest(&g.volume, 20261124); // attenuation in 1/mm, (nz, ny, nx)
    let mut proj = vec![0f32; g.n_rays()]; // line integrals, (views, rows, cols)
    siddon::forward_ref(&g, &truth, &mut proj)?;
    noise::poisson(&mut proj, g.det_shape[1], 1e5, 1)?;
    let fdk = fbp::fbp(&g, &proj, fbp::Window::Hann)?;

    let (cfg, weights) = model_files::shipped()?;
    let mut opts = ReconOptions { start: Start::Noise, ..ReconOptions::default() };
    opts.sampler.steps = steps;
    let dev = Device::auto(); // a GPU when there is one, else the CPU
    let (mu, stats) = reconstruct_scan(&cfg, &weights, &g, &proj, None, &opts, &dev, None, |pass, passes| {
        eprint!("\rnetwork pass {pass}/{passes}");
        ControlFlow::Continue(())
    })?;
    eprintln!();
    println!("reconstructed {:?} on {} in {:.1} s", g.volume.shape, dev.name(), stats.sample.total_s);
    Ok((psnr(&fdk, &truth)?, psnr(&mu, &truth)?))
}

#[cfg_attr(test, allow(dead_code))]
fn main() {
    let steps = std::env::args().nth(1).map_or(Ok(50), |s| s.parse()).unwrap_or_else(|e| {
        eprintln!("STEPS must be a count: {e}");
        std::process::exit(2)
    });
    match run(steps) {
        Ok((fdk, prior)) => println!("PSNR: FDK {fdk:.2} dB, diffusion prior {prior:.2} dB"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1)
        }
    }
}

#[cfg(test)]
mod tests {
    /// Two DDIM steps already beat FDK on 8 views.
    #[test]
    fn the_prior_beats_fdk() {
        let (fdk, prior) = super::run(2).unwrap();
        assert!(prior > fdk + 3.0, "FDK {fdk:.2} dB, prior {prior:.2} dB");
    }
}
