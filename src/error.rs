//! The library's error type. Every variant names what went wrong in terms a user can act on; the
//! CLI prints it as one line.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown device {0:?}: expected cpu, emu, cuda, cuda:N or auto")]
    BadDevice(String),
    #[error("CUDA is not available: {0}")]
    NoCuda(String),
    /// A driver call failed: its code, the driver's name and description of it, and what was
    /// being done.
    #[error("CUDA error {name} in {during}")]
    Cuda { code: i32, name: String, during: String },
    #[error("kernel {kernel}: {msg}")]
    Launch { kernel: String, msg: String },
    #[error("unknown kernel {0:?}")]
    UnknownKernel(String),
    /// Tensors of one operation on different devices, or a device-side object asked of the cpu.
    #[error("device mismatch: {0}")]
    DeviceMismatch(String),
    /// A value the caller chose (an option, a name, a number) that is not allowed; the message
    /// names it and what is accepted.
    #[error("{0}")]
    Argument(String),
    #[error("shape error: {0}")]
    Shape(String),
    #[error("dtype error: {0}")]
    DType(String),
    /// The cause is in the message, not a `source`, so `{:#}` does not print it twice.
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: std::io::Error },
    #[error("{}: not a valid safetensors file: {msg}", path.display())]
    SafeTensors { path: PathBuf, msg: String },
    #[error("model config: {0}")]
    Config(String),
    #[error("weights {}: {msg}", path.display())]
    Weights { path: PathBuf, msg: String },
    #[error("geometry: {0}")]
    Geometry(String),
    #[error("out of memory on {device}: {bytes} bytes requested")]
    OutOfMemory { device: String, bytes: usize },
    /// A reconstruction's estimated memory over the caller's budget (`Device::memory_budget` by
    /// default), found before any work.
    #[error("the reconstruction needs about {:.2} GiB on {device}, the budget is {:.2} GiB: lower the batch or raise the memory budget", *need as f64 / GIB, *budget as f64 / GIB)]
    MemoryBudget { device: String, need: usize, budget: usize },
    /// The progress callback asked to stop.
    #[error("cancelled by the progress callback")]
    Cancelled,
    #[error("graph capture: {0}")]
    Capture(String),
}

const GIB: f64 = (1u64 << 30) as f64;

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), cause: source }
    }
}
