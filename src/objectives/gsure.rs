//! GSURE training from corrupted data (Kawar, Elata, Michaeli, Elad; docs/METHODS.md §4.2).
//!
//! Per example, with ᾱ = ᾱ_t, s² = (1−ᾱ)/ᾱ and the spectral view (ȳ, O, ν, W²) of its observation:
//!
//! * top-up noising: x̄_t,i = √ᾱ (ȳ_i + √(s² − ν_i) ε_i) on O and √(1−ᾱ) ε_i off O, so that
//!   x̄_t | x̄ ~ N(√ᾱ P x̄, (1−ᾱ) I) exactly as if clean data had been noised and then projected;
//! * loss L = (1/n) Σ_{i∈O} W²_i (D_i − r_i)² + (1/n) Σ_{i∈O} c_i ∂_iD_i with, for the three modes,
//!   `ybar`: r = ȳ, c_i = 2√ᾱ W²_i ν_i; `xt`: r = x̄_t/√ᾱ, c_i = 2(1−ᾱ)/√ᾱ W²_i;
//!   `reference`: r = ȳ, c_i = 2(1−ᾱ) Λ W²_i (Λ = 1e-4; the official code, biased);
//! * divergence by Hutchinson's estimator with a probe b supported on O and a forward finite difference,
//!   Σ_i c_i ∂_iD_i ≈ Σ_i c_i b_i (D_i(x̄_t + ε b) − D_i(x̄_t)) / ε, the perturbed pass batched with the
//!   clean one (2N examples through the network in one forward).
//!
//! The same formulas hold in the Fourier basis (MRI): there x̄ = F x lives in k-space and the network is
//! wrapped as F ∘ U-Net ∘ F⁻¹ (`ops::fft`).
//!
//! The fused op [`crate::ops::gsure_loss::gsure_loss`] turns both outputs into the per-example losses and,
//! in backward, both output gradients.
//!
//! **Choice of ε.** ε_n = max(ε0 · √(1−ᾱ_t), ε_min). The network's input noise has standard deviation
//! √(1−ᾱ_t) per coordinate and a denoiser's Jacobian changes on that scale, so a step proportional to it
//! keeps the relative truncation error of the difference the same at every t. For a symmetric probe
//! (Gaussian or Rademacher) the third moments E[b_i b_j b_k] vanish, so the forward difference's O(ε) term
//! has mean zero: the bias is O(ε²) and the O(ε) term only adds variance. The lower bound on ε comes from
//! the working precision: D(x̄+εb) − D(x̄) carries the rounding of two network evaluations (≈ 1e-7 relative
//! in f32, ≈ 4e-3 in bf16, and the input x̄_t + εb is itself rounded to the working dtype before the
//! network sees it), divided by ε. Measured numbers: docs/gsure-divergence.md.
use super::{DeviceBatch, DrawInputs, HostBatch, LossInputs, Objective};
use crate::corruption::{Basis, CorruptedData, OpKind, OpSpec, SpectralBatch};
use crate::diffusion::schedule::VpSchedule;
use crate::nn::TrainSeed;
use crate::nn::{DdimUnet, Model, Prediction};
use crate::ops::gsure_loss::{gsure_loss, Coefs, GsureCoefs};
use crate::ops::{self, layout};
use crate::train::{TrainData, TrainOptions};
use crate::{DType, Device, Tensor};
use anyhow::{bail, Result};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// Which unbiased (or reference) form of the GSURE loss (`--gsure-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum GsureMode {
    /// r = ȳ, c_i = 2√ᾱ_t W²_i ν_i: unbiased, lowest variance, no divergence at σ0 = 0.
    #[default]
    Ybar,
    /// r = x̄_t/√ᾱ_t, c_i = 2(1−ᾱ_t)/√ᾱ_t · W²_i: the paper's equation, unbiased.
    Xt,
    /// r = ȳ, c_i = 2(1−ᾱ_t) Λ W²_i: the official code, biased; for comparison only.
    Reference,
}

