//! Evaluation metrics: PSNR/SSIM against hand-computed values and an independent direct SSIM, SWD, the
//! Jacobi eigensolver and matrix square root, the Fréchet distance against closed forms, the
//! cross-entropy gradient, denoising MSE of an exact optimal denoiser against the closed-form MMSE,
//! memorisation, the classifier (training and cache), and `evaluate` end to end on a tiny run.
use gsure::diffusion::schedule::VpSchedule;
use gsure::eval::classifier::{self, Classifier, ClassifierOptions};
use gsure::eval::frechet::{frechet_distance, sqrtm_psd, sym_eigen, Gaussian};
use gsure::eval::memorisation::{memorisation, MemorisationOptions};
use gsure::eval::metrics::{gaussian_window, mse, psnr, ssim, ssim_batch};
use gsure::eval::swd::{directions, sliced_wasserstein, wasserstein2_sorted, SwdOptions};
use gsure::eval::{cross_entropy, denoise_mse, model_denoiser, DenoiseOptions};
use gsure::testing::{gradcheck, rng};
use gsure::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

fn uniform_vec(n: usize, lo: f32, hi: f32, r: &mut StdRng) -> Vec<f32> {
    (0..n).map(|_| r.random_range(lo..hi)).collect()
}

fn normal_vec(n: usize, r: &mut StdRng) -> Vec<f64> {
    (0..n).map(|_| StandardNormal.sample(r)).collect()
}

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("gsure-eval-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

// ---------------------------------------------------------------- PSNR / SSIM

#[test]
fn identical_images_give_infinite_psnr_and_unit_ssim() {
    let mut r = rng(1);
    let x = uniform_vec(3 * 16 * 13, -1.0, 1.0, &mut r);
    assert_eq!(psnr(&x, &x, 2.0).unwrap(), f64::INFINITY);
    let s = ssim(&x, &x, [3, 16, 13], 2.0).unwrap();
    assert!((s - 1.0).abs() < 1e-12, "SSIM(x, x) = {s}");
}

#[test]
fn psnr_of_a_known_noise_level() {
    // y = x ± δ (signs alternate): MSE = δ² exactly, PSNR = 10 log10(L² / δ²).
    let mut r = rng(2);
    let x = uniform_vec(1000, -0.5, 0.5, &mut r);
    for (delta, range) in [(0.1f32, 2.0), (0.01, 2.0), (0.25, 1.0)] {
        let y: Vec<f32> = x.iter().enumerate().map(|(i, &v)| if i % 2 == 0 { v + delta } else { v - delta }).collect();
        let m = mse(&x, &y).unwrap();
        assert!((m - (delta as f64).powi(2)).abs() < 1e-8, "MSE {m}");
        let p = psnr(&x, &y, range).unwrap();
        let expect = 10.0 * (range * range / (delta as f64).powi(2)).log10();
        assert!((p - expect).abs() < 1e-4, "PSNR {p} vs {expect}");
    }
    // δ = 0.1 in [-1, 1]: 10 log10(4 / 0.01) = 26.0206 dB.
    let y: Vec<f32> = x.iter().map(|&v| v + 0.1).collect();
    assert!((psnr(&x, &y, 2.0).unwrap() - 26.020_599_913).abs() < 1e-4);
}

#[test]
fn ssim_of_constant_images_is_the_luminance_term() {
    // Constant planes: variances and covariance vanish, so SSIM = (2ab + C1) / (a² + b² + C1).
    let (a, b) = (0.2f32, -0.3f32);
    let x = vec![a; 12 * 12];
    let y = vec![b; 12 * 12];
    let c1 = (0.01f64 * 2.0).powi(2);
    let expect = (2.0 * a as f64 * b as f64 + c1) / ((a as f64).powi(2) + (b as f64).powi(2) + c1);
    // By hand: (−0.12 + 0.0004) / (0.13 + 0.0004) = −0.1196 / 0.1304.
    assert!((expect - (-0.1196 / 0.1304)).abs() < 1e-6);
    let s = ssim(&x, &y, [1, 12, 12], 2.0).unwrap();
    assert!((s - expect).abs() < 1e-6, "SSIM {s} vs {expect}");
}

/// SSIM written directly from the definition: the 2-D Gaussian window at every valid position.
fn ssim_direct(x: &[f32], y: &[f32], h: usize, w: usize, l: f64) -> f64 {
    let g = gaussian_window(11, 1.5);
    let (c1, c2) = ((0.01 * l).powi(2), (0.03 * l).powi(2));
    let mut total = 0.0;
    let mut count = 0;
    for y0 in 0..=h - 11 {
        for x0 in 0..=w - 11 {
            let (mut mx, mut my, mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for i in 0..11 {
                for j in 0..11 {
                    let wgt = g[i] * g[j];
                    let (a, b) = (x[(y0 + i) * w + x0 + j] as f64, y[(y0 + i) * w + x0 + j] as f64);
                    mx += wgt * a;
                    my += wgt * b;
                    sxx += wgt * a * a;
                    syy += wgt * b * b;
                    sxy += wgt * a * b;
                }
            }
            let (vx, vy, cxy) = (sxx - mx * mx, syy - my * my, sxy - mx * my);
            total += (2.0 * mx * my + c1) * (2.0 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2));
            count += 1;
        }
    }
    total / count as f64
}

#[test]
fn ssim_matches_the_direct_definition_is_symmetric_and_below_one() {
    let mut r = rng(3);
    for (h, w) in [(11, 11), (16, 16), (13, 19)] {
        let x = uniform_vec(h * w, -1.0, 1.0, &mut r);
        let y: Vec<f32> = x.iter().map(|&v| (0.7 * v + r.random_range(-0.3f32..0.3)).clamp(-1.0, 1.0)).collect();
        let s = ssim(&x, &y, [1, h, w], 2.0).unwrap();
        let d = ssim_direct(&x, &y, h, w, 2.0);
        assert!((s - d).abs() < 1e-10, "{h}×{w}: separable {s} vs direct {d}");
        let s2 = ssim(&y, &x, [1, h, w], 2.0).unwrap();
        assert!((s - s2).abs() < 1e-12, "SSIM not symmetric: {s} vs {s2}");
        assert!(s < 0.99 && s > 0.0, "SSIM of a noisy copy: {s}");
    }
    // Several channels: the mean of the per-channel values.
    let (a, b) = (uniform_vec(2 * 12 * 12, -1.0, 1.0, &mut r), uniform_vec(2 * 12 * 12, -1.0, 1.0, &mut r));
    let both = ssim(&a, &b, [2, 12, 12], 2.0).unwrap();
    let per: f64 =
        (0..2).map(|c| ssim_direct(&a[c * 144..(c + 1) * 144], &b[c * 144..(c + 1) * 144], 12, 12, 2.0)).sum::<f64>()
            / 2.0;
    assert!((both - per).abs() < 1e-10);
    let batch = ssim_batch(&[a.clone(), a.clone()].concat(), &[b.clone(), a.clone()].concat(), [2, 2, 12, 6], 2.0);
    assert!(batch.is_err(), "12×6 is smaller than the window");
    let batch = ssim_batch(&[a.clone(), a.clone()].concat(), &[b, a].concat(), [2, 2, 12, 12], 2.0).unwrap();
    assert!((batch[0] - both).abs() < 1e-12 && (batch[1] - 1.0).abs() < 1e-12);
}

#[test]
fn psnr_and_ssim_refuse_bad_input() {
    let x = vec![0f32; 144];
    let e = ssim(&x, &x[..100], [1, 12, 12], 2.0).unwrap_err().to_string();
    assert!(e.contains("ssim"), "{e}");
    assert!(ssim(&x, &x, [1, 12, 12], 0.0).is_err());
    assert!(psnr(&x, &x, -1.0).is_err());
    assert!(ssim(&x[..100], &x[..100], [1, 10, 10], 2.0).unwrap_err().to_string().contains("window"));
}

// ---------------------------------------------------------------- sliced Wasserstein

#[test]
fn one_dimensional_w2_by_hand() {
    // [0, 1] vs [0, 0.5, 1]: quantile functions differ by 0.5 on [1/3, 2/3): W2² = 0.25 · 1/3 = 1/12.
    let w = wasserstein2_sorted(&[0.0, 1.0], &[0.0, 0.5, 1.0]);
    assert!((w - (1.0f64 / 12.0).sqrt()).abs() < 1e-12, "{w}");
    // Equal sizes: the root mean square of sorted differences.
    let w = wasserstein2_sorted(&[0.0, 1.0, 5.0], &[1.0, 2.0, 3.0]);
    assert!((w - ((1.0 + 1.0 + 4.0) / 3.0f64).sqrt()).abs() < 1e-12);
}

#[test]
fn swd_is_zero_on_itself_and_grows_with_a_shift() {
    let mut r = rng(4);
    let (n, d) = (300, 64);
    let x = uniform_vec(n * d, -1.0, 1.0, &mut r);
    let opts = SwdOptions { projections: 128, seed: 7 };
    let same = sliced_wasserstein(&x, n, &x, n, d, opts).unwrap();
    assert!(same.swd.abs() < 1e-12 && same.std_error.abs() < 1e-12, "{same:?}");
    let v: Vec<f32> = (0..d).map(|k| if k % 2 == 0 { 1.0 } else { -0.5 }).collect();
    let mut last = 0.0;
    for scale in [0.05f32, 0.2, 0.8] {
        let y: Vec<f32> = x.iter().enumerate().map(|(i, &a)| a + scale * v[i % d]).collect();
        let s = sliced_wasserstein(&x, n, &y, n, d, opts).unwrap();
        // A shift moves every projection by θ·v: per direction W2 = |θ·v|.
        let theta = directions(opts.projections, d, opts.seed);
        let expect: f64 = theta
            .chunks(d)
            .map(|t| t.iter().zip(&v).map(|(a, b)| (*a as f64) * (*b * scale) as f64).sum::<f64>().abs())
            .sum::<f64>()
            / opts.projections as f64;
        assert!((s.swd - expect).abs() < 1e-5 * expect.max(1.0), "shift {scale}: {} vs {expect}", s.swd);
        assert!(s.swd > last && s.std_error > 0.0);
        last = s.swd;
    }
    // Different sizes and a bad call.
    let s = sliced_wasserstein(&x, n, &x[..100 * d], 100, d, opts).unwrap();
    assert!(s.swd > 0.0 && s.swd < 0.2, "subset of the same distribution: {}", s.swd);
    assert!(sliced_wasserstein(&x, n, &x, n + 1, d, opts).is_err());
}

// ---------------------------------------------------------------- eigen / sqrtm / Fréchet

fn random_spd(n: usize, r: &mut StdRng) -> Vec<f64> {
    let a = normal_vec(n * n, r);
    let mut s = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            s[i * n + j] = (0..n).map(|k| a[i * n + k] * a[j * n + k]).sum::<f64>() / n as f64;
        }
        s[i * n + i] += 0.1;
    }
    s
}

fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            c[i * n + j] = (0..n).map(|k| a[i * n + k] * b[k * n + j]).sum();
        }
    }
    c
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[test]
fn jacobi_eigensolver_on_random_spd_matrices() {
    let mut r = rng(5);
    for n in [1, 2, 5, 17, 64, 128] {
        let a = random_spd(n, &mut r);
        let (vals, vecs) = sym_eigen(&a, n).unwrap();
        assert!(vals.windows(2).all(|w| w[0] <= w[1]), "eigenvalues ascending");
        assert!(vals[0] > 0.0, "SPD: positive eigenvalues");
        let scale = vals[n - 1];
        // A V = V Λ and VᵀV = I.
        let av = matmul(&a, &vecs, n);
        let mut vl = vecs.clone();
        for i in 0..n {
            for k in 0..n {
                vl[i * n + k] *= vals[k];
            }
        }
        let err = max_abs_diff(&av, &vl);
        assert!(err < 1e-11 * scale.max(1.0), "n = {n}: |AV − VΛ| = {err}");
        let mut vt = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                vt[i * n + j] = vecs[j * n + i];
            }
        }
        let eye: Vec<f64> = (0..n * n).map(|k| if k / n == k % n { 1.0 } else { 0.0 }).collect();
        assert!(max_abs_diff(&matmul(&vt, &vecs, n), &eye) < 1e-12, "n = {n}: V not orthonormal");
        let tr: f64 = (0..n).map(|i| a[i * n + i]).sum();
        assert!((vals.iter().sum::<f64>() - tr).abs() < 1e-10 * tr, "trace");
        // The square root squares back.
        let s = sqrtm_psd(&a, n).unwrap();
        assert!(max_abs_diff(&matmul(&s, &s, n), &a) < 1e-10 * scale.max(1.0), "n = {n}: sqrt² ≠ A");
    }
    // Known spectrum: diag(3, 1) rotated by 30°.
    let (c, s) = (30f64.to_radians().cos(), 30f64.to_radians().sin());
    let a = [3.0 * c * c + s * s, (3.0 - 1.0) * c * s, (3.0 - 1.0) * c * s, 3.0 * s * s + c * c];
    let (vals, _) = sym_eigen(&a, 2).unwrap();
    assert!((vals[0] - 1.0).abs() < 1e-14 && (vals[1] - 3.0).abs() < 1e-14);
    assert!(sym_eigen(&[1.0, 2.0, 3.0, 4.0], 2).unwrap_err().to_string().contains("symmetric"));
    assert!(sym_eigen(&[1.0, 2.0, 3.0], 2).is_err());
}

