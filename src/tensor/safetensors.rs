//! safetensors files: memory-mapped load, atomic save. Every failure names the file (and the
//! tensor, where one is at fault).
use super::{DType, Tensor};
use crate::device::Device;
use crate::error::{Error, Result};
use ::safetensors::{tensor::TensorView, Dtype as StDtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::Path;

fn from_st(d: StDtype) -> Option<DType> {
    match d {
        StDtype::F32 => Some(DType::F32),
        StDtype::BF16 => Some(DType::BF16),
        StDtype::F16 => Some(DType::F16),
        _ => None,
    }
}

fn to_st(d: DType) -> StDtype {
    match d {
        DType::F32 => StDtype::F32,
        DType::BF16 => StDtype::BF16,
        DType::F16 => StDtype::F16,
    }
}

/// Name, dtype and shape of every tensor in the file, without reading the data.
pub fn list(path: &Path) -> Result<Vec<(String, DType, Vec<usize>)>> {
    with_file(path, |st| {
        let mut out = Vec::new();
        for (name, view) in st.tensors() {
            out.push((name.clone(), dtype_of(path, &name, &view)?, view.shape().to_vec()));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    })
}

/// Every tensor of the file, on `dev`, sorted by name.
pub fn load(path: &Path, dev: &Device) -> Result<BTreeMap<String, Tensor>> {
    with_file(path, |st| tensors(path, st, dev))
}

/// The file's string metadata (`__metadata__`; empty when it has none), without reading the data.
pub fn metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: as in `with_file`.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    metadata_bytes(path, &map)
}

/// As `metadata`, of an image in memory.
pub fn metadata_bytes(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, String>> {
    let (_, m) = SafeTensors::read_metadata(bytes).map_err(|e| Error::SafeTensors { path: path.to_path_buf(), msg: e.to_string() })?;
    Ok(m.metadata().clone().unwrap_or_default().into_iter().collect())
}

/// Every tensor of a safetensors image in memory (`path` names it in errors).
pub fn load_bytes(path: &Path, bytes: &[u8], dev: &Device) -> Result<BTreeMap<String, Tensor>> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::SafeTensors { path: path.to_path_buf(), msg: e.to_string() })?;
    tensors(path, &st, dev)
}

fn tensors(path: &Path, st: &SafeTensors, dev: &Device) -> Result<BTreeMap<String, Tensor>> {
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let dtype = dtype_of(path, &name, &view)?;
        let t = Tensor::from_bytes(view.data(), view.shape(), dtype, dev)?;
        out.insert(name, t);
    }
    Ok(out)
}

fn dtype_of(path: &Path, name: &str, view: &TensorView) -> Result<DType> {
    from_st(view.dtype()).ok_or_else(|| Error::SafeTensors {
        path: path.to_path_buf(),
        msg: format!("tensor {name:?} has dtype {:?}; f32, bf16 and f16 are supported", view.dtype()),
    })
}

fn with_file<T>(path: &Path, f: impl FnOnce(&SafeTensors) -> Result<T>) -> Result<T> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only; a file changed underneath is the caller's concern, as for any
    // memory-mapped reader.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&map).map_err(|e| Error::SafeTensors { path: path.to_path_buf(), msg: e.to_string() })?;
    f(&st)
}

/// Writes `tensors` to `path` through a temporary file in the same folder and a rename, so a crash
/// never leaves a half-written file under the final name.
pub fn save(path: &Path, tensors: &[(&str, &Tensor)]) -> Result<()> {
    let mut owned = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        owned.push((name.to_string(), t.dtype(), t.shape().to_vec(), t.to_bytes()?));
    }
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| {
            let v = TensorView::new(to_st(*d), s.clone(), b)
                .map_err(|e| Error::SafeTensors { path: path.to_path_buf(), msg: format!("tensor {n:?}: {e}") })?;
            Ok((n.clone(), v))
        })
        .collect::<Result<_>>()?;
    let bytes = ::safetensors::serialize(views, None)
        .map_err(|e| Error::SafeTensors { path: path.to_path_buf(), msg: e.to_string() })?;
    crate::io::write_atomic(path, &bytes)
}
