//! The U-Net's layout, derived once from a config: every block with its channels, the
//! parameter names and PyTorch shapes of guided-diffusion's state_dict, and the counted FLOPs.
//! Weights loading, the forward pass and `model info` all walk this one description.
use super::config::UNetConfig;

/// One block of the U-Net. `name` is its guided-diffusion state_dict prefix (e.g.
/// "input_blocks.4.0"); channel counts are per voxel.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)] // the fields are named for what they hold: name, input/output channels, heads
pub enum Block {
    /// 3x3x3 convolution, padding 1 (input_blocks.0.0).
    Conv { name: String, c_in: usize, c_out: usize },
    /// GroupNorm, SiLU, conv; + Linear(SiLU(emb)); GroupNorm, SiLU, conv; + skip (1x1x1 conv when
    /// the channels change).
    Res { name: String, c_in: usize, c_out: usize },
    /// GroupNorm, qkv 1x1, softmax(q k^T / sqrt(d)) v per head (legacy order), proj_out, + x.
    Attn { name: String, c: usize, heads: usize },
    /// 3x3x3 convolution with stride 2.
    Down { name: String, c: usize },
    /// Nearest x2, then a 3x3x3 convolution.
    Up { name: String, c: usize },
}

/// One parameter tensor of the state_dict.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// guided-diffusion's name, e.g. "input_blocks.1.0.in_layers.2.weight".
    pub name: String,
    /// Shape as PyTorch stores it (Cout, Cin, kd, kh, kw for convolutions).
    pub shape: Vec<usize>,
}

/// The U-Net's layout for one config: the encoder, middle and decoder blocks in forward order,
/// as guided-diffusion's `UNetModel` builds them (docs/METHOD.md section 4).
#[derive(Clone, Debug)]
pub struct Arch {
    /// The config the layout was derived from.
    pub cfg: UNetConfig,
    /// The encoder: each entry's output is kept for the decoder's skip connections.
    pub input_blocks: Vec<Vec<Block>>,
    /// Res, attention, res at the lowest resolution.
    pub middle: Vec<Block>,
    /// The decoder: each entry takes the previous output concatenated with one skip.
    pub output_blocks: Vec<Vec<Block>>,
    /// Channels of the final GroupNorm/SiLU/conv head.
    pub out_channels_in: usize,
}

impl Arch {
    /// The layout of `cfg` (not validated here: call `UNetConfig::validate` first).
    pub fn new(cfg: &UNetConfig) -> Arch {
        let mc = cfg.model_channels;
        let heads = |c: usize| cfg.attention_heads(c);
        let mut input_blocks = vec![vec![Block::Conv { name: "input_blocks.0.0".into(), c_in: cfg.in_channels, c_out: mc }]];
        let mut chans = vec![mc];
        let (mut ch, mut ds) = (mc, 1usize);
        for (level, m) in cfg.channel_mult.iter().enumerate() {
            for _ in 0..cfg.num_res_blocks {
                let i = input_blocks.len();
                let mut b = vec![Block::Res { name: format!("input_blocks.{i}.0"), c_in: ch, c_out: m * mc }];
                ch = m * mc;
                if cfg.attention_ds.contains(&ds) {
                    b.push(Block::Attn { name: format!("input_blocks.{i}.1"), c: ch, heads: heads(ch) });
                }
                input_blocks.push(b);
                chans.push(ch);
            }
            if level + 1 != cfg.channel_mult.len() {
                let i = input_blocks.len();
                input_blocks.push(vec![Block::Down { name: format!("input_blocks.{i}.0"), c: ch }]);
                chans.push(ch);
                ds *= 2;
            }
        }
        let middle = vec![
            Block::Res { name: "middle_block.0".into(), c_in: ch, c_out: ch },
            Block::Attn { name: "middle_block.1".into(), c: ch, heads: heads(ch) },
            Block::Res { name: "middle_block.2".into(), c_in: ch, c_out: ch },
        ];
        let mut output_blocks = Vec::new();
        for (level, m) in cfg.channel_mult.iter().enumerate().rev() {
            for i in 0..=cfg.num_res_blocks {
                let o = output_blocks.len();
                let skip = chans.pop().expect("one skip per decoder block");
                let mut b = vec![Block::Res { name: format!("output_blocks.{o}.0"), c_in: ch + skip, c_out: m * mc }];
                ch = m * mc;
                if cfg.attention_ds.contains(&ds) {
                    b.push(Block::Attn { name: format!("output_blocks.{o}.1"), c: ch, heads: heads(ch) });
                }
                if level > 0 && i == cfg.num_res_blocks {
                    b.push(Block::Up { name: format!("output_blocks.{o}.{}", b.len()), c: ch });
                    ds /= 2;
                }
                output_blocks.push(b);
            }
        }
        Arch { cfg: cfg.clone(), input_blocks, middle, output_blocks, out_channels_in: ch }
    }

