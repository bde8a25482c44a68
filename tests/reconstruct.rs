//! Posterior sampling with data consistency (src/eval/reconstruct.rs): exact Gaussian priors plugged in as
//! denoiser closures, the MRI path, and `reconstruct` end to end on a tiny run.
use gsure::corruption::{OpKind, OpSpec};
use gsure::diffusion::schedule::VpSchedule;
use gsure::eval::reconstruct::{
    consistency_weight, data_consistency, posterior_sample, reconstruct, zero_filled, PosteriorOptions,
    ReconstructOptions,
};
use gsure::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::path::PathBuf;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join("recon-helper").join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Inverse of a symmetric positive definite n×n matrix (Gauss-Jordan with partial pivoting).
fn inv(a: &[f64], n: usize) -> Vec<f64> {
    let mut m = a.to_vec();
    let mut r = vec![0.0; n * n];
    for i in 0..n {
        r[i * n + i] = 1.0;
    }
    for c in 0..n {
        let p = (c..n).max_by(|&i, &j| m[i * n + c].abs().partial_cmp(&m[j * n + c].abs()).unwrap()).unwrap();
        for k in 0..n {
            m.swap(c * n + k, p * n + k);
            r.swap(c * n + k, p * n + k);
        }
        let d = m[c * n + c];
        for k in 0..n {
            m[c * n + k] /= d;
            r[c * n + k] /= d;
        }
        for i in 0..n {
            if i != c {
                let f = m[i * n + c];
                for k in 0..n {
                    m[i * n + k] -= f * m[c * n + k];
                    r[i * n + k] -= f * r[c * n + k];
                }
            }
        }
    }
    r
}

fn matmul(a: &[f64], b: &[f64], n: usize, k: usize, m: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * m];
    for i in 0..n {
        for l in 0..k {
            for j in 0..m {
                out[i * m + j] += a[i * k + l] * b[l * m + j];
            }
        }
    }
    out
}

/// Σ_ij = exp(−|p_i − p_j| / ℓ) over the pixels of a side×side grid: strongly correlated neighbours.
fn covariance(side: usize, ell: f64) -> Vec<f64> {
    let d = side * side;
    let mut s = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            let (yi, xi, yj, xj) = ((i / side) as f64, (i % side) as f64, (j / side) as f64, (j % side) as f64);
            s[i * d + j] = (-((yi - yj).powi(2) + (xi - xj).powi(2)).sqrt() / ell).exp();
        }
    }
    s
}

fn cholesky(a: &[f64], n: usize) -> Vec<f64> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            l[i * n + j] = if i == j { (a[i * n + i] - s).sqrt() } else { (a[i * n + j] - s) / l[j * n + j] };
        }
    }
    l
}

/// The exact denoiser of x0 ~ N(0, Σ) under VP: E[x0 | x_t] = √ᾱ Σ (ᾱ Σ + (1 − ᾱ) I)⁻¹ x_t, per example.
fn gaussian_denoiser(
    sigma: Vec<f64>,
    d: usize,
    schedule: &VpSchedule,
) -> impl Fn(&Tensor, usize) -> anyhow::Result<Tensor> + '_ {
    move |x: &Tensor, t: usize| {
        let ab = schedule.alpha_bar(t);
        let mut m: Vec<f64> = sigma.iter().map(|&s| ab * s).collect();
        for i in 0..d {
            m[i * d + i] += 1.0 - ab;
        }
        let a: Vec<f64> = matmul(&sigma, &inv(&m, d), d, d, d).iter().map(|v| v * ab.sqrt()).collect();
        let xv = x.to_vec_f64()?;
        let n = xv.len() / d;
        let mut out = Vec::with_capacity(xv.len());
        for e in 0..n {
            out.extend(matmul(&a, &xv[e * d..(e + 1) * d], d, d, 1));
        }
        Tensor::from_f64(&out, x.dims().to_vec(), DType::F64, &Device::Cpu)
    }
}

