//! Test harnesses shared by every op: a finite-difference gradient check in f64 on the CPU, and a
//! CPU/CUDA parity check (forward and backward) that skips, saying so, when no GPU is present.
//!
//! Comparisons are written `!(err <= tol)` on purpose: a NaN error must fail.
//!
//! Both treat an op as `f(inputs) -> output` and differentiate the scalar `sum(output ⊙ w)` for a fixed
//! random `w`, so every output element's gradient path is exercised.
#![allow(clippy::neg_cmp_op_on_partial_ord)]
use crate::autograd::{backward, no_grad};
use crate::backend::cuda::Gpu;
use crate::ops::{mul, sum_all};
use crate::{DType, Device, Tensor};
use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The CUDA device when one is usable; otherwise prints why the calling test skips and returns None.
pub fn gpu_or_skip(test: &str) -> Option<Device> {
    match Gpu::shared() {
        Ok(gpu) => Some(Device::Cuda(gpu)),
        Err(e) => {
            println!("skipped {test}: no GPU ({e})");
            None
        }
    }
}

/// A seeded generator for test inputs.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Standard normal f64 CPU tensor.
pub fn randn(shape: &[usize], rng: &mut StdRng) -> Tensor {
    Tensor::randn(shape.to_vec(), DType::F64, &Device::Cpu, rng).unwrap()
}

/// Uniform f64 CPU tensor in [lo, hi).
pub fn uniform(shape: &[usize], lo: f64, hi: f64, rng: &mut StdRng) -> Tensor {
    Tensor::rand_uniform(shape.to_vec(), lo, hi, DType::F64, &Device::Cpu, rng).unwrap()
}

/// 0/1 f64 CPU mask with P(1) = p.
pub fn mask(shape: &[usize], p: f64, rng: &mut StdRng) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| if rng.random::<f64>() < p { 1.0 } else { 0.0 }).collect();
    Tensor::from_f64(&v, shape.to_vec(), DType::F64, &Device::Cpu).unwrap()
}

fn weighted_sum(out: &Tensor, w: &Tensor) -> Result<Tensor> {
    sum_all(&mul(out, w)?)
}

/// Options for [`gradcheck`].
#[derive(Clone, Copy, Debug)]
pub struct GradCheck {
    /// Finite-difference step.
    pub step: f64,
    /// Allowed |analytic - numeric| / max(1, |numeric|).
    pub tol: f64,
    /// At most this many coordinates per input are probed (chosen at random, seeded).
    pub max_probes: usize,
}

impl Default for GradCheck {
    fn default() -> Self {
        GradCheck { step: 1e-6, tol: 1e-6, max_probes: 48 }
    }
}

/// Checks the backward of `f` against central finite differences, in f64 on the CPU, for the inputs whose
/// indices are listed in `wrt` (the others, masks for example, are held fixed).
pub fn gradcheck(f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor], wrt: &[usize]) -> Result<()> {
    gradcheck_with(f, inputs, wrt, GradCheck::default())
}

pub fn gradcheck_with(
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    wrt: &[usize],
    opts: GradCheck,
) -> Result<()> {
    for t in inputs {
        if t.dtype() != DType::F64 || t.device() != &Device::Cpu {
            bail!("gradcheck takes f64 CPU inputs, got {t:?}");
        }
    }
    let leaves: Vec<Tensor> =
        inputs.iter().enumerate().map(|(i, t)| t.detach().set_requires_grad(wrt.contains(&i))).collect();
    let out = f(&leaves)?;
    let mut r = rng(0x9e37);
    let w = randn(out.dims(), &mut r);
    let grads = backward(&weighted_sum(&out, &w)?)?;

    let loss_at = |i: usize, values: &[f64]| -> Result<f64> {
        let mut probe: Vec<Tensor> = inputs.to_vec();
        probe[i] = Tensor::from_f64(values, inputs[i].shape().clone(), DType::F64, &Device::Cpu)?;
        no_grad(|| weighted_sum(&f(&probe)?, &w)?.item())
    };
    for &i in wrt {
        let analytic = match grads.get(&leaves[i]) {
            Some(g) => g.to_vec_f64()?,
            None => vec![0.0; inputs[i].numel()],
        };
        let base = inputs[i].to_vec_f64()?;
        let n = base.len();
        let probes: Vec<usize> = if n <= opts.max_probes {
            (0..n).collect()
        } else {
            (0..opts.max_probes).map(|_| r.random_range(0..n)).collect()
        };
        for j in probes {
            let mut v = base.clone();
            v[j] = base[j] + opts.step;
            let up = loss_at(i, &v)?;
            v[j] = base[j] - opts.step;
            let down = loss_at(i, &v)?;
            let numeric = (up - down) / (2.0 * opts.step);
            let err = (analytic[j] - numeric).abs() / numeric.abs().max(1.0);
            if !(err <= opts.tol) {
                bail!(
                    "gradient of input {i} at flat index {j} (shape {}): analytic {} vs numeric {} (error {err:.2e} > {:.0e})",
                    inputs[i].shape(),
                    analytic[j],
                    numeric,
                    opts.tol
                );
            }
        }
    }
    Ok(())
}

