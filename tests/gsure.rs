//! GSURE (docs/METHODS.md §4.2): the fused loss op (values, f64 gradient checks, CPU/CUDA parity, bad input),
//! the top-up noising, the configuration check, and seeded Monte Carlo tests of the objective: unbiasedness
//! on a linear-Gaussian model (and the drift of the `reference` mode), and the divergence estimator against
//! the exact Jacobian trace of a tiny U-Net.
use gsure::autograd::backward;
use gsure::corruption::{Basis, SpectralBatch};
use gsure::diffusion::VpSchedule;
use gsure::nn::TrainSeed;
use gsure::nn::{DdimUnet, DdimUnetConfig, Prediction};
use gsure::objectives::gsure::{cat_batch, split_batch};
use gsure::objectives::{check_config, gsure_step_loss, GsureMode, GsureObjective, ProbeKind};
use gsure::ops::gsure_loss::{gsure_loss, GsureCoefs};
use gsure::ops::{self, sum_all};
use gsure::testing::{gpu_or_skip, gradcheck, mask, parity, randn, rng, uniform};
use gsure::{no_grad, DType, Device, ParamStore, Tensor};
use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

fn gauss(r: &mut StdRng) -> f64 {
    StandardNormal.sample(r)
}

fn t64(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_f64(v, shape.to_vec(), DType::F64, &Device::Cpu).unwrap()
}

/// The element inputs of the op as the objective builds them: obs 0/1, w2 and ν zero off O, probe on O.
fn op_inputs(shape: &[usize], r: &mut StdRng) -> Vec<Tensor> {
    let o = mask(shape, 0.7, r).to_vec_f64().unwrap();
    let on = |t: Tensor| t64(&t.to_vec_f64().unwrap().iter().zip(&o).map(|(a, b)| a * b).collect::<Vec<_>>(), shape);
    vec![
        randn(shape, r),
        randn(shape, r),
        randn(shape, r),
        t64(&o, shape),
        on(uniform(shape, 1.0, 3.0, r)),
        on(randn(shape, r)),
        on(uniform(shape, 0.01, 0.2, r)),
    ]
}

fn coefs(rows: usize, r: &mut StdRng) -> GsureCoefs {
    GsureCoefs {
        c_fid: (0..rows).map(|_| r.random_range(0.5..1.5)).collect(),
        c_div: (0..rows).map(|_| r.random_range(-20.0..20.0)).collect(),
    }
}

/// The op on the input list [d, de, r, obs, w2, b, nu].
fn call(t: &[Tensor], c: &GsureCoefs, with_nu: bool) -> anyhow::Result<Tensor> {
    gsure_loss(&t[0], &t[1], &t[2], &t[3], &t[4], if with_nu { Some(&t[6]) } else { None }, &t[5], c)
}

#[test]
fn op_values_match_the_definition() {
    let mut r = rng(1);
    let shape = [3, 2, 5];
    let x = op_inputs(&shape, &mut r);
    let c = coefs(3, &mut r);
    let v: Vec<Vec<f64>> = x.iter().map(|t| t.to_vec_f64().unwrap()).collect();
    for with_nu in [true, false] {
        let loss = call(&x, &c, with_nu).unwrap().to_vec_f64().unwrap();
        #[allow(clippy::needless_range_loop)]
        for n in 0..3 {
            let direct: f64 = (n * 10..(n + 1) * 10)
                .map(|i| {
                    let nu = if with_nu { v[6][i] } else { 1.0 };
                    v[3][i]
                        * v[4][i]
                        * (c.c_fid[n] * (v[0][i] - v[2][i]).powi(2) + c.c_div[n] * nu * v[5][i] * (v[1][i] - v[0][i]))
                })
                .sum::<f64>()
                / 10.0;
            assert!((loss[n] - direct).abs() < 1e-12, "{} vs {direct}", loss[n]);
        }
    }
    // f32 on the CPU agrees with f64.
    let x32: Vec<Tensor> = x.iter().map(|t| t.to_dtype(DType::F32).unwrap()).collect();
    let (a, b) =
        (call(&x, &c, true).unwrap().to_vec_f64().unwrap(), call(&x32, &c, true).unwrap().to_vec_f64().unwrap());
    assert!(gsure::testing::rel_error(&b, &a) < 1e-5);
}

