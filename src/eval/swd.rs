//! Sliced Wasserstein distance in pixel space (docs/METHODS.md §7).
//!
//! For L random directions θ (Gaussian vectors normalised to unit length, drawn from a seeded generator),
//! both sets are projected onto θ and the exact W2 distance between the two 1-D empirical distributions
//! (uniform weights, any sizes) is computed from the sorted projections. The reported distance is the
//! average of W2(θ) over the directions; its standard error (std of W2(θ) / √L) measures only the Monte
//! Carlo error of the directions, not the sampling error of the two finite sets.
use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct SwdOptions {
    pub projections: usize,
    pub seed: u64,
}

impl Default for SwdOptions {
    fn default() -> Self {
        SwdOptions { projections: 512, seed: 0 }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwdResult {
    /// Mean over directions of the 1-D W2 distance.
    pub swd: f64,
    /// Monte Carlo standard error of `swd` over directions.
    pub std_error: f64,
    pub projections: usize,
    pub n_x: usize,
    pub n_y: usize,
}

/// Exact W2 between the empirical distributions of two sorted samples: the L2 distance between their
/// quantile functions, integrated piecewise over the union of the two step functions' breakpoints.
pub fn wasserstein2_sorted(a: &[f64], b: &[f64]) -> f64 {
    let (n, m) = (a.len(), b.len());
    if n == 0 || m == 0 {
        return f64::NAN;
    }
    let (mut i, mut j) = (0usize, 0usize);
    let mut u = 0.0; // quantile level reached so far
    let mut acc = 0.0;
    while i < n && j < m {
        // Next breakpoints (i+1)/n and (j+1)/m, compared exactly in integers.
        let (ei, ej) = ((i + 1) * m, (j + 1) * n);
        let next = if ei <= ej { (i + 1) as f64 / n as f64 } else { (j + 1) as f64 / m as f64 };
        acc += (next - u) * (a[i] - b[j]).powi(2);
        u = next;
        if ei <= ej {
            i += 1;
        }
        if ej <= ei {
            j += 1;
        }
    }
    acc.max(0.0).sqrt()
}

/// Unit directions [L, d] (row-major) from the seed.
pub fn directions(projections: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(projections * d);
    for _ in 0..projections {
        let v: Vec<f64> = (0..d).map(|_| StandardNormal.sample(&mut rng)).collect();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-300);
        out.extend(v.iter().map(|x| (x / norm) as f32));
    }
    out
}

/// Projections [n, L] = X [n, d] · Θᵀ.
fn project(x: &[f32], n: usize, d: usize, theta: &[f32], l: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * l];
    // SAFETY: the strides describe X [n, d] row-major, Θᵀ (Θ [l, d] row-major read with row stride 1 and
    // column stride d) and out [n, l] row-major; all three buffers have exactly those sizes.
    unsafe {
        matrixmultiply::sgemm(
            n,
            d,
            l,
            1.0,
            x.as_ptr(),
            d as isize,
            1,
            theta.as_ptr(),
            1,
            d as isize,
            0.0,
            out.as_mut_ptr(),
            l as isize,
            1,
        );
    }
    out
}

/// Per-direction W2 distances between X [n, d] and Y [m, d] (flattened images).
pub fn sliced_w2(x: &[f32], n: usize, y: &[f32], m: usize, d: usize, opts: SwdOptions) -> Result<Vec<f64>> {
    if n == 0 || m == 0 || d == 0 || opts.projections == 0 {
        bail!(
            "sliced Wasserstein: {n} and {m} points of dimension {d} with {} directions; all must be > 0",
            opts.projections
        );
    }
    if x.len() != n * d || y.len() != m * d {
        bail!("sliced Wasserstein: {} and {} values for {n}×{d} and {m}×{d}", x.len(), y.len());
    }
    let l = opts.projections;
    let theta = directions(l, d, opts.seed);
    let (px, py) = (project(x, n, d, &theta, l), project(y, m, d, &theta, l));
    use rayon::prelude::*;
    Ok((0..l)
        .into_par_iter()
        .map(|k| {
            let mut a: Vec<f64> = (0..n).map(|i| px[i * l + k] as f64).collect();
            let mut b: Vec<f64> = (0..m).map(|i| py[i * l + k] as f64).collect();
            a.sort_by(|p, q| p.total_cmp(q));
            b.sort_by(|p, q| p.total_cmp(q));
            wasserstein2_sorted(&a, &b)
        })
        .collect())
}

/// The sliced Wasserstein distance (mean of per-direction W2) with its Monte Carlo standard error.
pub fn sliced_wasserstein(x: &[f32], n: usize, y: &[f32], m: usize, d: usize, opts: SwdOptions) -> Result<SwdResult> {
    let w = sliced_w2(x, n, y, m, d, opts)?;
    let (swd, std_error) = super::metrics::mean_and_se(&w);
    Ok(SwdResult { swd, std_error, projections: opts.projections, n_x: n, n_y: m })
}
