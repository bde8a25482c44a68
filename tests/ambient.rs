//! Ambient Diffusion (docs/METHODS.md §4.3): the loss's minimiser is E[x0 | Ã x_t, Ã] (least squares on a Gaussian),
//! the further mask B is fixed per image index, the loss ignores pixels outside A, the fixed-mask sampler is
//! seeded and keeps its mask, and bad masks are refused with clear errors.
#![allow(clippy::needless_range_loop)] // numeric tests index several parallel arrays
use gsure::diffusion::schedule::Edm;
use gsure::nn::TrainSeed;
use gsure::nn::{DdpmppConfig, DdpmppUnet, EdmDenoiser};
use gsure::objectives::ambient::{
    ambient_loss, ambient_loss_parts, ambient_loss_with, ambient_sample, ambient_sample_with, b_mask, further_mask,
    AmbientMode, AmbientOptions, AmbientSampleOptions,
};
use gsure::ops;
use gsure::testing::{mask, randn, rng};
use gsure::{backward, DType, Device, ParamStore, Tensor};
use std::cell::RefCell;

fn t64(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_f64(v, shape.to_vec(), DType::F64, &Device::Cpu).unwrap()
}

/// Solves A x = b (A square, row-major) by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let piv = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs())).unwrap();
        a.swap(col, piv);
        b.swap(col, piv);
        assert!(a[col][col].abs() > 1e-12, "singular system (a coordinate is never supervised)");
        for r in col + 1..n {
            let f = a[r][col] / a[col][col];
            for c in col..n {
                a[r][c] -= f * a[col][c];
            }
            b[r] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        x[r] = (b[r] - (r + 1..n).map(|c| a[r][c] * x[c]).sum::<f64>()) / a[r][r];
    }
    x
}

fn inverse(a: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = a.len();
    let cols: Vec<Vec<f64>> =
        (0..n).map(|j| solve(a.to_vec(), (0..n).map(|i| (i == j) as u8 as f64).collect())).collect();
    (0..n).map(|i| (0..n).map(|j| cols[j][i]).collect()).collect()
}

