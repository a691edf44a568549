//! NIfTI-1 volumes (.nii, .nii.gz). A (nz, ny, nx) C-order array is NIfTI's x-fastest layout, so
//! dim = (nx, ny, nz). Reads integer and float datatypes with scl_slope/scl_inter applied, either
//! byte order, and the orientation: the sform when sform_code > 0, else the qform (quaternion,
//! qfac) when qform_code > 0, else pixdim alone. The data are reoriented to the project's frame,
//! which is NIfTI's world frame (x, y, z; RAS+): each array axis goes to the world axis it runs
//! closest to, flipped where it runs backwards, so the (nz, ny, nx) result has x, y and z
//! increasing (an oblique scan is taken to its closest axes; the voxel sizes are the affine's
//! column lengths). Writes f32 with the voxel size in pixdim and the same affine, centred on the
//! volume, as both sform and qform (codes 2, aligned), so viewers show it the right way up.
use super::Array;
use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::io(path, std::io::Error::other(msg.into()))
}

fn gz(path: &Path) -> bool {
    path.to_string_lossy().ends_with(".gz")
}

/// Reads a NIfTI-1 volume (gzip-compressed when the name ends in .gz) as f32 (nz, ny, nx),
/// reoriented to RAS+ with voxel_size (sz, sy, sx) mm (module doc). Errors: `Error::Io` naming
/// the file: unreadable, bad gzip, not NIfTI-1, more than one 3D volume, an axis of no voxels, an
/// unsupported datatype, a bad vox_offset, truncated data, an orientation that puts two array
/// axes on one world axis.
pub fn read(path: &Path) -> Result<Array> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bytes = if gz(path) {
        // The header first, then only the bytes it declares: a small file that inflates without
        // end is cut where the data end, not read until memory runs out.
        let gzip = |e: std::io::Error| bad(path, format!("gzip: {e}"));
        let mut dec = flate2::read::GzDecoder::new(&raw[..]);
        let mut out = Vec::new();
        (&mut dec).take(348).read_to_end(&mut out).map_err(gzip)?;
        let end = header(path, &out)?.data_end();
        // Deflate inflates at most about 1032-fold: a header that declares more lies.
        if end > raw.len().saturating_mul(1032) + 1024 {
            return Err(bad(path, format!("the header declares {end} bytes, more than {} compressed bytes can hold", raw.len())));
        }
        (&mut dec).take((end - out.len()) as u64).read_to_end(&mut out).map_err(gzip)?;
        // One more read reaches the stream's end where the data end there, so its CRC is checked.
        dec.read(&mut [0u8; 1]).map_err(gzip)?;
        out
    } else {
        raw
    };
    parse(path, &bytes)
}

/// The i16 at byte `o` of a header of this byte order.
fn i16_at(b: &[u8], o: usize, le: bool) -> i16 {
    super::u16_at(b, o, !le) as i16
}

/// The f32 at byte `o` of a header of this byte order.
fn f32_at(b: &[u8], o: usize, le: bool) -> f32 {
    f32::from_bits(super::u32_at(b, o, !le))
}

/// The header's fields `parse` needs to find and decode the voxels.
struct Header {
    le: bool,
    n3: [usize; 3],
    datatype: i16,
    size: usize,
    vox_offset: usize,
}

impl Header {
    /// Where the voxel data end in the file: vox_offset plus the data's bytes.
    fn data_end(&self) -> usize {
        self.vox_offset + self.n3.iter().product::<usize>() * self.size
    }
}

