//! The headless training loop: data → noising → network → loss → backward → clip → AdamW → EMA, with
//! checkpoints (every N steps, at the end, and on request to stop), a JSON-lines log, sample grids and a
//! loss curve. Every step draws its randomness from (seed, step), so a resumed run repeats exactly what an
//! uninterrupted one would have done.
use super::checkpoint;
use super::data::TrainData;
use super::options::TrainOptions;
use super::run_dir::{repair_log, RunDir};
use super::sampling::sample;
use super::staged_step::{self, StepParts, StepReplay};
use crate::data::loader::{Loader, LoaderOptions};
use crate::diffusion::schedule::VpSchedule;
use crate::nn::{Model, ModelConfig};
use crate::nvtx;
use crate::objectives::{DrawInputs, HostBatch, Objective};
use crate::ops::optim::{AdamConfig, AdamW, Ema, GateRing, GateValues, GateWorkspace, StepGate};
use crate::{DType, Device, ParamStore};
use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
    /// Device buffers of the step gate (gradient norm, clip scale, skip), reused every step; sticky, so
    /// that a gate read late still finds the weights of the step before the first bad one.
    gate: GateWorkspace,
    /// CUDA gates on their way to the host: `run` reads each when its copy has landed, so no step waits.
    ring: GateRing,
    /// Host milliseconds each queued step took, until its gate is read and logged.
    queued_ms: std::collections::VecDeque<f64>,
    /// Batches in a per-epoch shuffled order that depends only on (seed, epoch), prepared on a background
    /// thread; a resumed run starts at the epoch and batch where the step count puts it.
    loader: Loader,
    /// The CUDA steps: staging buffers and the captured step.
    replay: StepReplay,
    pub run: RunDir,
}

/// Gates that reached the host: the good steps, oldest first, and the error a bad step after them stops
/// the run with.
pub struct Arrived {
    pub gates: Vec<(u64, GateValues)>,
    pub stop: Option<anyhow::Error>,
}

impl Arrived {
    /// The good steps, or the bad step's error.
    pub fn into_result(self) -> Result<Vec<(u64, GateValues)>> {
        match self.stop {
            Some(e) => Err(e),
            None => Ok(self.gates),
        }
    }
}

fn mix(seed: u64, step: u64) -> u64 {
    crate::nn::layer_seed(seed, step.wrapping_add(0x5151))
}