/// The Gaussian case of the Ambient theorem. x0 ∈ R⁴ (an image [1, 2, 2]) ~ N(μ, Σ) with strong
/// correlations, A ~ Bernoulli(0.7), δ = 0.4 (larger than the default so that hidden-but-observed pixels are
/// common), σ = 0.5. For a fixed pattern Ã* we keep the examples whose Ã (as `further_mask` derives it from
/// A and the index) equals Ã*, and fit D = W z_O + b (z_O the visible coordinates of Ã ⊙ x_t) by minimising
/// the implemented ambient loss: it is exactly quadratic in θ = (W, b) for a fixed generator state, so its
/// gradient (by autograd through the loss) at θ = 0 and at the unit vectors gives the Hessian and the
/// minimiser. The minimiser must match the analytic E[x0 | z_O] = μ + Σ_{·O}(Σ_OO + σ²I)⁻¹(z_O − μ_O) within
/// 5 standard errors, the OLS covariance v_i (Σ_n A_ni φφᵀ)⁻¹ = v_i (2λ/K) H_i⁻¹, v_i = Var(x0_i | z_O).
/// A loss on Ã instead of A leaves the hidden coordinates unsupervised (singular Hessian), and a loss on all
/// pixels against y = A ⊙ x0 shrinks them towards 0 by P(A_i = 1 | Ã) ≈ 0.48: both fail this test.
#[test]
fn ambient_minimiser_is_the_conditional_mean_in_a_gaussian_case() {
    let mu = [0.3, -0.2, 0.1, 0.5];
    let l = [[0.6, 0.0, 0.0, 0.0], [0.45, 0.35, 0.0, 0.0], [-0.3, 0.2, 0.4, 0.0], [0.35, -0.25, 0.2, 0.3]];
    let cov: Vec<Vec<f64>> =
        (0..4).map(|i| (0..4).map(|j| (0..4).map(|k| l[i][k] * l[j][k]).sum()).collect()).collect();
    let sigma = 0.5;
    let total = 60_000;
    let opts = AmbientOptions { delta: 0.4, mask_seed: 11, fixed_sigma: Some(sigma), ..Default::default() };
    let edm = Edm::default();
    let lam = edm.loss_weight(sigma);

    let mut r = rng(1);
    let z = randn(&[total, 4], &mut r).to_vec_f64().unwrap();
    let z = &z;
    let x0: Vec<f64> = (0..total)
        .flat_map(|n| (0..4).map(move |i| (0..4).map(|k| l[i][k] * z[n * 4 + k]).sum::<f64>() + mu[i]))
        .collect();
    let a = mask(&[total, 1, 2, 2], 0.7, &mut r).to_vec_f64().unwrap();
    let (a, x0) = (&a, &x0);
    let all: Vec<usize> = (0..total).collect();
    let a_tilde = further_mask(&t64(a, &[total, 1, 2, 2]), &all, &opts, &mut rng(0)).unwrap().to_vec_f64().unwrap();

    for pattern in [[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]] {
        let keep: Vec<usize> = (0..total).filter(|&n| a_tilde[n * 4..n * 4 + 4] == pattern).collect();
        let k = keep.len();
        let obs: Vec<usize> = (0..4).filter(|&i| pattern[i] == 1.0).collect();
        let f = obs.len() + 1; // features [z_O, 1]
        let p = 4 * f; // θ[4·j + i]: feature j, output i (W is [f, 4])
        let y: Vec<f64> = keep.iter().flat_map(|&n| (0..4).map(move |i| a[n * 4 + i] * x0[n * 4 + i])).collect();
        let am: Vec<f64> = keep.iter().flat_map(|&n| a[n * 4..n * 4 + 4].to_vec()).collect();
        let (y, am) = (t64(&y, &[k, 1, 2, 2]), t64(&am, &[k, 1, 2, 2]));

        let grad_at = |theta: &[f64]| -> Vec<f64> {
            let w = t64(theta, &[f, 4]).set_requires_grad(true);
            let denoise = |x: &Tensor, s: &[f64], m: Option<&Tensor>| -> anyhow::Result<Tensor> {
                assert!(s.iter().all(|&v| v == sigma));
                let mv = m.unwrap().to_vec_f64()?;
                assert!(mv.chunks(4).all(|c| c == pattern), "the network must see Ã*");
                let xv = x.to_vec_f64()?;
                let feats: Vec<f64> = xv
                    .chunks(4)
                    .flat_map(|c| obs.iter().map(|&i| c[i]).chain(std::iter::once(1.0)).collect::<Vec<_>>())
                    .collect();
                let phi = t64(&feats, &[k, f]);
                // D[n, i] = Σ_j φ[n, j] W[j, i]
                let d = ops::matmul(&phi, &w)?;
                d.reshape([k, 1, 2, 2])
            };
            let out = ambient_loss_with(&edm, denoise, &y, &am, &keep, &opts, &mut rng(5)).unwrap();
            let g = backward(&out.loss).unwrap();
            g.get(&w).unwrap().to_vec_f64().unwrap()
        };
        let g0 = grad_at(&vec![0.0; p]);
        let mut h = vec![vec![0.0; p]; p];
        for c in 0..p {
            let mut e = vec![0.0; p];
            e[c] = 1.0;
            let gc = grad_at(&e);
            for row in 0..p {
                h[row][c] = gc[row] - g0[row];
            }
        }
        let theta = solve(h.clone(), g0.iter().map(|g| -g).collect());

        // Analytic conditional mean and the OLS standard errors.
        let s_oo: Vec<Vec<f64>> = obs
            .iter()
            .map(|&i| obs.iter().map(|&j| cov[i][j] + if i == j { sigma * sigma } else { 0.0 }).collect())
            .collect();
        let s_oo_inv = inverse(&s_oo);
        for i in 0..4 {
            let w_true: Vec<f64> =
                (0..obs.len()).map(|b| (0..obs.len()).map(|c| cov[i][obs[c]] * s_oo_inv[c][b]).sum()).collect();
            let b_true = mu[i] - (0..obs.len()).map(|b| w_true[b] * mu[obs[b]]).sum::<f64>();
            let v = cov[i][i] - (0..obs.len()).map(|b| w_true[b] * cov[obs[b]][i]).sum::<f64>();
            let block: Vec<Vec<f64>> = (0..f).map(|a| (0..f).map(|b| h[4 * a + i][4 * b + i]).collect()).collect();
            let binv = inverse(&block);
            let truth: Vec<f64> = w_true.iter().copied().chain(std::iter::once(b_true)).collect();
            for j in 0..f {
                let se = (v * 2.0 * lam / k as f64 * binv[j][j]).sqrt();
                let est = theta[4 * j + i];
                println!(
                    "pattern {pattern:?} ({k} examples): output {i} feature {j}: fit {est:.4}, E[x0|z] {:.4}, se {se:.4}",
                    truth[j]
                );
                assert!((est - truth[j]).abs() < 5.0 * se, "output {i} feature {j}: {est} vs {} (se {se})", truth[j]);
                assert!(se < 0.06, "the test must be sharp: se {se}");
            }
            if pattern[i] == 0.0 {
                // The hidden coordinate's conditional mean is far from what shrinkage towards 0 would give.
                let shrunk = 0.48 * truth[f - 1];
                let se_b = (v * 2.0 * lam / k as f64 * binv[f - 1][f - 1]).sqrt();
                assert!((shrunk - truth[f - 1]).abs() > 5.0 * se_b || truth[f - 1].abs() < 0.05);
            }
        }
    }
}

