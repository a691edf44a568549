//! The U-Net forward pass, one implementation for every device: each step is a Tensor op that
//! runs its CPU reference (f32) or its kernel (bf16 activations, f32 accumulation). Activations
//! are channels-last (N, D, H, W, C); the walk follows the layout of arch.rs block by block.
use super::arch::{Arch, Block};
use super::weights::Weights;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::{attention, conv3d, embedding, group_norm, linear, resample};
use crate::tensor::{DType, Tensor};
use std::collections::{BTreeMap, HashMap};

/// The patch U-Net on a device (docs/NETWORK.md): built from an `Arch` (its config) and `Weights`;
/// `forward` maps inputs (N, pz, py, px, 5) channels-last and timesteps (N) to the output
/// (N, pz, py, px, out_channels), eps or v (`UNetConfig::prediction`).
pub struct UNet {
    /// The layout (and config) the network was built from.
    pub arch: Arch,
    pub(crate) dev: Device,
    pub(crate) act: DType,
    pub(crate) params: HashMap<String, Tensor>,
}

impl UNet {
    /// Uploads the weights to `dev`: convolution weights in the activation dtype (f32 on the CPU,
    /// bf16 on emu/cuda), everything else f32.
    pub fn new(arch: Arch, weights: &Weights, dev: &Device) -> Result<UNet> {
        let act = if dev.runs_kernels() { DType::BF16 } else { DType::F32 };
        let mut params = HashMap::new();
        for (name, shape, v) in weights.iter() {
            let conv = name.ends_with(".weight") && shape.len() == 2 && !name.contains("emb_layers") && !name.starts_with("time_embed");
            let dt = if conv { act } else { DType::F32 };
            params.insert(name.clone(), Tensor::from_f32(v, shape, dt, dev)?);
        }
        Ok(UNet { arch, dev: dev.clone(), act, params })
    }

    /// Where the weights live and the forward pass runs.
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// The dtype of activations on this network's device.
    pub fn act_dtype(&self) -> DType {
        self.act
    }