#[test]
fn frechet_distance_matches_closed_forms() {
    let mut r = rng(6);
    // Commuting covariances Q D1 Qᵀ, Q D2 Qᵀ: d² = |Δμ|² + Σ (√d1 − √d2)².
    let n = 32;
    let (_, q) = sym_eigen(&random_spd(n, &mut r), n).unwrap();
    let d1: Vec<f64> = (0..n).map(|_| r.random_range(0.1..3.0)).collect();
    let d2: Vec<f64> = (0..n).map(|_| r.random_range(0.1..3.0)).collect();
    let build = |d: &[f64]| {
        let mut m = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                m[i * n + j] = (0..n).map(|k| q[i * n + k] * d[k] * q[j * n + k]).sum();
            }
        }
        m
    };
    let (c1, c2) = (build(&d1), build(&d2));
    let mu1 = normal_vec(n, &mut r);
    let mu2 = normal_vec(n, &mut r);
    let expect: f64 = mu1.iter().zip(&mu2).map(|(a, b)| (a - b).powi(2)).sum::<f64>()
        + d1.iter().zip(&d2).map(|(a, b)| (a.sqrt() - b.sqrt()).powi(2)).sum::<f64>();
    let got = frechet_distance(&mu1, &c1, &mu2, &c2, n).unwrap();
    assert!((got - expect).abs() < 1e-9 * expect, "{got} vs {expect}");
    // Same Gaussian: 0. Same covariance: |Δμ|².
    assert!(frechet_distance(&mu1, &c1, &mu1, &c1, n).unwrap().abs() < 1e-9);
    let dmu: f64 = mu1.iter().zip(&mu2).map(|(a, b)| (a - b).powi(2)).sum();
    assert!((frechet_distance(&mu1, &c1, &mu2, &c1, n).unwrap() - dmu).abs() < 1e-9 * dmu.max(1.0));
    // Non-commuting 2×2: tr √M = √(tr M + 2 √det M) for 2×2 PSD M, with M = Σ1^½ Σ2 Σ1^½
    // (tr M = tr Σ1Σ2, det M = det Σ1 det Σ2), a closed form independent of the eigensolver.
    for _ in 0..5 {
        let a = random_spd(2, &mut r);
        let b = random_spd(2, &mut r);
        let tr_ab = a[0] * b[0] + a[1] * b[2] + a[2] * b[1] + a[3] * b[3];
        let det = |m: &[f64]| m[0] * m[3] - m[1] * m[2];
        let tr_sqrt = (tr_ab + 2.0 * (det(&a) * det(&b)).sqrt()).sqrt();
        let expect = 1.0 + a[0] + a[3] + b[0] + b[3] - 2.0 * tr_sqrt;
        let got = frechet_distance(&[0.0, 0.0], &a, &[1.0, 0.0], &b, 2).unwrap();
        assert!((got - expect).abs() < 1e-12, "{got} vs {expect}");
    }
    assert!(frechet_distance(&mu1, &c1, &mu2[..3], &c2, n).is_err());
}