#[test]
fn further_mask_is_fixed_per_image_index() {
    let opts = AmbientOptions { delta: 0.3, mask_seed: 4, ..Default::default() };
    let a = Tensor::full([3, 2, 6, 5], 1.0, DType::F64, &Device::Cpu).unwrap();
    let m1 = further_mask(&a, &[7, 8, 7], &opts, &mut rng(1)).unwrap().to_vec_f64().unwrap();
    let m2 = further_mask(&a, &[7, 8, 7], &opts, &mut rng(2)).unwrap().to_vec_f64().unwrap();
    assert_eq!(m1, m2, "B depends on the image index only, not on the step's generator");
    let per = 2 * 30;
    assert_eq!(m1[..per], m1[2 * per..], "the same index gives the same B");
    assert_ne!(m1[..per], m1[per..2 * per], "different indices give different B");
    assert_eq!(m1[..30], m1[30..60], "B is shared across channels");
    assert_eq!(m1[..30], b_mask(7, 30, 0.3, 4)[..]);
    assert_ne!(b_mask(7, 30, 0.3, 4), b_mask(7, 30, 0.3, 5), "the seed matters");
    // With resampling, B comes from the generator.
    let ro = AmbientOptions { resample_b: true, ..opts };
    let r1 = further_mask(&a, &[7, 8, 7], &ro, &mut rng(1)).unwrap().to_vec_f64().unwrap();
    let r2 = further_mask(&a, &[7, 8, 7], &ro, &mut rng(2)).unwrap().to_vec_f64().unwrap();
    assert_ne!(r1, r2);
    // Ã = A ⊙ B, and P(B = 1) = 1 − δ (5 standard errors over 200k pixels).
    let b: Vec<f64> = (0..2000).flat_map(|i| b_mask(i, 100, 0.3, 9)).collect();
    let rate = b.iter().sum::<f64>() / b.len() as f64;
    assert!((rate - 0.7).abs() < 5.0 * (0.21f64 / b.len() as f64).sqrt(), "P(B = 1) = {rate}");
    let a = mask(&[3, 1, 6, 5], 0.5, &mut rng(3));
    let av = a.to_vec_f64().unwrap();
    let at = further_mask(&a, &[1, 2, 3], &opts, &mut rng(0)).unwrap().to_vec_f64().unwrap();
    assert!(at.iter().zip(&av).all(|(t, a)| *t <= *a), "Ã ⊆ A");
}

/// A small EDM denoiser with mask channels and perturbed weights (the output layer is initialised near 0).
fn small_net(extra: usize, channels: usize) -> (ParamStore, EdmDenoiser) {
    let cfg = DdpmppConfig {
        in_channels: channels,
        out_channels: channels,
        extra_in_channels: extra,
        resolution: 8,
        model_channels: 16,
        attn_resolutions: vec![],
        ..DdpmppConfig::tiny()
    };
    let mut ps = ParamStore::new();
    let net = DdpmppUnet::new(&cfg, &mut ps, 0, &Device::Cpu, DType::F64).unwrap();
    let mut r = rng(77);
    for (_, p) in ps.iter() {
        p.assign(&ops::scale(&randn(p.dims(), &mut r), 0.2).unwrap()).unwrap();
    }
    (ps, EdmDenoiser::new(net, Edm::default()))
}

