//! Ambient Diffusion (Daras et al., NeurIPS 2023; docs/METHODS.md §4.3): learning E[x0 | Ã x_t, Ã] from images
//! seen only through a mask A.
//!
//! Training: each image x0 is known only on A (y = A ⊙ x0). A further corruption Ã = A ⊙ B, B ~ Bernoulli(1−δ)
//! per pixel, hides some observed pixels from the network. With x_t = x0 + σ η, the network sees
//! concat(Ã ⊙ x_t, Ã) and predicts x0; the loss only uses pixels where x0 is known:
//!
//! ```text
//! L = (1/batch) Σ_n λ(σ_n) Σ_pixels A_n ⊙ (D_n − x0_n)²
//! ```
//!
//! Since A given Ã is independent of x0 and of the noise, the minimiser over functions of (Ã x_t, Ã) is
//! E[x0 | Ã x_t, Ã] on every pixel that has a chance of being in A but not in Ã (tests/ambient.rs checks this
//! by least squares on a Gaussian). Only Ã ⊙ x_t = Ã ⊙ (y + σ η) enters the network and only A ⊙ (D − y) the
//! loss, so the values of y where A = 0 never matter (y is multiplied by A on entry anyway).
//!
//! B is fixed per image, as in the reference code: it is drawn from a generator seeded with
//! (`mask_seed`, image index), so the same image gets the same Ã at every epoch ([`further_mask`]).
//! `resample_b` draws B from the step's generator instead.
//!
//! Masks are shared across channels: A is [N, 1, H, W] or [N, C, H, W] (then B, one value per pixel, is
//! applied to every channel). We do no augmentation here; whoever augments must move image and masks
//! together (the reference code flips images but not masks, putting unobserved pixels under the mask).
//!
//! Sampling ([`ambient_sample`]): one mask Ã ~ Bernoulli((1−p)(1−δ)) per sample, fixed for the whole
//! trajectory; EDM Heun (18 steps, σ_max 80, σ_min 0.002, ρ 7) where the denoiser sees Ã ⊙ x and its
//! prediction is clipped to [−1, 1] at every evaluation, as the reference sampler does.
//!
//! The naive baseline ([`AmbientMode::Naive`]) trains on y as if it were clean: plain EDM loss on every
//! pixel, no further corruption, no mask input (an all-ones mask if the network has mask channels).
use super::{corrupted_edm, gather, DeviceBatch, DrawInputs, HostBatch, LossInputs, Objective};
use crate::autograd::no_grad;
use crate::corruption::{OpKind, OpSpec};
use crate::diffusion::samplers::edm_heun_sample;
use crate::diffusion::schedule::VpSchedule;
use crate::diffusion::{Edm, EdmOptions};
use crate::nn::TrainSeed;
use crate::nn::{EdmDenoiser, Model};
use crate::ops::{self, layout};
use crate::train::{Sampling, TrainData, TrainOptions};
use crate::{DType, Device, Tensor};
use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// Which objective [`ambient_loss`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AmbientMode {
    /// The Ambient Diffusion loss (further corruption, mask input, loss on A).
    Ambient,
    /// Baseline: plain EDM loss on the masked images y as if they were clean.
    Naive,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AmbientOptions {
    pub mode: AmbientMode,
    /// Probability δ that an observed pixel is hidden from the network (B ~ Bernoulli(1−δ)).
    pub delta: f64,
    /// Mixed with the image index to seed B (fixed per image).
    pub mask_seed: u64,
    /// Draw B from the step's generator at every step instead of fixing it per image.
    pub resample_b: bool,
    /// Use this σ for every example instead of EDM's log-normal (evaluation at one noise level).
    pub fixed_sigma: Option<f64>,
    /// dtype the network runs in (bf16 for mixed precision); None: the dtype of y. The loss is computed in
    /// y's dtype.
    pub compute: Option<DType>,
    /// Divide each example's pixel sum by the number of elements C·H·W (the trainer's supervised EDM loss
    /// is a mean over pixels). Default false: the sum over pixels of docs/METHODS.md §4.3 and the reference.
    pub mean_over_pixels: bool,
}

