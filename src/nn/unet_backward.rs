//! The U-Net's gradients on every device, over the same Tensor operations as the forward: a
//! forward that keeps each block's input (and a residual block's internals), then a backward that
//! recomputes what was not kept (attention's internals, the upsampled input of an Up block) and
//! runs each operation's backward (CPU fast path, reference or kernel). All gradients
//! are f32 (activations are bf16 on emu/cuda): parameter gradients in the engine's layout
//! (repacked convolutions), by parameter name.
use super::arch::Block;
use super::unet::UNet;
use crate::error::{Error, Result};
use crate::ops::{attention, conv3d, elementwise, group_norm, linear, resample, vector};
use crate::tensor::{DType, Tensor};
use std::collections::BTreeMap;

pub type TensorGrads = BTreeMap<String, Tensor>;

fn add_grad(g: &mut TensorGrads, name: &str, t: Tensor) -> Result<()> {
    match g.get_mut(name) {
        Some(acc) => elementwise::axpy(1.0, &t, acc),
        None => {
            g.insert(name.to_string(), t);
            Ok(())
        }
    }
}

/// What the training forward keeps of a residual block for its backward.
struct Kept {
    a: Tensor,
    c1: Tensor,
    b2: Tensor,
}

impl UNet {
    fn empty(&self, shape: &[usize], dt: DType) -> Result<Tensor> {
        Tensor::empty(shape, dt, &self.dev)
    }

    fn conv_back(&self, x: &Tensor, name: &str, k: usize, stride: usize, dy: &Tensor, g: &mut TensorGrads) -> Result<Tensor> {
        let w = self.p(&format!("{name}.weight"));
        let co = *dy.shape().last().unwrap();
        let (mut dx, mut dw, mut db) = (self.empty(x.shape(), DType::F32)?, self.empty(w.shape(), DType::F32)?, self.empty(&[co], DType::F32)?);
        conv3d::conv3d_backward(x, w, dy, Some(&mut dx), &mut dw, &mut db, k, stride)?;
        add_grad(g, &format!("{name}.weight"), dw)?;
        add_grad(g, &format!("{name}.bias"), db)?;
        Ok(dx)
    }

    /// conv_back for a convolution whose input needs no gradient (the network's input).
    fn conv_params_back(&self, x: &Tensor, name: &str, k: usize, stride: usize, dy: &Tensor, g: &mut TensorGrads) -> Result<()> {
        let w = self.p(&format!("{name}.weight"));
        let co = *dy.shape().last().unwrap();
        let (mut dw, mut db) = (self.empty(w.shape(), DType::F32)?, self.empty(&[co], DType::F32)?);
        conv3d::conv3d_backward(x, w, dy, None, &mut dw, &mut db, k, stride)?;
        add_grad(g, &format!("{name}.weight"), dw)?;
        add_grad(g, &format!("{name}.bias"), db)
    }

    fn norm_back(&self, x: &Tensor, name: &str, silu: bool, dy: &Tensor, g: &mut TensorGrads) -> Result<Tensor> {
        let c = *x.shape().last().unwrap();
        let (mut dx, mut dg, mut db) = (self.empty(x.shape(), DType::F32)?, self.empty(&[c], DType::F32)?, self.empty(&[c], DType::F32)?);
        let (gm, bt) = (self.p(&format!("{name}.weight")), self.p(&format!("{name}.bias")));
        group_norm::group_norm_backward(x, gm, bt, self.arch.cfg.norm_groups, silu, dy, &mut dx, &mut dg, &mut db)?;
        add_grad(g, &format!("{name}.weight"), dg)?;
        add_grad(g, &format!("{name}.bias"), db)?;
        Ok(dx)
    }