#[test]
fn loss_ignores_unobserved_pixels_and_matches_its_formula() {
    let (ps, den) = small_net(2, 2);
    let (n, shape) = (3, [3, 2, 8, 8]);
    let a = mask(&[n, 1, 8, 8], 0.6, &mut rng(1));
    let x0 = randn(&shape, &mut rng(2));
    let a2 = ops::layout::concat_channels(&[&a, &a]).unwrap();
    let y = ops::mul(&x0, &a2).unwrap();
    let other =
        ops::add(&y, &ops::mul(&randn(&shape, &mut rng(3)), &ops::affine(&a2, -1.0, 1.0).unwrap()).unwrap()).unwrap();
    let opts = AmbientOptions::default();
    let idx = [4, 9, 2];
    let l1 = ambient_loss(&den, &y, &a, &idx, &opts, &mut rng(6), Some(TrainSeed::Host(1))).unwrap();
    let l2 = ambient_loss(&den, &other, &a, &idx, &opts, &mut rng(6), Some(TrainSeed::Host(1))).unwrap();
    assert_eq!(l1.item().unwrap(), l2.item().unwrap(), "values under A = 0 must not matter");
    // ... while observed values do.
    let moved = ops::add(&y, &ops::scale(&a2, 0.3).unwrap()).unwrap();
    let l3 = ambient_loss(&den, &moved, &a, &idx, &opts, &mut rng(6), Some(TrainSeed::Host(1))).unwrap();
    assert!((l3.item().unwrap() - l1.item().unwrap()).abs() > 1e-6);
    // Gradients reach the parameters.
    let g = backward(&l1).unwrap();
    let nonzero =
        ps.iter().filter(|(_, p)| g.get(p).is_some_and(|g| g.to_vec_f64().unwrap().iter().any(|v| *v != 0.0)));
    assert!(nonzero.count() > ps.len() / 2);

    // Formula, with a constant denoiser D = c: Ambient λ Σ A (c − y)², naive λ Σ_all (c − y)².
    let c = 0.25;
    let seen = RefCell::new(None);
    let denoise = |x: &Tensor, _: &[f64], m: Option<&Tensor>| {
        *seen.borrow_mut() = Some((x.to_vec_f64()?, m.map(|m| m.to_vec_f64().unwrap())));
        Tensor::full(x.shape().clone(), c, DType::F64, &Device::Cpu)
    };
    let (yv, av) = (y.to_vec_f64().unwrap(), a2.to_vec_f64().unwrap());
    for mode in [AmbientMode::Ambient, AmbientMode::Naive] {
        let o = AmbientOptions { mode, ..opts };
        let out = ambient_loss_with(&den.edm, denoise, &y, &a, &idx, &o, &mut rng(8)).unwrap();
        let pe = out.per_example.to_vec_f64().unwrap();
        let (xin, m) = seen.borrow().clone().unwrap();
        for i in 0..n {
            let sl = i * 128..(i + 1) * 128;
            let expect: f64 = sl
                .clone()
                .map(|j| if mode == AmbientMode::Ambient { av[j] } else { 1.0 } * (c - yv[j]).powi(2))
                .sum::<f64>()
                * den.edm.loss_weight(out.sigma[i]);
            assert!((pe[i] - expect).abs() < 1e-9 * expect.max(1.0), "{mode:?} example {i}: {} vs {expect}", pe[i]);
        }
        let mean = pe.iter().sum::<f64>() / n as f64;
        assert!((out.loss.item().unwrap() - mean).abs() < 1e-12 * mean);
        match mode {
            AmbientMode::Ambient => {
                let m = m.unwrap();
                let at = out.a_tilde.to_vec_f64().unwrap();
                assert_eq!(m, at, "the mask input is Ã");
                assert!(xin.iter().zip(&m).all(|(x, m)| *m == 1.0 || *x == 0.0), "the network sees only Ã ⊙ x_t");
                assert!(at.iter().zip(&av).all(|(t, a)| t <= a) && at.iter().sum::<f64>() < av.iter().sum::<f64>());
            }
            AmbientMode::Naive => assert!(m.is_none(), "the naive baseline has no mask input"),
        }
    }
    // The naive baseline through an EDM denoiser without mask channels.
    let (_, plain) = small_net(0, 2);
    let o = AmbientOptions { mode: AmbientMode::Naive, ..opts };
    assert!(ambient_loss(&plain, &y, &a, &idx, &o, &mut rng(6), None).unwrap().item().unwrap().is_finite());
    let parts = ambient_loss_parts(&den, &y, &a, &idx, &opts, &mut rng(6), Some(TrainSeed::Host(1))).unwrap();
    assert_eq!(parts.loss.item().unwrap(), l1.item().unwrap(), "same generator, same loss");
}

