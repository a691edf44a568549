//! Small geometry shared by the anatomy: vectors, smooth profiles along one axis, rotations and a
//! deterministic value noise. Everything is in mm, world (x, y, z).

/// A point or a direction (x, y, z).
pub(crate) type V3 = [f64; 3];

pub(crate) fn add(a: V3, b: V3) -> V3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

pub(crate) fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

pub(crate) fn mul(a: V3, s: f64) -> V3 {
    [a[0] * s, a[1] * s, a[2] * s]
}

pub(crate) fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub(crate) fn cross(a: V3, b: V3) -> V3 {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

pub(crate) fn norm(a: V3) -> f64 {
    dot(a, a).sqrt()
}

pub(crate) fn unit(a: V3) -> V3 {
    mul(a, 1.0 / norm(a).max(1e-12))
}

/// `v` rotated about the unit axis `k` by `t` radians (Rodrigues' formula).
pub(crate) fn rotate(v: V3, k: V3, t: f64) -> V3 {
    let (s, c) = t.sin_cos();
    add(add(mul(v, c), mul(cross(k, v), s)), mul(k, dot(k, v) * (1.0 - c)))
}

/// A unit vector perpendicular to the unit vector `d`.
pub(crate) fn perp(d: V3) -> V3 {
    let other = if d[2].abs() < 0.9 { [0.0, 0.0, 1.0] } else { [1.0, 0.0, 0.0] };
    unit(cross(d, other))
}

pub(crate) fn smoothstep(e0: f64, e1: f64, x: f64) -> f64 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// A Gaussian bump of height 1 at `c` with width `w`.
pub(crate) fn bump(x: f64, c: f64, w: f64) -> f64 {
    (-((x - c) / w).powi(2)).exp()
}

/// The larger of a and b, rounded over a width k so surfaces built from it have no crease.
pub(crate) fn smooth_max(a: f64, b: f64, k: f64) -> f64 {
    let h = (0.5 + 0.5 * (a - b) / k).clamp(0.0, 1.0);
    b + (a - b) * h + k * h * (1.0 - h)
}

/// Sum of squares of q / s: at most 1 inside the axis-aligned ellipsoid of semi-axes s.
pub(crate) fn ellipsoid(q: V3, s: V3) -> f64 {
    (q[0] / s[0]).powi(2) + (q[1] / s[1]).powi(2) + (q[2] / s[2]).powi(2)
}

/// A smooth function of one variable through control points: cubic Hermite with Catmull-Rom
/// tangents (so it passes through every point without corners), constant beyond the ends.
#[derive(Clone, Debug)]
pub(crate) struct Profile {
    k: Vec<(f64, f64)>,
}

impl Profile {
    /// Control points (x, y) in any order; x values must differ.
    pub(crate) fn new(mut k: Vec<(f64, f64)>) -> Profile {
        k.sort_by(|a, b| a.0.total_cmp(&b.0));
        Profile { k }
    }

    fn slope(&self, i: usize) -> f64 {
        let n = self.k.len();
        if i == 0 || i + 1 >= n {
            return 0.0;
        }
        (self.k[i + 1].1 - self.k[i - 1].1) / (self.k[i + 1].0 - self.k[i - 1].0)
    }

    pub(crate) fn at(&self, x: f64) -> f64 {
        let k = &self.k;
        let n = k.len();
        if x <= k[0].0 {
            return k[0].1;
        }
        if x >= k[n - 1].0 {
            return k[n - 1].1;
        }
        let i = k.partition_point(|p| p.0 <= x) - 1;
        let (x0, y0, x1, y1) = (k[i].0, k[i].1, k[i + 1].0, k[i + 1].1);
        let h = x1 - x0;
        let t = (x - x0) / h;
        let (t2, t3) = (t * t, t * t * t);
        (2.0 * t3 - 3.0 * t2 + 1.0) * y0
            + (t3 - 2.0 * t2 + t) * h * self.slope(i)
            + (-2.0 * t3 + 3.0 * t2) * y1
            + (t3 - t2) * h * self.slope(i + 1)
    }
}

/// A 64-bit mix (splitmix64's finaliser): neighbouring inputs give unrelated outputs.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn lattice(i: i64, j: i64, k: i64, seed: u64) -> f64 {
    let h = mix(seed ^ mix((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ mix((j as u64) ^ mix(k as u64 ^ 0x5851_f42d))));
    (h >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

/// Value noise in [-1, 1] with features about `cell` mm across: random values on a lattice,
/// blended with smoothstep weights. A pure function of the point and seed, so rendering is the same
/// on any number of threads.
pub(crate) fn value_noise(p: V3, cell: f64, seed: u64) -> f64 {
    let f: V3 = std::array::from_fn(|a| p[a] / cell);
    let i: [i64; 3] = std::array::from_fn(|a| f[a].floor() as i64);
    let w: V3 = std::array::from_fn(|a| {
        let t = f[a] - i[a] as f64;
        t * t * (3.0 - 2.0 * t)
    });
    let mut acc = 0.0;
    for c in 0..8 {
        let (dx, dy, dz) = ((c & 1) as i64, ((c >> 1) & 1) as i64, ((c >> 2) & 1) as i64);
        let wt = (if dx == 1 { w[0] } else { 1.0 - w[0] }) * (if dy == 1 { w[1] } else { 1.0 - w[1] }) * (if dz == 1 { w[2] } else { 1.0 - w[2] });
        acc += wt * lattice(i[0] + dx, i[1] + dy, i[2] + dz, seed);
    }
    acc
}

/// Points (with radii) along a Catmull-Rom curve through the control points, `per` pieces per
/// span: vessels drawn through a few landmarks come out smooth.
pub(crate) fn curve(ctrl: &[(V3, f64)], per: usize) -> Vec<(V3, f64)> {
    let n = ctrl.len();
    let mut out = vec![ctrl[0]];
    for i in 0..n.saturating_sub(1) {
        let p0 = ctrl[i.saturating_sub(1)].0;
        let (p1, p2) = (ctrl[i].0, ctrl[i + 1].0);
        let p3 = ctrl[(i + 2).min(n - 1)].0;
        for k in 1..=per {
            let t = k as f64 / per as f64;
            let (t2, t3) = (t * t, t * t * t);
            let p = std::array::from_fn(|a| {
                0.5 * (2.0 * p1[a] + (p2[a] - p0[a]) * t + (2.0 * p0[a] - 5.0 * p1[a] + 4.0 * p2[a] - p3[a]) * t2 + (3.0 * p1[a] - p0[a] - 3.0 * p2[a] + p3[a]) * t3)
            });
            out.push((p, ctrl[i].1 + (ctrl[i + 1].1 - ctrl[i].1) * t));
        }
    }
    out
}
