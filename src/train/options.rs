//! What defines a run: the options stored in every checkpoint, the objective and sampling they choose, their
//! validation and the defaults per configuration.
use super::data::TrainData;
use crate::nn::ModelConfig;
use crate::objectives::gsure::{GsureMode, ProbeKind};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// The training objective (`--loss`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// Plain denoising on clean images (the oracle baseline; with a corrupted dataset it uses the file's
    /// clean images, which only the oracle may see).
    Supervised,
    /// GSURE on the corrupted observations (DDIM U-Net, VP schedule).
    Gsure,
    /// The naive baseline: plain denoising on the zero-filled observations as if they were clean images.
    Naive,
    /// Ambient Diffusion on masked images (DDPM++ U-Net with mask channels, EDM).
    Ambient,
    /// Ambient-Tweedie on noisy images (DDPM++ U-Net, EDM), with `--consistency W` below σ_n.
    Tweedie,
}

/// How a run's sample grids are drawn, fixed when the run starts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Sampling {
    /// DDIM (VP family) or EDM Heun with fully observed mask channels.
    #[default]
    Standard,
    /// Ambient's fixed-mask sampler: masks keep a pixel with probability (1 − p)(1 − δ).
    Ambient { p: f64 },
    /// Truncated Tweedie sampling to σ_n (Full after consistency training).
    Tweedie { sigma_n: f64, full: bool },
}

/// Everything that defines a run; stored in every checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainOptions {
    pub config: String,
    pub steps: u64,
    pub batch: usize,
    pub lr: f64,
    pub warmup: u64,
    pub grad_clip: f64,
    pub ema_decay: f64,
    pub seed: u64,
    pub checkpoint_every: u64,
    pub sample_every: u64,
    pub log_every: u64,
    pub bf16: bool,
    pub loss: LossKind,
    /// GSURE's loss mode (`ybar`, `xt`, `reference`).
    #[serde(default)]
    pub gsure_mode: GsureMode,
    /// GSURE's Hutchinson probe distribution (Rademacher, Gaussian).
    #[serde(default)]
    pub gsure_probe: ProbeKind,
    /// GSURE estimates the divergence for 1 example in this many (1: all; see `GsureObjective::div_every`).
    #[serde(default = "every_example")]
    pub gsure_div_every: usize,
    /// Smallest timestep GSURE trains (0: all).
    #[serde(default)]
    pub t_min: usize,
    /// Weight of Ambient-Tweedie's consistency loss (0: off).
    #[serde(default)]
    pub consistency: f64,
    /// The dropout rate of every residual block, in place of the configuration's (None: the configuration's).
    #[serde(default)]
    pub dropout: Option<f64>,
    /// How sample grids are drawn (set from the data when the run starts).
    #[serde(default)]
    pub sampling: Sampling,
    pub beta_start: f64,
    /// Number of built-in phantoms when no data file is given.
    pub phantoms: usize,
    /// The dataset file the run trains on (absolute where it could be resolved; None: the built-in
    /// phantoms). A resumed run reads it again, so its data does not depend on the resuming command line.
    #[serde(default)]
    pub data: Option<std::path::PathBuf>,
}

