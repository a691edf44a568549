//! NumPy .npy files (format versions 1-3). Reads little- or big-endian floats and integers into
//! f32; writes little-endian f32 in C order.
use super::Array;
use crate::error::{Error, Result};
use std::path::Path;

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::io(path, std::io::Error::other(msg.into()))
}

/// The value of `key` in the header dict, as its raw text.
fn field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let i = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[i..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') { rest.find(')')? + 1 } else { rest.find([',', '}'])? };
    Some(rest[..end].trim())
}

/// Reads a C-order .npy file (float16/32/64 or a signed or unsigned integer of 1 to 8 bytes, either
/// byte order) as f32 values with its shape. Errors name the file and the fault: not .npy, Fortran
/// order, an unsupported dtype, an axis of length 0, a shape too large to address, a truncated
/// file, values beyond float32's range.
pub fn read(path: &Path) -> Result<Array> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(path, &bytes)
}

/// Parses the bytes of a .npy file as `read` does (any float or integer dtype of 1 to 8 bytes,
/// converted to f32); `path` only names the file in the errors, which are `Error::Io`.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Array> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad(path, "not a .npy file (bad magic)"));
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(bad(path, format!("unsupported .npy version {v}"))),
    };
    let header = bytes.get(start..start + hlen).ok_or_else(|| bad(path, "truncated .npy header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad(path, "the .npy header is not text"))?;
    let descr = field(header, "descr").ok_or_else(|| bad(path, "the .npy header has no 'descr'"))?.trim_matches(['\'', '"']);
    if field(header, "fortran_order") == Some("True") {
        return Err(bad(path, "Fortran-order arrays are not supported: save with np.ascontiguousarray"));
    }
    let shape_txt = field(header, "shape").ok_or_else(|| bad(path, "the .npy header has no 'shape'"))?;
    let shape = shape_txt
        .trim_matches(['(', ')'])
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad(path, format!("bad shape {shape_txt}"))))
        .collect::<Result<Vec<_>>>()?;
    if shape.contains(&0) {
        return Err(bad(path, format!("every axis needs at least one value, the shape is {shape:?}")));
    }
    let (order, kind, size) = parse_descr(descr).ok_or_else(|| bad(path, format!("unsupported dtype {descr:?}")))?;
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).filter(|n| n.checked_mul(size).is_some()).ok_or_else(|| bad(path, format!("shape {shape:?} too large")))?;
    let data = &bytes[start + hlen..];
    if data.len() < n * size {
        return Err(bad(path, format!("truncated: {} data bytes for shape {shape:?} of {descr} ({} needed)", data.len(), n * size)));
    }
    let big = order == '>';
    if (kind, size) == ('f', 8) {
        for (i, c) in data[..n * size].chunks_exact(8).enumerate() {
            let b: [u8; 8] = c.try_into().unwrap();
            let v = if big { f64::from_be_bytes(b) } else { f64::from_le_bytes(b) };
            if v.is_finite() && v.abs() > f32::MAX as f64 {
                return Err(bad(path, format!("value {v:e} at flat index {i} is out of float32 range (largest {:e})", f32::MAX)));
            }
        }
    }
    let vals = data[..n * size]
        .chunks_exact(size)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..size].copy_from_slice(c);
            if big {
                b[..size].reverse();
            }
            decode(kind, size, b)
        })
        .collect();
    Ok(Array { shape, data: vals, voxel_size: None })
}

fn parse_descr(d: &str) -> Option<(char, char, usize)> {
    let mut ch = d.chars();
    let order = ch.next()?;
    let kind = ch.next()?;
    let size: usize = ch.as_str().parse().ok()?;
    let ok = matches!((kind, size), ('f', 2 | 4 | 8) | ('i', 1 | 2 | 4 | 8) | ('u', 1 | 2 | 4 | 8));
    (ok && matches!(order, '<' | '>' | '|' | '=')).then_some((order, kind, size))
}

fn decode(kind: char, size: usize, b: [u8; 8]) -> f32 {
    match (kind, size) {
        ('f', 2) => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
        ('f', 4) => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        ('f', 8) => f64::from_le_bytes(b) as f32,
        ('i', 1) => b[0] as i8 as f32,
        ('i', 2) => i16::from_le_bytes([b[0], b[1]]) as f32,
        ('i', 4) => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
        ('i', 8) => i64::from_le_bytes(b) as f32,
        ('u', 1) => b[0] as f32,
        ('u', 2) => u16::from_le_bytes([b[0], b[1]]) as f32,
        ('u', 4) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
        _ => u64::from_le_bytes(b) as f32,
    }
}

/// The bytes of a .npy file (version 1.0, little-endian f32 `<f4`, C order) of `data` with
/// `shape`, the data starting at a 64-byte boundary. `data.len()` must be the product of `shape`.
pub fn encode(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_txt}, }}");
    // Pad so that the data starts on a 64-byte boundary, ending the header with a newline.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    out
}

/// Writes `data` (f32, C order, `shape`) as a .npy file, all or nothing (`write_atomic`).
/// Errors: `Error::Io` for a NaN or infinite value (nothing written; its index named) or a
/// failed write.
pub fn write(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    super::refuse_non_finite(path, shape, data)?;
    super::write_atomic(path, &encode(shape, data))
}
