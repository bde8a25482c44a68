//! The training-step bench (`gsure bench train`): full optimisation steps of the real trainer
//! ([`Trainer::train_step`]: batch gather and upload, VP noising, forward, MSE, backward, gradient clipping,
//! AdamW, EMA) on the built-in phantoms, timed after warm-up with the GPU synchronised at the end of every
//! step. It reports the median step time, images per second, the achieved model TFLOP/s and the peak
//! memory of the timed steps. `benches/torch_train.py` times the same model and step in PyTorch, reading
//! the settings from [`list_json`] (`gsure bench train --list-json`) and comparing against the JSON report.
use super::report::DeviceInfo;
use super::runner::{git_commit, utc_now};
use super::timer::Stats;
use crate::nn::{configs, DdimUnetConfig};
use crate::ops::optim::AdamConfig;
use crate::train::{TrainOptions, Trainer};
use crate::Device;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

/// What to run and how often.
#[derive(Clone, Debug)]
pub struct TrainBenchOptions {
    /// Configuration names (`nn::configs::NAMES`).
    pub configs: Vec<String>,
    /// bf16 activations with f32 master weights (CUDA only), as `gsure train --bf16`.
    pub bf16: bool,
    /// Batch size for every configuration (default: each configuration's training batch).
    pub batch: Option<usize>,
    /// Timed steps per configuration.
    pub steps: usize,
    /// Untimed steps before them (kernel loading, allocator growth).
    pub warmup: usize,
    /// Stops a configuration's timed steps after this many seconds (at least one step is timed).
    pub max_seconds: Option<f64>,
    /// CUDA: replay the step from a captured graph, as `gsure train` does (false: `--no-cuda-graph`).
    pub cuda_graph: bool,
}

impl TrainBenchOptions {
    /// tiny on the CPU (3 steps after 1); tiny and gsure-celeba32 on CUDA (20 steps after 3, timed steps
    /// cut off after 60 s).
    pub fn defaults(device: &Device) -> TrainBenchOptions {
        if device.is_cuda() {
            TrainBenchOptions {
                configs: vec!["tiny".into(), "gsure-celeba32".into()],
                bf16: false,
                batch: None,
                steps: 20,
                warmup: 3,
                max_seconds: Some(60.0),
                cuda_graph: true,
            }
        } else {
            TrainBenchOptions {
                configs: vec!["tiny".into()],
                bf16: false,
                batch: None,
                steps: 3,
                warmup: 1,
                max_seconds: None,
                cuda_graph: true,
            }
        }
    }
}

/// Everything that defines one configuration's training step: what `--list-json` prints and what
/// `benches/torch_train.py` rebuilds.
#[derive(Clone, Debug, Serialize)]
pub struct TrainSetting {
    pub name: String,
    pub model: DdimUnetConfig,
    pub batch: usize,
    /// Peak learning rate (the trainer warms up linearly over `lr_warmup` steps).
    pub lr: f64,
    pub lr_warmup: u64,
    pub adam: AdamConfig,
    pub grad_clip: f64,
    pub ema_decay: f64,
    /// The VP schedule: linear betas from `beta_start` to `beta_end` over `timesteps`.
    pub beta_start: f64,
    pub beta_end: f64,
    pub timesteps: usize,
    /// "supervised": x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε with t uniform per example, MSE against the
    /// model's target (x0 or ε, `model.prediction`).
    pub objective: String,
    /// Counted from the configuration (equal to the built model's `ParamStore::num_scalars`).
    pub params: u64,
    /// Multiply-adds × 2 of the convolutions, linear layers and attention products for one image's forward.
    pub flops_fwd_per_image: f64,
    /// Training step per image, counted as 3 × forward (forward + backward's two products per layer).
    pub flops_train_per_image: f64,
}