impl Default for AmbientOptions {
    fn default() -> Self {
        AmbientOptions {
            mode: AmbientMode::Ambient,
            delta: 0.1,
            mask_seed: 0,
            resample_b: false,
            fixed_sigma: None,
            compute: None,
            mean_over_pixels: false,
        }
    }
}

/// The parts of one loss evaluation: `loss` is the scalar that is differentiated.
pub struct AmbientLoss {
    /// (1/batch) Σ_n per_example[n], shape [1].
    pub loss: Tensor,
    /// λ(σ_n) Σ_pixels A ⊙ (D − y)² per example (divided by C·H·W with `mean_over_pixels`), shape [N].
    pub per_example: Tensor,
    /// The noise level of each example.
    pub sigma: Vec<f64>,
    /// The mask the network saw, [N, C, H, W] (all ones in naive mode).
    pub a_tilde: Tensor,
}

/// splitmix64 of (seed, index): independent-looking seeds for consecutive indices.
pub fn mix(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0x632B_E59B_D9B5_E1A5);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// B for image `index`: `pixels` values in {0, 1}, 1 with probability 1 − δ, the same for every call with
/// the same (index, seed).
pub fn b_mask(index: usize, pixels: usize, delta: f64, seed: u64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(mix(seed, index as u64));
    bernoulli(pixels, 1.0 - delta, &mut rng)
}

fn bernoulli(n: usize, p_one: f64, rng: &mut impl Rng) -> Vec<f64> {
    (0..n).map(|_| if rng.random::<f64>() < p_one { 1.0 } else { 0.0 }).collect()
}

/// Checks that `m` is a 0/1 mask [N, 1|C, H, W] for the image `x` [N, C, H, W] (same dtype and device).
pub fn check_mask(op: &str, m: &Tensor, x: &Tensor) -> Result<()> {
    let (n, c, h, w) = x.shape().nchw(op)?;
    let d = m.dims();
    if d.len() != 4 || d[0] != n || (d[1] != 1 && d[1] != c) || d[2] != h || d[3] != w {
        bail!(
            "{op}: mask of shape {} for images of shape {}; expected [{n}, 1 or {c}, {h}, {w}]",
            m.shape(),
            x.shape()
        );
    }
    m.check_same_kind(x, op)?;
    if let Some(bad) = m.to_vec_f64()?.into_iter().find(|v| *v != 0.0 && *v != 1.0) {
        bail!("{op}: the mask (shape {}) must hold only 0 and 1, found {bad}", m.shape());
    }
    Ok(())
}

/// A mask [N, 1|C, H, W] repeated to [N, c, H, W].
pub fn expand_channels(m: &Tensor, c: usize) -> Result<Tensor> {
    let mc = m.dims()[1];
    if mc == c {
        return Ok(m.clone());
    }
    if mc != 1 {
        bail!("expand_channels: cannot turn a mask of shape {} into {c} channels", m.shape());
    }
    layout::concat_channels(&vec![m; c])
}

/// Ã = A ⊙ B with B one Bernoulli(1−δ) value per pixel (shared across channels): seeded by the image index
/// (fixed per image), or drawn from `rng` with `opts.resample_b`. Same shape as `a`.
pub fn further_mask(a: &Tensor, indices: &[usize], opts: &AmbientOptions, rng: &mut impl Rng) -> Result<Tensor> {
    let d = a.dims();
    if d.len() != 4 {
        bail!("further_mask: a mask of shape {} is not [N, C, H, W]", a.shape());
    }
    let b = further_b([d[0], d[1], d[2], d[3]], indices, opts, rng)?;
    let b = Tensor::from_f64(&b, a.shape().clone(), a.dtype(), a.device())?;
    ops::mul(a, &b)
}

