//! The headless training loop: data → noising → network → loss → backward → clip → AdamW → EMA, with
//! checkpoints (every N steps, at the end, and on request to stop), a JSON-lines log, sample grids and a
//! loss curve. Every step draws its randomness from (seed, step), so a resumed run repeats exactly what an
//! uninterrupted one would have done.
use super::checkpoint;
use super::optim::{clip_gate, AdamConfig, AdamW, Ema, GateWorkspace};
use crate::corruption::make::CorruptedData;
use crate::data::loader::{Loader, LoaderOptions};
use crate::data::ImageSet;
use crate::diffusion::schedule::VpSchedule;
use crate::diffusion::{ddim_sample, DdimOptions};
use crate::diffusion::{edm_heun_sample, EdmOptions};
use crate::nn::{Model, ModelConfig, Prediction};
use crate::nvtx;
use crate::objectives::ambient::{ambient_sample, AmbientSampleOptions};
use crate::objectives::gsure::GsureMode;
use crate::objectives::tweedie::{tweedie_sample, TweedieSampling};
use crate::objectives::{Objective, Phase, StepInputs};
use crate::{backward, no_grad, DType, Device, ParamStore, Tensor};
use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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

/// What a run trains on: clean images, or a corrupted dataset (observations, masks and, for evaluation
/// and the oracle only, the clean images).
pub enum TrainData {
    Clean(ImageSet),
    Corrupted(CorruptedData),
}

impl From<ImageSet> for TrainData {
    fn from(d: ImageSet) -> Self {
        TrainData::Clean(d)
    }
}

impl TrainData {
    pub fn len(&self) -> usize {
        match self {
            TrainData::Clean(d) => d.len(),
            TrainData::Corrupted(d) => d.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// [N, C, H, W] of what the network sees (spectral channels for corrupted data).
    pub fn dims(&self) -> [usize; 4] {
        match self {
            TrainData::Clean(d) => d.dims,
            TrainData::Corrupted(d) => d.dims,
        }
    }
}

/// The data a run trains on: the dataset at `path` (clean or corrupted, by its metadata), or else the
/// built-in phantoms at the model's resolution, corrupted for a corrupted-data loss by its paper's operator.
pub fn load_train_data(path: Option<&Path>, options: &TrainOptions, model: &ModelConfig) -> Result<TrainData> {
    let operator = crate::objectives::for_loss(options.loss).default_operator();
    match path {
        Some(p) => {
            let kind = crate::data::dataset::kind_of(p)?;
            if kind.as_deref() == Some("corrupted") {
                Ok(TrainData::Corrupted(CorruptedData::open(p)?))
            } else if operator.is_some() {
                bail!(
                    "{}: --loss {:?} trains on corrupted observations, and this is a clean dataset; make one with \
                     `gsure data make --source {} --op ... --out FILE`",
                    p.display(),
                    options.loss,
                    p.display()
                )
            } else {
                Ok(TrainData::Clean(crate::data::load_clean(p)?))
            }
        }
        None => {
            let clean = crate::data::phantoms(options.phantoms, model.resolution(), 1234);
            let Some(spec) = operator else { return Ok(TrainData::Clean(clean)) };
            let name = format!("phantoms(n={}, size={}, seed=1234)", options.phantoms, model.resolution());
            Ok(TrainData::Corrupted(crate::corruption::make::make_dataset(&clean, &spec, options.seed, &name)?))
        }
    }
}

/// Batches of indices only: the training thread reads what it needs for them.
struct IndexSource(usize);

impl crate::data::loader::Source for IndexSource {
    fn len(&self) -> usize {
        self.0
    }
    fn gather(&self, _: &[usize]) -> Vec<crate::data::loader::HostTensor> {
        Vec::new()
    }
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
    /// Smallest timestep GSURE trains (0: all).
    #[serde(default)]
    pub t_min: usize,
    /// Weight of Ambient-Tweedie's consistency loss (0: off).
    #[serde(default)]
    pub consistency: f64,
    /// How sample grids are drawn (set from the data when the run starts).
    #[serde(default)]
    pub sampling: Sampling,
    pub beta_start: f64,
    /// Number of built-in phantoms when no data file is given.
    pub phantoms: usize,
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
        Ok(())
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
            t_min: 0,
            consistency: 0.0,
            sampling: Sampling::Standard,
            beta_start: 1e-4,
            phantoms: 512,
        }
    }
}

