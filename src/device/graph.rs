//! Device work captured once and replayed: a CUDA graph on cuda, a recorded list of launches,
//! fills and copies on emu. Replays see the buffers' contents at replay time, so what changes
//! between replays (a timestep, patch starts) goes into buffers written before each replay.
//! Buffers a graph uses that were made before the capture must outlive the graph.
use super::cuda::CudaGraphExec;
use super::emu::{self, Op, Reserved};
use super::Device;
use crate::error::{Error, Result};

/// Device work captured by `Device::capture`, replayed by `replay`: an instantiated CUDA graph
/// on cuda, a recorded list of launches, fills and copies on emu. It holds the pool blocks the
/// captured work used until it is dropped.
#[doc(hidden)]
pub struct Graph {
    dev: Device,
    exec: Exec,
}

enum Exec {
    Emu { ops: Vec<Op>, reserved: Reserved },
    Cuda { exec: CudaGraphExec, reserved: Vec<(usize, u64)> },
}

impl Device {
    /// Whether work on this device is being captured now (on this thread for emu).
    pub fn capturing(&self) -> bool {
        match self {
            Device::Cpu => false,
            Device::Emu => emu::recording(),
            Device::Cuda(d) => d.capturing(),
        }
    }

    /// Runs `f`, capturing the device work it queues into a graph instead of running it. In `f`
    /// buffers may be made and dropped (none may outlive it), but nothing may be copied between
    /// host and device.
    pub fn capture<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<(Graph, T)> {
        match self {
            Device::Cpu => return Err(Error::Capture("the cpu device runs Rust code, which cannot be captured".into())),
            Device::Emu => emu::begin_capture()?,
            Device::Cuda(d) => d.begin_capture()?,
        }
        let mut guard = Capturing { dev: self, ended: false };
        let value = f();
        guard.ended = true;
        // Built before `value?`, so that a failed `f` still releases what was captured.
        let graph = self.end_capture().map(|exec| Graph { dev: self.clone(), exec });
        let value = value?;
        Ok((graph?, value))
    }

    fn end_capture(&self) -> Result<Exec> {
        match self {
            Device::Cpu => Err(Error::Capture("no capture is under way on the cpu".into())),
            Device::Emu => emu::end_capture().map(|(ops, reserved)| Exec::Emu { ops, reserved }),
            Device::Cuda(d) => d.end_capture().map(|(exec, reserved)| Exec::Cuda { exec, reserved }),
        }
    }
}

/// Ends a capture that `f` left by panicking: the stream leaves capture mode and the graph made
/// of what was captured is dropped at once, giving its blocks back.
struct Capturing<'a> {
    dev: &'a Device,
    ended: bool,
}

impl Drop for Capturing<'_> {
    fn drop(&mut self) {
        if !self.ended {
            if let Ok(exec) = self.dev.end_capture() {
                drop(Graph { dev: self.dev.clone(), exec });
            }
        }
    }
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Graph({}, {:?} steps)", self.dev.name(), self.steps())
    }
}

impl Graph {
    /// Queues the captured work once more.
    ///
    /// # Safety
    /// Every buffer made before the capture that the captured work uses must still be alive:
    /// the graph reads and writes their addresses as they were at the capture.
    pub unsafe fn replay(&self) -> Result<()> {
        match (&self.exec, &self.dev) {
            (Exec::Emu { ops, .. }, _) => emu::replay(ops),
            (Exec::Cuda { exec, .. }, Device::Cuda(d)) => d.launch_graph(exec),
            _ => unreachable!("a graph is replayed on the device that captured it"),
        }
    }

    /// Steps in the graph (emu: launches, fills and copies; cuda: not known without a query).
    pub fn steps(&self) -> Option<usize> {
        match &self.exec {
            Exec::Emu { ops, .. } => Some(ops.len()),
            Exec::Cuda { .. } => None,
        }
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        match (&mut self.exec, &self.dev) {
            (Exec::Emu { reserved, .. }, _) => {
                for (class, mem) in reserved.drain(..) {
                    emu::free(class, mem);
                }
            }
            (Exec::Cuda { exec, reserved }, Device::Cuda(d)) => d.release_graph(exec, std::mem::take(reserved)),
            _ => {}
        }
    }
}
