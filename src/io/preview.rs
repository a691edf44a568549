//! PNG previews: the middle axial, coronal and sagittal slices of a volume side by side, grey
//! levels spanning the first volume's 0.5th to 99.5th percentile. Several volumes (for
//! comparisons) stack as rows.
//!
//! The display is radiological for arrays in the world's RAS+ frame (+x the patient's right, +y
//! anterior, +z superior; what DICOM and NIfTI input are reoriented to, and the thorax phantom's
//! frame): the axial slice seen from the feet, anterior up and the patient's right on the left;
//! the coronal slice seen from the front, superior up; the sagittal slice with anterior on the
//! left. Pixels are square in mm, so thick slices keep their proportions; volumes smaller than
//! [`MIN_PANE`] pixels are enlarged (nearest neighbour, by a whole factor along the axis of the
//! finest voxels) so a 64^3 volume stays legible.
use crate::error::{Error, Result};
use std::path::Path;

/// The smallest size, in pixels, of a pane's longer side: smaller volumes are enlarged to it.
pub const MIN_PANE: usize = 192;

/// Pixels between the panes of a row and between rows.
pub const GAP: usize = 4;

/// The panes' size in pixels along (z, y, x) for a volume of `shape` with voxels of `voxel_mm`
/// (z, y, x): each axis's extent in mm at one pitch, so anisotropic voxels (thick slices) keep
/// their proportions. The pitch is the smallest voxel size divided by the whole factor that
/// brings the longest extent to [`MIN_PANE`] pixels: a 64^3 volume of isotropic voxels is drawn
/// 3 pixels per voxel, a 512^3 one 1 pixel per voxel.
pub fn pane_pixels(shape: [usize; 3], voxel_mm: [f64; 3]) -> [usize; 3] {
    let ok = voxel_mm.iter().all(|v| v.is_finite() && *v > 0.0);
    let vs = if ok { voxel_mm } else { [1.0; 3] };
    let ext: [f64; 3] = std::array::from_fn(|a| shape[a].max(1) as f64 * vs[a]);
    let finest = vs.iter().copied().fold(f64::INFINITY, f64::min);
    let longest = ext.iter().copied().fold(0.0, f64::max);
    // The epsilon keeps 192 * 0.7 / (64 * 0.7) at 3 where rounding would make it 3.0000000001.
    let k = ((MIN_PANE as f64 * finest / longest - 1e-9).ceil() as usize).max(1);
    // Voxel sizes of absurd ratios (a size in m among sizes in mm) would ask for panes of
    // millions of pixels: the longest pane is held to MIN_PANE plus four pixels per voxel of the
    // largest axis (more than any whole factor of voxels of one size asks for).
    let limit = (MIN_PANE + 4 * shape.iter().copied().max().unwrap_or(1)) as f64;
    let pitch = (finest / k as f64).max(longest / limit);
    std::array::from_fn(|a| ((ext[a] / pitch).round() as usize).max(1))
}

/// The voxel index along an axis of `n` voxels drawn as `px` pixels, at pixel `p` (nearest).
fn voxel_at(p: usize, px: usize, n: usize) -> usize {
    (((2 * p + 1) * n) / (2 * px)).min(n - 1)
}

/// One row of three slices as a grey image (width, height, pixels), panes of `px` pixels.
fn row(shape: [usize; 3], px: [usize; 3], v: &[f32], lo: f32, hi: f32) -> (usize, usize, Vec<u8>) {
    let [nz, ny, nx] = shape;
    let [pz, py, pxx] = px;
    let w = 2 * pxx + py + 2 * GAP;
    let h = py.max(pz);
    let mut img = vec![0u8; w * h];
    let grey = |x: f32| (((x - lo) / (hi - lo).max(1e-20)).clamp(0.0, 1.0) * 255.0).round() as u8;
    let (kz, jy, ix) = (nz / 2, ny / 2, nx / 2);
    let (z, y, x) = (|r| voxel_at(r, pz, nz), |r| voxel_at(r, py, ny), |c| voxel_at(c, pxx, nx));
    for r in 0..py {
        for c in 0..pxx {
            img[r * w + c] = grey(v[(kz * ny + (ny - 1 - y(r))) * nx + (nx - 1 - x(c))]);
        }
    }
    for r in 0..pz {
        let k = nz - 1 - z(r);
        for c in 0..pxx {
            img[r * w + pxx + GAP + c] = grey(v[(k * ny + jy) * nx + (nx - 1 - x(c))]);
        }
        for c in 0..py {
            img[r * w + 2 * pxx + 2 * GAP + c] = grey(v[(k * ny + (ny - 1 - y(c))) * nx + ix]);
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

/// Writes the volumes (all of `shape`, (nz, ny, nx), voxels of `voxel_mm`) as rows of one PNG,
/// panes of [`pane_pixels`] with [`GAP`] pixels between them; grey levels from the first volume.
/// Errors: `Error::Shape` for no volumes or lengths that disagree with `shape`, `Error::Io`
/// naming the path.
pub fn write(path: &Path, shape: [usize; 3], voxel_mm: [f64; 3], volumes: &[&[f32]]) -> Result<()> {
    let n = shape.iter().product::<usize>();
    if volumes.is_empty() || shape.contains(&0) || volumes.iter().any(|v| v.len() != n) {
        return Err(Error::Shape(format!("a preview takes one or more volumes of {shape:?} ({n} values each)")));
    }
    let (lo, hi) = percentiles(volumes[0]);
    let px = pane_pixels(shape, voxel_mm);
    let rows: Vec<_> = volumes.iter().map(|v| row(shape, px, v, lo, hi)).collect();
    let w = rows[0].0;
    let mut img = Vec::new();
    for (_, _, pixels) in &rows {
        img.extend_from_slice(pixels);
        img.extend(std::iter::repeat_n(0u8, GAP * w));
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
