//! What build.rs embeds for the GPU: a fatbin per module with machine code for every listed
//! target (no JIT there) and PTX for newer GPUs, and for NVRTC each module's source with every
//! project header inlined. With a GPU, the NVRTC route is compiled and run too.
mod common;

use tomodiff::kernels::{fatbin_entries, FatbinEntry, MODULES, NVCC_VERSION, PTX_ARCH, SASS_ARCHS};

#[test]
fn fatbins_hold_sass_for_every_target_and_ptx() {
    if NVCC_VERSION.is_none() {
        assert!(MODULES.iter().all(|m| m.fatbin.is_none()));
        eprintln!("built without nvcc: no fatbins to check");
        return;
    }
    let arch = |s: &str| s.trim_start_matches(|c: char| !c.is_ascii_digit()).parse::<u32>().unwrap();
    for m in MODULES {
        let entries = fatbin_entries(m.fatbin.expect("nvcc builds embed a fatbin per module")).unwrap_or_else(|| panic!("{}: not a fatbin", m.name));
        for sass in SASS_ARCHS {
            assert!(entries.contains(&FatbinEntry { sass: true, arch: arch(sass) }), "{}: no {sass} SASS in {entries:?}", m.name);
        }
        assert!(entries.contains(&FatbinEntry { sass: false, arch: arch(PTX_ARCH) }), "{}: no {PTX_ARCH} PTX in {entries:?}", m.name);
    }
    assert_eq!(fatbin_entries(b"not a fatbin at all"), None);
    assert_eq!(fatbin_entries(&[0x50, 0xED, 0x55, 0xBA]), None, "a truncated header is refused, not read past");
}

#[test]
fn nvrtc_sources_have_every_project_header_inlined() {
    for m in MODULES {
        for line in m.source.lines() {
            assert!(!line.trim_start().starts_with("#include \""), "{}: project include left for NVRTC: {line}", m.name);
        }
        assert!(m.source.contains("#define KERNEL"), "{}: common.cuh is not inlined", m.name);
    }
    let gemm = MODULES.iter().find(|m| m.name == "conv3d").unwrap();
    assert!(gemm.source.contains("namespace gemm_cfg"), "conv3d: gemm_core.cuh is not inlined");
    assert_eq!(gemm.source.matches("#define KERNEL").count(), 1, "common.cuh inlined once, though included twice");
}

/// On a GPU: the kernels compiled by NVRTC from the embedded sources agree with the CPU.
#[test]
fn nvrtc_route_runs_on_a_gpu() {
    // This test binary is its own process: the choice applies to every module it loads.
    std::env::set_var("TOMODIFF_JIT", "nvrtc");
    let devs = common::kernel_devices("nvrtc_route_runs_on_a_gpu");
    for dev in devs.iter().filter(|d| matches!(d, tomodiff::Device::Cuda(_))) {
        let x: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
        let xt = tomodiff::Tensor::from_f32(&x, &[1000], tomodiff::DType::F32, dev).unwrap();
        let mut y = tomodiff::Tensor::full(&[1000], 1.0, tomodiff::DType::F32, dev).unwrap();
        tomodiff::ops::elementwise::axpy(2.0, &xt, &mut y).unwrap();
        let got = y.to_f32_vec().unwrap();
        let want: Vec<f32> = x.iter().map(|v| 2.0 * v + 1.0).collect();
        common::assert_close("axpy_f32 via NVRTC", &got, &want, |_| 0.0);
    }
}
