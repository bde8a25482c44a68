//! Consistent Diffusion meets Tweedie (Daras, Dimakis, Daskalakis, ICML 2024; docs/METHODS.md §4.4): training an
//! EDM denoiser from noisy data x_n = x0 + σ_n η (σ_n known, the noise fixed per example).
//!
//! *Above σ_n* (double Tweedie, [`tweedie_loss`]): σ_t ~ EDM's log-normal conditioned on
//! σ_t ≥ σ_n (1 + margin) (an exact truncated normal on ln σ, i.e. the same as resampling until it holds),
//!
//! ```text
//! x_t  = x_n + √(σ_t² − σ_n²) η'                    (so x_t ~ x0 + σ_t η'' exactly)
//! x̂0   = D(x_t; σ_t)
//! x̂_n  = (σ_n²/σ_t²) x_t + (1 − σ_n²/σ_t²) x̂0        (Tweedie: E[x_n | x_t] from E[x0 | x_t])
//! L    = λ(σ_t) ‖x̂_n − x_n‖²
//! ```
//!
//! ‖x̂_n − x_n‖² = (1 − σ_n²/σ_t²)² ‖x̂0 − x̃0‖² with the pseudo-target x̃0 = (σ_t² x_n − σ_n² x_t)/(σ_t² − σ_n²),
//! and E[x̃0 | x_t] = E[x0 | x_t], so L equals the oracle loss λ(σ_t)(1 − σ_n²/σ_t²)² ‖x̂0 − x0‖² up to a
//! constant free of the network (tests/tweedie.rs checks both). `pseudo_target_weight` multiplies by
//! σ_t⁴/(σ_t² − σ_n²)², turning L into the plain EDM loss λ(σ_t) ‖x̂0 − x̃0‖² (whose variance explodes as
//! σ_t → σ_n; hence the margin).
//!
//! *Below σ_n* (consistency, [`ConsistencyOptions`]): σ ~ EDM's log-normal truncated to [σ_lo, σ_n];
//! x at σ comes from the model's own sampler started at the data: `descent_steps` Euler steps of the
//! probability-flow ODE from x_n at σ_n (x_n is an exact sample of p_{σ_n}). Then σ' = σ·(1 − rel_step) and
//! two independent stochastic steps x¹, x² from x to σ' (reverse-SDE Euler–Maruyama by default), and
//!
//! ```text
//! L_c = mean_pixels((D(x¹; σ') − D(x; σ)) ⊙ (D(x²; σ') − D(x; σ)))
//! ```
//!
//! which, x¹ and x² being independent given x, is an unbiased estimate of
//! mean_pixels((E[D(x'; σ') | x] − D(x; σ))²). Gradient: the sampled points x, x¹, x² are constants (the
//! estimator's expectation is over them; the step that makes x¹, x² uses D(x; σ) detached); the gradient
//! flows through all three network outputs D(x; σ), D(x¹; σ'), D(x²; σ'), as in the paper's estimator.
//! The total loss is L + w · L_c (batch means), w = 0.01 by default.
//!
//! Sampling ([`tweedie_sample`]): truncated (EDM Heun from σ_max down to σ_n, output D(x; σ_n)) or full
//! (down to σ_min; meaningful after consistency training).
use super::ambient::mix;
use super::{corrupted_edm, gather, Objective, StepInputs};
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
use rand_distr::{Distribution, Exp, StandardNormal};
use serde::{Deserialize, Serialize};

/// The stochastic step from σ to σ' < σ used by the consistency loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsistencyStep {
    /// Euler–Maruyama of the reverse SDE: x' = x + (σ² − σ'²)(D − x)/σ² + √(σ² − σ'²) z.
    ReverseSde,
    /// The DDPM-style posterior with x0 := D: x' = D + (σ'²/σ²)(x − D) + σ' √(1 − σ'²/σ²) z.
    Ancestral,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConsistencyOptions {
    /// w in L + w · L_c.
    pub weight: f64,
    /// Lower end of the consistency noise levels σ ∈ [sigma_lo, σ_n].
    pub sigma_lo: f64,
    /// σ' = σ (1 − rel_step).
    pub rel_step: f64,
    /// Euler steps of the probability-flow ODE from x_n (σ_n) down to σ (no gradient).
    pub descent_steps: usize,
    pub step: ConsistencyStep,
}

