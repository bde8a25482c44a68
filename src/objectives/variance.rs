//! Where GSURE's gradient noise comes from (issue 15): at one fixed θ and one fixed t, the gradient of four
//! losses over many batches of the same corrupted dataset. All four are in x0 space (an ε-prediction
//! network's output is turned into x̂0 = (x − √(1−ᾱ) ε̂)/√ᾱ, as GSURE does), averaged over pixels and batch:
//!
//! * `oracle`: ‖D(x_t) − x0‖² on every pixel, x_t = √ᾱ x0 + √(1−ᾱ) ε from the clean image: the quantity
//!   the supervised run minimises, up to its per-t weighting;
//! * `masked`: W² ⊙ (D(x_t) − x0)² on the observed pixels only, same input. Over the random masks it has the
//!   oracle's expectation (E[M W²] = 1), so its distance to the oracle measures this run's Monte-Carlo
//!   floor, and its variance what masking the loss alone costs;
//! * `gsure-data`: GSURE's data term W² ⊙ (D(x̄_t) − ȳ)² on O, from the top-up noised observation x̄_t
//!   (no signal off O) and the noisy target ȳ;
//! * `gsure`: the whole GSURE loss (the run's mode, `ybar` by default): the data term plus the Monte-Carlo
//!   divergence, drawn with the same noise and probe as `gsure-data`, so their difference is the
//!   divergence term's share. (In `xt` mode the data term's target is x̄_t/√ᾱ_t, not ȳ.)
//!
//! For each loss: ‖E g‖, tr Cov g (E‖g − E g‖², one batch's gradient), their ratio, and ‖E g − E g_oracle‖
//! relative to ‖E g_oracle‖. The expectations are means over `batches` batches, so the distances carry a
//! Monte-Carlo part of about √(tr Cov / batches) / ‖E g_oracle‖, which `masked` shows.
use super::gsure::{GsureMode, GsureObjective, Noised, ProbeKind};
use crate::corruption::{Basis, CorruptedData};
use crate::diffusion::schedule::VpSchedule;
use crate::nn::{DdimUnet, Prediction};
use crate::ops::gsure_loss::GsureCoefs;
use crate::{autograd, ops, DType, Device, ParamStore, Tensor};
use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

/// The losses measured, in the order of [`VariancePoint::losses`].
pub const LOSSES: [&str; 4] = ["oracle", "masked", "gsure-data", "gsure"];

#[derive(Clone, Debug)]
pub struct VarianceOptions {
    pub times: Vec<usize>,
    /// Batches per timestep.
    pub batches: usize,
    pub batch: usize,
    pub seed: u64,
    /// The GSURE loss whose terms are measured (a run's `--gsure-mode` and `--gsure-probe`).
    pub mode: GsureMode,
    pub probe: ProbeKind,
    pub div_every: usize,
}

