//! DICOM CT series input: a folder of single-frame CT slice files (any file names), or one `.dcm`
//! file, read into a (nz, ny, nx) f32 volume.
//!
//! Axis convention. The row direction r and the column direction c are the two direction cosines
//! of ImageOrientationPatient (r points from column j to j+1 along a row, c from row i to i+1); the
//! slice normal is n = r x c. Each slice's position along the normal is n . ImagePositionPatient,
//! and the slices are sorted by it, ascending, whatever the file names. Array index (k, i, j) is
//! slice k in that order, row i and column j as stored. So the array's axes are (n, c, r): for the
//! usual axial series (orientation 1\0\0\0\1\0, patient LPS coordinates) that is (z from inferior
//! to superior, y from anterior to posterior, x from the patient's right to left). That is the
//! frame of `read_series` (HU). `read` (and `io::read_array`) then reorient the volume as NIfTI
//! volumes are, to the world's RAS+ axes (DICOM's LPS with x and y negated; each array axis to
//! the world axis it runs closest to, flipped where it runs backwards), so a scan read from DICOM
//! and from NIfTI comes out the same way round; coronal and sagittal stacks become axial arrays.
//!
//! voxel_size = [sz, sy, sx] mm: sz the spacing of the sorted positions, (sy, sx) = PixelSpacing
//! (row spacing, column spacing). Values: stored value (masked to BitsStored, signed when
//! PixelRepresentation is 1) * RescaleSlope + RescaleIntercept = HU, and `read` returns
//! mu = `crate::ct::units::hu_to_mu(HU)` in 1/mm (water 0.0193 /mm). Stored values equal to
//! PixelPaddingValue (or within [PixelPaddingValue, PixelPaddingRangeLimit]) are not
//! measurements (the corners outside the scan circle) and read as air, -1000 HU.
//!
//! Refused, each with one message naming the file (or the positions) and the tag: files that mix
//! series (SeriesInstanceUID), orientation, Rows/Columns or PixelSpacing; two slices at one
//! position; a gap between neighbours that differs from the median gap by more than 1%
//! (+ 0.001 mm), as a missing slice does; positions that slide across the slice plane (gantry
//! tilt, a sheared stack) by more than 0.1 pixel; compressed or deflated transfer syntaxes
//! (decompress first, e.g. `gdcmconv --raw`); multi-frame files; colour images; a Modality other
//! than CT; missing or unreadable required tags; truncated files. One slice alone takes its
//! thickness from SpacingBetweenSlices, else SliceThickness. Before the DICOM parser runs, every
//! element length in the file is checked against the bytes that remain of its container,
//! so a damaged header cannot make it allocate more than the file holds.
//!
//! In a folder, files without the "DICM" marker (README, .DS_Store, ...) and DICOMDIR indexes are
//! skipped and listed in [`Series::skipped`]; sub-folders are not read.
use super::Array;
use crate::error::{Error, Result};
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::value::{DicomValueType, PrimitiveValue, Value};
use dicom_object::file::ReadPreamble;
use dicom_object::{OpenFileOptions, StandardDataDictionary, Tag};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";
const DICOMDIR_SOP: &str = "1.2.840.10008.1.3.10";

const MODALITY: Tag = Tag(0x0008, 0x0060);
const SLICE_THICKNESS: Tag = Tag(0x0018, 0x0050);
const SPACING_BETWEEN_SLICES: Tag = Tag(0x0018, 0x0088);
const SERIES_UID: Tag = Tag(0x0020, 0x000E);
const IMAGE_POSITION: Tag = Tag(0x0020, 0x0032);
const IMAGE_ORIENTATION: Tag = Tag(0x0020, 0x0037);
const SAMPLES_PER_PIXEL: Tag = Tag(0x0028, 0x0002);
const PHOTOMETRIC: Tag = Tag(0x0028, 0x0004);
const NUMBER_OF_FRAMES: Tag = Tag(0x0028, 0x0008);
const ROWS: Tag = Tag(0x0028, 0x0010);
const COLUMNS: Tag = Tag(0x0028, 0x0011);
const PIXEL_SPACING: Tag = Tag(0x0028, 0x0030);
const BITS_ALLOCATED: Tag = Tag(0x0028, 0x0100);
const BITS_STORED: Tag = Tag(0x0028, 0x0101);
const PIXEL_REPRESENTATION: Tag = Tag(0x0028, 0x0103);
const PIXEL_PADDING_VALUE: Tag = Tag(0x0028, 0x0120);
const PIXEL_PADDING_RANGE_LIMIT: Tag = Tag(0x0028, 0x0121);
const RESCALE_INTERCEPT: Tag = Tag(0x0028, 0x1052);
const RESCALE_SLOPE: Tag = Tag(0x0028, 0x1053);
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);

