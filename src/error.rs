//! The library's error type. Every variant names what went wrong in terms a user can act on; the
//! CLI prints it as one line.
use std::path::PathBuf;

/// The crate's error: what every fallible function returns (through [`Result`]). Its `Display`
/// is one line, with the cause inline rather than as a `source`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A device name `Device::parse` does not accept (the string given), e.g. `--device gpu`.
    #[error("unknown device {0:?}: expected cpu, emu, cuda, cuda:N or auto")]
    BadDevice(String),
    /// CUDA cannot be used, and why: no driver library, a driver older than CUDA 13.0 or lacking
    /// entry points, cuInit failing, no device or no such ordinal, a GPU below sm_80, or no
    /// usable NVRTC library. From `Device::cuda`, `CudaDevice::open`, `cuda_device_count`.
    #[error("CUDA is not available: {0}")]
    NoCuda(String),
    /// A driver call failed: its code, the driver's name and description of it, and what was
    /// being done.
    #[error("CUDA error {name} in {during}")]
    Cuda {
        /// The driver's `CUresult` code (e.g. 2, CUDA_ERROR_OUT_OF_MEMORY).
        code: i32,
        /// The code's name and the driver's description: "CUDA_ERROR_X (text)".
        name: String,
        /// The call or task that failed, with the last kernel queued when a fault surfaced later.
        during: String,
    },
    /// A kernel launch refused before it ran, or failed in the emulator: arguments that do not
    /// match the kernel's parameters, grid, block or shared memory out of range or over the
    /// device's limits, a buffer on another device, a launch on the cpu, a barrier deadlock on
    /// emu; also a module NVRTC could not compile. Driver failures are `Cuda`.
    #[error("kernel {kernel}: {msg}")]
    Launch {
        /// The kernel's name (`module NAME` when the module could not be compiled).
        kernel: String,
        /// What was wrong.
        msg: String,
    },
    /// A kernel name not in the kernel table (`crate::kernels`): from `Launch::new`, or an
    /// emulator built without that kernel.
    #[error("unknown kernel {0:?}")]
    UnknownKernel(String),
    /// Tensors of one operation on different devices, or a device-side object asked of the cpu.
    #[error("device mismatch: {0}")]
    DeviceMismatch(String),
    /// A value the caller chose (an option, a name, a number) that is not allowed; the message
    /// names it and what is accepted.
    #[error("{0}")]
    Argument(String),
    /// Shapes or sizes that do not fit: an op's operands of the wrong rank or extents, a reshape
    /// to another element count, bytes that do not match shape × dtype size, a shape whose byte
    /// size overflows, a buffer copy between different lengths or devices.
    #[error("shape error: {0}")]
    Shape(String),
    /// An element type an operation does not accept (e.g. bf16 where an op needs f32, or
    /// non-f32 data on the cpu path), or a name `DType::parse` does not know.
    #[error("dtype error: {0}")]
    DType(String),
    /// The cause is in the message, not a `source`, so `{:#}` does not print it twice.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file or folder being read or written.
        path: PathBuf,
        /// The operating system's error.
        cause: std::io::Error,
    },
    /// A safetensors file or image that cannot be parsed or holds a dtype other than f32, bf16
    /// or f16, a tensor that cannot be serialised on save, or a training checkpoint holding an
    /// unexpected tensor (`tensor::safetensors`).
    #[error("{}: not a valid safetensors file: {msg}", path.display())]
    SafeTensors {
        /// The file (for an image in memory, the name the caller gave it).
        path: PathBuf,
        /// What is wrong, naming the tensor where one is at fault.
        msg: String,
    },
    /// A model or training configuration that is invalid or inconsistent (config.json, a preset,
    /// checkpoint.json, optimiser state that does not fit the network, no config beside the
    /// weights); also a training loss that became non-finite and a failed memory dry run.
    #[error("model config: {0}")]
    Config(String),
    /// A weights file that does not fit the model config: a tensor missing, extra, of another
    /// shape or holding a non-finite value, or conversion metadata that disagrees with the config.
    #[error("weights {}: {msg}", path.display())]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What does not fit, naming the tensor or setting.
        msg: String,
    },
    /// A scan geometry that is invalid: a field of the geometry JSON missing or out of range (the
    /// message names it), no ray crossing the volume, or FBP/FDK given a non-circular scan or
    /// views without an angular range.
    #[error("geometry: {0}")]
    Geometry(String),
    /// An allocation the device refused: cuMemAlloc out of memory even after the pool released
    /// its cached blocks, host memory (cpu, emu) that could not be mapped, or an emulator launch
    /// that could not map its threads' stacks (256 KiB each).
    #[error("out of memory on {device}: {bytes} bytes requested")]
    OutOfMemory {
        /// The device's name (`cpu`, `emu`, `cuda:N`).
        device: String,
        /// The bytes requested (on cuda, the request rounded up to its pool size class).
        bytes: usize,
    },
    /// A reconstruction's estimated memory over the caller's budget (`Device::memory_budget` by
    /// default), found before any work.
    #[error("the reconstruction needs about {:.2} GiB on {device}, the budget is {:.2} GiB: lower the batch or raise the memory budget", *need as f64 / GIB, *budget as f64 / GIB)]
    MemoryBudget {
        /// The device's name.
        device: String,
        /// The estimated bytes the reconstruction needs.
        need: usize,
        /// The budget, in bytes.
        budget: usize,
    },
    /// The progress callback asked to stop.
    #[error("cancelled by the progress callback")]
    Cancelled,
    /// Work a graph capture cannot hold, or a capture misused: host transfers or waits while
    /// capturing, work from another thread during a capture, a buffer made in the capture that
    /// outlives it, nested or unmatched captures, a capture on the cpu, a replay while capturing.
    #[error("graph capture: {0}")]
    Capture(String),
}

const GIB: f64 = (1u64 << 30) as f64;

/// The crate's result type, with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), cause: source }
    }
}