impl TrainSetting {
    /// The trainer's defaults for `name` (`TrainOptions::for_config`), with `batch` overriding its batch.
    pub fn new(name: &str, batch: Option<usize>) -> Result<TrainSetting> {
        let model = configs::by_name(name)?;
        model.validate()?;
        let o = TrainOptions::for_config(name);
        let batch = batch.unwrap_or(o.batch);
        if batch == 0 {
            bail!("bench train: --batch must be positive");
        }
        let count = count_model(&model);
        Ok(TrainSetting {
            name: name.to_string(),
            batch,
            lr: o.lr,
            lr_warmup: o.warmup,
            // The trainer's optimiser: AdamConfig::default() with the run's learning rate.
            adam: AdamConfig { lr: o.lr, ..AdamConfig::default() },
            grad_clip: o.grad_clip,
            ema_decay: o.ema_decay,
            beta_start: o.beta_start,
            // VpSchedule::linear: 0.02 over 1000 steps.
            beta_end: 0.02,
            timesteps: 1000,
            objective: "supervised".into(),
            params: count.params,
            flops_fwd_per_image: count.flops,
            flops_train_per_image: 3.0 * count.flops,
            model,
        })
    }

    fn train_options(&self, bf16: bool, steps: u64) -> TrainOptions {
        TrainOptions {
            steps,
            batch: self.batch,
            bf16,
            sample_every: 0,
            checkpoint_every: u64::MAX,
            ..TrainOptions::for_config(&self.name)
        }
    }
}

/// The settings of `names` (each must be a known configuration).
pub fn settings(names: &[String], batch: Option<usize>) -> Result<Vec<TrainSetting>> {
    if names.is_empty() {
        bail!("bench train: no configuration given; known: {}", configs::NAMES.join(", "));
    }
    names.iter().map(|n| TrainSetting::new(n, batch)).collect()
}

/// `--list-json`: the settings as a JSON array.
pub fn list_json(settings: &[TrainSetting]) -> serde_json::Value {
    serde_json::to_value(settings).unwrap_or_default()
}

/// Parameters and forward FLOPs of a DDIM U-Net, counted layer by layer in the order `DdimUnet::new` builds
/// it (convolutions 2·Cin·Cout·k²·H_out·W_out, linear 2·in·out, attention 4·T²·C for QKᵀ and AV).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ModelCount {
    pub params: u64,
    pub flops: f64,
}

impl ModelCount {
    fn conv(&mut self, c_in: usize, c_out: usize, k: usize, out_res: usize) {
        self.params += (c_in * c_out * k * k + c_out) as u64;
        self.flops += 2.0 * (c_in * c_out * k * k) as f64 * (out_res * out_res) as f64;
    }
    fn linear(&mut self, d_in: usize, d_out: usize) {
        self.params += (d_in * d_out + d_out) as u64;
        self.flops += 2.0 * (d_in * d_out) as f64;
    }
    fn norm(&mut self, c: usize) {
        self.params += 2 * c as u64;
    }
    fn resnet(&mut self, c_in: usize, c_out: usize, temb: usize, res: usize) {
        self.norm(c_in);
        self.conv(c_in, c_out, 3, res);
        self.linear(temb, c_out);
        self.norm(c_out);
        self.conv(c_out, c_out, 3, res);
        if c_in != c_out {
            self.conv(c_in, c_out, 1, res);
        }
    }
    fn attn(&mut self, c: usize, res: usize) {
        self.norm(c);
        for _ in 0..4 {
            self.conv(c, c, 1, res); // q, k, v, proj_out
        }
        let t = (res * res) as f64;
        self.flops += 4.0 * t * t * c as f64;
    }
}

/// Counts `config`'s parameters and one image's forward FLOPs without building it.
pub fn count_model(config: &DdimUnetConfig) -> ModelCount {
    let c = config;
    let mut n = ModelCount::default();
    let temb = 4 * c.ch;
    n.linear(c.ch, temb);
    n.linear(temb, temb);
    let mut res = c.resolution;
    n.conv(c.in_channels, c.ch, 3, res);
    let in_mult: Vec<usize> = std::iter::once(1).chain(c.ch_mult.iter().copied()).collect();
    let levels = c.ch_mult.len();
    let mut block_in = c.ch;
    for l in 0..levels {
        let block_out = c.ch * c.ch_mult[l];
        block_in = c.ch * in_mult[l];
        for _ in 0..c.num_res_blocks {
            n.resnet(block_in, block_out, temb, res);
            block_in = block_out;
            if c.attn_resolutions.contains(&res) {
                n.attn(block_in, res);
            }
        }
        if l + 1 != levels {
            n.conv(block_in, block_in, 3, res / 2); // stride 2
            res /= 2;
        }
    }
    n.resnet(block_in, block_in, temb, res);
    n.attn(block_in, res);
    n.resnet(block_in, block_in, temb, res);
    for l in (0..levels).rev() {
        let block_out = c.ch * c.ch_mult[l];
        let mut skip_in = c.ch * c.ch_mult[l];
        for b in 0..=c.num_res_blocks {
            if b == c.num_res_blocks {
                skip_in = c.ch * in_mult[l];
            }
            n.resnet(block_in + skip_in, block_out, temb, res);
            block_in = block_out;
            if c.attn_resolutions.contains(&res) {
                n.attn(block_in, res);
            }
        }
        if l != 0 {
            n.conv(block_in, block_in, 3, res * 2); // after the nearest 2× upsampling
            res *= 2;
        }
    }
    n.norm(block_in);
    n.conv(block_in, c.out_channels, 3, res);
    n
}

