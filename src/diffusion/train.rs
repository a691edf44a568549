//! The training step of docs/METHOD.md section 5, on the CPU (f32): noise over the whole volume, the
//! patch start distribution that tiling produces (uniform over starts whose patch overlaps the
//! volume, inside the P-padded volume), global context, positional channels, t uniform, MSE on
//! eps; AdamW with warmup and clipping, EMA weights. Every batch is drawn from a generator seeded
//! by (seed, step, sample), so a resumed run is bit-identical to an uninterrupted one. Everything
//! lives on the training device: the network (f32 on the CPU, bf16 compute on emu and cuda), its
//! f32 master weights, Adam's moments and the EMA, updated in place by one kernel per tensor; the
//! host sees them only at checkpoints.
use super::schedule::{Schedule, T};
use crate::ct::{chest::MU_WATER, phantom, VolumeGrid};
use crate::error::{Error, Result};
use crate::nn::optim::{AdamConfig, Optimizer};
use crate::nn::{Arch, Intensity, Prediction, UNet, UNetConfig, Weights};
use crate::tensor::{safetensors, DType, Tensor};
use crate::ops::patches::{assemble_ref, context_ref};
use crate::Device;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where training volumes come from.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Data {
    /// A built-in phantom (`ellipsoids`, `chest`, `shepp-logan`, `thorax`) of this shape, a new
    /// seed per draw, averaged over each voxel from a grid `supersample` times finer
    /// (`phantom::averaged`). With `supersample` 1 (the runs before it existed) each sample of a
    /// batch draws its own volume; above 1 one volume per step serves the whole batch, so that
    /// rendering the finer grid does not multiply the step's time (the patches, their
    /// timesteps and noise still differ; what sharing costs the training is not measured).
    #[allow(missing_docs)] // the phantom's name and its volume shape (z, y, x) in voxels
    Phantom {
        name: String,
        shape: [usize; 3],
        #[serde(default = "one")]
        supersample: usize,
    },
    /// Volumes of a folder (see `load_folder`), with the files they came from.
    #[allow(missing_docs)] // the volume files
    Volumes { files: Vec<PathBuf> },
}

fn one() -> usize {
    1
}

/// The data as `train`'s flags name it: `phantom:thorax, --volume-shape 64,64,64,
/// --supersample 2`, or a folder's file count with its first file.
impl std::fmt::Display for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Data::Phantom { name, shape, supersample } => {
                write!(f, "phantom:{name}, --volume-shape {},{},{}, --supersample {supersample}", shape[0], shape[1], shape[2])
            }
            Data::Volumes { files } => match files.first() {
                Some(first) => write!(f, "{} volume files ({} first)", files.len(), first.display()),
                None => write!(f, "no volume files"),
            },
        }
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
/// A training run's settings, saved in checkpoint.json.
pub struct TrainOptions {
    /// Patches per step.
    pub batch: usize,
    /// Seeds the weights' initialisation and every draw (volume, patch, timestep, noise).
    pub seed: u64,
    /// The optimiser.
    pub adam: AdamConfig,
    /// Where the volumes come from.
    pub data: Data,
    /// What the values of a folder's .npy/NIfTI volumes are (DICOM is always HU).
    #[serde(default)]
    pub units: Units,
}

/// The unit of a volume file's values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Units {
    /// Hounsfield units, mapped to attenuation by `ct::units::hu_to_mu`.
    #[default]
    Hu,
    /// Attenuation in 1/mm.
    Mu,
}

impl Units {
    /// The name `--units` takes: "hu" or "mu".
    pub fn name(&self) -> &'static str {
        match self {
            Units::Hu => "hu",
            Units::Mu => "mu",
        }
    }

    /// "hu"/"HU" or "mu"; `Error::Argument` otherwise.
    pub fn parse(s: &str) -> Result<Units> {
        match s {
            "hu" | "HU" => Ok(Units::Hu),
            "mu" => Ok(Units::Mu),
            _ => Err(Error::Argument(format!("units {s:?}: expected hu or mu (1/mm)"))),
        }
    }
}

