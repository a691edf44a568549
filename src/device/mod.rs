//! Devices: `cpu` (Rust reference code), `emu` (the CUDA kernels run by the CPU emulator) and
//! `cuda` (the same kernels on a GPU). Emu and CUDA share memory handling through [`Buffer`] and
//! launches through [`Launch`].
mod buffer;
mod cuda;
mod driver;
mod emu;
mod graph;
mod host;
mod launch;
mod nvrtc;
mod pool;

pub use cuda::{cuda_device_count, driver_version, CudaDevice, DeviceInfo, MIN_COMPUTE_CAPABILITY};
pub use nvrtc::version as nvrtc_version;
pub use pool::MemoryStats;
// Internal: device memory, kernel launches, CUDA graphs and timers, used by `ops`, the tests and
// the benchmarks; no stability promised.
#[doc(hidden)]
pub use buffer::Buffer;
#[doc(hidden)]
pub use cuda::GpuTimer;
#[doc(hidden)]
pub use graph::Graph;
#[doc(hidden)]
pub use launch::{Launch, MAX_SHARED_BYTES, MAX_THREADS};

use crate::error::{Error, Result};
use std::sync::{Arc, Mutex, Weak};

#[derive(Clone)]
/// Where tensors live and operations run (docs/ARCHITECTURE.md): `Cpu` runs the Rust references
/// and fast paths, `Emu` the CUDA kernels through the emulator, `Cuda` a GPU. `parse` takes
/// "cpu", "emu", "cuda", "cuda:N" or "auto"; `auto()` picks a GPU when one works, else the CPU.
pub enum Device {
    /// The Rust reference code on the host; tensors in host memory.
    Cpu,
    /// The CUDA kernels compiled for the host and run by the emulator; tensors in host memory.
    Emu,
    /// A GPU through the CUDA driver API; tensors in its memory.
    Cuda(Arc<CudaDevice>),
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl Device {
    /// `cpu`, `emu`, `cuda` (ordinal 0), `cuda:N`, or `auto` (CUDA when a driver and a device
    /// exist, else the CPU).
    pub fn parse(s: &str) -> Result<Device> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "emu" => Ok(Device::Emu),
            "auto" => Ok(Device::auto()),
            "cuda" => Device::cuda(0),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Device::cuda(n),
                _ => Err(Error::BadDevice(s.to_string())),
            },
        }
    }

    /// The GPU `cuda:ordinal`, opened by [`CudaDevice::open`]: `Error::NoCuda` when there is no
    /// usable driver or device, or the GPU is below sm_80; `Error::Cuda` when a driver call fails.
    /// While a handle to the GPU lives, every call returns that one: tensors from two calls then
    /// share one stream and memory pool, so their work stays ordered (two handles to one GPU
    /// would pass the same-device checks with nothing ordering their streams).
    pub fn cuda(ordinal: usize) -> Result<Device> {
        static OPEN: Mutex<Vec<(usize, Weak<CudaDevice>)>> = Mutex::new(Vec::new());
        let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = open.iter().find(|(o, _)| *o == ordinal).and_then(|(_, w)| w.upgrade()) {
            return Ok(Device::Cuda(d));
        }
        let d = CudaDevice::open(ordinal)?;
        open.retain(|(o, w)| *o != ordinal && w.strong_count() > 0);
        open.push((ordinal, Arc::downgrade(&d)));
        Ok(Device::Cuda(d))
    }

    /// cuda:0 when it can be used, else the CPU.
    pub fn auto() -> Device {
        Device::auto_explained().0
    }

    /// What `auto` chooses, and why not CUDA when it falls back to the CPU: None when there is
    /// no CUDA driver at all (nothing to explain on a machine without a GPU), else the cause (an
    /// old or partial driver, no device, a GPU older than sm_80).
    pub fn auto_explained() -> (Device, Option<String>) {
        match Device::cuda(0) {
            Ok(d) => (d, None),
            Err(_) if driver::library_absent() => (Device::Cpu, None),
            Err(e) => (Device::Cpu, Some(e.to_string())),
        }
    }

    /// The name as `parse` takes it: `cpu`, `emu` or `cuda:N`.
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu".into(),
            Device::Emu => "emu".into(),
            Device::Cuda(d) => format!("cuda:{}", d.ordinal()),
        }
    }

    /// Whether this device runs the kernels of kernels/ (emu, cuda) rather than the CPU reference.
    pub fn runs_kernels(&self) -> bool {
        !matches!(self, Device::Cpu)
    }

    /// Memory of `bytes` bytes on this device, not initialised: on cuda it holds whatever it
    /// held; emu fills it with 0xFF bytes (a NaN in every float), so that a kernel that reads
    /// before it writes fails its tests; the cpu's is zeroed (Rust code may not read uninitialised
    /// memory).
    pub fn alloc(&self, bytes: usize) -> Result<Buffer> {
        match self {
            Device::Cpu => Buffer::host(self.clone(), bytes),
            Device::Emu => Buffer::emu(bytes),
            Device::Cuda(d) => Buffer::cuda(d.clone(), bytes),
        }
    }

    /// Zeroed memory of `bytes` bytes on this device (a fill queued on the device's stream).
    pub fn alloc_zeroed(&self, bytes: usize) -> Result<Buffer> {
        let mut b = self.alloc(bytes)?;
        b.zero()?;
        Ok(b)
    }

    /// A copy of `data` on this device.
    pub fn upload(&self, data: &[u8]) -> Result<Buffer> {
        let mut b = self.alloc(data.len())?;
        b.write(data)?;
        Ok(b)
    }

    /// The bytes a job may plan to hold here when the caller sets no budget: 90% of the GPU's free
    /// memory on cuda; on the cpu and emu 90% of the host's available memory (Linux MemAvailable,
    /// within the cgroup's limit), unlimited where that cannot be read.
    pub fn memory_budget(&self) -> Result<usize> {
        Ok(match self {
            Device::Cuda(d) => d.free_memory()? / 10 * 9,
            _ => host_available().map_or(usize::MAX / 2, |a| a / 10 * 9),
        })
    }

    /// The memory pool's figures (emu: this thread's pool), None on the cpu.
    pub fn memory_stats(&self) -> Option<MemoryStats> {
        match self {
            Device::Cpu => None,
            Device::Emu => Some(emu::memory_stats()),
            Device::Cuda(d) => Some(d.memory_stats()),
        }
    }

    /// Starts a new peak of `memory_stats`.
    pub fn reset_peak_memory(&self) {
        match self {
            Device::Cpu => {}
            Device::Emu => emu::reset_peak(),
            Device::Cuda(d) => d.reset_peak(),
        }
    }

    /// Waits for all work queued on the device.
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Device::Cuda(d) => d.synchronize(),
            _ => Ok(()),
        }
    }
}

/// The host memory available to new work (Linux: /proc/meminfo's MemAvailable, capped by the
/// cgroup's limit when one is set), None where it cannot be read.
fn host_available() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    let read = |f: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{f}")).ok();
    let cgroup = read("memory.max").and_then(|s| s.trim().parse::<usize>().ok());
    // The cgroup's usage counts page cache the kernel can drop (inactive files), as MemAvailable does not.
    let cache = read("memory.stat")
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("inactive_file ").and_then(|v| v.trim().parse::<usize>().ok())))
        .unwrap_or(0);
    let used = read("memory.current").and_then(|s| s.trim().parse::<usize>().ok()).map(|u| u.saturating_sub(cache));
    let limit = match (cgroup, used) {
        (Some(max), Some(used)) => max.saturating_sub(used),
        _ => usize::MAX,
    };
    Some((kib * 1024).min(limit))
}