#[test]
fn op_gradients() {
    let mut r = rng(2);
    for shape in [&[1usize, 1][..], &[4], &[3, 5], &[2, 3, 5, 7]] {
        let x = op_inputs(shape, &mut r);
        let c = coefs(shape[0], &mut r);
        for with_nu in [true, false] {
            for wrt in [&[0usize, 1][..], &[0], &[1]] {
                gradcheck(|t| call(t, &c, with_nu), &x, wrt).unwrap_or_else(|e| panic!("{shape:?} {wrt:?}: {e:#}"));
            }
        }
    }
    // Data inputs get no gradient.
    let x: Vec<Tensor> = op_inputs(&[2, 3], &mut r).into_iter().map(|t| t.set_requires_grad(true)).collect();
    let g = backward(&sum_all(&call(&x, &coefs(2, &mut r), true).unwrap()).unwrap()).unwrap();
    assert!(g.get(&x[0]).is_some() && g.get(&x[1]).is_some());
    assert!((2..7).all(|i| g.get(&x[i]).is_none()), "target, obs, w2, probe and nu are data");
}

#[test]
fn op_cuda_parity() {
    if gpu_or_skip("gsure_loss parity").is_none() {
        return;
    }
    let mut r = rng(3);
    // [1, 5000], [3, 70001] and [2, 2, 96, 96] take the split path (partials + final pass); the others one
    // block per example; odd sizes everywhere.
    let shapes: &[&[usize]] =
        &[&[1, 1], &[7], &[3, 5, 7], &[2, 3, 17, 9], &[1, 5000], &[3, 70001], &[128, 1, 32, 32], &[2, 2, 96, 96]];
    for dtype in [DType::F32, DType::BF16] {
        for shape in shapes {
            let x = op_inputs(shape, &mut r);
            // Divergence scales of the size the objective uses (α/ε up to ~1e3 at f32's ε) would amplify bf16
            // input rounding of d and de; parity checks the kernel, so keep them moderate.
            let c = coefs(shape[0], &mut r);
            for with_nu in [true, false] {
                let f = |t: &[Tensor]| call(t, &c, with_nu);
                let name = format!("gsure_loss {shape:?} nu={with_nu}");
                parity(&name, f, &x, &[0, 1], dtype, None).unwrap();
                parity(&format!("{name} dD"), f, &x, &[0], dtype, None).unwrap();
                parity(&format!("{name} dDe"), f, &x, &[1], dtype, None).unwrap();
            }
        }
    }
}

#[test]
fn op_bad_input_is_refused_with_op_and_shapes() {
    let mut r = rng(4);
    let x = op_inputs(&[2, 3], &mut r);
    let c = coefs(2, &mut r);
    let wrong = randn(&[2, 4], &mut r);
    for k in 1..7 {
        let mut y = x.clone();
        y[k] = wrong.clone();
        let err = call(&y, &c, true).unwrap_err().to_string();
        assert!(err.contains("gsure_loss") && err.contains("[2, 3]") && err.contains("[2, 4]"), "{err}");
    }
    let err = call(&x, &coefs(3, &mut r), true).unwrap_err().to_string();
    assert!(err.contains("gsure_loss") && err.contains("batch of 2"), "{err}");
    let mut y = x.clone();
    y[2] = x[2].to_dtype(DType::F32).unwrap();
    let err = call(&y, &c, true).unwrap_err().to_string();
    assert!(err.contains("gsure_loss") && err.contains("dtype"), "{err}");
    assert!(GsureCoefs::new(&[1.0], &[0.0]).is_err());
}

#[test]
fn batch_concat_and_split_round_trip_with_gradients() {
    let mut r = rng(5);
    let (a, b) = (randn(&[2, 3, 4], &mut r).set_requires_grad(true), randn(&[2, 3, 4], &mut r).set_requires_grad(true));
    let c = cat_batch(&a, &b).unwrap();
    assert_eq!(c.dims(), &[4, 3, 4]);
    let cv = c.to_vec_f64().unwrap();
    assert_eq!(&cv[..24], &a.to_vec_f64().unwrap()[..]);
    assert_eq!(&cv[24..], &b.to_vec_f64().unwrap()[..]);
    let (a2, b2) = split_batch(&c, 2).unwrap();
    assert_eq!(a2.to_vec_f64().unwrap(), a.to_vec_f64().unwrap());
    let w = randn(&[2, 3, 4], &mut r);
    let loss = sum_all(&ops::add(&ops::mul(&a2, &w).unwrap(), &ops::scale(&b2, 3.0).unwrap()).unwrap()).unwrap();
    let g = backward(&loss).unwrap();
    assert_eq!(g.get(&a).unwrap().to_vec_f64().unwrap(), w.to_vec_f64().unwrap());
    assert!(g.get(&b).unwrap().to_vec_f64().unwrap().iter().all(|&v| v == 3.0));
    assert!(cat_batch(&a, &randn(&[2, 4, 3], &mut r)).is_err());
}

