//! Tensors on every device, dtype conversions, and safetensors files (good and bad).
mod common;
use common::*;
use std::collections::HashMap;
use tomodiff::tensor::safetensors;
use tomodiff::{DType, Device, Error, Tensor};

#[test]
fn device_names_parse() {
    assert!(matches!(Device::parse("cpu"), Ok(Device::Cpu)));
    assert!(matches!(Device::parse("emu"), Ok(Device::Emu)));
    for bad in ["gpu", "cuda:", "cuda:x", "CPU", ""] {
        let e = Device::parse(bad).unwrap_err();
        assert!(matches!(e, Error::BadDevice(_)), "{bad}: {e}");
    }
    // With no driver, asking for CUDA explicitly is an error that says so; auto falls back.
    if Device::cuda(0).is_err() {
        assert!(Device::parse("cuda:3").unwrap_err().to_string().contains("CUDA"));
        assert!(matches!(Device::auto(), Device::Cpu));
    }
}

#[test]
fn dtype_round_trips_on_every_device() {
    let mut rng = rng("dtype");
    let x = uniform(&mut rng, 999, -100.0, 100.0);
    let mut devs = vec![Device::Cpu];
    devs.extend(kernel_devices("dtype"));
    let cpu = Tensor::from_f32(&x, &[999], DType::F32, &Device::Cpu).unwrap();
    for dev in devs {
        let t = cpu.to_device(&dev).unwrap();
        for d in [DType::BF16, DType::F16] {
            let narrow = t.to_dtype(d).unwrap();
            assert_eq!(narrow.dtype(), d);
            // Same bits as the host encoder, whichever device converted.
            assert_eq!(narrow.to_bytes().unwrap(), d.encode(&x), "{} f32->{d}", dev.name());
            let other = if d == DType::BF16 { DType::F16 } else { DType::BF16 };
            let via = narrow.to_dtype(other).unwrap();
            assert_eq!(via.to_bytes().unwrap(), other.encode(&d.decode(&d.encode(&x))), "{} {d}->{other}", dev.name());
        }
    }
}

#[test]
fn safetensors_round_trip_every_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let dev = Device::Cpu;
    let a = Tensor::from_f32(&[1.0, -2.5, 3.25], &[3], DType::F32, &dev).unwrap();
    let b = Tensor::from_f32(&[0.5; 6], &[2, 3], DType::BF16, &dev).unwrap();
    let c = Tensor::from_f32(&[7.0, 8.0], &[1, 2], DType::F16, &dev).unwrap();
    safetensors::save(&path, &[("a", &a), ("b.weight", &b), ("c", &c)]).unwrap();
    let listed = safetensors::list(&path).unwrap();
    assert_eq!(listed, vec![("a".into(), DType::F32, vec![3]), ("b.weight".into(), DType::BF16, vec![2, 3]), ("c".into(), DType::F16, vec![1, 2])]);
    let loaded = safetensors::load(&path, &Device::Emu).unwrap();
    assert_eq!(loaded["a"].to_f32_vec().unwrap(), vec![1.0, -2.5, 3.25]);
    assert_eq!(loaded["b.weight"].to_bytes().unwrap(), b.to_bytes().unwrap());
    assert_eq!(loaded["c"].to_f32_vec().unwrap(), vec![7.0, 8.0]);
    // No temporary file is left beside it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn bad_safetensors_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;
    let good = dir.path().join("good.safetensors");
    let t = Tensor::from_f32(&[1.0; 64], &[8, 8], DType::F32, &dev).unwrap();
    safetensors::save(&good, &[("w", &t)]).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    let missing = safetensors::load(&dir.path().join("nope.safetensors"), &dev).unwrap_err();
    assert!(matches!(missing, Error::Io { .. }) && missing.to_string().contains("nope.safetensors"), "{missing}");

    let truncated = write(dir.path(), "trunc.safetensors", &bytes[..bytes.len() - 10]);
    let e = safetensors::load(&truncated, &dev).unwrap_err();
    assert!(matches!(e, Error::SafeTensors { .. }) && e.to_string().contains("trunc.safetensors"), "{e}");

    let mut corrupt = bytes.clone();
    corrupt[8] = b'X'; // the JSON header no longer parses
    let e = safetensors::load(&write(dir.path(), "corrupt.safetensors", &corrupt), &dev).unwrap_err();
    assert!(matches!(e, Error::SafeTensors { .. }), "{e}");

    let e = safetensors::load(&write(dir.path(), "tiny.safetensors", b"abc"), &dev).unwrap_err();
    assert!(matches!(e, Error::SafeTensors { .. }), "{e}");

    // A dtype the engine does not hold: the message names the tensor.
    let data = vec![0u8; 16];
    let view = ::safetensors::tensor::TensorView::new(::safetensors::Dtype::I32, vec![4], &data).unwrap();
    let ints = ::safetensors::serialize(vec![("counts", view)], None::<HashMap<String, String>>).unwrap();
    let e = safetensors::load(&write(dir.path(), "ints.safetensors", &ints), &dev).unwrap_err();
    assert!(e.to_string().contains("\"counts\"") && e.to_string().contains("I32"), "{e}");
}

#[test]
fn shapes_are_checked() {
    let dev = Device::Cpu;
    assert!(Tensor::from_bytes(&[0u8; 10], &[3], DType::F32, &dev).unwrap_err().to_string().contains("10 bytes"));
    assert!(Tensor::zeros(&[usize::MAX, 2], DType::F32, &dev).is_err());
    let t = Tensor::zeros(&[2, 3], DType::F32, &dev).unwrap();
    assert_eq!(t.reshape(&[3, 2]).unwrap().shape(), &[3, 2]);
    let t = Tensor::zeros(&[2, 3], DType::F32, &dev).unwrap();
    assert!(t.reshape(&[4]).is_err());
}