/// A series as read: the volume in HU (see the module doc for its axes), the files in slice order
/// with their positions along the normal (mm), and the files of the folder that were skipped.
#[derive(Debug, Clone)]
pub struct Series {
    /// The volume in HU, f32 (nz, ny, nx) in the file frame (slice, row, column as stored), with
    /// voxel_size (sz, sy, sx) mm.
    pub hu: Array,
    /// The world step of array axes (column, row, slice) in NIfTI's RAS+ frame (DICOM's patient
    /// LPS with x and y negated), mm: what `into_mu` reorients by.
    pub affine: [[f64; 3]; 3],
    /// The slice files in array order (ascending position along the slice normal).
    pub files: Vec<PathBuf>,
    /// Each slice's position along the normal n, n . ImagePositionPatient in mm, as `files`.
    pub positions: Vec<f64>,
    /// Files of the folder not read: those without the "DICM" marker, and DICOMDIR indexes.
    pub skipped: Vec<PathBuf>,
}

impl Series {
    /// One line per thing a user may want to know (skipped files), for the CLI to print.
    pub fn notes(&self) -> Vec<String> {
        if self.skipped.is_empty() {
            return Vec::new();
        }
        let names: Vec<String> = self.skipped.iter().take(3).map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect();
        let more = if self.skipped.len() > 3 { format!(", ... ({} in all)", self.skipped.len()) } else { String::new() };
        let dir = self.files.first().and_then(|f| f.parent()).map(|d| d.display().to_string()).unwrap_or_default();
        vec![format!("{dir}: skipped {} file(s) that are not DICOM images: {}{more}", self.skipped.len(), names.join(", "))]
    }

    /// The volume in mu (1/mm), reoriented to the world axes as NIfTI volumes are (x, y, z of
    /// RAS+ increasing along the array's last, middle and first axis).
    pub fn into_mu(self) -> Result<Array> {
        let [nz, ny, nx] = [self.hu.shape[0], self.hu.shape[1], self.hu.shape[2]];
        let path = self.files.first().cloned().unwrap_or_default();
        let mut a = super::reorient(&path, [nx, ny, nz], &self.hu.data, self.affine)?;
        a.data.iter_mut().for_each(|v| *v = crate::ct::units::hu_to_mu(*v));
        Ok(a)
    }
}

/// A path read as DICOM: a directory, or a name ending in .dcm (any case).
pub fn is_dicom_path(path: &Path) -> bool {
    path.is_dir() || path.extension().is_some_and(|e| e.eq_ignore_ascii_case("dcm"))
}

/// Whether a file starts like a DICOM file ("DICM" at byte 128); false for anything unreadable.
pub fn has_dicom_marker(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 132];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && &head[128..] == b"DICM"
}

/// Whether a folder holds at least one file with the DICOM marker (sub-folders not looked into).
pub fn is_series_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| rd.filter_map(|e| e.ok()).any(|e| e.path().is_file() && has_dicom_marker(&e.path())))
}

/// Reads a series (folder) or one slice (.dcm file) as mu (1/mm).
pub fn read(path: &Path) -> Result<Array> {
    read_series(path)?.into_mu()
}