/// The further corruption B of [`further_mask`] for masks of `dims` [N, C, H, W], drawn on the host (one
/// H×W draw per example, repeated over the channels).
pub fn further_b(dims: [usize; 4], indices: &[usize], opts: &AmbientOptions, rng: &mut impl Rng) -> Result<Vec<f64>> {
    if indices.len() != dims[0] {
        bail!("further_mask: {} image indices for a mask of shape {dims:?} ([N, C, H, W])", indices.len());
    }
    if !(0.0..1.0).contains(&opts.delta) {
        bail!("further_mask: δ = {} must lie in [0, 1)", opts.delta);
    }
    let (n, c, hw) = (dims[0], dims[1], dims[2] * dims[3]);
    let mut b = Vec::with_capacity(n * c * hw);
    for &idx in indices {
        let bi = if opts.resample_b {
            bernoulli(hw, 1.0 - opts.delta, rng)
        } else {
            b_mask(idx, hw, opts.delta, opts.mask_seed)
        };
        for _ in 0..c {
            b.extend_from_slice(&bi);
        }
    }
    Ok(b)
}

fn sigmas(n: usize, fixed: Option<f64>, edm: &Edm, rng: &mut impl Rng) -> Result<Vec<f64>> {
    match fixed {
        Some(s) if s.is_finite() && s > 0.0 => Ok(vec![s; n]),
        Some(s) => bail!("ambient_loss: fixed σ = {s} is not a positive finite number"),
        None => Ok((0..n).map(|_| edm.sample_sigma(rng)).collect()),
    }
}

/// The Ambient (or naive) loss around any denoiser. `denoise(input, σ, mask)` gets the network input in the
/// compute dtype — Ã ⊙ x_t [N, C, H, W] and Ã [N, C, H, W] (None in naive mode) — and returns the x0
/// estimate [N, C, H, W]. `y` = A ⊙ x0 [N, C, H, W], `a` the 0/1 mask [N, 1|C, H, W], `indices` the images'
/// dataset indices (they seed B). Draws from `rng`: σ (unless fixed), then the noise η, then B if resampled.
pub fn ambient_loss_with(
    edm: &Edm,
    denoise: impl Fn(&Tensor, &[f64], Option<&Tensor>) -> Result<Tensor>,
    y: &Tensor,
    a: &Tensor,
    indices: &[usize],
    opts: &AmbientOptions,
    rng: &mut impl Rng,
) -> Result<AmbientLoss> {
    let (n, c, h, w) = y.shape().nchw("ambient_loss (observations y)")?;
    check_mask("ambient_loss", a, y)?;
    if indices.len() != n {
        bail!("ambient_loss: {} image indices for a batch of shape {}", indices.len(), y.shape());
    }
    let sigma = sigmas(n, opts.fixed_sigma, edm, rng)?;
    let eta = Tensor::randn([n, c, h, w], y.dtype(), y.device(), rng)?;
    let b = match opts.mode {
        AmbientMode::Ambient => {
            let b = further_b([n, c, h, w], indices, opts, rng)?;
            Some(Tensor::from_f64(&b, [n, c, h, w], y.dtype(), y.device())?)
        }
        AmbientMode::Naive => None,
    };
    let per_example = |v: Vec<f64>| Tensor::from_f64(&v, [n], y.dtype(), y.device());
    let lam = per_example(loss_weights(edm, &sigma, c * h * w, opts))?;
    let draws = AmbientDraws { sigma: per_example(sigma.clone())?, eta, lam, b };
    let (loss, per_example, a_tilde) = ambient_device_loss(|x, m| denoise(x, &sigma, m), y, a, &draws, opts)?;
    Ok(AmbientLoss { loss, per_example, sigma, a_tilde })
}

/// λ(σ)·m per example (λ(σ) for the pixel mean), the weight of the masked squared error.
fn loss_weights(edm: &Edm, sigma: &[f64], m: usize, opts: &AmbientOptions) -> Vec<f64> {
    let per_pixel = if opts.mean_over_pixels { 1.0 / m as f64 } else { 1.0 };
    sigma.iter().map(|&s| edm.loss_weight(s) * per_pixel * m as f64).collect()
}

/// A step's draws where the loss reads them: σ [N], the noise η [N, C, H, W], the loss weight λ [N] and the
/// further corruption B [N, C, H, W] (None in naive mode).
struct AmbientDraws {
    sigma: Tensor,
    eta: Tensor,
    lam: Tensor,
    b: Option<Tensor>,
}

