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
use super::{corrupted_edm, gather, DeviceBatch, DrawInputs, HostBatch, LossInputs, Objective};
use crate::autograd::no_grad;
use crate::corruption::{OpKind, OpSpec};
use crate::diffusion::samplers::edm_heun_sample;
use crate::diffusion::schedule::VpSchedule;
use crate::diffusion::{Edm, EdmOptions};
use crate::nn::TrainSeed;
use crate::nn::{EdmDenoiser, Model};
use crate::ops::{self, layout};
use crate::tensor::Shape;
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

fn check_sigma_n(op: &str, sigma_n: &[f64], shape: &Shape) -> Result<usize> {
    let (n, ..) = shape.nchw(op)?;
    if sigma_n.len() != n {
        bail!("{op}: {} noise levels σ_n for a batch of shape {shape}", sigma_n.len());
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

/// Where one loss evaluates the denoiser. Each is one batch of noise levels drawn on the host with the
/// step's other draws, so the device side names the evaluation and never sees a σ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    /// σ_t > σ_n: the double-Tweedie term.
    Above,
    /// The k-th Euler step of the descent from σ_n down to σ.
    Descent(usize),
    /// σ: the consistency point x.
    Consistency,
    /// σ', once for x¹ and once for x² of each example (2N levels, interleaved).
    Stepped,
}

impl Level {
    /// The prefix of its entries in a step batch.
    fn name(self) -> String {
        match self {
            Level::Above => "above ".into(),
            Level::Descent(k) => format!("descent {k} "),
            Level::Consistency => "consistency ".into(),
            Level::Stepped => "stepped ".into(),
        }
    }
}

/// The denoiser at an evaluation's noise levels.
trait DenoiseAt: Fn(&Tensor, Level) -> Result<Tensor> {}
impl<F: Fn(&Tensor, Level) -> Result<Tensor>> DenoiseAt for F {}

/// D at `level` on x (converted to `compute`), back in x's dtype.
fn run(denoise: &impl DenoiseAt, x: &Tensor, level: Level, compute: DType) -> Result<Tensor> {
    let d = denoise(&x.to_dtype(compute)?, level)?;
    if d.dims() != x.dims() {
        bail!("tweedie: the denoiser returned shape {} for input {}", d.shape(), x.shape());
    }
    d.to_dtype(x.dtype())
}

/// a·ca + b·cb with one coefficient per example.
fn blend(a: &Tensor, ca: &Tensor, b: &Tensor, cb: &Tensor) -> Result<Tensor> {
    ops::add(&ops::mul_along(a, ca, 0)?, &ops::mul_along(b, cb, 0)?)
}

/// Named host values the device side of a loss reads, with their shapes: pushed into the trainer's step
/// batch, or made into tensors by a loss called directly.
#[derive(Default)]
struct Columns(Vec<(String, Shape, Vec<f64>)>);

impl Columns {
    fn push(&mut self, name: impl Into<String>, shape: impl Into<Shape>, values: Vec<f64>) {
        self.0.push((name.into(), shape.into(), values));
    }

    /// Tensors in the dtype and on the device of `like`.
    fn to_batch(&self, like: &Tensor) -> Result<DeviceBatch> {
        let tensors = self.0.iter().map(|(name, shape, v)| {
            Ok((name.clone(), Tensor::from_f64(v, shape.clone(), like.dtype(), like.device())?))
        });
        Ok(DeviceBatch::from_tensors(tensors.collect::<Result<Vec<_>>>()?))
    }

    fn push_to(&self, host: &mut HostBatch) -> Result<()> {
        self.0.iter().try_for_each(|(name, shape, v)| host.push_f64(name, shape.clone(), v))
    }
}

/// The probability-flow ODE from σ_from down to σ_to in `steps` Euler steps at geometric spacing.
struct Descent {
    from: Vec<f64>,
    to: Vec<f64>,
    steps: usize,
}

impl Descent {
    /// The noise levels after `k` steps.
    fn at(&self, k: usize) -> Vec<f64> {
        let t = k as f64 / self.steps as f64;
        self.from.iter().zip(&self.to).map(|(f, to)| f * (to / f).powf(t)).collect()
    }

    /// Step k is x + (s' − s)(x − D)/s = (s'/s) x + (1 − s'/s) D: its two coefficients per example.
    fn columns(&self, out: &mut Columns) {
        for k in 0..self.steps {
            let ratio: Vec<f64> = self.at(k + 1).iter().zip(self.at(k)).map(|(next, s)| next / s).collect();
            out.push(format!("descent {k} ratio"), [ratio.len()], ratio.clone());
            out.push(format!("descent {k} 1 - ratio"), [ratio.len()], ratio.iter().map(|r| 1.0 - r).collect());
        }
    }
}

/// The descent's device side, no gradient: `steps` evaluations at [`Level::Descent`].
fn descend(denoise: &impl DenoiseAt, x: &Tensor, steps: usize, b: &DeviceBatch, compute: DType) -> Result<Tensor> {
    no_grad(|| {
        let mut x = x.detach();
        for k in 0..steps {
            let d = run(denoise, &x, Level::Descent(k), compute)?;
            x = blend(&x, b.get(&format!("descent {k} ratio"))?, &d, b.get(&format!("descent {k} 1 - ratio"))?)?;
        }
        Ok(x)
    })
}

/// The two stochastic steps of the consistency estimate, from x at σ to σ' < σ, drawn on the host.
struct StepPair {
    sigma: Vec<f64>,
    sigma_prime: Vec<f64>,
    step: ConsistencyStep,
    /// The step noises of x¹ and x².
    z: [Vec<f64>; 2],
}

impl StepPair {
    /// Draws z¹ then z² for points of `shape` [N, C, H, W].
    fn draw(
        sigma: Vec<f64>,
        sigma_prime: Vec<f64>,
        step: ConsistencyStep,
        shape: &Shape,
        rng: &mut impl Rng,
    ) -> Result<StepPair> {
        let (n, ..) = shape.nchw("consistency")?;
        if sigma.len() != n || sigma_prime.len() != n {
            bail!("consistency: {} σ and {} σ' for a batch of shape {shape}", sigma.len(), sigma_prime.len());
        }
        if let Some(i) = (0..n).find(|&i| !(0.0 < sigma_prime[i] && sigma_prime[i] < sigma[i])) {
            bail!("consistency: need 0 < σ' < σ, got σ = {}, σ' = {} (example {i})", sigma[i], sigma_prime[i]);
        }
        let mut noise = || (0..shape.numel()).map(|_| StandardNormal.sample(&mut *rng)).collect::<Vec<f64>>();
        let z = [noise(), noise()];
        Ok(StepPair { sigma, sigma_prime, step, z })
    }

    /// σ' for the batch of stepped points, x¹_i and x²_i next to each other.
    fn stepped(&self) -> Vec<f64> {
        self.sigma_prime.iter().flat_map(|&s| [s, s]).collect()
    }

    /// The step's mean (σ'²/σ²) x + (1 − σ'²/σ²) D, shared by both variants, its noise scale and noises.
    fn columns(&self, shape: &Shape, out: &mut Columns) {
        let n = self.sigma.len();
        let r: Vec<f64> = self.sigma.iter().zip(&self.sigma_prime).map(|(s, p)| p * p / (s * s)).collect();
        let std = self.sigma.iter().zip(&self.sigma_prime).map(|(s, p)| match self.step {
            ConsistencyStep::ReverseSde => (s * s - p * p).sqrt(),
            ConsistencyStep::Ancestral => p * (1.0 - p * p / (s * s)).sqrt(),
        });
        out.push("step 1 - r", [n], r.iter().map(|r| 1.0 - r).collect());
        out.push("step r", [n], r);
        out.push("step std", [n], std.collect());
        out.push("z1", shape.clone(), self.z[0].clone());
        out.push("z2", shape.clone(), self.z[1].clone());
    }
}

/// The consistency estimate's device side: per-example L_c [N] at the point x, with gradient through
/// D(x; σ) and D(x^k; σ') and none through the points.
fn consistency_estimate(denoise: &impl DenoiseAt, x: &Tensor, b: &DeviceBatch, compute: DType) -> Result<Tensor> {
    let (n, c, h, w) = x.shape().nchw("consistency")?;
    let x = x.detach();
    let d0 = run(denoise, &x, Level::Consistency, compute)?;
    let x12 = no_grad(|| -> Result<Tensor> {
        let mean = blend(&x, b.get("step r")?, &d0.detach(), b.get("step 1 - r")?)?;
        let std = b.get("step std")?;
        let x1 = ops::add(&mean, &ops::mul_along(b.get("z1")?, std, 0)?)?;
        let x2 = ops::add(&mean, &ops::mul_along(b.get("z2")?, std, 0)?)?;
        // One batch of 2N: [N, 2C, H, W] viewed as [2N, C, H, W] interleaves x¹_i, x²_i.
        layout::concat_channels(&[&x1, &x2])?.reshape([2 * n, c, h, w])
    })?;
    let d12 = run(denoise, &x12, Level::Stepped, compute)?.reshape([n, 2 * c, h, w])?;
    let parts = layout::split_channels(&d12, &[c, c])?;
    let prod = ops::mul(&ops::sub(&parts[0], &d0)?, &ops::sub(&parts[1], &d0)?)?;
    ops::scale(&ops::sum_per_example(&prod)?, 1.0 / (c * h * w) as f64)
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
    let pair = StepPair::draw(sigma.to_vec(), sigma_prime.to_vec(), step, x.shape(), rng)?;
    let mut columns = Columns::default();
    pair.columns(x.shape(), &mut columns);
    let at = |x: &Tensor, level| match level {
        Level::Consistency => denoise(x, &pair.sigma),
        Level::Stepped => denoise(x, &pair.stepped()),
        _ => bail!("consistency: no noise levels for {level:?}"),
    };
    consistency_estimate(&at, x, &columns.to_batch(x)?, compute)
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
    let descent = Descent { from: sigma_from.to_vec(), to: sigma_to.to_vec(), steps };
    let mut columns = Columns::default();
    descent.columns(&mut columns);
    let at = |x: &Tensor, level| match level {
        Level::Descent(k) => denoise(x, &descent.at(k)),
        _ => bail!("descent: no noise levels for {level:?}"),
    };
    descend(&at, x, steps, &columns.to_batch(x)?, compute)
}

/// Every host draw of one Tweedie loss, in the order they are drawn: σ_t, η, then (with consistency) σ and
/// the two step noises.
struct Draws {
    /// The shape of x_n, [N, C, H, W].
    shape: Shape,
    sigma_n: Vec<f64>,
    sigma_t: Vec<f64>,
    eta: Vec<f64>,
    consistency: Option<(Descent, StepPair)>,
}

impl Draws {
    /// Checks the options against σ_n and draws.
    fn draw(edm: &Edm, sigma_n: &[f64], shape: &Shape, opts: &TweedieOptions, rng: &mut impl Rng) -> Result<Draws> {
        let n = check_sigma_n("tweedie_loss", sigma_n, shape)?;
        if !(opts.margin >= 0.0 && opts.margin.is_finite()) {
            bail!("tweedie_loss: margin {} must be a finite number ≥ 0", opts.margin);
        }
        let sigma_t: Vec<f64> = match opts.fixed_sigma {
            Some(s) => {
                if let Some(bad) = sigma_n.iter().find(|&&sn| s.is_nan() || s <= sn) {
                    bail!("tweedie_loss: fixed σ_t = {s} must exceed σ_n = {bad}");
                }
                vec![s; n]
            }
            None => {
                sigma_n.iter().map(|&sn| truncated_sigma(edm, sn * (1.0 + opts.margin), f64::INFINITY, rng)).collect()
            }
        };
        let eta = (0..shape.numel()).map(|_| StandardNormal.sample(&mut *rng)).collect();
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
                let sigma_p = sigma.iter().map(|s| s * (1.0 - c.rel_step)).collect();
                let descent = Descent { from: sigma_n.to_vec(), to: sigma.clone(), steps: c.descent_steps };
                Some((descent, StepPair::draw(sigma, sigma_p, c.step, shape, rng)?))
            }
        };
        Ok(Draws { shape: shape.clone(), sigma_n: sigma_n.to_vec(), sigma_t, eta, consistency })
    }

    /// Where the loss evaluates the denoiser.
    fn levels(&self) -> Vec<Level> {
        let mut levels = vec![Level::Above];
        if let Some((descent, _)) = &self.consistency {
            levels.extend((0..descent.steps).map(Level::Descent));
            levels.extend([Level::Consistency, Level::Stepped]);
        }
        levels
    }

    /// The noise levels of an evaluation.
    fn sigma_at(&self, level: Level) -> Result<Vec<f64>> {
        match (level, &self.consistency) {
            (Level::Above, _) => Ok(self.sigma_t.clone()),
            (Level::Descent(k), Some((descent, _))) => Ok(descent.at(k)),
            (Level::Consistency, Some((_, pair))) => Ok(pair.sigma.clone()),
            (Level::Stepped, Some((_, pair))) => Ok(pair.stepped()),
            _ => bail!("tweedie_loss: {level:?} is evaluated only with consistency"),
        }
    }

    /// What the device side reads: η and the per-example coefficients of x_t, x̂_n and the weight, then the
    /// descent's and the step pair's.
    fn columns(&self, edm: &Edm, opts: &TweedieOptions) -> Columns {
        let n = self.sigma_n.len();
        let m = (self.shape.numel() / n) as f64;
        let mut out = Columns::default();
        let pairs = || self.sigma_n.iter().zip(&self.sigma_t);
        out.push("eta", self.shape.clone(), self.eta.clone());
        out.push("top-up", [n], pairs().map(|(sn, st)| (st * st - sn * sn).sqrt()).collect());
        // x̂_n = (σ_n²/σ_t²) x_t + (1 − σ_n²/σ_t²) x̂0
        out.push("r", [n], pairs().map(|(sn, st)| sn * sn / (st * st)).collect());
        out.push("1 - r", [n], pairs().map(|(sn, st)| 1.0 - sn * sn / (st * st)).collect());
        let weight = pairs().map(|(&sn, &st)| {
            let extra = if opts.pseudo_target_weight { st.powi(4) / (st * st - sn * sn).powi(2) } else { 1.0 };
            edm.loss_weight(st) * extra / if opts.mean_over_pixels { m } else { 1.0 }
        });
        out.push("weight", [n], weight.collect());
        if let Some((descent, pair)) = &self.consistency {
            descent.columns(&mut out);
            pair.columns(&self.shape, &mut out);
        }
        out
    }
}

