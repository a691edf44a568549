//! NVRTC, loaded at run time like the driver: the fallback that compiles the embedded kernel
//! sources when the build had no nvcc (or when TOMODIFF_JIT=nvrtc asks for it). A missing or
//! unusable libnvrtc is an error naming the library, never a panic.
//!
//! The library is `$TOMODIFF_LIBNVRTC` when set, else libnvrtc.so.13 / libnvrtc.so.12 /
//! libnvrtc.so from the loader's search path. CUDA headers (cuda_bf16.h ...) come from
//! $CUDA_HOME, $CUDA_PATH or /usr/local/cuda, as NVRTC itself does not ship them all.
use crate::error::{Error, Result};
use libloading::Library;
use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::OnceLock;

type NvrtcResult = c_int;
type Program = *mut std::ffi::c_void;

#[allow(non_snake_case)]
struct Nvrtc {
    nvrtcVersion: unsafe extern "C" fn(*mut c_int, *mut c_int) -> NvrtcResult,
    nvrtcGetErrorString: unsafe extern "C" fn(NvrtcResult) -> *const c_char,
    nvrtcCreateProgram:
        unsafe extern "C" fn(*mut Program, *const c_char, *const c_char, c_int, *const *const c_char, *const *const c_char) -> NvrtcResult,
    nvrtcCompileProgram: unsafe extern "C" fn(Program, c_int, *const *const c_char) -> NvrtcResult,
    nvrtcGetCUBINSize: unsafe extern "C" fn(Program, *mut usize) -> NvrtcResult,
    nvrtcGetCUBIN: unsafe extern "C" fn(Program, *mut c_char) -> NvrtcResult,
    nvrtcGetProgramLogSize: unsafe extern "C" fn(Program, *mut usize) -> NvrtcResult,
    nvrtcGetProgramLog: unsafe extern "C" fn(Program, *mut c_char) -> NvrtcResult,
    nvrtcDestroyProgram: unsafe extern "C" fn(*mut Program) -> NvrtcResult,
    _lib: Library,
}

fn nvrtc() -> Result<&'static Nvrtc> {
    static LIB: OnceLock<std::result::Result<Nvrtc, String>> = OnceLock::new();
    LIB.get_or_init(load).as_ref().map_err(|why| Error::NoCuda(why.clone()))
}

fn load() -> std::result::Result<Nvrtc, String> {
    let candidates = match std::env::var("TOMODIFF_LIBNVRTC") {
        Ok(p) => vec![p],
        Err(_) => ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"].map(String::from).to_vec(),
    };
    let mut why = String::new();
    for path in &candidates {
        // SAFETY: loading runs the library's initialisers, which using it requires.
        let lib = match unsafe { Library::new(path) } {
            Ok(l) => l,
            Err(e) => {
                why = e.to_string();
                continue;
            }
        };
        macro_rules! sym {
            ($name:ident) => {
                // SAFETY: the field's type is the function's documented signature.
                *unsafe { lib.get(concat!(stringify!($name), "\0").as_bytes()) }
                    .map_err(|_| format!("{path} lacks {} (NVRTC 12.0 or newer is needed)", stringify!($name)))?
            };
        }
        return Ok(Nvrtc {
            nvrtcVersion: sym!(nvrtcVersion),
            nvrtcGetErrorString: sym!(nvrtcGetErrorString),
            nvrtcCreateProgram: sym!(nvrtcCreateProgram),
            nvrtcCompileProgram: sym!(nvrtcCompileProgram),
            nvrtcGetCUBINSize: sym!(nvrtcGetCUBINSize),
            nvrtcGetCUBIN: sym!(nvrtcGetCUBIN),
            nvrtcGetProgramLogSize: sym!(nvrtcGetProgramLogSize),
            nvrtcGetProgramLog: sym!(nvrtcGetProgramLog),
            nvrtcDestroyProgram: sym!(nvrtcDestroyProgram),
            _lib: lib,
        });
    }
    Err(format!(
        "this build embeds CUDA sources for NVRTC, but no NVRTC library was found ({}: {why}); install the CUDA toolkit's libnvrtc, or build with scripts/install-nvcc.sh for machine code",
        candidates.join(", ")
    ))
}

