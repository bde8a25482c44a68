//! Denoising MSE against clean held-out images at fixed diffusion times (docs/METHODS.md §7; the GSURE paper's
//! key figure).
//!
//! For each t and each held-out image x0: x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε, with ε drawn from a generator seeded
//! by (seed, t, image index) — so the noise does not depend on the batch size, and two models evaluated with
//! the same seed see exactly the same noisy images (a paired comparison). The MSE of the x0 estimate (per
//! pixel, no clipping) is averaged per image, then over images; the standard error is over images.
//!
//! The evaluation drives a closure `denoise(x_t, t) -> x̂0` (x_t in the VP scaling), so tests can plug in
//! an analytic denoiser; [`model_denoiser`] adapts the trained networks: VP networks see (x_t, t) (an
//! ε-prediction is converted to x0), EDM networks see x_t/√ᾱ_t = x0 + σ ε at σ = √((1−ᾱ_t)/ᾱ_t), the same
//! noisy image in EDM's scaling, so both families are measured on identical inputs.
use super::metrics::mean_and_se;
use crate::diffusion::schedule::VpSchedule;
use crate::nn::{Model, Prediction};
use crate::{no_grad, ops, DType, Device, Tensor};
use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// Denoising MSE of a run's EMA weights on `clean` images it never trained on, at the default times
/// (docs/METHODS.md §7: the GSURE paper's measure), written to RUN/denoise_mse.json.
pub fn heldout_report(trainer: &crate::train::Trainer, clean: &crate::data::ImageSet) -> Result<Vec<DenoisePoint>> {
    use anyhow::Context as _;
    let clean = &clean.for_model_channels(trainer.model_config.image_channels()).context("denoising report")?;
    let model = trainer.ema_model()?;
    let opts = DenoiseOptions { batch: trainer.options.batch.max(16), ..DenoiseOptions::default() };
    let points = denoise_mse(
        &clean.images,
        clean.dims,
        &trainer.schedule,
        &opts,
        &trainer.device,
        model_denoiser(&model, &trainer.schedule, &trainer.device),
    )?;
    let path = trainer.run.0.join("denoise_mse.json");
    crate::io::outputs::write_atomic(&path, (serde_json::to_string_pretty(&points)? + "\n").as_bytes())?;
    Ok(points)
}

/// t ∈ {10, 50, 100, 200, 300, …, 900}.
pub fn default_times() -> Vec<usize> {
    let mut t = vec![10, 50];
    t.extend((1..=9).map(|k| 100 * k));
    t
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DenoiseOptions {
    pub times: Vec<usize>,
    pub batch: usize,
    pub seed: u64,
}

impl Default for DenoiseOptions {
    fn default() -> Self {
        DenoiseOptions { times: default_times(), batch: 128, seed: 0 }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DenoisePoint {
    pub t: usize,
    pub alpha_bar: f64,
    /// EDM noise level of the same noisy image: √((1−ᾱ)/ᾱ).
    pub sigma: f64,
    /// Per-pixel MSE of x̂0 against x0, averaged over images.
    pub mse: f64,
    /// Standard error of `mse` over images.
    pub std_error: f64,
    pub count: usize,
}

/// Seed of the noise of image `i` at time `t`.
fn noise_seed(seed: u64, t: usize, i: usize) -> u64 {
    crate::nn::layer_seed(crate::nn::layer_seed(seed ^ 0xde05_e000, t as u64), i as u64)
}

/// Evaluates `denoise` on `clean` [N, C, H, W] (f32 values) at each time in `opts.times`.
pub fn denoise_mse(
    clean: &[f32],
    dims: [usize; 4],
    schedule: &VpSchedule,
    opts: &DenoiseOptions,
    device: &Device,
    mut denoise: impl FnMut(&Tensor, usize) -> Result<Tensor>,
) -> Result<Vec<DenoisePoint>> {
    let [n, c, h, w] = dims;
    let m = c * h * w;
    if clean.len() != n * m || n == 0 || m == 0 {
        bail!("denoising MSE: {} values for held-out images of shape {dims:?} (at least one image)", clean.len());
    }
    if opts.batch == 0 {
        bail!("denoising MSE: batch 0; use at least 1");
    }
    if let Some(&t) = opts.times.iter().find(|&&t| t >= schedule.steps()) {
        bail!("denoising MSE: t = {t} is outside the schedule's 0..{}", schedule.steps());
    }
    let mut points = Vec::with_capacity(opts.times.len());
    for &t in &opts.times {
        let ab = schedule.alpha_bar(t);
        let (a, s) = (ab.sqrt(), (1.0 - ab).sqrt());
        let mut per_image = Vec::with_capacity(n);
        for start in (0..n).step_by(opts.batch) {
            let b = opts.batch.min(n - start);
            let x0 = &clean[start * m..(start + b) * m];
            let mut xt = Vec::with_capacity(b * m);
            for i in 0..b {
                let mut rng = StdRng::seed_from_u64(noise_seed(opts.seed, t, start + i));
                for &x in &x0[i * m..(i + 1) * m] {
                    let e: f64 = StandardNormal.sample(&mut rng);
                    xt.push((a * x as f64 + s * e) as f32);
                }
            }
            let xt = Tensor::from_f32(&xt, [b, c, h, w], device)?;
            let est = no_grad(|| denoise(&xt, t))?;
            if est.dims() != [b, c, h, w] {
                bail!("denoising MSE: the denoiser returned shape {} for input {}", est.shape(), xt.shape());
            }
            let est = est.to_vec_f32()?;
            for i in 0..b {
                let se: f64 = est[i * m..(i + 1) * m]
                    .iter()
                    .zip(&x0[i * m..(i + 1) * m])
                    .map(|(&p, &q)| (p as f64 - q as f64).powi(2))
                    .sum();
                per_image.push(se / m as f64);
            }
        }
        let (mse, std_error) = mean_and_se(&per_image);
        if !mse.is_finite() {
            bail!("denoising MSE: the estimate at t = {t} is not finite ({mse})");
        }
        points.push(DenoisePoint { t, alpha_bar: ab, sigma: ((1.0 - ab) / ab).sqrt(), mse, std_error, count: n });
    }
    Ok(points)
}

/// The trained network as a `denoise(x_t, t) -> x̂0` closure (f32, no dropout; see the module docs). A model
/// with mask channels (Ambient) is shown every pixel (an all-ones mask).
pub fn model_denoiser<'a>(
    model: &'a Model,
    schedule: &'a VpSchedule,
    device: &'a Device,
) -> impl FnMut(&Tensor, usize) -> Result<Tensor> + 'a {
    model_denoiser_masked(model, schedule, device, MaskedView::ALL)
}

/// What a model with mask channels (Ambient) is shown: each pixel kept with probability `keep`, the mask
/// fixed per held-out image and t by `seed`, the input Ã ⊙ x_t with Ã in the mask channel. `keep` = 1 is the
/// all-ones mask; a model trained on masks keeping a fraction q of the pixels answers, at `keep` = q, the
/// question it was trained on, E[x0 | Ã x_t, Ã] (its error is still measured on every pixel).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct MaskedView {
    pub keep: f64,
    pub seed: u64,
}