#[test]
fn config_check_refuses_beta_start_below_sigma0_squared() {
    let sigma0: f64 = 0.03;
    let bad = VpSchedule::linear(1e-4).unwrap();
    let err = check_config(&bad, sigma0 * sigma0, 0).unwrap_err().to_string();
    assert!(err.contains("9.0000e-4") && err.contains("1.0000e-4") && err.contains("--beta-start"), "{err}");
    check_config(&VpSchedule::linear(sigma0 * sigma0).unwrap(), sigma0 * sigma0, 0).unwrap();
    // The step itself refuses too (never a NaN), naming both numbers.
    let batch = pixel_batch(&[vec![0.1; 4]], &[1.0; 4], sigma0, &mut rng(6));
    let err = GsureObjective::default().prepare(&batch, &bad, &[0], &mut rng(7)).err().expect("refused").to_string();
    assert!(err.contains("s_t²") && err.contains("9.0000e-4"), "{err}");
}

/// A pixel-basis batch [N, 1, 1, n] of clean examples `x`, each coordinate observed with probability pi[i]
/// (W² = 1/π_i), ȳ = x + σ0 z on O.
fn pixel_batch(x: &[Vec<f64>], pi: &[f64], sigma0: f64, r: &mut StdRng) -> SpectralBatch {
    let (n, m) = (x.len(), pi.len());
    let (mut yb, mut o, mut nu, mut w2) = (vec![0.0; n * m], vec![0.0; n * m], vec![0.0; n * m], vec![0.0; n * m]);
    for (row, xr) in x.iter().enumerate() {
        for i in 0..m {
            if r.random::<f64>() < pi[i] {
                let k = row * m + i;
                let z: f64 = StandardNormal.sample(r);
                yb[k] = xr[i] + sigma0 * z;
                o[k] = 1.0;
                nu[k] = sigma0 * sigma0;
                w2[k] = 1.0 / pi[i];
            }
        }
    }
    let s = [n, 1, 1, m];
    SpectralBatch { basis: Basis::Pixel, ybar: t64(&yb, &s), observed: t64(&o, &s), nu: t64(&nu, &s), w2: t64(&w2, &s) }
}

#[test]
fn top_up_noising_has_the_stated_distribution() {
    // x̄_t | x̄ ~ N(√ᾱ P x̄, (1−ᾱ) I) over the observation noise and the top-up noise together.
    let (sigma0, t, n) = (0.2, 400, 20000);
    let sched = VpSchedule::linear(1e-4).unwrap();
    let ab = sched.alpha_bar(t);
    let x = vec![0.7, -0.4, 0.0];
    let mut r = rng(8);
    let batch = pixel_batch(&vec![x.clone(); n], &[1.0, 1.0, 0.0], sigma0, &mut r);
    let p = GsureObjective::default().prepare(&batch, &sched, &vec![t; n], &mut r).unwrap();
    let v = p.xt.to_vec_f64().unwrap();
    for i in 0..3 {
        let col: Vec<f64> = (0..n).map(|k| v[k * 3 + i]).collect();
        let mean = col.iter().sum::<f64>() / n as f64;
        let var = col.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let want = if i < 2 { ab.sqrt() * x[i] } else { 0.0 };
        let se = ((1.0 - ab) / n as f64).sqrt();
        assert!((mean - want).abs() < 5.0 * se, "coordinate {i}: mean {mean} vs {want} (se {se})");
        // Var of a sample variance of a Gaussian: 2σ⁴/(n−1).
        let se_var = (1.0 - ab) * (2.0 / (n - 1) as f64).sqrt();
        assert!((var - (1.0 - ab)).abs() < 5.0 * se_var, "coordinate {i}: var {var} vs {}", 1.0 - ab);
    }
    // The xt mode's target is x̄_t/√ᾱ; the probe lives on O only.
    let pxt =
        GsureObjective::for_dtype(GsureMode::Xt, DType::F64).prepare(&batch, &sched, &vec![t; n], &mut r).unwrap();
    let (xv, tv) = (pxt.xt.to_vec_f64().unwrap(), pxt.target.to_vec_f64().unwrap());
    assert!(xv.iter().zip(&tv).all(|(a, b)| (a / ab.sqrt() - b).abs() < 1e-12));
    let (b, o) = (pxt.probe.to_vec_f64().unwrap(), batch.observed.to_vec_f64().unwrap());
    assert!(b.iter().zip(&o).all(|(b, o)| if *o == 0.0 { *b == 0.0 } else { b.abs() == 1.0 }));
}