/// The device side of the Ambient loss: (loss, per-example losses, Ã). `denoise(input, mask)` is the
/// denoiser at the draws' σ.
fn ambient_device_loss(
    denoise: impl Fn(&Tensor, Option<&Tensor>) -> Result<Tensor>,
    y: &Tensor,
    a: &Tensor,
    draws: &AmbientDraws,
    opts: &AmbientOptions,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, c, h, w) = y.shape().nchw("ambient_loss (observations y)")?;
    let compute = opts.compute.unwrap_or(y.dtype());
    let a = expand_channels(a, c)?;
    // y is A ⊙ x0 by contract; masking again makes the loss independent of whatever lies under A = 0.
    let y = ops::mul(&y.detach(), &a)?;
    let x_t = ops::add(&y, &ops::mul_along(&draws.eta, &draws.sigma, 0)?)?;
    let (d, loss_mask, a_tilde) = match &draws.b {
        Some(b) => {
            let a_tilde = ops::mul(&a, b)?;
            let input = ops::mul(&x_t, &a_tilde)?.to_dtype(compute)?;
            let d = denoise(&input, Some(&a_tilde.to_dtype(compute)?))?;
            (d, a, a_tilde)
        }
        None => {
            let d = denoise(&x_t.to_dtype(compute)?, None)?;
            let ones = Tensor::full([n, c, h, w], 1.0, y.dtype(), y.device())?;
            (d, ones.clone(), ones)
        }
    };
    if d.dims() != [n, c, h, w] {
        bail!("ambient_loss: the denoiser returned shape {} for images of shape {}", d.shape(), y.shape());
    }
    let d = d.to_dtype(y.dtype())?;
    // masked_mse is (1/m) Σ weight (D − y)²; the weight carries A and λ(σ)·m (or λ(σ) for the pixel mean).
    let weight = ops::mul_along(&loss_mask, &draws.lam, 0)?;
    let per_example = ops::masked_mse(&d, &y, &weight)?;
    let loss = ops::scale(&ops::sum_all(&per_example)?, 1.0 / n as f64)?;
    Ok((loss, per_example, a_tilde))
}

/// The mask channels the network takes, built from Ã [N, C, H, W] (C = image channels).
fn mask_input(den: &EdmDenoiser, a_tilde: Option<&Tensor>, like: &Tensor) -> Result<Option<Tensor>> {
    let extra = den.net.config.extra_in_channels;
    let (n, c, h, w) = like.shape().nchw("ambient mask input")?;
    match (a_tilde, extra) {
        (_, 0) => {
            if a_tilde.is_some() {
                bail!(
                    "ambient: the Ambient objective needs a network with mask channels (extra_in_channels = {c}), \
                     this one has none"
                );
            }
            Ok(None)
        }
        (None, k) => Ok(Some(Tensor::full([n, k, h, w], 1.0, like.dtype(), like.device())?)),
        (Some(m), k) if k == c => Ok(Some(m.clone())),
        // The mask is shared across channels, so one channel carries all of it.
        (Some(m), 1) => Ok(Some(layout::narrow_channels(m, 0, 1)?)),
        (Some(_), k) => bail!("ambient: the network takes {k} mask channels for {c} image channels; use {c} or 1"),
    }
}

/// The Ambient loss (or the naive baseline, `opts.mode`) of an EDM denoiser, ready for `backward`.
/// `y` = A ⊙ x0 [N, C, H, W] (f32, or f64 on the CPU), `a` its 0/1 mask [N, 1|C, H, W] (same dtype),
/// `indices` the dataset indices of the batch (for the seeded B), `train_seed` turns dropout on.
/// The network must have extra_in_channels = C (or 1) for the Ambient mode.
pub fn ambient_loss(
    den: &EdmDenoiser,
    y: &Tensor,
    a: &Tensor,
    indices: &[usize],
    opts: &AmbientOptions,
    rng: &mut impl Rng,
    train_seed: Option<TrainSeed>,
) -> Result<Tensor> {
    Ok(ambient_loss_parts(den, y, a, indices, opts, rng, train_seed)?.loss)
}

