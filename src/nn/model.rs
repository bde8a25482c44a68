//! One handle over the model families, so the trainer and the samplers need not know which U-Net runs:
//! the DDIM U-Net on the discrete VP schedule, or the DDPM++ U-Net inside EDM's preconditioning.
use super::configs;
use super::{DdimUnet, DdimUnetConfig, DdpmppConfig, DdpmppUnet, EdmDenoiser};
use crate::diffusion::schedule::Edm;
use crate::{DType, Device, ParamStore};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "lowercase")]
pub enum ModelConfig {
    /// DDIM U-Net, VP schedule, integer timesteps.
    Ddim(DdimUnetConfig),
    /// DDPM++ U-Net, EDM preconditioning, continuous σ.
    Edm(DdpmppConfig),
}

impl ModelConfig {
    /// The named configuration of either family; unknown names list every known one.
    pub fn by_name(name: &str) -> Result<Self> {
        if let Ok(c) = configs::by_name(name) {
            return Ok(ModelConfig::Ddim(c));
        }
        if let Ok(c) = configs::edm_by_name(name) {
            return Ok(ModelConfig::Edm(c));
        }
        let known: Vec<&str> = configs::NAMES.iter().chain(configs::EDM_NAMES).copied().collect();
        bail!("unknown model configuration {name:?}; known: {}", known.join(", "))
    }
    /// This configuration with every residual block's dropout rate `p`.
    pub fn with_dropout(self, p: f64) -> Self {
        match self {
            ModelConfig::Ddim(c) => ModelConfig::Ddim(DdimUnetConfig { dropout: p, ..c }),
            ModelConfig::Edm(c) => ModelConfig::Edm(DdpmppConfig { dropout: p, ..c }),
        }
    }
    /// Image channels the model denoises (mask channels not counted).
    pub fn image_channels(&self) -> usize {
        match self {
            ModelConfig::Ddim(c) => c.in_channels,
            ModelConfig::Edm(c) => c.in_channels,
        }
    }
    /// Channels of the first (full-resolution) level.
    pub fn base_channels(&self) -> usize {
        match self {
            ModelConfig::Ddim(c) => c.ch,
            ModelConfig::Edm(c) => c.model_channels,
        }
    }
    pub fn resolution(&self) -> usize {
        match self {
            ModelConfig::Ddim(c) => c.resolution,
            ModelConfig::Edm(c) => c.resolution,
        }
    }
}

pub enum Model {
    Ddim(DdimUnet),
    Edm(EdmDenoiser),
}

impl Model {
    /// Builds the network, registering its parameters in `store` (f32 master weights).
    pub fn new(config: &ModelConfig, store: &mut ParamStore, seed: u64, device: &Device) -> Result<Model> {
        Ok(match config {
            ModelConfig::Ddim(c) => Model::Ddim(DdimUnet::new(c, store, seed, device, DType::F32)?),
            ModelConfig::Edm(c) => {
                Model::Edm(EdmDenoiser::new(DdpmppUnet::new(c, store, seed, device, DType::F32)?, Edm::default()))
            }
        })
    }
}
