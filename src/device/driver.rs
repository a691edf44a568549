//! The CUDA driver API, loaded at run time with `libloading`: only the entry points tomodiff
//! calls, each resolved once and checked before any is used, so an absent, old or partial driver
//! is one error naming what is missing (never a panic, as eager bindings give).
//!
//! The library is `$TOMODIFF_LIBCUDA` when set (tests point it at a stub driver), else
//! libcuda.so.1 / libcuda.so from the loader's search path. The kernels are built by CUDA 13.0,
//! whose PTX and cubins need the CUDA 13.0 driver API (driver R580 or newer).
use crate::error::{Error, Result};
use libloading::Library;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::OnceLock;

pub(crate) type CUresult = c_int;
pub(crate) type CUdevice = c_int;
pub(crate) type CUdeviceptr = u64;
pub(crate) type Handle = *mut c_void;

/// The driver API version the kernels need (cuDriverGetVersion: 1000 major + 10 minor).
pub(crate) const NEEDED_VERSION: i32 = 13000;

pub(crate) const SUCCESS: CUresult = 0;
pub(crate) const ERROR_OUT_OF_MEMORY: CUresult = 2;
pub(crate) const ERROR_NO_DEVICE: CUresult = 100;

pub(crate) mod attr {
    // CUdevice_attribute
    pub const MAX_THREADS_PER_BLOCK: i32 = 1;
    pub const MAX_REGISTERS_PER_BLOCK: i32 = 12;
    pub const MULTIPROCESSOR_COUNT: i32 = 16;
    pub const COMPUTE_CAPABILITY_MAJOR: i32 = 75;
    pub const COMPUTE_CAPABILITY_MINOR: i32 = 76;
    pub const MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: i32 = 97;
    // CUfunction_attribute
    pub const FUNC_MAX_THREADS_PER_BLOCK: i32 = 0;
    pub const FUNC_SHARED_SIZE_BYTES: i32 = 1;
    pub const FUNC_NUM_REGS: i32 = 4;
    pub const FUNC_MAX_DYNAMIC_SHARED_SIZE_BYTES: i32 = 8;
}

/// CUstreamCaptureMode and CUstreamCaptureStatus.
pub(crate) const CAPTURE_MODE_RELAXED: c_int = 2;
pub(crate) const CAPTURE_STATUS_NONE: c_int = 0;
pub(crate) const STREAM_NON_BLOCKING: c_uint = 1;

/// Declares the table of entry points: a field per function, resolved from the first of its
/// symbol names that the library exports.
macro_rules! driver_api {
    ($($field:ident [$($sym:literal),+] fn($($arg:ty),*);)*) => {
        #[allow(non_snake_case)]
        pub(crate) struct Api {
            $(pub $field: unsafe extern "C" fn($($arg),*) -> CUresult,)*
        }

        impl Api {
            /// Every entry point, or the names of those the library lacks.
            #[allow(non_snake_case)]
            fn resolve(lib: &Library) -> std::result::Result<Api, Vec<&'static str>> {
                let mut missing = Vec::new();
                $(
                    let $field = [$($sym),+].iter().find_map(|s| {
                        let name = format!("{s}\0");
                        // SAFETY: the symbol is declared with its documented signature.
                        unsafe { lib.get::<unsafe extern "C" fn($($arg),*) -> CUresult>(name.as_bytes()) }.ok().map(|f| *f)
                    });
                    if $field.is_none() {
                        missing.push([$($sym),+][0]);
                    }
                )*
                if !missing.is_empty() {
                    return Err(missing);
                }
                Ok(Api { $($field: $field.unwrap(),)* })
            }
        }
    };
}

