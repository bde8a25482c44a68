//! Samplers over a denoiser closure that returns the x0 estimate, so the same code serves a trained U-Net,
//! an exact optimal denoiser in tests, and the constrained samplers built on top (ambient, reconstruction).
//! All are seeded: the same rng state gives the same samples.
use super::schedule::{Edm, VpSchedule};
use crate::autograd::no_grad;
use crate::ops::{add, scale};
use crate::{DType, Device, Shape, Tensor};
use anyhow::{bail, Result};
use rand::Rng;

/// Σ c_k x_k over tensors of one shape.
pub fn lincomb(terms: &[(f64, &Tensor)]) -> Result<Tensor> {
    let mut acc = scale(terms[0].1, terms[0].0)?;
    for (c, t) in &terms[1..] {
        acc = add(&acc, &scale(t, *c)?)?;
    }
    Ok(acc)
}

fn noise(shape: &Shape, dtype: DType, device: &Device, rng: &mut impl Rng) -> Result<Tensor> {
    Tensor::randn(shape.clone(), dtype, device, rng)
}

/// DDPM ancestral sampling over all T steps with the posterior variance β̃_t.
/// `denoise(x_t, t)` returns the x0 estimate.
pub fn ddpm_sample(
    schedule: &VpSchedule,
    shape: impl Into<Shape>,
    dtype: DType,
    device: &Device,
    rng: &mut impl Rng,
    denoise: impl Fn(&Tensor, usize) -> Result<Tensor>,
) -> Result<Tensor> {
    no_grad(|| {
        let shape = shape.into();
        let mut x = noise(&shape, dtype, device, rng)?;
        for t in (0..schedule.steps()).rev() {
            let x0 = denoise(&x, t)?;
            if t == 0 {
                return Ok(x0);
            }
            let (ab, ab_prev, beta) = (schedule.alpha_bar(t), schedule.alpha_bar(t - 1), schedule.betas[t]);
            let c_x0 = ab_prev.sqrt() * beta / (1.0 - ab);
            let c_xt = (1.0 - beta).sqrt() * (1.0 - ab_prev) / (1.0 - ab);
            let var = beta * (1.0 - ab_prev) / (1.0 - ab);
            let z = noise(&shape, dtype, device, rng)?;
            x = lincomb(&[(c_x0, &x0), (c_xt, &x), (var.sqrt(), &z)])?;
        }
        unreachable!("the loop returns at t = 0")
    })
}

#[derive(Clone, Copy, Debug)]
pub struct DdimOptions {
    /// Number of respaced steps (the model still sees the original integer t).
    pub steps: usize,
    /// 0: deterministic DDIM; 1: DDPM-like ancestral noise.
    pub eta: f64,
}

impl Default for DdimOptions {
    fn default() -> Self {
        DdimOptions { steps: 50, eta: 0.0 }
    }
}

