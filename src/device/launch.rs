//! One launch path for both kernel devices: a kernel name from the table, grid, block, dynamic
//! shared memory, and argument slots as cuLaunchKernel takes them (an array of pointers to the
//! values). Arguments are checked against the kernel's parameter list before anything runs.
use super::{Buffer, Device};
use crate::error::{Error, Result};
use crate::kernels::{self, ParamKind, KERNELS};
use std::ffi::c_void;

/// Most threads (x·y·z) a launch's block may have, as on every GPU we target.
#[doc(hidden)]
pub const MAX_THREADS: u32 = 1024;
/// Largest dynamic shared memory per block on the GPUs we target (sm_80/sm_90: 227 KB).
#[doc(hidden)]
pub const MAX_SHARED_BYTES: u32 = 227 * 1024;

#[derive(Clone, Copy, Debug)]
enum Arg {
    Ptr(u64),
    I32(i32),
    U32(u32),
    I64(i64),
    F32(f32),
}

impl Arg {
    fn kind(&self) -> ParamKind {
        match self {
            Arg::Ptr(_) => ParamKind::Ptr,
            Arg::I32(_) => ParamKind::I32,
            Arg::U32(_) => ParamKind::U32,
            Arg::I64(_) => ParamKind::I64,
            Arg::F32(_) => ParamKind::F32,
        }
    }
    /// The value in an 8-byte slot, little-endian from the slot's first byte.
    fn slot(&self) -> u64 {
        match *self {
            Arg::Ptr(p) => p,
            Arg::I32(v) => v as u32 as u64,
            Arg::U32(v) => v as u64,
            Arg::I64(v) => v as u64,
            Arg::F32(v) => v.to_bits() as u64,
        }
    }
}

/// A kernel launch being built: the kernel, grid, block, dynamic shared memory and the
/// arguments in parameter order, checked and queued by `launch`.
#[doc(hidden)]
pub struct Launch<'a> {
    kernel: usize,
    grid: [u32; 3],
    block: [u32; 3],
    smem: u32,
    args: Vec<Arg>,
    buffers: Vec<&'a Buffer>,
    /// A value given to `i32s` that does not fit an int parameter; reported by `run`.
    overflow: Option<usize>,
}