/// [`ambient_loss`] with its parts (per-example losses, σ, Ã) for logging.
pub fn ambient_loss_parts(
    den: &EdmDenoiser,
    y: &Tensor,
    a: &Tensor,
    indices: &[usize],
    opts: &AmbientOptions,
    rng: &mut impl Rng,
    train_seed: Option<TrainSeed>,
) -> Result<AmbientLoss> {
    ambient_loss_with(
        &den.edm,
        |x, sigma, m| {
            let mask = mask_input(den, m, x)?;
            den.denoise(x, sigma, mask.as_ref(), train_seed)
        },
        y,
        a,
        indices,
        opts,
        rng,
    )
}

/// Options of the fixed-mask sampler.
#[derive(Clone, Copy, Debug)]
pub struct AmbientSampleOptions {
    /// Heun steps and ρ (18 and 7); churn > 0 gives the stochastic variant.
    pub edm: EdmOptions,
    /// Training corruption p: the mask keeps a pixel with probability (1 − p)(1 − δ).
    pub p: f64,
    pub delta: f64,
    /// Clip every prediction to [−1, 1].
    pub clip: bool,
}

impl Default for AmbientSampleOptions {
    fn default() -> Self {
        AmbientSampleOptions { edm: EdmOptions::default(), p: 0.0, delta: 0.1, clip: true }
    }
}

/// Elementwise clamp to [lo, hi] (through the host: the sampler runs 36 of these per trajectory, no gradient).
pub fn clip(x: &Tensor, lo: f64, hi: f64) -> Result<Tensor> {
    let v: Vec<f64> = x.to_vec_f64()?.into_iter().map(|v| v.clamp(lo, hi)).collect();
    Tensor::from_f64(&v, x.shape().clone(), x.dtype(), x.device())
}

/// The Ambient sampler around any denoiser: `denoise(Ã ⊙ x, σ, Ã)` with Ã [N, C, H, W] returns the x0
/// estimate. `shape` = [N, C, H, W]. Draws the masks (one per sample, per pixel, shared across channels)
/// from `rng` first, then runs EDM Heun (σ from `edm`: σ_max 80, σ_min 0.002 by default). Returns the
/// samples and the masks Ã [N, 1, H, W].
#[allow(clippy::too_many_arguments)]
pub fn ambient_sample_with(
    edm: &Edm,
    opts: &AmbientSampleOptions,
    shape: [usize; 4],
    dtype: DType,
    device: &Device,
    rng: &mut impl Rng,
    denoise: impl Fn(&Tensor, f64, &Tensor) -> Result<Tensor>,
) -> Result<(Tensor, Tensor)> {
    let [n, c, h, w] = shape;
    if !(0.0..1.0).contains(&opts.p) || !(0.0..1.0).contains(&opts.delta) {
        bail!("ambient_sample: p = {} and δ = {} must lie in [0, 1)", opts.p, opts.delta);
    }
    let keep = (1.0 - opts.p) * (1.0 - opts.delta);
    let mask1 = Tensor::from_f64(&bernoulli(n * h * w, keep, rng), [n, 1, h, w], dtype, device)?;
    let mask = expand_channels(&mask1, c)?;
    let x = no_grad(|| {
        edm_heun_sample(edm, opts.edm, shape, dtype, device, rng, |x, sigma| {
            let d = denoise(&ops::mul(x, &mask)?, sigma, &mask)?;
            if opts.clip {
                clip(&d, -1.0, 1.0)
            } else {
                Ok(d)
            }
        })
    })?;
    Ok((x, mask1))
}

/// Samples `n` images from an Ambient model (network with mask channels). Returns ([N, C, H, W] samples,
/// [N, 1, H, W] masks).
pub fn ambient_sample(
    den: &EdmDenoiser,
    opts: &AmbientSampleOptions,
    n: usize,
    dtype: DType,
    device: &Device,
    rng: &mut impl Rng,
) -> Result<(Tensor, Tensor)> {
    let cfg = &den.net.config;
    let shape = [n, cfg.in_channels, cfg.resolution, cfg.resolution];
    ambient_sample_with(&den.edm, opts, shape, dtype, device, rng, |x, sigma, m| {
        let mask = mask_input(den, Some(m), x)?;
        den.denoise(x, &vec![sigma; n], mask.as_ref(), None)
    })
}

