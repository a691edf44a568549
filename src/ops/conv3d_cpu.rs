//! The CPU's 3D convolution, direct and channels-last: no im2col buffer. Output voxels are taken
//! six at a time against sixteen output channels, twelve AVX2 accumulators (the register tile of
//! a blocked direct convolution, as oneDNN's); for each tap, the six voxels' input rows are found
//! once, and a tap in the padding reads a row of zeros. The forward pass and the data gradient
//! are the same loop over different tap maps (`Taps`). AVX2 + FMA are detected at run time;
//! without them callers fall back to the im2col reference (`conv3d::conv3d_ref`), which is also
//! what the tests hold this file to.
use rayon::prelude::*;

/// Output voxels per register tile.
const R: usize = 6;
/// Output channels per register tile (two AVX2 vectors).
const CB: usize = 16;
/// Register tiles per task: the tap table of a task (taps x R pointers) stays in L1.
const TILES_PER_TASK: usize = 8;
/// Input channels per pass over a task's tiles (a 3x3x3 weight panel of 110 KiB).
const CI_BLOCK: usize = 64;
/// Taps of a 3x3x3 kernel, the largest there is.
const MAX_TAPS: usize = 27;

/// Whether this CPU runs the direct convolution (AVX2 and FMA).
pub fn available() -> bool {
    super::cpu::avx2()
}

/// A convolution's voxel geometry: which input row (offset in floats) tap `t` of output voxel `q`
/// reads, or None where it reads zeros.
#[derive(Clone, Copy)]
pub struct Taps {
    batch: usize,
    /// Output grid (D', H', W') and input grid (D, H, W).
    out: [usize; 3],
    inp: [usize; 3],
    k: usize,
    stride: usize,
    /// Floats per input voxel.
    ci: usize,
    /// false: forward (input = out * stride + t - pad). true: data gradient, the transpose
    /// (input = (out + pad - t) / stride where that divides).
    transpose: bool,
}

impl Taps {
    /// The forward map of a k^3 convolution with "same" padding over x (N, D, H, W, ci).
    pub fn forward(batch: usize, inp: [usize; 3], ci: usize, k: usize, stride: usize) -> Taps {
        let out = inp.map(|n| super::conv3d::out_len(n, k, stride));
        Taps { batch, out, inp, k, stride, ci, transpose: false }
    }

    /// The data-gradient map of that convolution: output voxels are x's, input rows are dy's
    /// (co floats each).
    pub fn data_gradient(batch: usize, x_dims: [usize; 3], co: usize, k: usize, stride: usize) -> Taps {
        let dy = x_dims.map(|n| super::conv3d::out_len(n, k, stride));
        Taps { batch, out: x_dims, inp: dy, k, stride, ci: co, transpose: true }
    }

    /// Output voxels over the batch.
    fn voxels(&self) -> usize {
        self.batch * self.out.iter().product::<usize>()
    }

    /// The input coordinate along one axis for output coordinate o and tap index t, if inside.
    fn axis(&self, o: usize, t: usize, n: usize) -> Option<usize> {
        let pad = self.k / 2;
        let i = if self.transpose {
            let v = (o + pad).checked_sub(t)?;
            // Strides are 1 or 2: no division in the tap tables' inner loop.
            if self.stride == 2 {
                if v & 1 != 0 {
                    return None;
                }
                v >> 1
            } else {
                v
            }
        } else {
            (o * self.stride + t).checked_sub(pad)?
        };
        (i < n).then_some(i)
    }

    /// Output voxel q as (sample, z, y, x).
    fn coords(&self, q: usize) -> [usize; 4] {
        let [od, oh, ow] = self.out;
        let (ox, r) = (q % ow, q / ow);
        let (oy, r) = (r % oh, r / oh);
        let (oz, b) = (r % od, r / od);
        [b, oz, oy, ox]
    }

    /// The offsets (floats) of the rows that the k^3 taps of output voxel q read, in tap order
    /// (z slowest), None in the padding.
    fn rows(&self, q: usize, out: &mut [Option<usize>]) {
        let [b, oz, oy, ox] = self.coords(q);
        let [d, h, w] = self.inp;
        let k = self.k;
        let mut t = 0;
        for tz in 0..k {
            let z = self.axis(oz, tz, d).map(|z| (b * d + z) * h);
            for ty in 0..k {
                let y = z.and_then(|z| Some((z + self.axis(oy, ty, h)?) * w));
                for tx in 0..k {
                    out[t] = y.and_then(|y| Some((y + self.axis(ox, tx, w)?) * self.ci));
                    t += 1;
                }
            }
        }
    }
}