impl<'a> Launch<'a> {
    /// A launch of the kernel named `kernel`, with a 1×1×1 grid and block, no shared memory and
    /// no arguments yet; `Error::UnknownKernel` for a name not in the kernel table.
    pub fn new(kernel: &str) -> Result<Launch<'a>> {
        let kernel = kernels::index(kernel).ok_or_else(|| Error::UnknownKernel(kernel.to_string()))?;
        Ok(Launch { kernel, grid: [1; 3], block: [1; 3], smem: 0, args: Vec::new(), buffers: Vec::new(), overflow: None })
    }
    /// The grid, in blocks (x, y, z).
    pub fn grid(mut self, g: [u32; 3]) -> Self {
        self.grid = g;
        self
    }
    /// The block, in threads (x, y, z).
    pub fn block(mut self, b: [u32; 3]) -> Self {
        self.block = b;
        self
    }
    /// Dynamic shared memory per block, in bytes.
    pub fn shared_bytes(mut self, s: u32) -> Self {
        self.smem = s;
        self
    }
    /// A buffer argument (the kernel may read or write it).
    pub fn buf(mut self, b: &'a Buffer) -> Self {
        self.args.push(Arg::Ptr(b.addr()));
        self.buffers.push(b);
        self
    }
    /// A null pointer for an optional buffer parameter.
    pub fn null(mut self) -> Self {
        self.args.push(Arg::Ptr(0));
        self
    }
    /// An optional buffer: the buffer, or a null pointer.
    pub fn opt(self, b: Option<&'a Buffer>) -> Self {
        match b {
            Some(b) => self.buf(b),
            None => self.null(),
        }
    }
    /// A 32-bit signed integer argument.
    pub fn i32(mut self, v: i32) -> Self {
        self.args.push(Arg::I32(v));
        self
    }
    /// Several `int` arguments from sizes (extents, channels); a size over i32::MAX makes `run`
    /// fail instead of passing a wrapped value.
    pub fn i32s(mut self, vs: &[usize]) -> Self {
        for &v in vs {
            if v > i32::MAX as usize {
                self.overflow = Some(v);
            }
            self.args.push(Arg::I32(v as i32));
        }
        self
    }
    /// A 32-bit unsigned integer argument.
    pub fn u32(mut self, v: u32) -> Self {
        self.args.push(Arg::U32(v));
        self
    }
    /// A 64-bit signed integer argument.
    pub fn i64(mut self, v: i64) -> Self {
        self.args.push(Arg::I64(v));
        self
    }
    /// A `float` argument.
    pub fn f32(mut self, v: f32) -> Self {
        self.args.push(Arg::F32(v));
        self
    }

    fn fail(&self, msg: String) -> Error {
        Error::Launch { kernel: KERNELS[self.kernel].name.to_string(), msg }
    }

    fn check(&self, dev: &Device) -> Result<()> {
        let info = &KERNELS[self.kernel];
        if let Some(v) = self.overflow {
            return Err(self.fail(format!("size {v} exceeds a 32-bit int parameter")));
        }
        if self.args.len() != info.params.len() {
            return Err(self.fail(format!("{} arguments given, the kernel takes {}", self.args.len(), info.params.len())));
        }
        for (i, (a, p)) in self.args.iter().zip(info.params).enumerate() {
            if a.kind() != p.kind {
                return Err(self.fail(format!("argument {i} is {:?}, parameter is `{}`", a.kind(), p.decl)));
            }
        }
        let threads: u64 = self.block.iter().map(|&b| b as u64).product();
        if threads == 0 || threads > MAX_THREADS as u64 || self.block[2] > 64 {
            return Err(self.fail(format!("block {:?} has {threads} threads (1..={MAX_THREADS}, z <= 64)", self.block)));
        }
        if self.grid.contains(&0) || self.grid[1] > 65535 || self.grid[2] > 65535 || self.grid[0] > i32::MAX as u32 {
            return Err(self.fail(format!("grid {:?} is out of range", self.grid)));
        }
        if self.smem > MAX_SHARED_BYTES {
            return Err(self.fail(format!("{} bytes of shared memory requested, at most {MAX_SHARED_BYTES}", self.smem)));
        }
        for b in &self.buffers {
            if b.device().name() != dev.name() {
                return Err(self.fail(format!("a buffer on {} passed to a launch on {}", b.device().name(), dev.name())));
            }
        }
        Ok(())
    }

    /// Queues the launch on `dev` (emu: runs it). Within the crate the ops size every buffer
    /// for the kernel they launch; from outside, [`Launch::launch`].
    pub(crate) fn run(self, dev: &Device) -> Result<()> {
        // SAFETY: the crate's ops pass buffers sized for the kernels they launch.
        unsafe { self.launch(dev) }
    }

    /// Queues the launch on `dev` (emu: runs it), once the arguments match the kernel's
    /// parameter kinds, the buffers are on `dev` and grid, block and shared memory are in range.
    ///
    /// # Safety
    /// The kernel indexes its buffers from the other arguments (extents, counts): each buffer
    /// must hold every element the kernel reads or writes for those arguments. Nothing checks
    /// that; an undersized buffer is an out-of-bounds write (on emu, into host memory).
    pub unsafe fn launch(self, dev: &Device) -> Result<()> {
        self.check(dev)?;
        let mut slots: Vec<u64> = self.args.iter().map(Arg::slot).collect();
        match dev {
            Device::Cpu => Err(self.fail("the cpu device runs Rust references, not kernels".into())),
            Device::Emu => super::emu::launch(self.kernel, self.grid, self.block, self.smem, &slots),
            Device::Cuda(d) => {
                let mut ptrs: Vec<*mut c_void> = slots.iter_mut().map(|s| s as *mut u64 as *mut c_void).collect();
                d.launch(self.kernel, self.grid, self.block, self.smem, &mut ptrs)
            }
        }
    }
}
