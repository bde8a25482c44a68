//! Named model configurations: the papers' settings plus `tiny`, which trains on a CPU in minutes.
use super::{DdimUnetConfig, DdpmppConfig};
use anyhow::{bail, Result};

/// Every known configuration name.
pub const NAMES: &[&str] = &["tiny", "tiny32", "tiny-mri32", "tiny-mri64", "gsure-celeba32", "gsure-mri320"];

/// `NAME@RES`: configuration NAME with its architecture, widths and head dims unchanged, at RES×RES images;
/// its attention stays at the same levels of the U-Net (each attention resolution scaled by RES / its own).
/// For checks and benches at a size a CPU or the emulated device can run (`gsure-mri320@64`).
fn at_resolution(name: &str) -> Result<Option<(&str, usize)>> {
    let Some((base, res)) = name.split_once('@') else { return Ok(None) };
    let res: usize =
        res.parse().map_err(|_| anyhow::anyhow!("{name:?}: the size after '@' must be a number of pixels"))?;
    Ok(Some((base, res)))
}

/// The attention resolutions of a U-Net with `levels` resolutions at `from`×`from`, moved to `to`×`to`.
fn rescale(name: &str, from: usize, to: usize, levels: usize, attn: &[usize]) -> Result<Vec<usize>> {
    let smallest = 1usize << (levels - 1);
    if to == 0 || to % smallest != 0 {
        bail!("{name}: {to}×{to} does not halve {} times into whole pixels; use a multiple of {smallest}", levels - 1);
    }
    attn.iter()
        .map(|&a| {
            let level = (from / a).trailing_zeros();
            if from / a != 1 << level {
                bail!("{name}: attention resolution {a} is not a level of the {from}×{from} U-Net");
            }
            Ok(to >> level)
        })
        .collect()
}

/// The configuration called `name` (or `NAME@RES`); unknown names list the known ones.
pub fn by_name(name: &str) -> Result<DdimUnetConfig> {
    if let Some((base, res)) = at_resolution(name)? {
        let c = by_name(base)?;
        let attn_resolutions = rescale(name, c.resolution, res, c.ch_mult.len(), &c.attn_resolutions)?;
        return Ok(DdimUnetConfig { resolution: res, attn_resolutions, ..c });
    }
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

/// The DDPM++ configuration called `name` (or `NAME@RES`, see `by_name`); unknown names list the known ones.
pub fn edm_by_name(name: &str) -> Result<DdpmppConfig> {
    if let Some((base, res)) = at_resolution(name)? {
        let c = edm_by_name(base)?;
        let attn_resolutions = rescale(name, c.resolution, res, c.channel_mult.len(), &c.attn_resolutions)?;
        return Ok(DdpmppConfig { resolution: res, attn_resolutions, ..c });
    }
    Ok(match name {
        "tiny-edm" => DdpmppConfig::tiny(),
        // Ambient Diffusion's network shape at CPU scale: the mask enters as one extra input channel.
        "tiny-ambient" => DdpmppConfig { extra_in_channels: 1, ..DdpmppConfig::tiny() },
        "edm-ddpmpp-cifar10" => DdpmppConfig::edm_ddpmpp_cifar10(),
        "ambient-celeba64" => DdpmppConfig::ambient_celeba64(),
        other => bail!("unknown EDM model configuration {other:?}; known: {}", EDM_NAMES.join(", ")),
    })
}