/// One loss on the device: (loss, per-example Tweedie terms, per-example consistency estimates).
type DeviceParts = (Tensor, Tensor, Option<Tensor>);

/// The device side of the Tweedie loss: every host draw is in `b` (as [`Draws::columns`] names it) and
/// `denoise` is the network at each evaluation's noise levels.
fn device_loss(
    denoise: &impl DenoiseAt,
    x_n: &Tensor,
    b: &DeviceBatch,
    opts: &TweedieOptions,
    compute: DType,
) -> Result<DeviceParts> {
    let n = x_n.dims()[0];
    let x_n = x_n.detach();
    // x_t = x_n + √(σ_t² − σ_n²) η', so x_t ~ x0 + σ_t η'' exactly.
    let x_t = ops::add(&x_n, &ops::mul_along(b.get("eta")?, b.get("top-up")?, 0)?)?;
    let x0_hat = run(denoise, &x_t, Level::Above, compute)?;
    let xn_hat = blend(&x_t, b.get("r")?, &x0_hat, b.get("1 - r")?)?;
    let sq = ops::sum_per_example(&ops::square(&ops::sub(&xn_hat, &x_n)?)?)?;
    let tweedie = ops::mul(&sq, b.get("weight")?)?;
    let mut loss = ops::scale(&ops::sum_all(&tweedie)?, 1.0 / n as f64)?;
    let consistency = match &opts.consistency {
        None => None,
        Some(c) => {
            let x = descend(denoise, &x_n, c.descent_steps, b, compute)?;
            let lc = consistency_estimate(denoise, &x, b, compute)?;
            loss = ops::add(&loss, &ops::scale(&ops::sum_all(&lc)?, c.weight / n as f64)?)?;
            Some(lc)
        }
    };
    Ok((loss, tweedie, consistency))
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
    let draws = Draws::draw(edm, sigma_n, x_n.shape(), opts, rng)?;
    let batch = draws.columns(edm, opts).to_batch(x_n)?;
    let at = |x: &Tensor, level| denoise(x, &draws.sigma_at(level)?);
    let compute = opts.compute.unwrap_or(x_n.dtype());
    let (loss, tweedie, lc) = device_loss(&at, x_n, &batch, opts, compute)?;
    let consistency = match (lc, draws.consistency) {
        (Some(lc), Some((_, pair))) => Some((lc, pair.sigma, pair.sigma_prime)),
        _ => None,
    };
    Ok(TweedieLoss { loss, tweedie, sigma_t: draws.sigma_t, consistency })
}

