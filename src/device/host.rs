//! Host memory for the cpu and emu devices: zeroed and 64-byte aligned, so that kernels may use
//! 16-byte vector loads and cp.async chunks on it, as on a GPU. `mapped` memory comes straight
//! from the kernel, page aligned and zero until touched: a large buffer costs nothing until it is
//! written (the emulator's pool uses it, and its dry runs of a network pass rely on that); the
//! cpu device keeps freed buffers in a process-wide caching pool (`cpu_alloc`, `cpu_free`), so a
//! network pass that has run once takes no fresh pages (each fresh page costs a fault and a
//! zeroing in the kernel); its memory is not zeroed on reuse.
use super::pool::{self, Pool};
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::sync::{LazyLock, Mutex};

static CPU_POOL: LazyLock<Mutex<Pool<HostMem>>> = LazyLock::new(|| Mutex::new(Pool::default()));

/// A block of at least `bytes` for the cpu device, cached or fresh, with its size class.
pub(super) fn cpu_alloc(bytes: usize) -> Option<(HostMem, usize)> {
    let want = pool::class(bytes);
    let mut p = CPU_POOL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((class, m)) = p.take(want) {
        return Some((m, class));
    }
    let m = HostMem::mapped(want)?;
    p.fresh(m.addr(), want);
    Some((m, want))
}

/// Returns a block to the cpu pool.
pub(super) fn cpu_free(class: usize, mem: HostMem) {
    CPU_POOL.lock().unwrap_or_else(|e| e.into_inner()).give(class, mem);
}

pub struct HostMem {
    ptr: *mut u8,
    len: usize,
    mapped: bool,
}

// The memory is owned uniquely; access goes through &self/&mut self.
unsafe impl Send for HostMem {}
unsafe impl Sync for HostMem {}

const ALIGN: usize = 64;
const MAPPED: usize = 1 << 20;

impl HostMem {
    pub fn new(len: usize) -> Option<HostMem> {
        if len == 0 {
            return Some(HostMem { ptr: std::ptr::null_mut(), len, mapped: false });
        }
        let layout = Layout::from_size_align(len, ALIGN).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        (!ptr.is_null()).then_some(HostMem { ptr, len, mapped: false })
    }

    /// Zeroed memory mapped from the kernel from 1 MiB on (below, as `new`).
    pub fn mapped(len: usize) -> Option<HostMem> {
        if len >= MAPPED {
            // SAFETY: an anonymous private mapping; checked for failure below.
            let p = unsafe {
                libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
            };
            return (p != libc::MAP_FAILED).then_some(HostMem { ptr: p as *mut u8, len, mapped: true });
        }
        HostMem::new(len)
    }
    /// No memory (what a buffer holds once its block went back to a pool).
    pub fn empty() -> HostMem {
        HostMem { ptr: std::ptr::null_mut(), len: 0, mapped: false }
    }
    pub fn as_slice(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: ptr is a live allocation of len bytes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: as above, and &mut self makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }
}

impl Drop for HostMem {
    fn drop(&mut self) {
        if self.mapped {
            // SAFETY: mapped in new() with this length, unmapped once.
            unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
        } else if self.len > 0 {
            // SAFETY: allocated in new() with this layout.
            unsafe { dealloc(self.ptr, Layout::from_size_align_unchecked(self.len, ALIGN)) }
        }
    }
}