#[test]
fn gaussian_fit_recovers_mean_and_covariance() {
    let mut r = rng(7);
    let (n, d) = (20_000, 3);
    // x = μ + L z with L lower-triangular: Σ = L Lᵀ.
    let mu = [1.0, -2.0, 0.5];
    let l = [[1.0, 0.0, 0.0], [0.5, 0.8, 0.0], [-0.3, 0.2, 0.4]];
    let mut x = Vec::with_capacity(n * d);
    for _ in 0..n {
        let z = normal_vec(3, &mut r);
        for i in 0..3 {
            x.push((mu[i] + (0..3).map(|k| l[i][k] * z[k]).sum::<f64>()) as f32);
        }
    }
    let g = Gaussian::fit(&x, n, d).unwrap();
    for i in 0..3 {
        assert!((g.mean[i] - mu[i]).abs() < 0.03);
        for j in 0..3 {
            let s: f64 = (0..3).map(|k| l[i][k] * l[j][k]).sum();
            assert!((g.cov[i * 3 + j] - s).abs() < 0.04, "Σ[{i}{j}] = {} vs {s}", g.cov[i * 3 + j]);
        }
    }
}

// ---------------------------------------------------------------- cross-entropy and the classifier

#[test]
fn cross_entropy_value_and_gradient() {
    let mut r = rng(8);
    // Zero logits: ln K.
    let z = Tensor::zeros([3, 10], DType::F64, &Device::Cpu).unwrap();
    let l = cross_entropy(&z, &[0, 4, 9]).unwrap().item().unwrap();
    assert!((l - 10f64.ln()).abs() < 1e-12);
    // By hand: logits (2, 0), label 0: ln(1 + e^-2).
    let z = Tensor::from_f64(&[2.0, 0.0], [1, 2], DType::F64, &Device::Cpu).unwrap();
    assert!((cross_entropy(&z, &[0]).unwrap().item().unwrap() - (1.0 + (-2f64).exp()).ln()).abs() < 1e-12);
    // Large logits stay finite (max subtracted).
    let z = Tensor::from_f64(&[1000.0, -1000.0], [1, 2], DType::F64, &Device::Cpu).unwrap();
    assert!(cross_entropy(&z, &[1]).unwrap().item().unwrap().is_finite());
    for (b, k) in [(1, 2), (5, 10), (3, 7)] {
        let labels: Vec<usize> = (0..b).map(|_| r.random_range(0..k)).collect();
        let logits = gsure::testing::randn(&[b, k], &mut r);
        gradcheck(|x| cross_entropy(&x[0], &labels), &[logits], &[0]).unwrap();
    }
    let z = Tensor::zeros([2, 3], DType::F64, &Device::Cpu).unwrap();
    let e = cross_entropy(&z, &[0, 3]).unwrap_err().to_string();
    assert!(e.contains("cross_entropy") && e.contains("[2, 3]"), "{e}");
    assert!(cross_entropy(&z, &[0]).is_err());
}