#[test]
fn gaussian_prior_inpainting_keeps_observations_and_beats_zero_filling() {
    let (side, n) = (4usize, 256usize);
    let d = side * side;
    let sigma = covariance(side, 8.0);
    let l = cholesky(&sigma, d);
    let mut rng = StdRng::seed_from_u64(3);
    let z = Tensor::randn([n, 1, side, side], DType::F64, &Device::Cpu, &mut rng).unwrap().to_vec_f64().unwrap();
    let x: Vec<f64> = (0..n).flat_map(|e| matmul(&l, &z[e * d..(e + 1) * d], d, d, 1)).collect();
    let xt = Tensor::from_f64(&x, [n, 1, side, side], DType::F64, &Device::Cpu).unwrap();

    let op = OpSpec { p: Some(0.5), ..OpSpec::new(OpKind::Pixel) }.build([1, side, side]).unwrap();
    let idx: Vec<usize> = (0..n).collect();
    let batch = op.batch(7, &idx);
    let y = gsure::no_grad(|| batch.observe(&xt, &mut rng)).unwrap();
    let schedule = VpSchedule::linear(1e-4).unwrap();
    let opts = PosteriorOptions { steps: 50, eta: 0.85 };
    let rec =
        posterior_sample(&schedule, opts, &batch, &y, 1, &mut rng, gaussian_denoiser(sigma.clone(), d, &schedule))
            .unwrap();
    assert_eq!(rec.dims(), &[n, 1, side, side]);

    // Data consistency: the observed pixels are exactly the observations.
    let ybar = batch.project(&y).unwrap().to_vec_f64().unwrap();
    let prec = batch.project(&rec).unwrap().to_vec_f64().unwrap();
    let max_dev = ybar.iter().zip(&prec).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(max_dev < 1e-12, "observed coefficients moved by {max_dev}");

    // MSEs: reconstruction, zero-filled, and the analytic posterior mean's E tr(Cov(x_U | x_O)) / d.
    let recv = rec.to_vec_f64().unwrap();
    let zf = zero_filled(&batch, &y, 1).unwrap().to_vec_f64().unwrap();
    let mse = |v: &[f64]| v.iter().zip(&x).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / (n * d) as f64;
    let (mse_rec, mse_zf) = (mse(&recv), mse(&zf));
    let mut pm = 0.0;
    for e in 0..n {
        let mask = &batch.masks[e * d..(e + 1) * d];
        let o: Vec<usize> = (0..d).filter(|&i| mask[i] != 0.0).collect();
        let u: Vec<usize> = (0..d).filter(|&i| mask[i] == 0.0).collect();
        let sub = |r: &[usize], c: &[usize]| -> Vec<f64> {
            r.iter().flat_map(|&i| c.iter().map(move |&j| (i, j))).map(|(i, j)| sigma[i * d + j]).collect()
        };
        let tr_uu: f64 = u.iter().map(|&i| sigma[i * d + i]).sum();
        if o.is_empty() {
            pm += tr_uu;
            continue;
        }
        let s_uo = sub(&u, &o);
        let k = matmul(&s_uo, &inv(&sub(&o, &o), o.len()), u.len(), o.len(), o.len());
        // tr(Σ_UO Σ_OO⁻¹ Σ_OU) = Σ_ij K_ij (Σ_UO)_ij
        let explained: f64 = k.iter().zip(&s_uo).map(|(a, b)| a * b).sum();
        pm += tr_uu - explained;
    }
    let mse_pm = pm / (n * d) as f64;
    eprintln!("MSE: posterior mean {mse_pm:.4}, reconstruction {mse_rec:.4}, zero-filled {mse_zf:.4}");
    assert!(mse_rec < mse_zf * 0.8, "reconstruction {mse_rec} not clearly below zero-filled {mse_zf}");
    assert!(mse_rec > mse_pm * 0.9, "reconstruction {mse_rec} below the posterior mean's {mse_pm}: impossible");
    // An exact posterior sample has twice the posterior mean's error in expectation (the zero-filled
    // estimate, the prior mean, has the prior variance): allow sampler bias and Monte Carlo slack.
    let ratio = mse_rec / (2.0 * mse_pm);
    assert!((0.7..1.3).contains(&ratio), "reconstruction {mse_rec} vs posterior sampling's 2 x {mse_pm}: {ratio}");
}