/// Mean and standard error of a sample.
fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (m, (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0) / n).sqrt())
}

/// One Monte Carlo run of the linear-Gaussian model for denoiser A: per-example L_gsure − L_oracle, with the
/// exact divergence (tr of the weighted Jacobian, known for D = A x) and with the FD Hutchinson estimator
/// (the objective's full path).
fn linear_gaussian_diffs(obj: &GsureObjective, a: &[f64], seed: u64) -> (Vec<f64>, Vec<f64>) {
    let (m, n, sigma0, t) = (4, 20000, 0.3, 250);
    let sched = VpSchedule::linear(1e-4).unwrap();
    check_config(&sched, sigma0 * sigma0, t).unwrap();
    let pi = [0.9, 0.5, 0.7, 0.6];
    let l = [[1.0, 0.0, 0.0, 0.0], [0.6, 0.8, 0.0, 0.0], [0.3, -0.2, 0.7, 0.0], [0.0, 0.4, 0.4, 0.5]];
    let mut r = rng(seed);
    let x: Vec<Vec<f64>> = (0..n)
        .map(|_| {
            let z: Vec<f64> = (0..m).map(|_| StandardNormal.sample(&mut r)).collect();
            (0..m).map(|i| (0..m).map(|j| l[i][j] * z[j]).sum()).collect()
        })
        .collect();
    let batch = pixel_batch(&x, &pi, sigma0, &mut r);
    let at = t64(&(0..m * m).map(|k| a[(k % m) * m + k / m]).collect::<Vec<_>>(), &[m, m]); // Aᵀ
    let net = |xin: &Tensor, _t: &Tensor| -> anyhow::Result<Tensor> {
        let b = xin.dims()[0];
        ops::matmul(&xin.reshape(vec![b, m])?, &at)?.reshape(vec![b, 1, 1, m])
    };
    let ts = vec![t; n];
    let draws = r.clone();
    let p = obj.prepare(&batch, &sched, &ts, &mut draws.clone()).unwrap();
    let d = net(&p.xt, &p.t).unwrap();
    let (dv, o, w2, nu) = (
        d.to_vec_f64().unwrap(),
        batch.observed.to_vec_f64().unwrap(),
        batch.w2.to_vec_f64().unwrap(),
        batch.nu.to_vec_f64().unwrap(),
    );
    let alpha = obj.alpha(sched.alpha_bar(t));
    // Fidelity term through the op (de = d: no divergence), exact divergence Σ c_i A_ii added on the host.
    let nuo = if obj.uses_nu() { Some(&batch.nu) } else { None };
    let fid = gsure_loss(&d, &d, &p.target, &batch.observed, &batch.w2, nuo, &p.probe, &p.coefs)
        .unwrap()
        .to_vec_f64()
        .unwrap();
    let fd = obj.loss_per_example(&net, &batch, &sched, &ts, &mut draws.clone()).unwrap().to_vec_f64().unwrap();
    let (mut exact, mut approx) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for row in 0..n {
        let mut oracle = 0.0;
        let mut div = 0.0;
        for i in 0..m {
            let k = row * m + i;
            oracle += o[k] * w2[k] * (dv[k] - x[row][i]).powi(2);
            div += o[k] * alpha * w2[k] * if obj.uses_nu() { nu[k] } else { 1.0 } * a[i * m + i];
        }
        exact.push(fid[row] + div / m as f64 - oracle / m as f64);
        approx.push(fd[row] - oracle / m as f64);
    }
    (exact, approx)
}