impl Default for ConsistencyOptions {
    fn default() -> Self {
        ConsistencyOptions {
            weight: 0.01,
            sigma_lo: 0.002,
            rel_step: 0.05,
            descent_steps: 1,
            step: ConsistencyStep::ReverseSde,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TweedieOptions {
    /// σ_t ≥ σ_n (1 + margin).
    pub margin: f64,
    /// Multiply by σ_t⁴/(σ_t² − σ_n²)²: the plain EDM loss against the pseudo-target x̃0.
    pub pseudo_target_weight: bool,
    /// Add the consistency loss below σ_n.
    pub consistency: Option<ConsistencyOptions>,
    /// Use this σ_t for every example instead of the truncated log-normal (must exceed σ_n).
    pub fixed_sigma: Option<f64>,
    /// dtype the network runs in; None: the dtype of x_n. Losses are computed in x_n's dtype.
    pub compute: Option<DType>,
    /// Divide each example's pixel sum by C·H·W (default false: the sum ‖·‖² of docs/METHODS.md §4.4).
    pub mean_over_pixels: bool,
}

impl Default for TweedieOptions {
    fn default() -> Self {
        TweedieOptions {
            margin: 0.1,
            pseudo_target_weight: false,
            consistency: None,
            fixed_sigma: None,
            compute: None,
            mean_over_pixels: false,
        }
    }
}

/// One loss evaluation: `loss` (shape [1]) is what is differentiated.
pub struct TweedieLoss {
    /// mean_n tweedie[n] + w · mean_n consistency[n].
    pub loss: Tensor,
    /// Per-example double-Tweedie loss λ(σ_t)‖x̂_n − x_n‖² (times the optional weight), shape [N].
    pub tweedie: Tensor,
    /// σ_t per example.
    pub sigma_t: Vec<f64>,
    /// Per-example consistency estimates L_c (unweighted), shape [N], and (σ, σ') per example.
    pub consistency: Option<(Tensor, Vec<f64>, Vec<f64>)>,
}

/// A standard normal conditioned on [a, b] (a < b, either may be infinite), exactly.
pub fn truncated_std_normal(a: f64, b: f64, rng: &mut impl Rng) -> f64 {
    debug_assert!(a < b);
    if a == f64::NEG_INFINITY && b == f64::INFINITY {
        return StandardNormal.sample(rng);
    }
    if a == f64::NEG_INFINITY {
        return -truncated_std_normal(-b, f64::INFINITY, rng);
    }
    if b == f64::INFINITY && a > 0.5 {
        // Robert (1995): z = a + Exp(α), accepted with probability exp(−(z − α)²/2).
        let alpha = 0.5 * (a + (a * a + 4.0).sqrt());
        let exp = Exp::new(alpha).expect("positive rate");
        loop {
            let z = a + exp.sample(rng);
            if rng.random::<f64>() < (-(z - alpha).powi(2) / 2.0).exp() {
                return z;
            }
        }
    }
    // Plain rejection while the interval holds enough mass.
    for _ in 0..32 {
        let z: f64 = StandardNormal.sample(rng);
        if (a..=b).contains(&z) {
            return z;
        }
    }
    if b == f64::INFINITY {
        // a ≤ 0.5 here, so the plain rejection above accepts with probability ≥ 0.3; keep trying.
        loop {
            let z: f64 = StandardNormal.sample(rng);
            if z >= a {
                return z;
            }
        }
    }
    // Two finite ends holding little mass: uniform proposal on [a, b], accepted with φ(z)/φ(z*), z* the
    // point of [a, b] nearest to 0.
    let zs = if a > 0.0 {
        a
    } else if b < 0.0 {
        b
    } else {
        0.0
    };
    loop {
        let z = rng.random_range(a..b);
        if rng.random::<f64>() < ((zs * zs - z * z) / 2.0).exp() {
            return z;
        }
    }
}

/// σ from EDM's log-normal conditioned on lo ≤ σ ≤ hi.
pub fn truncated_sigma(edm: &Edm, lo: f64, hi: f64, rng: &mut impl Rng) -> f64 {
    let std = |s: f64| (s.ln() - edm.p_mean) / edm.p_std;
    let (a, b) =
        (if lo > 0.0 { std(lo) } else { f64::NEG_INFINITY }, if hi.is_finite() { std(hi) } else { f64::INFINITY });
    (edm.p_mean + edm.p_std * truncated_std_normal(a, b, rng)).exp()
}

/// x_n = x0 + σ_n η with η fixed per example: seeded by (seed, index). x0 [N, ...], one σ_n per example.
pub fn noisy_observations(x0: &Tensor, sigma_n: &[f64], indices: &[usize], seed: u64) -> Result<Tensor> {
    let n = x0.dims().first().copied().unwrap_or(0);
    if sigma_n.len() != n || indices.len() != n {
        bail!("noisy_observations: {} σ_n and {} indices for x0 of shape {}", sigma_n.len(), indices.len(), x0.shape());
    }
    let per = x0.numel() / n.max(1);
    let mut noise = Vec::with_capacity(x0.numel());
    for (&idx, &s) in indices.iter().zip(sigma_n) {
        let mut rng = StdRng::seed_from_u64(mix(seed ^ 0x7EED_1E00, idx as u64));
        noise.extend((0..per).map(|_| s * Distribution::<f64>::sample(&StandardNormal, &mut rng)));
    }
    ops::add(x0, &Tensor::from_f64(&noise, x0.shape().clone(), x0.dtype(), x0.device())?)
}

fn per_example(v: &[f64], like: &Tensor) -> Result<Tensor> {
    Tensor::from_f64(v, [v.len()], like.dtype(), like.device())
}

/// x̂_n = (σ_n²/σ_t²) x_t + (1 − σ_n²/σ_t²) x̂0, per example.
pub fn xn_estimate(x_t: &Tensor, x0_hat: &Tensor, sigma_n: &[f64], sigma_t: &[f64]) -> Result<Tensor> {
    let r: Vec<f64> = sigma_n.iter().zip(sigma_t).map(|(n, t)| n * n / (t * t)).collect();
    let one_minus: Vec<f64> = r.iter().map(|r| 1.0 - r).collect();
    ops::add(
        &ops::mul_along(x_t, &per_example(&r, x_t)?, 0)?,
        &ops::mul_along(x0_hat, &per_example(&one_minus, x_t)?, 0)?,
    )
}

/// x̃0 = (σ_t² x_n − σ_n² x_t)/(σ_t² − σ_n²), per example.
pub fn pseudo_target(x_n: &Tensor, x_t: &Tensor, sigma_n: &[f64], sigma_t: &[f64]) -> Result<Tensor> {
    let (mut cn, mut ct) = (Vec::new(), Vec::new());
    for (&n, &t) in sigma_n.iter().zip(sigma_t) {
        let den = t * t - n * n;
        cn.push(t * t / den);
        ct.push(-n * n / den);
    }
    ops::add(&ops::mul_along(x_n, &per_example(&cn, x_n)?, 0)?, &ops::mul_along(x_t, &per_example(&ct, x_n)?, 0)?)
}

fn check_sigma_n(op: &str, sigma_n: &[f64], x: &Tensor) -> Result<usize> {
    let (n, ..) = x.shape().nchw(op)?;
    if sigma_n.len() != n {
        bail!("{op}: {} noise levels σ_n for a batch of shape {}", sigma_n.len(), x.shape());
    }
    if let Some(bad) = sigma_n.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        bail!("{op}: σ_n = {bad} is not a positive finite number");
    }
    Ok(n)
}

/// Denoiser signature of the generic functions: `denoise(x, σ per example)` → x0 estimate, same shape.
/// The closure gets x in the compute dtype and may return any float dtype.
pub trait Denoise: Fn(&Tensor, &[f64]) -> Result<Tensor> {}
impl<F: Fn(&Tensor, &[f64]) -> Result<Tensor>> Denoise for F {}

fn run(denoise: &impl Denoise, x: &Tensor, sigma: &[f64], compute: DType) -> Result<Tensor> {
    let d = denoise(&x.to_dtype(compute)?, sigma)?;
    if d.dims() != x.dims() {
        bail!("tweedie: the denoiser returned shape {} for input {}", d.shape(), x.shape());
    }
    d.to_dtype(x.dtype())
}

/// The consistency estimate at given points: x [N, C, H, W] at σ (per example), σ' < σ. Returns the
/// per-example L_c [N] (mean over pixels) with gradient through D(x; σ) and D(x^k; σ'). Draws the two step
/// noises from `rng`.
#[allow(clippy::too_many_arguments)]
pub fn consistency_term_with(
    denoise: &impl Denoise,
    x: &Tensor,
    sigma: &[f64],
    sigma_prime: &[f64],
    step: ConsistencyStep,
    compute: DType,
    rng: &mut impl Rng,
) -> Result<Tensor> {
    let (n, c, h, w) = x.shape().nchw("consistency")?;
    if sigma.len() != n || sigma_prime.len() != n {
        bail!("consistency: {} σ and {} σ' for a batch of shape {}", sigma.len(), sigma_prime.len(), x.shape());
    }
    if let Some(i) = (0..n).find(|&i| !(0.0 < sigma_prime[i] && sigma_prime[i] < sigma[i])) {
        bail!("consistency: need 0 < σ' < σ, got σ = {}, σ' = {} (example {i})", sigma[i], sigma_prime[i]);
    }
    let x = x.detach();
    let d0 = run(denoise, &x, sigma, compute)?;
    // The step's mean (σ'²/σ²) x + (1 − σ'²/σ²) D is shared by both variants; only the noise differs.
    let std: Vec<f64> = sigma
        .iter()
        .zip(sigma_prime)
        .map(|(s, p)| match step {
            ConsistencyStep::ReverseSde => (s * s - p * p).sqrt(),
            ConsistencyStep::Ancestral => p * (1.0 - p * p / (s * s)).sqrt(),
        })
        .collect();
    let x12 = no_grad(|| -> Result<Tensor> {
        let mean = xn_estimate(&x, &d0.detach(), sigma_prime, sigma)?;
        let z1 = Tensor::randn([n, c, h, w], x.dtype(), x.device(), rng)?;
        let z2 = Tensor::randn([n, c, h, w], x.dtype(), x.device(), rng)?;
        let stdt = per_example(&std, &x)?;
        let x1 = ops::add(&mean, &ops::mul_along(&z1, &stdt, 0)?)?;
        let x2 = ops::add(&mean, &ops::mul_along(&z2, &stdt, 0)?)?;
        // One batch of 2N: [N, 2C, H, W] viewed as [2N, C, H, W] interleaves x¹_i, x²_i.
        let x12 = layout::concat_channels(&[&x1, &x2])?.reshape([2 * n, c, h, w])?;
        Ok(x12)
    })?;
    let sp2: Vec<f64> = sigma_prime.iter().flat_map(|&s| [s, s]).collect();
    let d12 = run(denoise, &x12, &sp2, compute)?.reshape([n, 2 * c, h, w])?;
    let parts = layout::split_channels(&d12, &[c, c])?;
    let prod = ops::mul(&ops::sub(&parts[0], &d0)?, &ops::sub(&parts[1], &d0)?)?;
    ops::scale(&ops::sum_per_example(&prod)?, 1.0 / (c * h * w) as f64)
}

/// Probability-flow ODE (Euler, geometric σ spacing) from x at σ_from down to σ_to, per example, no gradient.
pub fn descend_with(
    denoise: &impl Denoise,
    x: &Tensor,
    sigma_from: &[f64],
    sigma_to: &[f64],
    steps: usize,
    compute: DType,
) -> Result<Tensor> {
    no_grad(|| {
        let mut x = x.detach();
        let n = sigma_from.len();
        for k in 0..steps {
            let at = |k: usize| -> Vec<f64> {
                (0..n).map(|i| sigma_from[i] * (sigma_to[i] / sigma_from[i]).powf(k as f64 / steps as f64)).collect()
            };
            let (s, s_next) = (at(k), at(k + 1));
            let d = run(denoise, &x, &s, compute)?;
            // x + (s' − s)(x − D)/s = (s'/s) x + (1 − s'/s) D
            let ratio: Vec<f64> = (0..n).map(|i| s_next[i] / s[i]).collect();
            let one_minus: Vec<f64> = ratio.iter().map(|r| 1.0 - r).collect();
            x = ops::add(
                &ops::mul_along(&x, &per_example(&ratio, &x)?, 0)?,
                &ops::mul_along(&d, &per_example(&one_minus, &x)?, 0)?,
            )?;
        }
        Ok(x)
    })
}

/// The double-Tweedie loss (plus the consistency loss when `opts.consistency` is set) around any denoiser.
/// `x_n` [N, C, H, W] the noisy data, `sigma_n` its noise level per example. Draws from `rng`: σ_t, η', then
/// (consistency) σ and the step noises.
pub fn tweedie_loss_with(
    edm: &Edm,
    denoise: impl Denoise,
    x_n: &Tensor,
    sigma_n: &[f64],
    opts: &TweedieOptions,
    rng: &mut impl Rng,
) -> Result<TweedieLoss> {
    let n = check_sigma_n("tweedie_loss", sigma_n, x_n)?;
    if !(opts.margin >= 0.0 && opts.margin.is_finite()) {
        bail!("tweedie_loss: margin {} must be a finite number ≥ 0", opts.margin);
    }
    let compute = opts.compute.unwrap_or(x_n.dtype());
    let x_n = x_n.detach();
    let sigma_t: Vec<f64> = match opts.fixed_sigma {
        Some(s) => {
            if let Some(bad) = sigma_n.iter().find(|&&sn| s.is_nan() || s <= sn) {
                bail!("tweedie_loss: fixed σ_t = {s} must exceed σ_n = {bad}");
            }
            vec![s; n]
        }
        None => sigma_n.iter().map(|&sn| truncated_sigma(edm, sn * (1.0 + opts.margin), f64::INFINITY, rng)).collect(),
    };
    let top_up: Vec<f64> = sigma_n.iter().zip(&sigma_t).map(|(sn, st)| (st * st - sn * sn).sqrt()).collect();
    let eta = Tensor::randn(x_n.shape().clone(), x_n.dtype(), x_n.device(), rng)?;
    let x_t = ops::add(&x_n, &ops::mul_along(&eta, &per_example(&top_up, &x_n)?, 0)?)?;
    let x0_hat = run(&denoise, &x_t, &sigma_t, compute)?;
    let xn_hat = xn_estimate(&x_t, &x0_hat, sigma_n, &sigma_t)?;
    let m = (x_n.numel() / n) as f64;
    let weight: Vec<f64> = sigma_n
        .iter()
        .zip(&sigma_t)
        .map(|(&sn, &st)| {
            let extra = if opts.pseudo_target_weight { st.powi(4) / (st * st - sn * sn).powi(2) } else { 1.0 };
            edm.loss_weight(st) * extra / if opts.mean_over_pixels { m } else { 1.0 }
        })
        .collect();
    let sq = ops::sum_per_example(&ops::square(&ops::sub(&xn_hat, &x_n)?)?)?;
    let tweedie = ops::mul(&sq, &per_example(&weight, &x_n)?)?;
    let mut loss = ops::scale(&ops::sum_all(&tweedie)?, 1.0 / n as f64)?;

    let consistency = match &opts.consistency {
        None => None,
        Some(c) => {
            if !(c.rel_step > 0.0 && c.rel_step < 1.0) || c.descent_steps == 0 {
                bail!("tweedie_loss: consistency needs 0 < rel_step < 1 and descent_steps ≥ 1");
            }
            if let Some(bad) = sigma_n.iter().find(|&&sn| !(c.sigma_lo > 0.0 && c.sigma_lo < sn)) {
                bail!("tweedie_loss: consistency needs 0 < σ_lo = {} < σ_n = {bad}", c.sigma_lo);
            }
            let sigma: Vec<f64> = sigma_n.iter().map(|&sn| truncated_sigma(edm, c.sigma_lo, sn, rng)).collect();
            let sigma_p: Vec<f64> = sigma.iter().map(|s| s * (1.0 - c.rel_step)).collect();
            let x = descend_with(&denoise, &x_n, sigma_n, &sigma, c.descent_steps, compute)?;
            let lc = consistency_term_with(&denoise, &x, &sigma, &sigma_p, c.step, compute, rng)?;
            loss = ops::add(&loss, &ops::scale(&ops::sum_all(&lc)?, c.weight / n as f64)?)?;
            Some((lc, sigma, sigma_p))
        }
    };
    Ok(TweedieLoss { loss, tweedie, sigma_t, consistency })
}

fn edm_closure<'a>(den: &'a EdmDenoiser, train_seed: Option<TrainSeed>) -> impl Denoise + 'a {
    move |x: &Tensor, sigma: &[f64]| {
        let (n, _, h, w) = x.shape().nchw("tweedie denoiser")?;
        let extra = den.net.config.extra_in_channels;
        // A network with mask channels sees fully observed data: all ones.
        let mask = if extra > 0 { Some(Tensor::full([n, extra, h, w], 1.0, x.dtype(), x.device())?) } else { None };
        den.denoise(x, sigma, mask.as_ref(), train_seed)
    }
}

