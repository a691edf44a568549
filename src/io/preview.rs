//! PNG previews: the middle axial, coronal and sagittal slices of a volume side by side, grey
//! levels spanning the first volume's 0.5th to 99.5th percentile. Several volumes (for
//! comparisons) stack as rows.
//!
//! The display is radiological for arrays in the world's RAS+ frame (+x the patient's right, +y
//! anterior, +z superior; what DICOM and NIfTI input are reoriented to, and the thorax phantom's
//! frame): the axial slice seen from the feet, anterior up and the patient's right on the left;
//! the coronal slice seen from the front, superior up; the sagittal slice with anterior on the
//! left. Volumes smaller than [`MIN_PANE`] pixels are enlarged by a whole factor (nearest
//! neighbour) so a 64^3 volume stays legible.
use crate::error::{Error, Result};
use std::path::Path;

/// The smallest size, in pixels, of a pane's longer side: smaller volumes are enlarged to it.
pub const MIN_PANE: usize = 192;

/// The whole enlargement factor of a volume of `shape`.
pub fn scale(shape: [usize; 3]) -> usize {
    let longest = shape.iter().copied().max().unwrap_or(1).max(1);
    MIN_PANE.div_ceil(longest).max(1)
}

/// One row of three slices as a grey image: (width, height, pixels), before enlargement.
fn row(shape: [usize; 3], v: &[f32], lo: f32, hi: f32) -> (usize, usize, Vec<u8>) {
    let [nz, ny, nx] = shape;
    let w = nx + nx + ny + 8;
    let h = ny.max(nz);
    let mut img = vec![0u8; w * h];
    let grey = |x: f32| (((x - lo) / (hi - lo).max(1e-20)).clamp(0.0, 1.0) * 255.0).round() as u8;
    let (kz, jy, ix) = (nz / 2, ny / 2, nx / 2);
    for r in 0..ny {
        for c in 0..nx {
            img[r * w + c] = grey(v[(kz * ny + (ny - 1 - r)) * nx + (nx - 1 - c)]);
        }
    }
    for r in 0..nz {
        let k = nz - 1 - r;
        for c in 0..nx {
            img[r * w + nx + 4 + c] = grey(v[(k * ny + jy) * nx + (nx - 1 - c)]);
        }
        for c in 0..ny {
            img[r * w + 2 * nx + 8 + c] = grey(v[(k * ny + (ny - 1 - c)) * nx + ix]);
        }
    }
    (w, h, img)
}

/// `img` (w x h) enlarged `s` times in both directions.
fn enlarge(w: usize, h: usize, img: &[u8], s: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(w * h * s * s);
    for r in 0..h {
        let line: Vec<u8> = img[r * w..(r + 1) * w].iter().flat_map(|&p| std::iter::repeat_n(p, s)).collect();
        for _ in 0..s {
            out.extend_from_slice(&line);
        }
    }
    out
}

fn percentiles(v: &[f32]) -> (f32, f32) {
    let mut s: Vec<f32> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return (0.0, 1.0);
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
    (at(0.005), at(0.995))
}

/// Writes the volumes (all of `shape`, (nz, ny, nx)) as rows of one PNG, each row
/// [`scale`]`(shape)` times the size of its slices plus gaps; grey levels from the first volume.
/// Errors: `Error::Shape` for no volumes or lengths that disagree with `shape`, `Error::Io`
/// naming the path.
pub fn write(path: &Path, shape: [usize; 3], volumes: &[&[f32]]) -> Result<()> {
    let n = shape.iter().product::<usize>();
    if volumes.is_empty() || shape.contains(&0) || volumes.iter().any(|v| v.len() != n) {
        return Err(Error::Shape(format!("a preview takes one or more volumes of {shape:?} ({n} values each)")));
    }
    let (lo, hi) = percentiles(volumes[0]);
    let s = scale(shape);
    let rows: Vec<_> = volumes.iter().map(|v| row(shape, v, lo, hi)).collect();
    let w = rows[0].0 * s;
    let mut img = Vec::new();
    for (rw, rh, px) in &rows {
        img.extend(enlarge(*rw, *rh, px, s));
        img.extend(std::iter::repeat_n(0u8, 4 * w));
    }
    let h = img.len() / w;
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, w as u32, h as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let err = |e: png::EncodingError| Error::io(path, std::io::Error::other(e.to_string()));
        let mut wr = enc.write_header().map_err(err)?;
        wr.write_image_data(&img).map_err(err)?;
    }
    super::write_atomic(path, &bytes)
}