/// Paths inside a run directory.
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn checkpoint(&self) -> PathBuf {
        self.0.join("checkpoint.safetensors")
    }
    pub fn log(&self) -> PathBuf {
        self.0.join("log.jsonl")
    }
    pub fn loss_plot(&self) -> PathBuf {
        self.0.join("loss.png")
    }
    pub fn samples(&self, step: u64) -> PathBuf {
        self.0.join(format!("samples_{step:07}.png"))
    }
}

/// What happened to a run, for the CLI to report.
#[derive(Debug)]
pub struct TrainSummary {
    pub steps_done: u64,
    pub final_loss: f64,
    pub stopped_early: bool,
    pub images_per_second: f64,
}

pub struct Trainer {
    pub options: TrainOptions,
    pub model_config: ModelConfig,
    pub device: Device,
    pub model: Model,
    pub params: ParamStore,
    pub opt: AdamW,
    pub ema: Ema,
    pub schedule: VpSchedule,
    pub step: u64,
    pub data: Arc<TrainData>,
    objective: Box<dyn Objective>,
    /// Device buffers of the step gate (gradient norm, clip scale, skip), reused every step.
    gate: GateWorkspace,
    /// Batches in a per-epoch shuffled order that depends only on (seed, epoch), prepared on a background
    /// thread; a resumed run starts at the epoch and batch where the step count puts it.
    loader: Loader,
    pub run: RunDir,
}

/// Makes a run's log agree with its checkpoint before a (resumed) run appends to it: keeps the complete
/// records of steps 1..=`step` and drops the rest (a partial last line left by a kill, and the records of
/// steps after the checkpoint, which the resumed run replays). Rewritten through a temporary file and a
/// rename only when something is dropped.
fn repair_log(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let mut kept = String::with_capacity(text.len());
    let mut dropped = false;
    for line in text.split_inclusive('\n') {
        let record_step = line
            .strip_suffix('\n')
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .and_then(|v| v["step"].as_u64());
        match record_step {
            Some(s) if s <= step => kept.push_str(line),
            _ => dropped = true,
        }
    }
    if dropped {
        crate::io::outputs::write_atomic(path, kept.as_bytes())
            .with_context(|| format!("repairing {} to the checkpoint's step {step}", path.display()))?;
    }
    Ok(())
}

fn mix(seed: u64, step: u64) -> u64 {
    crate::nn::layer_seed(seed, step.wrapping_add(0x5151))
}

