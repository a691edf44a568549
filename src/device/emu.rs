//! The emulated device's launch: the kernels of kernels/*.cu compiled as C++ (build.rs) and run
//! by the emulator runtime (kernels/emu/emu.cpp).
use crate::error::{Error, Result};
use crate::kernels::KERNELS;
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

pub(super) fn launch(k: usize, grid: [u32; 3], block: [u32; 3], smem: u32, args: &mut [*mut c_void]) -> Result<()> {
    let _guard = EMU.lock().unwrap_or_else(|e| e.into_inner());
    let mut failed = [0u32; 3];
    // SAFETY: args has one slot per kernel parameter, of the parameter's type (checked by Launch);
    // pointer arguments are addresses of live host buffers.
    let rc = unsafe {
        tomodiff_emu_launch(k as u32, grid.as_ptr(), block.as_ptr(), smem, args.as_mut_ptr(), failed.as_mut_ptr())
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
