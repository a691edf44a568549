//! The U-Net's gradients on the CPU (f32 reference): a forward that keeps each block's input,
//! then a backward that recomputes a block's internals from its input and runs the backward
//! reference of every operation in reverse. Gradients come in the engine's layout (repacked
//! convolutions), keyed by guided-diffusion's parameter names.
use super::arch::{Arch, Block};
use super::weights::Weights;
use crate::ops::group_norm::{silu, silu_grad};
use crate::ops::{attention, conv3d, embedding, group_norm, linear, resample};
use std::collections::HashMap;

/// A batch of channels-last f32 activations (N, D, H, W, C).
#[derive(Clone, Debug)]
struct Act {
    n: usize,
    dims: [usize; 3],
    c: usize,
    v: Vec<f32>,
}

impl Act {
    fn vox(&self) -> usize {
        self.dims.iter().product()
    }
}

/// Parameter gradients by name.
pub type Grads = HashMap<String, Vec<f32>>;

struct Net<'a> {
    arch: &'a Arch,
    w: HashMap<&'a str, &'a [f32]>,
}

fn add_into(g: &mut Grads, name: &str, v: Vec<f32>) {
    match g.get_mut(name) {
        Some(a) => a.iter_mut().zip(v).for_each(|(x, y)| *x += y),
        None => {
            g.insert(name.to_string(), v);
        }
    }
}