/// The measurements of one configuration.
#[derive(Clone, Debug, Serialize)]
pub struct TrainResult {
    pub config: String,
    pub setting: TrainSetting,
    /// "f32" or "bf16" (activations; the weights, gradients' accumulation and optimiser state are f32).
    pub dtype: String,
    pub warmup: usize,
    /// Step times in ms (median, min, p90, number of timed steps).
    pub step: Option<Stats>,
    /// Every timed step, in order, in ms.
    pub step_ms: Vec<f64>,
    /// batch / median step time.
    pub images_per_s: Option<f64>,
    /// flops_train_per_image × batch / median step time, in TFLOP/s.
    pub model_tflops: Option<f64>,
    /// Peak memory over the timed steps, in bytes (see `peak_memory_kind`).
    pub peak_memory_bytes: Option<u64>,
    /// What `peak_memory_bytes` measures.
    pub peak_memory_kind: Option<String>,
    /// The loss and gradient norm of the last step (a sanity check: finite, plausible).
    pub last_loss: Option<f64>,
    pub last_grad_norm: Option<f64>,
    /// CUDA: what the last timed step asked of the stream (launches, copies, host waits, driver
    /// allocations), counted around `Trainer::step_nowait`, the step as `Trainer::run` queues it (the
    /// bench's own end-of-step wait, which times the whole step, is not in it).
    pub step_activity: Option<crate::backend::cuda::StreamActivity>,
    /// CUDA: whether the timed steps were replays of a captured graph (the warm-up captures it).
    pub graph_replayed: Option<bool>,
    /// Seconds spent on the configuration: set-up, warm-up and timed steps.
    pub seconds: f64,
    /// Why the configuration failed, if it did.
    pub error: Option<String>,
}

/// A whole `gsure bench train` run.
#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    pub kind: String,
    pub gsure_version: String,
    pub commit: Option<String>,
    pub date: String,
    pub device: DeviceInfo,
    pub dtype: String,
    pub steps: usize,
    pub warmup: usize,
    pub max_seconds: Option<f64>,
    /// How a step is timed.
    pub timing: String,
    pub results: Vec<TrainResult>,
}