/// The Tweedie loss of an EDM denoiser, ready for `backward`: `x_n` [N, C, H, W] noisy data (noise fixed per
/// example, e.g. from [`noisy_observations`]), `sigma_n` its noise level per example, `train_seed` dropout.
pub fn tweedie_loss(
    den: &EdmDenoiser,
    x_n: &Tensor,
    sigma_n: &[f64],
    opts: &TweedieOptions,
    rng: &mut impl Rng,
    train_seed: Option<TrainSeed>,
) -> Result<Tensor> {
    Ok(tweedie_loss_parts(den, x_n, sigma_n, opts, rng, train_seed)?.loss)
}

/// [`tweedie_loss`] with its parts for logging.
pub fn tweedie_loss_parts(
    den: &EdmDenoiser,
    x_n: &Tensor,
    sigma_n: &[f64],
    opts: &TweedieOptions,
    rng: &mut impl Rng,
    train_seed: Option<TrainSeed>,
) -> Result<TweedieLoss> {
    tweedie_loss_with(&den.edm, edm_closure(den, train_seed), x_n, sigma_n, opts, rng)
}

/// Where the sampler stops.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum TweedieSampling {
    /// EDM Heun from σ_max down to σ_n, then output D(x; σ_n).
    Truncated { sigma_n: f64 },
    /// Down to σ_min (meaningful after consistency training).
    Full,
}

