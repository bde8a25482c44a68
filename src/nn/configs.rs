//! Named model configurations: the papers' settings plus `tiny`, which trains on a CPU in minutes.
use super::{DdimUnetConfig, DdpmppConfig};
use anyhow::{bail, Result};

/// Every known configuration name.
pub const NAMES: &[&str] = &["tiny", "tiny32", "tiny-mri32", "tiny-mri64", "gsure-celeba32", "gsure-mri320"];

/// The configuration called `name`; unknown names list the known ones.
pub fn by_name(name: &str) -> Result<DdimUnetConfig> {
    Ok(match name {
        "tiny" => DdimUnetConfig::tiny(),
        "tiny32" => DdimUnetConfig::tiny_at(32, 1),
        "tiny-mri32" => DdimUnetConfig::tiny_at(32, 2),
        "tiny-mri64" => DdimUnetConfig::tiny_at(64, 2),
        "gsure-celeba32" => DdimUnetConfig::gsure_celeba32(),
        "gsure-mri320" => DdimUnetConfig::gsure_mri320(),
        other => bail!("unknown model configuration {other:?}; known: {}", NAMES.join(", ")),
    })
}

/// Every known EDM (DDPM++) configuration name.
pub const EDM_NAMES: &[&str] = &["tiny-edm", "tiny-ambient", "edm-ddpmpp-cifar10", "ambient-celeba64"];

/// The DDPM++ configuration called `name`; unknown names list the known ones.
pub fn edm_by_name(name: &str) -> Result<DdpmppConfig> {
    Ok(match name {
        "tiny-edm" => DdpmppConfig::tiny(),
        // Ambient Diffusion's network shape at CPU scale: the mask enters as one extra input channel.
        "tiny-ambient" => DdpmppConfig { extra_in_channels: 1, ..DdpmppConfig::tiny() },
        "edm-ddpmpp-cifar10" => DdpmppConfig::edm_ddpmpp_cifar10(),
        "ambient-celeba64" => DdpmppConfig::ambient_celeba64(),
        other => bail!("unknown EDM model configuration {other:?}; known: {}", EDM_NAMES.join(", ")),
    })
}
