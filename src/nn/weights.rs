//! Weights from safetensors (f32, bf16 or f16; names as guided-diffusion's state_dict), checked
//! against the layout and repacked once for the engine: convolutions to (k, k, k, Ci, Co).
use super::arch::Arch;
use crate::error::{Error, Result};
use crate::ops::conv3d::repack_weight;
use crate::tensor::{safetensors, Tensor};
use crate::Device;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Every parameter as f32 on the host, in the engine's layout: convolutions (and attention's 1x1
/// convolutions, stored by PyTorch as (Co, Ci, 1)) as (k^3 Ci, Co); everything else as stored.
pub struct Weights {
    map: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Weights {
    /// Loads and checks every tensor: a missing, unexpected or misshapen tensor is an error that
    /// names it.
    pub fn load(path: &Path, arch: &Arch) -> Result<Weights> {
        let tensors = safetensors::load(path, &Device::Cpu)?;
        Weights::from_tensors(path, arch, tensors)
    }

    pub fn from_tensors(path: &Path, arch: &Arch, mut tensors: BTreeMap<String, Tensor>) -> Result<Weights> {
        let err = |msg: String| Error::Weights { path: path.to_path_buf(), msg };
        let mut map = HashMap::new();
        for p in arch.params() {
            let t = tensors.remove(&p.name).ok_or_else(|| err(format!("tensor {:?} is missing (shape {:?} expected)", p.name, p.shape)))?;
            if t.shape() != p.shape.as_slice() {
                return Err(err(format!("tensor {:?} has shape {:?}, the config needs {:?}", p.name, t.shape(), p.shape)));
            }
            let v = t.to_f32_vec()?;
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(err(format!("tensor {:?} holds a non-finite value at flat index {i}", p.name)));
            }
            let (shape, v) = match p.shape.len() {
                5 => (vec![p.shape[1] * p.shape[2].pow(3), p.shape[0]], repack_weight(&v, p.shape[0], p.shape[1], p.shape[2])),
                3 => (vec![p.shape[1], p.shape[0]], repack_weight(&v, p.shape[0], p.shape[1], 1)),
                _ => (p.shape.clone(), v),
            };
            map.insert(p.name, (shape, v));
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(err(format!("unexpected tensor {extra:?} ({} tensors the config does not have)", tensors.len())));
        }
        Ok(Weights { map })
    }

    /// Every parameter: name, engine shape, values.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Vec<usize>, &Vec<f32>)> {
        self.map.iter().map(|(k, (s, v))| (k, s, v))
    }
}
