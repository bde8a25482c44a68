//! Consistent Diffusion meets Tweedie (docs/METHODS.md §4.4): the double-Tweedie loss equals the oracle loss up to
//! a constant free of the network (linear-Gaussian model, Monte Carlo with 5-standard-error bounds), the
//! pseudo-target identity, the consistency estimator's unbiasedness and its gradient path, the truncated
//! σ sampler, and the samplers' determinism.
#![allow(clippy::needless_range_loop)] // numeric tests index several parallel arrays
use gsure::diffusion::schedule::Edm;
use gsure::diffusion::EdmOptions;
use gsure::nn::TrainSeed;
use gsure::nn::{DdpmppConfig, DdpmppUnet, EdmDenoiser};
use gsure::objectives::tweedie::{
    consistency_term_with, noisy_observations, pseudo_target, truncated_sigma, truncated_std_normal, tweedie_loss,
    tweedie_loss_parts, tweedie_loss_with, tweedie_sample, tweedie_sample_with, xn_estimate, ConsistencyOptions,
    ConsistencyStep, TweedieOptions, TweedieSampling,
};
use gsure::ops;
use gsure::testing::{randn, rng};
use gsure::{backward, DType, Device, ParamStore, Tensor};
use std::cell::RefCell;

fn t64(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_f64(v, shape.to_vec(), DType::F64, &Device::Cpu).unwrap()
}

/// Mean and standard error of a sample.
fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, (var / n).sqrt())
}

#[test]
fn pseudo_target_identity() {
    // ‖x̂_n − x_n‖² = (1 − σ_n²/σ_t²)² ‖x̂0 − x̃0‖², per example, for arbitrary tensors.
    let shape = [4, 2, 3, 5];
    let (x_n, x_t, x0h) = (randn(&shape, &mut rng(1)), randn(&shape, &mut rng(2)), randn(&shape, &mut rng(3)));
    let sn = [0.05, 0.2, 1.0, 0.1];
    let st = [0.06, 0.9, 3.0, 40.0];
    let lhs = ops::sum_per_example(
        &ops::square(&ops::sub(&xn_estimate(&x_t, &x0h, &sn, &st).unwrap(), &x_n).unwrap()).unwrap(),
    )
    .unwrap()
    .to_vec_f64()
    .unwrap();
    let tilde = pseudo_target(&x_n, &x_t, &sn, &st).unwrap();
    let rhs =
        ops::sum_per_example(&ops::square(&ops::sub(&x0h, &tilde).unwrap()).unwrap()).unwrap().to_vec_f64().unwrap();
    for i in 0..4 {
        let c = (1.0 - sn[i] * sn[i] / (st[i] * st[i])).powi(2);
        println!("example {i}: ‖x̂_n − x_n‖² = {:.6e}, (1−r)²‖x̂0 − x̃0‖² = {:.6e}", lhs[i], c * rhs[i]);
        assert!((lhs[i] - c * rhs[i]).abs() < 1e-11 * lhs[i].max(1e-3), "example {i}");
    }
    // x̃0 = (σ_t² x_n − σ_n² x_t)/(σ_t² − σ_n²) elementwise.
    let (a, b, t) = (x_n.to_vec_f64().unwrap(), x_t.to_vec_f64().unwrap(), tilde.to_vec_f64().unwrap());
    for j in [0, 31, 59, 100] {
        let i = j / 30;
        let e = (st[i] * st[i] * a[j] - sn[i] * sn[i] * b[j]) / (st[i] * st[i] - sn[i] * sn[i]);
        assert!((t[j] - e).abs() < 1e-12 * e.abs().max(1.0));
    }
}

const D: usize = 8;
const MU: f64 = 0.1;
const S: f64 = 0.5;

/// The linear-Gaussian set-up: x0 ~ N(μ, s²) in 8 coordinates, σ_n = 0.2 with noise fixed per example.
fn gaussian_data(n: usize) -> (Tensor, Tensor, Vec<f64>) {
    let x0 = ops::affine(&randn(&[n, 1, 2, 4], &mut rng(21)), S, MU).unwrap();
    let sigma_n = vec![0.2; n];
    let idx: Vec<usize> = (0..n).collect();
    let x_n = noisy_observations(&x0, &sigma_n, &idx, 3).unwrap();
    (x0, x_n, sigma_n)
}