impl TrainReport {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// A fixed-width table, one row per configuration.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "gsure bench train: {} ({}), {}, {} timed steps after {} warm-up, commit {}",
            self.device.name,
            self.device.kind,
            self.dtype,
            self.steps,
            self.warmup,
            self.commit.as_deref().unwrap_or("unknown")
        );
        let _ = writeln!(
            s,
            "{:<16} {:>6} {:>12} {:>12} {:>12} {:>10} {:>10} {:>9} {:>11} {:>10}",
            "config", "batch", "params", "median ms", "p90 ms", "images/s", "TFLOP/s", "steps", "peak MiB", "loss"
        );
        for r in &self.results {
            if let Some(e) = &r.error {
                let _ = writeln!(s, "{:<16} {:>6} FAILED: {e}", r.config, r.setting.batch);
                continue;
            }
            let f = |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
            let _ = writeln!(
                s,
                "{:<16} {:>6} {:>12} {:>12} {:>12} {:>10} {:>10} {:>9} {:>11} {:>10}",
                r.config,
                r.setting.batch,
                r.setting.params,
                f(r.step.as_ref().map(|x| x.median_ms), 3),
                f(r.step.as_ref().map(|x| x.p90_ms), 3),
                f(r.images_per_s, 1),
                f(r.model_tflops, 3),
                r.step_ms.len(),
                f(r.peak_memory_bytes.map(|b| b as f64 / 1048576.0), 1),
                f(r.last_loss, 5),
            );
        }
        let _ = writeln!(s, "(model FLOPs: 3 × forward per image; peak memory: {})", self.peak_kind_summary());
        let counted: Vec<&TrainResult> = self.results.iter().filter(|r| r.step_activity.is_some()).collect();
        if !counted.is_empty() {
            let _ = writeln!(
                s,
                "per step (the last timed one): {:<16} {:>6} {:>9} {:>7} {:>7} {:>7} {:>8} {:>7} {:>7}",
                "config", "graphs", "launches", "h→d", "d→h", "d→d", "memsets", "waits", "allocs"
            );
            for r in counted {
                let a = r.step_activity.expect("filtered");
                let _ = writeln!(
                    s,
                    "                               {:<16} {:>6} {:>9} {:>7} {:>7} {:>7} {:>8} {:>7} {:>7}",
                    r.config,
                    a.graph_launches,
                    a.launches,
                    a.host_to_device,
                    a.device_to_host,
                    a.device_to_device,
                    a.memsets,
                    a.synchronisations,
                    a.device_allocations
                );
            }
        }
        s
    }

    fn peak_kind_summary(&self) -> String {
        self.results.iter().find_map(|r| r.peak_memory_kind.clone()).unwrap_or_else(|| "not measured".into())
    }
}

/// Runs the training-step bench on `device`; `progress` sees each configuration's result as it finishes.
/// A configuration that fails (or panics) is reported with its error and the run goes on.
pub fn run(
    opts: &TrainBenchOptions,
    device: &Device,
    mut progress: impl FnMut(usize, usize, &TrainResult),
) -> Result<TrainReport> {
    if opts.bf16 && !device.is_cuda() {
        bail!("bench train: --bf16 needs --device cuda (the CPU backend computes in f32)");
    }
    if opts.steps == 0 {
        bail!("bench train: --steps must be at least 1");
    }
    let settings = settings(&opts.configs, opts.batch)?;
    let dtype = if opts.bf16 { "bf16" } else { "f32" };
    let mut results = Vec::with_capacity(settings.len());
    for (i, setting) in settings.into_iter().enumerate() {
        let t0 = Instant::now();
        let mut r = TrainResult {
            config: setting.name.clone(),
            setting,
            dtype: dtype.into(),
            warmup: opts.warmup,
            step: None,
            step_ms: vec![],
            images_per_s: None,
            model_tflops: None,
            peak_memory_bytes: None,
            peak_memory_kind: None,
            last_loss: None,
            last_grad_norm: None,
            step_activity: None,
            graph_replayed: None,
            seconds: 0.0,
            error: None,
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| run_one(&mut r, opts, device)));
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => r.error = Some(format!("{e:#}")),
            Err(p) => r.error = Some(format!("panicked: {}", panic_message(&p))),
        }
        if let Some(gpu) = device.gpu() {
            // Hand this configuration's buffers back: the next one has other shapes.
            if let Err(e) = gpu.synchronize() {
                r.error.get_or_insert_with(|| format!("{e:#}"));
            }
            gpu.empty_cache();
        }
        r.seconds = t0.elapsed().as_secs_f64();
        progress(i + 1, opts.configs.len(), &r);
        results.push(r);
    }
    Ok(TrainReport {
        kind: "gsure bench train".into(),
        gsure_version: env!("CARGO_PKG_VERSION").to_string(),
        commit: git_commit(),
        date: utc_now(),
        device: DeviceInfo::of(device),
        dtype: dtype.into(),
        steps: opts.steps,
        warmup: opts.warmup,
        max_seconds: opts.max_seconds,
        timing: "wall clock per Trainer::step_nowait (batch gather and upload, noising, forward, loss, backward, \
                 clip, AdamW, EMA), the GPU synchronised at the end of every step; median over the timed steps"
            .into(),
        results,
    })
}

/// A fresh, unique, empty directory for the throw-away run (the trainer writes nothing there unless asked
/// to checkpoint, which the bench never does).
fn scratch_dir(name: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    std::env::temp_dir().join(format!("gsure-bench-train-{}-{n}-{nanos}-{name}", std::process::id()))
}

