//! The training step of METHOD.md section 5, on the CPU (f32): noise over the whole volume, the
//! patch start distribution that tiling produces (uniform over starts whose patch overlaps the
//! volume, inside the P-padded volume), global context, positional channels, t uniform, MSE on
//! eps; AdamW with warmup and clipping, EMA weights. Every batch is drawn from a generator seeded
//! by (seed, step, sample), so a resumed run is bit-identical to an uninterrupted one. The
//! gradients come from the U-Net's backward on the chosen device (f32 on the CPU, bf16 compute on
//! emu and cuda); the master weights, Adam and the EMA stay f32 on the host.
use super::schedule::{Schedule, T};
use super::tiling;
use crate::ct::{chest::MU_WATER, phantom, VolumeGrid};
use crate::error::{Error, Result};
use crate::nn::optim::{clip_grad_norm, ema_update, AdamConfig, AdamState};
use crate::nn::{Arch, UNet, UNetConfig, Weights};
use crate::tensor::{safetensors, DType, Tensor};
use crate::Device;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where training volumes come from.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Data {
    /// A built-in phantom (`ellipsoids`, `chest`, `shepp-logan`) of this shape, a new seed per draw.
    Phantom { name: String, shape: [usize; 3] },
    /// Volumes already mapped to [-1, 1] (see `load_folder`), with the files they came from.
    Volumes { files: Vec<PathBuf> },
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TrainOptions {
    pub batch: usize,
    pub seed: u64,
    pub adam: AdamConfig,
    pub data: Data,
    /// HU window [lo, hi] mapped to [-1, 1] for folder data.
    pub window: [f32; 2],
}

/// Maps attenuation to the model's range: x = 2 mu / mu_max - 1, clamped to [-1, 1].
pub fn to_model_range(mu: &[f32], mu_max: f32) -> Vec<f32> {
    mu.iter().map(|m| (2.0 * m / mu_max - 1.0).clamp(-1.0, 1.0)).collect()
}

/// Reads every .npy/.nii/.nii.gz volume of a folder and maps the window [lo, hi] to [-1, 1].
pub fn load_folder(dir: &Path, window: [f32; 2]) -> Result<Vec<(PathBuf, [usize; 3], Vec<f32>)>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let s = p.to_string_lossy();
            s.ends_with(".npy") || s.ends_with(".nii") || s.ends_with(".nii.gz")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::io(dir, std::io::Error::other("holds no .npy, .nii or .nii.gz volume")));
    }
    let [lo, hi] = window;
    files
        .into_iter()
        .map(|f| {
            let a = crate::io::read_array(&f)?;
            let dims: [usize; 3] = a.shape.as_slice().try_into().map_err(|_| Error::io(&f, std::io::Error::other(format!("a 3D volume is needed, shape {:?}", a.shape))))?;
            let x = a.data.iter().map(|v| (2.0 * (v - lo) / (hi - lo) - 1.0).clamp(-1.0, 1.0)).collect();
            Ok((f, dims, x))
        })
        .collect()
}

pub struct StepStats {
    pub loss: f64,
    pub grad_norm: f64,
    pub lr: f32,
}

pub struct Trainer {
    pub arch: Arch,
    pub opts: TrainOptions,
    pub params: BTreeMap<String, Vec<f32>>,
    pub ema: BTreeMap<String, Vec<f32>>,
    pub adam: AdamState,
    sched: Schedule,
    volumes: Vec<([usize; 3], Vec<f32>)>,
    dev: Device,
}

fn sample_seed(seed: u64, step: u64, b: usize) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ step.wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (b as u64).wrapping_mul(0x94d0_49bb_1331_11eb)
}

impl Trainer {
    /// A fresh run: seeded random weights (the EMA starts equal to them).
    pub fn new(cfg: &UNetConfig, opts: TrainOptions, volumes: Vec<([usize; 3], Vec<f32>)>) -> Result<Trainer> {
        cfg.validate()?;
        if opts.batch == 0 {
            return Err(Error::Config("batch must be at least 1".into()));
        }
        let arch = Arch::new(cfg);
        let params = Weights::random(&arch, opts.seed)?.engine_map();
        Ok(Trainer { ema: params.clone(), params, arch, opts, adam: AdamState::default(), sched: Schedule::default(), volumes, dev: Device::Cpu })
    }