/// The distribution of the Hutchinson probe on O (zero off O).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// b_i = ±1: the lower-variance choice (no Σ_i J_ii² b_i⁴ term).
    #[default]
    Rademacher,
    Gaussian,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GsureObjective {
    pub mode: GsureMode,
    pub probe: ProbeKind,
    /// ε_n = max(eps0 · √(1−ᾱ_t), eps_min).
    pub eps0: f64,
    pub eps_min: f64,
    /// Λ of the `reference` mode.
    pub lambda_ref: f64,
    /// One 2N-example forward for the clean and perturbed inputs (true), or two N-example forwards (false:
    /// needed when the network is stochastic per batch position, e.g. dropout masks hashed from the flat
    /// element index, which would differ between the two halves of a 2N batch).
    pub batched: bool,
    /// The divergence is estimated for 1 example in `div_every` (the first ⌈N/div_every⌉ of the batch, whose
    /// divergence coefficients are scaled by N/⌈N/div_every⌉; the rest get none): the perturbed pass then
    /// costs ⌈N/div_every⌉ examples instead of N. Unbiased, since a batch is a random sample in random order;
    /// it trades the divergence term's variance, which is negligible where it was measured
    /// (experiments/RESULTS.md (i)), for compute. 1: every example.
    #[serde(default = "every_example")]
    pub div_every: usize,
}

fn every_example() -> usize {
    1
}

impl Default for GsureObjective {
    fn default() -> Self {
        GsureObjective::for_dtype(GsureMode::Ybar, DType::F32)
    }
}

impl GsureObjective {
    /// The defaults for a network computing in `dtype` (see the module doc and docs/gsure-divergence.md):
    /// f32/f64: ε = 1e-2 · √(1−ᾱ_t), at least 1e-4; bf16: ε = 0.1 · √(1−ᾱ_t), at least 2e-2 (bf16 keeps 8
    /// significant bits, so a smaller step drowns in the rounding of the input and output).
    pub fn for_dtype(mode: GsureMode, dtype: DType) -> Self {
        let (eps0, eps_min) = match dtype {
            DType::BF16 => (0.1, 2e-2),
            _ => (1e-2, 1e-4),
        };
        GsureObjective {
            mode,
            probe: ProbeKind::Rademacher,
            eps0,
            eps_min,
            lambda_ref: 1e-4,
            batched: true,
            div_every: 1,
        }
    }

    /// The finite-difference step at ᾱ_t.
    pub fn eps(&self, alpha_bar: f64) -> f64 {
        (self.eps0 * (1.0 - alpha_bar).sqrt()).max(self.eps_min)
    }

    /// α_n of c_i = α_n · W²_i · (ν_i in `ybar` mode, 1 otherwise).
    pub fn alpha(&self, alpha_bar: f64) -> f64 {
        match self.mode {
            GsureMode::Ybar => 2.0 * alpha_bar.sqrt(),
            GsureMode::Xt => 2.0 * (1.0 - alpha_bar) / alpha_bar.sqrt(),
            GsureMode::Reference => 2.0 * (1.0 - alpha_bar) * self.lambda_ref,
        }
    }

    /// How many examples of a batch of `n` get a divergence estimate (the first ones).
    pub fn div_rows(&self, n: usize) -> usize {
        n.div_ceil(self.div_every.max(1))
    }

    /// Whether ν enters the divergence coefficient (the `ybar` mode).
    pub fn uses_nu(&self) -> bool {
        self.mode == GsureMode::Ybar
    }