/// Maps attenuation to the model's range with `map`, clamped to [-1, 1] with `clip`.
pub fn to_model_range(mu: &[f32], map: Intensity, clip: bool) -> Vec<f32> {
    let x = |m: &f32| map.to_model(*m);
    if clip {
        mu.iter().map(|m| x(m).clamp(-1.0, 1.0)).collect()
    } else {
        mu.iter().map(x).collect()
    }
}

/// The most voxels a volume resampled by `load_folder` may have (4 GiB of f32).
pub const MAX_RESAMPLED: usize = 1 << 30;

/// Reads every .npy/.nii/.nii.gz volume of a folder, and every sub-folder that is a DICOM CT
/// series (a folder holding none of these but DICOM slices itself is read as one series), as
/// attenuation in 1/mm: DICOM through its rescale to HU, .npy/NIfTI values as `units` says, HU
/// mapped by `ct::units::hu_to_mu`. With `voxel_size` (z, y, x mm), each volume whose file states
/// its voxel size (NIfTI, DICOM) is resampled to it (trilinear; an error beyond `MAX_RESAMPLED`
/// voxels). The trainer maps attenuation to
/// the model's range with the config's intensity map, the same map as phantoms and reconstruction.
pub fn load_folder(dir: &Path, units: Units, voxel_size: Option<[f64; 3]>) -> Result<Vec<(PathBuf, [usize; 3], Vec<f32>)>> {
    use crate::io::dicom;
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let s = p.to_string_lossy();
            s.ends_with(".npy") || s.ends_with(".nii") || s.ends_with(".nii.gz") || (p.is_dir() && dicom::is_series_dir(p))
        })
        .collect();
    files.sort();
    if files.is_empty() && dicom::is_series_dir(dir) {
        files.push(dir.to_path_buf());
    }
    if files.is_empty() {
        return Err(Error::io(dir, std::io::Error::other("holds no .npy, .nii or .nii.gz volume, no DICOM series sub-folder and no DICOM slices")));
    }
    files
        .into_iter()
        .map(|f| {
            let mut a = crate::io::read_array(&f)?;
            if !f.is_dir() && units == Units::Hu {
                a.data.iter_mut().for_each(|v| *v = crate::ct::units::hu_to_mu(*v));
            }
            let dims: [usize; 3] = a.shape.as_slice().try_into().map_err(|_| Error::io(&f, std::io::Error::other(format!("a 3D volume is needed, shape {:?}", a.shape))))?;
            match (voxel_size, a.voxel_size) {
                (Some(want), Some(have)) => {
                    let size: [f64; 3] = std::array::from_fn(|i| (dims[i] as f64 * have[i] / want[i]).round().max(1.0));
                    let voxels: f64 = size.iter().product();
                    if voxels > MAX_RESAMPLED as f64 {
                        let msg = format!("resampled from {have:?} mm to {want:?} mm it would have {voxels:.3e} voxels, more than {MAX_RESAMPLED}: choose a larger voxel size");
                        return Err(Error::io(&f, std::io::Error::other(msg)));
                    }
                    let out: [usize; 3] = size.map(|n| n as usize);
                    Ok((f, out, crate::ops::resample::trilinear_ref(&a.data, dims, out)))
                }
                _ => Ok((f, dims, a.data)),
            }
        })
        .collect()
}

/// What one optimisation step reports.
pub struct StepStats {
    /// Mean squared error of the batch's prediction (eps or v).
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// The step's learning rate (after warmup).
    pub lr: f32,
}

/// Denoising score-matching training of the patch U-Net (docs/TRAINING.md): draws patches with
/// their global context from the volumes, takes AdamW steps, keeps the EMA, saves and resumes.
pub struct Trainer {
    /// The network's layout.
    pub arch: Arch,
    /// The run's settings.
    pub opts: TrainOptions,
    /// Optimisation steps taken.
    pub step: u64,
    opt: Optimizer,
    /// The network on the device, its weights refreshed from the master weights after each step.
    net: Option<UNet>,
    sched: Schedule,
    volumes: Vec<([usize; 3], Vec<f32>)>,
    dev: Device,
}

/// The checkpoint's four maps, in the order of its name prefixes (and of `Optimizer::host_map`).
const PREFIXES: [&str; 4] = ["param", "ema", "adam_m", "adam_v"];

