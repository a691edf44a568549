//! Redundancy weights for FBP/FDK on circular scans, from any list of view angles and any
//! detector offset: one mechanism for full scans, short scans (Parker's case), scans in between,
//! overscans, limited angles, either rotation direction, lists that wrap through 360 degrees,
//! uneven spacing and displaced (half-fan) detectors.
//!
//! A ray is (b, t): source angle b and detector coordinate t at the rotation axis. Its line is
//! measured again by the conjugate ray (b + pi - 2 gamma(t), -t), with gamma(t) = atan(t / dso)
//! for divergent beams (u points along (-sin b, cos b); tests/fbp.rs checks short against full
//! scans, which a wrong sign fails) and 0 for parallel ones.
//! Each measurement has a smooth coverage c(b) d(t): c is 1 inside the scanned arc and falls to 0
//! over a ramp at its ends, d is 1 on the detector and falls to 0 across the region a displaced
//! detector shares with its mirror image. A ray's weight is its coverage over the sum of the
//! coverages of both measurements of its line (Silver, "A method for including redundant data in
//! computed tomography", Med. Phys. 27, 2000; for offset detectors the same sin^2 transition as
//! Wang, Med. Phys. 29, 2002), so the weights of every line sum to one whatever the scan. Each
//! view also carries its own angular interval: half the distance between its neighbours once the
//! angles are taken modulo 360 and sorted, so order, direction and wrapping do not matter.
use super::geometry::{Beam, Geometry, Kind};
use crate::error::{Error, Result};
use std::f64::consts::PI;

const TAU: f64 = 2.0 * PI;
/// Coverage inside the scan never drops below this, so a line measured once gets weight one.
const FLOOR: f64 = 1e-9;

/// The weights of one circular scan.
#[derive(Clone, Debug)]
pub struct Redundancy {
    /// Angular interval of each view in radians, in the geometry's view order.
    pub dbeta: Vec<f64>,
    /// None for a scan around the whole circle; else (start, length, ramp) of the arc in radians.
    arc: Option<(f64, f64, f64)>,
    /// Source to axis distance (0 for parallel beams).
    dso: f64,
    /// Detector extent at the axis [t_min, t_max] and the taper width at each end.
    t_range: [f64; 2],
    taper: [f64; 2],
    /// What the scan cannot support exactly, in words.
    pub warnings: Vec<String>,
}

fn ramp(x: f64) -> f64 {
    (PI / 2.0 * x.clamp(0.0, 1.0)).sin().powi(2)
}

impl Redundancy {
    /// The weights for `g`'s circular scan. Errors when the views span no angle at all.
    pub fn new(g: &Geometry) -> Result<Redundancy> {
        let angles = g
            .angles_deg
            .as_ref()
            .filter(|_| matches!(g.kind, Kind::Parallel | Kind::Fan | Kind::Cone))
            .ok_or_else(|| Error::Geometry("FBP/FDK need a circular scan (parallel, fan or cone), not a vector geometry".into()))?;
        let n = angles.len();
        let pos: Vec<f64> = angles.iter().map(|a| a.to_radians().rem_euclid(TAU)).collect();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| pos[a].total_cmp(&pos[b]).then(a.cmp(&b)));
        let sorted: Vec<f64> = order.iter().map(|&i| pos[i]).collect();
        // Gaps after each sorted view, the last one wrapping around the circle.
        let gaps: Vec<f64> = (0..n).map(|k| if k + 1 < n { sorted[k + 1] - sorted[k] } else { sorted[0] + TAU - sorted[k] }).collect();
        let (widest, &gap) = gaps.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap();
        if n < 2 || gap >= TAU - 1e-9 {
            return Err(Error::Geometry(format!(
                "all {n} views are at {:.3} degrees: FBP/FDK need views over an angular range (arc_deg 0?)",
                angles[0]
            )));
        }
        let mut typical = gaps.clone();
        typical.sort_by(f64::total_cmp);
        let median = typical[n / 2];
        let full = gap <= 1.5 * median;
        // Positions along the scan, from the view after the widest gap (or any view on a full
        // circle), with a half step before the first view.
        let first = (widest + 1) % n;
        let step0 = gaps[first];
        let along: Vec<f64> = (0..n).map(|k| (sorted[(first + k) % n] - sorted[first]).rem_euclid(TAU) + step0 / 2.0).collect();
        let mut dbeta_sorted = vec![0.0; n];
        for k in 0..n {
            let prev = if k > 0 { along[k - 1] } else if full { along[n - 1] - TAU } else { along[0] - step0 };
            let next = if k + 1 < n {
                along[k + 1]
            } else if full {
                along[0] + TAU
            } else {
                along[n - 1] + (along[n - 1] - along[n.saturating_sub(2)])
            };
            dbeta_sorted[k] = (next - prev) / 2.0;
        }
        let mut dbeta = vec![0.0; n];
        for (k, &v) in dbeta_sorted.iter().enumerate() {
            dbeta[order[(first + k) % n]] = v;
        }