/// One convolution for the direct loop. `w` is (taps, cin, ldw) with ldw a multiple of 16
/// (output channels padded with zeros); `init` (samples, ldw) is each output row's starting
/// value (bias, plus the per-sample bias); `residual` (voxels, ldw) is added at the end.
pub struct Direct<'a> {
    pub taps: Taps,
    pub x: &'a [f32],
    pub w: &'a [f32],
    pub ldw: usize,
    pub init: &'a [f32],
    pub residual: Option<&'a [f32]>,
}

struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint (voxel, channel-block) parts of the output; see `run`.
unsafe impl Sync for OutPtr {}
unsafe impl Send for OutPtr {}

impl Direct<'_> {
    /// out (voxels, ldw) = init + sum over taps and input channels of `x[src]` w (+ residual).
    /// Panics if the operands are shorter than their shapes say (callers check shapes first) or
    /// if the CPU lacks AVX2/FMA (`available`).
    pub fn run(&self, out: &mut [f32]) {
        assert!(available(), "direct convolution without AVX2/FMA");
        let (ldw, cin) = (self.ldw, self.taps.ci);
        let taps = self.taps.k.pow(3);
        let m = self.taps.voxels();
        assert!(taps <= MAX_TAPS && ldw % CB == 0 && self.w.len() >= taps * cin * ldw && out.len() >= m * ldw);
        assert!(self.init.len() >= self.taps.batch * ldw && self.x.len() >= self.taps.batch * self.taps.inp.iter().product::<usize>() * cin);
        assert!(self.residual.is_none_or(|r| r.len() >= m * ldw));
        if m == 0 || ldw == 0 {
            return;
        }
        let tiles = m.div_ceil(R);
        let chunks = tiles.div_ceil(TILES_PER_TASK);
        let blocks = ldw / CB;
        // Enough tasks to keep every thread busy: split the channel blocks only when the voxels
        // alone give too few.
        let want = 4 * rayon::current_num_threads();
        let groups = if chunks >= want { 1 } else { blocks.min(want.div_ceil(chunks)) };
        let per_group = blocks.div_ceil(groups);
        let zeros = vec![0f32; cin];
        let packed = pack_panels(self.w, taps * cin, ldw);
        let outp = OutPtr(out.as_mut_ptr());
        (0..chunks * groups).into_par_iter().for_each(|task| {
            let (chunk, g) = (task / groups, task % groups);
            let cb = g * per_group..((g + 1) * per_group).min(blocks);
            let t0 = chunk * TILES_PER_TASK;
            let t1 = (t0 + TILES_PER_TASK).min(tiles);
            // SAFETY: `available` was checked; this task writes only voxels of tiles t0..t1 and
            // channel blocks cb, which no other task writes; bounds were asserted above.
            unsafe { self.task(t0..t1, cb, &zeros, &packed, &outp) }
        });
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn task(&self, tiles: std::ops::Range<usize>, blocks: std::ops::Range<usize>, zeros: &[f32], packed: &[f32], out: &OutPtr) {
        use std::arch::x86_64::*;
        let taps = self.taps.k.pow(3);
        let m = self.taps.voxels();
        let (cin, ldw) = (self.taps.ci, self.ldw);
        // table[(tile * taps + t)] = the R rows tap t reads for that tile; `live` says whether any
        // of them is inside the input (a tap wholly in the padding is skipped). init[tile][r]:
        // the row of `init` for that voxel's sample.
        let mut table = [[zeros.as_ptr(); R]; MAX_TAPS * TILES_PER_TASK];
        let mut live = [false; MAX_TAPS * TILES_PER_TASK];
        let mut init = [[0usize; R]; TILES_PER_TASK];
        let mut rows = [None; MAX_TAPS];
        for (i, tile) in tiles.clone().enumerate() {
            for r in 0..R {
                let q = (tile * R + r).min(m - 1);
                self.taps.rows(q, &mut rows[..taps]);
                init[i][r] = self.taps.coords(q)[0] * ldw;
                for (t, o) in rows[..taps].iter().enumerate() {
                    if let Some(o) = o {
                        table[i * taps + t][r] = self.x.as_ptr().add(*o);
                        live[i * taps + t] = true;
                    }
                }
            }
        }
        // Input channels in blocks of CI_BLOCK: one block's weight panel (taps x CI_BLOCK x 16
        // floats) stays in L2 while the task's tiles pass over it; partial sums wait in `out`.
        let kblocks = cin.div_ceil(CI_BLOCK);
        for cb in blocks {
            for kb in 0..kblocks {
                let (c0, c1) = (kb * CI_BLOCK, ((kb + 1) * CI_BLOCK).min(cin));
                let last = kb + 1 == kblocks;
                for (i, tile) in tiles.clone().enumerate() {
                    let valid = (m - tile * R).min(R);
                    let mut acc = [[_mm256_setzero_ps(); 2]; R];
                    for (r, a) in acc.iter_mut().enumerate() {
                        let src = if kb == 0 {
                            self.init.as_ptr().add(init[i][r] + cb * CB)
                        } else if r < valid {
                            out.0.add((tile * R + r) * ldw + cb * CB) as *const f32
                        } else {
                            continue;
                        };
                        *a = [_mm256_loadu_ps(src), _mm256_loadu_ps(src.add(8))];
                    }
                    for t in 0..taps {
                        if !live[i * taps + t] {
                            continue;
                        }
                        let p = &table[i * taps + t];
                        let mut wp = packed.as_ptr().add(((cb * taps + t) * cin + c0) * CB);
                        for c in c0..c1 {
                            let w0 = _mm256_loadu_ps(wp);
                            let w1 = _mm256_loadu_ps(wp.add(8));
                            for r in 0..R {
                                let b = _mm256_broadcast_ss(&*p[r].add(c));
                                acc[r][0] = _mm256_fmadd_ps(b, w0, acc[r][0]);
                                acc[r][1] = _mm256_fmadd_ps(b, w1, acc[r][1]);
                            }
                            wp = wp.add(CB);
                        }
                    }
                    for (r, a) in acc.iter().enumerate().take(valid) {
                        let q = tile * R + r;
                        let o = out.0.add(q * ldw + cb * CB);
                        let (mut v0, mut v1) = (a[0], a[1]);
                        if let (true, Some(res)) = (last, self.residual) {
                            let rp = res.as_ptr().add(q * ldw + cb * CB);
                            v0 = _mm256_add_ps(v0, _mm256_loadu_ps(rp));
                            v1 = _mm256_add_ps(v1, _mm256_loadu_ps(rp.add(8)));
                        }
                        _mm256_storeu_ps(o, v0);
                        _mm256_storeu_ps(o.add(8), v1);
                    }
                }
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn task(&self, _: std::ops::Range<usize>, _: std::ops::Range<usize>, _: &[f32], _: &[f32], _: &OutPtr) {
        unreachable!("direct convolution without AVX2/FMA")
    }
}

/// w (rows, ldw) as column panels (ldw / 16, rows, 16): a register tile's weights are then one
/// contiguous stream (rows ldw floats apart would crowd a few cache sets).
fn pack_panels(w: &[f32], rows: usize, ldw: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * ldw];
    out.par_chunks_mut(rows * CB).enumerate().for_each(|(cb, panel)| {
        for (r, dst) in panel.chunks_exact_mut(CB).enumerate() {
            dst.copy_from_slice(&w[r * ldw + cb * CB..][..CB]);
        }
    });
    out
}

/// (rows, ldw) -> (rows, co): the first co columns of each row (undoes `pad_columns`).
pub fn drop_columns(m: Vec<f32>, co: usize, ldw: usize) -> Vec<f32> {
    if co == ldw {
        return m;
    }
    m.chunks(ldw).flat_map(|r| r[..co].iter().copied()).collect()
}

/// Output channels rounded up to whole register tiles.
pub fn padded(co: usize) -> usize {
    co.div_ceil(CB) * CB
}

/// (taps, ci, co) -> (taps, ci, ldw), zero columns beyond co (borrowed when co is already whole).
pub fn pad_columns(w: &[f32], co: usize, ldw: usize) -> std::borrow::Cow<'_, [f32]> {
    if co == ldw {
        return std::borrow::Cow::Borrowed(w);
    }
    let mut out = vec![0f32; w.len() / co * ldw];
    out.chunks_mut(ldw).zip(w.chunks(co)).for_each(|(o, i)| o[..co].copy_from_slice(i));
    std::borrow::Cow::Owned(out)
}

/// Output rows (b, z', y') per block of the weight gradient: about 64 voxels, so that a block's
/// dy and x rows stay in L1/L2 while every tap and channel tile passes over them.
const WGRAD_VOXELS: usize = 64;

/// The weight gradient dw (k^3, ci, co) = sum over output voxels q of `x[src(q, t)] dy[q]`, for a
/// forward map `taps` over x (N, D, H, W, ci) and dy (N, D', H', W', co) with co a multiple of 16.
/// Register tiles of up to six input channels by sixteen output channels run along each output
/// row's stretch inside the volume; threads take contiguous ranges of rows and their partial
/// sums are added at the end.
pub fn weight_gradient(taps: &Taps, x: &[f32], dy: &[f32], co: usize) -> Vec<f32> {
    assert!(available() && co % CB == 0 && !taps.transpose);
    let [od, oh, ow] = taps.out;
    let rows = taps.batch * od * oh;
    assert!(dy.len() >= rows * ow * co && x.len() >= taps.batch * taps.inp.iter().product::<usize>() * taps.ci);
    let size = taps.k.pow(3) * taps.ci * co;
    if size == 0 || rows == 0 || taps.out[2] == 0 {
        return vec![0f32; size];
    }
    let parts = (2 * rayon::current_num_threads()).min(rows.max(1));
    let partials: Vec<Vec<f32>> = (0..parts)
        .into_par_iter()
        .map(|p| {
            let mut dw = vec![0f32; size];
            let range = rows * p / parts..rows * (p + 1) / parts;
            // SAFETY: `available` was checked; the asserts bound every row read.
            unsafe { wgrad_rows(taps, x, dy, co, range, &mut dw) };
            dw
        })
        .collect();
    let mut dw = vec![0f32; size];
    dw.par_chunks_mut(4096).enumerate().for_each(|(i, out)| {
        for part in &partials {
            out.iter_mut().zip(&part[i * 4096..]).for_each(|(o, v)| *o += v);
        }
    });
    dw
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn wgrad_rows(taps: &Taps, x: &[f32], dy: &[f32], co: usize, rows: std::ops::Range<usize>, dw: &mut [f32]) {
    let (k, ci) = (taps.k, taps.ci);
    let group = (WGRAD_VOXELS / taps.out[2]).max(1);
    let mut r0 = rows.start;
    while r0 < rows.end {
        let block = r0..(r0 + group).min(rows.end);
        for t in 0..k * k * k {
            for c0 in (0..ci).step_by(R) {
                for cb in 0..co / CB {
                    let d = dw.as_mut_ptr().add((t * ci + c0) * co + cb * CB);
                    match (ci - c0).min(R) {
                        1 => wgrad_tile::<1>(taps, x, dy, co, block.clone(), t, c0, cb, d),
                        2 => wgrad_tile::<2>(taps, x, dy, co, block.clone(), t, c0, cb, d),
                        3 => wgrad_tile::<3>(taps, x, dy, co, block.clone(), t, c0, cb, d),
                        4 => wgrad_tile::<4>(taps, x, dy, co, block.clone(), t, c0, cb, d),
                        5 => wgrad_tile::<5>(taps, x, dy, co, block.clone(), t, c0, cb, d),
                        _ => wgrad_tile::<6>(taps, x, dy, co, block.clone(), t, c0, cb, d),
                    }
                }
            }
        }
        r0 = block.end;
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn wgrad_rows(_: &Taps, _: &[f32], _: &[f32], _: usize, _: std::ops::Range<usize>, _: &mut [f32]) {
    unreachable!("direct convolution without AVX2/FMA")
}

/// dw[t][c0..c0+RC][cb tile] += the block's rows' contribution (accumulated in registers).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn wgrad_tile<const RC: usize>(taps: &Taps, x: &[f32], dy: &[f32], co: usize, block: std::ops::Range<usize>, t: usize, c0: usize, cb: usize, d: *mut f32) {
    use std::arch::x86_64::*;
    let (k, s, ci) = (taps.k, taps.stride, taps.ci);
    let [od, oh, ow] = taps.out;
    let [id, ih, iw] = taps.inp;
    let (tz, ty, tx) = (t / (k * k), (t / k) % k, t % k);
    let mut acc = [[_mm256_setzero_ps(); 2]; RC];
    for (r, a) in acc.iter_mut().enumerate() {
        *a = [_mm256_loadu_ps(d.add(r * co)), _mm256_loadu_ps(d.add(r * co + 8))];
    }
    // ox with 0 <= ox s + tx - pad < iw.
    let pad = k / 2;
    let lo = (pad.saturating_sub(tx)).div_ceil(s);
    let hi = ow.min((iw + pad - tx).div_ceil(s));
    for row in block {
        let (oy, q) = (row % oh, row / oh);
        let (oz, b) = (q % od, q / od);
        let (Some(z), Some(y)) = (taps.axis(oz, tz, id), taps.axis(oy, ty, ih)) else { continue };
        if lo >= hi {
            continue;
        }
        let mut xp = x.as_ptr().add((((b * id + z) * ih + y) * iw + lo * s + tx - pad) * ci + c0);
        let mut gp = dy.as_ptr().add((row * ow + lo) * co + cb * CB);
        for _ in lo..hi {
            let g0 = _mm256_loadu_ps(gp);
            let g1 = _mm256_loadu_ps(gp.add(8));
            for (r, a) in acc.iter_mut().enumerate() {
                let v = _mm256_broadcast_ss(&*xp.add(r));
                a[0] = _mm256_fmadd_ps(v, g0, a[0]);
                a[1] = _mm256_fmadd_ps(v, g1, a[1]);
            }
            xp = xp.add(s * ci);
            gp = gp.add(co);
        }
    }
    for (r, a) in acc.iter().enumerate() {
        _mm256_storeu_ps(d.add(r * co), a[0]);
        _mm256_storeu_ps(d.add(r * co + 8), a[1]);
    }
}

/// Output channels up to which `narrow` beats padding them to a 16-wide tile.
pub const NARROW: usize = 4;

/// The convolution for few output channels (the U-Net's last, Co = 1): per output voxel and
/// channel, dot products along the input channels, eight at a time. `wt` is (co, taps, ci),
/// `init` (batch, co); out (voxels, co). Padded to 16 columns, such a convolution would cost as
/// much as a 16-channel one.
pub fn narrow(taps: &Taps, x: &[f32], wt: &[f32], co: usize, init: &[f32], out: &mut [f32]) {
    assert!(available());
    let (k3, ci) = (taps.k.pow(3), taps.ci);
    let m = taps.voxels();
    assert!(k3 <= MAX_TAPS && wt.len() >= co * k3 * ci && out.len() >= m * co && init.len() >= taps.batch * co);
    assert!(x.len() >= taps.batch * taps.inp.iter().product::<usize>() * ci);
    if m == 0 || co == 0 {
        return;
    }
    out[..m * co].par_chunks_mut(co * 64).enumerate().for_each(|(chunk, o)| {
        let mut rows = [None; MAX_TAPS];
        for (j, ov) in o.chunks_mut(co).enumerate() {
            let q = chunk * 64 + j;
            taps.rows(q, &mut rows[..k3]);
            let b = taps.coords(q)[0];
            for (oc, v) in ov.iter_mut().enumerate() {
                // SAFETY: `available` was checked; every row is inside x (Taps::rows) and the
                // weights' length was asserted.
                *v = init[b * co + oc] + unsafe { dot_taps(x, &rows[..k3], &wt[oc * k3 * ci..(oc + 1) * k3 * ci], ci) };
            }
        }
    });
}

/// sum over taps t with a row of sum_c x[row + c] w[t ci + c].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_taps(x: &[f32], rows: &[Option<usize>], w: &[f32], ci: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut tail = 0f32;
    let whole = ci / 8 * 8;
    for (t, row) in rows.iter().enumerate() {
        let Some(o) = row else { continue };
        let (xp, wp) = (x.as_ptr().add(*o), w.as_ptr().add(t * ci));
        for c in (0..whole).step_by(8) {
            acc[(c / 8) & 1] = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(c)), _mm256_loadu_ps(wp.add(c)), acc[(c / 8) & 1]);
        }
        for c in whole..ci {
            tail += *xp.add(c) * *wp.add(c);
        }
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(acc[0], acc[1]));
    lanes.iter().sum::<f32>() + tail
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn dot_taps(_: &[f32], _: &[Option<usize>], _: &[f32], _: usize) -> f32 {
    unreachable!("direct convolution without AVX2/FMA")
}
