//! The emulated device: the kernels of kernels/*.cu compiled as C++ (build.rs) and run by the
//! emulator runtime (kernels/emu/emu.cpp), memory from a per-thread caching pool, and graphs as
//! recorded lists of launches, fills and copies, held to the same rules as CUDA's stream capture
//! (nothing runs while recording, no host reads or writes, no buffer outlives the capture).
use super::host::HostMem;
use super::pool::{self, Block, MemoryStats, Pool};
use crate::error::{Error, Result};
use crate::kernels::KERNELS;
use std::cell::RefCell;
use std::ffi::c_void;
use std::sync::Mutex;

extern "C" {
    fn tomodiff_emu_launch(
        kernel: u32,
        grid: *const u32,
        block: *const u32,
        smem_bytes: u32,
        args: *mut *mut c_void,
        failed_block: *mut u32,
    ) -> i32;
}

// The emulator keeps its scheduler state in globals: one launch at a time, also when Rust tests
// run in parallel.
static EMU: Mutex<()> = Mutex::new(());

impl Block for HostMem {
    fn addr(&self) -> u64 {
        HostMem::addr(self)
    }
}

/// One step of a recorded graph.
pub(super) enum Op {
    Launch { kernel: usize, grid: [u32; 3], block: [u32; 3], smem: u32, slots: Vec<u64> },
    Fill { addr: u64, len: usize, value: u8 },
    Copy { dst: u64, src: u64, len: usize },
}

// Per thread, so that tests running in parallel capture independently.
thread_local! {
    static POOL: RefCell<Pool<HostMem>> = RefCell::new(Pool::default());
    static RECORDING: RefCell<Option<Vec<Op>>> = const { RefCell::new(None) };
}

pub(super) fn recording() -> bool {
    RECORDING.with(|r| r.borrow().is_some())
}

/// Runs `op` now, or appends it to the graph being recorded.
fn submit(op: Op) -> Result<()> {
    let op = RECORDING.with(|r| match r.borrow_mut().as_mut() {
        Some(ops) => {
            ops.push(op);
            None
        }
        None => Some(op),
    });
    match op {
        Some(op) => run(&op),
        None => Ok(()),
    }
}

fn run(op: &Op) -> Result<()> {
    match op {
        Op::Launch { kernel, grid, block, smem, slots } => launch_now(*kernel, *grid, *block, *smem, slots),
        // SAFETY: the addresses are live pool blocks of at least len bytes (a graph reserves the
        // blocks it touched until it is dropped; buffers made before it must outlive it).
        Op::Fill { addr, len, value } => unsafe {
            std::ptr::write_bytes(*addr as *mut u8, *value, *len);
            Ok(())
        },
        Op::Copy { dst, src, len } => unsafe {
            std::ptr::copy(*src as *const u8, *dst as *mut u8, *len);
            Ok(())
        },
    }
}

/// The byte new emulated buffers are filled with: 0xFFFFFFFF is a NaN as f32, 0xFFFF as bf16
/// and f16, so a kernel that reads memory no one wrote produces NaN in its tests, as it would
/// produce garbage on a GPU.
pub(super) const POISON: u8 = 0xFF;

/// A block of at least `bytes` bytes, its first `bytes` poisoned, and its size class.
pub(super) fn alloc(bytes: usize) -> Result<(HostMem, usize)> {
    let want = pool::class(bytes);
    let cached = POOL.with(|p| p.borrow_mut().take(want));
    let (mem, class) = match cached {
        Some((class, m)) => (m, class),
        None => {
            let m = HostMem::mapped(want).ok_or_else(|| Error::OutOfMemory { device: "emu".into(), bytes })?;
            POOL.with(|p| p.borrow_mut().fresh(m.addr(), want));
            (m, want)
        }
    };
    submit(Op::Fill { addr: mem.addr(), len: bytes, value: POISON })?;
    Ok((mem, class))
}

/// Sets `len` bytes at `addr` (a live pool block) to `value`, in order with launches.
pub(super) fn fill(addr: u64, len: usize, value: u8) -> Result<()> {
    submit(Op::Fill { addr, len, value })
}

/// Gives a block back to this thread's pool (or to the allocator while the thread shuts down).
pub(super) fn free(class: usize, mem: HostMem) {
    let mut mem = Some(mem);
    let _ = POOL.try_with(|p| p.borrow_mut().give(class, mem.take().unwrap()));
}

pub(super) fn memory_stats() -> MemoryStats {
    POOL.with(|p| p.borrow().stats())
}

pub(super) fn reset_peak() {
    POOL.with(|p| p.borrow_mut().reset_peak())
}

pub(super) fn copy(dst: u64, src: u64, len: usize) -> Result<()> {
    submit(Op::Copy { dst, src, len })
}

pub(super) fn launch(kernel: usize, grid: [u32; 3], block: [u32; 3], smem: u32, slots: &[u64]) -> Result<()> {
    submit(Op::Launch { kernel, grid, block, smem, slots: slots.to_vec() })
}

pub(super) fn begin_capture() -> Result<()> {
    POOL.with(|p| p.borrow_mut().begin_capture())?;
    RECORDING.with(|r| *r.borrow_mut() = Some(Vec::new()));
    Ok(())
}

/// Pool blocks with their size classes.
pub(super) type Reserved = Vec<(usize, HostMem)>;

/// The recorded steps and the blocks reserved for them.
pub(super) fn end_capture() -> Result<(Vec<Op>, Reserved)> {
    let ops = RECORDING.with(|r| r.borrow_mut().take()).unwrap_or_default();
    let reserved = POOL.with(|p| p.borrow_mut().end_capture())?;
    Ok((ops, reserved))
}

pub(super) fn replay(ops: &[Op]) -> Result<()> {
    if recording() {
        return Err(Error::Capture("a graph cannot be replayed while another is being captured on emu".into()));
    }
    ops.iter().try_for_each(run)
}

fn launch_now(k: usize, grid: [u32; 3], block: [u32; 3], smem: u32, slots: &[u64]) -> Result<()> {
    let mut slots = slots.to_vec();
    let mut ptrs: Vec<*mut c_void> = slots.iter_mut().map(|s| s as *mut u64 as *mut c_void).collect();
    let _guard = EMU.lock().unwrap_or_else(|e| e.into_inner());
    let mut failed = [0u32; 3];
    // SAFETY: one slot per kernel parameter, of the parameter's type (checked by Launch); pointer
    // arguments are addresses of live host buffers.
    let rc = unsafe {
        tomodiff_emu_launch(k as u32, grid.as_ptr(), block.as_ptr(), smem, ptrs.as_mut_ptr(), failed.as_mut_ptr())
    };
    let kernel = KERNELS[k].name.to_string();
    match rc {
        0 => Ok(()),
        1 => Err(Error::UnknownKernel(kernel)),
        2 => Err(Error::Launch { kernel, msg: format!("invalid launch: grid {grid:?}, block {block:?}") }),
        3 => Err(Error::Launch {
            kernel,
            msg: format!("barrier deadlock in block {failed:?}: a __syncthreads or warp collective not reached by every live thread"),
        }),
        4 => Err(Error::OutOfMemory { device: "emu".into(), bytes: block.iter().product::<u32>() as usize * 256 * 1024 }),
        _ => Err(Error::Launch { kernel, msg: format!("emulator returned {rc}") }),
    }
}