/// EDM Heun with `opts` (steps counts the noise levels σ_max … σ_stop; the last step, to σ = 0, is the
/// Euler step x + (0 − σ)(x − D)/σ = D(x; σ), so the truncated sampler returns D(x; σ_n)).
#[allow(clippy::too_many_arguments)]
pub fn tweedie_sample_with(
    edm: &Edm,
    opts: EdmOptions,
    mode: TweedieSampling,
    shape: [usize; 4],
    dtype: DType,
    device: &Device,
    rng: &mut impl Rng,
    denoise: impl Fn(&Tensor, f64) -> Result<Tensor>,
) -> Result<Tensor> {
    let edm = match mode {
        TweedieSampling::Full => *edm,
        TweedieSampling::Truncated { sigma_n } => {
            if !(sigma_n > 0.0 && sigma_n < edm.sigma_max) {
                bail!("tweedie_sample: σ_n = {sigma_n} must lie in (0, σ_max = {})", edm.sigma_max);
            }
            Edm { sigma_min: sigma_n, ..*edm }
        }
    };
    edm_heun_sample(&edm, opts, shape, dtype, device, rng, denoise)
}

/// Samples `n` images from a Tweedie-trained EDM denoiser (18 Heun steps, ρ = 7 by default).
pub fn tweedie_sample(
    den: &EdmDenoiser,
    opts: EdmOptions,
    mode: TweedieSampling,
    n: usize,
    dtype: DType,
    device: &Device,
    rng: &mut impl Rng,
) -> Result<Tensor> {
    let cfg = &den.net.config;
    let shape = [n, cfg.in_channels, cfg.resolution, cfg.resolution];
    let f = edm_closure(den, None);
    tweedie_sample_with(&den.edm, opts, mode, shape, dtype, device, rng, |x, s| f(x, &vec![s; n]))
}

