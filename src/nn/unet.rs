//! The U-Net forward pass on the CPU (f32 reference). Activations are channels-last
//! (N, D, H, W, C); the walk follows the layout of arch.rs block by block.
use super::arch::{Arch, Block};
use super::weights::Weights;
use crate::ops::{attention, conv3d, embedding, group_norm, linear, resample};
use std::collections::BTreeMap;

/// A batch of channels-last activations.
#[derive(Clone, Debug)]
pub struct Act {
    pub n: usize,
    pub dims: [usize; 3],
    pub c: usize,
    pub data: Vec<f32>,
}

impl Act {
    fn voxels(&self) -> usize {
        self.dims.iter().product()
    }
}

pub struct UNet {
    pub arch: Arch,
    pub weights: Weights,
}

impl UNet {
    pub fn new(arch: Arch, weights: Weights) -> UNet {
        UNet { arch, weights }
    }

    fn conv(&self, x: &Act, name: &str, c_out: usize, k: usize, stride: usize) -> Act {
        let w = self.weights.get(&format!("{name}.weight"));
        let b = self.weights.get(&format!("{name}.bias"));
        let (data, dims) = conv3d::conv3d_ref(&x.data, x.n, x.dims, x.c, w, b, c_out, k, stride);
        Act { n: x.n, dims, c: c_out, data }
    }

    fn norm(&self, x: &Act, name: &str, silu: bool) -> Act {
        let g = self.weights.get(&format!("{name}.weight"));
        let b = self.weights.get(&format!("{name}.bias"));
        Act { data: group_norm::group_norm_ref(&x.data, x.n, x.c, self.arch.cfg.norm_groups, g, b, silu), ..x.clone() }
    }

    fn linear(&self, x: &[f32], rows: usize, name: &str, d_in: usize, d_out: usize) -> Vec<f32> {
        linear::linear_ref(x, rows, self.weights.get(&format!("{name}.weight")), self.weights.get(&format!("{name}.bias")), d_in, d_out)
    }

    fn res(&self, x: &Act, emb: &[f32], name: &str, c_out: usize) -> Act {
        let e = self.arch.cfg.time_embed_dim();
        let h = self.norm(x, &format!("{name}.in_layers.0"), true);
        let mut h = self.conv(&h, &format!("{name}.in_layers.2"), c_out, 3, 1);
        let se: Vec<f32> = emb.iter().map(|v| group_norm::silu(*v)).collect();
        let eo = self.linear(&se, x.n, &format!("{name}.emb_layers.1"), e, c_out);
        let s = h.voxels();
        for b in 0..x.n {
            for p in 0..s {
                for c in 0..c_out {
                    h.data[(b * s + p) * c_out + c] += eo[b * c_out + c];
                }
            }
        }
        let h = self.norm(&h, &format!("{name}.out_layers.0"), true);
        let mut h = self.conv(&h, &format!("{name}.out_layers.3"), c_out, 3, 1);
        let skip = if x.c == c_out { x.clone() } else { self.conv(x, &format!("{name}.skip_connection"), c_out, 1, 1) };
        h.data.iter_mut().zip(&skip.data).for_each(|(a, b)| *a += b);
        h
    }

    fn attn(&self, x: &Act, name: &str, heads: usize) -> Act {
        let (t, c) = (x.voxels(), x.c);
        let xn = self.norm(x, &format!("{name}.norm"), false);
        let qkv = self.linear(&xn.data, x.n * t, &format!("{name}.qkv"), c, 3 * c);
        let a = attention::attention_ref(&qkv, x.n, t, c, heads);
        let p = self.linear(&a, x.n * t, &format!("{name}.proj_out"), c, c);
        Act { data: x.data.iter().zip(&p).map(|(a, b)| a + b).collect(), ..x.clone() }
    }