        let divergent = g.beam == Beam::Divergent;
        let dso = if divergent { g.source_origin } else { 0.0 };
        let mag = if divergent { g.source_origin / (g.source_origin + g.origin_detector) } else { 1.0 };
        let half = g.det_shape[1] as f64 / 2.0 * g.det_spacing[1] * mag;
        let off = g.det_offset[1] * mag;
        let t_range = [off - half, off + half];
        // The region a displaced detector shares with its mirror image is blended smoothly; a
        // centred detector is symmetric and needs no blend.
        let shared = t_range[0].abs().min(t_range[1].abs());
        let blend = if t_range[0] < 0.0 && t_range[1] > 0.0 && (t_range[0] + t_range[1]).abs() > 1e-9 * half { 2.0 * shared } else { 0.0 };
        let taper = if t_range[0].abs() < t_range[1].abs() { [blend, 0.0] } else { [0.0, blend] };
        let gamma_max = if divergent { (t_range[0].abs().max(t_range[1].abs()) / dso).atan() } else { 0.0 };

        let start = sorted[first] - step0 / 2.0;
        let length = along[n - 1] + (along[n - 1] - along[n.saturating_sub(2)]) / 2.0;
        let arc = (!full).then(|| (start, length, (length - PI).clamp(0.1, PI / 2.0).min(length / 2.0)));
        let mut r = Redundancy { dbeta, arc, dso, t_range, taper, warnings: Vec::new() };
        let (lo, hi) = angles.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        if n >= 4 && lo >= -TAU && hi <= TAU && hi - lo < 7.0 {
            r.warnings.push(format!(
                "the {n} angles lie within {lo:.3} .. {hi:.3} degrees: if they are radians, give them in degrees (angles_deg)"
            ));
        }
        r.warnings.extend(r.check(divergent, gamma_max, g.kind == Kind::Parallel));
        Ok(r)
    }

    /// Coverage of source angle b by the scanned arc.
    fn arc_coverage(&self, b: f64) -> f64 {
        match self.arc {
            None => 1.0,
            Some((start, len, eps)) => {
                let s = (b - start).rem_euclid(TAU);
                if s > len {
                    0.0
                } else {
                    (ramp(s / eps) * ramp((len - s) / eps)).max(FLOOR)
                }
            }
        }
    }

    /// Coverage of detector coordinate t.
    fn det_coverage(&self, t: f64) -> f64 {
        let [lo, hi] = self.t_range;
        if t < lo || t > hi {
            return 0.0;
        }
        let edge = |d: f64, w: f64| if w > 0.0 { ramp(d / w) } else { 1.0 };
        (edge(t - lo, self.taper[0]) * edge(hi - t, self.taper[1])).max(FLOOR)
    }

    fn gamma(&self, t: f64) -> f64 {
        if self.dso > 0.0 {
            (t / self.dso).atan()
        } else {
            0.0
        }
    }

    /// The weight in [0, 1] of ray (b, t): b the source angle in radians, t the detector
    /// coordinate at the axis in mm (for divergent beams, scaled by source_origin /
    /// (source_origin + origin_detector)). Multiply by the view's `dbeta` for FBP.
    pub fn weight(&self, b: f64, t: f64) -> f64 {
        let own = self.arc_coverage(b) * self.det_coverage(t);
        let other = self.arc_coverage(b + PI - 2.0 * self.gamma(t)) * self.det_coverage(-t);
        if own + other <= 0.0 {
            0.0
        } else {
            own / (own + other)
        }
    }

    /// Whether every line through the field of view is measured: sampled over source angles
    /// and detector coordinates; the fraction missing, in words, when some are not.
    fn check(&self, divergent: bool, gamma_max: f64, parallel: bool) -> Vec<String> {
        let mut out = Vec::new();
        let [lo, hi] = self.t_range;
        if lo > 0.0 || hi < 0.0 {
            out.push(format!(
                "the detector (offset {:.1} mm at the axis) does not reach the rotation axis: lines within {:.1} mm of it are never measured",
                (lo + hi) / 2.0,
                lo.abs().min(hi.abs())
            ));
        }
        let reach = lo.abs().max(hi.abs());
        // Lines inside the hole a detector leaves around the axis are said above, not again here.
        let hole = if lo > 0.0 || hi < 0.0 { lo.abs().min(hi.abs()) } else { 0.0 };
        let (nb, nt) = (720, 64);
        let mut missing = 0usize;
        for i in 0..nb {
            let b = TAU * (i as f64 + 0.5) / nb as f64;
            for j in 0..nt {
                let t = reach * (2.0 * (j as f64 + 0.5) / nt as f64 - 1.0);
                if t.abs() < hole {
                    continue;
                }
                let seen = |b: f64, t: f64| self.arc_coverage(b) > 0.0 && (lo..=hi).contains(&t);
                if !seen(b, t) && !seen(b + PI - 2.0 * self.gamma(t), -t) {
                    missing += 1;
                }
            }
        }
        if missing > 0 {
            let arc = self.arc.map_or(360.0, |a| a.1.to_degrees());
            let needed = if parallel {
                "180".to_string()
            } else if divergent && lo < 0.0 && hi > 0.0 && (lo + hi).abs() > 1e-9 * reach {
                "360 (a displaced detector needs a full scan)".to_string()
            } else {
                format!("{:.1} (180 + the fan angle)", 180.0 + 2.0 * gamma_max.to_degrees())
            };
            out.push(format!(
                "the views cover {arc:.1} degrees, an exact reconstruction needs {needed}: {:.0}% of the lines through the field of view are never measured, so FBP/FDK cannot be exact (limited-angle artefacts)",
                100.0 * missing as f64 / (nb * nt) as f64
            ));
        }
        out
    }
}
