//! Weights from safetensors (f32, bf16 or f16; names as guided-diffusion's state_dict), checked
//! against the layout and repacked once for the engine: convolutions to (k, k, k, Ci, Co).
use super::arch::Arch;
use crate::error::{Error, Result};
use crate::ops::conv3d::{repack_weight, unpack_weight};
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
    /// The settings a converter stored in the metadata (tools/pt_to_safetensors.py: norm groups,
    /// head size, qkv order, prediction, mu_min and mu_max) are checked against the config first.
    pub fn load(path: &Path, arch: &Arch) -> Result<Weights> {
        check_metadata(path, &safetensors::metadata(path)?, &arch.cfg)?;
        let tensors = safetensors::load(path, &Device::Cpu)?;
        Weights::from_tensors(path, arch, tensors)
    }

    /// As `load`, from a safetensors image in memory (`path` names it in errors).
    pub fn load_bytes(path: &Path, bytes: &[u8], arch: &Arch) -> Result<Weights> {
        check_metadata(path, &safetensors::metadata_bytes(path, bytes)?, &arch.cfg)?;
        let tensors = safetensors::load_bytes(path, bytes, &Device::Cpu)?;
        Weights::from_tensors(path, arch, tensors)
    }

    /// Checks named tensors (PyTorch shapes, any float dtype, on the CPU) against `arch`: every
    /// parameter present, shaped and finite, nothing extra; convolution weights repacked to the
    /// engine's layout. `Error::Weights` naming the tensor and `path` otherwise.
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

    /// Seeded random weights, non-zero everywhere (as tools/unet_reference.py draws them, though
    /// not the same numbers): U(+-1/sqrt(fan_in)) for weights, U(+-0.1) for biases, 1 + U(+-0.2)
    /// for norm scales. For benchmarks and tests that need a network, not a trained one.
    pub fn random(arch: &Arch, seed: u64) -> Result<Weights> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut tensors = BTreeMap::new();
        for p in arch.params() {
            let n: usize = p.shape.iter().product();
            let norm = ["in_layers.0.weight", "out_layers.0.weight", "norm.weight", "out.0.weight"].iter().any(|s| p.name.ends_with(s));
            let fan_in = if p.shape.len() > 1 { n / p.shape[0] } else { 1 };
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    let u: f32 = rng.random_range(-1.0..1.0);
                    if norm {
                        1.0 + 0.2 * u
                    } else if p.shape.len() == 1 {
                        0.1 * u
                    } else {
                        u / (fan_in as f32).sqrt()
                    }
                })
                .collect();
            tensors.insert(p.name.clone(), Tensor::from_f32(&v, &p.shape, crate::DType::F32, &Device::Cpu)?);
        }
        Weights::from_tensors(Path::new("<random>"), arch, tensors)
    }

    /// Weights from values in the engine layout (as `engine_map` gives them), shapes from `arch`.
    pub fn from_engine(arch: &Arch, map: &BTreeMap<String, Vec<f32>>) -> Result<Weights> {
        let mut out = HashMap::new();
        for p in arch.params() {
            let v = map.get(&p.name).ok_or_else(|| Error::Config(format!("parameter {:?} is missing", p.name)))?;
            let shape = match p.shape.len() {
                5 => vec![p.shape[1] * p.shape[2].pow(3), p.shape[0]],
                3 => vec![p.shape[1], p.shape[0]],
                _ => p.shape.clone(),
            };
            if v.len() != shape.iter().product::<usize>() {
                return Err(Error::Config(format!("parameter {:?} has {} values, {shape:?} expected", p.name, v.len())));
            }
            out.insert(p.name, (shape, v.clone()));
        }
        Ok(Weights { map: out })
    }

    /// Every parameter's values in the engine layout, by name.
    pub fn engine_map(&self) -> BTreeMap<String, Vec<f32>> {
        self.map.iter().map(|(k, (_, v))| (k.clone(), v.clone())).collect()
    }

    /// Writes f32 safetensors in PyTorch's layout and names (what `load` and PyTorch read).
    pub fn save(&self, path: &Path, arch: &Arch) -> Result<()> {
        let mut tensors = Vec::new();
        for p in arch.params() {
            let (_, v) = &self.map[&p.name];
            let v = match p.shape.len() {
                5 => unpack_weight(v, p.shape[0], p.shape[1], p.shape[2]),
                3 => unpack_weight(v, p.shape[0], p.shape[1], 1),
                _ => v.clone(),
            };
            tensors.push((p.name.clone(), Tensor::from_f32(&v, &p.shape, crate::DType::F32, &Device::Cpu)?));
        }
        let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        safetensors::save(path, &refs)
    }

    /// Every parameter: name, engine shape, values.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Vec<usize>, &Vec<f32>)> {
        self.map.iter().map(|(k, (s, v))| (k, s, v))
    }
}

/// The settings a state_dict cannot show, as the converter recorded them (`tomodiff.*` metadata
/// keys), against the config: a mismatch loads without a shape error but computes something else.
fn check_metadata(path: &Path, meta: &std::collections::BTreeMap<String, String>, cfg: &super::UNetConfig) -> Result<()> {
    let prediction = match cfg.prediction {
        super::Prediction::Eps => "eps",
        super::Prediction::V => "v",
    };
    let mismatch = |what: String, want: String| {
        let msg = format!("the weights were converted with {what}, the config says {want} (use the config.json written beside them, or convert again)");
        Err(Error::Weights { path: path.to_path_buf(), msg })
    };
    let want = [
        ("norm_groups", cfg.norm_groups.to_string()),
        ("qkv_order", "legacy".to_string()),
        ("prediction", prediction.to_string()),
    ];
    for (key, want) in want {
        if let Some(got) = meta.get(&format!("tomodiff.{key}")) {
            if *got != want {
                return mismatch(format!("{key} {got}"), want);
            }
        }
    }
    // The heads are stated either way: a head count, or a head size.
    let heads_want = match cfg.num_heads {
        Some(h) => format!("num_heads {h}"),
        None => format!("head_channels {}", cfg.head_channels),
    };
    let heads_got = (meta.get("tomodiff.num_heads").map(|h| format!("num_heads {h}")))
        .or_else(|| meta.get("tomodiff.head_channels").map(|h| format!("head_channels {h}")));
    if let Some(got) = heads_got {
        if got != heads_want {
            return mismatch(got, heads_want);
        }
    }
    for (key, want) in [("mu_max", cfg.mu_max), ("mu_min", cfg.mu_min)] {
        if let Some(got) = meta.get(&format!("tomodiff.{key}")).and_then(|v| v.parse::<f32>().ok()) {
            if (got - want).abs() > 1e-6 * got.abs().max(want.abs()) {
                let msg = format!("the weights were converted with {key} {got}, the config says {want} (the intensity map differs)");
                return Err(Error::Weights { path: path.to_path_buf(), msg });
            }
        }
    }
    Ok(())
}
