//! Untyped device memory. Tensors hold one; launches take their addresses. On emu and cuda the
//! memory comes from the device's caching pool and goes back to it on drop.
use super::cuda::{CudaDevice, CudaMem};
use super::host::HostMem;
use super::{emu, Device};
use crate::error::{Error, Result};
use std::sync::Arc;

/// Untyped memory of `len()` bytes on one device: a block of that device's caching pool
/// (process-wide on cpu, per thread on emu, the GPU's on cuda), given back to it on drop.
#[doc(hidden)]
pub struct Buffer {
    device: Device,
    len: usize,
    mem: Mem,
}

enum Mem {
    /// A block of the cpu device's pool and its size class.
    Host(HostMem, usize),
    /// A pool block of the emulated device and its size class.
    Emu(HostMem, usize),
    Cuda(CudaMem),
}

impl Drop for Buffer {
    fn drop(&mut self) {
        match &mut self.mem {
            Mem::Emu(m, class) => emu::free(*class, std::mem::replace(m, HostMem::empty())),
            Mem::Host(m, class) => super::host::cpu_free(*class, std::mem::replace(m, HostMem::empty())),
            Mem::Cuda(_) => {}
        }
    }
}

impl Buffer {
    pub(super) fn host(device: Device, bytes: usize) -> Result<Buffer> {
        let (mem, class) = super::host::cpu_alloc(bytes).ok_or_else(|| Error::OutOfMemory { device: device.name(), bytes })?;
        Ok(Buffer { device, len: bytes, mem: Mem::Host(mem, class) })
    }

    pub(super) fn emu(bytes: usize) -> Result<Buffer> {
        let (mem, class) = emu::alloc(bytes)?;
        Ok(Buffer { device: Device::Emu, len: bytes, mem: Mem::Emu(mem, class) })
    }

    pub(super) fn cuda(dev: Arc<CudaDevice>, bytes: usize) -> Result<Buffer> {
        let mem = CudaMem::alloc(&dev, bytes)?;
        Ok(Buffer { device: Device::Cuda(dev), len: bytes, mem: Mem::Cuda(mem) })
    }

    /// The device the memory is on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Size in bytes, as requested (the pool block behind it may be larger).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address a kernel sees: a host address on cpu/emu, a CUdeviceptr on cuda.
    pub fn addr(&self) -> u64 {
        match &self.mem {
            Mem::Host(h, _) | Mem::Emu(h, _) => h.addr(),
            Mem::Cuda(c) => c.addr(),
        }
    }

    /// The bytes, when they live in host memory (cpu, emu).
    pub fn host_slice(&self) -> Option<&[u8]> {
        match &self.mem {
            Mem::Host(h, _) | Mem::Emu(h, _) => Some(&h.as_slice()[..self.len]),
            Mem::Cuda(_) => None,
        }
    }

    /// The bytes, writable, when they live in host memory (cpu, emu); None on cuda.
    pub fn host_slice_mut(&mut self) -> Option<&mut [u8]> {
        let len = self.len;
        match &mut self.mem {
            Mem::Host(h, _) | Mem::Emu(h, _) => Some(&mut h.as_mut_slice()[..len]),
            Mem::Cuda(_) => None,
        }
    }

    /// Host transfers wait for the device, which a capture cannot do.
    fn no_capture(&self, what: &str) -> Result<()> {
        if self.device.capturing() {
            return Err(Error::Capture(format!(
                "{what} {} bytes between host and {} while capturing: upload before the capture, read after a replay",
                self.len,
                self.device.name()
            )));
        }
        Ok(())
    }

    /// Sets every byte to zero, in stream order on the kernel devices (captured by a graph like a
    /// launch).
    pub fn zero(&mut self) -> Result<()> {
        let len = self.len;
        match &mut self.mem {
            Mem::Host(h, _) => h.as_mut_slice()[..len].fill(0),
            Mem::Emu(h, _) => emu::fill(h.addr(), len, 0)?,
            Mem::Cuda(c) => c.zero(len)?,
        }
        Ok(())
    }

    /// Copies `data` (exactly `len()` bytes) into the buffer.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if data.len() != self.len {
            return Err(Error::Shape(format!("writing {} bytes into a buffer of {}", data.len(), self.len)));
        }
        self.no_capture("copying")?;
        match &mut self.mem {
            Mem::Host(h, _) | Mem::Emu(h, _) => h.as_mut_slice()[..data.len()].copy_from_slice(data),
            Mem::Cuda(c) => c.write(data)?,
        }
        Ok(())
    }

    /// Copies the buffer to host memory (waits for queued work on the device).
    pub fn read(&self) -> Result<Vec<u8>> {
        self.no_capture("reading")?;
        match &self.mem {
            Mem::Host(h, _) | Mem::Emu(h, _) => Ok(h.as_slice()[..self.len].to_vec()),
            Mem::Cuda(c) => c.read(self.len),
        }
    }

    /// Copies `src` (same device, same length) into this buffer on the device, in stream order
    /// (captured by a graph like a launch).
    pub fn copy_from(&mut self, src: &Buffer) -> Result<()> {
        if src.device.name() != self.device.name() {
            return Err(Error::DeviceMismatch(format!("device copy from {} into {}", src.device.name(), self.device.name())));
        }
        if src.len != self.len {
            return Err(Error::Shape(format!(
                "device copy of {} bytes on {} into {} bytes on {}",
                src.len,
                src.device.name(),
                self.len,
                self.device.name()
            )));
        }
        let (dst, len) = (self.addr(), self.len);
        match (&mut self.mem, &src.mem) {
            (Mem::Host(d, _), Mem::Host(s, _)) => d.as_mut_slice()[..len].copy_from_slice(&s.as_slice()[..len]),
            (Mem::Emu(..), Mem::Emu(..)) => emu::copy(dst, src.addr(), len)?,
            (Mem::Cuda(d), Mem::Cuda(s)) => d.copy_from(s, len)?,
            _ => unreachable!("one device, one kind of memory"),
        }
        Ok(())
    }
}