    /// Everything the loss needs besides the network: the top-up noised input, its perturbation, the target,
    /// the probe and the per-example coefficients. Refuses (never a NaN) an example with s_t² < ν_i.
    pub fn prepare(
        &self,
        batch: &SpectralBatch,
        schedule: &VpSchedule,
        t: &[usize],
        rng: &mut impl Rng,
    ) -> Result<Noised> {
        let shape = batch.ybar.shape().clone();
        for (name, x) in [("observed", &batch.observed), ("nu", &batch.nu), ("w2", &batch.w2)] {
            batch.ybar.check_same(x, &format!("gsure (ybar against {name})"))?;
        }
        if shape.rank() == 0 || shape.numel() == 0 {
            bail!("gsure: expected a non-empty batch [N, ...], got shape {shape}");
        }
        let n = shape.dim(0);
        let m = shape.numel() / n;
        if t.len() != n {
            bail!("gsure: {} timesteps for a batch of {n} (shape {shape})", t.len());
        }
        if let Some(&bad) = t.iter().find(|&&t| t >= schedule.steps()) {
            bail!("gsure: timestep {bad} out of range for a schedule of {} steps", schedule.steps());
        }
        let (dtype, device) = (batch.ybar.dtype(), batch.ybar.device().clone());
        let ybar = batch.ybar.to_vec_f64()?;
        let obs = batch.observed.to_vec_f64()?;
        let nu = batch.nu.to_vec_f64()?;
        let (mut xt, mut xe, mut probe) = (vec![0.0; n * m], vec![0.0; n * m], vec![0.0; n * m]);
        let mut target = if self.mode == GsureMode::Xt { vec![0.0; n * m] } else { Vec::new() };
        let (mut alpha, mut eps) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for (row, &tn) in t.iter().enumerate() {
            let ab = schedule.alpha_bar(tn);
            let s2 = schedule.snr_inverse(tn);
            let (sab, s1ab) = (ab.sqrt(), (1.0 - ab).sqrt());
            let e = self.eps(ab);
            for i in row * m..(row + 1) * m {
                let z: f64 = StandardNormal.sample(rng);
                if obs[i] > 0.5 {
                    if s2 < nu[i] {
                        bail!(
                            "gsure: at t = {tn}, s_t² = (1−ᾱ_t)/ᾱ_t = {s2:.4e} is below the observation noise \
                             variance ν = {:.4e}, so the top-up noise √(s_t² − ν) does not exist; set β_start ≥ σ0² \
                             (check_config refuses this before training)",
                            nu[i]
                        );
                    }
                    xt[i] = sab * (ybar[i] + (s2 - nu[i]).sqrt() * z);
                    probe[i] = match self.probe {
                        ProbeKind::Gaussian => StandardNormal.sample(rng),
                        ProbeKind::Rademacher => {
                            if rng.random::<bool>() {
                                1.0
                            } else {
                                -1.0
                            }
                        }
                    };
                } else {
                    xt[i] = s1ab * z;
                }
                xe[i] = xt[i] + e * probe[i];
                if self.mode == GsureMode::Xt {
                    target[i] = xt[i] / sab;
                }
            }
            alpha.push(self.alpha(ab));
            eps.push(e);
        }
        // Divergence on the first `s` examples only (see `div_every`): the others keep their draws (so the
        // noise is that of the full estimator) but get no probe, and the first ones' weight grows by n / s.
        let s = self.div_rows(n);
        if s < n {
            for (row, a) in alpha.iter_mut().enumerate() {
                *a = if row < s { *a * n as f64 / s as f64 } else { 0.0 };
            }
            for i in s * m..n * m {
                probe[i] = 0.0;
                xe[i] = xt[i];
            }
        }
        let up = |v: &[f64]| Tensor::from_f64(v, shape.clone(), dtype, &device);
        let tv: Vec<f64> = t.iter().map(|&t| t as f64).collect();
        Ok(Noised {
            xt: up(&xt)?,
            xt_eps: up(&xe)?,
            target: if self.mode == GsureMode::Xt { up(&target)? } else { batch.ybar.clone() },
            probe: up(&probe)?,
            // Timesteps stay f32 (bf16 cannot hold 999), as the U-Net expects.
            t: Tensor::from_f64(&tv, [n], if dtype == DType::F64 { DType::F64 } else { DType::F32 }, &device)?,
            coefs: GsureCoefs::new(&alpha, &eps)?.into(),
            eps,
        })
    }