struct RemoveOnDrop(std::path::PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_one(r: &mut TrainResult, opts: &TrainBenchOptions, device: &Device) -> Result<()> {
    let (res, c) = (r.setting.model.resolution, r.setting.model.in_channels);
    // Enough distinct phantoms that batches differ; their content does not matter for timing. Phantoms have
    // one channel: it is repeated for multi-channel models (mri320: real, imaginary).
    let base = crate::data::phantoms(r.setting.batch.clamp(64, 512), res, 1234);
    let n = base.len();
    let images = if c == 1 {
        base.images
    } else {
        base.images.chunks(res * res).flat_map(|img| std::iter::repeat_n(img, c).flatten().copied()).collect()
    };
    run_with(r, opts, device, crate::data::ImageSet { images, dims: [n, c, res, res] })
}

fn run_with(r: &mut TrainResult, opts: &TrainBenchOptions, device: &Device, data: crate::data::ImageSet) -> Result<()> {
    let s = r.setting.clone();
    let dir = scratch_dir(&s.name);
    let _cleanup = RemoveOnDrop(dir.clone());
    let total = (opts.warmup + opts.steps) as u64;
    let mut trainer = Trainer::new(s.train_options(opts.bf16, total), data, &dir, device, false, true)
        .context("building the trainer")?;
    trainer.use_cuda_graphs(opts.cuda_graph);
    let built = trainer.params.num_scalars() as u64;
    if built != s.params {
        bail!("bench train: {} built {built} parameters but its configuration counts {}", s.name, s.params);
    }
    let sync = || -> Result<()> {
        if let Some(gpu) = device.gpu() {
            gpu.synchronize()?;
        }
        Ok(())
    };
    for _ in 0..opts.warmup {
        trainer.train_step()?;
    }
    sync()?;
    // Peak memory from here on: the timed steps only (the model, optimiser and EMA state count, being live).
    let cpu_peak_reset = match device {
        Device::Cpu => reset_peak_rss(),
        Device::Cuda(gpu) => {
            gpu.reset_peak_alloc_stats();
            true
        }
    };
    let mut last = (f64::NAN, f64::NAN);
    let timed = Instant::now();
    for i in 0..opts.steps {
        let t = Instant::now();
        let before = device.gpu().map(|g| g.activity());
        // As a training run queues it: the step's gate goes to the host behind its work, no wait.
        let mut arrived = trainer.step_nowait()?.into_result()?;
        r.step_activity = device.gpu().zip(before).map(|(g, b)| g.activity() - b);
        r.graph_replayed = device.gpu().map(|_| trainer.replays_graph());
        sync()?;
        arrived.extend(trainer.wait_gates()?.into_result()?);
        if let Some(&(_, v)) = arrived.last() {
            last = (v.loss, v.norm);
        }
        r.step_ms.push(t.elapsed().as_secs_f64() * 1e3);
        if let Some(max) = opts.max_seconds {
            if i + 1 < opts.steps && timed.elapsed().as_secs_f64() > max {
                break;
            }
        }
    }
    (r.last_loss, r.last_grad_norm) = (Some(last.0), Some(last.1));
    match device {
        Device::Cpu => {
            r.peak_memory_bytes = peak_rss_bytes();
            r.peak_memory_kind = Some(if cpu_peak_reset {
                "process peak resident memory (VmHWM) over the timed steps".into()
            } else {
                "process peak resident memory (VmHWM) since start (could not reset it)".into()
            });
        }
        Device::Cuda(gpu) => {
            r.peak_memory_bytes = Some(gpu.alloc_stats().peak_in_use_bytes as u64);
            r.peak_memory_kind =
                Some("GPU allocator peak bytes in live tensors over the timed steps (size-class rounded)".into());
        }
    }
    let stats = Stats::from_samples(&r.step_ms)?;
    let secs = stats.median_ms * 1e-3;
    r.images_per_s = Some(s.batch as f64 / secs);
    r.model_tflops = Some(s.flops_train_per_image * s.batch as f64 / secs / 1e12);
    r.step = Some(stats);
    Ok(())
}

/// Resets the kernel's peak-RSS counter to the current RSS (writing 5 to /proc/self/clear_refs).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// VmHWM from /proc/self/status, in bytes (None where there is no procfs).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".into())
}
