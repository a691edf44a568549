//! The U-Net's configuration (docs/METHOD.md section 4) and its presets.
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// How the whole noisy volume is shrunk to the patch shape for the global-context channel.
pub use crate::ops::resample::Resize as ContextMode;

/// What the network's output is (docs/METHOD.md section 5): the noise eps (the paper, guided-diffusion),
/// or v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans and Ho 2022), which is close to -x0 at
/// high noise, so that the loss there teaches the volume's layout instead of weighting it by abar.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prediction {
    /// The noise eps (Ho et al. 2020; the paper).
    #[default]
    Eps,
    /// The velocity v (Salimans and Ho 2022).
    V,
}

impl Prediction {
    /// "eps" or "v"; `Error::Argument` otherwise.
    pub fn parse(s: &str) -> Result<Prediction> {
        match s {
            "eps" => Ok(Prediction::Eps),
            "v" => Ok(Prediction::V),
            _ => Err(Error::Argument(format!("prediction {s:?}: expected eps or v"))),
        }
    }

    /// (cx, co) with x0 = cx x_t - co out, for the network output `out` at abar.
    pub fn x0_coefficients(self, abar: f64) -> (f64, f64) {
        let (sa, sb) = (abar.sqrt(), (1.0 - abar).sqrt());
        match self {
            Prediction::Eps => (1.0 / sa, sb / sa),
            Prediction::V => (sa, sb),
        }
    }

    /// Tweedie's coefficients at abar: [cx, co, sa, sb] with x0 = cx x - co out, sa = sqrt(abar),
    /// sb = sqrt(1 - abar) (the arguments of ops::sampler::tweedie).
    pub fn tweedie_coefficients(self, abar: f64) -> [f32; 4] {
        let (cx, co) = self.x0_coefficients(abar);
        [cx as f32, co as f32, abar.sqrt() as f32, (1.0 - abar).sqrt() as f32]
    }

    /// The training target for clean x0 and noise eps at abar.
    pub fn target(self, x0: f32, eps: f32, abar: f64) -> f32 {
        match self {
            Prediction::Eps => eps,
            Prediction::V => (abar.sqrt() * eps as f64 - (1.0 - abar).sqrt() * x0 as f64) as f32,
        }
    }
}

/// The most levels (`channel_mult` entries) `UNetConfig::validate` accepts.
pub const MAX_LEVELS: usize = 8;
/// The most channels of any level, in or out, `UNetConfig::validate` accepts.
pub const MAX_CHANNELS: usize = 4096;
/// The most residual blocks per level `UNetConfig::validate` accepts.
pub const MAX_RES_BLOCKS: usize = 16;
/// The most voxels along a patch side `UNetConfig::validate` accepts.
pub const MAX_PATCH: usize = 512;

/// The patch U-Net's configuration: guided-diffusion's `UNetModel` arguments plus the patch, the
/// global-context resize and the intensity map. JSON with these field names (unknown fields are
/// refused); presets `paper`, `small` and `tiny`; table in docs/NETWORK.md.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    /// Input channels: 5 in the paper (noisy patch, global context, three position channels).
    pub in_channels: usize,
    /// Channels of the first level; level i has `channel_mult[i]` times as many.
    pub model_channels: usize,
    /// Output channels: 1 (eps or v of the patch).
    pub out_channels: usize,
    /// Residual blocks per level in the encoder (the decoder has one more).
    pub num_res_blocks: usize,
    /// Channel multiplier per level; the U-Net halves the patch len - 1 times.
    pub channel_mult: Vec<usize>,
    /// Downsampling factors (1, 2, 4, ...) at which attention blocks sit.
    pub attention_ds: Vec<usize>,
    /// Channels per attention head (guided-diffusion's `num_head_channels`): a block of C
    /// channels has C / head_channels heads. 0 (or absent) when `num_heads` is given instead.
    #[serde(default, skip_serializing_if = "is_zero_usize")]
    pub head_channels: usize,
    /// A fixed head count for every attention block (guided-diffusion's `num_heads` with
    /// `num_head_channels = -1`); when set, `head_channels` is not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_heads: Option<usize>,
    /// GroupNorm groups (32 in guided-diffusion); every level's channels must split by it.
    pub norm_groups: usize,
    /// Patch shape (z, y, x) in voxels; each a multiple of 2^(levels - 1).
    pub patch: [usize; 3],
    /// How the whole volume is resized to the patch shape for the global-context channel.
    pub context: ContextMode,
    /// Attenuation (1/mm) that maps to x = 1.
    pub mu_max: f32,
    /// Attenuation (1/mm) that maps to x = -1 (default 0): with mu_max, the affine intensity map
    /// of `intensity()`. A model trained on z-scored data (x = (mu - mean) / std) has
    /// mu_min = mean - std, mu_max = mean + std.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mu_min: f32,
    /// Whether Tweedie's x0 is clamped to [-1, 1] while sampling and training data are clamped to
    /// it (default true; false for data that leave the range, such as z-scored volumes).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub clip_x0: bool,
    /// What the output is; configs without the field predict eps.
    #[serde(default, skip_serializing_if = "is_eps")]
    pub prediction: Prediction,
}