impl Trainer {
    /// Starts a run in `out` (refused if `out` holds a previous run, unless `force`), or continues the run
    /// there when `resume` (its stored options win; `steps` may be raised).
    pub fn new(
        mut options: TrainOptions,
        data: impl Into<TrainData>,
        out: &Path,
        device: &Device,
        resume: bool,
        force: bool,
    ) -> Result<Trainer> {
        options.validate()?;
        let run = RunDir(out.to_path_buf());
        let has_run = run.checkpoint().exists() || run.log().exists();
        if resume {
            if !run.checkpoint().exists() {
                bail!("--resume: {} holds no checkpoint.safetensors to continue from", out.display());
            }
            let meta = checkpoint::read_meta(&run.checkpoint())?;
            let stored: TrainOptions = serde_json::from_value(meta["options"].clone())
                .with_context(|| format!("{}: metadata field \"options\" is unreadable", run.checkpoint().display()))?;
            if stored.config != options.config {
                bail!(
                    "--resume: {} was trained with --config {}, not {}",
                    out.display(),
                    stored.config,
                    options.config
                );
            }
            let steps = options.steps.max(stored.steps);
            options = TrainOptions { steps, ..stored };
        } else if has_run && !force {
            bail!("{} holds a previous run; pass --resume to continue it or --force to start over", out.display());
        }
        // --force replaces the old run only once every check below has passed (at the end of `new`).
        let start_over = has_run && !resume;
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        for stale in crate::io::outputs::remove_stale_temps(out) {
            eprintln!("removed {}, left by an interrupted write", stale.display());
        }

        let data: TrainData = data.into();
        let model_config = ModelConfig::by_name(&options.config)?;
        let [_, c, h, w] = data.dims();
        let r = model_config.resolution();
        if c != model_config.image_channels() || h != r || w != r {
            bail!(
                "data of {c}×{h}×{w} does not fit --config {} ({} channels at {r}×{r})",
                options.config,
                model_config.image_channels()
            );
        }
        if data.is_empty() {
            bail!("the dataset is empty");
        }
        let mut params = ParamStore::new();
        let model = Model::new(&model_config, &mut params, options.seed, device)?;
        let adam = AdamConfig { lr: options.lr, ..AdamConfig::default() };
        let mut opt = AdamW::new(adam, &params)?;
        let mut ema = Ema::new(options.ema_decay, &params)?;
        let schedule = VpSchedule::linear(options.beta_start)?;
        let mut step = 0;
        if resume {
            let meta = checkpoint::load(&run.checkpoint(), &params, Some(&mut ema), Some(&mut opt))?;
            step = meta["step"].as_u64().context("checkpoint metadata lacks \"step\"")?;
        }
        if options.batch > data.len() {
            bail!("--batch {} is larger than the dataset ({} images); lower --batch", options.batch, data.len());
        }
        let objective = crate::objectives::for_loss(options.loss);
        objective.check(&data, &model, &schedule, &options)?;
        if !resume {
            options.sampling = objective.sampling(&data, &options);
        }
        let per_epoch = (data.len() / options.batch) as u64;
        let source: Arc<dyn crate::data::loader::Source> = match &data {
            TrainData::Clean(d) => Arc::new(d.clone()),
            TrainData::Corrupted(d) => Arc::new(IndexSource(d.len())),
        };
        let data = Arc::new(data);
        let loader = Loader::new(
            source,
            LoaderOptions {
                drop_last: true, // every batch has the same shape, so the allocator reuses every block
                start_epoch: step / per_epoch,
                start_batch: (step % per_epoch) as usize,
                ..LoaderOptions::new(options.batch, options.seed)
            },
        )?;
        if start_over {
            for p in [run.checkpoint(), run.log()] {
                if p.exists() {
                    std::fs::remove_file(&p)
                        .with_context(|| format!("--force: removing the previous run's {}", p.display()))?;
                }
            }
        }
        Ok(Trainer {
            options,
            model_config,
            device: device.clone(),
            model,
            params,
            opt,
            ema,
            schedule,
            step,
            data,
            objective,
            gate: GateWorkspace::default(),
            loader,
            run,
        })
    }

    fn meta(&self) -> serde_json::Value {
        serde_json::json!({ "options": self.options, "model": self.model_config, "step": self.step })
    }

    pub fn save_checkpoint(&self) -> Result<()> {
        checkpoint::save(&self.run.checkpoint(), &self.params, &self.ema, &self.opt, &self.meta())
    }

    /// One optimisation step; returns (loss, gradient norm).
    pub fn train_step(&mut self) -> Result<(f64, f64)> {
        let _step = nvtx::range("step");
        let o = &self.options;
        let mut rng = StdRng::seed_from_u64(mix(o.seed, self.step));
        let phase = Phase::data();
        let batch = self.loader.next().context("the data loader stopped")?;
        let loss = self.objective.loss(StepInputs {
            indices: &batch.indices,
            data: &self.data,
            model: &self.model,
            schedule: &self.schedule,
            options: o,
            rng: &mut rng,
            dropout_seed: Some(mix(o.seed, self.step) ^ 1),
            compute: if o.bf16 { DType::BF16 } else { DType::F32 },
            device: &self.device,
            phase,
        })?;
        self.finish_step(loss)
    }

    /// Back-propagates, clips, updates the weights and their average, then reads the step's loss and
    /// gradient norm; (loss, grad norm). Nothing between the backward pass and that one read waits for the
    /// host: the clip gate is computed on the device and AdamW and the EMA read it there, leaving every
    /// weight untouched when the loss or the norm is not finite, and the run then stops naming the step.
    fn finish_step(&mut self, loss: Tensor) -> Result<(f64, f64)> {
        let o = &self.options;
        let grads = {
            let _range = nvtx::range("backward");
            backward(&loss)?
        };
        let gate = {
            let _range = nvtx::range("clip");
            clip_gate(&self.params, &grads, Some(&loss), o.grad_clip, &mut self.gate)?
        };
        let lr = o.lr * ((self.step + 1) as f64 / o.warmup.max(1) as f64).min(1.0);
        no_grad(|| -> Result<()> {
            {
                let _range = nvtx::range("optimiser");
                self.opt.step_gated(&self.params, &grads, lr, &gate)?;
            }
            let _range = nvtx::range("ema");
            self.ema.update_gated(&self.params, Some(&gate))
        })?;
        drop(grads);
        let values = {
            let _range = nvtx::range("loss readback");
            gate.read()?
        };
        if values.skip {
            let what = if values.loss.is_finite() {
                format!("the gradient norm became {}", values.norm)
            } else {
                format!("the loss became {}", values.loss)
            };
            let checkpoint = self.run.checkpoint();
            let last_good = if checkpoint.exists() {
                format!("the last good checkpoint is {}", checkpoint.display())
            } else {
                "no checkpoint was written before it".to_string()
            };
            bail!(
                "{what} at step {}; stopping with the weights of the step before ({last_good}). Lower --lr \
                 (now {})",
                self.step,
                self.options.lr
            );
        }
        self.step += 1;
        Ok((values.loss, values.norm))
    }

