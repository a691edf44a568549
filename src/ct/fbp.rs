//! Analytic reconstruction: FBP for parallel and fan beams, FDK for circular cone beams, for any
//! list of view angles (redundancy.rs weighs each ray's share of its line). Ramp filter (Ram-Lak built in the spatial domain,
//! zero-padded, optional window) along detector rows, then a voxel-driven backprojection with
//! bilinear detector interpolation. Unmatched to the Siddon pair on purpose: it is the fast
//! baseline, not an adjoint.
use super::geometry::{Beam, Geometry, Kind};
use super::redundancy::Redundancy;
use crate::error::{Error, Result};
use rayon::prelude::*;
use rustfft::{num_complex::Complex, FftPlanner};
use std::f64::consts::PI;

/// Apodisation window multiplied onto the ramp filter's frequency response, as a function of
/// the normalised frequency w in [0, pi] (pi = Nyquist of the detector sampling).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// No window: the bare Ram-Lak ramp (Ramachandran-Lakshminarayanan 1971), sharpest, noisiest.
    RamLak,
    /// sin(w/2) / (w/2), the Shepp-Logan filter (Shepp-Logan 1974).
    SheppLogan,
    /// cos(w/2).
    Cosine,
    /// 0.54 + 0.46 cos(w).
    Hamming,
    /// 0.5 (1 + cos(w)), zero at Nyquist: the smoothest; the command line's default.
    Hann,
}

impl Window {
    /// The window of a command-line name: ram-lak (or ramp), shepp-logan, cosine, hamming, hann.
    /// Errors: `Error::Argument` for any other name.
    pub fn parse(s: &str) -> Result<Window> {
        Ok(match s {
            "ram-lak" | "ramp" => Window::RamLak,
            "shepp-logan" => Window::SheppLogan,
            "cosine" => Window::Cosine,
            "hamming" => Window::Hamming,
            "hann" => Window::Hann,
            _ => return Err(Error::Argument(format!("unknown filter window {s:?}: expected ram-lak, shepp-logan, cosine, hamming or hann"))),
        })
    }
    /// Gain at normalised frequency w in [0, pi].
    fn gain(self, w: f64) -> f64 {
        match self {
            Window::RamLak => 1.0,
            Window::SheppLogan => {
                if w == 0.0 {
                    1.0
                } else {
                    (w / 2.0).sin() / (w / 2.0)
                }
            }
            Window::Cosine => (w / 2.0).cos(),
            Window::Hamming => 0.54 + 0.46 * w.cos(),
            Window::Hann => 0.5 * (1.0 + w.cos()),
        }
    }
}

/// Frequency response of the windowed Ram-Lak filter for rows padded to `len` (a power of two).
fn ramp_response(len: usize, window: Window) -> Vec<f64> {
    let mut h = vec![Complex::new(0.0, 0.0); len];
    h[0].re = 0.25;
    for n in (1..len / 2).step_by(2) {
        let v = -1.0 / (PI * n as f64).powi(2);
        h[n].re = v;
        h[len - n].re = v;
    }
    FftPlanner::new().plan_fft_forward(len).process(&mut h);
    (0..len)
        .map(|k| {
            let w = 2.0 * PI * k.min(len - k) as f64 / len as f64;
            h[k].re * window.gain(w)
        })
        .collect()
}

/// Filters every detector row in place: q = (p * h) / du, h the windowed Ram-Lak in pixel units.
pub fn ramp_filter(proj: &mut [f32], cols: usize, du: f64, window: Window) {
    let len = (2 * cols).next_power_of_two();
    let resp = ramp_response(len, window);
    let mut planner = FftPlanner::new();
    let fwd = planner.plan_fft_forward(len);
    let inv = planner.plan_fft_inverse(len);
    let scale = 1.0 / (du * len as f64);
    proj.par_chunks_mut(cols).for_each(|row| {
        let mut buf: Vec<Complex<f64>> = (0..len).map(|i| Complex::new(if i < cols { row[i] as f64 } else { 0.0 }, 0.0)).collect();
        fwd.process(&mut buf);
        buf.iter_mut().zip(&resp).for_each(|(b, r)| *b *= r);
        inv.process(&mut buf);
        row.iter_mut().zip(&buf).for_each(|(o, b)| *o = (b.re * scale) as f32);
    });
}

/// What FBP/FDK cannot do exactly on this geometry (too short an arc, a detector that misses the
/// axis), in words, for the caller to print before the work; an error when the views span no
/// angle or the geometry is not a circular scan.
pub fn warnings(g: &Geometry) -> Result<Vec<String>> {
    Ok(Redundancy::new(g)?.warnings)
}

