//! The U-Net against the PyTorch reference (tools/unet_reference.py): the tiny network with
//! seeded non-zero weights, its output and intermediate activations: CPU f32 within 1e-4, and
//! bf16 on emu (and cuda when present) within 2e-2, relative to each tensor's largest value.
mod common;
use std::collections::BTreeMap;
use tomodiff::nn::unet::{from_ncdhw, to_ncdhw};
use tomodiff::nn::{Arch, UNet, UNetConfig, Weights};
use tomodiff::tensor::safetensors;
use tomodiff::{DType, Device, Tensor};

fn fixture(name: &str) -> std::path::PathBuf {
    common::fixture(name)
}

/// ||a - b|| / ||b|| (L2)
fn l2_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// max |a - b| relative to max |b|
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max) / scale
}

#[test]
fn forward_matches_pytorch_on_every_device() {
    let arch = Arch::new(&UNetConfig::tiny());
    let w = Weights::load(&fixture("unet_tiny_weights.safetensors"), &arch).unwrap();
    let io = safetensors::load(&fixture("unet_tiny_io.safetensors"), &Device::Cpu).unwrap();
    let xs = io["x"].shape().to_vec();
    let (n, c, sp) = (xs[0], xs[1], xs[2] * xs[3] * xs[4]);
    let xv = from_ncdhw(&io["x"].to_f32_vec().unwrap(), n, c, sp);
    let mut devs = vec![(Device::Cpu, 1e-4)];
    devs.extend(common::kernel_devices("unet").into_iter().map(|d| (d, 2e-2)));
    for (dev, tol) in devs {
        let net = UNet::new(arch.clone(), &w, &dev).unwrap();
        let x = Tensor::from_f32(&xv, &[n, xs[2], xs[3], xs[4], c], net.act_dtype(), &dev).unwrap();
        let t = io["t"].to_device(&dev).unwrap();
        let mut acts = BTreeMap::new();
        let eps = net.forward(&x, &t, Some(&mut acts)).unwrap();
        for (name, want) in &io {
            if !name.starts_with("act.") {
                continue;
            }
            let got = acts[name].to_f32_vec().unwrap();
            let got = if name == "act.emb" { got } else { to_ncdhw(&got, n, *acts[name].shape().last().unwrap(), got.len() / n / acts[name].shape().last().unwrap()) };
            let e = rel_err(&got, &want.to_f32_vec().unwrap());
            eprintln!("{} {name}: relative error {e:.2e}", dev.name());
            assert!(e < tol, "{} {name}: {e:e}", dev.name());
        }
        let e = rel_err(&to_ncdhw(&eps.to_f32_vec().unwrap(), n, 1, sp), &io["eps"].to_f32_vec().unwrap());
        eprintln!("{} eps: relative error {e:.2e}", dev.name());
        assert!(e < tol, "{} eps: {e:e}", dev.name());
        assert_eq!(eps.dtype(), if dev.runs_kernels() { DType::BF16 } else { DType::F32 });
    }
}