impl<'a> Net<'a> {
    fn p(&self, name: &str) -> &'a [f32] {
        self.w[name]
    }
    fn conv(&self, x: &Act, name: &str, co: usize, k: usize, stride: usize) -> Act {
        let (v, dims) = conv3d::conv3d_ref(&x.v, x.n, x.dims, x.c, self.p(&format!("{name}.weight")), self.p(&format!("{name}.bias")), co, k, stride);
        Act { n: x.n, dims, c: co, v }
    }
    fn conv_back(&self, x: &Act, name: &str, co: usize, k: usize, stride: usize, dy: &[f32], g: &mut Grads) -> Vec<f32> {
        let (dx, dw, db) = conv3d::conv3d_backward_ref(&x.v, x.n, x.dims, x.c, self.p(&format!("{name}.weight")), dy, co, k, stride);
        add_into(g, &format!("{name}.weight"), dw);
        add_into(g, &format!("{name}.bias"), db);
        dx
    }
    fn norm(&self, x: &Act, name: &str, s: bool) -> Act {
        let v = group_norm::group_norm_ref(&x.v, x.n, x.c, self.arch.cfg.norm_groups, self.p(&format!("{name}.weight")), self.p(&format!("{name}.bias")), s);
        Act { v, ..x.clone() }
    }
    fn norm_back(&self, x: &Act, name: &str, s: bool, dy: &[f32], g: &mut Grads) -> Vec<f32> {
        let (dx, dg, db) = group_norm::group_norm_backward_ref(&x.v, x.n, x.c, self.arch.cfg.norm_groups, self.p(&format!("{name}.weight")), self.p(&format!("{name}.bias")), s, dy);
        add_into(g, &format!("{name}.weight"), dg);
        add_into(g, &format!("{name}.bias"), db);
        dx
    }
    fn emb_out(&self, emb: &[f32], n: usize, name: &str, co: usize) -> (Vec<f32>, Vec<f32>) {
        let e = self.arch.cfg.time_embed_dim();
        let se: Vec<f32> = emb.iter().map(|v| silu(*v)).collect();
        let eo = linear::linear_ref(&se, n, self.p(&format!("{name}.emb_layers.1.weight")), self.p(&format!("{name}.emb_layers.1.bias")), e, co);
        (se, eo)
    }

    fn block(&self, b: &Block, x: &Act, emb: &[f32]) -> Act {
        match b {
            Block::Conv { name, c_out, .. } => self.conv(x, name, *c_out, 3, 1),
            Block::Down { name, c } => self.conv(x, &format!("{name}.op"), *c, 3, 2),
            Block::Up { name, c } => self.conv(&upsample(x), &format!("{name}.conv"), *c, 3, 1),
            Block::Res { name, c_out, .. } => {
                let a = self.norm(x, &format!("{name}.in_layers.0"), true);
                let mut c1 = self.conv(&a, &format!("{name}.in_layers.2"), *c_out, 3, 1);
                add_per_sample(&mut c1, &self.emb_out(emb, x.n, name, *c_out).1);
                let b2 = self.norm(&c1, &format!("{name}.out_layers.0"), true);
                let mut out = self.conv(&b2, &format!("{name}.out_layers.3"), *c_out, 3, 1);
                let skip = if x.c == *c_out { x.clone() } else { self.conv(x, &format!("{name}.skip_connection"), *c_out, 1, 1) };
                out.v.iter_mut().zip(&skip.v).for_each(|(o, s)| *o += s);
                out
            }
            Block::Attn { name, heads, .. } => {
                let (qkv, _) = self.attn_parts(x, name);
                let a = attention::attention_ref(&qkv.v, x.n, x.vox(), x.c, *heads);
                let mut p = self.conv(&Act { v: a, ..x.clone() }, &format!("{name}.proj_out"), x.c, 1, 1);
                p.v.iter_mut().zip(&x.v).for_each(|(o, s)| *o += s);
                p
            }
        }
    }

    fn attn_parts(&self, x: &Act, name: &str) -> (Act, Act) {
        let xn = self.norm(x, &format!("{name}.norm"), false);
        (self.conv(&xn, &format!("{name}.qkv"), 3 * x.c, 1, 1), xn)
    }

    /// Gradient of a block's output `dy` back to its input; parameter gradients into `g`,
    /// the time embedding's into `demb`.
    fn block_back(&self, b: &Block, x: &Act, emb: &[f32], dy: &[f32], g: &mut Grads, demb: &mut [f32]) -> Vec<f32> {
        match b {
            Block::Conv { name, c_out, .. } => self.conv_back(x, name, *c_out, 3, 1, dy, g),
            Block::Down { name, c } => self.conv_back(x, &format!("{name}.op"), *c, 3, 2, dy, g),
            Block::Up { name, c } => {
                let du = self.conv_back(&upsample(x), &format!("{name}.conv"), *c, 3, 1, dy, g);
                resample::upsample2_backward_ref(&du, x.n, x.dims, x.c)
            }
            Block::Res { name, c_out, .. } => {
                let co = *c_out;
                let a = self.norm(x, &format!("{name}.in_layers.0"), true);
                let mut c1 = self.conv(&a, &format!("{name}.in_layers.2"), co, 3, 1);
                let (se, eo) = self.emb_out(emb, x.n, name, co);
                add_per_sample(&mut c1, &eo);
                let b2 = self.norm(&c1, &format!("{name}.out_layers.0"), true);
                let db2 = self.conv_back(&b2, &format!("{name}.out_layers.3"), co, 3, 1, dy, g);
                let dc1 = self.norm_back(&c1, &format!("{name}.out_layers.0"), true, &db2, g);
                // The embedding term is added to every voxel of its sample.
                let mut deo = vec![0f32; x.n * co];
                for (p, row) in dc1.chunks(co).enumerate() {
                    deo[(p / c1.vox()) * co..(p / c1.vox() + 1) * co].iter_mut().zip(row).for_each(|(a, v)| *a += v);
                }
                let e = self.arch.cfg.time_embed_dim();
                let (dse, dw, db) = linear::linear_backward_ref(&se, x.n, self.p(&format!("{name}.emb_layers.1.weight")), e, co, &deo);
                add_into(g, &format!("{name}.emb_layers.1.weight"), dw);
                add_into(g, &format!("{name}.emb_layers.1.bias"), db);
                demb.iter_mut().zip(dse.iter().zip(emb)).for_each(|(d, (s, v))| *d += s * silu_grad(*v));
                let da = self.conv_back(&a, &format!("{name}.in_layers.2"), co, 3, 1, &dc1, g);
                let mut dx = self.norm_back(x, &format!("{name}.in_layers.0"), true, &da, g);
                let dskip = if x.c == co { dy.to_vec() } else { self.conv_back(x, &format!("{name}.skip_connection"), co, 1, 1, dy, g) };
                dx.iter_mut().zip(dskip).for_each(|(a, v)| *a += v);
                dx
            }
            Block::Attn { name, heads, .. } => {
                let (qkv, xn) = self.attn_parts(x, name);
                let a = Act { v: attention::attention_ref(&qkv.v, x.n, x.vox(), x.c, *heads), ..x.clone() };
                let da = self.conv_back(&a, &format!("{name}.proj_out"), x.c, 1, 1, dy, g);
                let dqkv = attention::attention_backward_ref(&qkv.v, x.n, x.vox(), x.c, *heads, &da);
                let dxn = self.conv_back(&xn, &format!("{name}.qkv"), 3 * x.c, 1, 1, &dqkv, g);
                let mut dx = self.norm_back(x, &format!("{name}.norm"), false, &dxn, g);
                dx.iter_mut().zip(dy).for_each(|(a, v)| *a += v);
                dx
            }
        }
    }
}

fn upsample(x: &Act) -> Act {
    Act { n: x.n, dims: x.dims.map(|d| 2 * d), c: x.c, v: resample::upsample2_ref(&x.v, x.n, x.dims, x.c) }
}

fn add_per_sample(x: &mut Act, per: &[f32]) {
    let (s, c) = (x.vox(), x.c);
    for (p, row) in x.v.chunks_mut(c).enumerate() {
        row.iter_mut().zip(&per[(p / s) * c..(p / s + 1) * c]).for_each(|(a, v)| *a += v);
    }
}

fn concat(a: &Act, b: &Act) -> Act {
    let c = a.c + b.c;
    let mut v = Vec::with_capacity(a.v.len() + b.v.len());
    for (ra, rb) in a.v.chunks(a.c).zip(b.v.chunks(b.c)) {
        v.extend_from_slice(ra);
        v.extend_from_slice(rb);
    }
    Act { n: a.n, dims: a.dims, c, v }
}