/// Reads a series (folder) or one slice (.dcm file) in HU, with its files in slice order.
pub fn read_series(path: &Path) -> Result<Series> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let (candidates, mut skipped) = if meta.is_dir() {
        let rd = std::fs::read_dir(path).map_err(|e| Error::io(path, e))?;
        let mut files = Vec::new();
        let mut dirs = 0usize;
        for e in rd {
            let p = e.map_err(|e| Error::io(path, e))?.path();
            if p.is_dir() {
                dirs += 1;
            } else if p.is_file() {
                files.push(p);
            }
        }
        files.sort();
        let (dcm, other): (Vec<PathBuf>, Vec<PathBuf>) = files.into_iter().partition(|p| has_dicom_marker(p));
        if dcm.is_empty() {
            let sub = if dirs > 0 { format!(" (its {dirs} sub-folder(s) are not read: give the folder of one series)") } else { String::new() };
            return Err(bad(path, format!("holds no DICOM file (none of its {} file(s) has the \"DICM\" marker at byte 128){sub}", other.len())));
        }
        (dcm, other)
    } else {
        (vec![path.to_path_buf()], Vec::new())
    };
    let parsed: Vec<Result<Option<Slice>>> = candidates.par_iter().map(|f| read_slice(f)).collect();
    let mut slices = Vec::new();
    for (f, r) in candidates.iter().zip(parsed) {
        match r? {
            Some(s) => slices.push(s),
            None => skipped.push(f.clone()),
        }
    }
    if slices.is_empty() {
        return Err(bad(path, "holds no DICOM image (only DICOMDIR index files)"));
    }
    assemble(path, slices, skipped)
}

struct Slice {
    path: PathBuf,
    series: String,
    rows: usize,
    cols: usize,
    orient: [f64; 6],
    pos: [f64; 3],
    spacing: [f64; 2],
    thickness: Option<f64>,
    between: Option<f64>,
    hu: Vec<f32>,
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::io(path, std::io::Error::other(msg.into()))
}

/// "(0028,0030) PixelSpacing"
fn tag_name(t: Tag) -> String {
    let alias = StandardDataDictionary.by_tag(t).map(|e| e.alias().to_string());
    format!("({:04X},{:04X}) {}", t.0, t.1, alias.unwrap_or_else(|| "(private or unknown)".into()))
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s = format!("{s}: {m}");
        }
        src = c.source();
    }
    s
}