/// FBP (parallel, fan) or FDK (cone), chosen by the geometry. `proj` is (n_views, rows, cols)
/// line integrals; the result (nz, ny, nx) attenuation in 1/mm (the unit of the line integrals
/// over mm).
pub fn fbp(g: &Geometry, proj: &[f32], window: Window) -> Result<Vec<f32>> {
    let red = Redundancy::new(g)?;
    let angles = g.angles_deg.clone().unwrap_or_default();
    if proj.len() != g.n_rays() {
        return Err(Error::Shape(format!("{} projection values, the geometry has {} rays", proj.len(), g.n_rays())));
    }
    let [rows, cols] = g.det_shape;
    // Distances: for divergent beams, detector coordinates are rescaled to the rotation axis.
    let (dso, mag) = match g.beam {
        Beam::Divergent => (g.source_origin, g.source_origin / (g.source_origin + g.origin_detector)),
        Beam::Parallel => (0.0, 1.0),
    };
    // Fan rows are z-planes: only the u axis is magnified.
    let mag_v = if g.kind == Kind::Fan { 1.0 } else { mag };
    let (du, dv) = (g.det_spacing[1] * mag, g.det_spacing[0] * mag_v);
    let (off_u, off_v) = (g.det_offset[1] * mag, g.det_offset[0] * mag_v);
    let (cc, rc) = ((cols as f64 - 1.0) / 2.0, (rows as f64 - 1.0) / 2.0);
    // A displaced detector's rows are widened with zeros to be symmetric about the axis: the
    // filtered rows reach beyond the measured columns, and the conjugate views rely on that part.
    let half = cols as f64 / 2.0 * du;
    let reach = (off_u - half).abs().max((off_u + half).abs());
    let pad_lo = ((reach + off_u - half) / du - 1e-6).ceil().max(0.0) as usize;
    let pad_hi = ((reach - off_u - half) / du - 1e-6).ceil().max(0.0) as usize;
    // The padding is 2 |offset| / spacing columns. A half-fan detector is displaced by under half
    // its width; one displaced by more than its whole width is refused, so the buffer stays
    // within three times the detector's.
    if pad_lo + pad_hi > 2 * cols {
        return Err(Error::Geometry(format!(
            "det_offset u = {} mm puts the detector's centre more than its width ({} mm) from the rotation axis; FBP/FDK need it nearer",
            g.det_offset[1],
            cols as f64 * g.det_spacing[1]
        )));
    }
    let wide = cols + pad_lo + pad_hi;
    let mut q = vec![0f32; angles.len() * rows * wide];
    // Pre-weights: cosine (divergent beams), and each ray's share of its line (redundancy.rs)
    // times its view's angular interval.
    q.par_chunks_mut(rows * wide).enumerate().for_each(|(vi, view)| {
        let b = angles[vi].to_radians();
        for r in 0..rows {
            let v = (r as f64 - rc) * dv + off_v;
            for c in 0..cols {
                let u = (c as f64 - cc) * du + off_u;
                let mut w = red.dbeta[vi] * red.weight(b, u);
                if g.beam == Beam::Divergent {
                    let vz = if g.kind == Kind::Fan { 0.0 } else { v };
                    w *= dso / (dso * dso + u * u + vz * vz).sqrt();
                }
                view[r * wide + pad_lo + c] = proj[(vi * rows + r) * cols + c] * w as f32;
            }
        }
    });
    ramp_filter(&mut q, wide, du, window);
    let rows_of = Rows { rows, cols: wide, col_of_offset: cc + pad_lo as f64, du, dv, off_u, off_v };
    Ok(backproject(g, &q, &angles, dso, &rows_of))
}

/// The filtered rows' layout: `col_of_offset` is the (fractional) column of the detector offset.
struct Rows {
    rows: usize,
    cols: usize,
    col_of_offset: f64,
    du: f64,
    dv: f64,
    off_u: f64,
    off_v: f64,
}

/// Voxel-driven backprojection of filtered rows (weights already applied).
fn backproject(g: &Geometry, q: &[f32], angles: &[f64], dso: f64, l: &Rows) -> Vec<f32> {
    let [nz, ny, nx] = g.volume.shape;
    let (rows, cols) = (l.rows, l.cols);
    let rc = (rows as f64 - 1.0) / 2.0;
    let trig: Vec<(f64, f64)> = angles.iter().map(|a| a.to_radians().sin_cos()).collect();
    let mut vol = vec![0f32; nz * ny * nx];
    let divergent = g.beam == Beam::Divergent;
    let fan = g.kind == Kind::Fan;
    vol.par_chunks_mut(ny * nx).enumerate().for_each(|(k, slice)| {
        for j in 0..ny {
            for i in 0..nx {
                let p = g.volume.voxel_centre(k, j, i);
                let mut acc = 0.0f64;
                for (vi, &(sn, cs)) in trig.iter().enumerate() {
                    let t = -sn * p[0] + cs * p[1]; // along the detector's u axis
                    let (mut u, mut v, mut w) = (t, p[2], 1.0);
                    if divergent {
                        let depth = dso - (cs * p[0] + sn * p[1]); // distance from the source plane
                        let m = dso / depth;
                        u = t * m;
                        if !fan {
                            v = p[2] * m;
                        }
                        w = m * m;
                    }
                    let col = (u - l.off_u) / l.du + l.col_of_offset;
                    let row = (v - l.off_v) / l.dv + rc;
                    acc += w * sample(&q[vi * rows * cols..(vi + 1) * rows * cols], rows, cols, row, col);
                }
                slice[j * nx + i] = acc as f32;
            }
        }
    });
    vol
}

/// Bilinear sample of a (rows, cols) image; zero outside.
fn sample(img: &[f32], rows: usize, cols: usize, r: f64, c: f64) -> f64 {
    if !(r > -1.0 && c > -1.0 && r < rows as f64 && c < cols as f64) {
        return 0.0;
    }
    let (r0, c0) = (r.floor(), c.floor());
    let (fr, fc) = (r - r0, c - c0);
    let (r0, c0) = (r0 as i64, c0 as i64);
    let at = |rr: i64, cc: i64| -> f64 {
        if rr < 0 || cc < 0 || rr >= rows as i64 || cc >= cols as i64 {
            0.0
        } else {
            img[rr as usize * cols + cc as usize] as f64
        }
    };
    (1.0 - fr) * ((1.0 - fc) * at(r0, c0) + fc * at(r0, c0 + 1)) + fr * ((1.0 - fc) * at(r0 + 1, c0) + fc * at(r0 + 1, c0 + 1))
}