#[test]
fn bad_weights_name_the_tensor() {
    let arch = Arch::new(&UNetConfig::tiny());
    let path = fixture("unet_tiny_weights.safetensors");
    let load = |edit: &dyn Fn(&mut BTreeMap<String, Tensor>)| {
        let mut t = safetensors::load(&path, &Device::Cpu).unwrap();
        edit(&mut t);
        Weights::from_tensors(&path, &arch, t).err().map(|e| e.to_string()).unwrap_or_default()
    };
    let e = load(&|t| {
        t.remove("middle_block.1.qkv.weight");
    });
    assert!(e.contains("\"middle_block.1.qkv.weight\" is missing"), "{e}");
    let e = load(&|t| {
        t.insert("extra.bias".into(), Tensor::zeros(&[3], DType::F32, &Device::Cpu).unwrap());
    });
    assert!(e.contains("unexpected tensor \"extra.bias\""), "{e}");
    let e = load(&|t| {
        t.insert("input_blocks.0.0.weight".into(), Tensor::zeros(&[16, 5, 3, 3, 2], DType::F32, &Device::Cpu).unwrap());
    });
    assert!(e.contains("\"input_blocks.0.0.weight\" has shape [16, 5, 3, 3, 2], the config needs [16, 5, 3, 3, 3]"), "{e}");
    let e = load(&|t| {
        t.insert("out.0.bias".into(), Tensor::from_f32(&[f32::NAN; 16], &[16], DType::F32, &Device::Cpu).unwrap());
    });
    assert!(e.contains("\"out.0.bias\" holds a non-finite value"), "{e}");
    // A paper-size config against tiny weights fails on the first tensor that differs.
    let e = Weights::load(&path, &Arch::new(&UNetConfig::paper())).err().unwrap().to_string();
    assert!(e.contains("time_embed.0.weight") && e.contains("unet_tiny_weights.safetensors"), "{e}");
}

#[test]
fn device_gradients_match_pytorch() {
    use tomodiff::ops::conv3d::repack_weight;
    let arch = Arch::new(&UNetConfig::tiny());
    let w = Weights::load(&fixture("unet_tiny_weights.safetensors"), &arch).unwrap();
    let io = safetensors::load(&fixture("unet_tiny_io.safetensors"), &Device::Cpu).unwrap();
    let gr = safetensors::load(&fixture("unet_tiny_grads.safetensors"), &Device::Cpu).unwrap();
    let xs = io["x"].shape().to_vec();
    let (n, c, sp) = (xs[0], xs[1], xs[2] * xs[3] * xs[4]);
    let xv = from_ncdhw(&io["x"].to_f32_vec().unwrap(), n, c, sp);
    let target = from_ncdhw(&gr["target"].to_f32_vec().unwrap(), n, 1, sp);
    let want_loss = gr["loss"].to_f32_vec().unwrap()[0] as f64;
    let mut devs = vec![(Device::Cpu, 1e-4)];
    // Each parameter's gradient against PyTorch's f32 one, as ||g - g_ref|| / ||g_ref||: bf16
    // activations and bf16 tensor-core operands on emu/cuda, f32 activation gradients.
    devs.extend(common::kernel_devices("unet-grad").into_iter().map(|d| (d, 5e-2)));
    for (dev, tol) in devs {
        let net = UNet::new(arch.clone(), &w, &dev).unwrap();
        let x = Tensor::from_f32(&xv, &[n, xs[2], xs[3], xs[4], c], net.act_dtype(), &dev).unwrap();
        let t = io["t"].to_device(&dev).unwrap();
        let (loss, g) = net.mse_backward(&x, &t, &target).unwrap();
        assert!((loss - want_loss).abs() < tol * want_loss, "{} loss {loss} vs {want_loss}", dev.name());
        let mut worst = (String::new(), 0.0);
        let mut worst_max = 0.0f64;
        for p in arch.params() {
            let v = gr[&format!("grad.{}", p.name)].to_f32_vec().unwrap();
            let want = match p.shape.len() {
                5 => repack_weight(&v, p.shape[0], p.shape[1], p.shape[2]),
                3 => repack_weight(&v, p.shape[0], p.shape[1], 1),
                _ => v,
            };
            let got = g[&p.name].to_f32_vec().unwrap();
            let e = l2_err(&got, &want);
            if e > worst.1 {
                worst = (p.name.clone(), e);
            }
            worst_max = worst_max.max(rel_err(&got, &want));
        }
        eprintln!(
            "{} gradients: loss {loss:.6} (PyTorch {want_loss:.6}); worst L2 relative error {:.2e} in {}, worst max-abs relative {worst_max:.2e}",
            dev.name(),
            worst.1,
            worst.0
        );
        assert!(worst.1 < tol, "{}: {} relative error {:e}", dev.name(), worst.0, worst.1);
    }
}
