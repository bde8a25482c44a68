//! Named model configurations: the papers' settings plus `tiny`, which trains on a CPU in minutes.
use super::DdimUnetConfig;
use anyhow::{bail, Result};

/// Every known configuration name.
pub const NAMES: &[&str] = &["tiny", "gsure-celeba32", "gsure-mri320"];

/// The configuration called `name`; unknown names list the known ones.
pub fn by_name(name: &str) -> Result<DdimUnetConfig> {
    Ok(match name {
        "tiny" => DdimUnetConfig::tiny(),
        "gsure-celeba32" => DdimUnetConfig::gsure_celeba32(),
        "gsure-mri320" => DdimUnetConfig::gsure_mri320(),
        other => bail!("unknown model configuration {other:?}; known: {}", NAMES.join(", ")),
    })
}