/// Two classes of 8×8 images: a bright left half or a bright right half, plus noise.
fn two_class_set(n: usize, r: &mut StdRng) -> (Vec<f32>, Vec<f32>) {
    let mut x = Vec::with_capacity(n * 64);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % 2;
        for _row in 0..8 {
            for col in 0..8 {
                let on = (col < 4) == (class == 0);
                x.push(((if on { 0.6 } else { -0.6 }) + r.random_range(-0.3f32..0.3)).clamp(-1.0, 1.0));
            }
        }
        y.push(class as f32);
    }
    (x, y)
}

#[test]
fn classifier_learns_a_trivial_task_and_is_cached() {
    use gsure::data::dataset::{Array4, CleanDataset, CleanMeta};
    let mut r = rng(9);
    let dir = tmpdir("classifier");
    let (x, y) = two_class_set(64, &mut r);
    let path = dir.join("toy-train.safetensors");
    CleanDataset::write(&path, Array4 { data: &x, dims: [64, 1, 8, 8] }, Some(&y), &CleanMeta::new("toy", "train", 64))
        .unwrap();
    let opts = ClassifierOptions { steps: 40, batch: 16, lr: 3e-3, seed: 1 };
    let (net, trained) = classifier::load_or_train(&path, &opts, &Device::Cpu, |_, _| {}).unwrap();
    assert!(trained);
    assert_eq!(classifier::cache_path(&path), dir.join("toy-train.classifier.safetensors"));
    assert!(classifier::cache_path(&path).exists());
    let (xt, yt) = two_class_set(32, &mut r);
    let (f, pred) = net.features(&xt, 32, 10, &Device::Cpu).unwrap();
    assert_eq!(f.len(), 32 * classifier::FEATURES);
    let acc = pred.iter().zip(&yt).filter(|(p, t)| **p == **t as usize).count() as f64 / 32.0;
    assert!(acc >= 0.95, "accuracy {acc}");
    // The second call loads the cache: same features.
    let (again, trained) =
        classifier::load_or_train(&path, &opts, &Device::Cpu, |_, _| panic!("must not train")).unwrap();
    assert!(!trained);
    assert_eq!(again.features(&xt, 32, 7, &Device::Cpu).unwrap().0, f);
    // Other options: retrained.
    let other = ClassifierOptions { steps: 2, ..opts };
    assert!(classifier::load_or_train(&path, &other, &Device::Cpu, |_, _| {}).unwrap().1);
    // A re-imported training set of the same size (labels swapped): the fingerprint differs, so retrained.
    let swapped: Vec<f32> = y.iter().map(|l| 1.0 - l).collect();
    let meta = CleanMeta::new("toy", "train", 64);
    CleanDataset::write(&path, Array4 { data: &x, dims: [64, 1, 8, 8] }, Some(&swapped), &meta).unwrap();
    assert!(classifier::load_or_train(&path, &other, &Device::Cpu, |_, _| {}).unwrap().1);
    assert!(!classifier::load_or_train(&path, &other, &Device::Cpu, |_, _| {}).unwrap().1);
    assert!(Classifier::new([1, 10, 10], 2, 0, &Device::Cpu).is_err(), "sides must be multiples of 4");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------- denoising MSE

#[test]
fn denoising_mse_of_the_optimal_gaussian_denoiser_is_the_mmse() {
    // x0 ~ N(μ, s²) per pixel: E[x0 | x_t] = μ + k (x_t − √ᾱ μ), k = √ᾱ s² / (ᾱ s² + 1 − ᾱ), with
    // MMSE = s² (1 − ᾱ) / (ᾱ s² + 1 − ᾱ). The error is N(0, MMSE) and independent across pixels, so the
    // estimate over N·D pixels has standard deviation MMSE √(2 / (N D)).
    let mut r = rng(10);
    let (mu, s) = (0.3f64, 0.5f64);
    let dims = [200, 1, 8, 8];
    let total = dims.iter().product::<usize>();
    let x0: Vec<f32> = normal_vec(total, &mut r).iter().map(|z| (mu + s * z) as f32).collect();
    let schedule = VpSchedule::linear(1e-4).unwrap();
    let opts = DenoiseOptions { batch: 64, ..DenoiseOptions::default() };
    let optimal = |xt: &Tensor, t: usize| {
        let ab = schedule.alpha_bar(t);
        let k = ab.sqrt() * s * s / (ab * s * s + 1.0 - ab);
        let v: Vec<f32> = xt.to_vec_f32()?.iter().map(|&x| (mu + k * (x as f64 - ab.sqrt() * mu)) as f32).collect();
        Tensor::from_f32(&v, xt.dims().to_vec(), xt.device())
    };
    let points = denoise_mse(&x0, dims, &schedule, &opts, &Device::Cpu, optimal).unwrap();
    assert_eq!(
        points.iter().map(|p| p.t).collect::<Vec<_>>(),
        vec![10, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900]
    );
    for p in &points {
        let ab = schedule.alpha_bar(p.t);
        let mmse = s * s * (1.0 - ab) / (ab * s * s + 1.0 - ab);
        let sd = mmse * (2.0 / total as f64).sqrt();
        assert!((p.mse - mmse).abs() < 5.0 * sd, "t = {}: MSE {} vs MMSE {mmse} (sd {sd})", p.t, p.mse);
        assert!((p.sigma - ((1.0 - ab) / ab).sqrt()).abs() < 1e-12);
        assert!(p.std_error > 0.2 * sd && p.std_error < 5.0 * sd, "standard error {} vs {sd}", p.std_error);
    }
    // The noise depends on (seed, t, image), not on the batch size.
    let other = DenoiseOptions { batch: 7, ..DenoiseOptions::default() };
    let again = denoise_mse(&x0, dims, &schedule, &other, &Device::Cpu, optimal).unwrap();
    for (a, b) in points.iter().zip(&again) {
        assert_eq!(a.mse, b.mse);
    }
    let bad = DenoiseOptions { times: vec![1000], ..DenoiseOptions::default() };
    assert!(denoise_mse(&x0, dims, &schedule, &bad, &Device::Cpu, optimal).is_err());
}

#[test]
fn model_denoiser_runs_both_families_on_the_same_inputs() {
    let schedule = VpSchedule::linear(1e-4).unwrap();
    let mut r = rng(11);
    let x0 = uniform_vec(3 * 16 * 16, -1.0, 1.0, &mut r);
    let opts = DenoiseOptions { times: vec![10, 500], batch: 2, seed: 3 };
    for name in ["tiny", "tiny-edm"] {
        let config = gsure::nn::ModelConfig::by_name(name).unwrap();
        let mut store = gsure::ParamStore::new();
        let model = gsure::nn::Model::new(&config, &mut store, 0, &Device::Cpu).unwrap();
        let pts = denoise_mse(
            &x0,
            [3, 1, 16, 16],
            &schedule,
            &opts,
            &Device::Cpu,
            model_denoiser(&model, &schedule, &Device::Cpu),
        )
        .unwrap();
        assert!(pts.iter().all(|p| p.mse.is_finite() && p.mse > 0.0), "{name}: {pts:?}");
    }
}

#[test]
fn masked_view_is_fixed_per_image_whatever_the_batch() {
    use gsure::eval::denoise::{model_denoiser_masked, MaskedView};
    let schedule = VpSchedule::linear(1e-4).unwrap();
    let mut r = rng(12);
    let x0 = uniform_vec(5 * 16 * 16, -1.0, 1.0, &mut r);
    let config = gsure::nn::ModelConfig::by_name("tiny-ambient").unwrap();
    let mut store = gsure::ParamStore::new();
    let model = gsure::nn::Model::new(&config, &mut store, 0, &Device::Cpu).unwrap();
    let run = |batch: usize, view: MaskedView| -> Vec<f64> {
        let opts = DenoiseOptions { times: vec![10, 300], batch, seed: 3 };
        let den = model_denoiser_masked(&model, &schedule, &Device::Cpu, view);
        let pts = denoise_mse(&x0, [5, 1, 16, 16], &schedule, &opts, &Device::Cpu, den).unwrap();
        pts.iter().map(|p| p.mse).collect()
    };
    let half = MaskedView { keep: 0.5, seed: 7 };
    let (a, b) = (run(2, half), run(5, half));
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-6 * x.abs(), "batch 2 {a:?} vs batch 5 {b:?}");
    }
    let all = run(5, MaskedView::ALL);
    assert!(a.iter().zip(&all).all(|(x, y)| (x - y).abs() > 1e-6), "a half mask changed nothing: {a:?} {all:?}");
    assert_ne!(run(5, MaskedView { keep: 0.5, seed: 8 }), b, "the mask does not depend on its seed");
}