#[test]
fn gsure_is_unbiased_on_a_linear_gaussian_model_and_reference_drifts() {
    let sched = VpSchedule::linear(1e-4).unwrap();
    let s2 = sched.snr_inverse(250);
    let sigma0_2 = 0.09;
    let mut r = rng(9);
    // Denoisers A = a I + 0.3 G for several a (different traces) and random G.
    let thetas: Vec<Vec<f64>> = [0.0, 0.5, 1.0]
        .iter()
        .map(|&s| (0..16).map(|k| if k % 5 == 0 { s } else { 0.0 } + 0.3 * gauss(&mut r)).collect())
        .collect();
    // Every variant `gsure train` offers (--gsure-mode ybar|xt, --gsure-probe rademacher|gaussian,
    // --gsure-div-every 1|4).
    for (mode, constant) in [(GsureMode::Ybar, sigma0_2), (GsureMode::Xt, s2)] {
        for (probe, div_every) in [(ProbeKind::Rademacher, 1), (ProbeKind::Gaussian, 1), (ProbeKind::Rademacher, 4)] {
            let obj = GsureObjective { probe, div_every, ..GsureObjective::for_dtype(mode, DType::F64) };
            for (k, a) in thetas.iter().enumerate() {
                let (exact, fd) = linear_gaussian_diffs(&obj, a, 100 + k as u64);
                for (name, d) in [("exact divergence", &exact), ("FD Hutchinson", &fd)] {
                    let (mean, se) = mean_se(d);
                    let case = format!("{mode:?} {probe:?} div-every {div_every} θ{k} {name}");
                    println!("{case}: E[L_gsure − L_oracle] = {mean:.5} ± {se:.5} (expected {constant:.5})");
                    assert!((mean - constant).abs() < 5.0 * se, "{case}: {mean} vs {constant} (se {se})");
                }
            }
        }
    }
    // reference: the difference moves with θ by more than the Monte Carlo bound.
    let obj = GsureObjective::for_dtype(GsureMode::Reference, DType::F64);
    let stats: Vec<(f64, f64)> =
        thetas.iter().enumerate().map(|(k, a)| mean_se(&linear_gaussian_diffs(&obj, a, 200 + k as u64).0)).collect();
    println!("reference: {stats:?}");
    let (lo, hi) = (stats[0], stats[2]);
    assert!(
        (lo.0 - hi.0).abs() > 5.0 * (lo.1 * lo.1 + hi.1 * hi.1).sqrt(),
        "reference mode should drift with θ: {stats:?}"
    );
}

/// A tiny U-Net (1 channel, 8×8) with its output layer scaled up so the Jacobian is not dominated by the
/// zero-ish initialisation.
fn tiny_unet(dtype: DType) -> (DdimUnet, ParamStore) {
    let config = DdimUnetConfig {
        in_channels: 1,
        out_channels: 1,
        resolution: 8,
        ch: 8,
        ch_mult: vec![1, 2],
        num_res_blocks: 1,
        attn_resolutions: vec![4],
        heads: 1,
        dropout: 0.0,
        groups: 4,
        prediction: Prediction::X0,
    };
    let mut store = ParamStore::new();
    let net = DdimUnet::new(&config, &mut store, 11, &Device::Cpu, dtype).unwrap();
    (net, store)
}

/// Divergence-estimator measurements at one ε on a fixed input: per probe, the f64 quadratic form
/// q = (1/n) Σ c_i b_i (J b)_i (central difference, h = 1e-6) and the estimate e of the op at ε in `dtype`.
struct DivRun {
    exact_trace: f64,
    q: Vec<f64>,
    est: Vec<f64>,
}

