//! The two baselines of plain denoising (docs/METHODS.md §4.1): the oracle ([`Supervised`]) on clean images,
//! and the naive baseline ([`Naive`]) on the zero-filled observations H† y as if they were clean. Both
//! train with the denoising loss of the model's family: VP for the DDIM U-Net, EDM for the DDPM++ U-Net.
use super::{gather, DeviceBatch, DrawInputs, HostBatch, LossInputs, Objective};
use crate::corruption::{OpKind, OpSpec};
use crate::data::ImageSet;
use crate::diffusion::schedule::VpSchedule;
use crate::nn::{Model, Prediction};
use crate::train::{TrainData, TrainOptions};
use crate::{ops, DType, Device, Tensor};
use anyhow::{bail, Context, Result};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

/// Plain denoising on clean images: with a corrupted dataset, on the file's clean images, which only the
/// oracle may see.
pub struct Supervised;

impl Objective for Supervised {
    fn default_operator(&self, _: usize) -> Option<OpSpec> {
        None
    }

    /// Whether the dataset holds clean images is found out at the first step.
    fn check(&self, _: &TrainData, _: &Model, _: &VpSchedule, _: &TrainOptions) -> Result<()> {
        Ok(())
    }

    fn draw(&self, step: DrawInputs<'_>, batch: &mut HostBatch) -> Result<()> {
        let images = clean(step.data, step.indices)?;
        draw_denoising(&images, step, batch)
    }

    fn device_loss(&self, batch: &DeviceBatch, step: LossInputs<'_>) -> Result<Tensor> {
        denoising_loss(batch, step)
    }
}

/// Plain denoising on the zero-filled observations.
pub struct Naive;

impl Objective for Naive {
    /// GSURE's operator: the naive baseline is GSURE's comparison on the same data.
    fn default_operator(&self, image_channels: usize) -> Option<OpSpec> {
        super::gsure::Gsure.default_operator(image_channels)
    }

    /// Whether the data is corrupted is found out at the first step.
    fn check(&self, _: &TrainData, _: &Model, _: &VpSchedule, _: &TrainOptions) -> Result<()> {
        Ok(())
    }

    fn draw(&self, step: DrawInputs<'_>, batch: &mut HostBatch) -> Result<()> {
        let images = observed(step.data, step.indices)?;
        draw_denoising(&images, step, batch)
    }

    fn device_loss(&self, batch: &DeviceBatch, step: LossInputs<'_>) -> Result<Tensor> {
        denoising_loss(batch, step)
    }
}

/// The zero-filled observations H† y of `indices` in image space: the observations themselves for
/// pixel-basis operators, and the inverse FFT of the zero-filled k-space (the aliased complex image) for MRI.
fn observed(data: &TrainData, indices: &[usize]) -> Result<Vec<f32>> {
    let TrainData::Corrupted(d) = data else {
        bail!("--loss naive trains on corrupted observations: pass --data FILE");
    };
    let y = gather(&d.y, d.dims[1] * d.dims[2] * d.dims[3], indices);
    if d.spec.kind != OpKind::Mri {
        return Ok(y);
    }
    let k = Tensor::from_f32(&y, [indices.len(), d.dims[1], d.dims[2], d.dims[3]], &Device::Cpu)?;
    crate::no_grad(|| ops::fft::ifft2c(&k))?.to_vec_f32()
}

/// The clean images of `indices`.
fn clean(data: &TrainData, indices: &[usize]) -> Result<Vec<f32>> {
    let d = match data {
        TrainData::Clean(d) => return Ok(d.gather(indices)),
        TrainData::Corrupted(d) => d,
    };
    let Some((values, dims)) = &d.clean else {
        bail!("--loss supervised needs clean images, and this corrupted dataset has none");
    };
    let picked = gather(values, dims[1] * dims[2] * dims[3], indices);
    // MRI observes real images through complex k-space: the oracle learns them as complex images.
    let images = ImageSet { images: picked, dims: [indices.len(), dims[1], dims[2], dims[3]] };
    let images = images.for_model_channels(d.dims[1]).with_context(|| {
        format!("--loss supervised: the clean images {dims:?} do not match the observations {:?}", d.dims)
    })?;
    if images.dims[2..] != d.dims[2..] {
        bail!("--loss supervised: the clean images {dims:?} do not match the observations {:?}", d.dims);
    }
    Ok(images.images)
}