impl MaskedView {
    pub const ALL: MaskedView = MaskedView { keep: 1.0, seed: 0 };
}

/// [`model_denoiser`] with a [`MaskedView`] for mask-channel models. The masks follow the order in which
/// [`denoise_mse`] presents the images: the i-th image given at time t gets mask (seed, t, i).
pub fn model_denoiser_masked<'a>(
    model: &'a Model,
    schedule: &'a VpSchedule,
    device: &'a Device,
    view: MaskedView,
) -> impl FnMut(&Tensor, usize) -> Result<Tensor> + 'a {
    let mut seen: (usize, usize) = (usize::MAX, 0); // (t, images already given at t)
    move |xt: &Tensor, t: usize| {
        let n = xt.dims()[0];
        let ab = schedule.alpha_bar(t);
        if seen.0 != t {
            seen = (t, 0);
        }
        let first = seen.1;
        seen.1 += n;
        match model {
            Model::Ddim(net) => {
                let tt = Tensor::full([n], t as f64, DType::F32, device)?;
                let out = net.forward(xt, &tt, None)?;
                match net.config.prediction {
                    Prediction::X0 => Ok(out),
                    Prediction::Eps => crate::diffusion::samplers::lincomb(&[
                        (1.0 / ab.sqrt(), xt),
                        (-(1.0 - ab).sqrt() / ab.sqrt(), &out),
                    ]),
                }
            }
            Model::Edm(den) => {
                let cfg = &den.net.config;
                let sigma = ((1.0 - ab) / ab).sqrt();
                let x = ops::scale(xt, 1.0 / ab.sqrt())?;
                let dims = xt.dims();
                let k = cfg.extra_in_channels;
                if k == 0 {
                    return den.denoise(&x, &vec![sigma; n], None, None);
                }
                if view.keep >= 1.0 {
                    let mask = Tensor::full([n, k, dims[2], dims[3]], 1.0, DType::F32, device)?;
                    return den.denoise(&x, &vec![sigma; n], Some(&mask), None);
                }
                let plane = dims[2] * dims[3];
                let seed = crate::nn::layer_seed(view.seed ^ 0x3a5c_0000, t as u64);
                let values: Vec<f64> = (first..first + n)
                    .flat_map(|i| crate::objectives::ambient::b_mask(i, plane, 1.0 - view.keep, seed))
                    .collect();
                let one = Tensor::from_f64(&values, [n, 1, dims[2], dims[3]], DType::F32, device)?;
                let image_mask = crate::objectives::ambient::expand_channels(&one, dims[1])?;
                let mask = crate::objectives::ambient::expand_channels(&one, k)?;
                den.denoise(&ops::mul(&x, &image_mask)?, &vec![sigma; n], Some(&mask), None)
            }
        }
    }
}