/// The options stored in the checkpoint of the run in `out`.
pub fn stored_options(out: &Path) -> Result<TrainOptions> {
    let path = RunDir(out.to_path_buf()).checkpoint();
    let meta = checkpoint::read_meta(&path)?;
    serde_json::from_value(meta["options"].clone())
        .with_context(|| format!("{}: metadata field \"options\" is unreadable", path.display()))
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
        // A log without a checkpoint is a run that died before its first checkpoint: nothing to resume, and
        // nothing a new run would lose.
        let has_checkpoint = run.checkpoint().exists();
        let has_run = has_checkpoint || run.log().exists();
        if resume {
            if !has_checkpoint {
                bail!(
                    "--resume: {} holds no checkpoint.safetensors to continue from{}; start the run again \
                     without --resume",
                    out.display(),
                    if has_run { " (the run there stopped before its first checkpoint)" } else { "" }
                );
            }
            let stored = stored_options(out)?;
            if stored.config != options.config {
                bail!(
                    "--resume: {} was trained with --config {}, not {}",
                    out.display(),
                    stored.config,
                    options.config
                );
            }
            // How often to checkpoint is the one setting a resume may change: it shapes no weight.
            let checkpoint_every = options.checkpoint_every;
            options = TrainOptions { checkpoint_every, ..stored.resumed(&options, &[], out)? };
        } else if has_checkpoint && !force {
            bail!("{} holds a previous run; pass --resume to continue it or --force to start over", out.display());
        }
        // --force replaces the old run only once every check below has passed (at the end of `new`).
        let start_over = has_run && !resume;
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        for stale in crate::io::outputs::remove_stale_temps(out) {
            eprintln!("removed {}, left by an interrupted write", stale.display());
        }

        let data: TrainData = data.into();
        let model_config = options.model_config()?;
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
        // A floor, not an estimate: the first level alone keeps a conv's input and output and both their
        // gradients per image; the whole U-Net holds many times that.
        let floor =
            crate::io::budget::f32_bytes(&[options.batch, model_config.base_channels(), r, r]).saturating_mul(4);
        let what = format!("a training step of --config {} at --batch {}", options.config, options.batch);
        crate::io::budget::check_fits(&what, floor, "lower --batch")?;
        let objective = crate::objectives::for_loss(options.loss);
        objective.check(&data, &model, &schedule, &options)?;
        if !resume {
            options.sampling = objective.sampling(&data, &options);
        }
        let per_epoch = (data.len() / options.batch) as u64;
        let source = data.loader_source();
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
            gate: GateWorkspace::sticky(),
            ring: GateRing::default(),
            queued_ms: std::collections::VecDeque::new(),
            loader,
            replay: StepReplay::default(),
            run,
        })
    }

    fn meta(&self) -> serde_json::Value {
        serde_json::json!({ "options": self.options, "model": self.model_config, "step": self.step })
    }

    /// Whether the CUDA steps are captured once into a graph and replayed (the default),
    /// or run eagerly, each launch issued by the host (`--no-cuda-graph`). Both give the same weights.
    pub fn use_cuda_graphs(&mut self, on: bool) {
        self.replay.graphs = on;
    }

    /// Whether the steps are replayed from a captured CUDA graph now.
    pub fn replays_graph(&self) -> bool {
        self.replay.replaying()
    }

    pub fn save_checkpoint(&self) -> Result<()> {
        checkpoint::save(&self.run.checkpoint(), &self.params, &self.ema, &self.opt, &self.meta())
    }

    /// One optimisation step, waiting for its gate; returns (loss, gradient norm).
    pub fn train_step(&mut self) -> Result<(f64, f64)> {
        let _step = nvtx::range("step");
        let gate = self.queue_step()?;
        let values = {
            let _range = nvtx::range("loss readback");
            gate.read()?
        };
        self.settle(self.step, values)?;
        Ok((values.loss, values.norm))
    }

    /// One optimisation step, queued: forward, backward, gate, AdamW and EMA are on their way (on CUDA the
    /// host does not wait for them) and `step` counts it. Its gate says how it went.
    fn queue_step(&mut self) -> Result<StepGate> {
        let o = &self.options;
        let mut rng = StdRng::seed_from_u64(mix(o.seed, self.step));
        let phase = nvtx::range("data");
        let batch = self.loader.next().context("the data loader stopped")?;
        let compute = if o.bf16 { DType::BF16 } else { DType::F32 };
        let dropout_seed = mix(o.seed, self.step) ^ 1;
        let lr = self.lr();
        let draw = DrawInputs {
            indices: &batch.indices,
            data: &self.data,
            model: &self.model,
            schedule: &self.schedule,
            options: o,
            rng: &mut rng,
            compute,
        };
        let mut host = HostBatch::new();
        self.objective.draw(draw, &mut host)?;
        // The device work opens its own phases ("objective", "backward", ...; "graph" when replayed).
        drop(phase);
        let parts = StepParts {
            data: &self.data,
            model: &self.model,
            params: &self.params,
            opt: &mut self.opt,
            ema: &mut self.ema,
            gate: &mut self.gate,
            options: o,
            compute,
        };
        let gate =
            staged_step::queue(self.objective.as_ref(), host, lr, dropout_seed, &self.device, &mut self.replay, parts)?;
        self.step += 1;
        Ok(gate)
    }

    /// The learning rate of the coming step: linear warm-up to `--lr`.
    fn lr(&self) -> f64 {
        let o = &self.options;
        o.lr * ((self.step + 1) as f64 / o.warmup.max(1) as f64).min(1.0)
    }

    /// Takes the gate of step `step` (1-based): a bad step stops the run with the weights of the step
    /// before it, which the sticky gate has kept however many steps were queued after it.
    fn settle(&mut self, step: u64, values: GateValues) -> Result<()> {
        if !values.skip {
            return Ok(());
        }
        self.step = step - 1;
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
            "{what} at step {step}; stopping with the weights of step {} ({last_good}). Lower --lr (now {})",
            self.step,
            self.options.lr
        )
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
        // One record per step, written as its gate arrives: on CUDA a step or two after it was queued.
        let mut record = |trainer: &mut Trainer, step: u64, values: GateValues| -> Result<()> {
            last_loss = values.loss;
            let step_ms = trainer.queued_ms.pop_front().unwrap_or(f64::NAN);
            let line = serde_json::json!({
                "step": step, "loss": values.loss, "grad_norm": values.norm, "step_ms": step_ms,
            });
            // One write per record: a kill leaves whole lines, or at worst one partial last line, which
            // `repair_log` drops on the next resume.
            log.write_all(format!("{line}\n").as_bytes())
                .with_context(|| format!("writing {}", trainer.run.log().display()))?;
            progress(step, trainer.options.steps, values.loss);
            Ok(())
        };
        while self.step < self.options.steps {
            if stop.load(Ordering::Relaxed) {
                stopped_early = true;
                break;
            }
            let t0 = std::time::Instant::now();
            let arrived = self.step_nowait()?;
            self.queued_ms.push_back(t0.elapsed().as_secs_f64() * 1e3);
            for (s, values) in arrived.gates {
                record(self, s, values)?;
            }
            if let Some(e) = arrived.stop {
                return Err(e);
            }
            let step = self.step;
            let checkpoint = step.is_multiple_of(self.options.checkpoint_every);
            let preview = self.options.sample_every > 0 && step.is_multiple_of(self.options.sample_every);
            if checkpoint || preview {
                // What is saved or drawn must be the weights of steps that all went well.
                let arrived = self.wait_gates()?;
                for (s, values) in arrived.gates {
                    record(self, s, values)?;
                }
                if let Some(e) = arrived.stop {
                    return Err(e);
                }
            }
            if checkpoint {
                self.save_checkpoint()?;
            }
            if preview {
                self.write_samples()?;
            }
        }
        let arrived = self.wait_gates()?;
        for (s, values) in arrived.gates {
            record(self, s, values)?;
        }
        if let Some(e) = arrived.stop {
            return Err(e);
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

    /// One optimisation step, queued without waiting for the device (on the CPU it is done on return).
    /// Returns the (step, gate) of every step whose gate has reached the host since, oldest first, up to a
    /// bad one, which comes as [`Arrived::stop`]. After a bad step the trainer's `step` is back at the step
    /// before it, but its optimiser and loader have moved on with the steps queued since: drop it and
    /// resume from the checkpoint.
    pub fn step_nowait(&mut self) -> Result<Arrived> {
        let _step = nvtx::range("step");
        let gate = self.queue_step()?;
        let step = self.step;
        let _range = nvtx::range("gate to host");
        let arrived = match &self.device {
            Device::Cuda(gpu) => {
                self.ring.push(gpu, step, &gate)?;
                self.ring.ready(gpu)?
            }
            Device::Cpu => vec![(step, gate.read()?)],
        };
        Ok(self.settle_all(arrived))
    }

    /// The gates of every step still in flight, waiting for the device once when there are any; checked
    /// as in [`Self::step_nowait`].
    pub fn wait_gates(&mut self) -> Result<Arrived> {
        let arrived = match &self.device {
            Device::Cuda(gpu) if self.ring.in_flight() > 0 => {
                let gpu = gpu.clone();
                self.ring.drain(&gpu)?
            }
            _ => Vec::new(),
        };
        Ok(self.settle_all(arrived))
    }

    /// The good steps of `arrived` up to the first bad one, and the error that bad one stops the run with.
    fn settle_all(&mut self, arrived: Vec<(u64, GateValues)>) -> Arrived {
        let mut gates = Vec::with_capacity(arrived.len());
        for (step, values) in arrived {
            if let Err(e) = self.settle(step, values) {
                return Arrived { gates, stop: Some(e) };
            }
            gates.push((step, values));
        }
        Arrived { gates, stop: None }
    }

    pub fn write_samples(&self) -> Result<PathBuf> {
        let n = 16;
        let imgs = self.sample_ema(n, self.options.seed ^ 0xabcd)?;
        let r = self.model_config.resolution();
        let c = self.model_config.image_channels();
        let (h, w) = (r, r);
        let path = self.run.samples(self.step);
        // A preview is not a result: non-finite values are drawn (clipped) and said, and training goes on.
        if let Err(e) = super::sampling::check_finite_samples(&imgs, n) {
            eprintln!("warning: the preview {} at step {}: {e:#}", path.display(), self.step);
        }
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