/// Ambient Diffusion as the trainer's objective: a mask-conditioned DDPM++ U-Net with EDM, trained on masked
/// images.
pub struct Ambient;

impl Objective for Ambient {
    /// The paper's: pixels dropped with p = 0.6, no noise.
    fn default_operator(&self, _: usize) -> Option<OpSpec> {
        Some(OpSpec { p: Some(0.6), ..OpSpec::new(OpKind::Pixel) })
    }

    fn check(&self, data: &TrainData, model: &Model, _: &VpSchedule, _: &TrainOptions) -> Result<()> {
        let (d, den) = corrupted_edm("Ambient", data, model)?;
        let (extra, c) = (den.net.config.extra_in_channels, d.dims[1]);
        if !matches!(d.spec.kind, OpKind::Pixel | OpKind::Patch | OpKind::Box) {
            bail!("--loss ambient learns from masked images; this dataset was made with --op {:?}", d.spec.kind);
        }
        if extra != c {
            bail!("--loss ambient feeds the mask as {c} extra input channels; this configuration has {extra} (use tiny-ambient or ambient-celeba64)");
        }
        Ok(())
    }

    /// The fixed-mask sampler at the dataset's drop rate.
    fn sampling(&self, data: &TrainData, _: &TrainOptions) -> Sampling {
        match data {
            TrainData::Corrupted(d) => Sampling::Ambient { p: d.spec.p.unwrap_or(0.0) },
            TrainData::Clean(_) => Sampling::Standard,
        }
    }

    /// The observations and masks of the batch, then (in [`ambient_loss`]'s order) σ, η and B, with EDM's
    /// preconditioning at σ.
    fn draw(&self, step: DrawInputs<'_>, host: &mut HostBatch) -> Result<()> {
        let (d, den) = corrupted_edm("Ambient", step.data, step.model)?;
        let opts = training_options(step.compute);
        let [_, c, h, w] = d.dims;
        let (n, m) = (step.indices.len(), c * h * w);
        host.push_f32("y", [n, c, h, w], &gather(&d.y, m, step.indices))?;
        host.push_f32("a", [n, c, h, w], &gather(&d.mask, m, step.indices))?;
        let sigma = sigmas(n, opts.fixed_sigma, &den.edm, &mut *step.rng)?;
        let eta: Vec<f64> = (0..n * m).map(|_| StandardNormal.sample(&mut *step.rng)).collect();
        let b = further_b([n, c, h, w], step.indices, &opts, &mut *step.rng)?;
        host.push_f64("sigma", [n], &sigma)?;
        host.push_f64("eta", [n, c, h, w], &eta)?;
        host.push_f64("lam", [n], &loss_weights(&den.edm, &sigma, m, &opts))?;
        host.push_f64("b", [n, c, h, w], &b)?;
        super::push_preconditioning(host, "", &den.edm, &sigma)
    }

    fn device_loss(&self, batch: &DeviceBatch, step: LossInputs<'_>) -> Result<Tensor> {
        let (_, den) = corrupted_edm("Ambient", step.data, step.model)?;
        let opts = training_options(step.compute);
        let get = |name: &str| batch.get(name).cloned();
        let p = super::preconditioning(batch, "", step.compute)?;
        let draws = AmbientDraws { sigma: get("sigma")?, eta: get("eta")?, lam: get("lam")?, b: Some(get("b")?) };
        let denoise = |x: &Tensor, m: Option<&Tensor>| {
            let mask = mask_input(den, m, x)?;
            den.denoise_preconditioned(x, &p, mask.as_ref(), step.dropout_seed)
        };
        Ok(ambient_device_loss(denoise, &get("y")?, &get("a")?, &draws, &opts)?.0)
    }
}

/// The trainer's Ambient options at compute dtype `compute`.
fn training_options(compute: DType) -> AmbientOptions {
    AmbientOptions { compute: Some(compute), mean_over_pixels: true, ..AmbientOptions::default() }
}
