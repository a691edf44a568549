//! Builds the kernels: every kernels/*.cu becomes
//! - a fatbin (nvcc): SASS for sm_80 and sm_90, plus compute_80 PTX that newer GPUs JIT-compile,
//!   embedded in the binary and loaded with cuModuleLoadData (no JIT on the listed targets);
//! - its source with every project header inlined, embedded for NVRTC (the fallback when the
//!   build had no nvcc, or on request with TOMODIFF_JIT=nvrtc);
//! - C++ compiled against the emulator (kernels/emu) into a static library;
//! - rows of the one kernel table (name, module, parameters), parsed from `KERNEL void name(...)`.
//!
//! The compiler is the pinned CUDA 13.0 one in .cache/cuda-13.0 (scripts/install-nvcc.sh) unless
//! NVCC names another on purpose: a newer nvcc writes PTX that the R580 driver cannot load.
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const PTX_ARCH: &str = "compute_80";
/// No kernel uses Hopper-only instructions (wgmma, TMA, setmaxnreg), so sm_90 needs no `a`.
const SASS_ARCHS: &[&str] = &["sm_80", "sm_90"];

struct Kernel {
    name: String,
    params: Vec<(String, String)>, // (kind, declaration)
}

struct Module {
    stem: String,
    path: PathBuf,
    kernels: Vec<Kernel>,
}

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let kdir = root.join("kernels");
    println!("cargo:rerun-if-changed=kernels");
    for v in ["NVCC", "TOMODIFF_NO_NVCC", "TOMODIFF_CUDA_CACHE"] {
        println!("cargo:rerun-if-env-changed={v}");
    }

    let modules = scan(&kdir);
    let nvcc = if env::var_os("TOMODIFF_NO_NVCC").is_some() { None } else { find_nvcc(&root) };
    let mut gen = String::new();
    let nvcc_version = match &nvcc {
        Some(nvcc) => {
            let v = run(Command::new(nvcc).arg("--version"), "nvcc --version");
            let v = v.lines().rfind(|l| l.contains("release")).unwrap_or("unknown").trim().to_string();
            format!("{v} ({})", nvcc.display())
        }
        None => {
            println!(
                "cargo:warning=tomodiff: no nvcc (NVCC unset, no pinned compiler in .cache/cuda-13.0): embedding CUDA sources for NVRTC at run time; run scripts/install-nvcc.sh for machine code"
            );
            String::new()
        }
    };
    writeln!(gen, "pub const NVCC_VERSION: Option<&str> = {};", opt_str(&nvcc_version)).unwrap();
    writeln!(gen, "pub const PTX_ARCH: &str = {PTX_ARCH:?};").unwrap();
    writeln!(gen, "pub const SASS_ARCHS: &[&str] = &{SASS_ARCHS:?};").unwrap();

    writeln!(gen, "pub static MODULES: &[ModuleSource] = &[").unwrap();
    for m in &modules {
        let flat = out.join(format!("{}.nvrtc.cu", m.stem));
        fs::write(&flat, flatten(&m.path, &kdir, &mut Vec::new())).unwrap();
        let (fatbin, report) = match &nvcc {
            Some(nvcc) => {
                let (fatbin, report) = compile_fatbin(nvcc, &kdir, &m.path, &out.join(format!("{}.fatbin", m.stem)));
                (format!("Some(include_bytes!({fatbin:?}))"), report)
            }
            None => ("None".to_string(), String::new()),
        };
        writeln!(
            gen,
            "    ModuleSource {{ name: {:?}, source: include_str!({flat:?}), fatbin: {fatbin}, ptxas_report: {report:?} }},",
            m.stem
        )
        .unwrap();
    }
    writeln!(gen, "];").unwrap();

    writeln!(gen, "pub static KERNELS: &[KernelInfo] = &[").unwrap();
    for (mi, m) in modules.iter().enumerate() {
        for k in &m.kernels {
            let params: Vec<String> = k
                .params
                .iter()
                .map(|(kind, decl)| format!("Param {{ kind: ParamKind::{kind}, decl: {decl:?} }}"))
                .collect();
            writeln!(gen, "    KernelInfo {{ name: {:?}, module: {mi}, params: &[{}] }},", k.name, params.join(", ")).unwrap();
        }
    }
    writeln!(gen, "];").unwrap();
    fs::write(out.join("kernels_gen.rs"), gen).unwrap();

    build_emulator(&kdir, &out, &modules);
}

