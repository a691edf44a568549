//! What `tomodiff info` reports: version, how the kernels were built, the devices found (or why
//! there are none) and the kernel table.
use crate::device::{cuda_device_count, driver_version, CudaDevice};
use crate::kernels::{fatbin_entries, KERNELS, MODULES, NVCC_VERSION};
use std::fmt::Write;

/// How the kernels were built: which nvcc, and the targets read back from the embedded fatbins
/// (the same in every module, or each module's list when they differ).
pub fn build_line() -> String {
    let Some(nvcc) = NVCC_VERSION else {
        return "no nvcc at build time: CUDA sources embedded, compiled by NVRTC at run time (scripts/install-nvcc.sh, then rebuild, for machine code)".into();
    };
    let lists: Vec<String> = MODULES
        .iter()
        .map(|m| match m.fatbin.and_then(fatbin_entries) {
            Some(e) => e.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "),
            None => "unreadable fatbin".into(),
        })
        .collect();
    let targets = if lists.iter().all(|l| *l == lists[0]) {
        lists[0].clone()
    } else {
        MODULES.iter().zip(&lists).map(|(m, l)| format!("{}: {l}", m.name)).collect::<Vec<_>>().join("; ")
    };
    format!("fatbins with {targets}, from nvcc {nvcc}")
}

pub fn devices_report() -> String {
    let mut s = String::new();
    writeln!(s, "devices:").unwrap();
    writeln!(s, "  cpu: {} threads (Rust reference)", rayon::current_num_threads()).unwrap();
    writeln!(s, "  emu: CUDA kernels emulated on the CPU").unwrap();
    if let Ok((v, path)) = driver_version() {
        writeln!(s, "  CUDA driver: CUDA {v} ({path})").unwrap();
    }
    if MODULES.iter().any(|m| m.fatbin.is_none()) || std::env::var("TOMODIFF_JIT").is_ok_and(|v| v == "nvrtc") {
        match crate::device::nvrtc_version() {
            Ok(v) => writeln!(s, "  NVRTC {v}: compiles the embedded kernel sources").unwrap(),
            Err(e) => writeln!(s, "  NVRTC: unavailable ({e})").unwrap(),
        }
    }
    match cuda_device_count() {
        Err(e) => writeln!(s, "  cuda: none ({e})").unwrap(),
        Ok(0) => writeln!(s, "  cuda: none (the driver reports no devices)").unwrap(),
        Ok(n) => {
            for i in 0..n {
                match CudaDevice::open(i) {
                    Ok(d) => {
                        let inf = d.info();
                        writeln!(
                            s,
                            "  cuda:{i}: {}, {:.1} GiB, compute capability {}.{}, {} SMs, {} KiB shared memory per block (opt-in), {} registers per block",
                            inf.name,
                            inf.total_memory as f64 / (1u64 << 30) as f64,
                            inf.compute_capability.0,
                            inf.compute_capability.1,
                            inf.multiprocessors,
                            inf.max_shared_per_block_optin / 1024,
                            inf.max_registers_per_block
                        )
                        .unwrap();
                    }
                    Err(e) => writeln!(s, "  cuda:{i}: unusable ({e})").unwrap(),
                }
            }
        }
    }
    s
}

/// The kernel table; with `resources`, each module's ptxas report (registers, spills, shared).
pub fn kernels_report(resources: bool) -> String {
    let mut s = String::new();
    writeln!(s, "kernels ({}):", KERNELS.len()).unwrap();
    for k in KERNELS {
        let params: Vec<&str> = k.params.iter().map(|p| p.decl).collect();
        writeln!(s, "  {}.cu  {}({})", MODULES[k.module].name, k.name, params.join(", ")).unwrap();
    }
    if resources {
        for m in MODULES {
            writeln!(s, "ptxas {}.cu:", m.name).unwrap();
            if m.ptxas_report.is_empty() {
                writeln!(s, "  (no report: built without nvcc)").unwrap();
            }
            for line in m.ptxas_report.lines() {
                writeln!(s, "  {line}").unwrap();
            }
        }
    }
    s
}

pub fn report(resources: bool) -> String {
    format!(
        "tomodiff {}\nbuild: {}\n{}{}",
        env!("CARGO_PKG_VERSION"),
        build_line(),
        devices_report(),
        kernels_report(resources)
    )
}