    fn linear_back(&self, x: &Tensor, name: &str, silu_in: bool, dy: &Tensor, g: &mut TensorGrads) -> Result<Tensor> {
        let w = self.p(&format!("{name}.weight"));
        let (mut dx, mut dw, mut db) = (self.empty(x.shape(), DType::F32)?, self.empty(w.shape(), DType::F32)?, self.empty(&[w.shape()[0]], DType::F32)?);
        linear::linear_backward(x, w, dy, silu_in, &mut dx, &mut dw, &mut db)?;
        add_grad(g, &format!("{name}.weight"), dw)?;
        add_grad(g, &format!("{name}.bias"), db)?;
        Ok(dx)
    }

    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let mut y = self.empty(a.shape(), a.dtype())?;
        vector::add(a, b, &mut y)?;
        Ok(y)
    }

    /// The gradient of a block's output `dy` back to its input; parameter gradients into `g`,
    /// the time embedding's into `demb`.
    fn block_back(&self, b: &Block, x: &Tensor, kept: Option<&Kept>, emb: &Tensor, dy: &Tensor, g: &mut TensorGrads, demb: &mut Tensor) -> Result<Tensor> {
        match b {
            Block::Conv { name, .. } => self.conv_back(x, name, 3, 1, dy, g),
            Block::Down { name, .. } => self.conv_back(x, &format!("{name}.op"), 3, 2, dy, g),
            Block::Up { name, .. } => {
                let s = x.shape();
                let mut u = self.empty(&[s[0], 2 * s[1], 2 * s[2], 2 * s[3], s[4]], self.act)?;
                resample::upsample2(x, &mut u)?;
                let du = self.conv_back(&u, &format!("{name}.conv"), 3, 1, dy, g)?;
                let mut dx = self.empty(s, DType::F32)?;
                resample::upsample2_backward(&du, &mut dx)?;
                Ok(dx)
            }
            Block::Res { name, c_out, .. } => {
                let co = *c_out;
                let recomputed;
                let Kept { a, c1, b2 } = match kept {
                    Some(k) => k,
                    None => {
                        recomputed = self.res_internals(x, emb, name, co)?;
                        &recomputed
                    }
                };
                let db2 = self.conv_back(b2, &format!("{name}.out_layers.3"), 3, 1, dy, g)?;
                let dc1 = self.norm_back(c1, &format!("{name}.out_layers.0"), true, &db2, g)?;
                let mut deo = self.empty(&[x.shape()[0], co], DType::F32)?;
                resample::sample_sums(&dc1, &mut deo)?;
                let de = self.linear_back(emb, &format!("{name}.emb_layers.1"), true, &deo, g)?;
                elementwise::axpy(1.0, &de, demb)?;
                let da = self.conv_back(a, &format!("{name}.in_layers.2"), 3, 1, &dc1, g)?;
                let dx = self.norm_back(x, &format!("{name}.in_layers.0"), true, &da, g)?;
                let ci = *x.shape().last().unwrap();
                let dskip = if ci == co { dy.to_device(&self.dev)? } else { self.conv_back(x, &format!("{name}.skip_connection"), 1, 1, dy, g)? };
                self.add(&dx, &dskip)
            }
            Block::Attn { name, heads, .. } => {
                let c = *x.shape().last().unwrap();
                let xn = self.norm(x, &format!("{name}.norm"), false)?;
                let qkv = self.conv(&xn, &format!("{name}.qkv"), 3 * c, 1, 1, None, None)?;
                let mut a = self.empty(x.shape(), self.act)?;
                attention::attention(&qkv, &mut a, *heads)?;
                let da = self.conv_back(&a, &format!("{name}.proj_out"), 1, 1, dy, g)?;
                let mut dqkv = self.empty(qkv.shape(), DType::F32)?;
                attention::attention_backward(&qkv, &da, *heads, &mut dqkv)?;
                let dxn = self.conv_back(&xn, &format!("{name}.qkv"), 1, 1, &dqkv, g)?;
                let dx = self.norm_back(x, &format!("{name}.norm"), false, &dxn, g)?;
                self.add(&dx, dy)
            }
        }
    }

    /// A residual block's internals: the first norm's output, the first convolution's, and the
    /// second norm's.
    fn res_internals(&self, x: &Tensor, emb: &Tensor, name: &str, co: usize) -> Result<Kept> {
        let eo = self.linear(emb, &format!("{name}.emb_layers.1"), true)?;
        let a = self.norm(x, &format!("{name}.in_layers.0"), true)?;
        let c1 = self.conv(&a, &format!("{name}.in_layers.2"), co, 3, 1, Some(&eo), None)?;
        let b2 = self.norm(&c1, &format!("{name}.out_layers.0"), true)?;
        Ok(Kept { a, c1, b2 })
    }

    /// A block's output for training: residual blocks keep their internals for the backward
    /// (PyTorch's choice; the inference forward drops them at once), other blocks keep nothing
    /// and their backward recomputes what it needs.
    fn block_kept(&self, b: &Block, x: &Tensor, emb: &Tensor) -> Result<(Tensor, Option<Kept>)> {
        let Block::Res { name, c_out, .. } = b else { return Ok((self.block(b, x, emb)?, None)) };
        let k = self.res_internals(x, emb, name, *c_out)?;
        let ci = *x.shape().last().unwrap();
        let skip = if ci == *c_out { None } else { Some(self.conv(x, &format!("{name}.skip_connection"), *c_out, 1, 1, None, None)?) };
        let y = self.conv(&k.b2, &format!("{name}.out_layers.3"), *c_out, 3, 1, None, Some(skip.as_ref().unwrap_or(x)))?;
        Ok((y, Some(k)))
    }

    /// The MSE of eps against `target` (same shape as eps, f32 values) for x (N, D, H, W, C) and
    /// t (N), and the gradient of that loss for every parameter.
    pub fn mse_backward(&self, x: &Tensor, t: &Tensor, target: &[f32]) -> Result<(f64, TensorGrads)> {
        let cfg = &self.arch.cfg;
        let n = x.shape()[0];
        let mut te = self.empty(&[n, cfg.model_channels], DType::F32)?;
        crate::ops::embedding::timestep_embedding(t, &mut te)?;
        let h1 = self.linear(&te, "time_embed.0", false)?;
        let emb = self.linear(&h1, "time_embed.2", true)?;
        // Forward, keeping every block's input.
        let mut h = x.to_device(&self.dev)?;
        let (mut enc_in, mut skips) = (Vec::new(), Vec::new());
        for blocks in &self.arch.input_blocks {
            let mut ins = Vec::new();
            for b in blocks {
                let (next, kept) = self.block_kept(b, &h, &emb)?;
                ins.push((std::mem::replace(&mut h, next), kept));
            }
            enc_in.push(ins);
            skips.push(h.to_device(&self.dev)?);
        }
        let mut mid_in = Vec::new();
        for b in &self.arch.middle {
            let (next, kept) = self.block_kept(b, &h, &emb)?;
            mid_in.push((std::mem::replace(&mut h, next), kept));
        }
        let (mut dec_in, mut dec_split) = (Vec::new(), Vec::new());
        for blocks in &self.arch.output_blocks {
            let s = skips.pop().expect("one skip per decoder block");
            let hs = h.shape().to_vec();
            dec_split.push((hs[4], s.shape()[4]));
            let mut cat = self.empty(&[hs[0], hs[1], hs[2], hs[3], hs[4] + s.shape()[4]], self.act)?;
            resample::concat(&h, &s, &mut cat)?;
            h = cat;
            let mut ins = Vec::new();
            for b in blocks {
                let (next, kept) = self.block_kept(b, &h, &emb)?;
                ins.push((std::mem::replace(&mut h, next), kept));
            }
            dec_in.push(ins);
        }
        let gout = self.norm(&h, "out.0", true)?;
        let y = self.conv(&gout, "out.2", cfg.out_channels, 3, 1, None, None)?;
        let yv = y.to_f32_vec()?;
        if yv.len() != target.len() {
            return Err(Error::Shape(format!("target has {} values, eps {}", target.len(), yv.len())));
        }
        let m = yv.len() as f64;
        let loss = yv.iter().zip(target).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / m;
        let dyv: Vec<f32> = yv.iter().zip(target).map(|(a, b)| (2.0 * (*a as f64 - *b as f64) / m) as f32).collect();
        let dy = Tensor::from_f32(&dyv, y.shape(), DType::F32, &self.dev)?;

        // Backward.
        let mut g = TensorGrads::new();
        // Every block adds its share: start from zero.
        let mut demb = Tensor::zeros(emb.shape(), DType::F32, &self.dev)?;
        let dg = self.conv_back(&gout, "out.2", 3, 1, &dy, &mut g)?;
        let mut dh = self.norm_back(&h, "out.0", true, &dg, &mut g)?;
        let levels = self.arch.input_blocks.len();
        let mut dskips: Vec<Option<Tensor>> = (0..levels).map(|_| None).collect();
        for (o, blocks) in self.arch.output_blocks.iter().enumerate().rev() {
            for (b, (xin, kept)) in blocks.iter().zip(&dec_in[o]).rev() {
                dh = self.block_back(b, xin, kept.as_ref(), &emb, &dh, &mut g, &mut demb)?;
            }
            let (ch, cs) = dec_split[o];
            let s = dh.shape().to_vec();
            let (mut da, mut ds) = (self.empty(&[s[0], s[1], s[2], s[3], ch], DType::F32)?, self.empty(&[s[0], s[1], s[2], s[3], cs], DType::F32)?);
            resample::split(&dh, &mut da, &mut ds)?;
            dskips[levels - 1 - o] = Some(ds);
            dh = da;
        }
        for (b, (xin, kept)) in self.arch.middle.iter().zip(&mid_in).rev() {
            dh = self.block_back(b, xin, kept.as_ref(), &emb, &dh, &mut g, &mut demb)?;
        }
        for (i, blocks) in self.arch.input_blocks.iter().enumerate().rev() {
            if let Some(s) = dskips[i].take() {
                dh = self.add(&dh, &s)?;
            }
            for (j, (b, (xin, kept))) in blocks.iter().zip(&enc_in[i]).enumerate().rev() {
                match b {
                    // The first convolution reads the network's input, whose gradient nobody uses.
                    Block::Conv { name, .. } if i == 0 && j == 0 => self.conv_params_back(xin, name, 3, 1, &dh, &mut g)?,
                    _ => dh = self.block_back(b, xin, kept.as_ref(), &emb, &dh, &mut g, &mut demb)?,
                }
            }
        }
        let dh1 = self.linear_back(&h1, "time_embed.2", true, &demb, &mut g)?;
        self.linear_back(&te, "time_embed.0", false, &dh1, &mut g)?;
        Ok((loss, g))
    }
}