fn opt_str(s: &str) -> String {
    if s.is_empty() { "None".into() } else { format!("Some({s:?})") }
}

fn scan(kdir: &Path) -> Vec<Module> {
    let mut paths: Vec<PathBuf> = fs::read_dir(kdir)
        .expect("kernels/ folder")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    paths.sort();
    let mut seen = std::collections::HashSet::new();
    paths
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path).unwrap();
            let kernels = parse_kernels(&text, &path);
            for k in &kernels {
                assert!(seen.insert(k.name.clone()), "kernel {} is defined twice", k.name);
            }
            Module { stem: path.file_stem().unwrap().to_string_lossy().into_owned(), path, kernels }
        })
        .collect()
}

/// Finds `KERNEL name(params)` at the start of a line; the parameter list may span lines.
fn parse_kernels(text: &str, path: &Path) -> Vec<Kernel> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find("\nKERNEL ") {
        rest = &rest[pos + "\nKERNEL ".len()..];
        let open = rest.find('(').expect("KERNEL without (");
        let close = rest.find(')').expect("KERNEL without )");
        let name = rest[..open].trim().to_string();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{}: bad kernel name {name:?}",
            path.display()
        );
        let params = rest[open + 1..close]
            .split(',')
            .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|p| !p.is_empty())
            .map(|decl| (param_kind(&decl, &name, path), decl))
            .collect();
        out.push(Kernel { name, params });
    }
    out
}

fn param_kind(decl: &str, kernel: &str, path: &Path) -> String {
    if decl.contains('*') {
        return "Ptr".into();
    }
    let ty: Vec<&str> = decl.split_whitespace().collect();
    let ty = ty[..ty.len() - 1].join(" ");
    match ty.trim_start_matches("const ") {
        "int" | "int32_t" => "I32",
        "unsigned" | "unsigned int" | "uint32_t" => "U32",
        "long long" | "int64_t" => "I64",
        "float" => "F32",
        other => panic!("{}: kernel {kernel}: parameter type {other:?} is not one the launcher passes", path.display()),
    }
    .into()
}

/// NVCC when set (on purpose), else the pinned compiler; nvcc on PATH is not used, since its
/// version is unknown.
fn find_nvcc(root: &Path) -> Option<PathBuf> {
    if let Some(p) = env::var_os("NVCC") {
        return Some(PathBuf::from(p));
    }
    let cache = env::var_os("TOMODIFF_CUDA_CACHE").map(PathBuf::from).unwrap_or_else(|| root.join(".cache/cuda-13.0"));
    let c = cache.join("nvidia/cu13/bin/nvcc");
    c.is_file().then_some(c)
}

/// The source with every project header (`#include "..."`, found beside the including file or
/// in kernels/) inlined once, as NVRTC cannot see the kernels/ folder.
fn flatten(path: &Path, kdir: &Path, seen: &mut Vec<PathBuf>) -> String {
    let canon = path.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if seen.contains(&canon) {
        return String::new();
    }
    seen.push(canon);
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = String::new();
    for line in text.lines() {
        let inc = line.trim_start().strip_prefix("#include \"").and_then(|r| r.split('"').next());
        match inc {
            Some(name) => {
                let beside = path.parent().unwrap().join(name);
                let target = if beside.is_file() { beside } else { kdir.join(name) };
                writeln!(out, "// begin {name}").unwrap();
                out.push_str(&flatten(&target, kdir, seen));
                writeln!(out, "// end {name}").unwrap();
            }
            None if line.trim() == "#pragma once" => {}
            None => writeln!(out, "{line}").unwrap(),
        }
    }
    out
}