impl Default for VarianceOptions {
    fn default() -> Self {
        VarianceOptions {
            times: vec![10, 50, 100, 300, 600, 900],
            batches: 64,
            batch: 16,
            seed: 0,
            mode: GsureMode::Ybar,
            probe: ProbeKind::Rademacher,
            div_every: 1,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct GradientStats {
    pub loss: &'static str,
    /// ‖E g‖.
    pub mean_norm: f64,
    /// E‖g − E g‖² (the trace of one batch's gradient covariance).
    pub trace_cov: f64,
    /// tr Cov / ‖E g‖²: the noise-to-signal ratio of one batch's gradient.
    pub relative_variance: f64,
    /// ‖E g − E g_oracle‖ / ‖E g_oracle‖.
    pub distance_to_oracle: f64,
    /// The mean loss.
    pub mean_loss: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct VariancePoint {
    pub t: usize,
    pub losses: Vec<GradientStats>,
}

/// Running sums of flat gradients.
struct Accumulator {
    sum: Vec<f64>,
    sum_sq_norm: f64,
    sum_loss: f64,
    count: usize,
}

impl Accumulator {
    fn new(n: usize) -> Self {
        Accumulator { sum: vec![0.0; n], sum_sq_norm: 0.0, sum_loss: 0.0, count: 0 }
    }
    fn add(&mut self, g: &[f32], loss: f64) {
        for (s, &v) in self.sum.iter_mut().zip(g) {
            *s += v as f64;
        }
        self.sum_sq_norm += g.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>();
        self.sum_loss += loss;
        self.count += 1;
    }
    fn mean(&self) -> Vec<f64> {
        self.sum.iter().map(|s| s / self.count as f64).collect()
    }
}

/// The gradient of `loss` with respect to every parameter, flattened in `params`' order.
fn flat_gradient(loss: &Tensor, params: &ParamStore) -> Result<(Vec<f32>, f64)> {
    let value = loss.to_vec_f64()?[0];
    let grads = autograd::backward(loss)?;
    let mut flat = Vec::with_capacity(params.num_scalars());
    for (_, p) in params.iter() {
        match grads.get(p) {
            Some(g) => flat.extend(g.to_vec_f32()?),
            None => flat.extend(std::iter::repeat_n(0.0, p.numel())),
        }
    }
    Ok((flat, value))
}

/// Measures the four losses' gradients at the weights in `params` (those of `net`) on `data`, a
/// pixel-basis corrupted dataset with its clean images, at each of `opts.times`.
pub fn gradient_variance(
    net: &DdimUnet,
    params: &ParamStore,
    data: &CorruptedData,
    schedule: &VpSchedule,
    opts: &VarianceOptions,
    mut progress: impl FnMut(&str),
) -> Result<Vec<VariancePoint>> {
    let Some((clean, clean_dims)) = &data.clean else {
        bail!("gradient variance: the dataset has no clean images, which the oracle's gradient needs");
    };
    let [n, c, h, w] = data.dims;
    if clean_dims[1..] != [c, h, w] {
        bail!("gradient variance: clean images {clean_dims:?} do not match the observations {:?}", data.dims);
    }
    if opts.batch == 0 || opts.batch > n || opts.batches < 2 {
        bail!("gradient variance: batch {} of {n} images and {} batches (at least 2)", opts.batch, opts.batches);
    }
    if let Some(t) = opts.times.iter().find(|&&t| t >= schedule.steps()) {
        bail!("gradient variance: t = {t} is outside the schedule's {} steps", schedule.steps());
    }
    let device = Device::Cpu;
    let m = c * h * w;
    let objective = GsureObjective {
        probe: opts.probe,
        div_every: opts.div_every,
        ..GsureObjective::for_dtype(opts.mode, DType::F32)
    };
    let mut points = Vec::new();
    for &t in &opts.times {
        let ab = schedule.alpha_bar(t);
        let (sab, s1ab) = (ab.sqrt(), (1.0 - ab).sqrt());
        let b = opts.batch;
        let tt = Tensor::from_f32(&vec![t as f32; b], [b], &device)?;
        // The network as an x0 predictor at this t.
        let x0_net = |x: &Tensor, times: &Tensor| -> Result<Tensor> {
            let out = net.forward(x, times, None)?;
            match net.config.prediction {
                Prediction::X0 => Ok(out),
                Prediction::Eps => ops::affine(&ops::sub(x, &ops::affine(&out, s1ab, 0.0)?)?, 1.0 / sab, 0.0),
            }
        };
        let mut acc: Vec<Accumulator> = LOSSES.iter().map(|_| Accumulator::new(params.num_scalars())).collect();
        for k in 0..opts.batches {
            let mut rng = StdRng::seed_from_u64(crate::nn::layer_seed(opts.seed ^ ((t as u64) << 32), k as u64));
            let indices: Vec<usize> = rand::seq::index::sample(&mut rng, n, b).into_vec();
            let spectral = data.spectral(&indices, &device, DType::F32)?;
            if spectral.basis != Basis::Pixel {
                bail!("gradient variance: only pixel-basis operators (not MRI k-space) are measured");
            }
            let x0_host = super::gather(clean, m, &indices);
            let x0 = Tensor::from_f32(&x0_host, [b, c, h, w], &device)?;
            let xt_host: Vec<f32> = x0_host
                .iter()
                .map(|&x| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    (sab * x as f64 + s1ab * z) as f32
                })
                .collect();
            let xt = Tensor::from_f32(&xt_host, [b, c, h, w], &device)?;
            // oracle and masked: the same input and noise, two losses.
            for (slot, weights) in [(0, None), (1, Some(&spectral.w2))] {
                let sq = ops::square(&ops::sub(&x0_net(&xt, &tt)?, &x0)?)?;
                let per_pixel = match weights {
                    Some(w2) => ops::mul(&sq, w2)?,
                    None => sq,
                };
                let (g, l) = flat_gradient(&ops::mean_all(&per_pixel)?, params)?;
                acc[slot].add(&g, l);
            }
            // gsure and its data term: one draw of x̄_t and the probe; the data term has c_div = 0.
            let drawn = objective.prepare(&spectral, schedule, &vec![t; b], &mut rng)?;
            let data_only = Noised {
                xt: drawn.xt.clone(),
                xt_eps: drawn.xt_eps.clone(),
                target: drawn.target.clone(),
                probe: drawn.probe.clone(),
                t: drawn.t.clone(),
                coefs: GsureCoefs::new(&vec![0.0; b], &drawn.eps)?.into(),
                eps: drawn.eps.clone(),
            };
            for (slot, draws) in [(2, &data_only), (3, &drawn)] {
                let loss = ops::mean_all(&objective.loss_per_example_prepared(&x0_net, &spectral, draws)?)?;
                let (g, l) = flat_gradient(&loss, params)?;
                acc[slot].add(&g, l);
            }
        }
        let oracle_mean = acc[0].mean();
        let oracle_norm = oracle_mean.iter().map(|v| v * v).sum::<f64>().sqrt();
        let losses = LOSSES
            .iter()
            .zip(&acc)
            .map(|(&name, a)| {
                let mean = a.mean();
                let mean_sq = mean.iter().map(|v| v * v).sum::<f64>();
                // E‖g‖² − ‖E g‖², with the unbiased (K − 1) normalisation.
                let k = a.count as f64;
                let trace_cov = ((a.sum_sq_norm / k - mean_sq) * k / (k - 1.0)).max(0.0);
                let dist = mean.iter().zip(&oracle_mean).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
                GradientStats {
                    loss: name,
                    mean_norm: mean_sq.sqrt(),
                    trace_cov,
                    relative_variance: trace_cov / mean_sq.max(f64::MIN_POSITIVE),
                    distance_to_oracle: dist / oracle_norm.max(f64::MIN_POSITIVE),
                    mean_loss: a.sum_loss / k,
                }
            })
            .collect::<Vec<_>>();
        progress(&format!(
            "t = {t:3}: {}",
            losses
                .iter()
                .map(|s| format!("{} rel.var {:.3} dist {:.3}", s.loss, s.relative_variance, s.distance_to_oracle))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        points.push(VariancePoint { t, losses });
    }
    Ok(points)
}