#[test]
fn deterministic_eta_zero_is_reproducible_and_noisy_weights_blend() {
    let schedule = VpSchedule::linear(1e-4).unwrap();
    assert_eq!(consistency_weight(&schedule, 500, 0.0), 1.0);
    let (w_hi, w_lo) = (consistency_weight(&schedule, 900, 0.1), consistency_weight(&schedule, 0, 0.1));
    assert!(w_hi > 0.99 && w_lo < 0.05 && w_lo > 0.0, "weights {w_hi} {w_lo}");

    let op = OpSpec { p: Some(0.3), sigma0: 0.1, ..OpSpec::new(OpKind::Pixel) }.build([1, 4, 4]).unwrap();
    let batch = op.batch(1, &[0, 1]);
    let mut rng = StdRng::seed_from_u64(0);
    let x = Tensor::randn([2, 1, 4, 4], DType::F64, &Device::Cpu, &mut rng).unwrap();
    let y = gsure::no_grad(|| batch.observe(&x, &mut rng)).unwrap();
    let den = |x: &Tensor, t: usize| gsure::ops::scale(x, schedule.alpha_bar(t).sqrt());
    let opts = PosteriorOptions { steps: 20, eta: 0.0 };
    let a = posterior_sample(&schedule, opts, &batch, &y, 1, &mut StdRng::seed_from_u64(5), den).unwrap();
    let b = posterior_sample(&schedule, opts, &batch, &y, 1, &mut StdRng::seed_from_u64(5), den).unwrap();
    assert_eq!(a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
    assert!(a.to_vec_f64().unwrap().iter().all(|v| v.is_finite()));
}

#[test]
fn mri_path_keeps_sampled_kspace_lines() {
    let (h, w, n) = (8usize, 8usize, 3usize);
    let spec = OpSpec { r: Some(4.0), acs: Some(2), ..OpSpec::new(OpKind::Mri) };
    let op = spec.build([2, h, w]).unwrap();
    let batch = op.batch(11, &[0, 1, 2]);
    let mut rng = StdRng::seed_from_u64(1);
    let x = Tensor::randn([n, 1, h, w], DType::F64, &Device::Cpu, &mut rng).unwrap();
    let y = gsure::no_grad(|| batch.observe(&x, &mut rng)).unwrap();
    let schedule = VpSchedule::linear(1e-4).unwrap();
    // Exact denoiser of a standard normal prior: E[x0 | x_t] = √ᾱ x_t.
    let den = |x: &Tensor, t: usize| gsure::ops::scale(x, schedule.alpha_bar(t).sqrt());
    let opts = PosteriorOptions { steps: 10, eta: 0.85 };
    // Complex (2-channel) model: the sampled lines are kept exactly.
    let rec = posterior_sample(&schedule, opts, &batch, &y, 2, &mut rng, den).unwrap();
    assert_eq!(rec.dims(), &[n, 2, h, w]);
    let k = batch.project(&batch.to_spectral(&rec).unwrap()).unwrap().to_vec_f64().unwrap();
    let ybar = batch.project(&y).unwrap().to_vec_f64().unwrap();
    let dev = k.iter().zip(&ybar).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(dev < 1e-9, "sampled k-space lines moved by {dev}");
    // Real (1-channel) model: runs and returns real images; the zero-filled baseline is real too.
    let rec1 = posterior_sample(&schedule, opts, &batch, &y, 1, &mut rng, den).unwrap();
    assert_eq!(rec1.dims(), &[n, 1, h, w]);
    assert_eq!(zero_filled(&batch, &y, 1).unwrap().dims(), &[n, 1, h, w]);
    // Data consistency alone, weight 1, on a complex estimate: observed coefficients become ȳ.
    let x0 = Tensor::randn([n, 2, h, w], DType::F64, &Device::Cpu, &mut rng).unwrap();
    let ybar_t = batch.project(&y).unwrap();
    let dc = data_consistency(&batch, &x0, &ybar_t, 1.0).unwrap();
    let k = batch.project(&batch.to_spectral(&dc).unwrap()).unwrap().to_vec_f64().unwrap();
    assert!(k.iter().zip(&ybar).all(|(a, b)| (a - b).abs() < 1e-9));
}

#[test]
fn channel_mismatch_is_refused() {
    let op = OpSpec { p: Some(0.5), ..OpSpec::new(OpKind::Pixel) }.build([1, 4, 4]).unwrap();
    let batch = op.batch(0, &[0]);
    let y = Tensor::zeros([1, 1, 4, 4], DType::F64, &Device::Cpu).unwrap();
    let schedule = VpSchedule::linear(1e-4).unwrap();
    let den = |x: &Tensor, _: usize| Ok(x.clone());
    let e = posterior_sample(&schedule, PosteriorOptions::default(), &batch, &y, 3, &mut StdRng::seed_from_u64(0), den)
        .unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("3 image channels") && msg.contains("1 channels"), "{msg}");
}