// ---------------------------------------------------------------- memorisation

#[test]
fn memorisation_of_a_training_copy_is_one() {
    let mut r = rng(12);
    let (m, d) = (50, 36);
    let train = uniform_vec(m * d, -1.0, 1.0, &mut r);
    let mut samples = train[17 * d..18 * d].to_vec();
    samples.extend(uniform_vec(3 * d, -1.0, 1.0, &mut r));
    for centre in [true, false] {
        let res = memorisation(&samples, 4, &train, m, d, MemorisationOptions { centre, threshold: 0.95 }).unwrap();
        assert!((res.max_cosine[0] - 1.0).abs() < 1e-6, "copy: {}", res.max_cosine[0]);
        assert_eq!(res.nearest[0], 17);
        assert!(res.max_cosine[1..].iter().all(|&c| c < 0.9), "{:?}", res.max_cosine);
        assert_eq!(res.share_above, 0.25);
    }
    // A scaled copy has cosine 1 without centring.
    let scaled: Vec<f32> = train[3 * d..4 * d].iter().map(|v| 0.5 * v).collect();
    let res = memorisation(&scaled, 1, &train, m, d, MemorisationOptions { centre: false, threshold: 0.95 }).unwrap();
    assert!((res.max_cosine[0] - 1.0).abs() < 1e-6 && res.nearest[0] == 3);
    assert!(memorisation(&samples, 5, &train, m, d, MemorisationOptions::default()).is_err());
}