driver_api! {
    cuInit ["cuInit"] fn(c_uint);
    cuGetErrorName ["cuGetErrorName"] fn(CUresult, *mut *const c_char);
    cuGetErrorString ["cuGetErrorString"] fn(CUresult, *mut *const c_char);
    cuDeviceGetCount ["cuDeviceGetCount"] fn(*mut c_int);
    cuDeviceGet ["cuDeviceGet"] fn(*mut CUdevice, c_int);
    cuDeviceGetName ["cuDeviceGetName"] fn(*mut c_char, c_int, CUdevice);
    cuDeviceTotalMem ["cuDeviceTotalMem_v2"] fn(*mut usize, CUdevice);
    cuDeviceGetAttribute ["cuDeviceGetAttribute"] fn(*mut c_int, c_int, CUdevice);
    cuDevicePrimaryCtxRetain ["cuDevicePrimaryCtxRetain"] fn(*mut Handle, CUdevice);
    cuDevicePrimaryCtxRelease ["cuDevicePrimaryCtxRelease_v2"] fn(CUdevice);
    cuCtxSetCurrent ["cuCtxSetCurrent"] fn(Handle);
    cuStreamCreate ["cuStreamCreate"] fn(*mut Handle, c_uint);
    cuStreamDestroy ["cuStreamDestroy_v2"] fn(Handle);
    cuStreamSynchronize ["cuStreamSynchronize"] fn(Handle);
    cuStreamBeginCapture ["cuStreamBeginCapture_v2"] fn(Handle, c_int);
    cuStreamEndCapture ["cuStreamEndCapture"] fn(Handle, *mut Handle);
    cuStreamIsCapturing ["cuStreamIsCapturing"] fn(Handle, *mut c_int);
    cuGraphInstantiateWithFlags ["cuGraphInstantiateWithFlags"] fn(*mut Handle, Handle, u64);
    cuGraphLaunch ["cuGraphLaunch"] fn(Handle, Handle);
    cuGraphDestroy ["cuGraphDestroy"] fn(Handle);
    cuGraphExecDestroy ["cuGraphExecDestroy"] fn(Handle);
    cuMemAlloc ["cuMemAlloc_v2"] fn(*mut CUdeviceptr, usize);
    cuMemFree ["cuMemFree_v2"] fn(CUdeviceptr);
    cuMemGetInfo ["cuMemGetInfo_v2"] fn(*mut usize, *mut usize);
    cuMemsetD8Async ["cuMemsetD8Async"] fn(CUdeviceptr, u8, usize, Handle);
    cuMemcpyHtoDAsync ["cuMemcpyHtoDAsync_v2"] fn(CUdeviceptr, *const c_void, usize, Handle);
    cuMemcpyDtoHAsync ["cuMemcpyDtoHAsync_v2"] fn(*mut c_void, CUdeviceptr, usize, Handle);
    cuMemcpyDtoDAsync ["cuMemcpyDtoDAsync_v2"] fn(CUdeviceptr, CUdeviceptr, usize, Handle);
    cuModuleLoadData ["cuModuleLoadData"] fn(*mut Handle, *const c_void);
    cuModuleUnload ["cuModuleUnload"] fn(Handle);
    cuModuleGetFunction ["cuModuleGetFunction"] fn(*mut Handle, Handle, *const c_char);
    cuFuncGetAttribute ["cuFuncGetAttribute"] fn(*mut c_int, c_int, Handle);
    cuFuncSetAttribute ["cuFuncSetAttribute"] fn(Handle, c_int, c_int);
    cuLaunchKernel ["cuLaunchKernel"] fn(Handle, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, Handle, *mut *mut c_void, *mut *mut c_void);
    cuEventCreate ["cuEventCreate"] fn(*mut Handle, c_uint);
    cuEventRecord ["cuEventRecord"] fn(Handle, Handle);
    cuEventSynchronize ["cuEventSynchronize"] fn(Handle);
    // CUDA 13 headers name only the _v2; older drivers export only the first.
    cuEventElapsedTime ["cuEventElapsedTime_v2", "cuEventElapsedTime"] fn(*mut f32, Handle, Handle);
    cuEventDestroy ["cuEventDestroy_v2"] fn(Handle);
}

/// The loaded driver: its entry points, API version and where it was found.
pub(crate) struct Driver {
    pub api: Api,
    /// cuDriverGetVersion: 1000 major + 10 minor (13000 for CUDA 13.0).
    pub version: i32,
    pub path: String,
    _lib: Library,
}

/// The process's driver, loaded and initialised once, or why there is none.
pub(crate) fn driver() -> Result<&'static Driver> {
    static DRIVER: OnceLock<std::result::Result<Driver, String>> = OnceLock::new();
    DRIVER.get_or_init(load).as_ref().map_err(|why| Error::NoCuda(why.clone()))
}

