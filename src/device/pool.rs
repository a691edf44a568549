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
use std::collections::{BTreeMap, HashSet};

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

/// A cached block may serve a request up to this much smaller than itself (FIT_NUM / FIT_DEN):
/// without it every size class would hold its own peak, and the pool as a whole more than the
/// peak of what is in use at once.
const FIT_NUM: usize = 2;
const FIT_DEN: usize = 1;

#[derive(Default)]
struct Capture {
    touched: HashSet<u64>,
    live: HashSet<u64>,
}

/// What a device's pool holds, in bytes (size classes, as the driver sees them).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MemoryStats {
    /// Taken from the driver and not released: in use, cached, or reserved for graphs.
    pub allocated: usize,
    /// Held by live buffers (and graphs' reserved blocks).
    pub in_use: usize,
    /// The most `in_use` has been since the pool was made or `reset_peak`.
    pub peak_in_use: usize,
}

pub(super) struct Pool<B> {
    free: BTreeMap<usize, Vec<B>>,
    capture: Option<Capture>,
    stats: MemoryStats,
}

impl<B: Block> Default for Pool<B> {
    fn default() -> Self {
        Pool { free: BTreeMap::new(), capture: None, stats: MemoryStats::default() }
    }
}

impl<B: Block> Pool<B> {
    /// A cached block for a request of size class `class`: the smallest free one of at most
    /// FIT times the request, with its own class (what goes back with `give`).
    pub fn take(&mut self, class: usize) -> Option<(usize, B)> {
        let (c, b) = self
            .free
            .range_mut(class..=class.saturating_mul(FIT_NUM) / FIT_DEN)
            .find_map(|(c, v)| v.pop().map(|b| (*c, b)))?;
        self.handed_out(b.addr(), c);
        Some((c, b))
    }

    /// Notes a block of `class` bytes freshly taken from the driver and handed out.
    pub fn fresh(&mut self, addr: u64, class: usize) {
        self.stats.allocated += class;
        self.handed_out(addr, class);
    }

    fn handed_out(&mut self, addr: u64, class: usize) {
        self.stats.in_use += class;
        self.stats.peak_in_use = self.stats.peak_in_use.max(self.stats.in_use);
        if let Some(c) = self.capture.as_mut() {
            c.touched.insert(addr);
            c.live.insert(addr);
        }
    }

    /// Returns a block to its size class.
    pub fn give(&mut self, class: usize, b: B) {
        // Saturating: an emulated buffer dropped on another thread than the one that made it
        // returns to that thread's pool.
        self.stats.in_use = self.stats.in_use.saturating_sub(class);
        if let Some(c) = self.capture.as_mut() {
            c.touched.insert(b.addr());
            c.live.remove(&b.addr());
        }
        self.free.entry(class).or_default().push(b);
    }

    /// Every free block, to be released to the driver (on out-of-memory, or when the device goes).
    pub fn drain(&mut self) -> Vec<B> {
        let blocks: Vec<(usize, B)> = std::mem::take(&mut self.free).into_iter().flat_map(|(c, v)| v.into_iter().map(move |b| (c, b))).collect();
        self.stats.allocated = self.stats.allocated.saturating_sub(blocks.iter().map(|(c, _)| c).sum::<usize>());
        blocks.into_iter().map(|(_, b)| b).collect()
    }

    pub fn stats(&self) -> MemoryStats {
        self.stats
    }

    pub fn reset_peak(&mut self) {
        self.stats.peak_in_use = self.stats.in_use;
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
        // Reserved blocks count as in use until the graph gives them back.
        self.stats.in_use += reserved.iter().map(|(c, _)| c).sum::<usize>();
        self.stats.peak_in_use = self.stats.peak_in_use.max(self.stats.in_use);
        Ok(reserved)
    }
}