    /// The clean volume x_0 (in [-1, 1]) of sample b at `step`.
    fn volume(&self, rng: &mut impl Rng) -> Result<([usize; 3], Vec<f32>)> {
        match &self.opts.data {
            Data::Phantom { name, shape } => {
                let grid = VolumeGrid { shape: *shape, voxel_size: [1.0; 3], origin: [0.0; 3] };
                let mut mu = phantom::by_name(name, &grid, rng.random())?;
                if name != "chest" {
                    // Ellipsoid densities are relative to water.
                    mu.iter_mut().for_each(|v| *v *= MU_WATER);
                }
                Ok((*shape, to_model_range(&mu, self.arch.cfg.mu_max)))
            }
            Data::Volumes { .. } => Ok(self.volumes[rng.random_range(0..self.volumes.len())].clone()),
        }
    }

    /// The batch of `step`: inputs (B, P, 5) and targets (B, P, 1) channels-last, and t (B).
    pub fn batch(&self, step: u64) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let p = self.arch.cfg.patch;
        let pv: usize = p.iter().product();
        let (mut x, mut target, mut ts) = (Vec::new(), Vec::new(), Vec::new());
        for b in 0..self.opts.batch {
            let mut rng = rand::rngs::StdRng::seed_from_u64(sample_seed(self.opts.seed, step, b));
            let (dims, x0) = self.volume(&mut rng)?;
            let t = rng.random_range(0..T);
            let ab = self.sched.abar[t];
            let eps: Vec<f32> = (0..x0.len()).map(|_| StandardNormal.sample(&mut rng)).collect();
            let xt: Vec<f32> = x0.iter().zip(&eps).map(|(a, e)| (ab.sqrt() * *a as f64 + (1.0 - ab).sqrt() * *e as f64) as f32).collect();
            let ctx = tiling::context(&xt, dims, p, self.arch.cfg.context);
            // Starts whose patch overlaps the volume and lies in the P-padded volume: [-P+1, N-1].
            let start: [isize; 3] = std::array::from_fn(|a| rng.random_range(-(p[a] as i64) + 1..dims[a] as i64) as isize);
            x.extend(tiling::assemble(&xt, dims, p, &[start], &ctx).data);
            // The target is the same patch of the zero-padded noise.
            target.extend(tiling::assemble(&eps, dims, p, &[start], &ctx).data.chunks(5).map(|v| v[0]));
            ts.push(t as f32);
            debug_assert_eq!(target.len(), (b + 1) * pv);
        }
        Ok((x, target, ts))
    }

    /// Where the network's forward and backward run (the CPU unless set).
    pub fn set_device(&mut self, dev: &Device) {
        self.dev = dev.clone();
    }

    /// One optimisation step on the batch of the current step.
    pub fn step(&mut self) -> Result<StepStats> {
        let (x, target, t) = self.batch(self.adam.step)?;
        let net = UNet::new(self.arch.clone(), &Weights::from_engine(&self.arch, &self.params)?, &self.dev)?;
        let p = self.arch.cfg.patch;
        let xt = Tensor::from_f32(&x, &[self.opts.batch, p[0], p[1], p[2], self.arch.cfg.in_channels], net.act_dtype(), &self.dev)?;
        let tt = Tensor::from_f32(&t, &[self.opts.batch], DType::F32, &self.dev)?;
        let (loss, tg) = net.mse_backward(&xt, &tt, &target)?;
        let mut g = crate::nn::optim::Grads::new();
        for (k, v) in tg {
            g.insert(k, v.to_f32_vec()?);
        }
        if !loss.is_finite() {
            return Err(Error::Config(format!("the loss became {loss} at step {}: lower the learning rate", self.adam.step)));
        }
        let grad_norm = clip_grad_norm(&mut g, self.opts.adam.clip_norm);
        let lr = self.adam.update(&self.opts.adam, &mut self.params, &g);
        // EMA warm-up: (1 + n) / (10 + n) caps the decay early on, so the average is not held to
        // the random initialisation for thousands of steps (0.999^1000 would still weigh it 37%).
        let n = self.adam.step as f32;
        ema_update(&mut self.ema, &self.params, self.opts.adam.ema_decay.min((1.0 + n) / (10.0 + n)));
        Ok(StepStats { loss, grad_norm, lr })
    }

    /// The EMA weights, for `model run` and reconstruction.
    pub fn ema_weights(&self) -> Result<Weights> {
        Weights::from_engine(&self.arch, &self.ema)
    }

    /// Writes ckpt-STEP.safetensors (weights, EMA, Adam moments) then checkpoint.json pointing to
    /// it, each atomically, then removes the previous checkpoint's tensors: at every moment the
    /// JSON names a complete file.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        let file = format!("ckpt-{:08}.safetensors", self.adam.step);
        let mut tensors = Vec::new();
        for (prefix, map) in [("param", &self.params), ("ema", &self.ema), ("adam_m", &self.adam.m), ("adam_v", &self.adam.v)] {
            for (k, v) in map {
                tensors.push((format!("{prefix}.{k}"), Tensor::from_f32(v, &[v.len()], DType::F32, &Device::Cpu)?));
            }
        }
        let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        safetensors::save(&dir.join(&file), &refs)?;
        let previous = read_meta(dir).ok().map(|m| m.file);
        let meta = Meta { step: self.adam.step, file: file.clone(), config: self.arch.cfg.clone(), options: self.opts.clone() };
        crate::io::write_atomic(&dir.join("checkpoint.json"), serde_json::to_string_pretty(&meta).unwrap().as_bytes())?;
        if let Some(p) = previous.filter(|p| *p != file) {
            let _ = std::fs::remove_file(dir.join(p));
        }
        Ok(())
    }

    /// Continues the run saved in `dir` (its config and options; `volumes` as for `new`).
    pub fn resume(dir: &Path, volumes: Vec<([usize; 3], Vec<f32>)>) -> Result<Trainer> {
        let (meta, [params, ema, m, v]) = read_checkpoint(dir)?;
        let mut t = Trainer::new(&meta.config, meta.options, volumes)?;
        Weights::from_engine(&t.arch, &params)?;
        Weights::from_engine(&t.arch, &ema)?;
        t.params = params;
        t.ema = ema;
        t.adam = AdamState { step: meta.step, m, v };
        Ok(t)
    }
}