/// Whether no driver library could be loaded at all (as opposed to one that is old or partial).
pub(crate) fn library_absent() -> bool {
    matches!(driver(), Err(Error::NoCuda(why)) if why.starts_with(NO_LIBRARY))
}

const NO_LIBRARY: &str = "no CUDA driver found";

/// "13.0" from 13000.
pub(crate) fn version_string(v: i32) -> String {
    format!("{}.{}", v / 1000, v % 1000 / 10)
}

fn load() -> std::result::Result<Driver, String> {
    if let Ok(path) = std::env::var("TOMODIFF_LIBCUDA") {
        // Named on purpose: failing to load it is not "no driver", and is said as such.
        // SAFETY: loading the driver runs its initialisers, which is what using it requires.
        return match unsafe { Library::new(&path) } {
            Ok(lib) => open(lib, path),
            Err(e) => Err(format!("TOMODIFF_LIBCUDA={path} could not be loaded: {e}")),
        };
    }
    let mut why = Vec::new();
    for path in ["libcuda.so.1", "libcuda.so"] {
        // SAFETY: as above.
        match unsafe { Library::new(path) } {
            Ok(lib) => return open(lib, path.to_string()),
            Err(e) => why.push(e.to_string()),
        }
    }
    Err(format!("{NO_LIBRARY} ({})", why.join("; ")))
}

fn open(lib: Library, path: String) -> std::result::Result<Driver, String> {
    // SAFETY: cuDriverGetVersion(int*) is the driver's documented signature.
    let get_version = unsafe { lib.get::<unsafe extern "C" fn(*mut c_int) -> CUresult>(b"cuDriverGetVersion\0") }
        .map_err(|_| format!("{path} is not a CUDA driver (it has no cuDriverGetVersion)"))?;
    let mut version = 0;
    // SAFETY: writes one int.
    let r = unsafe { get_version(&mut version) };
    if r != SUCCESS {
        return Err(format!("{path}: cuDriverGetVersion failed with code {r}"));
    }
    if version < NEEDED_VERSION {
        return Err(format!(
            "the CUDA driver ({path}) supports CUDA {}; tomodiff's kernels are built by CUDA 13.0 and need a driver for CUDA {} or newer (R580+)",
            version_string(version),
            version_string(NEEDED_VERSION)
        ));
    }
    let api = Api::resolve(&lib).map_err(|missing| {
        format!("the CUDA driver ({path}, CUDA {}) lacks {}", version_string(version), missing.join(", "))
    })?;
    let driver = Driver { api, version, path, _lib: lib };
    // SAFETY: flags must be 0.
    let r = unsafe { (driver.api.cuInit)(0) };
    if r != SUCCESS {
        let what = if r == ERROR_NO_DEVICE { "no CUDA device" } else { "the driver could not be initialised" };
        return Err(format!("{what} (cuInit: {})", driver.describe(r)));
    }
    Ok(driver)
}

impl Driver {
    /// The error's name and the driver's description of it: "CUDA_ERROR_X (text)".
    pub fn describe(&self, r: CUresult) -> String {
        let text = |f: unsafe extern "C" fn(CUresult, *mut *const c_char) -> CUresult| {
            let mut p: *const c_char = std::ptr::null();
            // SAFETY: the driver returns a pointer to a static string, or an error.
            let ok = unsafe { f(r, &mut p) } == SUCCESS && !p.is_null();
            // SAFETY: a NUL-terminated static string from the driver.
            ok.then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        };
        match (text(self.api.cuGetErrorName), text(self.api.cuGetErrorString)) {
            (Some(n), Some(s)) => format!("{n} ({s})"),
            (Some(n), None) => n,
            _ => format!("CUDA error code {r}"),
        }
    }

    /// Ok, or the error with what was being done.
    pub fn check(&self, r: CUresult, during: impl Into<String>) -> Result<()> {
        if r == SUCCESS {
            return Ok(());
        }
        Err(Error::Cuda { code: r, name: self.describe(r), during: during.into() })
    }
}