fn divergence_run(eps: f64, probes: usize, dtype: DType, kind: ProbeKind, seed: u64) -> DivRun {
    let (net64, _s) = tiny_unet(DType::F64);
    let (netd, _s2) = tiny_unet(dtype);
    let n = 64;
    let mut r = rng(seed);
    let t = 300.0;
    let sched = VpSchedule::linear(1e-4).unwrap();
    let ab = sched.alpha_bar(t as usize);
    // A smooth "image" plus the diffusion noise of step t.
    let x: Vec<f64> = (0..n)
        .map(|k| {
            let (i, j) = ((k / 8) as f64, (k % 8) as f64);
            ab.sqrt() * (0.6 * (i / 3.0).sin() * (j / 4.0).cos()) + (1.0 - ab).sqrt() * gauss(&mut r)
        })
        .collect();
    let o: Vec<f64> = (0..n).map(|_| if r.random::<f64>() < 0.7 { 1.0 } else { 0.0 }).collect();
    let c: Vec<f64> = o.iter().map(|&o| o * r.random_range(1.0..2.0)).collect(); // α W²_i ν_i, any positive weights
    let batch = |rows: &[Vec<f64>], dt: DType| {
        let flat: Vec<f64> = rows.concat();
        Tensor::from_f64(&flat, vec![rows.len(), 1, 8, 8], dt, &Device::Cpu).unwrap()
    };
    let tt = |k: usize| Tensor::from_f64(&vec![t; k], vec![k], DType::F64, &Device::Cpu).unwrap();
    let fwd64 = |rows: &[Vec<f64>]| {
        no_grad(|| net64.forward(&batch(rows, DType::F64), &tt(rows.len()), None)).unwrap().to_vec_f64().unwrap()
    };
    // Exact weighted trace by central differences along each axis, in f64.
    let h = 1e-5;
    let plus: Vec<Vec<f64>> = (0..n)
        .map(|j| {
            let mut v = x.clone();
            v[j] += h;
            v
        })
        .collect();
    let minus: Vec<Vec<f64>> = (0..n)
        .map(|j| {
            let mut v = x.clone();
            v[j] -= h;
            v
        })
        .collect();
    let (dp, dm) = (fwd64(&plus), fwd64(&minus));
    let exact_trace = (0..n).map(|j| c[j] * (dp[j * n + j] - dm[j * n + j]) / (2.0 * h)).sum::<f64>() / n as f64;
    // Probes on O.
    let bs: Vec<Vec<f64>> = (0..probes)
        .map(|_| {
            (0..n)
                .map(|i| {
                    o[i] * match kind {
                        ProbeKind::Gaussian => StandardNormal.sample(&mut r),
                        ProbeKind::Rademacher => {
                            if r.random::<bool>() {
                                1.0
                            } else {
                                -1.0
                            }
                        }
                    }
                })
                .collect()
        })
        .collect();
    let shift =
        |s: f64| -> Vec<Vec<f64>> { bs.iter().map(|b| x.iter().zip(b).map(|(x, b)| x + s * b).collect()).collect() };
    let hq = 1e-6;
    let (qp, qm) = (fwd64(&shift(hq)), fwd64(&shift(-hq)));
    let q: Vec<f64> = (0..probes)
        .map(|k| (0..n).map(|i| c[i] * bs[k][i] * (qp[k * n + i] - qm[k * n + i]) / (2.0 * hq)).sum::<f64>() / n as f64)
        .collect();
    // The estimator as the objective computes it: both passes in one 2K batch of `dtype`, then the fused op.
    let clean = batch(&vec![x.clone(); probes], dtype);
    let pert = batch(&shift(eps), dtype);
    let ttd = Tensor::from_f64(
        &vec![t; 2 * probes],
        vec![2 * probes],
        if dtype == DType::F64 { DType::F64 } else { DType::F32 },
        &Device::Cpu,
    )
    .unwrap();
    let out = no_grad(|| netd.forward(&cat_batch(&clean, &pert).unwrap(), &ttd, None)).unwrap();
    let (d, de) = split_batch(&out, probes).unwrap();
    let rep = |v: &[f64]| batch(&vec![v.to_vec(); probes], dtype);
    let coef = GsureCoefs { c_fid: vec![0.0; probes], c_div: vec![1.0 / eps; probes] };
    let est =
        gsure_loss(&d, &de, &d, &rep(&o), &rep(&c), None, &batch(&bs, dtype), &coef).unwrap().to_vec_f64().unwrap();
    DivRun { exact_trace, q, est }
}

#[test]
fn divergence_estimator_matches_the_exact_jacobian_trace_of_a_tiny_unet() {
    let obj = GsureObjective::for_dtype(GsureMode::Ybar, DType::F64);
    let ab = VpSchedule::linear(1e-4).unwrap().alpha_bar(300);
    let eps = obj.eps(ab);
    for kind in [ProbeKind::Rademacher, ProbeKind::Gaussian] {
        let run = divergence_run(eps, 256, DType::F64, kind, 21);
        assert!(run.exact_trace.abs() > 1e-3, "a non-trivial Jacobian: trace {}", run.exact_trace);
        let (mean, se) = mean_se(&run.est);
        println!("{kind:?} f64 ε={eps:.2e}: estimate {mean:.5} ± {se:.5}, exact trace {:.5}", run.exact_trace);
        assert!((mean - run.exact_trace).abs() < 5.0 * se, "{kind:?}: {mean} ± {se} vs {}", run.exact_trace);
    }
    // f32 at the f32 default ε: the finite-difference error per probe is small beside Hutchinson's spread.
    let obj32 = GsureObjective::for_dtype(GsureMode::Ybar, DType::F32);
    let eps32 = obj32.eps(ab);
    let run = divergence_run(eps32, 128, DType::F32, ProbeKind::Rademacher, 22);
    let err: Vec<f64> = run.est.iter().zip(&run.q).map(|(e, q)| e - q).collect();
    let (bias, bias_se) = mean_se(&err);
    let fd_std = bias_se * (err.len() as f64).sqrt();
    let hutch_std = mean_se(&run.q).1 * (run.q.len() as f64).sqrt();
    println!("f32 ε={eps32:.2e}: FD bias {bias:.2e} ± {bias_se:.1e}, FD std {fd_std:.2e}, Hutchinson std {hutch_std:.2e}, trace {:.4}", run.exact_trace);
    assert!(fd_std < 0.1 * hutch_std, "f32 FD noise {fd_std} should be well below Hutchinson's {hutch_std}");
    assert!(bias.abs() < 0.02 * run.exact_trace.abs() + 5.0 * bias_se, "f32 FD bias {bias}");
}

