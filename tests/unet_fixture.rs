//! The U-Net against the PyTorch reference (tools/unet_reference.py): the tiny network with
//! seeded non-zero weights, its output and intermediate activations, on the CPU at 1e-4.
use std::collections::BTreeMap;
use std::path::Path;
use tomodiff::nn::unet::{from_ncdhw, to_ncdhw};
use tomodiff::nn::{Arch, UNet, UNetConfig, Weights};
use tomodiff::tensor::safetensors;
use tomodiff::Device;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// max |a - b| relative to max |b|
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max) / scale
}

#[test]
fn cpu_forward_matches_pytorch() {
    let arch = Arch::new(&UNetConfig::tiny());
    let w = Weights::load(&fixture("unet_tiny_weights.safetensors"), &arch).unwrap();
    let io = safetensors::load(&fixture("unet_tiny_io.safetensors"), &Device::Cpu).unwrap();
    let xs = io["x"].shape().to_vec();
    let (n, c, dims) = (xs[0], xs[1], [xs[2], xs[3], xs[4]]);
    let x = from_ncdhw(&io["x"].to_f32_vec().unwrap(), n, c, dims);
    let t = io["t"].to_f32_vec().unwrap();
    let net = UNet::new(arch, w);
    let mut acts = BTreeMap::new();
    let eps = net.forward(&x, &t, Some(&mut acts));
    for (name, want) in &io {
        if !name.starts_with("act.") {
            continue;
        }
        let got = &acts[name];
        let got = if name == "act.emb" { got.data.clone() } else { to_ncdhw(got) };
        let e = rel_err(&got, &want.to_f32_vec().unwrap());
        eprintln!("{name}: relative error {e:.2e}");
        assert!(e < 1e-4, "{name}: {e:e}");
    }
    let e = rel_err(&to_ncdhw(&eps), &io["eps"].to_f32_vec().unwrap());
    eprintln!("eps: relative error {e:.2e}");
    assert!(e < 1e-4, "eps: {e:e}");
}

#[test]
fn bad_weights_name_the_tensor() {
    let arch = Arch::new(&UNetConfig::tiny());
    let path = fixture("unet_tiny_weights.safetensors");
    let load = |edit: &dyn Fn(&mut BTreeMap<String, tomodiff::Tensor>)| {
        let mut t = safetensors::load(&path, &Device::Cpu).unwrap();
        edit(&mut t);
        Weights::from_tensors(&path, &arch, t).err().map(|e| e.to_string()).unwrap_or_default()
    };
    let e = load(&|t| {
        t.remove("middle_block.1.qkv.weight");
    });
    assert!(e.contains("\"middle_block.1.qkv.weight\" is missing"), "{e}");
    let e = load(&|t| {
        let x = tomodiff::Tensor::zeros(&[3], tomodiff::DType::F32, &Device::Cpu).unwrap();
        t.insert("extra.bias".into(), x);
    });
    assert!(e.contains("unexpected tensor \"extra.bias\""), "{e}");
    let e = load(&|t| {
        let x = tomodiff::Tensor::zeros(&[16, 5, 3, 3, 2], tomodiff::DType::F32, &Device::Cpu).unwrap();
        t.insert("input_blocks.0.0.weight".into(), x);
    });
    assert!(e.contains("\"input_blocks.0.0.weight\" has shape [16, 5, 3, 3, 2], the config needs [16, 5, 3, 3, 3]"), "{e}");
    // A paper-size config against tiny weights fails on the first tensor that differs.
    let e = Weights::load(&path, &Arch::new(&UNetConfig::paper())).err().unwrap().to_string();
    assert!(e.contains("time_embed.0.weight") && e.contains("unet_tiny_weights.safetensors"), "{e}");
}