/// DDIM with η over `steps` uniformly respaced timesteps 0, k, 2k, ... (k = T / steps).
pub fn ddim_sample(
    schedule: &VpSchedule,
    opts: DdimOptions,
    shape: impl Into<Shape>,
    dtype: DType,
    device: &Device,
    rng: &mut impl Rng,
    denoise: impl Fn(&Tensor, usize) -> Result<Tensor>,
) -> Result<Tensor> {
    let t_max = schedule.steps();
    if opts.steps == 0 || opts.steps > t_max {
        bail!("DDIM: {} steps requested; choose between 1 and T = {t_max}", opts.steps);
    }
    let skip = t_max / opts.steps;
    let seq: Vec<usize> = (0..opts.steps).map(|i| i * skip).collect();
    no_grad(|| {
        let shape = shape.into();
        let mut x = noise(&shape, dtype, device, rng)?;
        for i in (0..seq.len()).rev() {
            let t = seq[i];
            let ab = schedule.alpha_bar(t);
            let ab_prev = if i == 0 { 1.0 } else { schedule.alpha_bar(seq[i - 1]) };
            let x0 = denoise(&x, t)?;
            if i == 0 {
                return Ok(x0);
            }
            // ε̂ implied by the x0 estimate, then the DDIM update.
            let eps = lincomb(&[(1.0 / (1.0 - ab).sqrt(), &x), (-ab.sqrt() / (1.0 - ab).sqrt(), &x0)])?;
            let sigma = opts.eta * ((1.0 - ab_prev) / (1.0 - ab)).sqrt() * (1.0 - ab / ab_prev).sqrt();
            let dir = (1.0 - ab_prev - sigma * sigma).max(0.0).sqrt();
            x = if sigma > 0.0 {
                let z = noise(&shape, dtype, device, rng)?;
                lincomb(&[(ab_prev.sqrt(), &x0), (dir, &eps), (sigma, &z)])?
            } else {
                lincomb(&[(ab_prev.sqrt(), &x0), (dir, &eps)])?
            };
        }
        unreachable!("the loop returns at i = 0")
    })
}

#[derive(Clone, Copy, Debug)]
pub struct EdmOptions {
    pub steps: usize,
    pub rho: f64,
    /// Stochasticity (S_churn, S_min, S_max, S_noise); churn 0 gives the deterministic Heun sampler.
    pub churn: f64,
    pub s_min: f64,
    pub s_max: f64,
    pub s_noise: f64,
}

impl Default for EdmOptions {
    fn default() -> Self {
        EdmOptions { steps: 18, rho: 7.0, churn: 0.0, s_min: 0.0, s_max: f64::INFINITY, s_noise: 1.0 }
    }
}

/// EDM's Heun sampler (Karras et al., Algorithm 2). `denoise(x, σ)` returns D(x; σ).
pub fn edm_heun_sample(
    edm: &Edm,
    opts: EdmOptions,
    shape: impl Into<Shape>,
    dtype: DType,
    device: &Device,
    rng: &mut impl Rng,
    denoise: impl Fn(&Tensor, f64) -> Result<Tensor>,
) -> Result<Tensor> {
    if opts.steps == 0 {
        bail!("EDM sampler: at least one step is needed");
    }
    let sigmas = edm.karras_sigmas(opts.steps, opts.rho);
    no_grad(|| {
        let shape = shape.into();
        let mut x = scale(&noise(&shape, dtype, device, rng)?, sigmas[0])?;
        for i in 0..opts.steps {
            let (s_cur, s_next) = (sigmas[i], sigmas[i + 1]);
            let gamma = if opts.churn > 0.0 && (opts.s_min..=opts.s_max).contains(&s_cur) {
                (opts.churn / opts.steps as f64).min(2f64.sqrt() - 1.0)
            } else {
                0.0
            };
            let s_hat = s_cur * (1.0 + gamma);
            let x_hat = if gamma > 0.0 {
                let z = noise(&shape, dtype, device, rng)?;
                lincomb(&[(1.0, &x), ((s_hat * s_hat - s_cur * s_cur).sqrt() * opts.s_noise, &z)])?
            } else {
                x.clone()
            };
            // Euler step along d = (x − D(x))/σ, then Heun's correction unless we reached σ = 0.
            let d = lincomb(&[(1.0 / s_hat, &x_hat), (-1.0 / s_hat, &denoise(&x_hat, s_hat)?)])?;
            let x_next = lincomb(&[(1.0, &x_hat), (s_next - s_hat, &d)])?;
            x = if s_next > 0.0 {
                let d2 = lincomb(&[(1.0 / s_next, &x_next), (-1.0 / s_next, &denoise(&x_next, s_next)?)])?;
                lincomb(&[(1.0, &x_hat), (0.5 * (s_next - s_hat), &d), (0.5 * (s_next - s_hat), &d2)])?
            } else {
                x_next
            };
        }
        Ok(x)
    })
}
