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