/// MSE loss of the network's eps against `target` for inputs x (N, D, H, W, C) channels-last
/// and timesteps t, and the gradient of that loss for every parameter.
pub fn mse_loss_and_grads(arch: &Arch, weights: &Weights, x: &[f32], n: usize, dims: [usize; 3], t: &[f32], target: &[f32]) -> (f64, Grads) {
    let net = Net { arch, w: weights.iter().map(|(k, _, v)| (k.as_str(), v.as_slice())).collect() };
    let cfg = &arch.cfg;
    let (mc, e) = (cfg.model_channels, cfg.time_embed_dim());
    let te = embedding::timestep_embedding_ref(t, mc);
    let h1 = linear::linear_ref(&te, n, net.p("time_embed.0.weight"), net.p("time_embed.0.bias"), mc, e);
    let s1: Vec<f32> = h1.iter().map(|v| silu(*v)).collect();
    let emb = linear::linear_ref(&s1, n, net.p("time_embed.2.weight"), net.p("time_embed.2.bias"), e, e);

    // Forward, keeping every block's input.
    let mut h = Act { n, dims, c: cfg.in_channels, v: x.to_vec() };
    let mut enc_in = Vec::new();
    let mut skips = Vec::new();
    for blocks in &arch.input_blocks {
        let mut ins = Vec::new();
        for b in blocks {
            ins.push(h.clone());
            h = net.block(b, &h, &emb);
        }
        enc_in.push(ins);
        skips.push(h.clone());
    }
    let mut mid_in = Vec::new();
    for b in &arch.middle {
        mid_in.push(h.clone());
        h = net.block(b, &h, &emb);
    }
    let mut dec_in = Vec::new();
    let mut dec_split = Vec::new();
    for blocks in &arch.output_blocks {
        let s = skips.pop().unwrap();
        dec_split.push(h.c);
        h = concat(&h, &s);
        let mut ins = Vec::new();
        for b in blocks {
            ins.push(h.clone());
            h = net.block(b, &h, &emb);
        }
        dec_in.push(ins);
    }
    let gout = net.norm(&h, "out.0", true);
    let y = net.conv(&gout, "out.2", cfg.out_channels, 3, 1);
    let m = y.v.len() as f64;
    let loss = y.v.iter().zip(target).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / m;
    let dy: Vec<f32> = y.v.iter().zip(target).map(|(a, b)| (2.0 * (*a as f64 - *b as f64) / m) as f32).collect();

    // Backward.
    let mut g = Grads::new();
    let mut demb = vec![0f32; n * e];
    let dg = net.conv_back(&gout, "out.2", cfg.out_channels, 3, 1, &dy, &mut g);
    let mut dh = net.norm_back(&h, "out.0", true, &dg, &mut g);
    let mut dskips: Vec<Option<Vec<f32>>> = vec![None; arch.input_blocks.len()];
    for (o, blocks) in arch.output_blocks.iter().enumerate().rev() {
        for (b, xin) in blocks.iter().zip(&dec_in[o]).rev() {
            dh = net.block_back(b, xin, &emb, &dh, &mut g, &mut demb);
        }
        // Split the concatenation: [h, skip]; decoder block o took encoder output L - 1 - o.
        let (ch, ct) = (dec_split[o], dec_in[o][0].c);
        let (mut a, mut s) = (Vec::new(), Vec::new());
        for row in dh.chunks(ct) {
            a.extend_from_slice(&row[..ch]);
            s.extend_from_slice(&row[ch..]);
        }
        dskips[arch.input_blocks.len() - 1 - o] = Some(s);
        dh = a;
    }
    for (b, xin) in arch.middle.iter().zip(&mid_in).rev() {
        dh = net.block_back(b, xin, &emb, &dh, &mut g, &mut demb);
    }
    for (i, blocks) in arch.input_blocks.iter().enumerate().rev() {
        if let Some(s) = dskips[i].take() {
            dh.iter_mut().zip(s).for_each(|(a, v)| *a += v);
        }
        for (b, xin) in blocks.iter().zip(&enc_in[i]).rev() {
            dh = net.block_back(b, xin, &emb, &dh, &mut g, &mut demb);
        }
    }
    let (ds1, dw, db) = linear::linear_backward_ref(&s1, n, net.p("time_embed.2.weight"), e, e, &demb);
    add_into(&mut g, "time_embed.2.weight", dw);
    add_into(&mut g, "time_embed.2.bias", db);
    let dh1: Vec<f32> = ds1.iter().zip(&h1).map(|(d, v)| d * silu_grad(*v)).collect();
    let (_, dw, db) = linear::linear_backward_ref(&te, n, net.p("time_embed.0.weight"), mc, e, &dh1);
    add_into(&mut g, "time_embed.0.weight", dw);
    add_into(&mut g, "time_embed.0.bias", db);
    (loss, g)
}