/// Largest |a - r| / (rms(r) + |r|): a relative error that stays meaningful near zero.
pub fn rel_error(actual: &[f64], reference: &[f64]) -> f64 {
    let rms = (reference.iter().map(|x| x * x).sum::<f64>() / reference.len().max(1) as f64).sqrt();
    actual
        .iter()
        .zip(reference)
        .map(|(a, r)| if a.is_finite() { (a - r).abs() / (rms + r.abs() + 1e-30) } else { f64::INFINITY })
        .fold(0.0, f64::max)
}

/// Rounds f64 values to what `dtype` can hold, so the reference sees the same inputs as the device.
pub fn round_to(values: &[f64], dtype: DType) -> Vec<f64> {
    match dtype {
        DType::F64 => values.to_vec(),
        DType::F32 => values.iter().map(|&x| x as f32 as f64).collect(),
        DType::BF16 => values.iter().map(|&x| half::bf16::from_f64(x).to_f64()).collect(),
    }
}

/// What a parity run measured (max relative errors of the output and of each checked input gradient).
#[derive(Debug)]
pub struct Parity {
    pub output_error: f64,
    pub grad_errors: Vec<f64>,
}

/// Runs `f` on the CUDA device in `dtype` and on the CPU in f64 on the same (rounded) inputs and compares
/// the output and the gradients of the inputs listed in `wrt`. Returns None (after printing that it
/// skipped) without a GPU. `tol` defaults to the dtype's tolerance when None.
pub fn parity(
    name: &str,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    wrt: &[usize],
    dtype: DType,
    tol: Option<f64>,
) -> Result<Option<Parity>> {
    let Some(gpu) = gpu_or_skip(name) else { return Ok(None) };
    let tol = tol.unwrap_or(dtype.tolerance());
    let rounded: Vec<Vec<f64>> = inputs.iter().map(|t| Ok(round_to(&t.to_vec_f64()?, dtype))).collect::<Result<_>>()?;

    let run = |device: &Device, dt: DType| -> Result<(Vec<f64>, Vec<Vec<f64>>)> {
        let leaves: Vec<Tensor> = inputs
            .iter()
            .zip(&rounded)
            .enumerate()
            .map(|(i, (t, v))| {
                Ok(Tensor::from_f64(v, t.shape().clone(), dt, device)?.set_requires_grad(wrt.contains(&i)))
            })
            .collect::<Result<_>>()?;
        let out = f(&leaves).with_context(|| format!("{name} on {device}"))?;
        let mut r = rng(0x5eed);
        let w = round_to(&randn(out.dims(), &mut r).to_vec_f64()?, dtype);
        // The weight lives where the output does, in its dtype: an op may return its result on another
        // device than its inputs' (`to_device`) or in another dtype, and `mul` never moves or casts.
        let w = Tensor::from_f64(&w, out.shape().clone(), out.dtype(), out.device())?;
        let grads = if wrt.is_empty() { None } else { Some(backward(&weighted_sum(&out, &w)?)?) };
        let mut gs = Vec::new();
        for &i in wrt {
            let g = grads.as_ref().and_then(|g| g.get(&leaves[i]));
            gs.push(match g {
                Some(g) => g.to_vec_f64()?,
                None => vec![0.0; leaves[i].numel()],
            });
        }
        Ok((out.to_vec_f64()?, gs))
    };
    let (ref_out, ref_grads) = run(&Device::Cpu, DType::F64)?;
    let (out, grads) = run(&gpu, dtype)?;
    let report = Parity {
        output_error: rel_error(&out, &ref_out),
        grad_errors: grads.iter().zip(&ref_grads).map(|(a, r)| rel_error(a, r)).collect(),
    };
    println!("parity {name} {dtype}: output {:.2e}, grads {:?}", report.output_error, report.grad_errors);
    if !(report.output_error <= tol) {
        bail!("{name} {dtype}: CUDA output differs from the CPU reference by {:.2e} > {tol:.0e}", report.output_error);
    }
    for (k, e) in report.grad_errors.iter().enumerate() {
        if !(*e <= tol) {
            bail!("{name} {dtype}: gradient of input {} differs from the CPU reference by {e:.2e} > {tol:.0e}", wrt[k]);
        }
    }
    Ok(Some(report))
}

/// Two denoising curves (t, MSE) beside a reference one (the oracle's): the printed table and, for each
/// curve, the summed |ln(curve / reference)| over t (0 when it coincides with the reference). The
/// reproduction tests assert on these.
pub struct CurveGaps {
    pub table: String,
    pub gap_a: f64,
    pub gap_b: f64,
    /// Per t: is curve a closer to the reference than curve b?
    pub a_closer: Vec<(usize, bool)>,
}

pub fn curve_gaps(reference: &[(usize, f64)], a: &[(usize, f64)], b: &[(usize, f64)], names: [&str; 3]) -> CurveGaps {
    let mut g = CurveGaps { table: String::new(), gap_a: 0.0, gap_b: 0.0, a_closer: Vec::new() };
    for ((r, x), y) in reference.iter().zip(a).zip(b) {
        let [nr, na, nb] = names;
        g.table.push_str(&format!("t={:>3} {nr} {:.5} {na} {:.5} {nb} {:.5}\n", r.0, r.1, x.1, y.1));
        let (da, db) = ((x.1 / r.1).ln().abs(), (y.1 / r.1).ln().abs());
        g.gap_a += da;
        g.gap_b += db;
        g.a_closer.push((r.0, da < db));
    }
    g
}