    fn block(&self, b: &Block, x: &Act, emb: &[f32]) -> Act {
        match b {
            Block::Conv { name, c_out, .. } => self.conv(x, name, *c_out, 3, 1),
            Block::Res { name, c_out, .. } => self.res(x, emb, name, *c_out),
            Block::Attn { name, heads, .. } => self.attn(x, name, *heads),
            Block::Down { name, c } => self.conv(x, &format!("{name}.op"), *c, 3, 2),
            Block::Up { name, c } => {
                let u = Act { dims: x.dims.map(|d| 2 * d), data: resample::upsample2_ref(&x.data, x.n, x.dims, x.c), ..x.clone() };
                self.conv(&u, &format!("{name}.conv"), *c, 3, 1)
            }
        }
    }

    /// eps for a batch: x (N, D, H, W, in_channels) channels-last, t (N). With `keep`, the
    /// activations after the embedding ("act.emb"), every encoder and decoder entry and the
    /// middle block are kept under the names the PyTorch reference uses.
    pub fn forward(&self, x: &Act, t: &[f32], mut keep: Option<&mut BTreeMap<String, Act>>) -> Act {
        let cfg = &self.arch.cfg;
        let (mc, e) = (cfg.model_channels, cfg.time_embed_dim());
        let te = embedding::timestep_embedding_ref(t, mc);
        let h1 = self.linear(&te, x.n, "time_embed.0", mc, e);
        let h1: Vec<f32> = h1.iter().map(|v| group_norm::silu(*v)).collect();
        let emb = self.linear(&h1, x.n, "time_embed.2", e, e);
        let mut record = |name: String, a: &Act| {
            if let Some(k) = keep.as_deref_mut() {
                k.insert(name, a.clone());
            }
        };
        record("act.emb".into(), &Act { n: x.n, dims: [1, 1, 1], c: e, data: emb.clone() });
        let mut skips = Vec::new();
        let mut h = x.clone();
        for (i, blocks) in self.arch.input_blocks.iter().enumerate() {
            for b in blocks {
                h = self.block(b, &h, &emb);
            }
            record(format!("act.input_blocks.{i}"), &h);
            skips.push(h.clone());
        }
        for b in &self.arch.middle {
            h = self.block(b, &h, &emb);
        }
        record("act.middle_block".into(), &h);
        for (i, blocks) in self.arch.output_blocks.iter().enumerate() {
            let s = skips.pop().expect("one skip per decoder block");
            h = concat(&h, &s);
            for b in blocks {
                h = self.block(b, &h, &emb);
            }
            record(format!("act.output_blocks.{i}"), &h);
        }
        let h = self.norm(&h, "out.0", true);
        self.conv(&h, "out.2", cfg.out_channels, 3, 1)
    }
}

/// Channel concatenation [a, b] of two activations of one spatial shape.
pub fn concat(a: &Act, b: &Act) -> Act {
    let s = a.n * a.voxels();
    let c = a.c + b.c;
    let mut data = vec![0f32; s * c];
    for p in 0..s {
        data[p * c..p * c + a.c].copy_from_slice(&a.data[p * a.c..(p + 1) * a.c]);
        data[p * c + a.c..(p + 1) * c].copy_from_slice(&b.data[p * b.c..(p + 1) * b.c]);
    }
    Act { n: a.n, dims: a.dims, c, data }
}

/// NCDHW (PyTorch, files) -> channels-last activations.
pub fn from_ncdhw(x: &[f32], n: usize, c: usize, dims: [usize; 3]) -> Act {
    let s: usize = dims.iter().product();
    let mut data = vec![0f32; x.len()];
    for b in 0..n {
        for ch in 0..c {
            for p in 0..s {
                data[(b * s + p) * c + ch] = x[(b * c + ch) * s + p];
            }
        }
    }
    Act { n, dims, c, data }
}

/// Channels-last activations -> NCDHW.
pub fn to_ncdhw(a: &Act) -> Vec<f32> {
    let s = a.voxels();
    let mut out = vec![0f32; a.data.len()];
    for b in 0..a.n {
        for ch in 0..a.c {
            for p in 0..s {
                out[(b * a.c + ch) * s + p] = a.data[(b * s + p) * a.c + ch];
            }
        }
    }
    out
}
