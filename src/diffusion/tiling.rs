//! Tiling a volume into patches (docs/METHOD.md section 7); the network's inputs are built from
//! the starts by ops::patches. Per axis of length N and patch length P, with an offset o in [0, P):
//! patches start at o + j P - P (volume coordinates; the volume is zero-padded by P),
//! j = 0 ..= ceil(N / P). For N a multiple of P that is N / P + 1 patches; for other N the extra
//! patch keeps the far edge covered for every offset.
pub use crate::ops::patches::Starts;

/// Patch starts along one axis (may be negative: the padding).
pub fn starts(n: usize, p: usize, offset: usize) -> Vec<isize> {
    (0..=n.div_ceil(p)).map(|j| (offset + j * p) as isize - p as isize).collect()
}

/// Every patch start (z, y, x) of one tiling, z slowest.
pub fn tiling(dims: [usize; 3], patch: [usize; 3], offset: [usize; 3]) -> Vec<[isize; 3]> {
    let (sz, sy, sx) = (starts(dims[0], patch[0], offset[0]), starts(dims[1], patch[1], offset[1]), starts(dims[2], patch[2], offset[2]));
    let mut out = Vec::with_capacity(sz.len() * sy.len() * sx.len());
    for &z in &sz {
        for &y in &sy {
            for &x in &sx {
                out.push([z, y, x]);
            }
        }
    }
    out
}
