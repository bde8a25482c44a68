//! Training objectives for corrupted data (docs/METHODS.md §4): GSURE (observations in spectral coordinates,
//! DDIM U-Net), Ambient Diffusion (masked images, further corruption, EDM) and Ambient-Tweedie (noisy
//! images, double Tweedie plus consistency, EDM), beside the two baselines of plain denoising: the oracle on
//! clean images and the naive one on the observations.
//!
//! Each implements [`Objective`], all the trainer knows of it: the data it trains on by default, what it
//! refuses, how its samples are drawn and the loss of one step. The trainer owns the rest of the step
//! (optimiser, EMA, logging). [`for_loss`] is the one place that maps `--loss` to an objective.
pub mod ambient;
pub mod batch;
pub mod gsure;
pub mod supervised;
pub mod tweedie;
pub mod variance;

pub use batch::{DeviceBatch, HostBatch, Layout};
pub use gsure::{check_config, gsure_step_loss, GsureMode, GsureObjective, Noised, ProbeKind};

use crate::corruption::{CorruptedData, OpSpec};
use crate::diffusion::schedule::VpSchedule;
use crate::nn::TrainSeed;
use crate::nn::{EdmDenoiser, Model};
use crate::train::{LossKind, Sampling, TrainData, TrainOptions};
use crate::{DType, Device, Tensor};
use anyhow::{bail, Result};
use rand::rngs::StdRng;

/// A training objective as the trainer sees it.
pub trait Objective: Send + Sync {
    /// The corruption its paper trains on, applied to the built-in phantoms when no `--data` is given, for a
    /// model that sees `image_channels` channels (2: complex MRI images); None for an objective that learns
    /// from clean images (which also accepts a clean dataset).
    fn default_operator(&self, image_channels: usize) -> Option<OpSpec>;

    /// Refuses data, a model or options it cannot train with, naming the flag and the fix; called before the
    /// run writes anything.
    fn check(&self, data: &TrainData, model: &Model, schedule: &VpSchedule, options: &TrainOptions) -> Result<()>;

    /// How the run's sample grids are drawn, fixed when the run starts.
    fn sampling(&self, _data: &TrainData, _options: &TrainOptions) -> Sampling {
        Sampling::Standard
    }

    /// Reads the batch and makes every draw of the step, in a fixed order, into `batch`: the step's whole
    /// host contribution, which crosses to the device in one copy (batch.rs).
    fn draw(&self, step: DrawInputs<'_>, batch: &mut HostBatch) -> Result<()>;

    /// The loss from the drawn batch, ready for `backward`. It reads nothing else from the host, so it is
    /// the same launches at every step and the trainer can replay it from a CUDA graph.
    fn device_loss(&self, batch: &DeviceBatch, step: LossInputs<'_>) -> Result<Tensor>;
}

/// What an objective's draw reads.
pub struct DrawInputs<'a> {
    /// Dataset indices of the batch.
    pub indices: &'a [usize],
    pub data: &'a TrainData,
    pub model: &'a Model,
    pub schedule: &'a VpSchedule,
    pub options: &'a TrainOptions,
    /// The step's generator, seeded from (seed, step): every draw of the step comes from it, in a fixed order.
    pub rng: &'a mut StdRng,
    /// What the network computes in (the loss and the master weights stay f32; GSURE sizes its
    /// finite-difference step by it).
    pub compute: DType,
}

/// What an objective's device loss reads besides its batch.
pub struct LossInputs<'a> {
    /// The dataset, for what is fixed for the run (its operator family), never for the step's values.
    pub data: &'a TrainData,
    pub model: &'a Model,
    pub options: &'a TrainOptions,
    /// Turns dropout on.
    pub dropout_seed: Option<TrainSeed>,
    /// What the network computes in (the loss and the master weights stay f32).
    pub compute: DType,
}

/// One step's loss outside the trainer: the objective's draw, its batch sent to `device` (in one copy, from
/// pageable memory), and the device loss; `dropout_seed` turns dropout on.
pub fn step_loss(
    objective: &dyn Objective,
    draw: DrawInputs<'_>,
    device: &Device,
    dropout_seed: Option<TrainSeed>,
) -> Result<Tensor> {
    let (data, model, options, compute) = (draw.data, draw.model, draw.options, draw.compute);
    let mut host = HostBatch::new();
    objective.draw(draw, &mut host)?;
    let batch = host.to_device(device)?;
    objective.device_loss(&batch, LossInputs { data, model, options, dropout_seed, compute })
}

/// Draws EDM's preconditioning at `sigma` into the batch, for [`preconditioning`] on the device side; `at`
/// names the evaluation when a loss runs the network at several noise levels ("" when it runs it at one).
fn push_preconditioning(host: &mut HostBatch, at: &str, edm: &crate::diffusion::Edm, sigma: &[f64]) -> Result<()> {
    for (name, column) in PRECONDITIONING.into_iter().zip(edm.precond_columns(sigma)) {
        host.push_f64(&format!("{at}{name}"), [sigma.len()], &column)?;
    }
    Ok(())
}

/// The batch's preconditioning `at` from [`push_preconditioning`]: c_in, c_skip, c_out in `compute`, c_noise
/// f32.
fn preconditioning(batch: &DeviceBatch, at: &str, compute: DType) -> Result<crate::nn::Preconditioning> {
    let [c_in, c_skip, c_out, c_noise] = PRECONDITIONING.map(|name| batch.get(&format!("{at}{name}")).cloned());
    Ok(crate::nn::Preconditioning {
        c_in: c_in?.to_dtype(compute)?,
        c_skip: c_skip?.to_dtype(compute)?,
        c_out: c_out?.to_dtype(compute)?,
        c_noise: c_noise?,
    })
}

/// The batch entries of EDM's preconditioning, in `Edm::precond_columns` order.
const PRECONDITIONING: [&str; 4] = ["c_in", "c_skip", "c_out", "c_noise"];

/// The objective `--loss` names.
pub fn for_loss(loss: LossKind) -> Box<dyn Objective> {
    match loss {
        LossKind::Supervised => Box::new(supervised::Supervised),
        LossKind::Naive => Box::new(supervised::Naive),
        LossKind::Gsure => Box::new(gsure::Gsure),
        LossKind::Ambient => Box::new(ambient::Ambient),
        LossKind::Tweedie => Box::new(tweedie::Tweedie),
    }
}

/// The rows `indices` of `values`, `per_item` values each.
fn gather(values: &[f32], per_item: usize, indices: &[usize]) -> Vec<f32> {
    indices.iter().flat_map(|&i| values[i * per_item..(i + 1) * per_item].iter().copied()).collect()
}

/// The corrupted dataset and the EDM denoiser that Ambient and Tweedie (`name`, as `--loss` prints it in
/// these messages) train.
fn corrupted_edm<'a>(
    name: &str,
    data: &'a TrainData,
    model: &'a Model,
) -> Result<(&'a CorruptedData, &'a EdmDenoiser)> {
    let TrainData::Corrupted(d) = data else {
        bail!("--loss {name} trains on corrupted observations: pass --data FILE made by `gsure data make`");
    };
    let Model::Edm(den) = model else {
        bail!(
            "--loss {name} trains the DDPM++ U-Net with EDM; choose an EDM configuration (tiny-ambient, tiny-edm, ...)"
        );
    };
    Ok((d, den))
}