impl TrainOptions {
    /// Refuses settings no run can train with, naming the flag and the fix (before anything is written).
    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 {
            bail!("--batch 0: a step needs at least one image; pass --batch 1 or more");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr {}: the learning rate must be a positive number such as 2e-4", self.lr);
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            bail!("grad_clip {}: the clipping norm must be ≥ 0 (0 turns clipping off)", self.grad_clip);
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            bail!("ema_decay {}: the EMA decay must be in [0, 1), such as 0.9999", self.ema_decay);
        }
        if !(self.beta_start.is_finite() && self.beta_start > 0.0) {
            bail!("--beta-start {}: β_start must be a positive number such as 1e-4", self.beta_start);
        }
        if !(self.consistency.is_finite() && self.consistency >= 0.0) {
            bail!("--consistency {}: the consistency weight must be ≥ 0 (0 turns it off)", self.consistency);
        }
        if let Some(p) = self.dropout.filter(|p| !(0.0..1.0).contains(p)) {
            bail!("--dropout {p}: the dropout rate must be in [0, 1), such as 0.1 (0 turns dropout off)");
        }
        Ok(())
    }

    /// The network this run trains: `config` by name, with `dropout` in place of its rate when given.
    pub fn model_config(&self) -> Result<ModelConfig> {
        let config = ModelConfig::by_name(&self.config)?;
        Ok(match self.dropout {
            Some(p) => config.with_dropout(p),
            None => config,
        })
    }

    /// The options a resumed run continues with: the stored run's (`self`), its step count raised to
    /// `requested.steps` when that is larger. Every flag in `given` (the flags on the resuming command line,
    /// named without dashes) must agree with the stored run: a resumed run cannot change its data, seed,
    /// objective or optimiser, and silently ignoring the flag would leave the user believing it did.
    pub fn resumed(self, requested: &TrainOptions, given: &[&str], run: &std::path::Path) -> Result<TrainOptions> {
        let same_file = |a: &Option<std::path::PathBuf>, b: &Option<std::path::PathBuf>| match (a, b) {
            (Some(a), Some(b)) => a == b || std::fs::canonicalize(a).ok() == std::fs::canonicalize(b).ok(),
            (a, b) => a == b,
        };
        let data = |d: &Option<std::path::PathBuf>| d.as_ref().map_or("phantoms".into(), |p| p.display().to_string());
        let rate = |p: Option<f64>| p.map_or("unset (the configuration's rate)".into(), |p| p.to_string());
        for &flag in given {
            let (stored, asked) = match flag {
                "config" => (self.config.clone(), requested.config.clone()),
                "data" if !same_file(&self.data, &requested.data) => (data(&self.data), data(&requested.data)),
                "seed" => (self.seed.to_string(), requested.seed.to_string()),
                "batch" => (self.batch.to_string(), requested.batch.to_string()),
                "lr" => (self.lr.to_string(), requested.lr.to_string()),
                "loss" => (format!("{:?}", self.loss), format!("{:?}", requested.loss)),
                "gsure-mode" => (format!("{:?}", self.gsure_mode), format!("{:?}", requested.gsure_mode)),
                "gsure-probe" => (format!("{:?}", self.gsure_probe), format!("{:?}", requested.gsure_probe)),
                "gsure-div-every" => (self.gsure_div_every.to_string(), requested.gsure_div_every.to_string()),
                "t-min" => (self.t_min.to_string(), requested.t_min.to_string()),
                "consistency" => (self.consistency.to_string(), requested.consistency.to_string()),
                "dropout" => (rate(self.dropout), rate(requested.dropout)),
                "beta-start" => (self.beta_start.to_string(), requested.beta_start.to_string()),
                "bf16" => (self.bf16.to_string(), requested.bf16.to_string()),
                _ => continue,
            };
            if stored.to_lowercase() != asked.to_lowercase() {
                bail!(
                    "--resume: the run in {} was trained with --{flag} {stored}, and this command line gives \
                     --{flag} {asked}; a resumed run keeps its settings: drop --{flag}, or start a new run in \
                     another --out",
                    run.display()
                );
            }
        }
        Ok(TrainOptions { steps: self.steps.max(requested.steps), ..self })
    }

    /// β_start of the VP schedule for `data` when none was chosen: for corrupted data the GSURE paper's
    /// σ0², which the top-up noising needs at every t (s_t² ≥ σ0²), when larger than the configuration's.
    pub fn default_beta_start(&self, data: &TrainData) -> f64 {
        match data {
            TrainData::Corrupted(d) => (d.spec.sigma0 * d.spec.sigma0).max(self.beta_start),
            _ => self.beta_start,
        }
    }

    /// Defaults for a configuration: the papers' settings (docs/METHODS.md §8) for the big models, quick ones
    /// for the `tiny` models.
    pub fn for_config(config: &str) -> Self {
        let tiny = config.starts_with("tiny");
        let (batch, lr) = match config {
            c if c.starts_with("tiny") => (16, 1e-3),
            "ambient-celeba64" => (256, 2e-4),
            "edm-ddpmpp-cifar10" => (512, 1e-3),
            "gsure-mri320" => (32, 1e-5),
            _ => (128, 5e-5),
        };
        TrainOptions {
            config: config.to_string(),
            steps: if tiny { 600 } else { 180_000 },
            batch,
            lr,
            warmup: if tiny { 50 } else { 1000 },
            grad_clip: 1.0,
            ema_decay: if tiny { 0.99 } else { 0.9999 },
            seed: 0,
            checkpoint_every: if tiny { 200 } else { 5000 },
            sample_every: if tiny { 300 } else { 10_000 },
            log_every: if tiny { 20 } else { 100 },
            bf16: false,
            loss: LossKind::Supervised,
            gsure_mode: GsureMode::default(),
            gsure_probe: ProbeKind::default(),
            gsure_div_every: 1,
            t_min: 0,
            consistency: 0.0,
            dropout: None,
            sampling: Sampling::Standard,
            beta_start: 1e-4,
            phantoms: 512,
            data: None,
        }
    }
}

fn every_example() -> usize {
    1
}