/// Reads one file: Some(slice), or None for a DICOMDIR.
fn read_slice(path: &Path) -> Result<Option<Slice>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.len() < 132 || &bytes[128..132] != b"DICM" {
        return Err(bad(path, "not a DICOM file (no \"DICM\" marker at byte 128)"));
    }
    let fm = guard::check(&bytes).map_err(|m| bad(path, m))?;
    if fm.sop_class == DICOMDIR_SOP {
        return Ok(None);
    }
    match fm.ts.as_str() {
        IMPLICIT_LE | EXPLICIT_LE | EXPLICIT_BE => {}
        DEFLATED => return Err(bad(path, "deflated transfer syntax (1.2.840.10008.1.2.1.99) is not read: store the series uncompressed first (e.g. gdcmconv --raw)")),
        ts => {
            return Err(bad(
                path,
                format!("transfer syntax {ts} (compressed pixel data) is not read: decompress the series first (e.g. gdcmconv --raw, or dcmdjpeg)"),
            ))
        }
    }
    let big = fm.ts == EXPLICIT_BE;
    let obj = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Never)
        .from_reader(&bytes[128..])
        .map_err(|e| bad(path, format!("not readable as DICOM: {}", chain(&e))))?;
    let el = |t: Tag| obj.element_opt(t).ok().flatten();
    let missing = |t: Tag, why: &str| bad(path, format!("{}: missing{why}", tag_name(t)));
    let wrong = |t: Tag, e: &dyn std::fmt::Display| bad(path, format!("{}: unreadable value ({e})", tag_name(t)));
    let int = |t: Tag| -> Result<Option<i64>> {
        match el(t) {
            None => Ok(None),
            Some(e) => e.to_int::<i64>().map(Some).map_err(|err| wrong(t, &err)),
        }
    };
    let req_int = |t: Tag| int(t)?.ok_or_else(|| missing(t, ""));
    let floats = |t: Tag, n: usize| -> Result<Option<Vec<f64>>> {
        let Some(e) = el(t) else { return Ok(None) };
        let v = e.to_multi_float64().map_err(|err| wrong(t, &err))?;
        if v.len() != n || v.iter().any(|x| !x.is_finite()) {
            return Err(bad(path, format!("{}: {n} finite numbers expected, got {v:?}", tag_name(t))));
        }
        Ok(Some(v))
    };
    let req_floats = |t: Tag, n: usize| floats(t, n)?.ok_or_else(|| missing(t, ""));
    let text = |t: Tag| -> Result<Option<String>> {
        match el(t) {
            None => Ok(None),
            Some(e) => e.to_str().map(|s| Some(s.trim_end_matches(['\0', ' ']).trim().to_string())).map_err(|err| wrong(t, &err)),
        }
    };

    if let Some(m) = text(MODALITY)? {
        if !m.is_empty() && m != "CT" {
            return Err(bad(path, format!("{}: is {m:?}; only CT values are Hounsfield units", tag_name(MODALITY))));
        }
    }
    if let Some(n) = int(NUMBER_OF_FRAMES)? {
        if n > 1 {
            return Err(bad(path, format!("{}: {n} frames; multi-frame (enhanced) CT files are not read, only one slice per file", tag_name(NUMBER_OF_FRAMES))));
        }
    }
    let samples = int(SAMPLES_PER_PIXEL)?.unwrap_or(1);
    if samples != 1 {
        return Err(bad(path, format!("{}: {samples}; only grey-scale (1 sample per pixel) images are read", tag_name(SAMPLES_PER_PIXEL))));
    }
    if let Some(p) = text(PHOTOMETRIC)? {
        if !p.starts_with("MONOCHROME") {
            return Err(bad(path, format!("{}: {p:?}; only MONOCHROME1/MONOCHROME2 images are read", tag_name(PHOTOMETRIC))));
        }
    }
    let series = text(SERIES_UID)?.ok_or_else(|| missing(SERIES_UID, ""))?;
    let dim = |t: Tag| -> Result<usize> {
        let v = req_int(t)?;
        if !(1..=65535).contains(&v) {
            return Err(bad(path, format!("{}: {v}, expected 1 to 65535", tag_name(t))));
        }
        Ok(v as usize)
    };
    let (rows, cols) = (dim(ROWS)?, dim(COLUMNS)?);
    let bits = req_int(BITS_ALLOCATED)?;
    if ![8, 16, 32].contains(&bits) {
        return Err(bad(path, format!("{}: {bits}; 8, 16 or 32 expected", tag_name(BITS_ALLOCATED))));
    }
    let stored = int(BITS_STORED)?.unwrap_or(bits);
    if !(1..=bits).contains(&stored) {
        return Err(bad(path, format!("{}: {stored}, with BitsAllocated {bits}", tag_name(BITS_STORED))));
    }
    let signed = match req_int(PIXEL_REPRESENTATION)? {
        0 => false,
        1 => true,
        v => return Err(bad(path, format!("{}: {v}; 0 (unsigned) or 1 (signed) expected", tag_name(PIXEL_REPRESENTATION)))),
    };
    let orient: [f64; 6] = req_floats(IMAGE_ORIENTATION, 6)?.try_into().unwrap();
    let pos: [f64; 3] = req_floats(IMAGE_POSITION, 3)?.try_into().unwrap();
    let spacing: [f64; 2] = req_floats(PIXEL_SPACING, 2)?.try_into().unwrap();
    if spacing.iter().any(|&s| s <= 0.0) {
        return Err(bad(path, format!("{}: {spacing:?}; positive spacings (mm) expected", tag_name(PIXEL_SPACING))));
    }
    let (r, c) = ([orient[0], orient[1], orient[2]], [orient[3], orient[4], orient[5]]);
    if (norm(r) - 1.0).abs() > 0.01 || (norm(c) - 1.0).abs() > 0.01 || dot(r, c).abs() > 0.01 {
        return Err(bad(path, format!("{}: {orient:?} are not two orthogonal unit vectors", tag_name(IMAGE_ORIENTATION))));
    }
    let slope = req_floats(RESCALE_SLOPE, 1)?[0];
    let intercept = req_floats(RESCALE_INTERCEPT, 1)?[0];
    let positive = |v: Option<Vec<f64>>| v.map(|v| v[0]).filter(|&x| x > 0.0);
    let thickness = positive(floats(SLICE_THICKNESS, 1).unwrap_or(None));
    let between = positive(floats(SPACING_BETWEEN_SLICES, 1).unwrap_or(None));
    let padding = int(PIXEL_PADDING_VALUE)?;
    let padding_limit = int(PIXEL_PADDING_RANGE_LIMIT)?;

    // The pixels: native (uncompressed) data, one frame.
    let pd = el(PIXEL_DATA).ok_or_else(|| missing(PIXEL_DATA, ": the file holds no image"))?;
    let n = rows * cols;
    let bytes_per = (bits / 8) as usize;
    let need = n * bytes_per;
    let raw: Vec<u32> = match pd.value() {
        Value::Primitive(p) => {
            let (got, vals): (usize, Vec<u32>) = match (p, bytes_per) {
                (PrimitiveValue::U8(b), _) => {
                    let words = b.chunks_exact(bytes_per).take(n).map(|w| {
                        let mut a = [0u8; 4];
                        a[..bytes_per].copy_from_slice(w);
                        if big {
                            a[..bytes_per].reverse();
                        }
                        u32::from_le_bytes(a)
                    });
                    (b.len(), words.collect())
                }
                (PrimitiveValue::U16(v), 2) => (v.len() * 2, v.iter().take(n).map(|&x| x as u32).collect()),
                (PrimitiveValue::I16(v), 2) => (v.len() * 2, v.iter().take(n).map(|&x| x as u16 as u32).collect()),
                (PrimitiveValue::U16(v), 4) => {
                    // 32-bit pixels as OW words: pairs in the file's byte order.
                    let w = v.chunks_exact(2).take(n).map(|p| if big { (p[0] as u32) << 16 | p[1] as u32 } else { (p[1] as u32) << 16 | p[0] as u32 });
                    (v.len() * 2, w.collect())
                }
                (PrimitiveValue::U32(v), 4) => (v.len() * 4, v.iter().take(n).copied().collect()),
                (PrimitiveValue::I32(v), 4) => (v.len() * 4, v.iter().take(n).map(|&x| x as u32).collect()),
                (other, _) => {
                    return Err(bad(path, format!("{}: a {:?} value for {bits}-bit pixels is not read (wrong VR?)", tag_name(PIXEL_DATA), other.value_type())))
                }
            };
            if got < need {
                return Err(bad(
                    path,
                    format!("{}: {got} bytes, {rows} rows x {cols} columns x {bits} bits need {need}: truncated or mislabelled", tag_name(PIXEL_DATA)),
                ));
            }
            if got > need + 1 {
                return Err(bad(
                    path,
                    format!("{}: {got} bytes, one frame of {rows} x {cols} x {bits} bits is {need}: multi-frame data is not read", tag_name(PIXEL_DATA)),
                ));
            }
            vals
        }
        Value::PixelSequence(_) => return Err(bad(path, format!("{}: encapsulated (compressed) pixel data is not read: decompress first", tag_name(PIXEL_DATA)))),
        Value::Sequence(_) => return Err(bad(path, format!("{}: a sequence, not pixel values (wrong VR)", tag_name(PIXEL_DATA)))),
    };
    let mask: u32 = if stored == 32 { u32::MAX } else { (1u32 << stored) - 1 };
    let value = |w: u32| -> i64 {
        let v = w & mask;
        if signed && v >> (stored - 1) & 1 == 1 {
            v as i64 - (1i64 << stored)
        } else {
            v as i64
        }
    };
    // Padding values share the pixels' representation; a negative one read as US (implicit VR)
    // is the same bit pattern, so both go through `value`.
    let pad = padding.map(|p| {
        let (p, q) = (value(p as u32), value(padding_limit.unwrap_or(p) as u32));
        (p.min(q), p.max(q))
    });
    let hu: Vec<f32> = raw
        .iter()
        .map(|&w| {
            let v = value(w);
            if pad.is_some_and(|(lo, hi)| (lo..=hi).contains(&v)) {
                -1000.0
            } else {
                (v as f64 * slope + intercept) as f32
            }
        })
        .collect();
    if let Some(i) = hu.iter().position(|v| !v.is_finite()) {
        return Err(bad(path, format!("pixel {i}: RescaleSlope {slope} x {} + RescaleIntercept {intercept} is beyond float32", value(raw[i]))));
    }
    Ok(Some(Slice { path: path.to_path_buf(), series, rows, cols, orient, pos, spacing, thickness, between, hu }))
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