#[test]
fn reconstruct_a_tiny_run_end_to_end() {
    use gsure::data::dataset::{Array4, CleanDataset, CleanMeta};
    let dir = tmpdir("e2e");
    let run = dir.join("run");
    let mut opts = gsure::train::TrainOptions::for_config("tiny");
    opts.steps = 2;
    opts.batch = 4;
    opts.sample_every = 0;
    let data = gsure::data::phantoms(8, 16, 1);
    let mut trainer = gsure::train::Trainer::new(opts, data, &run, &Device::Cpu, false, false).unwrap();
    trainer.run(&std::sync::atomic::AtomicBool::new(false), |_, _, _| {}).unwrap();
    let test = gsure::data::phantoms(4, 16, 99);
    let test_file = dir.join("test.safetensors");
    CleanDataset::write(
        &test_file,
        Array4 { data: &test.images, dims: test.dims },
        None,
        &CleanMeta::new("phantoms", "test", 4),
    )
    .unwrap();

    // Inpainting, with the same run as the "oracle".
    let spec = OpSpec { p: Some(0.5), ..OpSpec::new(OpKind::Pixel) };
    let mut ro = ReconstructOptions::new(run.clone(), test_file.clone(), spec);
    ro.count = 3;
    ro.batch = 2;
    ro.sampler.steps = 4;
    ro.compare_run = Some(run.clone());
    let report = reconstruct(&ro, &Device::Cpu, |l| eprintln!("{l}")).unwrap();
    let out = run.join("reconstruct");
    assert!(out.join("reconstruct.json").exists());
    let r = &report.results[0];
    assert!(r.grid.exists());
    assert!(r.reconstruction.psnr.mean.is_finite() && r.zero_filled.ssim.mean.is_finite());
    let o = r.oracle.expect("oracle scores");
    // Same prior, same seeds: the oracle column equals the reconstruction.
    assert!((o.psnr.mean - r.reconstruction.psnr.mean).abs() < 1e-9);

    // MRI sweep with a real (1-channel) prior.
    let spec = OpSpec { acs: Some(2), ..OpSpec::new(OpKind::Mri) };
    let mut ro = ReconstructOptions::new(run.clone(), test_file.clone(), spec);
    ro.r_list = vec![2.0, 4.0];
    ro.count = 2;
    ro.sampler.steps = 3;
    ro.out = Some(dir.join("mri"));
    let report = reconstruct(&ro, &Device::Cpu, |l| eprintln!("{l}")).unwrap();
    assert_eq!(report.results.len(), 2);
    assert!(dir.join("mri/psnr_vs_R.png").exists() && dir.join("mri/reconstruct.json").exists());

    // A 3-channel dataset against the 1-channel model: a clear error.
    let bad: Vec<f32> = vec![0.1; 2 * 3 * 16 * 16];
    let bad_file = dir.join("rgb.safetensors");
    CleanDataset::write(&bad_file, Array4 { data: &bad, dims: [2, 3, 16, 16] }, None, &CleanMeta::new("x", "test", 2))
        .unwrap();
    let spec = OpSpec { p: Some(0.5), ..OpSpec::new(OpKind::Pixel) };
    let e = reconstruct(&ReconstructOptions::new(run.clone(), bad_file, spec), &Device::Cpu, |_| {}).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("1-channel") && msg.contains("3-channel"), "{msg}");
    // --R with a non-MRI operator is refused.
    let spec = OpSpec { p: Some(0.5), ..OpSpec::new(OpKind::Pixel) };
    let mut ro = ReconstructOptions::new(run, test_file, spec);
    ro.r_list = vec![4.0];
    assert!(format!("{:#}", reconstruct(&ro, &Device::Cpu, |_| {}).unwrap_err()).contains("--R"));
}