type Seen = RefCell<Vec<(Vec<f64>, Vec<f64>)>>;

/// D_θ(x; σ) = a x + b, recording (x, σ) of every call.
fn linear(a: f64, b: f64, seen: &Seen) -> impl Fn(&Tensor, &[f64]) -> anyhow::Result<Tensor> + '_ {
    move |x, s| {
        seen.borrow_mut().push((x.to_vec_f64()?, s.to_vec()));
        ops::affine(x, a, b)
    }
}

/// E[L_tweedie − L_oracle] is free of θ, where L_oracle = λ(σ_t)(1 − σ_n²/σ_t²)² ‖D(x_t; σ_t) − x0‖² on the
/// very same (x_t, σ_t). Conditional on σ_t the constant is λ d σ_n² (σ_t² − σ_n²)/σ_t²
/// (x̃0 − x0 = σ_n η − σ_n² η'/√(σ_t² − σ_n²)). Checked per θ against that constant and pairwise between
/// θ draws (common random numbers) within 5 standard errors; the Tweedie losses themselves differ between
/// the θ draws by many standard errors, so the test has power.
#[test]
fn tweedie_loss_equals_the_oracle_loss_up_to_a_constant() {
    let n = 20_000;
    let (x0, x_n, sigma_n) = gaussian_data(n);
    let x0v = x0.to_vec_f64().unwrap();
    let edm = Edm::default();
    let opts = TweedieOptions::default();
    let thetas = [(0.5, 0.0), (0.9, 0.1), (0.2, -0.3), (1.0, 0.0)];
    let mut diffs: Vec<Vec<f64>> = vec![];
    let mut losses: Vec<Vec<f64>> = vec![];
    for &(a, b) in &thetas {
        let seen = Seen::default();
        let out = tweedie_loss_with(&edm, linear(a, b, &seen), &x_n, &sigma_n, &opts, &mut rng(9)).unwrap();
        let tw = out.tweedie.to_vec_f64().unwrap();
        let (xt, st) = seen.borrow()[0].clone();
        assert_eq!(st, out.sigma_t);
        assert!(st.iter().all(|&s| s >= 0.2 * 1.1), "σ_t ≥ σ_n (1 + margin)");
        let mut diff = Vec::with_capacity(n);
        let mut centred = Vec::with_capacity(n);
        for i in 0..n {
            let (sn, s) = (sigma_n[i], st[i]);
            let w = edm.loss_weight(s) * (1.0 - sn * sn / (s * s)).powi(2);
            let oracle: f64 = (0..D).map(|j| (a * xt[i * D + j] + b - x0v[i * D + j]).powi(2)).sum::<f64>() * w;
            let c = edm.loss_weight(s) * D as f64 * sn * sn * (s * s - sn * sn) / (s * s);
            diff.push(tw[i] - oracle);
            centred.push(tw[i] - oracle - c);
        }
        let (m, se) = mean_se(&centred);
        let (md, _) = mean_se(&diff);
        println!("θ = ({a}, {b}): E[L_tw − L_oracle] = {md:.5}, minus the analytic constant: {m:.5} ± {se:.5}");
        assert!(m.abs() < 5.0 * se, "θ = ({a}, {b}): {m} ± {se}");
        assert!((out.loss.item().unwrap() - mean_se(&tw).0).abs() < 1e-12 * mean_se(&tw).0);
        diffs.push(diff);
        losses.push(tw);
    }
    let mut power = 0.0f64;
    for k in 1..thetas.len() {
        let pair: Vec<f64> = (0..n).map(|i| diffs[k][i] - diffs[0][i]).collect();
        let (m, se) = mean_se(&pair);
        let raw: Vec<f64> = (0..n).map(|i| losses[k][i] - losses[0][i]).collect();
        let (mr, ser) = mean_se(&raw);
        println!("θ{k} − θ0: difference of (L_tw − L_oracle) {m:.5} ± {se:.5}; of L_tw itself {mr:.4} ± {ser:.4}");
        assert!(m.abs() < 5.0 * se, "θ{k}: {m} ± {se}");
        power = power.max(mr.abs() / ser);
    }
    assert!(power > 10.0, "the losses must differ between θ draws for the test to mean something");

    // The x_t top-up: (x_t − x_n)/√(σ_t² − σ_n²) is standard normal.
    let seen = Seen::default();
    let out = tweedie_loss_with(&edm, linear(0.5, 0.0, &seen), &x_n, &sigma_n, &opts, &mut rng(9)).unwrap();
    let (xt, st) = seen.borrow()[0].clone();
    let xnv = x_n.to_vec_f64().unwrap();
    let z: Vec<f64> = (0..n * D).map(|k| (xt[k] - xnv[k]) / (st[k / D].powi(2) - 0.04).sqrt()).collect();
    let (mz, sez) = mean_se(&z);
    let var = z.iter().map(|v| v * v).sum::<f64>() / z.len() as f64;
    assert!(mz.abs() < 5.0 * sez && (var - 1.0).abs() < 5.0 * (2.0 / z.len() as f64).sqrt(), "{mz} {var}");
    // The fixed noise of x_n has standard deviation σ_n.
    let e: Vec<f64> = (0..n * D).map(|k| (xnv[k] - x0.to_vec_f64().unwrap()[k]) / 0.2).take(4000).collect();
    let ve = e.iter().map(|v| v * v).sum::<f64>() / e.len() as f64;
    assert!((ve - 1.0).abs() < 5.0 * (2.0 / e.len() as f64).sqrt(), "{ve}");
    drop(out);

    // With the extra weight σ_t⁴/(σ_t² − σ_n²)², the loss is the plain EDM loss against the pseudo-target.
    let small = 64;
    let (xs, ss) = (ops::affine(&randn(&[small, 1, 2, 4], &mut rng(4)), 0.3, 0.0).unwrap(), vec![0.3; small]);
    let seen = Seen::default();
    let o = TweedieOptions { pseudo_target_weight: true, ..opts };
    let out = tweedie_loss_with(&edm, linear(0.7, 0.05, &seen), &xs, &ss, &o, &mut rng(2)).unwrap();
    let (xt, st) = seen.borrow()[0].clone();
    let xt = t64(&xt, &[small, 1, 2, 4]);
    let tilde = pseudo_target(&xs, &xt, &ss, &st).unwrap();
    let x0h = ops::affine(&xt, 0.7, 0.05).unwrap();
    let sq =
        ops::sum_per_example(&ops::square(&ops::sub(&x0h, &tilde).unwrap()).unwrap()).unwrap().to_vec_f64().unwrap();
    let got = out.tweedie.to_vec_f64().unwrap();
    for i in 0..small {
        let e = edm.loss_weight(st[i]) * sq[i];
        assert!((got[i] - e).abs() < 1e-9 * e, "{} vs {e}", got[i]);
    }
}

