//! Patch inputs: tiling, padding, positional channels, and the global context's resampling
//! against PyTorch's F.interpolate.
mod common;
use tomodiff::diffusion::tiling;
use tomodiff::nn::ContextMode;
use tomodiff::ops::{patches, resample};
use tomodiff::tensor::safetensors;
use tomodiff::Device;

#[test]
fn resampling_matches_pytorch() {
    let io = safetensors::load(&common::fixture("unet_tiny_io.safetensors"), &Device::Cpu).unwrap();
    let v = io["resample.volume"].to_f32_vec().unwrap();
    for (name, out) in [("resample.trilinear", [4, 5, 6]), ("resample.area", [4, 5, 6]), ("resample.trilinear_up", [20, 16, 12])] {
        let got = if name == "resample.area" { resample::area_ref(&v, [13, 11, 9], out) } else { resample::trilinear_ref(&v, [13, 11, 9], out) };
        let want = io[name].to_f32_vec().unwrap();
        let e = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(e < 1e-5, "{name}: max diff {e}");
    }
}

#[test]
fn tiling_covers_the_volume_with_padding() {
    // N = 32, P = 8 (a multiple): N / P + 1 = 5 patches per axis, starting o - 8, o, ..., o + 24.
    assert_eq!(tiling::starts(32, 8, 3), vec![-5, 3, 11, 19, 27]);
    // N = 20, P = 8: ceil(20 / 8) + 1 = 4, so that offset 0 still reaches voxel 19.
    assert_eq!(tiling::starts(20, 8, 0), vec![-8, 0, 8, 16]);
    for o in 0..8 {
        let s = tiling::starts(20, 8, o);
        assert!(s[0] <= 0 && *s.last().unwrap() + 8 >= 20, "offset {o}: {s:?} must cover [0, 20)");
    }
    assert_eq!(tiling::tiling([20, 16, 9], [8, 8, 8], [0, 1, 2]).len(), 4 * 3 * 3);
}

#[test]
fn assembled_inputs_hold_patch_context_and_positions() {
    let dims = [6, 5, 4];
    let vol: Vec<f32> = (0..120).map(|i| i as f32 + 1.0).collect();
    let patch = [4, 4, 4];
    let ctx = patches::context_ref(&vol, dims, patch, ContextMode::Area);
    let a = patches::assemble_ref(&vol, dims, patch, &[[-2, 1, 0], [3, -1, 2]], &ctx);
    assert_eq!(a.len(), 2 * 64 * 5);
    let at = |b: usize, k: usize, j: usize, i: usize, ch: usize| a[((b * 64) + (k * 4 + j) * 4 + i) * 5 + ch];
    // Patch 0, voxel (0, 0, 0) is volume (-2, 1, 0): padding -> 0; its z position -1 + 2 (-2) / 5.
    assert_eq!(at(0, 0, 0, 0, 0), 0.0);
    assert!((at(0, 0, 0, 0, 2) - (-1.8)).abs() < 1e-6);
    // Patch 0, voxel (2, 0, 3) is volume (0, 1, 3) = 1 * 4 + 3 = index 7 -> value 8.
    assert_eq!(at(0, 2, 0, 3, 0), 8.0);
    assert_eq!((at(0, 2, 0, 3, 2), at(0, 2, 0, 3, 3), at(0, 2, 0, 3, 4)), (-1.0, -0.5, 1.0));
    // Patch 1, voxel (1, 1, 1) is volume (4, 0, 3): index (4 * 5 + 0) * 4 + 3 = 83.
    assert_eq!(at(1, 1, 1, 1, 0), 84.0);
    // Voxels past the far edge (x = 4, 5) are padding.
    assert_eq!(at(1, 1, 1, 2, 0), 0.0);
    assert!((at(1, 1, 1, 3, 4) - (-1.0 + 2.0 * 5.0 / 3.0)).abs() < 1e-6);
    // The context channel is the same for every patch.
    assert_eq!(at(0, 3, 2, 1, 1), at(1, 3, 2, 1, 1));
    assert_eq!(at(0, 3, 2, 1, 1), ctx[(3 * 4 + 2) * 4 + 1]);
}

#[test]
fn device_context_and_patches_match_the_cpu() {
    use tomodiff::{DType, Tensor};
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(11);
    let dims = [13, 11, 9];
    let vol: Vec<f32> = (0..13 * 11 * 9).map(|_| rand::Rng::random_range(&mut rng, -1.0f32..1.0)).collect();
    let starts = tiling::tiling(dims, [8, 8, 8], [3, 5, 1]);
    let cpu = Tensor::from_f32(&vol, &dims, DType::F32, &Device::Cpu).unwrap();
    for dev in common::kernel_devices("patches") {
        let v = Tensor::from_f32(&vol, &dims, DType::F32, &dev).unwrap();
        for mode in [ContextMode::Trilinear, ContextMode::Area] {
            for patch in [[8, 8, 8], [4, 6, 5], [20, 16, 12]] {
                let want = patches::context(&cpu, patch, mode).unwrap().to_f32_vec().unwrap();
                let got = patches::context(&v, patch, mode).unwrap().to_f32_vec().unwrap();
                let e = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(e < 1e-5, "{mode:?} {patch:?}: {e}");
            }
        }
        let ctx_c = patches::context(&cpu, [8, 8, 8], ContextMode::Trilinear).unwrap();
        let ctx_d = patches::context(&v, [8, 8, 8], ContextMode::Trilinear).unwrap();
        let want = patches::assemble(&cpu, &ctx_c, &patches::Starts::new(&starts, &Device::Cpu).unwrap(), DType::BF16).unwrap();
        let got = patches::assemble(&v, &ctx_d, &patches::Starts::new(&starts, &dev).unwrap(), DType::BF16).unwrap();
        assert_eq!(got.shape(), &[starts.len(), 8, 8, 8, 5]);
        // The same bf16 values, up to one rounding step where f32 context arithmetic differs.
        let (g, w) = (got.to_f32_vec().unwrap(), want.to_f32_vec().unwrap());
        common::assert_close(&format!("patches {}", dev.name()), &g, &w, |i| w[i].abs() / 128.0 + 1e-6);
    }
}
