//! Where a network's config comes from, and the model shipped inside the binary. A model folder
//! (a training run's `--out`, or `weights/NAME/`) holds `weights.safetensors` and `config.json`;
//! a weights file is read with the `config.json` beside it unless a config is named.
use super::{Arch, UNetConfig, Weights};
use crate::error::{Error, Result};
use std::path::Path;

/// The shipped prior: the tiny preset trained by `tomodiff train` on the chest phantom stream
/// (weights/tiny-chest/MODEL_CARD.md).
pub const SHIPPED_NAME: &str = "weights/tiny-chest";
const SHIPPED_WEIGHTS: &[u8] = include_bytes!("../../weights/tiny-chest/weights.safetensors");
const SHIPPED_CONFIG: &str = include_str!("../../weights/tiny-chest/config.json");

/// The config for `weights`: `config` (a preset or a JSON file) when given, else `config.json`
/// in the weights' folder.
pub fn config_for(weights: &Path, config: Option<&str>) -> Result<UNetConfig> {
    if let Some(c) = config {
        return UNetConfig::load(c);
    }
    let beside = weights.parent().unwrap_or(Path::new(".")).join("config.json");
    if !beside.exists() {
        return Err(Error::Config(format!(
            "{}: no config.json beside the weights; name a config (a preset: paper, small, tiny; or a JSON file)",
            weights.display()
        )));
    }
    UNetConfig::load(&beside.to_string_lossy())
}

/// Config and weights from a file (and its config, as `config_for`). `Error::Io` when the weights
/// file cannot be opened (checked first: a missing file is not a config problem).
pub fn load(weights: &Path, config: Option<&str>) -> Result<(UNetConfig, Weights)> {
    std::fs::File::open(weights).map_err(|e| Error::io(weights, e))?;
    let cfg = config_for(weights, config)?;
    let w = Weights::load(weights, &Arch::new(&cfg))?;
    Ok((cfg, w))
}

/// The shipped prior's config and weights.
pub fn shipped() -> Result<(UNetConfig, Weights)> {
    let cfg: UNetConfig = serde_json::from_str(SHIPPED_CONFIG).map_err(|e| Error::Config(format!("the shipped config: {e}")))?;
    cfg.validate()?;
    let w = Weights::load_bytes(Path::new(SHIPPED_NAME), SHIPPED_WEIGHTS, &Arch::new(&cfg))?;
    Ok((cfg, w))
}
