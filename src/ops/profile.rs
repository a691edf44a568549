//! Where the time goes, per operation: with TOMODIFF_PROFILE=1 every op entry point adds its wall
//! time to a table that `report` prints (the bench commands print it after their rows). Meaningful
//! on the cpu and emu devices, whose ops return when their work is done; CUDA launches are
//! asynchronous, so there it measures launch cost only. Off (one relaxed load per op) otherwise.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static STATE: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 off, 2 on
static TABLE: Mutex<BTreeMap<&'static str, (u64, Duration)>> = Mutex::new(BTreeMap::new());

fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var("TOMODIFF_PROFILE").is_ok_and(|v| v == "1");
            STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
        s => s == 2,
    }
}

/// Times its scope under `name` when profiling is on.
pub struct Span(Option<(&'static str, Instant)>);

pub fn span(name: &'static str) -> Span {
    Span(enabled().then(|| (name, Instant::now())))
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some((name, t0)) = self.0 {
            let mut t = TABLE.lock().unwrap_or_else(|e| e.into_inner());
            let e = t.entry(name).or_default();
            e.0 += 1;
            e.1 += t0.elapsed();
        }
    }
}

/// The table so far, slowest first (op, calls, seconds, share), and clears it; None when off.
pub fn report() -> Option<String> {
    if !enabled() {
        return None;
    }
    let mut t = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let total: f64 = t.values().map(|v| v.1.as_secs_f64()).sum();
    let mut rows: Vec<_> = t.iter().map(|(k, v)| (*k, v.0, v.1.as_secs_f64())).collect();
    rows.sort_by(|a, b| b.2.total_cmp(&a.2));
    let mut s = format!("{:<24} {:>8} {:>10} {:>7}\n", "op (TOMODIFF_PROFILE)", "calls", "seconds", "share");
    for (k, n, secs) in rows {
        s += &format!("{k:<24} {n:>8} {secs:>10.3} {:>6.1}%\n", 100.0 * secs / total.max(1e-12));
    }
    s += &format!("{:<24} {:>8} {total:>10.3}\n", "all ops", "");
    t.clear();
    Some(s)
}