    /// The per-example GSURE losses [N] of `net` (x0 prediction: `net(x, t)` with t as [N] floats) on `batch`
    /// at timesteps `t`.
    pub fn loss_per_example(
        &self,
        net: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>,
        batch: &SpectralBatch,
        schedule: &VpSchedule,
        t: &[usize],
        rng: &mut impl Rng,
    ) -> Result<Tensor> {
        let p = self.prepare(batch, schedule, t, rng)?;
        self.loss_per_example_prepared(net, batch, &p)
    }

    /// [`Self::loss_per_example`] for draws already made by [`Self::prepare`] (on the host, say, and moved to
    /// the network's device with the batch).
    pub fn loss_per_example_prepared(
        &self,
        net: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>,
        batch: &SpectralBatch,
        p: &Noised,
    ) -> Result<Tensor> {
        let (d, d_eps) = match batch.basis {
            Basis::Pixel => self.both_outputs(net, p)?,
            // The diffusion state lives in k-space; the network runs in image space: F ∘ U-Net ∘ F⁻¹ (F unitary,
            // so the white top-up noise in k-space is white in image space too).
            Basis::Fourier => {
                let wrapped = |x: &Tensor, tt: &Tensor| ops::fft::fft2c(&net(&ops::fft::ifft2c(x)?, tt)?);
                self.both_outputs(&wrapped, p)?
            }
        };
        let dtype = batch.ybar.dtype();
        let nu = if self.uses_nu() { Some(&batch.nu) } else { None };
        gsure_loss(
            &d.to_dtype(dtype)?,
            &d_eps.to_dtype(dtype)?,
            &p.target,
            &batch.observed,
            &batch.w2,
            nu,
            &p.probe,
            &p.coefs,
        )
    }

    /// The batch mean of [`Self::loss_per_example`], shape [1].
    pub fn loss(
        &self,
        net: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>,
        batch: &SpectralBatch,
        schedule: &VpSchedule,
        t: &[usize],
        rng: &mut impl Rng,
    ) -> Result<Tensor> {
        ops::mean_all(&self.loss_per_example(net, batch, schedule, t, rng)?)
    }

    /// (D(x̄_t), D(x̄_t + ε b)): one forward of the N + s concatenation (s = [`Self::div_rows`]), or two
    /// forwards when not `batched`. Beyond the first s examples D(x̄_t + ε b) is D(x̄_t) itself (no probe there).
    pub fn both_outputs(
        &self,
        net: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>,
        p: &Noised,
    ) -> Result<(Tensor, Tensor)> {
        let n = p.xt.dims()[0];
        let s = self.div_rows(n);
        let (xe, te) =
            if s == n { (p.xt_eps.clone(), p.t.clone()) } else { (rows(&p.xt_eps, 0, s)?, rows(&p.t, 0, s)?) };
        let (d, d_eps_s) = if self.batched {
            let out = net(&cat_batch(&p.xt, &xe)?, &cat_batch(&p.t, &te)?)?;
            (rows(&out, 0, n)?, rows(&out, n, s)?)
        } else {
            (net(&p.xt, &p.t)?, net(&xe, &te)?)
        };
        if s == n {
            return Ok((d, d_eps_s));
        }
        let d_eps = cat_batch(&d_eps_s, &rows(&d, s, n - s)?)?;
        Ok((d, d_eps))
    }
}

