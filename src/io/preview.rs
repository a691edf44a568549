//! PNG previews: the middle axial, coronal and sagittal slices of a volume side by side, grey
//! levels spanning the volume's 0.5th to 99.5th percentile. Several volumes (for comparisons)
//! stack as rows.
use crate::error::{Error, Result};
use std::path::Path;

/// One row of three slices as a grey image: (width, height, pixels).
fn row(shape: [usize; 3], v: &[f32], lo: f32, hi: f32) -> (usize, usize, Vec<u8>) {
    let [nz, ny, nx] = shape;
    let w = nx + nx + ny + 8;
    let h = ny.max(nz);
    let mut img = vec![0u8; w * h];
    let grey = |x: f32| (((x - lo) / (hi - lo).max(1e-20)).clamp(0.0, 1.0) * 255.0).round() as u8;
    let (kz, jy, ix) = (nz / 2, ny / 2, nx / 2);
    for j in 0..ny {
        for i in 0..nx {
            img[j * w + i] = grey(v[(kz * ny + j) * nx + i]);
        }
    }
    // Coronal and sagittal with z pointing up.
    for k in 0..nz {
        let y = nz - 1 - k;
        for i in 0..nx {
            img[y * w + nx + 4 + i] = grey(v[(k * ny + jy) * nx + i]);
        }
        for j in 0..ny {
            img[y * w + 2 * nx + 8 + j] = grey(v[(k * ny + j) * nx + ix]);
        }
    }
    (w, h, img)
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

/// Writes the volumes (all of `shape`) as rows of one PNG; grey levels from the first volume.
pub fn write(path: &Path, shape: [usize; 3], volumes: &[&[f32]]) -> Result<()> {
    let (lo, hi) = percentiles(volumes.first().copied().unwrap_or(&[]));
    let rows: Vec<_> = volumes.iter().map(|v| row(shape, v, lo, hi)).collect();
    let (w, h) = (rows[0].0, rows.iter().map(|r| r.1 + 4).sum::<usize>());
    let mut img = Vec::with_capacity(w * h);
    for r in &rows {
        img.extend_from_slice(&r.2);
        img.extend(std::iter::repeat_n(0u8, 4 * w));
    }
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