/// NVRTC's version as "major.minor", or why it is unusable.
pub fn version() -> Result<String> {
    let n = nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: writes two ints.
    unsafe { (n.nvrtcVersion)(&mut major, &mut minor) };
    Ok(format!("{major}.{minor}"))
}

/// Compiles `source` (a module named `name`, every project header inlined) to a cubin for
/// compute capability `major.minor`.
pub(crate) fn compile(name: &str, source: &str, cc: (i32, i32)) -> Result<Vec<u8>> {
    let n = nvrtc().map_err(|e| Error::Launch { kernel: format!("module {name}"), msg: e.to_string() })?;
    let fail = |msg: String| Error::Launch { kernel: format!("module {name}"), msg };
    // SAFETY: nvrtcGetErrorString returns a static string for any code.
    let text = |r: NvrtcResult| unsafe { CStr::from_ptr((n.nvrtcGetErrorString)(r)) }.to_string_lossy().into_owned();
    let src = CString::new(source).map_err(|_| fail("the source holds a NUL".into()))?;
    let file = CString::new(format!("{name}.cu")).unwrap();
    let mut opts = vec![format!("--gpu-architecture=sm_{}{}", cc.0, cc.1), "-std=c++17".into(), "-default-device".into()];
    for root in [std::env::var("CUDA_HOME").ok(), std::env::var("CUDA_PATH").ok(), Some("/usr/local/cuda".into())].into_iter().flatten() {
        for sub in ["include", "include/cccl"] {
            let p = std::path::Path::new(&root).join(sub);
            if p.is_dir() {
                opts.push(format!("-I{}", p.display()));
            }
        }
    }
    let opts: Vec<CString> = opts.into_iter().map(|o| CString::new(o).unwrap()).collect();
    let opt_ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
    let mut prog: Program = std::ptr::null_mut();
    // SAFETY: valid NUL-terminated strings; no headers passed.
    let r = unsafe { (n.nvrtcCreateProgram)(&mut prog, src.as_ptr(), file.as_ptr(), 0, std::ptr::null(), std::ptr::null()) };
    if r != 0 {
        return Err(fail(format!("nvrtcCreateProgram: {}", text(r))));
    }
    // SAFETY: prog is live until destroyed below; options outlive the call.
    let compiled = unsafe { (n.nvrtcCompileProgram)(prog, opt_ptrs.len() as c_int, opt_ptrs.as_ptr()) };
    let result = if compiled != 0 {
        Err(fail(format!("NVRTC could not compile it ({}):\n{}", text(compiled), log(n, prog))))
    } else {
        let mut size = 0usize;
        // SAFETY: size then bytes of the compiled program's cubin.
        unsafe { (n.nvrtcGetCUBINSize)(prog, &mut size) };
        let mut cubin = vec![0u8; size];
        match unsafe { (n.nvrtcGetCUBIN)(prog, cubin.as_mut_ptr() as *mut c_char) } {
            0 => Ok(cubin),
            r => Err(fail(format!("nvrtcGetCUBIN: {}", text(r)))),
        }
    };
    // SAFETY: destroyed once.
    unsafe { (n.nvrtcDestroyProgram)(&mut prog) };
    result
}

fn log(n: &Nvrtc, prog: Program) -> String {
    let mut size = 0usize;
    // SAFETY: size then text of the program's log.
    unsafe { (n.nvrtcGetProgramLogSize)(prog, &mut size) };
    let mut buf = vec![0u8; size.max(1)];
    unsafe { (n.nvrtcGetProgramLog)(prog, buf.as_mut_ptr() as *mut c_char) };
    String::from_utf8_lossy(&buf).trim_end_matches('\0').to_string()
}