/// What [`GsureObjective::prepare`] draws for one step (all [N, ...] in the batch's dtype and device, except
/// `t`: [N] in f32, or f64 for an f64 batch).
pub struct Noised {
    /// x̄_t (top-up noised observations).
    pub xt: Tensor,
    /// x̄_t + ε_n b.
    pub xt_eps: Tensor,
    /// r: ȳ (`ybar`, `reference`) or x̄_t/√ᾱ_t (`xt`).
    pub target: Tensor,
    /// b, zero off O.
    pub probe: Tensor,
    pub t: Tensor,
    pub coefs: Coefs,
    /// ε_n per example (empty when rebuilt on the device from a staged batch, which needs only `coefs`).
    pub eps: Vec<f64>,
}

impl Noised {
    /// The same draws on `device` (one upload per tensor; the tensors themselves when already there).
    pub fn to_device(&self, device: &Device) -> Result<Noised> {
        Ok(Noised {
            xt: self.xt.to_device(device)?,
            xt_eps: self.xt_eps.to_device(device)?,
            target: self.target.to_device(device)?,
            probe: self.probe.to_device(device)?,
            t: self.t.to_device(device)?,
            coefs: self.coefs.clone(),
            eps: self.eps.clone(),
        })
    }
}

/// Concatenation along the batch axis: [N, ...] and [N', ...] viewed as [1, N, M] and [1, N', M], joined on
/// axis 1 by `concat_channels` (whose row count is then 1) and viewed back as [N + N', ...].
pub fn cat_batch(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (na, nb) = (a.dims().first().copied().unwrap_or(0), b.dims().first().copied().unwrap_or(0));
    if a.dims().get(1..) != b.dims().get(1..) || na == 0 || nb == 0 {
        bail!("cat_batch: shapes {} and {} do not agree beyond the batch axis", a.shape(), b.shape());
    }
    let m = a.numel() / na;
    let joined = layout::concat_channels(&[&a.reshape(vec![1, na, m])?, &b.reshape(vec![1, nb, m])?])?;
    let mut dims = a.dims().to_vec();
    dims[0] = na + nb;
    joined.reshape(dims)
}

/// Examples `start..start + len` of x [N, ...] (gradients flow back).
pub fn rows(x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    let n = x.dims().first().copied().unwrap_or(0);
    if start + len > n || len == 0 {
        bail!("rows: examples {start}..{} of a batch of {n} (shape {})", start + len, x.shape());
    }
    let m = x.numel() / n;
    let mut dims = x.dims().to_vec();
    dims[0] = len;
    layout::narrow_channels(&x.reshape(vec![1, n, m])?, start, len)?.reshape(dims)
}

/// The inverse of [`cat_batch`] for two halves: x [2N, ...] → ([N, ...], [N, ...]) (gradients flow back).
pub fn split_batch(x: &Tensor, n: usize) -> Result<(Tensor, Tensor)> {
    if x.shape().rank() == 0 || x.dims()[0] != 2 * n || n == 0 {
        bail!("split_batch: shape {} is not two halves of {n} examples", x.shape());
    }
    Ok((rows(x, 0, n)?, rows(x, n, n)?))
}

/// Refuses a schedule under which the top-up noise would not exist: s_t² = (1−ᾱ_t)/ᾱ_t must be at least
/// the largest observation noise variance `max_nu` (= σ0² / min s_i²; σ0² for inpainting and denoising) at
/// every trained t ≥ `t_min`. Call before training starts.
pub fn check_config(schedule: &VpSchedule, max_nu: f64, t_min: usize) -> Result<()> {
    if !(max_nu.is_finite() && max_nu >= 0.0) {
        bail!("gsure: the observation noise variance must be finite and non-negative, got ν = {max_nu}");
    }
    if t_min >= schedule.steps() {
        bail!("gsure: t_min = {t_min} leaves no timestep of a {}-step schedule to train", schedule.steps());
    }
    if let Some(t) = (t_min..schedule.steps()).find(|&t| schedule.snr_inverse(t) < max_nu) {
        let first_ok = (t..schedule.steps()).find(|&t| schedule.snr_inverse(t) >= max_nu);
        bail!(
            "gsure: configuration error: at t = {t} the diffusion noise s_t² = (1−ᾱ_t)/ᾱ_t = {:.4e} is below the \
             observation noise variance ν = {max_nu:.4e} (β_start = {:.4e} < σ0² = {max_nu:.4e}), so the top-up \
             noise √(s_t² − ν) does not exist. Fix: set --beta-start to at least σ0² (the GSURE paper sets \
             β_start = σ0²){}",
            schedule.snr_inverse(t),
            schedule.betas[0],
            match first_ok {
                Some(ok) => format!(", or train only at t ≥ {ok}"),
                None => String::new(),
            }
        );
    }
    Ok(())
}