    pub(crate) fn p(&self, name: &str) -> &Tensor {
        &self.params[name]
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn conv(&self, x: &Tensor, name: &str, co: usize, k: usize, stride: usize, bias_n: Option<&Tensor>, residual: Option<&Tensor>) -> Result<Tensor> {
        let s = x.shape();
        let od = [s[1], s[2], s[3]].map(|d| conv3d::out_len(d, k, stride));
        let mut y = Tensor::empty(&[s[0], od[0], od[1], od[2], co], self.act, &self.dev)?;
        conv3d::conv3d(x, self.p(&format!("{name}.weight")), self.p(&format!("{name}.bias")), bias_n, residual, &mut y, k, stride)?;
        Ok(y)
    }

    pub(crate) fn norm(&self, x: &Tensor, name: &str, silu: bool) -> Result<Tensor> {
        let mut y = Tensor::empty(x.shape(), self.act, &self.dev)?;
        group_norm::group_norm(x, self.p(&format!("{name}.weight")), self.p(&format!("{name}.bias")), self.arch.cfg.norm_groups, silu, &mut y)?;
        Ok(y)
    }

    pub(crate) fn linear(&self, x: &Tensor, name: &str, silu_in: bool) -> Result<Tensor> {
        let b = self.p(&format!("{name}.bias"));
        let mut y = Tensor::empty(&[x.shape()[0], b.numel()], DType::F32, &self.dev)?;
        linear::linear(x, self.p(&format!("{name}.weight")), b, &mut y, silu_in)?;
        Ok(y)
    }

    // Each intermediate is dropped as soon as the next one exists: the pool's footprint is the
    // peak of what is alive at once (docs/RECONSTRUCTION.md, memory).
    fn res(&self, x: &Tensor, emb: &Tensor, name: &str, co: usize) -> Result<Tensor> {
        let eo = self.linear(emb, &format!("{name}.emb_layers.1"), true)?;
        let h = {
            let n = self.norm(x, &format!("{name}.in_layers.0"), true)?;
            self.conv(&n, &format!("{name}.in_layers.2"), co, 3, 1, Some(&eo), None)?
        };
        let n = self.norm(&h, &format!("{name}.out_layers.0"), true)?;
        drop(h);
        let ci = *x.shape().last().unwrap();
        let skip = if ci == co { None } else { Some(self.conv(x, &format!("{name}.skip_connection"), co, 1, 1, None, None)?) };
        self.conv(&n, &format!("{name}.out_layers.3"), co, 3, 1, None, Some(skip.as_ref().unwrap_or(x)))
    }

    fn attn(&self, x: &Tensor, name: &str, heads: usize) -> Result<Tensor> {
        let c = *x.shape().last().unwrap();
        let qkv = {
            let xn = self.norm(x, &format!("{name}.norm"), false)?;
            self.conv(&xn, &format!("{name}.qkv"), 3 * c, 1, 1, None, None)?
        };
        let mut a = Tensor::empty(x.shape(), self.act, &self.dev)?;
        attention::attention(&qkv, &mut a, heads)?;
        drop(qkv);
        self.conv(&a, &format!("{name}.proj_out"), c, 1, 1, None, Some(x))
    }

    pub(crate) fn block(&self, b: &Block, x: &Tensor, emb: &Tensor) -> Result<Tensor> {
        match b {
            Block::Conv { name, c_out, .. } => self.conv(x, name, *c_out, 3, 1, None, None),
            Block::Res { name, c_out, .. } => self.res(x, emb, name, *c_out),
            Block::Attn { name, heads, .. } => self.attn(x, name, *heads),
            Block::Down { name, c } => self.conv(x, &format!("{name}.op"), *c, 3, 2, None, None),
            Block::Up { name, c } => {
                let s = x.shape();
                let mut u = Tensor::empty(&[s[0], 2 * s[1], 2 * s[2], 2 * s[3], s[4]], self.act, &self.dev)?;
                resample::upsample2(x, &mut u)?;
                self.conv(&u, &format!("{name}.conv"), *c, 3, 1, None, None)
            }
        }
    }

    /// The blocks of one level, one after the other.
    fn chain(&self, blocks: &[Block], x: &Tensor, emb: &Tensor) -> Result<Tensor> {
        let (first, rest) = blocks.split_first().ok_or_else(|| Error::Config("a U-Net level without blocks".into()))?;
        let mut h = self.block(first, x, emb)?;
        for b in rest {
            h = self.block(b, &h, emb)?;
        }
        Ok(h)
    }

    /// eps (N, D, H, W, out_channels) for x (N, D, H, W, in_channels) in the activation dtype and
    /// t (N) f32, both on the network's device. With `keep`, the activations after the embedding
    /// ("act.emb"), every encoder and decoder entry and the middle block are kept under the names
    /// the PyTorch reference uses.
    pub fn forward(&self, x: &Tensor, t: &Tensor, mut keep: Option<&mut BTreeMap<String, Tensor>>) -> Result<Tensor> {
        let cfg = &self.arch.cfg;
        let s = x.shape();
        let down = 1usize << (cfg.channel_mult.len() - 1);
        if s.len() != 5 || s[4] != cfg.in_channels || s[1..4].iter().any(|d| *d == 0 || d % down != 0) || t.shape() != [s[0]] {
            return Err(Error::Shape(format!(
                "U-Net input x {s:?}, t {:?}: expected (N, D, H, W, {}) with D, H, W multiples of {down}, and t (N)",
                t.shape(),
                cfg.in_channels
            )));
        }
        let mut te = Tensor::empty(&[s[0], cfg.model_channels], DType::F32, &self.dev)?;
        embedding::timestep_embedding(t, &mut te)?;
        let h1 = self.linear(&te, "time_embed.0", false)?;
        let emb = self.linear(&h1, "time_embed.2", true)?;
        let mut record = |name: String, a: &Tensor| -> Result<()> {
            if let Some(k) = keep.as_deref_mut() {
                k.insert(name, a.to_device(a.device())?);
            }
            Ok(())
        };
        record("act.emb".into(), &emb)?;
        // The encoder's outputs are the skips; each level reads the last one, so nothing is copied.
        let mut skips: Vec<Tensor> = Vec::new();
        for (i, blocks) in self.arch.input_blocks.iter().enumerate() {
            let h = self.chain(blocks, skips.last().unwrap_or(x), &emb)?;
            record(format!("act.input_blocks.{i}"), &h)?;
            skips.push(h);
        }
        let mut h = self.chain(&self.arch.middle, skips.last().unwrap_or(x), &emb)?;
        record("act.middle_block".into(), &h)?;
        for (i, blocks) in self.arch.output_blocks.iter().enumerate() {
            let skip = skips.pop().expect("one skip per decoder block");
            let (hs, cs) = (h.shape().to_vec(), skip.shape()[4]);
            let mut cat = Tensor::empty(&[hs[0], hs[1], hs[2], hs[3], hs[4] + cs], self.act, &self.dev)?;
            resample::concat(&h, &skip, &mut cat)?;
            drop((h, skip));
            h = self.chain(blocks, &cat, &emb)?;
            record(format!("act.output_blocks.{i}"), &h)?;
        }
        let h = self.norm(&h, "out.0", true)?;
        self.conv(&h, "out.2", cfg.out_channels, 3, 1, None, None)
    }
}

/// NCDHW (PyTorch, files) -> channels-last NDHWC.
pub fn from_ncdhw(x: &[f32], n: usize, c: usize, s: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for b in 0..n {
        for ch in 0..c {
            for p in 0..s {
                out[(b * s + p) * c + ch] = x[(b * c + ch) * s + p];
            }
        }
    }
    out
}

/// Channels-last NDHWC -> NCDHW.
pub fn to_ncdhw(x: &[f32], n: usize, c: usize, s: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for b in 0..n {
        for ch in 0..c {
            for p in 0..s {
                out[(b * c + ch) * s + p] = x[(b * s + p) * c + ch];
            }
        }
    }
    out
}