#[test]
fn bad_input_is_refused_with_clear_errors() {
    let (_, den) = small_net(2, 2);
    let y = randn(&[2, 2, 8, 8], &mut rng(1));
    let a = mask(&[2, 1, 8, 8], 0.5, &mut rng(2));
    let opts = AmbientOptions::default();
    let e = |r: anyhow::Result<Tensor>| r.unwrap_err().to_string();
    let half = Tensor::full([2, 1, 8, 8], 0.5, DType::F64, &Device::Cpu).unwrap();
    let err = e(ambient_loss(&den, &y, &half, &[0, 1], &opts, &mut rng(0), None));
    assert!(err.contains("only 0 and 1") && err.contains("0.5"), "{err}");
    let err = e(ambient_loss(&den, &y, &mask(&[2, 1, 8, 7], 0.5, &mut rng(2)), &[0, 1], &opts, &mut rng(0), None));
    assert!(err.contains("[2, 1, 8, 7]") && err.contains("[2, 2, 8, 8]"), "{err}");
    let err = e(ambient_loss(&den, &y, &mask(&[2, 3, 8, 8], 0.5, &mut rng(2)), &[0, 1], &opts, &mut rng(0), None));
    assert!(err.contains("1 or 2"), "{err}");
    let err = e(ambient_loss(&den, &y, &a, &[0], &opts, &mut rng(0), None));
    assert!(err.contains("1 image indices"), "{err}");
    let err = e(ambient_loss(&den, &y, &a.to_dtype(DType::F32).unwrap(), &[0, 1], &opts, &mut rng(0), None));
    assert!(err.contains("dtype"), "{err}");
    let bad_delta = AmbientOptions { delta: 1.0, ..opts };
    assert!(e(ambient_loss(&den, &y, &a, &[0, 1], &bad_delta, &mut rng(0), None)).contains("δ"));
    let (_, plain) = small_net(0, 2);
    let err = e(ambient_loss(&plain, &y, &a, &[0, 1], &opts, &mut rng(0), None));
    assert!(err.contains("mask channels"), "{err}");
    let so = AmbientSampleOptions { p: 1.2, ..Default::default() };
    assert!(ambient_sample(&den, &so, 1, DType::F64, &Device::Cpu, &mut rng(0))
        .unwrap_err()
        .to_string()
        .contains("p = 1.2"));
}