/// Reads and checks the first 348 bytes: byte order, a 3D volume with every axis at least 1
/// voxel, a supported datatype, and a finite vox_offset below 2^40 (with axes of at most 32,767
/// voxels, the data's end then fits any address space).
fn header(path: &Path, b: &[u8]) -> Result<Header> {
    if b.len() < 348 {
        return Err(bad(path, "too short for a NIfTI-1 header"));
    }
    let le = match (i32::from_le_bytes(b[0..4].try_into().unwrap()), i32::from_be_bytes(b[0..4].try_into().unwrap())) {
        (348, _) => true,
        (_, 348) => false,
        (540, _) | (_, 540) => return Err(bad(path, "NIfTI-2 is not supported; save as NIfTI-1")),
        _ => return Err(bad(path, "not a NIfTI-1 file (sizeof_hdr is not 348)")),
    };
    let i16at = |o: usize| i16_at(b, o, le);
    let ndim = i16at(40);
    if !(1..=7).contains(&ndim) {
        return Err(bad(path, format!("bad dim[0] = {ndim}")));
    }
    let dims: Vec<i16> = (1..=ndim as usize).map(|i| i16at(40 + 2 * i)).collect();
    if dims.iter().take(3).any(|&d| d < 1) {
        return Err(bad(path, format!("every axis needs at least one voxel, the file has dims {dims:?}")));
    }
    if dims.iter().skip(3).any(|&d| d > 1) {
        return Err(bad(path, format!("a 3D volume is expected, the file has dims {dims:?}")));
    }
    let n3: [usize; 3] = std::array::from_fn(|i| dims.get(i).map_or(1, |&d| d as usize));
    let datatype = i16at(70);
    let size = match datatype {
        2 | 256 => 1,
        4 | 512 => 2,
        8 | 16 | 768 => 4,
        64 => 8,
        d => return Err(bad(path, format!("unsupported NIfTI datatype {d}"))),
    };
    let offset = f32_at(b, 108, le);
    if !(offset.is_finite() && offset < (1u64 << 40) as f32) {
        return Err(bad(path, format!("bad vox_offset {offset}")));
    }
    Ok(Header { le, n3, datatype, size, vox_offset: offset.max(348.0) as usize })
}

/// Parses the bytes of an uncompressed .nii file as `read` does; `path` only names the file in
/// the errors.
pub fn parse(path: &Path, b: &[u8]) -> Result<Array> {
    let h = header(path, b)?;
    let Header { le, n3, datatype, size, vox_offset } = h;
    let (f32at, i16at) = (|o: usize| f32_at(b, o, le), |o: usize| i16_at(b, o, le));
    let pix = [f32at(80), f32at(84), f32at(88)];
    let (slope, inter) = (f32at(112), f32at(116));
    let n: usize = n3.iter().product();
    let data = b.get(vox_offset..h.data_end()).ok_or_else(|| bad(path, format!("truncated: {n} voxels of {size} bytes expected")))?;
    let vals: Vec<f32> = data
        .chunks_exact(size)
        .map(|c| {
            let mut a = [0u8; 8];
            a[..size].copy_from_slice(c);
            if !le {
                a[..size].reverse();
            }
            let v = match datatype {
                2 => a[0] as f64,
                256 => a[0] as i8 as f64,
                4 => i16::from_le_bytes([a[0], a[1]]) as f64,
                512 => u16::from_le_bytes([a[0], a[1]]) as f64,
                8 => i32::from_le_bytes([a[0], a[1], a[2], a[3]]) as f64,
                768 => u32::from_le_bytes([a[0], a[1], a[2], a[3]]) as f64,
                16 => f32::from_le_bytes([a[0], a[1], a[2], a[3]]) as f64,
                _ => f64::from_le_bytes(a),
            };
            (if slope != 0.0 && slope.is_finite() { v * slope as f64 + inter as f64 } else { v }) as f32
        })
        .collect();
    let vs = |p: f32| if p.is_finite() && p > 0.0 { p.abs() as f64 } else { 1.0 };
    let (sform, qform) = (i16at(254), i16at(252));
    let affine: [[f64; 3]; 3] = if sform > 0 {
        // Columns of srow_x, srow_y, srow_z (rows at 280, 296, 312).
        std::array::from_fn(|col| std::array::from_fn(|row| f32at(280 + 16 * row + 4 * col) as f64))
    } else if qform > 0 {
        let (qb, qc, qd) = (f32at(256) as f64, f32at(260) as f64, f32at(264) as f64);
        let qa = (1.0 - qb * qb - qc * qc - qd * qd).max(0.0).sqrt();
        let qfac = if f32at(76) < 0.0 { -1.0 } else { 1.0 };
        let r = [
            [qa * qa + qb * qb - qc * qc - qd * qd, 2.0 * (qb * qc - qa * qd), 2.0 * (qb * qd + qa * qc)],
            [2.0 * (qb * qc + qa * qd), qa * qa + qc * qc - qb * qb - qd * qd, 2.0 * (qc * qd - qa * qb)],
            [2.0 * (qb * qd - qa * qc), 2.0 * (qc * qd + qa * qb), qa * qa + qd * qd - qc * qc - qb * qb],
        ];
        let scale = [vs(pix[0]), vs(pix[1]), vs(pix[2]) * qfac];
        std::array::from_fn(|col| std::array::from_fn(|row| r[row][col] * scale[col]))
    } else {
        [[vs(pix[0]), 0.0, 0.0], [0.0, vs(pix[1]), 0.0], [0.0, 0.0, vs(pix[2])]]
    };
    super::reorient(path, [n3[0], n3[1], n3[2]], &vals, affine)
}

