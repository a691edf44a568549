//! Tubes (tapered capsules: bones' processes, vessels, airways) and the uniform grid that finds
//! the few near a point, so a voxel tests a handful of tubes instead of all of them.
use super::shape::{add, dot, mul, norm, sub, V3};
use super::tissue::Tissue;

/// Where a tube counts: everywhere, only inside the thoracic and abdominal cavities, or only
/// where the point is lung space (trees must not poke through the chest wall or the heart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Gate {
    Always,
    Cavity,
    Lung,
}

/// Precedence of tubes that overlap: the lowest wins.
pub(crate) const BONE: u8 = 0;
pub(crate) const HARD: u8 = 1;
pub(crate) const SHEATH: u8 = 2;
pub(crate) const AIRWAY: u8 = 3;
pub(crate) const VESSEL: u8 = 4;

/// A capsule from `a` to `b` whose radius goes linearly from `ra` to `rb`; inside it, the outer
/// `shell` mm are `outer` and the rest `inner` (cortex and marrow, airway wall and lumen).
#[derive(Clone, Debug)]
pub(crate) struct Tube {
    a: V3,
    ab: V3,
    inv_l2: f64,
    ra: f64,
    dr: f64,
    lo: V3,
    hi: V3,
    outer: Tissue,
    inner: Tissue,
    shell: f64,
    pub(crate) prio: u8,
    pub(crate) gate: Gate,
}

/// What a point hit: its tissue, and the precedence and gate of the tube.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hit {
    pub(crate) tissue: Tissue,
    pub(crate) prio: u8,
    pub(crate) gate: Gate,
}

impl Tube {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(a: V3, b: V3, ra: f64, rb: f64, outer: Tissue, inner: Tissue, shell: f64, prio: u8, gate: Gate) -> Tube {
        let ab = sub(b, a);
        let r = ra.max(rb);
        let lo = std::array::from_fn(|i| a[i].min(b[i]) - r);
        let hi = std::array::from_fn(|i| a[i].max(b[i]) + r);
        Tube { a, ab, inv_l2: 1.0 / dot(ab, ab).max(1e-12), ra, dr: rb - ra, lo, hi, outer, inner, shell, prio, gate }
    }

    /// A tube of one material.
    pub(crate) fn solid(a: V3, b: V3, ra: f64, rb: f64, t: Tissue, prio: u8, gate: Gate) -> Tube {
        Tube::new(a, b, ra, rb, t, t, f64::INFINITY, prio, gate)
    }

    /// The same tube widened by `margin` mm, of one material: the fat sheath around a vessel.
    pub(crate) fn sheath(&self, margin: f64, t: Tissue) -> Tube {
        let b = add(self.a, self.ab);
        Tube::solid(self.a, b, self.ra + margin, self.ra + self.dr + margin, t, SHEATH, Gate::Cavity)
    }

    fn tissue_at(&self, p: V3) -> Option<Tissue> {
        if (0..3).any(|i| p[i] < self.lo[i] || p[i] > self.hi[i]) {
            return None;
        }
        let ap = sub(p, self.a);
        let t = (dot(ap, self.ab) * self.inv_l2).clamp(0.0, 1.0);
        let d = norm(sub(ap, mul(self.ab, t)));
        let r = self.ra + self.dr * t;
        if d > r {
            None
        } else if d > r - self.shell {
            Some(self.outer)
        } else {
            Some(self.inner)
        }
    }
}

/// The tubes binned into cubic cells: each cell lists the tubes whose boxes touch it.
pub(crate) struct TubeGrid {
    tubes: Vec<Tube>,
    lo: V3,
    cell: f64,
    dims: [usize; 3],
    start: Vec<u32>,
    items: Vec<u32>,
}

impl TubeGrid {
    pub(crate) fn new(tubes: Vec<Tube>, cell: f64) -> TubeGrid {
        let lo: V3 = std::array::from_fn(|i| tubes.iter().map(|t| t.lo[i]).fold(f64::INFINITY, f64::min).min(0.0));
        let hi: V3 = std::array::from_fn(|i| tubes.iter().map(|t| t.hi[i]).fold(f64::NEG_INFINITY, f64::max).max(0.0));
        let dims: [usize; 3] = std::array::from_fn(|i| ((hi[i] - lo[i]) / cell).ceil() as usize + 1);
        let range = |t: &Tube, i: usize| {
            let a = ((t.lo[i] - lo[i]) / cell).floor().max(0.0) as usize;
            let b = (((t.hi[i] - lo[i]) / cell).floor() as usize).min(dims[i] - 1);
            a..=b
        };
        let n = dims[0] * dims[1] * dims[2];
        let mut count = vec![0u32; n + 1];
        let each = |f: &mut dyn FnMut(usize, usize)| {
            for (ti, t) in tubes.iter().enumerate() {
                for k in range(t, 2) {
                    for j in range(t, 1) {
                        for i in range(t, 0) {
                            f(ti, (k * dims[1] + j) * dims[0] + i);
                        }
                    }
                }
            }
        };
        each(&mut |_, c| count[c + 1] += 1);
        for c in 0..n {
            count[c + 1] += count[c];
        }
        let mut items = vec![0u32; count[n] as usize];
        let mut fill = count.clone();
        each(&mut |ti, c| {
            items[fill[c] as usize] = ti as u32;
            fill[c] += 1;
        });
        TubeGrid { tubes, lo, cell, dims, start: count, items }
    }

    /// The tube of lowest precedence value holding p (the first listed among equals), if any.
    pub(crate) fn query(&self, p: V3) -> Option<Hit> {
        let mut c = 0;
        for i in (0..3).rev() {
            let f = ((p[i] - self.lo[i]) / self.cell).floor();
            if f < 0.0 || f >= self.dims[i] as f64 {
                return None;
            }
            c = c * self.dims[i] + f as usize;
        }
        let mut best: Option<Hit> = None;
        for &ti in &self.items[self.start[c] as usize..self.start[c + 1] as usize] {
            let t = &self.tubes[ti as usize];
            if best.is_some_and(|b| b.prio <= t.prio) {
                continue;
            }
            if let Some(tissue) = t.tissue_at(p) {
                best = Some(Hit { tissue, prio: t.prio, gate: t.gate });
            }
        }
        best
    }
}

/// Tubes of one kind along a smooth curve through the control points (shape::curve), and their
/// fat sheaths `sheath` mm wider when that is given.
pub(crate) fn chain(ctrl: &[(V3, f64)], make: impl Fn(V3, V3, f64, f64) -> Tube, sheath: Option<f64>) -> Vec<Tube> {
    let pts = super::shape::curve(ctrl, 4);
    let mut out: Vec<Tube> = pts.windows(2).map(|w| make(w[0].0, w[1].0, w[0].1, w[1].1)).collect();
    if let Some(m) = sheath {
        let sheaths: Vec<Tube> = out.iter().map(|t| t.sheath(m, Tissue::Fat)).collect();
        out.extend(sheaths);
    }
    out
}