/// Prints the ε sweep that docs/gsure-divergence.md reports (`cargo test --release --test gsure -- --ignored
/// --nocapture divergence_sweep`).
#[test]
#[ignore]
fn divergence_sweep() {
    println!("| dtype | ε0 | ε | FD bias (mean e−q) | FD std | Hutchinson std | trace |");
    let ab = VpSchedule::linear(1e-4).unwrap().alpha_bar(300);
    for dtype in [DType::F64, DType::F32] {
        for eps0 in [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 3e-1, 1.0] {
            let eps = eps0 * (1.0 - ab).sqrt();
            let run = divergence_run(eps, 256, dtype, ProbeKind::Rademacher, 23);
            let err: Vec<f64> = run.est.iter().zip(&run.q).map(|(e, q)| e - q).collect();
            let (bias, se) = mean_se(&err);
            let hutch = mean_se(&run.q).1 * 16.0;
            println!(
                "| {dtype} | {eps0:.0e} | {eps:.2e} | {bias:.2e} ± {se:.1e} | {:.2e} | {hutch:.2e} | {:.4} |",
                se * 16.0,
                run.exact_trace
            );
        }
    }
}

/// `b` with `f` applied to each of its tensors.
fn each_field(b: &SpectralBatch, f: impl Fn(&Tensor) -> Tensor) -> SpectralBatch {
    SpectralBatch { basis: b.basis, ybar: f(&b.ybar), observed: f(&b.observed), nu: f(&b.nu), w2: f(&b.w2) }
}

#[test]
fn step_loss_trains_a_tiny_unet_in_pixel_and_fourier_bases() {
    let (net, store) = tiny_unet(DType::F32);
    let mut r = rng(31);
    let sched = VpSchedule::linear(4e-4).unwrap();
    let n = 3;
    let x: Vec<Vec<f64>> = (0..n).map(|_| (0..64).map(|_| 0.5 * gauss(&mut r)).collect()).collect();
    let mut b = pixel_batch(&x, &[0.8; 64], 0.02, &mut r);
    b = each_field(&b, |t| t.to_dtype(DType::F32).unwrap().reshape(vec![n, 1, 8, 8]).unwrap());
    check_config(&sched, 0.02 * 0.02, 0).unwrap();
    for mode in [GsureMode::Ybar, GsureMode::Xt, GsureMode::Reference] {
        let obj = GsureObjective::for_dtype(mode, DType::F32);
        let loss = gsure_step_loss(&net, &obj, &b, &sched, 0, &mut r, None, DType::F32, &Device::Cpu).unwrap();
        let v = loss.item().unwrap();
        assert!(v.is_finite(), "{mode:?}: loss {v}");
        let g = backward(&loss).unwrap();
        let (name, p) = store.iter().next().unwrap();
        let gv = g.get(p).unwrap_or_else(|| panic!("{name} got no gradient")).to_vec_f64().unwrap();
        assert!(gv.iter().all(|v| v.is_finite()));
    }
    // Fourier basis (k-space state, network in image space): needs a 2-channel network.
    let mut store2 = ParamStore::new();
    let cfg = DdimUnetConfig { in_channels: 2, out_channels: 2, ..net.config.clone() };
    let net2 = DdimUnet::new(&cfg, &mut store2, 3, &Device::Cpu, DType::F32).unwrap();
    let obs: Vec<f64> = (0..n * 2 * 64).map(|k| if (k % 8) % 3 == 0 { 1.0 } else { 0.0 }).collect();
    let shape = [n, 2, 8, 8];
    let t32 = |v: &[f64]| Tensor::from_f64(v, shape.to_vec(), DType::F32, &Device::Cpu).unwrap();
    let yb: Vec<f64> = obs.iter().map(|o| o * gauss(&mut r)).collect();
    let kb = SpectralBatch {
        basis: Basis::Fourier,
        ybar: t32(&yb),
        observed: t32(&obs),
        nu: t32(&obs.iter().map(|o| o * 1e-4).collect::<Vec<_>>()),
        w2: t32(&obs.iter().map(|o| o * 3.0).collect::<Vec<_>>()),
    };
    let loss =
        gsure_step_loss(&net2, &GsureObjective::default(), &kb, &sched, 0, &mut r, None, DType::F32, &Device::Cpu)
            .unwrap();
    assert!(loss.item().unwrap().is_finite());
    backward(&loss).unwrap();
}