fn is_eps(p: &Prediction) -> bool {
    *p == Prediction::Eps
}

fn is_zero_usize(v: &usize) -> bool {
    *v == 0
}

fn is_zero(v: &f32) -> bool {
    *v == 0.0
}

fn yes() -> bool {
    true
}

fn is_true(v: &bool) -> bool {
    *v
}

/// The affine map between attenuation mu (1/mm) and the model's range x: mu_min -> -1,
/// mu_max -> 1 (docs/METHOD.md section 3). One map for phantoms, files, training and sampling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Intensity {
    /// Attenuation (1/mm) at x = -1.
    pub mu_min: f32,
    /// Attenuation (1/mm) at x = 1.
    pub mu_max: f32,
}

impl Intensity {
    /// x of attenuation mu.
    pub fn to_model(&self, mu: f32) -> f32 {
        2.0 * (mu - self.mu_min) / (self.mu_max - self.mu_min) - 1.0
    }

    /// Attenuation of x.
    pub fn to_mu(&self, x: f32) -> f32 {
        self.mu_min + (x + 1.0) * 0.5 * (self.mu_max - self.mu_min)
    }

    /// (a, b) with mu = a x + b.
    pub fn to_mu_affine(&self) -> (f32, f32) {
        let h = 0.5 * (self.mu_max - self.mu_min);
        (h, self.mu_min + h)
    }

    /// (a, b) with x = a mu + b.
    pub fn to_model_affine(&self) -> (f32, f32) {
        let w = self.mu_max - self.mu_min;
        (2.0 / w, -1.0 - 2.0 * self.mu_min / w)
    }
}

impl UNetConfig {
    /// The config's intensity map (`mu_min`, `mu_max`).
    pub fn intensity(&self) -> Intensity {
        Intensity { mu_min: self.mu_min, mu_max: self.mu_max }
    }

    /// The paper's network: 68,590,209 parameters, 5 channels in, 1 out, 32^3 patches.
    pub fn paper() -> UNetConfig {
        UNetConfig {
            in_channels: 5,
            model_channels: 64,
            out_channels: 1,
            num_res_blocks: 2,
            channel_mult: vec![1, 2, 4, 4],
            attention_ds: vec![4],
            head_channels: 64,
            num_heads: None,
            norm_groups: 32,
            patch: [32, 32, 32],
            context: ContextMode::Trilinear,
            mu_max: 0.04,
            mu_min: 0.0,
            clip_x0: true,
            prediction: Prediction::Eps,
        }
    }

    /// Small enough for the CPU demo: about 0.73 M parameters and 1 GFLOP per 16^3 patch.
    pub fn tiny() -> UNetConfig {
        UNetConfig {
            model_channels: 16,
            num_res_blocks: 1,
            channel_mult: vec![1, 2, 2],
            head_channels: 16,
            norm_groups: 8,
            patch: [16, 16, 16],
            ..UNetConfig::paper()
        }
    }

    /// Between tiny and paper, for the procedural thorax anatomy (docs/NETWORK.md): 24 channels
    /// (three heads of 16 at attention), about 1.6 M parameters and 2.4 GFLOP per 16^3 patch;
    /// the intensity map reaches dense bone: mu_max = hu_to_mu(2000 HU) = 0.0579 /mm, v prediction.
    pub fn small() -> UNetConfig {
        UNetConfig {
            model_channels: 24,
            mu_max: crate::ct::units::hu_to_mu(2000.0),
            prediction: Prediction::V,
            ..UNetConfig::tiny()
        }
    }

    /// "paper", "small" or "tiny"; None for any other name.
    pub fn preset(name: &str) -> Option<UNetConfig> {
        match name {
            "paper" => Some(UNetConfig::paper()),
            "small" => Some(UNetConfig::small()),
            "tiny" => Some(UNetConfig::tiny()),
            _ => None,
        }
    }