/// All-ones mask channels for a network that has them (it sees fully observed data), else None.
fn full_mask(den: &EdmDenoiser, x: &Tensor) -> Result<Option<Tensor>> {
    let (n, _, h, w) = x.shape().nchw("tweedie denoiser")?;
    let extra = den.net.config.extra_in_channels;
    (extra > 0).then(|| Tensor::full([n, extra, h, w], 1.0, x.dtype(), x.device())).transpose()
}

fn edm_closure<'a>(den: &'a EdmDenoiser, train_seed: Option<TrainSeed>) -> impl Denoise + 'a {
    move |x: &Tensor, sigma: &[f64]| den.denoise(x, sigma, full_mask(den, x)?.as_ref(), train_seed)
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

    /// The noisy images of the batch, then (in [`tweedie_loss`]'s order) σ_t, η and, with consistency, σ
    /// and the step noises, with EDM's preconditioning at every level the loss evaluates the network.
    fn draw(&self, step: DrawInputs<'_>, host: &mut HostBatch) -> Result<()> {
        let (d, den) = corrupted_edm("Tweedie", step.data, step.model)?;
        let opts = training_options(step.options, step.compute);
        let [_, c, h, w] = d.dims;
        let n = step.indices.len();
        let shape = Shape::from([n, c, h, w]);
        host.push_f32("x_n", shape.clone(), &gather(&d.y, c * h * w, step.indices))?;
        let draws = Draws::draw(&den.edm, &vec![d.spec.sigma0; n], &shape, &opts, step.rng)?;
        draws.columns(&den.edm, &opts).push_to(host)?;
        for level in draws.levels() {
            super::push_preconditioning(host, &level.name(), &den.edm, &draws.sigma_at(level)?)?;
        }
        Ok(())
    }

    fn device_loss(&self, batch: &DeviceBatch, step: LossInputs<'_>) -> Result<Tensor> {
        let (_, den) = corrupted_edm("Tweedie", step.data, step.model)?;
        let opts = training_options(step.options, step.compute);
        let at = |x: &Tensor, level: Level| {
            let p = super::preconditioning(batch, &level.name(), step.compute)?;
            den.denoise_preconditioned(x, &p, full_mask(den, x)?.as_ref(), step.dropout_seed)
        };
        Ok(device_loss(&at, batch.get("x_n")?, batch, &opts, step.compute)?.0)
    }
}

/// The trainer's Tweedie options: the loss a pixel mean, consistency at `--consistency W` when W > 0.
fn training_options(options: &TrainOptions, compute: DType) -> TweedieOptions {
    let weight = options.consistency;
    let consistency = (weight > 0.0).then(|| ConsistencyOptions { weight, ..ConsistencyOptions::default() });
    TweedieOptions { compute: Some(compute), mean_over_pixels: true, consistency, ..TweedieOptions::default() }
}
