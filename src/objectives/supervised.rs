//! The two baselines of plain denoising (docs/METHODS.md §4.1): the oracle ([`Supervised`]) on clean images,
//! and the naive baseline ([`Naive`]) on the zero-filled observations H† y as if they were clean. Both
//! train with the denoising loss of the model's family: VP for the DDIM U-Net, EDM for the DDPM++ U-Net.
use super::{gather, Objective, StepInputs};
use crate::corruption::{OpKind, OpSpec};
use crate::data::ImageSet;
use crate::diffusion::schedule::VpSchedule;
use crate::nn::{Model, Prediction};
use crate::train::{TrainData, TrainOptions};
use crate::{ops, DType, Device, Tensor};
use anyhow::{bail, Context, Result};
use rand::Rng;

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

    fn loss(&self, step: StepInputs<'_>) -> Result<Tensor> {
        let images = clean(step.data, step.indices)?;
        denoising_loss(&images, step)
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

    fn loss(&self, step: StepInputs<'_>) -> Result<Tensor> {
        let images = observed(step.data, step.indices)?;
        denoising_loss(&images, step)
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

/// The denoising loss of the model's family with `images` [B, C, H, W] as x0.
fn denoising_loss(images: &[f32], mut step: StepInputs<'_>) -> Result<Tensor> {
    let [_, c, h, w] = step.data.dims();
    let b = step.indices.len();
    let (device, compute, dropout_seed) = (step.device, step.compute, step.dropout_seed);
    let x0 = Tensor::from_f32(images, [b, c, h, w], device)?;
    let eps = Tensor::randn([b, c, h, w], DType::F32, device, &mut *step.rng)?;
    step.phase.objective();
    let rng = step.rng;
    match step.model {
        // VP: x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε, plain MSE against x0 or ε.
        Model::Ddim(net) => {
            let schedule = step.schedule;
            let ts: Vec<usize> = (0..b).map(|_| rng.random_range(0..schedule.steps())).collect();
            let coef = |f: &dyn Fn(f64) -> f64| -> Result<Tensor> {
                let v: Vec<f32> = ts.iter().map(|&t| f(schedule.alpha_bar(t)) as f32).collect();
                Tensor::from_f32(&v, [b], device)
            };
            let x_t = ops::add(
                &ops::mul_along(&x0, &coef(&|a| a.sqrt())?, 0)?,
                &ops::mul_along(&eps, &coef(&|a| (1.0 - a).sqrt())?, 0)?,
            )?;
            let t = Tensor::from_f32(&ts.iter().map(|&t| t as f32).collect::<Vec<_>>(), [b], device)?;
            let pred = net.forward(&x_t.to_dtype(compute)?, &t, dropout_seed)?.to_dtype(DType::F32)?;
            let target = match net.config.prediction {
                Prediction::X0 => &x0,
                Prediction::Eps => &eps,
            };
            ops::mean_all(&ops::square(&ops::sub(&pred, target)?)?)
        }
        // EDM: x_t = x0 + σ n with ln σ ~ N(P_mean, P_std²); loss λ(σ) · mean over pixels of (D − x0)²,
        // averaged over the batch (EDM sums over pixels; the constant factor does not matter to Adam).
        Model::Edm(den) => {
            let sigma: Vec<f64> = (0..b).map(|_| den.edm.sample_sigma(&mut *rng)).collect();
            let per_example = |v: Vec<f64>| Tensor::from_f64(&v, [b], DType::F32, device);
            let x_t = ops::add(&x0, &ops::mul_along(&eps, &per_example(sigma.clone())?, 0)?)?;
            let extra = den.net.config.extra_in_channels;
            // Clean data is fully observed: the mask channels (if any) are all ones.
            let mask = if extra > 0 { Some(Tensor::full([b, extra, h, w], 1.0, compute, device)?) } else { None };
            let d = den.denoise(&x_t.to_dtype(compute)?, &sigma, mask.as_ref(), dropout_seed)?.to_dtype(DType::F32)?;
            let sq = ops::sum_per_example(&ops::square(&ops::sub(&d, &x0)?)?)?;
            let m = (c * h * w) as f64;
            let weights = per_example(sigma.iter().map(|&s| den.edm.loss_weight(s) / (m * b as f64)).collect())?;
            ops::sum_all(&ops::mul(&sq, &weights)?)
        }
    }
}