    /// A preset name, or a path to a JSON file with every field.
    pub fn load(name_or_path: &str) -> Result<UNetConfig> {
        if let Some(c) = UNetConfig::preset(name_or_path) {
            return Ok(c);
        }
        let path = std::path::Path::new(name_or_path);
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        UNetConfig::from_json(&text).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    /// A config from its JSON text, validated.
    pub fn from_json(text: &str) -> Result<UNetConfig> {
        let c: UNetConfig = serde_json::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Width of the timestep embedding: 4 model_channels, as guided-diffusion.
    pub fn time_embed_dim(&self) -> usize {
        4 * self.model_channels
    }

    /// Heads of an attention block with `c` channels: `num_heads` when given, else
    /// c / head_channels (at least 1).
    pub fn attention_heads(&self, c: usize) -> usize {
        match self.num_heads {
            Some(h) => h,
            None => (c / self.head_channels.max(1)).max(1),
        }
    }

    /// Channel counts of the attention blocks: the levels in `attention_ds` and the middle block.
    fn attention_channels(&self) -> Vec<usize> {
        let mut cs: Vec<usize> = (self.channel_mult.iter().enumerate())
            .filter(|(level, _)| self.attention_ds.contains(&(1usize << level)))
            .map(|(_, m)| m * self.model_channels)
            .collect();
        cs.extend(self.channel_mult.last().map(|m| m * self.model_channels));
        cs
    }

    /// Checks the config: positive sizes within the bounds `MAX_LEVELS`, `MAX_CHANNELS`,
    /// `MAX_RES_BLOCKS` and `MAX_PATCH`, channels that split into norm groups and heads, a patch
    /// the U-Net can halve, and an intensity map with mu_max > mu_min; `Error::Config` otherwise.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.in_channels == 0 || self.model_channels == 0 || self.out_channels == 0 || self.channel_mult.is_empty() {
            return bad("in_channels, model_channels, out_channels and channel_mult must be positive".into());
        }
        if self.channel_mult.contains(&0) {
            return bad("channel_mult entries must be positive".into());
        }
        // Bounds far above any U-Net in use (the paper's has 4 levels of at most 256 channels),
        // so an absurd config is refused here instead of overflowing or exhausting memory.
        if self.channel_mult.len() > MAX_LEVELS {
            return bad(format!("channel_mult has {} levels; at most {MAX_LEVELS}", self.channel_mult.len()));
        }
        for (what, c) in [("in_channels", self.in_channels), ("out_channels", self.out_channels)] {
            if c > MAX_CHANNELS {
                return bad(format!("{what} = {c}; at most {MAX_CHANNELS}"));
            }
        }
        if let Some(m) = self.channel_mult.iter().find(|&&m| m.checked_mul(self.model_channels).is_none_or(|c| c > MAX_CHANNELS)) {
            return bad(format!("model_channels {} x channel_mult {m} exceeds {MAX_CHANNELS} channels", self.model_channels));
        }
        if self.num_res_blocks > MAX_RES_BLOCKS {
            return bad(format!("num_res_blocks = {}; at most {MAX_RES_BLOCKS}", self.num_res_blocks));
        }
        if let Some(p) = self.patch.iter().find(|&&p| p > MAX_PATCH) {
            return bad(format!("patch side {p}; at most {MAX_PATCH}"));
        }
        if self.model_channels % 2 != 0 {
            return bad(format!("model_channels {} must be even (sinusoidal embedding)", self.model_channels));
        }
        for m in &self.channel_mult {
            let c = m * self.model_channels;
            if self.norm_groups == 0 || c % self.norm_groups != 0 {
                return bad(format!("{c} channels do not split into norm_groups = {}", self.norm_groups));
            }
        }
        match self.num_heads {
            Some(0) => return bad("num_heads must be positive".into()),
            None if self.head_channels == 0 => return bad("head_channels must be positive (or give num_heads)".into()),
            _ => {}
        }
        for c in self.attention_channels() {
            let (what, n) = match self.num_heads {
                Some(h) => ("num_heads", h),
                None => ("head_channels", self.head_channels),
            };
            if c % n != 0 {
                return bad(format!("an attention block of {c} channels does not split by {what} = {n}"));
            }
        }
        let down = 1usize << (self.channel_mult.len() - 1);
        for (a, p) in ["z", "y", "x"].iter().zip(self.patch) {
            if p == 0 || p % down != 0 {
                return bad(format!("patch {a} = {p} must be a positive multiple of {down} (the U-Net halves it {} times)", self.channel_mult.len() - 1));
            }
        }
        if !(self.mu_max.is_finite() && self.mu_min.is_finite() && self.mu_max > self.mu_min) {
            return bad(format!("mu_max {} must be finite and above mu_min {}", self.mu_max, self.mu_min));
        }
        Ok(())
    }
}
