//! The caching allocator of the kernel devices (emu, cuda). A freed block waits in its size class
//! and is handed out again, so a network pass that has run once allocates nothing more from the
//! driver (cuMemAlloc and cuMemFree synchronize the device), and work captured as a graph keeps
//! the addresses it was recorded with.
//!
//! During a capture the pool notes every block handed out or given back; when the capture ends,
//! those blocks must all be free again (a buffer made inside a capture may not outlive it) and
//! they are reserved for the graph until it is dropped, so nothing else can be given memory the
//! graph writes to when it is replayed.
use crate::error::{Error, Result};
use std::collections::{HashMap, HashSet};

pub(super) trait Block {
    fn addr(&self) -> u64;
}

/// The size a request is rounded to: 512 bytes up to 1 MiB, then 2 MiB steps (at most 0.2%
/// waste above 1 MiB, and few classes for the activations of one network).
pub(super) fn class(bytes: usize) -> usize {
    const SMALL: usize = 512;
    const LARGE: usize = 2 << 20;
    if bytes <= 1 << 20 {
        bytes.max(1).div_ceil(SMALL) * SMALL
    } else {
        bytes.div_ceil(LARGE) * LARGE
    }
}

#[derive(Default)]
struct Capture {
    touched: HashSet<u64>,
    live: HashSet<u64>,
}

pub(super) struct Pool<B> {
    free: HashMap<usize, Vec<B>>,
    capture: Option<Capture>,
}

impl<B: Block> Default for Pool<B> {
    fn default() -> Self {
        Pool { free: HashMap::new(), capture: None }
    }
}

impl<B: Block> Pool<B> {
    /// A cached block of size class `class`, if one is free.
    pub fn take(&mut self, class: usize) -> Option<B> {
        let b = self.free.get_mut(&class)?.pop()?;
        self.handed_out(b.addr());
        Some(b)
    }

    /// Notes a block that was freshly allocated and handed out.
    pub fn handed_out(&mut self, addr: u64) {
        if let Some(c) = self.capture.as_mut() {
            c.touched.insert(addr);
            c.live.insert(addr);
        }
    }

    /// Returns a block to its size class.
    pub fn give(&mut self, class: usize, b: B) {
        if let Some(c) = self.capture.as_mut() {
            c.touched.insert(b.addr());
            c.live.remove(&b.addr());
        }
        self.free.entry(class).or_default().push(b);
    }

    /// Every free block, to be released to the driver (on out-of-memory, or when the device goes).
    pub fn drain(&mut self) -> Vec<B> {
        self.free.drain().flat_map(|(_, v)| v).collect()
    }

    pub fn capturing(&self) -> bool {
        self.capture.is_some()
    }

    pub fn begin_capture(&mut self) -> Result<()> {
        if self.capture.is_some() {
            return Err(Error::Capture("a capture is already under way on this device".into()));
        }
        self.capture = Some(Capture::default());
        Ok(())
    }

    /// Ends the capture: the blocks it touched, now reserved for the graph, with their classes.
    pub fn end_capture(&mut self) -> Result<Vec<(usize, B)>> {
        let c = self.capture.take().ok_or_else(|| Error::Capture("no capture is under way".into()))?;
        if !c.live.is_empty() {
            return Err(Error::Capture(format!(
                "{} buffer(s) allocated during the capture are still alive at its end; work captured as a graph may only keep buffers made before it",
                c.live.len()
            )));
        }
        let mut reserved = Vec::new();
        for (&class, blocks) in self.free.iter_mut() {
            let (mine, rest): (Vec<B>, Vec<B>) = std::mem::take(blocks).into_iter().partition(|b| c.touched.contains(&b.addr()));
            *blocks = rest;
            reserved.extend(mine.into_iter().map(|b| (class, b)));
        }
        Ok(reserved)
    }
}