#[test]
fn sampler_keeps_one_mask_per_sample_and_is_seeded() {
    let opts = AmbientSampleOptions { p: 0.5, delta: 0.1, ..Default::default() };
    let shape = [64, 3, 8, 8];
    let run = |seed: u64| {
        let seen: RefCell<Vec<(Vec<f64>, f64)>> = RefCell::new(vec![]);
        let (x, m) =
            ambient_sample_with(&Edm::default(), &opts, shape, DType::F64, &Device::Cpu, &mut rng(seed), |x, s, m| {
                let (xv, mv) = (x.to_vec_f64()?, m.to_vec_f64()?);
                assert!(xv.iter().zip(&mv).all(|(x, m)| *m == 1.0 || *x == 0.0), "the network sees Ã ⊙ x");
                seen.borrow_mut().push((mv, s));
                // A denoiser that overshoots: the clip must bring it back to [−1, 1].
                ops::scale(x, 3.0)
            })
            .unwrap();
        (x.to_vec_f64().unwrap(), m.to_vec_f64().unwrap(), seen.into_inner())
    };
    let (x1, m1, seen) = run(3);
    assert_eq!(seen.len(), 2 * 18 - 1, "Heun: two evaluations per step, one on the last");
    assert!((seen[0].1 - 80.0).abs() < 1e-9 && (seen.last().unwrap().1 - 0.002).abs() < 1e-12);
    let m3 = &m1;
    for (mv, _) in &seen {
        // The network gets the mask [N, 3, 8, 8]: the sample's [N, 1, 8, 8] mask in every channel.
        for i in 0..64 {
            for ch in 0..3 {
                assert_eq!(mv[(i * 3 + ch) * 64..(i * 3 + ch + 1) * 64], m3[i * 64..(i + 1) * 64]);
            }
        }
    }
    assert!(x1.iter().all(|v| (-1.0..=1.0).contains(v)), "predictions are clipped");
    let keep = m1.iter().sum::<f64>() / m1.len() as f64;
    let q = 0.5 * 0.9;
    assert!((keep - q).abs() < 5.0 * (q * (1.0 - q) / m1.len() as f64).sqrt(), "keep rate {keep} vs {q}");
    let (x2, m2, _) = run(3);
    assert_eq!((x1.clone(), m1.clone()), (x2, m2), "same seed, same samples and masks");
    let (x4, m4, _) = run(4);
    assert!(x1 != x4 && m1 != m4);

    // Through a real EDM denoiser with mask channels.
    let (_, den) = small_net(2, 2);
    let go = |seed| {
        let (x, m) = ambient_sample(
            &den,
            &AmbientSampleOptions { p: 0.3, ..Default::default() },
            2,
            DType::F64,
            &Device::Cpu,
            &mut rng(seed),
        )
        .unwrap();
        (x.to_vec_f64().unwrap(), m.to_vec_f64().unwrap())
    };
    let (a, b) = (go(5), go(5));
    assert_eq!(a, b);
    assert!(a.0.iter().all(|v| v.is_finite() && (-1.0..=1.0).contains(v)));
    assert_eq!(a.1.len(), 2 * 64);
}

/// The same loss on the CPU and on the GPU (f32): the objective is built from ops that each have a parity
/// test, so this checks the glue (masks, dtypes, host round trips). Skips without a GPU.
#[test]
fn cpu_and_gpu_agree_in_f32() {
    let Some(gpu) = gsure::testing::gpu_or_skip("ambient cpu_and_gpu_agree_in_f32") else { return };
    let build = |device: &Device| {
        let cfg = DdpmppConfig {
            in_channels: 2,
            out_channels: 2,
            extra_in_channels: 2,
            resolution: 8,
            model_channels: 16,
            attn_resolutions: vec![],
            ..DdpmppConfig::tiny()
        };
        let mut ps = ParamStore::new();
        let net = DdpmppUnet::new(&cfg, &mut ps, 0, device, DType::F32).unwrap();
        let mut r = rng(77);
        for (_, p) in ps.iter() {
            let v = ops::scale(&randn(p.dims(), &mut r), 0.2).unwrap().to_dtype(DType::F32).unwrap();
            p.assign(&v.to_device(device).unwrap()).unwrap();
        }
        EdmDenoiser::new(net, Edm::default())
    };
    let y = randn(&[3, 2, 8, 8], &mut rng(1)).to_dtype(DType::F32).unwrap();
    let a = mask(&[3, 1, 8, 8], 0.6, &mut rng(2)).to_dtype(DType::F32).unwrap();
    let run = |device: &Device| {
        let den = build(device);
        let (y, a) = (y.to_device(device).unwrap(), a.to_device(device).unwrap());
        let l = ambient_loss(&den, &y, &a, &[0, 1, 2], &AmbientOptions::default(), &mut rng(3), None).unwrap();
        let (x, _) = ambient_sample(
            &den,
            &AmbientSampleOptions { p: 0.3, ..Default::default() },
            2,
            DType::F32,
            device,
            &mut rng(4),
        )
        .unwrap();
        (l.item().unwrap(), x.to_vec_f64().unwrap())
    };
    let (lc, xc) = run(&Device::Cpu);
    let (lg, xg) = run(&gpu);
    println!("ambient loss: CPU {lc}, GPU {lg}");
    assert!((lc - lg).abs() < 1e-3 * lc.abs());
    let err = xc.iter().zip(&xg).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(err < 1e-2, "samples differ by {err}");
}
