//! What `tomodiff info` reports: version, how the kernels were built, the devices found (or why
//! there are none) and the kernel table.
use crate::device::{cuda_device_count, CudaDevice};
use crate::kernels::{KERNELS, MODULES, NVCC_VERSION, PTX_ARCH, SASS_ARCHS};
use std::fmt::Write;

pub fn build_line() -> String {
    match NVCC_VERSION {
        Some(v) => format!("PTX {PTX_ARCH} from nvcc ({v}), checked by ptxas for {}", SASS_ARCHS.join(", ")),
        None => "no nvcc at build time: CUDA sources embedded, compiled by NVRTC at run time".into(),
    }
}

pub fn devices_report() -> String {
    let mut s = String::new();
    writeln!(s, "devices:").unwrap();
    writeln!(s, "  cpu: {} threads (Rust reference)", rayon::current_num_threads()).unwrap();
    writeln!(s, "  emu: CUDA kernels emulated on the CPU").unwrap();
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
                            "  cuda:{i}: {}, {:.1} GiB, compute capability {}.{}, {} SMs",
                            inf.name,
                            inf.total_memory as f64 / (1u64 << 30) as f64,
                            inf.compute_capability.0,
                            inf.compute_capability.1,
                            inf.multiprocessors
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