/// The bytes of a single-file NIfTI-1 (.nii, little-endian f32) of a (nz, ny, nx) `shape` ((ny, nx)
/// is one slice), `voxel_size` (sz, sy, sx) mm in pixdim, and sform = qform (codes 2) placing the
/// voxel centres as the project's grid centred on the origin.
pub fn encode(shape: &[usize], data: &[f32], voxel_size: [f64; 3]) -> Vec<u8> {
    let (nz, ny, nx) = match shape {
        [z, y, x] => (*z, *y, *x),
        [y, x] => (1, *y, *x),
        _ => (1, 1, data.len()),
    };
    let mut h = vec![0u8; 352];
    let put_i16 = |h: &mut Vec<u8>, o: usize, v: i16| h[o..o + 2].copy_from_slice(&v.to_le_bytes());
    let put_f32 = |h: &mut Vec<u8>, o: usize, v: f32| h[o..o + 4].copy_from_slice(&v.to_le_bytes());
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    for (i, d) in [3, nx, ny, nz, 1, 1, 1, 1].iter().enumerate() {
        put_i16(&mut h, 40 + 2 * i, *d as i16);
    }
    put_i16(&mut h, 70, 16); // float32
    put_i16(&mut h, 72, 32);
    let (sx, sy, sz) = (voxel_size[2] as f32, voxel_size[1] as f32, voxel_size[0] as f32);
    for (i, p) in [1.0, sx, sy, sz, 1.0, 1.0, 1.0, 1.0].iter().enumerate() {
        put_f32(&mut h, 76 + 4 * i, *p);
    }
    put_f32(&mut h, 108, 352.0);
    put_f32(&mut h, 112, 1.0);
    h[123] = 10 | 8; // xyzt_units: mm, s
    put_i16(&mut h, 252, 2); // qform_code: aligned (identity rotation, qfac 1 in pixdim[0])
    put_i16(&mut h, 254, 2); // sform_code: aligned
    // sform: voxel (i, j, k) -> world, centred like our voxel convention.
    let off = [-(nx as f32) * sx / 2.0 + sx / 2.0, -(ny as f32) * sy / 2.0 + sy / 2.0, -(nz as f32) * sz / 2.0 + sz / 2.0];
    let rows = [[sx, 0.0, 0.0, off[0]], [0.0, sy, 0.0, off[1]], [0.0, 0.0, sz, off[2]]];
    for (r, row) in rows.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            put_f32(&mut h, 280 + 16 * r + 4 * c, *v);
        }
        put_f32(&mut h, 268 + 4 * r, off[r]); // qoffset_x, y, z
    }
    h[344..348].copy_from_slice(b"n+1\0");
    h.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    h
}

/// Writes `data` as NIfTI-1 (`encode`), gzip-compressed when `path` ends in .gz, all or nothing
/// (`write_atomic`). Errors: `Error::Shape` for a shape NIfTI-1 cannot hold (not 2D or 3D, an
/// axis over 32767) or that `data` does not fill; `Error::Io` for a NaN or infinite value
/// (nothing written) or a failed write.
pub fn write(path: &Path, shape: &[usize], data: &[f32], voxel_size: [f64; 3]) -> Result<()> {
    // NIfTI-1 stores each extent as an i16.
    if !(2..=3).contains(&shape.len()) || shape.iter().any(|&n| n == 0 || n > i16::MAX as usize) || shape.iter().product::<usize>() != data.len() {
        return Err(Error::Shape(format!("{}: NIfTI-1 holds 2D or 3D arrays of 1..32767 per axis; got shape {shape:?} with {} values", path.display(), data.len())));
    }
    super::refuse_non_finite(path, shape, data)?;
    let bytes = encode(shape, data, voxel_size);
    if gz(path) {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &bytes).map_err(|e| Error::io(path, e))?;
        super::write_atomic(path, &enc.finish().map_err(|e| Error::io(path, e))?)
    } else {
        super::write_atomic(path, &bytes)
    }
}