fn run(cmd: &mut Command, what: &str) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    if !o.status.success() {
        panic!("{what} failed:\n{text}");
    }
    text
}

fn cuda_includes(nvcc: &Path) -> Vec<PathBuf> {
    // The wheel layout (and CUDA 13 toolkits) keep CCCL, which cuda_fp16.h needs, in include/cccl.
    let inc = nvcc.parent().and_then(|b| b.parent()).map(|r| r.join("include"));
    inc.into_iter().flat_map(|i| [i.join("cccl"), i]).filter(|p| p.is_dir()).collect()
}

/// nvcc to a fatbin (SASS per target, PTX for the oldest); ptxas's resource report, one line
/// per target and entry point, goes into `tomodiff info --kernels`. An error fails the build.
fn compile_fatbin(nvcc: &Path, kdir: &Path, src: &Path, fatbin: &Path) -> (PathBuf, String) {
    let mut cmd = Command::new(nvcc);
    cmd.arg("-fatbin");
    for sass in SASS_ARCHS {
        cmd.arg("-gencode").arg(format!("arch=compute_{0},code={sass}", &sass[3..]));
    }
    cmd.arg("-gencode").arg(format!("arch={PTX_ARCH},code={PTX_ARCH}"));
    cmd.args(["-std=c++17", "-O3", "-lineinfo", "-Xptxas", "-v", "-I"]).arg(kdir);
    for i in cuda_includes(nvcc) {
        cmd.arg("-I").arg(i);
    }
    cmd.arg("-o").arg(fatbin).arg(src);
    let text = run(&mut cmd, &format!("nvcc {}", src.display()));
    let mut report = String::new();
    let (mut func, mut arch) = (String::new(), String::new());
    for line in text.lines() {
        if let Some(i) = line.find("Compiling entry function '") {
            let mut parts = line[i + 26..].split('\'');
            func = parts.next().unwrap_or("").to_string();
            arch = parts.nth(1).unwrap_or("").to_string();
        } else if line.contains("Used ") || line.contains("spill") {
            let info = line.trim_start_matches("ptxas info    :").trim();
            writeln!(report, "{arch} {func}: {info}").unwrap();
        }
    }
    (fatbin.to_path_buf(), report)
}

fn build_emulator(kdir: &Path, out: &Path, modules: &[Module]) {
    let mut table = String::from("#include \"common.cuh\"\n");
    for m in modules {
        for k in &m.kernels {
            let decls: Vec<&str> = k.params.iter().map(|(_, d)| d.as_str()).collect();
            writeln!(table, "KERNEL {}({});", k.name, decls.join(", ")).unwrap();
        }
    }
    table.push_str("namespace {\n");
    let mut entries = Vec::new();
    for m in modules {
        for k in &m.kernels {
            writeln!(table, "void t_{0}(void** a) {{ emu::invoke({0}, a); }}", k.name).unwrap();
            entries.push(format!("t_{}", k.name));
        }
    }
    table.push_str("}\n");
    writeln!(table, "extern \"C\" const emu::Trampoline tomodiff_emu_kernels[] = {{ {} }};", entries.join(", ")).unwrap();
    writeln!(table, "extern \"C\" const unsigned tomodiff_emu_kernel_count = {};", entries.len()).unwrap();
    let table_path = out.join("emu_table.cpp");
    fs::write(&table_path, table).unwrap();

    let mut b = cc::Build::new();
    b.cpp(true)
        .std("c++17")
        .opt_level(2)
        .define("TOMODIFF_EMU", None)
        .include(kdir)
        .flag_if_supported("-Wno-unknown-pragmas")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-fno-strict-aliasing")
        .warnings(false);
    b.file(kdir.join("emu/emu.cpp")).file(&table_path);
    // Each .cu is compiled as C++ through a one-line wrapper, since compilers pick the language
    // from the file name.
    for m in modules {
        let w = out.join(format!("emu_{}.cpp", m.stem));
        fs::write(&w, format!("#include {:?}\n", m.path)).unwrap();
        b.file(w);
    }
    b.compile("tomodiff_emu");
}