    /// A copy of the model holding the EMA weights (the weights used for sampling and evaluation).
    pub fn ema_model(&self) -> Result<Model> {
        let mut store = ParamStore::new();
        let model = Model::new(&self.model_config, &mut store, 0, &self.device)?;
        store.copy_values_from(&self.ema.shadow)?;
        Ok(model)
    }

    /// Samples `n` images with the EMA weights (DDIM 50 steps, or EDM Heun 18 steps) as [n, C, H, W] values.
    pub fn sample_ema(&self, n: usize, seed: u64) -> Result<Vec<f32>> {
        sample(&self.ema_model()?, &self.schedule, self.options.sampling, n, seed, &self.device)
    }

    /// Trains until `options.steps` or until `stop` is raised; checkpoints on the way and at the end.
    pub fn run(&mut self, stop: &AtomicBool, mut progress: impl FnMut(u64, u64, f64)) -> Result<TrainSummary> {
        repair_log(&self.run.log(), self.step)?;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.run.log())
            .with_context(|| format!("opening {}", self.run.log().display()))?;
        let start = std::time::Instant::now();
        let first = self.step;
        let mut last_loss = f64::NAN;
        let mut stopped_early = false;
        while self.step < self.options.steps {
            if stop.load(Ordering::Relaxed) {
                stopped_early = true;
                break;
            }
            let t0 = std::time::Instant::now();
            let (loss, norm) = self.train_step()?;
            last_loss = loss;
            let step = self.step;
            let line = serde_json::json!({
                "step": step, "loss": loss, "grad_norm": norm,
                "step_ms": t0.elapsed().as_secs_f64() * 1e3,
            });
            // One write per record: a kill leaves whole lines, or at worst one partial last line, which
            // `repair_log` drops on the next resume.
            log.write_all(format!("{line}\n").as_bytes())
                .with_context(|| format!("writing {}", self.run.log().display()))?;
            progress(step, self.options.steps, loss);
            if step.is_multiple_of(self.options.checkpoint_every) {
                self.save_checkpoint()?;
            }
            if self.options.sample_every > 0 && step.is_multiple_of(self.options.sample_every) {
                self.write_samples()?;
            }
        }
        self.save_checkpoint()?;
        if !stopped_early && self.step > first && self.options.sample_every > 0 {
            self.write_samples()?;
        }
        self.write_loss_plot()?;
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        Ok(TrainSummary {
            steps_done: self.step - first,
            final_loss: last_loss,
            stopped_early,
            images_per_second: (self.step - first) as f64 * self.options.batch as f64 / secs,
        })
    }

    pub fn write_samples(&self) -> Result<PathBuf> {
        let n = 16;
        let imgs = self.sample_ema(n, self.options.seed ^ 0xabcd)?;
        let r = self.model_config.resolution();
        let c = self.model_config.image_channels();
        let (h, w) = (r, r);
        let path = self.run.samples(self.step);
        crate::io::image::grid_png(&path, &imgs, [n, c, h, w], -1.0, 1.0)?;
        Ok(path)
    }

    pub fn write_loss_plot(&self) -> Result<()> {
        let points = super::loss_curve::read(&self.run.0).unwrap_or_default();
        if !points.is_empty() {
            let loss = clap::ValueEnum::to_possible_value(&self.options.loss).map(|v| v.get_name().to_string());
            let title = format!("Training loss: {} (--loss {})", self.options.config, loss.unwrap_or_default());
            super::loss_curve::chart(title, vec![(String::new(), points)]).write_png(&self.run.loss_plot())?;
        }
        Ok(())
    }
}