    /// Every parameter in state_dict order.
    pub fn params(&self) -> Vec<Param> {
        let e = self.cfg.time_embed_dim();
        let mut out = Vec::new();
        let mut p = |name: String, shape: Vec<usize>| out.push(Param { name, shape });
        let mc = self.cfg.model_channels;
        p("time_embed.0.weight".into(), vec![e, mc]);
        p("time_embed.0.bias".into(), vec![e]);
        p("time_embed.2.weight".into(), vec![e, e]);
        p("time_embed.2.bias".into(), vec![e]);
        let conv = |p: &mut dyn FnMut(String, Vec<usize>), n: &str, ci: usize, co: usize, k: usize| {
            p(format!("{n}.weight"), vec![co, ci, k, k, k]);
            p(format!("{n}.bias"), vec![co]);
        };
        let vec1 = |p: &mut dyn FnMut(String, Vec<usize>), n: &str, c: usize| {
            p(format!("{n}.weight"), vec![c]);
            p(format!("{n}.bias"), vec![c]);
        };
        for b in self.blocks() {
            match b {
                Block::Conv { name, c_in, c_out } => conv(&mut p, name, *c_in, *c_out, 3),
                Block::Res { name, c_in, c_out } => {
                    vec1(&mut p, &format!("{name}.in_layers.0"), *c_in);
                    conv(&mut p, &format!("{name}.in_layers.2"), *c_in, *c_out, 3);
                    p(format!("{name}.emb_layers.1.weight"), vec![*c_out, e]);
                    p(format!("{name}.emb_layers.1.bias"), vec![*c_out]);
                    vec1(&mut p, &format!("{name}.out_layers.0"), *c_out);
                    conv(&mut p, &format!("{name}.out_layers.3"), *c_out, *c_out, 3);
                    if c_in != c_out {
                        conv(&mut p, &format!("{name}.skip_connection"), *c_in, *c_out, 1);
                    }
                }
                Block::Attn { name, c, .. } => {
                    vec1(&mut p, &format!("{name}.norm"), *c);
                    p(format!("{name}.qkv.weight"), vec![3 * c, *c, 1]);
                    p(format!("{name}.qkv.bias"), vec![3 * c]);
                    p(format!("{name}.proj_out.weight"), vec![*c, *c, 1]);
                    p(format!("{name}.proj_out.bias"), vec![*c]);
                }
                Block::Down { name, c } => conv(&mut p, &format!("{name}.op"), *c, *c, 3),
                Block::Up { name, c } => conv(&mut p, &format!("{name}.conv"), *c, *c, 3),
            }
        }
        vec1(&mut p, "out.0", self.out_channels_in);
        conv(&mut p, "out.2", self.out_channels_in, self.cfg.out_channels, 3);
        out
    }

    /// All blocks in forward order.
    pub fn blocks(&self) -> impl Iterator<Item = &Block> {
        self.input_blocks.iter().flatten().chain(&self.middle).chain(self.output_blocks.iter().flatten())
    }

    /// Scalars over all parameters (68,590,209 for the paper preset).
    pub fn param_count(&self) -> usize {
        self.params().iter().map(|p| p.shape.iter().product::<usize>()).sum()
    }

    /// Forward FLOPs of one patch (2 per multiply-add; convolutions, linear layers and attention
    /// matrix products), per block name, in forward order; the head is "out".
    pub fn flops(&self) -> Vec<(String, f64)> {
        let mut s = self.cfg.patch.iter().product::<usize>() as f64;
        let conv = |ci: usize, co: usize, k: usize, s: f64| 2.0 * (k * ci * co) as f64 * s;
        let e = self.cfg.time_embed_dim();
        let mut out = vec![("time_embed".to_string(), 2.0 * (self.cfg.model_channels * e + e * e) as f64)];
        for b in self.blocks() {
            let (name, f) = match b {
                Block::Conv { name, c_in, c_out } => (name, conv(*c_in, *c_out, 27, s)),
                Block::Res { name, c_in, c_out } => {
                    let skip = if c_in != c_out { conv(*c_in, *c_out, 1, s) } else { 0.0 };
                    (name, conv(*c_in, *c_out, 27, s) + conv(*c_out, *c_out, 27, s) + skip + 2.0 * (e * c_out) as f64)
                }
                Block::Attn { name, c, .. } => (name, conv(*c, 3 * c, 1, s) + conv(*c, *c, 1, s) + 4.0 * s * s * *c as f64),
                Block::Down { name, c } => {
                    s /= 8.0;
                    (name, conv(*c, *c, 27, s))
                }
                Block::Up { name, c } => {
                    s *= 8.0;
                    (name, conv(*c, *c, 27, s))
                }
            };
            out.push((name.clone(), f));
        }
        out.push(("out".into(), conv(self.out_channels_in, self.cfg.out_channels, 27, s)));
        out
    }

    /// Forward FLOPs of one patch, all blocks summed (about 228 G for the paper preset at 32^3).
    pub fn total_flops(&self) -> f64 {
        self.flops().iter().map(|f| f.1).sum()
    }
}