#[test]
fn a_divergence_on_a_subset_reweights_the_first_examples_and_leaves_the_rest_without_one() {
    let (net, _) = tiny_unet(DType::F64);
    let mut r = rng(41);
    let sched = VpSchedule::linear(4e-4).unwrap();
    let n = 5;
    let x: Vec<Vec<f64>> = (0..n).map(|_| (0..64).map(|_| 0.5 * gauss(&mut r)).collect()).collect();
    let b = pixel_batch(&x, &[0.8; 64], 0.05, &mut r);
    let b = each_field(&b, |t| t.reshape(vec![n, 1, 8, 8]).unwrap());
    let ts: Vec<usize> = vec![20, 300, 700, 50, 999];
    let f = |xin: &Tensor, t: &Tensor| net.forward(xin, t, None);
    let per_example = |div_every: usize| {
        let obj = GsureObjective { div_every, ..GsureObjective::for_dtype(GsureMode::Ybar, DType::F64) };
        obj.loss_per_example(&f, &b, &sched, &ts, &mut rng(7)).unwrap().to_vec_f64().unwrap()
    };
    // Per example: fid_r + (n/s)·div_r on the first s rows, fid_r beyond. With the same draws (every row's
    // probe is drawn, then zeroed beyond s), three settings pin fid and div down and check the third.
    let (a, c, e) = (per_example(1), per_example(3), per_example(5)); // s = 5, 2 (weight 2.5), 1 (weight 5)
    let div0 = (e[0] - a[0]) / 4.0;
    let div1 = a[1] - e[1];
    let expected = [a[0] - div0 + 2.5 * div0, e[1] + 2.5 * div1, e[2], e[3], e[4]];
    for row in 0..n {
        let tol = 1e-9 * (1.0 + expected[row].abs());
        assert!((c[row] - expected[row]).abs() < tol, "row {row}: {} vs {}", c[row], expected[row]);
    }
    for row in 2..n {
        assert!((a[row] - e[row]).abs() > 1e-12, "row {row} should carry a divergence term with div_every 1");
    }
    // ε-prediction and the two-forward (dropout) path take the N + s and s example batches.
    let (mut eps_net, _) = tiny_unet(DType::F32);
    eps_net.config.prediction = Prediction::Eps;
    let b32 = each_field(&b, |t| t.to_dtype(DType::F32).unwrap());
    for (seed, batched) in [(None, true), (Some(TrainSeed::Host(3)), false)] {
        let obj = GsureObjective { div_every: 2, batched, ..GsureObjective::for_dtype(GsureMode::Ybar, DType::F32) };
        let loss = gsure_step_loss(&eps_net, &obj, &b32, &sched, 0, &mut r, seed, DType::F32, &Device::Cpu).unwrap();
        assert!(loss.item().unwrap().is_finite());
        backward(&loss).unwrap();
    }
}

#[test]
fn bench_cases_build_and_run_on_the_cpu() {
    let cases: Vec<_> = gsure::bench::all_cases().into_iter().filter(|c| c.op == "gsure_loss").collect();
    assert_eq!(cases.len(), 3);
    // The small case end to end (forward and backward) on the CPU in f32.
    let f = (cases[0].build)(&Device::Cpu, DType::F32).unwrap();
    let loss = f().unwrap();
    assert_eq!(loss.dims(), &[128]);
    backward(&sum_all(&loss).unwrap()).unwrap();
}