/// The config, step and weights (EMA, or the raw parameters) of the last checkpoint in `dir`.
pub fn checkpoint_weights(dir: &Path, ema: bool) -> Result<(UNetConfig, u64, Weights)> {
    let (meta, [params, ema_map, _, _]) = read_checkpoint(dir)?;
    let arch = Arch::new(&meta.config);
    let w = Weights::from_engine(&arch, if ema { &ema_map } else { &params })?;
    Ok((meta.config, meta.step, w))
}

/// The JSON of `dir` and the four maps of the file it names: parameters, EMA, Adam's m and v.
fn read_checkpoint(dir: &Path) -> Result<(Meta, [BTreeMap<String, Vec<f32>>; 4])> {
    let meta = read_meta(dir)?;
    let path = dir.join(&meta.file);
    let tensors = safetensors::load(&path, &Device::Cpu)?;
    let mut maps: [BTreeMap<String, Vec<f32>>; 4] = Default::default();
    for (name, v) in tensors {
        let bad = || Error::SafeTensors { path: path.clone(), msg: format!("unexpected tensor {name:?}") };
        let (prefix, rest) = name.split_once('.').ok_or_else(bad)?;
        let i = ["param", "ema", "adam_m", "adam_v"].iter().position(|p| *p == prefix).ok_or_else(bad)?;
        maps[i].insert(rest.to_string(), v.to_f32_vec()?);
    }
    Ok((meta, maps))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    step: u64,
    file: String,
    config: UNetConfig,
    options: TrainOptions,
}

fn read_meta(dir: &Path) -> Result<Meta> {
    let p = dir.join("checkpoint.json");
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", p.display())))
}
