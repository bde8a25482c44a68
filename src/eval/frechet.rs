//! Fréchet distance between Gaussian fits of feature sets (docs/METHODS.md §7), with the symmetric
//! eigendecomposition it needs: cyclic Jacobi rotations in f64 (exact to rounding for the 128×128
//! covariances here, and simple enough to trust).
//!
//! d² = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2}. The inner matrix is symmetric
//! positive semi-definite, so both square roots are taken through symmetric eigendecompositions, with
//! eigenvalues below zero (rounding) clamped to 0.
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Eigendecomposition of a symmetric n×n matrix (row-major): (eigenvalues ascending, eigenvectors as the
/// columns of an n×n row-major matrix, in the same order). Refuses non-symmetric or non-finite input.
pub fn sym_eigen(a: &[f64], n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    if a.len() != n * n {
        bail!("sym_eigen: {} values for a {n}×{n} matrix", a.len());
    }
    if a.iter().any(|v| !v.is_finite()) {
        bail!("sym_eigen: the {n}×{n} matrix has non-finite entries");
    }
    let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for i in 0..n {
        for j in 0..i {
            if (a[i * n + j] - a[j * n + i]).abs() > 1e-9 * scale.max(1e-300) {
                bail!("sym_eigen: the {n}×{n} matrix is not symmetric (entry ({i}, {j}))");
            }
        }
    }
    // Work on the exactly symmetrised copy.
    let mut m: Vec<f64> = (0..n * n).map(|k| 0.5 * (a[k] + a[(k % n) * n + k / n])).collect();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let frob = m.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * n + j].powi(2))
            .sum();
        if off.sqrt() <= 1e-15 * frob || frob == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                // The rotation J (J_pp = J_qq = c, J_pq = s, J_qp = −s) that zeroes entry (p, q) of JᵀMJ:
                // t = tan φ is the smaller root of t² + 2θt − 1 = 0, θ = (M_qq − M_pp) / (2 M_pq).
                let theta = (m[q * n + q] - m[p * n + p]) / (2.0 * apq);
                let t =
                    if theta.is_finite() { theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt()) } else { 0.0 };
                if t == 0.0 {
                    continue;
                }
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    // M ← M J (columns p and q)
                    let (mkp, mkq) = (m[k * n + p], m[k * n + q]);
                    m[k * n + p] = c * mkp - s * mkq;
                    m[k * n + q] = s * mkp + c * mkq;
                    // V ← V J
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
                for k in 0..n {
                    // M ← Jᵀ M (rows p and q)
                    let (mpk, mqk) = (m[p * n + k], m[q * n + k]);
                    m[p * n + k] = c * mpk - s * mqk;
                    m[q * n + k] = s * mpk + c * mqk;
                }
                m[p * n + q] = 0.0;
                m[q * n + p] = 0.0;
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| m[i * n + i].total_cmp(&m[j * n + j]));
    let values = order.iter().map(|&i| m[i * n + i]).collect();
    let mut vectors = vec![0.0; n * n];
    for (new, &old) in order.iter().enumerate() {
        for k in 0..n {
            vectors[k * n + new] = v[k * n + old];
        }
    }
    Ok((values, vectors))
}

/// V f(Λ) Vᵀ for a symmetric matrix.
fn spectral_map(a: &[f64], n: usize, f: impl Fn(f64) -> f64) -> Result<Vec<f64>> {
    let (vals, vecs) = sym_eigen(a, n)?;
    let fv: Vec<f64> = vals.iter().map(|&x| f(x)).collect();
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            out[i * n + j] = (0..n).map(|k| vecs[i * n + k] * fv[k] * vecs[j * n + k]).sum();
        }
    }
    Ok(out)
}

/// The symmetric square root of a symmetric positive semi-definite matrix (negative eigenvalues, from
/// rounding, count as 0).
pub fn sqrtm_psd(a: &[f64], n: usize) -> Result<Vec<f64>> {
    spectral_map(a, n, |x| x.max(0.0).sqrt())
}

fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            for j in 0..n {
                out[i * n + j] += aik * b[k * n + j];
            }
        }
    }
    out
}

/// A Gaussian fit: mean and (unbiased, n − 1) covariance, d×d row-major.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Gaussian {
    pub dim: usize,
    pub count: usize,
    pub mean: Vec<f64>,
    pub cov: Vec<f64>,
}

impl Gaussian {
    /// Fits rows of `features` [n, d] (n ≥ 2).
    pub fn fit(features: &[f32], n: usize, d: usize) -> Result<Gaussian> {
        if n < 2 || features.len() != n * d {
            bail!("Gaussian fit: {} values for {n} points of dimension {d} (at least 2 points)", features.len());
        }
        let mut mean = vec![0.0; d];
        for row in features.chunks(d) {
            for (m, &x) in mean.iter_mut().zip(row) {
                *m += x as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut cov = vec![0.0; d * d];
        let mut centred = vec![0.0; d];
        for row in features.chunks(d) {
            for k in 0..d {
                centred[k] = row[k] as f64 - mean[k];
            }
            for i in 0..d {
                let ci = centred[i];
                for j in i..d {
                    cov[i * d + j] += ci * centred[j];
                }
            }
        }
        for i in 0..d {
            for j in i..d {
                let v = cov[i * d + j] / (n - 1) as f64;
                cov[i * d + j] = v;
                cov[j * d + i] = v;
            }
        }
        Ok(Gaussian { dim: d, count: n, mean, cov })
    }
}

/// The squared Fréchet (W2) distance between two Gaussians given by means and covariances.
pub fn frechet_distance(mu1: &[f64], cov1: &[f64], mu2: &[f64], cov2: &[f64], d: usize) -> Result<f64> {
    if mu1.len() != d || mu2.len() != d || cov1.len() != d * d || cov2.len() != d * d {
        bail!(
            "Fréchet distance: means of {} and {} and covariances of {} and {} values for dimension {d}",
            mu1.len(),
            mu2.len(),
            cov1.len(),
            cov2.len()
        );
    }
    let s1 = sqrtm_psd(cov1, d)?;
    let mut inner = matmul(&matmul(&s1, cov2, d), &s1, d);
    // Symmetric in exact arithmetic; remove the rounding asymmetry before the eigensolver.
    for i in 0..d {
        for j in 0..i {
            let v = 0.5 * (inner[i * d + j] + inner[j * d + i]);
            inner[i * d + j] = v;
            inner[j * d + i] = v;
        }
    }
    let (vals, _) = sym_eigen(&inner, d)?;
    let tr_sqrt: f64 = vals.iter().map(|&x| x.max(0.0).sqrt()).sum();
    let dmu: f64 = mu1.iter().zip(mu2).map(|(a, b)| (a - b).powi(2)).sum();
    let tr = |c: &[f64]| (0..d).map(|i| c[i * d + i]).sum::<f64>();
    Ok((dmu + tr(cov1) + tr(cov2) - 2.0 * tr_sqrt).max(0.0))
}

/// The squared Fréchet distance between the Gaussian fits of two feature sets.
pub fn frechet_between(a: &Gaussian, b: &Gaussian) -> Result<f64> {
    if a.dim != b.dim {
        bail!("Fréchet distance: features of dimension {} and {}", a.dim, b.dim);
    }
    frechet_distance(&a.mean, &a.cov, &b.mean, &b.cov, a.dim)
}