// ---------------------------------------------------------------- end to end

#[test]
fn evaluate_a_tiny_run_end_to_end() {
    use gsure::data::dataset::{Array4, CleanDataset, CleanMeta};
    let dir = tmpdir("e2e");
    let run = dir.join("run");
    let mut opts = gsure::train::TrainOptions::for_config("tiny");
    opts.steps = 2;
    opts.batch = 4;
    opts.sample_every = 0;
    let data = gsure::data::phantoms(16, 16, 1);
    let mut trainer = gsure::train::Trainer::new(opts, data.clone(), &run, &Device::Cpu, false, false).unwrap();
    trainer.run(&std::sync::atomic::AtomicBool::new(false), |_, _, _| {}).unwrap();
    let labels: Vec<f32> = (0..16).map(|i| (i % 2) as f32).collect();
    let train_file = dir.join("train.safetensors");
    CleanDataset::write(
        &train_file,
        Array4 { data: &data.images, dims: data.dims },
        Some(&labels),
        &CleanMeta::new("phantoms", "train", 16),
    )
    .unwrap();
    let test = gsure::data::phantoms(8, 16, 99);
    let test_file = dir.join("test.safetensors");
    CleanDataset::write(
        &test_file,
        Array4 { data: &test.images, dims: test.dims },
        Some(&labels[..8]),
        &CleanMeta::new("phantoms", "test", 8),
    )
    .unwrap();
    let mut eo = gsure::eval::EvalOptions::new(run.clone(), test_file);
    eo.train = Some(train_file);
    eo.samples = 4;
    eo.heldout = 8;
    eo.batch = 4;
    eo.projections = 16;
    eo.classifier.steps = 3;
    let report = gsure::eval::evaluate(&eo, &Device::Cpu, |_| {}).unwrap();
    let out = run.join("eval");
    for f in ["eval.json", "denoise_mse.png", "samples.png", "memorisation.png"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let den = report.denoise.unwrap();
    assert_eq!(den.points.len(), 11);
    assert!(den.points.iter().all(|p| p.mse.is_finite()));
    assert!(report.swd.unwrap().swd > 0.0);
    let fid = report.fid.unwrap();
    assert!(fid.fd.is_finite() && fid.classifier_test_accuracy.is_some());
    assert_eq!(report.memorisation.unwrap().max_cosine.len(), 4);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval.json")).unwrap()).unwrap();
    assert_eq!(json["config"], "tiny");
    // A second evaluation drawn beside the first (the paper's comparison figure).
    let mut again = eo.clone();
    again.what = vec![gsure::eval::Metric::Denoise];
    again.heldout = 2;
    again.out = Some(dir.join("again"));
    again.compare_with = vec![out.join("eval.json")];
    let r2 = gsure::eval::evaluate(&again, &Device::Cpu, |_| {}).unwrap();
    assert!(dir.join("again/denoise_compare.png").exists());
    assert_eq!(r2.denoise.unwrap().compare_legend.len(), 2);
    assert!(r2.swd.is_none() && r2.fid.is_none());
    // --mask-keep is for mask-channel models only, and a fraction in (0, 1].
    for keep in [0.5, 0.0, 1.5] {
        let mut masked = again.clone();
        masked.mask_keep = keep;
        let e = format!("{:#}", gsure::eval::evaluate(&masked, &Device::Cpu, |_| {}).unwrap_err());
        assert!(e.contains("--mask-keep"), "{e}");
    }
    // The SWD floor: clean images of a dataset file as the samples.
    let mut floor = eo.clone();
    floor.what = vec![gsure::eval::Metric::Swd];
    floor.samples_from = Some(dir.join("train.safetensors"));
    floor.out = Some(dir.join("floor"));
    let r3 = gsure::eval::evaluate(&floor, &Device::Cpu, |_| {}).unwrap();
    assert_eq!(r3.dims[0], 4);
    assert!(r3.swd.unwrap().swd.is_finite());
    let _ = std::fs::remove_dir_all(&dir);
}
