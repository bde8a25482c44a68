//! Each sampler, driven by the exact optimal denoiser of a Gaussian data distribution, must reproduce that
//! distribution's mean and variance. Data: x ~ N(μ_d, s_d²) independently in each of 2 coordinates with
//! different (μ, s); 4000 samples, f64 on the CPU.
//!
//! Tolerance: the sample mean's standard error is s/√n ≈ 0.016 s and the sample variance's relative standard
//! error is √(2/n) ≈ 2.2 %; we allow 5 standard errors plus 2 % for discretisation. DDPM over all 1000
//! steps is exact in distribution. The deterministic samplers have a discretisation bias that shrinks with
//! the step count; for this data it was computed exactly (the updates are linear maps): variance ratio 0.89
//! (s = 0.5) and 0.93 (s = 1) for DDIM at 50 steps, 0.994 and 0.996 at 1000; 1.11 and 1.09 for EDM Heun at
//! 18 steps, 1.0007 and 1.0004 at 200. So DDIM runs 1000 steps and EDM 200 here.
use gsure::diffusion::{ddim_sample, ddpm_sample, edm_heun_sample, DdimOptions, Edm, EdmOptions, VpSchedule};
use gsure::testing::rng;
use gsure::{DType, Device, Tensor};

const N: usize = 4000;
const MU: [f64; 2] = [0.7, -0.3];
const SD: [f64; 2] = [0.5, 1.0];

fn column_stats(x: &Tensor) -> [(f64, f64); 2] {
    let v = x.to_vec_f64().unwrap();
    let mut out = [(0.0, 0.0); 2];
    for (d, o) in out.iter_mut().enumerate() {
        let col: Vec<f64> = v.iter().skip(d).step_by(2).copied().collect();
        let mean = col.iter().sum::<f64>() / col.len() as f64;
        let var = col.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / (col.len() - 1) as f64;
        *o = (mean, var);
    }
    out
}

fn check(name: &str, x: &Tensor, discretisation: f64) {
    for (d, (mean, var)) in column_stats(x).iter().enumerate() {
        let se_mean = SD[d] / (N as f64).sqrt();
        assert!(
            (mean - MU[d]).abs() < 5.0 * se_mean + discretisation * SD[d],
            "{name}: coordinate {d} mean {mean} vs {}",
            MU[d]
        );
        let rel = var / (SD[d] * SD[d]) - 1.0;
        assert!(
            rel.abs() < 5.0 * (2.0 / N as f64).sqrt() + discretisation,
            "{name}: coordinate {d} variance {var} vs {}",
            SD[d] * SD[d]
        );
    }
}

/// E[x | √ᾱ x + √(1−ᾱ) ε = x_t] for the Gaussian data, coordinate-wise.
fn vp_denoiser(x: &Tensor, ab: f64) -> anyhow::Result<Tensor> {
    let v = x.to_vec_f64()?;
    let out: Vec<f64> = v
        .iter()
        .enumerate()
        .map(|(i, &xt)| {
            let (m, s2) = (MU[i % 2], SD[i % 2] * SD[i % 2]);
            m + ab.sqrt() * s2 / (ab * s2 + 1.0 - ab) * (xt - ab.sqrt() * m)
        })
        .collect();
    Tensor::from_f64(&out, x.shape().clone(), DType::F64, &Device::Cpu)
}

#[test]
fn ddpm_reproduces_a_gaussian() {
    let s = VpSchedule::linear(1e-4).unwrap();
    let x =
        ddpm_sample(&s, [N, 2], DType::F64, &Device::Cpu, &mut rng(1), |x, t| vp_denoiser(x, s.alpha_bar(t))).unwrap();
    check("ddpm", &x, 0.0);
}

#[test]
fn ddim_reproduces_a_gaussian_deterministic_and_stochastic() {
    let s = VpSchedule::linear(1e-4).unwrap();
    for eta in [0.0, 1.0] {
        let opts = DdimOptions { steps: 1000, eta };
        let x =
            ddim_sample(&s, opts, [N, 2], DType::F64, &Device::Cpu, &mut rng(2), |x, t| vp_denoiser(x, s.alpha_bar(t)))
                .unwrap();
        check(&format!("ddim eta={eta}"), &x, 0.02);
    }
}

#[test]
fn edm_heun_reproduces_a_gaussian_with_and_without_churn() {
    let edm = Edm::default();
    let denoise = |x: &Tensor, sigma: f64| -> anyhow::Result<Tensor> {
        let v = x.to_vec_f64()?;
        let out: Vec<f64> = v
            .iter()
            .enumerate()
            .map(|(i, &xt)| {
                let (m, s2) = (MU[i % 2], SD[i % 2] * SD[i % 2]);
                m + s2 / (s2 + sigma * sigma) * (xt - m)
            })
            .collect();
        Tensor::from_f64(&out, x.shape().clone(), DType::F64, &Device::Cpu)
    };
    for churn in [0.0, 40.0] {
        let opts = EdmOptions { steps: 200, churn, s_min: 0.05, s_max: 50.0, ..EdmOptions::default() };
        let x = edm_heun_sample(&edm, opts, [N, 2], DType::F64, &Device::Cpu, &mut rng(3), denoise).unwrap();
        check(&format!("edm churn={churn}"), &x, 0.02);
    }
}

#[test]
fn samplers_are_reproducible_for_a_seed() {
    let s = VpSchedule::linear(1e-4).unwrap();
    let run = |seed| {
        ddim_sample(
            &s,
            DdimOptions { steps: 10, eta: 1.0 },
            [8, 2],
            DType::F64,
            &Device::Cpu,
            &mut rng(seed),
            |x, t| vp_denoiser(x, s.alpha_bar(t)),
        )
        .unwrap()
        .to_vec_f64()
        .unwrap()
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}
