//! Image-quality metrics for reconstructions (docs/METHODS.md §6, §7): MSE, PSNR and SSIM.
//!
//! SSIM is Wang et al. (2004) as in their reference MATLAB code: an 11×11 Gaussian window (σ = 1.5,
//! normalised to sum 1), local means, variances and covariance weighted by that window, constants
//! C1 = (K1 L)², C2 = (K2 L)² with K1 = 0.01, K2 = 0.03 and L the data range, evaluated at every position
//! where the window fits inside the image ("valid"), averaged over positions and then over channels.
//! Everything is computed in f64.
use anyhow::{bail, Result};

pub const SSIM_WINDOW: usize = 11;
pub const SSIM_SIGMA: f64 = 1.5;
pub const SSIM_K1: f64 = 0.01;
pub const SSIM_K2: f64 = 0.03;

fn check_pair(op: &str, a: &[f32], b: &[f32], numel: usize) -> Result<()> {
    if a.len() != b.len() || a.len() != numel {
        bail!("{op}: images of {} and {} values for a shape of {numel} values", a.len(), b.len());
    }
    if numel == 0 {
        bail!("{op}: empty images");
    }
    Ok(())
}

fn check_range(op: &str, data_range: f64) -> Result<()> {
    if !(data_range.is_finite() && data_range > 0.0) {
        bail!("{op}: data range {data_range}; it must be a positive number (2 for images in [-1, 1])");
    }
    Ok(())
}

/// Mean squared difference, in f64.
pub fn mse(a: &[f32], b: &[f32]) -> Result<f64> {
    check_pair("mse", a, b, a.len())?;
    Ok(a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>() / a.len() as f64)
}

/// PSNR in dB: 10 log10(L² / MSE); +∞ for identical images.
pub fn psnr(a: &[f32], b: &[f32], data_range: f64) -> Result<f64> {
    check_range("psnr", data_range)?;
    let m = mse(a, b)?;
    Ok(if m == 0.0 { f64::INFINITY } else { 10.0 * (data_range * data_range / m).log10() })
}

/// The normalised 1-D Gaussian window (the 2-D window is its outer product).
pub fn gaussian_window(size: usize, sigma: f64) -> Vec<f64> {
    let c = (size as f64 - 1.0) / 2.0;
    let w: Vec<f64> = (0..size).map(|i| (-(i as f64 - c).powi(2) / (2.0 * sigma * sigma)).exp()).collect();
    let s: f64 = w.iter().sum();
    w.into_iter().map(|v| v / s).collect()
}

/// "Valid" separable filtering of an h×w plane with the window `g` (rows, then columns).
fn filter_valid(x: &[f64], h: usize, w: usize, g: &[f64]) -> Vec<f64> {
    let k = g.len();
    let (oh, ow) = (h + 1 - k, w + 1 - k);
    let mut rows = vec![0.0; h * ow];
    for y in 0..h {
        for x0 in 0..ow {
            rows[y * ow + x0] = (0..k).map(|j| g[j] * x[y * w + x0 + j]).sum();
        }
    }
    let mut out = vec![0.0; oh * ow];
    for y0 in 0..oh {
        for x0 in 0..ow {
            out[y0 * ow + x0] = (0..k).map(|i| g[i] * rows[(y0 + i) * ow + x0]).sum();
        }
    }
    out
}

/// SSIM of two images [C, H, W] (H, W ≥ 11): mean SSIM map over valid positions, averaged over channels.
pub fn ssim(a: &[f32], b: &[f32], dims: [usize; 3], data_range: f64) -> Result<f64> {
    let [c, h, w] = dims;
    check_pair("ssim", a, b, c * h * w)?;
    check_range("ssim", data_range)?;
    if h < SSIM_WINDOW || w < SSIM_WINDOW {
        bail!("ssim: images of {h}×{w} are smaller than the {SSIM_WINDOW}×{SSIM_WINDOW} window");
    }
    let g = gaussian_window(SSIM_WINDOW, SSIM_SIGMA);
    let c1 = (SSIM_K1 * data_range).powi(2);
    let c2 = (SSIM_K2 * data_range).powi(2);
    let mut total = 0.0;
    for ch in 0..c {
        let plane = |v: &[f32]| -> Vec<f64> { v[ch * h * w..(ch + 1) * h * w].iter().map(|&x| x as f64).collect() };
        let (x, y) = (plane(a), plane(b));
        let prod = |p: &[f64], q: &[f64]| -> Vec<f64> { p.iter().zip(q).map(|(u, v)| u * v).collect() };
        let mx = filter_valid(&x, h, w, &g);
        let my = filter_valid(&y, h, w, &g);
        let mxx = filter_valid(&prod(&x, &x), h, w, &g);
        let myy = filter_valid(&prod(&y, &y), h, w, &g);
        let mxy = filter_valid(&prod(&x, &y), h, w, &g);
        let mut acc = 0.0;
        for i in 0..mx.len() {
            let (ux, uy) = (mx[i], my[i]);
            let (vx, vy, cxy) = (mxx[i] - ux * ux, myy[i] - uy * uy, mxy[i] - ux * uy);
            acc += ((2.0 * ux * uy + c1) * (2.0 * cxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2));
        }
        total += acc / mx.len() as f64;
    }
    Ok(total / c as f64)
}

/// Per-image PSNR of two batches [N, C, H, W].
pub fn psnr_batch(a: &[f32], b: &[f32], dims: [usize; 4], data_range: f64) -> Result<Vec<f64>> {
    let m = dims[1] * dims[2] * dims[3];
    check_pair("psnr", a, b, dims[0] * m)?;
    (0..dims[0]).map(|i| psnr(&a[i * m..(i + 1) * m], &b[i * m..(i + 1) * m], data_range)).collect()
}

/// Per-image SSIM of two batches [N, C, H, W].
pub fn ssim_batch(a: &[f32], b: &[f32], dims: [usize; 4], data_range: f64) -> Result<Vec<f64>> {
    let [n, c, h, w] = dims;
    let m = c * h * w;
    check_pair("ssim", a, b, n * m)?;
    (0..n).map(|i| ssim(&a[i * m..(i + 1) * m], &b[i * m..(i + 1) * m], [c, h, w], data_range)).collect()
}

/// Mean and standard error of the mean (0 for fewer than two values).
pub fn mean_and_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}