/// Ambient-Tweedie as the trainer's objective: a DDPM++ U-Net without mask channels and with EDM, trained on
/// noisy images (with `--consistency W`, also below σ_n).
pub struct Tweedie;

impl Objective for Tweedie {
    /// The paper's: Gaussian noise σ_n = 0.1 on [-1, 1] images.
    fn default_operator(&self, _: usize) -> Option<OpSpec> {
        Some(OpSpec { sigma0: 0.1, ..OpSpec::new(OpKind::Noise) })
    }

    fn check(&self, data: &TrainData, model: &Model, _: &VpSchedule, _: &TrainOptions) -> Result<()> {
        let (d, den) = corrupted_edm("Tweedie", data, model)?;
        let extra = den.net.config.extra_in_channels;
        if d.spec.kind != OpKind::Noise {
            bail!(
                "--loss tweedie learns from noisy images (--op noise); this dataset was made with --op {:?}",
                d.spec.kind
            );
        }
        if d.spec.sigma0 <= 0.0 {
            bail!("--loss tweedie needs noisy data: the dataset's sigma0 is 0");
        }
        if extra != 0 {
            bail!("--loss tweedie uses a network without mask channels; this configuration has {extra} (use tiny-edm)");
        }
        Ok(())
    }

    /// Truncated at the dataset's σ_n, or full once consistency training has taught the network below it.
    fn sampling(&self, data: &TrainData, options: &TrainOptions) -> Sampling {
        match data {
            TrainData::Corrupted(d) => Sampling::Tweedie { sigma_n: d.spec.sigma0, full: options.consistency > 0.0 },
            TrainData::Clean(_) => Sampling::Standard,
        }
    }

    fn loss(&self, mut step: StepInputs<'_>) -> Result<Tensor> {
        let (d, den) = corrupted_edm("Tweedie", step.draw.data, step.draw.model)?;
        let (m, b) = (d.dims[1] * d.dims[2] * d.dims[3], step.draw.indices.len());
        let y =
            Tensor::from_f32(&gather(&d.y, m, step.draw.indices), [b, d.dims[1], d.dims[2], d.dims[3]], step.device)?;
        step.phase.objective();
        let weight = step.draw.options.consistency;
        let consistency = (weight > 0.0).then(|| ConsistencyOptions { weight, ..ConsistencyOptions::default() });
        let opts = TweedieOptions {
            compute: Some(step.draw.compute),
            mean_over_pixels: true,
            consistency,
            ..TweedieOptions::default()
        };
        tweedie_loss(den, &y, &vec![d.spec.sigma0; b], &opts, step.draw.rng, step.dropout_seed)
    }
}