fn name(p: &Path) -> String {
    p.file_name().unwrap_or_default().to_string_lossy().into_owned()
}

fn assemble(path: &Path, mut slices: Vec<Slice>, skipped: Vec<PathBuf>) -> Result<Series> {
    let first = &slices[0];
    for s in &slices[1..] {
        let differ = |what: String| bad(&s.path, format!("{what} in {}: one series (one size, orientation and pixel spacing) per folder", name(&first.path)));
        if s.series != first.series {
            return Err(differ(format!("{}: {} differs from {}", tag_name(SERIES_UID), s.series, first.series)));
        }
        if (s.rows, s.cols) != (first.rows, first.cols) {
            return Err(differ(format!("{} x {}: {} x {} differ from {} x {}", tag_name(ROWS), tag_name(COLUMNS), s.rows, s.cols, first.rows, first.cols)));
        }
        if s.orient.iter().zip(&first.orient).any(|(a, b)| (a - b).abs() > 1e-3) {
            return Err(differ(format!("{}: {:?} differs from {:?}", tag_name(IMAGE_ORIENTATION), s.orient, first.orient)));
        }
        if s.spacing.iter().zip(&first.spacing).any(|(a, b)| (a - b).abs() > 1e-4 * a.max(*b) + 1e-6) {
            return Err(differ(format!("{}: {:?} differs from {:?}", tag_name(PIXEL_SPACING), s.spacing, first.spacing)));
        }
    }
    let o = first.orient;
    let nrm = cross([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
    let nrm = nrm.map(|x| x / norm(nrm));
    let along = |s: &Slice| dot(nrm, s.pos);
    slices.sort_by(|a, b| along(a).total_cmp(&along(b)).then_with(|| a.path.cmp(&b.path)));
    let positions: Vec<f64> = slices.iter().map(along).collect();
    let (rows, cols, [sy, sx]) = (slices[0].rows, slices[0].cols, slices[0].spacing);
    let nz = slices.len();
    let sz = if nz == 1 {
        let s = &slices[0];
        s.between.or(s.thickness).ok_or_else(|| {
            bad(&s.path, format!("one slice, and neither {} nor {} gives its thickness", tag_name(SPACING_BETWEEN_SLICES), tag_name(SLICE_THICKNESS)))
        })?
    } else {
        let gaps: Vec<f64> = positions.windows(2).map(|w| w[1] - w[0]).collect();
        let mut sorted = gaps.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[(sorted.len() - 1) / 2];
        for (k, &gap) in gaps.iter().enumerate() {
            let (a, b) = (name(&slices[k].path), name(&slices[k + 1].path));
            if gap < 1e-3 {
                return Err(bad(
                    path,
                    format!(
                        "{a} and {b} are both at {:.3} mm along the slice normal ({}): a repeated slice, or two series in one folder",
                        positions[k],
                        tag_name(IMAGE_POSITION)
                    ),
                ));
            }
            if (gap - median).abs() > 0.01 * median + 1e-3 {
                return Err(bad(
                    path,
                    format!(
                        "uneven slice spacing ({}): {gap:.4} mm between {a} at {:.3} mm and {b} at {:.3} mm, {median:.4} mm (the median) between the others of {nz} slices (a missing slice?)",
                        tag_name(IMAGE_POSITION),
                        positions[k],
                        positions[k + 1]
                    ),
                ));
            }
        }
        let mean = (positions[nz - 1] - positions[0]) / (nz - 1) as f64;
        // The stack must go straight along the normal: a sheared (gantry-tilted) stack is not a
        // (nz, ny, nx) grid.
        let tol = 0.1 * sy.min(sx);
        for s in &slices[1..] {
            let d = [0, 1, 2].map(|i| s.pos[i] - slices[0].pos[i]);
            let t = dot(d, nrm);
            let across = norm([0, 1, 2].map(|i| d[i] - t * nrm[i]));
            if across > tol {
                return Err(bad(
                    &s.path,
                    format!(
                        "{}: the slice is moved by {across:.3} mm across the slice plane from {} (gantry tilt or a sheared stack); not read, resample it first",
                        tag_name(IMAGE_POSITION),
                        name(&slices[0].path)
                    ),
                ));
            }
        }
        mean
    };
    let mut data = Vec::with_capacity(nz * rows * cols);
    let mut files = Vec::with_capacity(nz);
    for s in slices {
        data.extend_from_slice(&s.hu);
        files.push(s.path);
    }
    // Patient LPS to RAS: x and y change sign.
    let ras = |v: [f64; 3], step: f64| [-v[0] * step, -v[1] * step, v[2] * step];
    let affine = [ras([o[0], o[1], o[2]], sx), ras([o[3], o[4], o[5]], sy), ras(nrm, sz)];
    Ok(Series { hu: Array { shape: vec![nz, rows, cols], data, voxel_size: Some([sz, sy, sx]) }, affine, files, positions, skipped })
}

/// The length check that runs before the parser: every element's declared length must fit in the
/// bytes that remain of its container, so that no header can make the parser allocate more than
/// the file holds. Also reads the transfer syntax and SOP class from the file meta group.
mod guard {
    use crate::io::{u16_at, u32_at};
    use super::tag_name;
    use dicom_object::Tag;

    pub struct FileMeta {
        pub ts: String,
        pub sop_class: String,
    }

    const UNDEFINED: u32 = 0xFFFF_FFFF;
    const ITEM: Tag = Tag(0xFFFE, 0xE000);
    const ITEM_END: Tag = Tag(0xFFFE, 0xE00D);
    const SEQ_END: Tag = Tag(0xFFFE, 0xE0DD);
    const MAX_DEPTH: usize = 32;

    #[derive(Clone, Copy)]
    struct Enc {
        explicit: bool,
        big: bool,
    }

    struct Header {
        tag: Tag,
        vr: Option<[u8; 2]>,
        len: u32,
        size: usize,
    }

    fn header(b: &[u8], p: usize, end: usize, e: Enc) -> Result<Header, String> {
        if end - p < 8 {
            return Err(format!("truncated: {} byte(s) at byte {p} where an element header (8 bytes or more) should be", end - p));
        }
        let tag = Tag(u16_at(b, p, e.big), u16_at(b, p + 2, e.big));
        if tag.0 == 0xFFFE || !e.explicit {
            return Ok(Header { tag, vr: None, len: u32_at(b, p + 4, e.big), size: 8 });
        }
        let vr = [b[p + 4], b[p + 5]];
        if !vr.iter().all(u8::is_ascii_uppercase) {
            return Err(format!("{} at byte {p}: bad value representation {vr:?} (not DICOM data, or damaged)", tag_name(tag)));
        }
        if matches!(&vr, b"OB" | b"OD" | b"OF" | b"OL" | b"OV" | b"OW" | b"SQ" | b"UC" | b"UN" | b"UR" | b"UT" | b"SV" | b"UV") {
            if end - p < 12 {
                return Err(format!("{} at byte {p}: truncated element header", tag_name(tag)));
            }
            Ok(Header { tag, vr: Some(vr), len: u32_at(b, p + 8, e.big), size: 12 })
        } else {
            Ok(Header { tag, vr: Some(vr), len: u16_at(b, p + 6, e.big) as u32, size: 8 })
        }
    }

    fn fits(h: &Header, p: usize, end: usize) -> Result<usize, String> {
        let start = p + h.size;
        let (len, left) = (h.len as usize, end - start);
        if len > left {
            return Err(format!("{} at byte {p} declares {len} bytes but only {left} remain: the file is truncated or damaged", tag_name(h.tag)));
        }
        Ok(start + len)
    }

    /// Elements from `p` to `end`; in an undefined-length item, up to its end marker. Returns the
    /// position after the last.
    fn elements(b: &[u8], mut p: usize, end: usize, e: Enc, depth: usize, in_item: bool) -> Result<usize, String> {
        if depth > MAX_DEPTH {
            return Err(format!("sequences nested more than {MAX_DEPTH} deep at byte {p}"));
        }
        loop {
            if p == end {
                return if in_item { Err("truncated: a sequence item has no end marker".into()) } else { Ok(p) };
            }
            let h = header(b, p, end, e)?;
            if h.tag == ITEM_END && in_item {
                return Ok(p + 8);
            }
            if h.tag.0 == 0xFFFE {
                return Err(format!("unexpected item marker ({:04X},{:04X}) at byte {p}", h.tag.0, h.tag.1));
            }
            let start = p + h.size;
            if h.len == UNDEFINED {
                // A sequence of undefined length (UN: encoded implicit VR little endian), or
                // encapsulated pixel data.
                let inner = if h.vr == Some(*b"UN") { Enc { explicit: false, big: false } } else { e };
                p = items(b, start, end, inner, depth + 1, false, h.tag == super::PIXEL_DATA)?;
            } else {
                let next = fits(&h, p, end)?;
                let implicit_sq = h.vr.is_none() && h.len >= 8 && Tag(u16_at(b, start, e.big), u16_at(b, start + 2, e.big)) == ITEM;
                if h.vr == Some(*b"SQ") || implicit_sq {
                    items(b, start, next, e, depth + 1, true, false)?;
                }
                p = next;
            }
        }
    }

    /// The items of a sequence: up to `end` (defined length) or its end marker.
    fn items(b: &[u8], mut p: usize, end: usize, e: Enc, depth: usize, defined: bool, fragments: bool) -> Result<usize, String> {
        if depth > MAX_DEPTH {
            return Err(format!("sequences nested more than {MAX_DEPTH} deep at byte {p}"));
        }
        loop {
            if defined && p == end {
                return Ok(p);
            }
            if end - p < 8 {
                return Err(format!("truncated: a sequence at byte {p} has no end marker"));
            }
            let tag = Tag(u16_at(b, p, e.big), u16_at(b, p + 2, e.big));
            let len = u32_at(b, p + 4, e.big);
            let h = Header { tag, vr: None, len, size: 8 };
            match tag {
                SEQ_END => return Ok(p + 8),
                ITEM if len == UNDEFINED && !fragments => p = elements(b, p + 8, end, e, depth + 1, true)?,
                ITEM if len != UNDEFINED => {
                    let next = fits(&h, p, end)?;
                    if !fragments {
                        elements(b, p + 8, next, e, depth + 1, false)?;
                    }
                    p = next;
                }
                _ => return Err(format!("a sequence holds ({:04X},{:04X}) at byte {p} where an item should be", tag.0, tag.1)),
            }
        }
    }

    fn uid(v: &[u8]) -> String {
        String::from_utf8_lossy(v).trim_end_matches(['\0', ' ']).trim().to_string()
    }

    /// Checks the whole file (which starts with the 128-byte preamble and "DICM").
    pub fn check(b: &[u8]) -> Result<FileMeta, String> {
        let le = Enc { explicit: true, big: false };
        let (mut p, end) = (132, b.len());
        let (mut ts, mut sop_class) = (None, String::new());
        while end - p >= 4 && u16_at(b, p, false) == 0x0002 {
            let h = header(b, p, end, le)?;
            let next = fits(&h, p, end)?;
            let v = &b[p + h.size..next];
            match h.tag {
                Tag(0x0002, 0x0010) => ts = Some(uid(v)),
                Tag(0x0002, 0x0002) => sop_class = uid(v),
                _ => {}
            }
            p = next;
        }
        let ts = ts.ok_or_else(|| format!("{}: missing from the file meta group", tag_name(Tag(0x0002, 0x0010))))?;
        let e = match ts.as_str() {
            super::IMPLICIT_LE => Enc { explicit: false, big: false },
            super::EXPLICIT_BE => Enc { explicit: true, big: true },
            // Deflated data is refused by the caller; nothing to walk.
            super::DEFLATED => return Ok(FileMeta { ts, sop_class }),
            _ => le,
        };
        elements(b, p, end, e, 0, false)?;
        Ok(FileMeta { ts, sop_class })
    }
}