/// Draws the denoising loss's noise for `images` [B, C, H, W] as x0: ε, then per example the VP timestep
/// (with √ᾱ_t, √(1−ᾱ_t)) or the EDM noise level (with its preconditioning and loss weight).
fn draw_denoising(images: &[f32], step: DrawInputs<'_>, batch: &mut HostBatch) -> Result<()> {
    let [_, c, h, w] = step.data.dims();
    let b = step.indices.len();
    let rng = step.rng;
    batch.push_f32("x0", [b, c, h, w], images)?;
    let eps: Vec<f64> = (0..b * c * h * w).map(|_| StandardNormal.sample(&mut *rng)).collect();
    batch.push_f64("eps", [b, c, h, w], &eps)?;
    match step.model {
        Model::Ddim(_) => {
            let schedule = step.schedule;
            let ts: Vec<usize> = (0..b).map(|_| rng.random_range(0..schedule.steps())).collect();
            let ab: Vec<f64> = ts.iter().map(|&t| schedule.alpha_bar(t)).collect();
            batch.push_f64("sqrt_ab", [b], &ab.iter().map(|a| a.sqrt()).collect::<Vec<_>>())?;
            batch.push_f64("sqrt_1m_ab", [b], &ab.iter().map(|a| (1.0 - a).sqrt()).collect::<Vec<_>>())?;
            batch.push_f64("t", [b], &ts.iter().map(|&t| t as f64).collect::<Vec<_>>())?;
        }
        Model::Edm(den) => {
            let sigma: Vec<f64> = (0..b).map(|_| den.edm.sample_sigma(&mut *rng)).collect();
            batch.push_f64("sigma", [b], &sigma)?;
            super::push_preconditioning(batch, "", &den.edm, &sigma)?;
            let m = (c * h * w) as f64;
            let weights: Vec<f64> = sigma.iter().map(|&s| den.edm.loss_weight(s) / (m * b as f64)).collect();
            batch.push_f64("weight", [b], &weights)?;
        }
    }
    Ok(())
}

/// The denoising loss of the model's family on a batch from [`draw_denoising`].
fn denoising_loss(batch: &DeviceBatch, step: LossInputs<'_>) -> Result<Tensor> {
    let (compute, dropout_seed) = (step.compute, step.dropout_seed);
    let (x0, eps) = (batch.get("x0")?, batch.get("eps")?);
    let [b, _, h, w] = x0.dims() else { bail!("denoising loss: x0 of shape {} is not [B, C, H, W]", x0.shape()) };
    let (b, h, w) = (*b, *h, *w);
    match step.model {
        // VP: x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε, plain MSE against x0 or ε.
        Model::Ddim(net) => {
            let x_t = ops::add(
                &ops::mul_along(x0, batch.get("sqrt_ab")?, 0)?,
                &ops::mul_along(eps, batch.get("sqrt_1m_ab")?, 0)?,
            )?;
            let pred = net.forward(&x_t.to_dtype(compute)?, batch.get("t")?, dropout_seed)?.to_dtype(DType::F32)?;
            let target = match net.config.prediction {
                Prediction::X0 => x0,
                Prediction::Eps => eps,
            };
            ops::mean_all(&ops::square(&ops::sub(&pred, target)?)?)
        }
        // EDM: x_t = x0 + σ n with ln σ ~ N(P_mean, P_std²); loss λ(σ) · mean over pixels of (D − x0)²,
        // averaged over the batch (EDM sums over pixels; the constant factor does not matter to Adam).
        Model::Edm(den) => {
            let x_t = ops::add(x0, &ops::mul_along(eps, batch.get("sigma")?, 0)?)?;
            let extra = den.net.config.extra_in_channels;
            // Clean data is fully observed: the mask channels (if any) are all ones.
            let device = x0.device();
            let mask = if extra > 0 { Some(Tensor::full([b, extra, h, w], 1.0, compute, device)?) } else { None };
            let p = super::preconditioning(batch, "", compute)?;
            let d = den.denoise_preconditioned(&x_t.to_dtype(compute)?, &p, mask.as_ref(), dropout_seed)?;
            let sq = ops::sum_per_example(&ops::square(&ops::sub(&d.to_dtype(DType::F32)?, x0)?)?)?;
            ops::sum_all(&ops::mul(&sq, batch.get("weight")?)?)
        }
    }
}
