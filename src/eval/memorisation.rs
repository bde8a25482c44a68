//! Memorisation (docs/METHODS.md §7): per generated sample, the maximum cosine similarity to the training set,
//! and the share of samples above a threshold (0.95).
//!
//! Images are flattened. By default both samples and training images are centred by the training set's
//! mean image before the cosine: raw images in [-1, 1] share a large common component (MNIST's −1
//! background makes any two digits' raw cosine ≈ 0.8), which would push unrelated pairs above the
//! threshold; after centring, the cosine compares what distinguishes the images. An exact copy of a
//! training image scores 1 either way. `centre: false` gives the raw cosine.
use anyhow::{bail, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct MemorisationOptions {
    pub centre: bool,
    pub threshold: f64,
}

impl Default for MemorisationOptions {
    fn default() -> Self {
        MemorisationOptions { centre: true, threshold: 0.95 }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemorisationResult {
    /// Per sample: the largest cosine similarity to any training image.
    pub max_cosine: Vec<f64>,
    /// Per sample: the index of that training image.
    pub nearest: Vec<usize>,
    /// Share of samples whose max cosine exceeds `threshold`.
    pub share_above: f64,
    pub threshold: f64,
    pub mean_max_cosine: f64,
    pub centred: bool,
    pub train_count: usize,
}

/// Rows of `x` [rows, d], minus `centre`, scaled to unit norm (a zero row stays zero: cosine 0).
fn normalised(x: &[f32], d: usize, centre: Option<&[f64]>) -> Vec<f32> {
    x.par_chunks(d)
        .flat_map_iter(|row| {
            let v: Vec<f64> = row.iter().enumerate().map(|(k, &a)| a as f64 - centre.map_or(0.0, |c| c[k])).collect();
            let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
            v.into_iter().map(move |a| (a * inv) as f32)
        })
        .collect()
}

/// Samples [n, d] against training images [m, d].
pub fn memorisation(
    samples: &[f32],
    n: usize,
    train: &[f32],
    m: usize,
    d: usize,
    opts: MemorisationOptions,
) -> Result<MemorisationResult> {
    if n == 0 || m == 0 || d == 0 {
        bail!("memorisation: {n} samples and {m} training images of dimension {d}; all must be > 0");
    }
    if samples.len() != n * d || train.len() != m * d {
        bail!(
            "memorisation: {} and {} values for {n}×{d} samples and {m}×{d} training images",
            samples.len(),
            train.len()
        );
    }
    let centre = if opts.centre {
        let mut c = vec![0.0; d];
        for row in train.chunks(d) {
            for (a, &x) in c.iter_mut().zip(row) {
                *a += x as f64;
            }
        }
        c.iter_mut().for_each(|a| *a /= m as f64);
        Some(c)
    } else {
        None
    };
    let s = normalised(samples, d, centre.as_deref());
    let mut best = vec![(f64::NEG_INFINITY, 0usize); n];
    const CHUNK: usize = 4096;
    let mut sims = vec![0f32; n * CHUNK];
    for start in (0..m).step_by(CHUNK) {
        let k = CHUNK.min(m - start);
        let tr = normalised(&train[start * d..(start + k) * d], d, centre.as_deref());
        // sims [n, k] = S [n, d] · Trᵀ
        // SAFETY: S is [n, d] row-major, Trᵀ is read from Tr [k, d] row-major (row stride 1, column stride
        // d), sims holds at least n·k values written row-major with row stride k.
        unsafe {
            matrixmultiply::sgemm(
                n,
                d,
                k,
                1.0,
                s.as_ptr(),
                d as isize,
                1,
                tr.as_ptr(),
                1,
                d as isize,
                0.0,
                sims.as_mut_ptr(),
                k as isize,
                1,
            );
        }
        for (i, b) in best.iter_mut().enumerate() {
            for j in 0..k {
                let v = sims[i * k + j] as f64;
                if v > b.0 {
                    *b = (v, start + j);
                }
            }
        }
    }
    // f32 rounding can put an exact copy at 1 + 1e-7: report cosines within [-1, 1].
    let max_cosine: Vec<f64> = best.iter().map(|b| b.0.clamp(-1.0, 1.0)).collect();
    let nearest = best.iter().map(|b| b.1).collect();
    let share_above = max_cosine.iter().filter(|&&c| c > opts.threshold).count() as f64 / n as f64;
    let mean_max_cosine = max_cosine.iter().sum::<f64>() / n as f64;
    Ok(MemorisationResult {
        max_cosine,
        nearest,
        share_above,
        threshold: opts.threshold,
        mean_max_cosine,
        centred: opts.centre,
        train_count: m,
    })
}