fn sample_seed(seed: u64, step: u64, b: usize) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ step.wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (b as u64).wrapping_mul(0x94d0_49bb_1331_11eb)
}

/// The seed of a step's shared volume (`Data::Phantom` with `supersample` > 1): the step's own
/// stream, apart from its samples' (`sample_seed`) by a constant of its own.
fn step_seed(seed: u64, step: u64) -> u64 {
    sample_seed(seed, step, 0) ^ 0xd6e8_feb8_6659_fd93
}

impl Trainer {
    /// A fresh run: seeded random weights (the EMA starts equal to them).
    pub fn new(cfg: &UNetConfig, opts: TrainOptions, volumes: Vec<([usize; 3], Vec<f32>)>) -> Result<Trainer> {
        let w = Weights::random(&Arch::new(cfg), opts.seed)?;
        Trainer::from_weights(cfg, opts, volumes, &w)
    }

    /// A fresh run from given weights (fine-tuning; the EMA starts equal to them, Adam's moments
    /// at zero). `cfg` must describe the same network; its `prediction` may differ from the one
    /// the weights were trained for (the network then learns the new target).
    pub fn from_weights(cfg: &UNetConfig, opts: TrainOptions, volumes: Vec<([usize; 3], Vec<f32>)>, w: &Weights) -> Result<Trainer> {
        cfg.validate()?;
        if opts.batch == 0 {
            return Err(Error::Argument("batch must be at least 1".into()));
        }
        if let Data::Phantom { shape, supersample, .. } = &opts.data {
            phantom::check_supersample(*shape, *supersample)?;
        }
        let arch = Arch::new(cfg);
        let params = w.engine_map();
        let opt = Optimizer::from_maps(&arch, [&params, &params, &BTreeMap::new(), &BTreeMap::new()])?;
        let volumes = volumes.into_iter().map(|(d, mu)| (d, to_model_range(&mu, cfg.intensity(), cfg.clip_x0))).collect();
        Ok(Trainer { arch, opts, step: 0, opt, net: None, sched: Schedule::default(), volumes, dev: Device::Cpu })
    }

    fn host_map(&self, which: usize) -> Result<BTreeMap<String, Vec<f32>>> {
        self.opt.host_map(which)
    }

    /// The master weights (engine layout), copied to the host.
    pub fn params(&self) -> Result<BTreeMap<String, Vec<f32>>> {
        self.host_map(0)
    }

    /// The EMA of the weights, copied to the host.
    pub fn ema(&self) -> Result<BTreeMap<String, Vec<f32>>> {
        self.host_map(1)
    }

    /// Adam's first and second moments, copied to the host.
    pub fn moments(&self) -> Result<[BTreeMap<String, Vec<f32>>; 2]> {
        Ok([self.host_map(2)?, self.host_map(3)?])
    }

    /// A clean volume x_0 (in [-1, 1]) drawn with `rng`.
    fn volume(&self, rng: &mut impl Rng) -> Result<([usize; 3], Vec<f32>)> {
        match &self.opts.data {
            Data::Phantom { name, shape, supersample } => {
                let grid = VolumeGrid { shape: *shape, voxel_size: phantom::default_voxel_mm(name, *shape), origin: [0.0; 3] };
                let mut mu = phantom::averaged(name, &grid, rng.random(), *supersample)?;
                if !matches!(name.as_str(), "chest" | "thorax") {
                    // Ellipsoid densities are relative to water.
                    mu.iter_mut().for_each(|v| *v *= MU_WATER);
                }
                Ok((*shape, to_model_range(&mu, self.arch.cfg.intensity(), self.arch.cfg.clip_x0)))
            }
            Data::Volumes { .. } => Ok(self.volumes[rng.random_range(0..self.volumes.len())].clone()),
        }
    }

