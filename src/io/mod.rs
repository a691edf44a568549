//! Files: volumes and projections (.npy; NIfTI .nii/.nii.gz for volumes; DICOM CT series, read
//! only), PNG previews, and writes that never leave a half-written file under the final name.
pub mod dicom;
pub mod nifti;
pub mod npy;
pub mod output;
#[cfg(feature = "preview")]
pub mod preview;

use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;

/// The u16 at byte `p` of a binary header (NIfTI, DICOM), big- or little-endian.
pub(crate) fn u16_at(b: &[u8], p: usize, big: bool) -> u16 {
    let a = [b[p], b[p + 1]];
    if big { u16::from_be_bytes(a) } else { u16::from_le_bytes(a) }
}

/// The u32 at byte `p` of a binary header (NIfTI, DICOM), big- or little-endian.
pub(crate) fn u32_at(b: &[u8], p: usize, big: bool) -> u32 {
    let a = [b[p], b[p + 1], b[p + 2], b[p + 3]];
    if big { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) }
}

/// The folder a file name lies in ("." for a bare name).
pub fn folder_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Writes `bytes` to `path` all or nothing: into a hidden temporary file in the same folder,
/// synced, then renamed over `path` (the temporary is removed on failure). Errors: `Error::Io`
/// naming `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = folder_of(path);
    let name = path.file_name().ok_or_else(|| Error::io(path, std::io::Error::other("not a file name")))?;
    let tmp = dir.join(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| Error::io(path, e))
}

/// An f32 array with its shape (C order), and the voxel size (z, y, x) when the file has one.
#[derive(Debug, Clone)]
pub struct Array {
    /// Dimensions, slowest first: (nz, ny, nx) for volumes, (views, rows, cols) for projections.
    pub shape: Vec<usize>,
    /// The values, f32 in row-major (C) order; as many as the product of `shape`.
    pub data: Vec<f32>,
    /// Voxel size (sz, sy, sx) in mm from NIfTI's affine or DICOM's spacing; None for .npy.
    pub voxel_size: Option<[f64; 3]>,
}

fn is_nifti(path: &Path) -> bool {
    let s = path.to_string_lossy();
    s.ends_with(".nii") || s.ends_with(".nii.gz")
}

/// Reads .npy or NIfTI by extension, and a folder or a .dcm file as a DICOM CT series (mu in
/// 1/mm, reoriented to the world axes as NIfTI; skipped non-DICOM files are noted on stderr); rejects NaN and infinity
/// with the first bad index.
pub fn read_array(path: &Path) -> Result<Array> {
    let a = if dicom::is_dicom_path(path) {
        let s = dicom::read_series(path)?;
        for n in s.notes() {
            eprintln!("note: {n}");
        }
        s.into_mu()?
    } else if is_nifti(path) {
        nifti::read(path)?
    } else if path.extension().is_some_and(|e| e == "npy") {
        npy::read(path)?
    } else {
        return Err(Error::io(path, std::io::Error::other("unknown file type: expected .npy, .nii, .nii.gz, or DICOM (a series folder or a .dcm file)")));
    };
    if let Some(i) = a.data.iter().position(|v| !v.is_finite()) {
        let why = if a.data[i].is_nan() { "" } else { ": infinite in the file, or beyond float32's range as stored or once scaled" };
        return Err(Error::io(path, std::io::Error::other(format!("holds a non-finite value ({}) at flat index {i}{why}", a.data[i]))));
    }
    Ok(a)
}

/// Writes .npy or NIfTI by extension (NIfTI takes the voxel size, (z, y, x) mm).
pub fn write_array(path: &Path, shape: &[usize], data: &[f32], voxel_size: [f64; 3]) -> Result<()> {
    if is_nifti(path) {
        nifti::write(path, shape, data, voxel_size)
    } else if path.extension().is_some_and(|e| e == "npy") {
        npy::write(path, shape, data)
    } else {
        Err(Error::io(path, std::io::Error::other("unknown file type: expected .npy, .nii or .nii.gz")))
    }
}

/// Refuses values that are not finite (a computation that overflowed float32), naming the first
/// one and its index, before anything is written.
pub(crate) fn refuse_non_finite(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        let mut idx = vec![0; shape.len()];
        let mut rest = i;
        for (d, &n) in shape.iter().enumerate().rev() {
            idx[d] = rest % n.max(1);
            rest /= n.max(1);
        }
        return Err(Error::io(
            path,
            std::io::Error::other(format!(
                "not written: the result holds {} at index {idx:?} of shape {shape:?} (float32 overflowed: are the input's values in range?)",
                data[i]
            )),
        ));
    }
    Ok(())
}

/// The (nz, ny, nx) array in the world frame of `affine` (columns: the world step of array axes
/// i, j, k), each world axis increasing, with the voxel sizes along z, y, x.
pub(crate) fn reorient(path: &Path, n: [usize; 3], vals: &[f32], affine: [[f64; 3]; 3]) -> Result<Array> {
    let mut axis_of = [usize::MAX; 3]; // world axis -> array axis
    let mut flip = [false; 3];
    let mut size = [1.0; 3];
    for (a, col) in affine.iter().enumerate() {
        let norm = col.iter().map(|v| v * v).sum::<f64>().sqrt();
        let w = (0..3).max_by(|&x, &y| col[x].abs().total_cmp(&col[y].abs())).unwrap();
        if !(norm.is_finite() && norm > 0.0) || axis_of[w] != usize::MAX {
            return Err(Error::io(path, std::io::Error::other(format!("the orientation (NIfTI sform/qform, DICOM ImageOrientationPatient) does not map the array's axes to distinct world axes: {affine:?}"))));
        }
        axis_of[w] = a;
        flip[w] = col[w] < 0.0;
        size[w] = norm;
    }
    let out_n = [n[axis_of[0]], n[axis_of[1]], n[axis_of[2]]]; // along world x, y, z
    let mut out = vec![0f32; vals.len()];
    let mut src = [0usize; 3];
    for z in 0..out_n[2] {
        for y in 0..out_n[1] {
            for x in 0..out_n[0] {
                for (w, c) in [x, y, z].into_iter().enumerate() {
                    src[axis_of[w]] = if flip[w] { out_n[w] - 1 - c } else { c };
                }
                out[(z * out_n[1] + y) * out_n[0] + x] = vals[(src[2] * n[1] + src[1]) * n[0] + src[0]];
            }
        }
    }
    Ok(Array { shape: vec![out_n[2], out_n[1], out_n[0]], data: out, voxel_size: Some([size[2], size[1], size[0]]) })
}