/// E[σ_t] under the truncation by quadrature: the sampler draws the exact conditional law of ln σ.
#[test]
fn truncated_normal_sampler_is_exact() {
    let moments = |a: f64, b: f64| {
        let (lo, hi) = (a.max(-12.0), b.min(12.0));
        let k = 20_000;
        let h = (hi - lo) / k as f64;
        let (mut z0, mut z1, mut z2) = (0.0, 0.0, 0.0);
        for i in 0..=k {
            let x = lo + h * i as f64;
            let wgt = if i == 0 || i == k {
                1.0
            } else if i % 2 == 1 {
                4.0
            } else {
                2.0
            };
            let p = wgt * (-x * x / 2.0).exp();
            z0 += p;
            z1 += p * x;
            z2 += p * x * x;
        }
        (z1 / z0, z2 / z0 - (z1 / z0).powi(2))
    };
    // Robert's exponential proposal, plain rejection, two-sided after rejection fails, far tail two-sided.
    for (a, b) in [(1.5, f64::INFINITY), (-0.3, f64::INFINITY), (f64::NEG_INFINITY, -2.0), (-4.2, -1.5), (2.0, 3.0)] {
        let mut r = rng(5);
        let v: Vec<f64> = (0..20_000).map(|_| truncated_std_normal(a, b, &mut r)).collect();
        assert!(v.iter().all(|z| *z >= a && *z <= b));
        let (m, se) = mean_se(&v);
        let (em, ev) = moments(a, b);
        let var = v.iter().map(|z| (z - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
        println!("[{a}, {b}]: mean {m:.4} vs {em:.4} (se {se:.4}), variance {var:.4} vs {ev:.4}");
        assert!((m - em).abs() < 5.0 * se, "[{a}, {b}] mean");
        assert!((var - ev).abs() < 5.0 * ev * (2.0 / v.len() as f64).sqrt() * 1.5, "[{a}, {b}] variance");
    }
    let edm = Edm::default();
    let mut r = rng(6);
    assert!((0..1000).map(|_| truncated_sigma(&edm, 0.3, f64::INFINITY, &mut r)).all(|s| s >= 0.3));
    assert!((0..1000).map(|_| truncated_sigma(&edm, 0.002, 0.05, &mut r)).all(|s| (0.002..=0.05).contains(&s)));
}

/// The consistency estimate is unbiased for mean_pixels((E[D(x'; σ') | x] − D(x; σ))²). With the closed-form
/// D(x; σ) = x/(1 + 4σ²) + 2σ (deliberately inconsistent) and the Gaussian step x' | x, the target is exact:
/// E[x' | x] = (σ'²/σ²) x + (1 − σ'²/σ²) D(x; σ) for both step kinds, E[D(x'; σ') | x] = D(E[x' | x]; σ').
/// 20000 independent pairs (x¹, x²) from one x; an estimator reusing one noise would be biased by
/// c(σ')² Var(x' | x) ≈ 0.015, hundreds of standard errors.
#[test]
fn consistency_estimator_is_unbiased() {
    let c = |s: f64| 1.0 / (1.0 + 4.0 * s * s);
    let dfun = |x: &Tensor, s: &[f64]| -> anyhow::Result<Tensor> {
        let v = x.to_vec_f64()?;
        let per = v.len() / s.len();
        let out: Vec<f64> = v.iter().enumerate().map(|(k, x)| c(s[k / per]) * x + 2.0 * s[k / per]).collect();
        Tensor::from_f64(&out, x.shape().clone(), DType::F64, &Device::Cpu)
    };
    let n = 20_000;
    let x1: Vec<f64> = randn(&[D], &mut rng(3)).to_vec_f64().unwrap();
    let x = t64(&x1.iter().cycle().take(n * D).copied().collect::<Vec<_>>(), &[n, 1, 2, 4]);
    let (s, sp) = (0.3, 0.25);
    for step in [ConsistencyStep::ReverseSde, ConsistencyStep::Ancestral] {
        let lc = consistency_term_with(&dfun, &x, &vec![s; n], &vec![sp; n], step, DType::F64, &mut rng(8)).unwrap();
        let (m, se) = mean_se(&lc.to_vec_f64().unwrap());
        let target: f64 = x1
            .iter()
            .map(|&xi| {
                let d0 = c(s) * xi + 2.0 * s;
                let mean = sp * sp / (s * s) * xi + (1.0 - sp * sp / (s * s)) * d0;
                (c(sp) * mean + 2.0 * sp - d0).powi(2)
            })
            .sum::<f64>()
            / D as f64;
        let var = match step {
            ConsistencyStep::ReverseSde => s * s - sp * sp,
            ConsistencyStep::Ancestral => sp * sp * (1.0 - sp * sp / (s * s)),
        };
        println!(
            "{step:?}: estimate {m:.6} ± {se:.6}, exact {target:.6}; one-noise bias would be {:.4}",
            c(sp).powi(2) * var
        );
        assert!((m - target).abs() < 5.0 * se, "{step:?}: {m} ± {se} vs {target}");
        assert!(c(sp).powi(2) * var > 20.0 * se && target > 20.0 * se, "the test must be sharp");
    }
}

/// Gradient path: the sampled points x, x¹, x² are constants; the gradient flows through D(x; σ) and both
/// D(x^k; σ'). For D = θ x, L_c = θ² mean((x¹ − x)(x² − x)) at fixed points, so dL/dθ = 2θ mean((x¹−x)(x²−x)).
/// (Differentiating through the step that made x¹, x² would give a different number.)
#[test]
fn consistency_gradient_flows_through_all_three_outputs() {
    let theta = t64(&[0.8], &[1, 1]).set_requires_grad(true);
    let seen = Seen::default();
    let dfun = |x: &Tensor, s: &[f64]| -> anyhow::Result<Tensor> {
        seen.borrow_mut().push((x.to_vec_f64()?, s.to_vec()));
        ops::matmul(&x.reshape([x.numel(), 1])?, &theta)?.reshape(x.shape().clone())
    };
    let n = 3;
    let x = randn(&[n, 1, 2, 4], &mut rng(1));
    let lc = consistency_term_with(
        &dfun,
        &x,
        &[0.5, 0.3, 0.2],
        &[0.45, 0.28, 0.1],
        ConsistencyStep::ReverseSde,
        DType::F64,
        &mut rng(2),
    )
    .unwrap();
    let total = ops::sum_all(&lc).unwrap();
    let g = backward(&total).unwrap().get(&theta).unwrap().to_vec_f64().unwrap()[0];
    let calls = seen.borrow();
    assert_eq!(calls.len(), 2, "D(x; σ) then one batch with x¹ and x²");
    assert_eq!(calls[1].1, vec![0.45, 0.45, 0.28, 0.28, 0.1, 0.1]);
    let xv = &calls[0].0;
    let x12 = &calls[1].0;
    let mut expect = 0.0;
    for i in 0..n {
        let (a, b) = (&x12[2 * i * D..(2 * i + 1) * D], &x12[(2 * i + 1) * D..(2 * i + 2) * D]);
        expect += 2.0 * 0.8 * (0..D).map(|j| (a[j] - xv[i * D + j]) * (b[j] - xv[i * D + j])).sum::<f64>() / D as f64;
    }
    assert!((g - expect).abs() < 1e-12 * expect.abs().max(1.0), "{g} vs {expect}");
    assert!(expect.abs() > 1e-3);
}

/// The exact denoiser of x0 ~ N(μ, s²) per coordinate.
fn gaussian_denoiser(x: &Tensor, sigma: f64) -> anyhow::Result<Tensor> {
    ops::affine(x, S * S / (S * S + sigma * sigma), MU * sigma * sigma / (S * S + sigma * sigma))
}

#[test]
fn samplers_are_seeded_and_stop_where_asked() {
    let edm = Edm::default();
    let shape = [16, 1, 2, 4];
    let run = |mode, seed| {
        let last = RefCell::new((vec![], 0.0));
        let x = tweedie_sample_with(
            &edm,
            EdmOptions::default(),
            mode,
            shape,
            DType::F64,
            &Device::Cpu,
            &mut rng(seed),
            |x, s| {
                let d = gaussian_denoiser(x, s)?;
                *last.borrow_mut() = (d.to_vec_f64()?, s);
                Ok(d)
            },
        )
        .unwrap();
        (x.to_vec_f64().unwrap(), last.into_inner())
    };
    let trunc = TweedieSampling::Truncated { sigma_n: 0.2 };
    let (x, (d_last, s_last)) = run(trunc, 1);
    assert!((s_last - 0.2).abs() < 1e-12, "the truncated sampler's last evaluation is at σ_n, not {s_last}");
    let err = x.iter().zip(&d_last).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(err < 1e-12, "output = D(x; σ_n), off by {err}");
    assert_eq!(run(trunc, 1).0, x);
    assert_ne!(run(trunc, 2).0, x);
    let (xf, (_, sf)) = run(TweedieSampling::Full, 1);
    assert!((sf - 0.002).abs() < 1e-15 && xf != x);
    assert_eq!(run(TweedieSampling::Full, 1).0, xf);
    let e = tweedie_sample_with(
        &edm,
        EdmOptions::default(),
        TweedieSampling::Truncated { sigma_n: 90.0 },
        shape,
        DType::F64,
        &Device::Cpu,
        &mut rng(1),
        gaussian_denoiser,
    );
    assert!(e.unwrap_err().to_string().contains("σ_n = 90"));
}

fn small_net() -> (ParamStore, EdmDenoiser) {
    let cfg = DdpmppConfig { resolution: 8, model_channels: 16, attn_resolutions: vec![], ..DdpmppConfig::tiny() };
    let mut ps = ParamStore::new();
    let net = DdpmppUnet::new(&cfg, &mut ps, 0, &Device::Cpu, DType::F64).unwrap();
    let mut r = rng(77);
    for (_, p) in ps.iter() {
        p.assign(&ops::scale(&randn(p.dims(), &mut r), 0.2).unwrap()).unwrap();
    }
    (ps, EdmDenoiser::new(net, Edm::default()))
}

#[test]
fn edm_denoiser_loss_with_consistency_and_sampling() {
    let (ps, den) = small_net();
    let x_n = randn(&[3, 1, 8, 8], &mut rng(1));
    let sn = [0.1, 0.2, 0.05];
    let opts = TweedieOptions { consistency: Some(ConsistencyOptions::default()), ..Default::default() };
    let parts = tweedie_loss_parts(&den, &x_n, &sn, &opts, &mut rng(2), Some(TrainSeed::Host(3))).unwrap();
    let (lc, s, sp) = parts.consistency.as_ref().unwrap();
    assert!(s.iter().zip(&sn).all(|(s, n)| *s <= *n && *s >= 0.002));
    assert!(sp.iter().zip(s).all(|(p, s)| (p - 0.95 * s).abs() < 1e-15));
    let tw = parts.tweedie.to_vec_f64().unwrap();
    let lcv = lc.to_vec_f64().unwrap();
    let expect = tw.iter().sum::<f64>() / 3.0 + 0.01 * lcv.iter().sum::<f64>() / 3.0;
    assert!((parts.loss.item().unwrap() - expect).abs() < 1e-12 * expect.abs());
    let again = tweedie_loss(&den, &x_n, &sn, &opts, &mut rng(2), Some(TrainSeed::Host(3))).unwrap();
    assert_eq!(again.item().unwrap(), parts.loss.item().unwrap(), "seeded");
    let g = backward(&parts.loss).unwrap();
    assert!(ps.iter().filter(|(_, p)| g.get(p).is_some()).count() > ps.len() / 2);

    let go = |seed| {
        tweedie_sample(
            &den,
            EdmOptions::default(),
            TweedieSampling::Truncated { sigma_n: 0.1 },
            2,
            DType::F64,
            &Device::Cpu,
            &mut rng(seed),
        )
        .unwrap()
        .to_vec_f64()
        .unwrap()
    };
    let a = go(4);
    assert_eq!(a, go(4));
    assert_ne!(a, go(5));
    assert!(a.iter().all(|v| v.is_finite()));
}

#[test]
fn bad_input_is_refused_with_clear_errors() {
    let (_, den) = small_net();
    let x_n = randn(&[2, 1, 8, 8], &mut rng(1));
    let o = TweedieOptions::default();
    let e = |r: anyhow::Result<Tensor>| r.unwrap_err().to_string();
    assert!(e(tweedie_loss(&den, &x_n, &[0.1], &o, &mut rng(0), None))
        .contains("1 noise levels σ_n for a batch of shape [2, 1, 8, 8]"));
    assert!(e(tweedie_loss(&den, &x_n, &[0.1, 0.0], &o, &mut rng(0), None)).contains("σ_n = 0"));
    let fixed = TweedieOptions { fixed_sigma: Some(0.1), ..o };
    assert!(e(tweedie_loss(&den, &x_n, &[0.1, 0.05], &fixed, &mut rng(0), None)).contains("must exceed σ_n = 0.1"));
    let c = TweedieOptions { consistency: Some(ConsistencyOptions { sigma_lo: 0.2, ..Default::default() }), ..o };
    assert!(e(tweedie_loss(&den, &x_n, &[0.1, 0.3], &c, &mut rng(0), None)).contains("σ_lo = 0.2 < σ_n = 0.1"));
    assert!(e(tweedie_loss(&den, &randn(&[2, 8, 8], &mut rng(1)), &[0.1, 0.1], &o, &mut rng(0), None))
        .contains("tweedie_loss"));
    let bad = TweedieOptions { margin: -0.5, ..o };
    assert!(e(tweedie_loss(&den, &x_n, &[0.1, 0.1], &bad, &mut rng(0), None)).contains("margin"));
}

/// The same loss (with consistency) on the CPU and on the GPU in f32. Skips without a GPU.
#[test]
fn cpu_and_gpu_agree_in_f32() {
    let Some(gpu) = gsure::testing::gpu_or_skip("tweedie cpu_and_gpu_agree_in_f32") else { return };
    let x_n = randn(&[3, 1, 8, 8], &mut rng(1)).to_dtype(DType::F32).unwrap();
    let opts = TweedieOptions { consistency: Some(ConsistencyOptions::default()), ..Default::default() };
    let run = |device: &Device| {
        let cfg = DdpmppConfig { resolution: 8, model_channels: 16, attn_resolutions: vec![], ..DdpmppConfig::tiny() };
        let mut ps = ParamStore::new();
        let net = DdpmppUnet::new(&cfg, &mut ps, 0, device, DType::F32).unwrap();
        let mut r = rng(77);
        for (_, p) in ps.iter() {
            let v = ops::scale(&randn(p.dims(), &mut r), 0.2).unwrap().to_dtype(DType::F32).unwrap();
            p.assign(&v.to_device(device).unwrap()).unwrap();
        }
        let den = EdmDenoiser::new(net, Edm::default());
        let parts =
            tweedie_loss_parts(&den, &x_n.to_device(device).unwrap(), &[0.1, 0.2, 0.05], &opts, &mut rng(2), None)
                .unwrap();
        let lc = parts.consistency.unwrap().0.to_vec_f64().unwrap();
        (parts.tweedie.to_vec_f64().unwrap(), lc)
    };
    let (tc, cc) = run(&Device::Cpu);
    let (tg, cg) = run(&gpu);
    println!("tweedie per example: CPU {tc:?}, GPU {tg:?}; consistency CPU {cc:?}, GPU {cg:?}");
    for (a, b) in tc.iter().zip(&tg) {
        assert!((a - b).abs() < 1e-3 * a.abs());
    }
    for (a, b) in cc.iter().zip(&cg) {
        assert!((a - b).abs() < 1e-2 * a.abs().max(1e-4));
    }
}

/// The trainer's step, split at the bus (the draw packed into a step batch, the device loss reading only
/// it), is `tweedie_loss` with the trainer's options: the same draws in the same order, the same loss bit
/// for bit (CPU, f32), with and without the consistency loss.
#[test]
fn the_split_step_is_tweedie_loss() {
    use gsure::objectives::{for_loss, step_loss, DrawInputs};
    use gsure::train::{load_train_data, LossKind, TrainData, TrainOptions};
    for consistency in [0.0, 0.01] {
        let o =
            TrainOptions { loss: LossKind::Tweedie, consistency, phantoms: 8, ..TrainOptions::for_config("tiny-edm") };
        let config = gsure::nn::ModelConfig::by_name(&o.config).unwrap();
        let data = load_train_data(None, &o, &config).unwrap();
        let mut store = ParamStore::new();
        let model = gsure::nn::Model::new(&config, &mut store, 3, &Device::Cpu).unwrap();
        let schedule = gsure::diffusion::schedule::VpSchedule::linear(1e-4).unwrap();
        let indices = [5, 0, 2];
        let seed = Some(TrainSeed::Host(11));
        let draw = DrawInputs {
            indices: &indices,
            data: &data,
            model: &model,
            schedule: &schedule,
            options: &o,
            rng: &mut rng(4),
            compute: DType::F32,
        };
        let split = step_loss(for_loss(LossKind::Tweedie).as_ref(), draw, &Device::Cpu, seed).unwrap();

        let (TrainData::Corrupted(d), gsure::nn::Model::Edm(den)) = (&data, &model) else { panic!("noisy data, EDM") };
        let m: usize = d.dims[1..].iter().product();
        let y: Vec<f32> = indices.iter().flat_map(|&i| d.y[i * m..(i + 1) * m].iter().copied()).collect();
        let x_n = Tensor::from_f32(&y, [3, d.dims[1], d.dims[2], d.dims[3]], &Device::Cpu).unwrap();
        let opts = TweedieOptions {
            compute: Some(DType::F32),
            mean_over_pixels: true,
            consistency: (consistency > 0.0).then(|| ConsistencyOptions { weight: consistency, ..Default::default() }),
            ..Default::default()
        };
        let direct = tweedie_loss(den, &x_n, &[d.spec.sigma0; 3], &opts, &mut rng(4), seed).unwrap();
        assert_eq!(split.item().unwrap(), direct.item().unwrap(), "consistency {consistency}");
    }
}