    /// The batch of `step`: inputs (B, P, 5) and targets (B, P, 1) channels-last, and t (B).
    /// Samples are drawn in parallel, each from its own seeded generator (the same batch on any
    /// thread count).
    pub fn batch(&self, step: u64) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        use rayon::prelude::*;
        let shared = self.step_volume(step)?;
        let samples: Vec<(Vec<f32>, Vec<f32>, f32)> = (0..self.opts.batch).into_par_iter().map(|b| self.sample(step, b, shared.as_ref())).collect::<Result<_>>()?;
        let (mut x, mut target, mut ts) = (Vec::new(), Vec::new(), Vec::new());
        for (xs, tg, t) in samples {
            x.extend(xs);
            target.extend(tg);
            ts.push(t);
        }
        Ok((x, target, ts))
    }

    /// The volume all samples of `step` share: a supersampled phantom's (None otherwise).
    fn step_volume(&self, step: u64) -> Result<Option<([usize; 3], Vec<f32>)>> {
        match self.opts.data {
            Data::Phantom { supersample, .. } if supersample > 1 => Ok(Some(self.volume(&mut rand::rngs::StdRng::seed_from_u64(step_seed(self.opts.seed, step)))?)),
            _ => Ok(None),
        }
    }

    /// Sample b of `step`: its patch input (P, 5), target (P, 1) and t; from the step's `shared`
    /// volume when there is one, else from a volume of its own.
    fn sample(&self, step: u64, b: usize, shared: Option<&([usize; 3], Vec<f32>)>) -> Result<(Vec<f32>, Vec<f32>, f32)> {
        let p = self.arch.cfg.patch;
        let pv: usize = p.iter().product();
        let mut rng = rand::rngs::StdRng::seed_from_u64(sample_seed(self.opts.seed, step, b));
        let own;
        let (dims, x0) = match shared {
            Some((d, v)) => (*d, v),
            None => {
                own = self.volume(&mut rng)?;
                (own.0, &own.1)
            }
        };
        let t = rng.random_range(0..T);
        let ab = self.sched.abar[t];
        let eps: Vec<f32> = (0..x0.len()).map(|_| StandardNormal.sample(&mut rng)).collect();
        let xt: Vec<f32> = x0.iter().zip(&eps).map(|(a, e)| (ab.sqrt() * *a as f64 + (1.0 - ab).sqrt() * *e as f64) as f32).collect();
        let ctx = context_ref(&xt, dims, p, self.arch.cfg.context);
        // Starts whose patch overlaps the volume and lies in the P-padded volume: [-P+1, N-1].
        let start: [isize; 3] = std::array::from_fn(|a| rng.random_range(-(p[a] as i64) + 1..dims[a] as i64) as isize);
        let x = assemble_ref(&xt, dims, p, &[start], &ctx);
        // The target is the same patch of the zero-padded noise (and volume, for v).
        let patch_of = |v: &[f32]| assemble_ref(v, dims, p, &[start], &ctx).chunks(5).map(|c| c[0]).collect::<Vec<f32>>();
        let pred = self.arch.cfg.prediction;
        let x0p = if pred == Prediction::Eps { vec![0.0; pv] } else { patch_of(&x0) };
        let target: Vec<f32> = patch_of(&eps).iter().zip(&x0p).map(|(e, a)| pred.target(*a, *e, ab)).collect();
        Ok((x, target, t as f32))
    }

    /// Where the network's forward and backward and the optimiser run (the CPU unless set): the
    /// whole state moves there.
    pub fn set_device(&mut self, dev: &Device) -> Result<()> {
        self.opt.to_device(dev)?;
        self.dev = dev.clone();
        self.net = None;
        Ok(())
    }

    /// One optimisation step on the batch of the current step.
    pub fn step(&mut self) -> Result<StepStats> {
        let (x, target, t) = self.batch(self.step)?;
        let mut net = match self.net.take() {
            Some(n) => n,
            None => UNet::new(self.arch.clone(), &Weights::from_engine(&self.arch, &self.params()?)?, &self.dev)?,
        };
        let p = self.arch.cfg.patch;
        let xt = Tensor::from_f32(&x, &[self.opts.batch, p[0], p[1], p[2], self.arch.cfg.in_channels], net.act_dtype(), &self.dev)?;
        let tt = Tensor::from_f32(&t, &[self.opts.batch], DType::F32, &self.dev)?;
        let (loss, grads) = net.mse_backward(&xt, &tt, &target)?;
        if !loss.is_finite() {
            return Err(Error::Config(format!("the loss became {loss} at step {}: lower the learning rate", self.step)));
        }
        self.step += 1;
        let (grad_norm, lr) = self.opt.apply(&self.opts.adam, self.step, &grads, &mut net)?;
        self.net = Some(net);
        Ok(StepStats { loss, grad_norm, lr })
    }

    /// The EMA weights, for `model run` and reconstruction.
    pub fn ema_weights(&self) -> Result<Weights> {
        Weights::from_engine(&self.arch, &self.ema()?)
    }

    /// Writes ckpt-STEP.safetensors (weights, EMA, Adam moments) then checkpoint.json pointing to
    /// it, each atomically, then removes the previous checkpoint's tensors: at every moment the
    /// JSON names a complete file.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        let file = format!("ckpt-{:08}.safetensors", self.step);
        let mut tensors = Vec::new();
        for (which, prefix) in PREFIXES.iter().enumerate() {
            for (k, v) in self.host_map(which)? {
                tensors.push((format!("{prefix}.{k}"), Tensor::from_f32(&v, &[v.len()], DType::F32, &Device::Cpu)?));
            }
        }
        let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        safetensors::save(&dir.join(&file), &refs)?;
        let previous = read_meta(dir).ok().map(|m| m.file);
        let meta = Meta { step: self.step, file: file.clone(), config: self.arch.cfg.clone(), options: self.opts.clone() };
        crate::io::write_atomic(&dir.join("checkpoint.json"), serde_json::to_string_pretty(&meta).unwrap().as_bytes())?;
        if let Some(p) = previous.filter(|p| *p != file) {
            let _ = std::fs::remove_file(dir.join(p));
        }
        Ok(())
    }

    /// Continues the run saved in `dir` (its config and options; `volumes` as for `new`).
    pub fn resume(dir: &Path, volumes: Vec<([usize; 3], Vec<f32>)>) -> Result<Trainer> {
        let (meta, maps) = read_checkpoint(dir)?;
        let mut t = Trainer::new(&meta.config, meta.options, volumes)?;
        t.opt = Optimizer::from_maps(&t.arch, [&maps[0], &maps[1], &maps[2], &maps[3]])?;
        t.step = meta.step;
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
        let i = PREFIXES.iter().position(|p| *p == prefix).ok_or_else(bad)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A supersampled phantom stream: each step's samples come from one volume, the phantom
    /// averaged from the grid twice as fine (`phantom::averaged`) with the seed of the step's own
    /// generator, mapped to the model range; another step draws another volume.
    #[test]
    fn a_supersampled_step_shares_the_averaged_phantom() {
        let cfg = UNetConfig { patch: [8, 8, 8], ..UNetConfig::small() };
        let data = Data::Phantom { name: "thorax".into(), shape: [16, 16, 16], supersample: 2 };
        let opts = TrainOptions { batch: 3, seed: 9, adam: AdamConfig::default(), data, units: Units::Hu };
        let t = Trainer::new(&cfg, opts, vec![]).unwrap();
        let (dims, vol) = t.step_volume(4).unwrap().unwrap();
        let grid = VolumeGrid { shape: [16; 3], voxel_size: phantom::default_voxel_mm("thorax", [16; 3]), origin: [0.0; 3] };
        let seed: u64 = rand::rngs::StdRng::seed_from_u64(step_seed(9, 4)).random();
        let want = to_model_range(&phantom::averaged("thorax", &grid, seed, 2).unwrap(), cfg.intensity(), cfg.clip_x0);
        assert_eq!((dims, &vol), ([16; 3], &want));
        assert_ne!(t.step_volume(5).unwrap().unwrap().1, vol);
        let (x, target, ts) = t.batch(4).unwrap();
        let shared = (dims, vol);
        let (mut x2, mut target2, mut ts2) = (vec![], vec![], vec![]);
        for b in 0..3 {
            let (xs, tg, tt) = t.sample(4, b, Some(&shared)).unwrap();
            x2.extend(xs);
            target2.extend(tg);
            ts2.push(tt);
        }
        assert_eq!((x, target, ts), (x2, target2, ts2));
    }
}
