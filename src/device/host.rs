//! Host memory for the cpu and emu devices: zeroed and 64-byte aligned, so that kernels may use
//! 16-byte vector loads and cp.async chunks on it, as on a GPU.
use std::alloc::{alloc_zeroed, dealloc, Layout};

pub struct HostMem {
    ptr: *mut u8,
    len: usize,
}

// The memory is owned uniquely; access goes through &self/&mut self.
unsafe impl Send for HostMem {}
unsafe impl Sync for HostMem {}

const ALIGN: usize = 64;

impl HostMem {
    pub fn new(len: usize) -> Option<HostMem> {
        if len == 0 {
            return Some(HostMem { ptr: std::ptr::null_mut(), len });
        }
        let layout = Layout::from_size_align(len, ALIGN).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        (!ptr.is_null()).then_some(HostMem { ptr, len })
    }
    /// No memory (what a buffer holds once its block went back to a pool).
    pub fn empty() -> HostMem {
        HostMem { ptr: std::ptr::null_mut(), len: 0 }
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
        if self.len > 0 {
            // SAFETY: allocated in new() with this layout.
            unsafe { dealloc(self.ptr, Layout::from_size_align_unchecked(self.len, ALIGN)) }
        }
    }
}