/// Samples from a trained network: DDIM (50 steps) for the VP family, EDM Heun (18 steps) for EDM.
/// Returns [n, C, H, W] f32 values.
pub fn sample(
    model: &Model,
    schedule: &VpSchedule,
    sampling: Sampling,
    n: usize,
    seed: u64,
    device: &Device,
) -> Result<Vec<f32>> {
    let _range = nvtx::range("sample");
    let mut rng = StdRng::seed_from_u64(seed);
    let x = match (model, sampling) {
        (Model::Edm(den), Sampling::Ambient { p }) => {
            let opts = AmbientSampleOptions { p, ..AmbientSampleOptions::default() };
            ambient_sample(den, &opts, n, DType::F32, device, &mut rng)?.0
        }
        (Model::Edm(den), Sampling::Tweedie { sigma_n, full }) => {
            let mode = if full { TweedieSampling::Full } else { TweedieSampling::Truncated { sigma_n } };
            tweedie_sample(den, EdmOptions::default(), mode, n, DType::F32, device, &mut rng)?
        }
        (model, _) => sample_standard(model, schedule, n, &mut rng, device)?,
    };
    x.to_vec_f32()
}

fn sample_standard(
    model: &Model,
    schedule: &VpSchedule,
    n: usize,
    rng: &mut StdRng,
    device: &Device,
) -> Result<Tensor> {
    let x = match model {
        Model::Ddim(net) => {
            let c = &net.config;
            let shape = [n, c.in_channels, c.resolution, c.resolution];
            ddim_sample(schedule, DdimOptions::default(), shape, DType::F32, device, rng, |x, t| {
                let tt = Tensor::full([n], t as f64, DType::F32, device)?;
                let out = net.forward(x, &tt, None)?;
                match c.prediction {
                    Prediction::X0 => Ok(out),
                    Prediction::Eps => {
                        let ab = schedule.alpha_bar(t);
                        crate::diffusion::samplers::lincomb(&[
                            (1.0 / ab.sqrt(), x),
                            (-(1.0 - ab).sqrt() / ab.sqrt(), &out),
                        ])
                    }
                }
            })?
        }
        Model::Edm(den) => {
            let c = &den.net.config;
            let shape = [n, c.in_channels, c.resolution, c.resolution];
            let mask = if c.extra_in_channels > 0 {
                Some(Tensor::full([n, c.extra_in_channels, c.resolution, c.resolution], 1.0, DType::F32, device)?)
            } else {
                None
            };
            edm_heun_sample(&den.edm, EdmOptions::default(), shape, DType::F32, device, rng, |x, sigma| {
                den.denoise(x, &vec![sigma; n], mask.as_ref(), None)
            })?
        }
    };
    Ok(x)
}

/// The run in `run_dir` with its EMA weights loaded: (options, model configuration, model, VP schedule,
/// step of the checkpoint).
pub fn load_run(
    run_dir: &Path,
    device: &Device,
) -> Result<(TrainOptions, ModelConfig, Model, VpSchedule, Option<u64>)> {
    let run = RunDir(run_dir.to_path_buf());
    if !run.checkpoint().exists() {
        bail!(
            "{} holds no checkpoint.safetensors; train first (gsure train --out {})",
            run_dir.display(),
            run_dir.display()
        );
    }
    let meta = checkpoint::read_meta(&run.checkpoint())?;
    let options: TrainOptions = serde_json::from_value(meta["options"].clone())
        .with_context(|| format!("{}: metadata field \"options\" is unreadable", run.checkpoint().display()))?;
    let config = ModelConfig::by_name(&options.config)?;
    let mut params = ParamStore::new();
    let model = Model::new(&config, &mut params, 0, device)?;
    checkpoint::load_weights(&run.checkpoint(), &params, "ema")?;
    let schedule = VpSchedule::linear(options.beta_start)?;
    Ok((options, config, model, schedule, meta["step"].as_u64()))
}

/// Samples `n` images from the EMA weights of the run in `run_dir`: ([n, C, H, W], values).
pub fn sample_run(run_dir: &Path, n: usize, seed: u64, device: &Device) -> Result<([usize; 4], Vec<f32>)> {
    let (options, config, model, schedule, _) = load_run(run_dir, device)?;
    let values = sample(&model, &schedule, options.sampling, n, seed, device)?;
    let r = config.resolution();
    Ok(([n, config.image_channels(), r, r], values))
}