/// The scalar GSURE loss of one training step of a DDIM U-Net, for the trainer's `--loss gsure`:
/// t_n uniform in [t_min, T), one top-up noising and probe per example drawn from `rng` (the step's
/// generator), the network run in `compute` (f32 or bf16; its output is taken back to the batch's dtype),
/// ε-prediction networks turned into x0 predictions x̂0 = (x̄_t − √(1−ᾱ_t) ε̂)/√ᾱ_t, and the batch mean
/// of the per-example losses. `dropout_seed` turns dropout on; since the dropout mask is hashed from the flat
/// element index, the clean and perturbed passes then run as two N-example forwards with the same seed
/// (identical masks) instead of one 2N forward. Call [`check_config`] once before training.
///
/// The draws are made on the host (`batch` must be there) and sent to `device` in one upload with the batch
/// (a [`HostBatch`]), with nothing read back: the trainer's staged step makes the same draw and the same
/// device loss ([`draw_step`], [`device_step_loss`]).
#[allow(clippy::too_many_arguments)]
pub fn gsure_step_loss(
    net: &DdimUnet,
    objective: &GsureObjective,
    batch: &SpectralBatch,
    schedule: &VpSchedule,
    t_min: usize,
    rng: &mut impl Rng,
    dropout_seed: Option<TrainSeed>,
    compute: DType,
    device: &Device,
) -> Result<Tensor> {
    let mut obj = objective.clone();
    if dropout_seed.is_some() && net.config.dropout > 0.0 {
        obj.batched = false;
    }
    let mut host = HostBatch::new();
    draw_step(net, &obj, batch, schedule, t_min, rng, &mut host)?;
    device_step_loss(net, &obj, batch.basis, &host.to_device(device)?, dropout_seed, compute)
}

/// The host side of a GSURE step on the host batch `batch` (f32): the timesteps, the objective's draws
/// ([`GsureObjective::prepare`]) and, for ε-prediction, the per-example coefficients of x̂0, into `host`.
pub fn draw_step(
    net: &DdimUnet,
    obj: &GsureObjective,
    batch: &SpectralBatch,
    schedule: &VpSchedule,
    t_min: usize,
    rng: &mut impl Rng,
    host: &mut HostBatch,
) -> Result<()> {
    if batch.ybar.device() != &Device::Cpu || batch.ybar.dtype() != DType::F32 {
        bail!(
            "gsure: the step's batch is drawn on the host in f32, got {} on {:?}",
            batch.ybar.dtype(),
            batch.ybar.device()
        );
    }
    let shape = batch.ybar.shape().clone();
    let n = shape.dims().first().copied().unwrap_or(0);
    if t_min >= schedule.steps() {
        bail!("gsure: t_min = {t_min} leaves no timestep of a {}-step schedule to train", schedule.steps());
    }
    let t: Vec<usize> = (0..n).map(|_| rng.random_range(t_min..schedule.steps())).collect();
    let drawn = obj.prepare(batch, schedule, &t, rng)?;
    for (name, x) in [("ybar", &batch.ybar), ("observed", &batch.observed), ("nu", &batch.nu), ("w2", &batch.w2)] {
        host.push_f32(name, shape.clone(), &x.to_vec_f32()?)?;
    }
    for (name, x) in [("xt", &drawn.xt), ("xt_eps", &drawn.xt_eps), ("probe", &drawn.probe), ("t", &drawn.t)] {
        host.push_f32(name, x.shape().clone(), &x.to_vec_f32()?)?;
    }
    if obj.mode == GsureMode::Xt {
        host.push_f32("target", shape.clone(), &drawn.target.to_vec_f32()?)?;
    }
    let Coefs::Host(coefs) = &drawn.coefs else { bail!("gsure: host draws hold host coefficients") };
    host.push_f64("gsure coefs", [n, 2], &coefs.interleaved())?;
    // ε-prediction: x̂0 = (x − √(1−ᾱ) ε̂) / √ᾱ per example, for each batch the network sees: the [N]
    // examples, the first s of them (the perturbed pass alone) and the batched [N + s].
    if net.config.prediction == Prediction::Eps {
        let s = obj.div_rows(n);
        let joined: Vec<usize> = t.iter().chain(&t[..s]).copied().collect();
        for (names, ts) in [(EPS_ALL, &t[..]), (EPS_FIRST, &t[..s]), (EPS_JOINED, &joined[..])] {
            let ab: Vec<f64> = ts.iter().map(|&t| schedule.alpha_bar(t)).collect();
            host.push_f64(names[0], [ts.len()], &ab.iter().map(|a| (1.0 - a).sqrt()).collect::<Vec<_>>())?;
            host.push_f64(names[1], [ts.len()], &ab.iter().map(|a| 1.0 / a.sqrt()).collect::<Vec<_>>())?;
        }
    }
    Ok(())
}

