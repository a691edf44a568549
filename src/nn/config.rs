//! The U-Net's configuration (METHOD.md section 4) and its presets.
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// How the whole noisy volume is shrunk to the patch shape for the global-context channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContextMode {
    /// PyTorch F.interpolate(mode="trilinear", align_corners=False).
    Trilinear,
    /// Box average.
    Area,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub model_channels: usize,
    pub out_channels: usize,
    pub num_res_blocks: usize,
    pub channel_mult: Vec<usize>,
    /// Downsampling factors (1, 2, 4, ...) at which attention blocks sit.
    pub attention_ds: Vec<usize>,
    /// Channels per attention head.
    pub head_channels: usize,
    pub norm_groups: usize,
    /// Patch shape (z, y, x).
    pub patch: [usize; 3],
    pub context: ContextMode,
    /// Attenuation that maps to x = 1 (x = 2 mu / mu_max - 1).
    pub mu_max: f32,
}

impl UNetConfig {
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
            norm_groups: 32,
            patch: [32, 32, 32],
            context: ContextMode::Trilinear,
            mu_max: 0.04,
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

    pub fn preset(name: &str) -> Option<UNetConfig> {
        match name {
            "paper" => Some(UNetConfig::paper()),
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
        let c: UNetConfig = serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        c.validate()?;
        Ok(c)
    }

    pub fn time_embed_dim(&self) -> usize {
        4 * self.model_channels
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.in_channels == 0 || self.model_channels == 0 || self.out_channels == 0 || self.channel_mult.is_empty() {
            return bad("in_channels, model_channels, out_channels and channel_mult must be positive".into());
        }
        if self.channel_mult.contains(&0) {
            return bad("channel_mult entries must be positive".into());
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
        if self.head_channels == 0 {
            return bad("head_channels must be positive".into());
        }
        let down = 1usize << (self.channel_mult.len() - 1);
        for (a, p) in ["z", "y", "x"].iter().zip(self.patch) {
            if p == 0 || p % down != 0 {
                return bad(format!("patch {a} = {p} must be a positive multiple of {down} (the U-Net halves it {} times)", self.channel_mult.len() - 1));
            }
        }
        if !(self.mu_max.is_finite() && self.mu_max > 0.0) {
            return bad(format!("mu_max {} must be positive", self.mu_max));
        }
        Ok(())
    }
}
