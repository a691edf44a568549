//! Untyped device memory. Tensors hold one; launches take their addresses.
use super::cuda::{CudaDevice, CudaMem};
use super::host::HostMem;
use super::Device;
use crate::error::{Error, Result};
use std::sync::Arc;

pub struct Buffer {
    device: Device,
    mem: Mem,
}

enum Mem {
    Host(HostMem),
    Cuda(CudaMem),
}

impl Buffer {
    pub(super) fn host(device: Device, bytes: usize) -> Result<Buffer> {
        let mem = HostMem::new(bytes).ok_or_else(|| Error::OutOfMemory { device: device.name(), bytes })?;
        Ok(Buffer { device, mem: Mem::Host(mem) })
    }

    pub(super) fn cuda(dev: Arc<CudaDevice>, bytes: usize) -> Result<Buffer> {
        let mem = CudaMem::alloc(&dev, bytes)?;
        Ok(Buffer { device: Device::Cuda(dev), mem: Mem::Cuda(mem) })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn len(&self) -> usize {
        match &self.mem {
            Mem::Host(h) => h.as_slice().len(),
            Mem::Cuda(c) => c.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The address a kernel sees: a host address on cpu/emu, a CUdeviceptr on cuda.
    pub fn addr(&self) -> u64 {
        match &self.mem {
            Mem::Host(h) => h.addr(),
            Mem::Cuda(c) => c.addr(),
        }
    }

    /// The bytes, when they live in host memory (cpu, emu).
    pub fn host_slice(&self) -> Option<&[u8]> {
        match &self.mem {
            Mem::Host(h) => Some(h.as_slice()),
            Mem::Cuda(_) => None,
        }
    }

    pub fn host_slice_mut(&mut self) -> Option<&mut [u8]> {
        match &mut self.mem {
            Mem::Host(h) => Some(h.as_mut_slice()),
            Mem::Cuda(_) => None,
        }
    }

    /// Copies `data` (exactly `len()` bytes) into the buffer.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if data.len() != self.len() {
            return Err(Error::Shape(format!("writing {} bytes into a buffer of {}", data.len(), self.len())));
        }
        match &mut self.mem {
            Mem::Host(h) => h.as_mut_slice().copy_from_slice(data),
            Mem::Cuda(c) => c.write(data)?,
        }
        Ok(())
    }

    /// Copies the buffer to host memory (waits for queued work on the device).
    pub fn read(&self) -> Result<Vec<u8>> {
        match &self.mem {
            Mem::Host(h) => Ok(h.as_slice().to_vec()),
            Mem::Cuda(c) => c.read(),
        }
    }
}