/// The batch entries of ε-prediction's (√(1−ᾱ), 1/√ᾱ) for the [N], the [s] and the [N + s] forwards.
const EPS_ALL: [&str; 2] = ["eps noise scale", "eps inv sqrt ab"];
const EPS_FIRST: [&str; 2] = ["eps first noise scale", "eps first inv sqrt ab"];
const EPS_JOINED: [&str; 2] = ["eps joined noise scale", "eps joined inv sqrt ab"];

/// The device side of a GSURE step: the mean loss over the batch from [`draw_step`]'s entries, reading
/// nothing from the host.
pub fn device_step_loss(
    net: &DdimUnet,
    obj: &GsureObjective,
    basis: Basis,
    batch: &DeviceBatch,
    dropout_seed: Option<TrainSeed>,
    compute: DType,
) -> Result<Tensor> {
    let get = |name: &str| batch.get(name).cloned();
    let spectral =
        SpectralBatch { basis, ybar: get("ybar")?, observed: get("observed")?, nu: get("nu")?, w2: get("w2")? };
    let drawn = Noised {
        xt: get("xt")?,
        xt_eps: get("xt_eps")?,
        target: if obj.mode == GsureMode::Xt { get("target")? } else { spectral.ybar.clone() },
        probe: get("probe")?,
        t: get("t")?,
        coefs: Coefs::Table(get("gsure coefs")?),
        eps: Vec::new(),
    };
    let n = spectral.ybar.dims()[0];
    let s = obj.div_rows(n);
    let coefs = match net.config.prediction {
        Prediction::X0 => None,
        Prediction::Eps => {
            let pair = |names: [&str; 2]| -> Result<(Tensor, Tensor)> { Ok((get(names[0])?, get(names[1])?)) };
            Some([pair(EPS_ALL)?, pair(EPS_FIRST)?, pair(EPS_JOINED)?])
        }
    };
    let forward = |x: &Tensor, tt: &Tensor| -> Result<Tensor> {
        let out = net.forward(&x.to_dtype(compute)?, tt, dropout_seed)?.to_dtype(DType::F32)?;
        let Some([all, first, joined]) = &coefs else { return Ok(out) };
        let rows = x.dims()[0];
        let (noise_scale, inv_sqrt_ab) = if rows == n {
            all
        } else if rows == s {
            first
        } else if rows == n + s {
            joined
        } else {
            bail!("gsure: a forward of {rows} examples in a step of {n} (divergence on {s})")
        };
        let x0 = ops::sub(x, &ops::mul_along(&out, noise_scale, 0)?)?;
        ops::mul_along(&x0, inv_sqrt_ab, 0)
    };
    ops::mean_all(&obj.loss_per_example_prepared(&forward, &spectral, &drawn)?)
}