#[test]
fn gaussian_prior_noisy_observations_blend_and_beat_zero_filling() {
    let (side, n, sigma0) = (4usize, 128usize, 0.2);
    let d = side * side;
    let sigma = covariance(side, 8.0);
    let l = cholesky(&sigma, d);
    let mut rng = StdRng::seed_from_u64(9);
    let z = Tensor::randn([n, 1, side, side], DType::F64, &Device::Cpu, &mut rng).unwrap().to_vec_f64().unwrap();
    let x: Vec<f64> = (0..n).flat_map(|e| matmul(&l, &z[e * d..(e + 1) * d], d, d, 1)).collect();
    let xt = Tensor::from_f64(&x, [n, 1, side, side], DType::F64, &Device::Cpu).unwrap();
    let op = OpSpec { p: Some(0.5), sigma0, ..OpSpec::new(OpKind::Pixel) }.build([1, side, side]).unwrap();
    let batch = op.batch(2, &(0..n).collect::<Vec<_>>());
    let y = gsure::no_grad(|| batch.observe(&xt, &mut rng)).unwrap();
    let schedule = VpSchedule::linear(1e-4).unwrap();
    let opts = PosteriorOptions { steps: 50, eta: 0.85 };
    let rec = posterior_sample(&schedule, opts, &batch, &y, 1, &mut rng, gaussian_denoiser(sigma, d, &schedule))
        .unwrap()
        .to_vec_f64()
        .unwrap();
    let zf = zero_filled(&batch, &y, 1).unwrap().to_vec_f64().unwrap();
    let mse = |v: &[f64]| v.iter().zip(&x).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / (n * d) as f64;
    let (mse_rec, mse_zf) = (mse(&rec), mse(&zf));
    eprintln!("noisy (σ0 = {sigma0}): reconstruction {mse_rec:.4}, zero-filled {mse_zf:.4}");
    assert!(mse_rec.is_finite() && mse_rec < mse_zf * 0.8, "reconstruction {mse_rec} vs zero-filled {mse_zf}");
    // The observed pixels are no longer copied verbatim: the last steps trust the (denoised) estimate.
    let ybar = batch.project(&y).unwrap().to_vec_f64().unwrap();
    let prec = batch
        .project(&Tensor::from_f64(&rec, [n, 1, side, side], DType::F64, &Device::Cpu).unwrap())
        .unwrap()
        .to_vec_f64()
        .unwrap();
    assert!(ybar.iter().zip(&prec).any(|(a, b)| (a - b).abs() > 1e-3));
}
