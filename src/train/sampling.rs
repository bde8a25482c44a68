//! Sample grids from a network or a finished run, drawn as the run's [`Sampling`] says.
use super::checkpoint;
use super::options::{Sampling, TrainOptions};
use super::run_dir::RunDir;
use crate::diffusion::schedule::VpSchedule;
use crate::diffusion::{ddim_sample, edm_heun_sample, DdimOptions, EdmOptions};
use crate::nn::{Model, ModelConfig, Prediction};
use crate::nvtx;
use crate::objectives::ambient::{ambient_sample, AmbientSampleOptions};
use crate::objectives::tweedie::{tweedie_sample, TweedieSampling};
use crate::{DType, Device, ParamStore, Tensor};
use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::path::Path;

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

/// Refuses non-finite samples: written out they look like a result, and NaN images score a perfect
/// sliced-Wasserstein 0. `gsure sample` and `gsure eval` call it; a training run's preview grid only warns.
pub fn check_finite_samples(values: &[f32], n: usize) -> Result<()> {
    let Some(first) = values.iter().position(|v| !v.is_finite()) else { return Ok(()) };
    let per = values.len() / n.max(1);
    let bad = values.chunks(per.max(1)).filter(|s| s.iter().any(|v| !v.is_finite())).count();
    bail!(
        "sampling produced non-finite values in {bad} of {n} samples (the first in sample {}: {}); the \
         network's output diverged, so nothing is written or scored. Fix: sample from a run whose training \
         loss stayed finite, or retrain from an earlier checkpoint with a lower --lr",
        first / per.max(1),
        values[first]
    )
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
    let (options, config, model, _, schedule, step) = load_run_with_params(run_dir, device)?;
    Ok((options, config, model, schedule, step))
}

/// [`load_run`] with the parameter store of the model (for gradients at the run's EMA weights).
#[allow(clippy::type_complexity)]
pub fn load_run_with_params(
    run_dir: &Path,
    device: &Device,
) -> Result<(TrainOptions, ModelConfig, Model, ParamStore, VpSchedule, Option<u64>)> {
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
    let config = options.model_config()?;
    let mut params = ParamStore::new();
    let model = Model::new(&config, &mut params, 0, device)?;
    checkpoint::load_weights(&run.checkpoint(), &params, "ema")?;
    let schedule = VpSchedule::linear(options.beta_start)?;
    Ok((options, config, model, params, schedule, meta["step"].as_u64()))
}

/// Samples `n` images from the EMA weights of the run in `run_dir`: ([n, C, H, W], values).
/// They are drawn in batches of the run's training batch (memory it is known to fit), so memory grows
/// with `n` only through the values returned; the first batch uses `seed` itself, later ones seeds
/// derived from it, so a given (seed, n) always gives the same samples.
pub fn sample_run(run_dir: &Path, n: usize, seed: u64, device: &Device) -> Result<([usize; 4], Vec<f32>)> {
    let (options, config, model, schedule, _) = load_run(run_dir, device)?;
    let r = config.resolution();
    let dims = [n, config.image_channels(), r, r];
    if n == 0 {
        bail!("sample --n 0: nothing to draw; give --n 1 or more");
    }
    // The values, the PNG grid drawn from them and the serialised safetensors file are held at once.
    let what = format!("{n} samples of {}×{r}×{r}", dims[1]);
    crate::io::budget::check_fits(&what, crate::io::budget::f32_bytes(&dims).saturating_mul(3), "lower --n")?;
    let chunk = options.batch.max(1);
    let mut values = Vec::with_capacity(dims.iter().product());
    for (k, start) in (0..n).step_by(chunk).enumerate() {
        let b = chunk.min(n - start);
        let seed_k = if k == 0 { seed } else { crate::nn::layer_seed(seed, k as u64) };
        values.extend(sample(&model, &schedule, options.sampling, b, seed_k, device)?);
    }
    check_finite_samples(&values, n)?;
    Ok((dims, values))
}