/// GSURE as the trainer's objective: the DDIM U-Net on the VP schedule, trained on corrupted observations.
pub struct Gsure;

impl Gsure {
    fn parts<'a>(data: &'a TrainData, model: &'a Model) -> Result<(&'a CorruptedData, &'a DdimUnet)> {
        match (data, model) {
            (TrainData::Corrupted(d), Model::Ddim(net)) => Ok((d, net)),
            (TrainData::Clean(_), _) => {
                bail!("--loss gsure trains on corrupted observations: pass --data FILE made by `gsure data make`")
            }
            (_, Model::Edm(_)) => bail!(
                "--loss gsure trains the DDIM U-Net on the VP schedule; choose --config tiny, tiny32, tiny-mri32, tiny-mri64, gsure-celeba32 or gsure-mri320"
            ),
        }
    }
}

impl Objective for Gsure {
    /// The paper's: for images 4×4 patches dropped with p = 0.4, σ0 = 0.02; for a complex (2-channel) model
    /// its MRI setting, k-space lines at R = 4 with the centre lines always kept, σ0 = 0.01.
    fn default_operator(&self, image_channels: usize) -> Option<OpSpec> {
        Some(match image_channels {
            2 => OpSpec { sigma0: 0.01, r: Some(4.0), ..OpSpec::new(OpKind::Mri) },
            _ => OpSpec { sigma0: 0.02, p: Some(0.4), patch: Some(4), ..OpSpec::new(OpKind::Patch) },
        })
    }

    fn check(&self, data: &TrainData, model: &Model, schedule: &VpSchedule, options: &TrainOptions) -> Result<()> {
        let (d, _) = Gsure::parts(data, model)?;
        check_config(schedule, d.spec.sigma0 * d.spec.sigma0, options.t_min).map_err(|e| {
            let source = match &options.data {
                Some(path) => format!("--data {}", path.display()),
                None => "the built-in corrupted phantoms".to_string(),
            };
            anyhow::anyhow!(
                "{source} (observation noise σ0 = {}, --beta-start {:.4e}): {e:#}",
                d.spec.sigma0,
                schedule.betas[0]
            )
        })
    }

    fn draw(&self, step: DrawInputs<'_>, host: &mut HostBatch) -> Result<()> {
        let (d, net) = Gsure::parts(step.data, step.model)?;
        let obj = Gsure::objective(net, step.options, step.compute);
        let spectral = d.spectral(step.indices, &Device::Cpu, DType::F32)?;
        draw_step(net, &obj, &spectral, step.schedule, step.options.t_min, step.rng, host)
    }

    fn device_loss(&self, batch: &DeviceBatch, step: LossInputs<'_>) -> Result<Tensor> {
        let (d, net) = Gsure::parts(step.data, step.model)?;
        let obj = Gsure::objective(net, step.options, step.compute);
        device_step_loss(net, &obj, d.spectral_basis()?, batch, step.dropout_seed, step.compute)
    }
}

impl Gsure {
    /// The run's GSURE objective. A training step always has dropout on: with dropout in the network, the
    /// clean and perturbed passes run as two N-example forwards with the same seed (identical masks, as the
    /// mask is hashed from the flat element index) instead of one 2N forward.
    fn objective(net: &DdimUnet, options: &TrainOptions, compute: DType) -> GsureObjective {
        let mut obj = GsureObjective {
            probe: options.gsure_probe,
            div_every: options.gsure_div_every,
            ..GsureObjective::for_dtype(options.gsure_mode, compute)
        };
        obj.batched &= net.config.dropout == 0.0;
        obj
    }
}
