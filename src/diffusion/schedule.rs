//! The discrete variance-preserving schedule of the GSURE paper and EDM's continuous parameterisation.
use anyhow::{bail, Result};
use rand::Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BetaSchedule {
    /// β linear from β_start to β_end.
    Linear,
    /// Nichol & Dhariwal: ᾱ(t) = f(t)/f(0), f(t) = cos²(((t/T) + s)/(1 + s) · π/2), s = 0.008, β ≤ 0.999.
    Cosine,
}

/// VP, discrete: x_t = √ᾱ_t x + √(1−ᾱ_t) ε for integer t in 0..T.
#[derive(Clone, Debug)]
pub struct VpSchedule {
    pub betas: Vec<f64>,
    pub alphas_cumprod: Vec<f64>,
}

impl VpSchedule {
    pub fn new(kind: BetaSchedule, beta_start: f64, beta_end: f64, steps: usize) -> Result<Self> {
        if steps < 2 {
            bail!("VP schedule: T = {steps}; at least 2 steps are needed");
        }
        let betas: Vec<f64> = match kind {
            BetaSchedule::Linear => {
                if !(0.0 < beta_start && beta_start <= beta_end && beta_end < 1.0) {
                    bail!("VP schedule: need 0 < β_start ≤ β_end < 1, got β_start = {beta_start}, β_end = {beta_end}");
                }
                (0..steps).map(|i| beta_start + (beta_end - beta_start) * i as f64 / (steps - 1) as f64).collect()
            }
            BetaSchedule::Cosine => {
                let f = |t: f64| {
                    let s = 0.008;
                    (((t / steps as f64) + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2).cos().powi(2)
                };
                (0..steps).map(|i| (1.0 - f(i as f64 + 1.0) / f(i as f64)).min(0.999)).collect()
            }
        };
        let mut acc = 1.0;
        let alphas_cumprod = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        Ok(VpSchedule { betas, alphas_cumprod })
    }

    /// The GSURE paper's schedule: linear from β_start to 0.02 over 1000 steps.
    pub fn linear(beta_start: f64) -> Result<Self> {
        Self::new(BetaSchedule::Linear, beta_start, 0.02, 1000)
    }

    pub fn steps(&self) -> usize {
        self.betas.len()
    }
    pub fn alpha_bar(&self, t: usize) -> f64 {
        self.alphas_cumprod[t]
    }
    /// s_t² = (1−ᾱ_t)/ᾱ_t: the noise variance of x_t/√ᾱ_t around x.
    pub fn snr_inverse(&self, t: usize) -> f64 {
        (1.0 - self.alphas_cumprod[t]) / self.alphas_cumprod[t]
    }
}

/// EDM (Karras et al.): x_t = x + σ η, with preconditioning and loss weight.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Edm {
    pub sigma_data: f64,
    pub p_mean: f64,
    pub p_std: f64,
    pub sigma_min: f64,
    pub sigma_max: f64,
}

impl Default for Edm {
    fn default() -> Self {
        Edm { sigma_data: 0.5, p_mean: -1.2, p_std: 1.2, sigma_min: 0.002, sigma_max: 80.0 }
    }
}

/// The four EDM preconditioning coefficients at one σ.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Precond {
    pub c_skip: f64,
    pub c_out: f64,
    pub c_in: f64,
    pub c_noise: f64,
}

impl Edm {
    /// ln σ ~ N(P_mean, P_std²).
    pub fn sample_sigma(&self, rng: &mut impl Rng) -> f64 {
        let n = Normal::new(self.p_mean, self.p_std).expect("valid normal");
        n.sample(rng).exp()
    }
    /// D(x; σ) = c_skip x + c_out F(c_in x; c_noise).
    pub fn precond(&self, sigma: f64) -> Precond {
        let sd2 = self.sigma_data * self.sigma_data;
        let s2 = sigma * sigma;
        Precond {
            c_skip: sd2 / (s2 + sd2),
            c_out: sigma * self.sigma_data / (s2 + sd2).sqrt(),
            c_in: 1.0 / (s2 + sd2).sqrt(),
            c_noise: sigma.ln() / 4.0,
        }
    }
    /// [c_in, c_skip, c_out, c_noise] of every σ in `sigma`, one column each.
    pub fn precond_columns(&self, sigma: &[f64]) -> [Vec<f64>; 4] {
        let p: Vec<Precond> = sigma.iter().map(|&s| self.precond(s)).collect();
        let column = |f: fn(&Precond) -> f64| p.iter().map(f).collect();
        [column(|q| q.c_in), column(|q| q.c_skip), column(|q| q.c_out), column(|q| q.c_noise)]
    }
    /// λ(σ) = (σ² + σ_d²)/(σ σ_d)².
    pub fn loss_weight(&self, sigma: f64) -> f64 {
        (sigma * sigma + self.sigma_data * self.sigma_data) / (sigma * self.sigma_data).powi(2)
    }
    /// Karras et al.'s time steps: σ_i = (σ_max^{1/ρ} + i/(N−1)(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, then 0.
    pub fn karras_sigmas(&self, steps: usize, rho: f64) -> Vec<f64> {
        let (a, b) = (self.sigma_max.powf(1.0 / rho), self.sigma_min.powf(1.0 / rho));
        let mut s: Vec<f64> =
            (0..steps).map(|i| (a + i as f64 / (steps.max(2) - 1) as f64 * (b - a)).powf(rho)).collect();
        s.push(0.0);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_schedule_matches_closed_form() {
        let s = VpSchedule::linear(1e-4).unwrap();
        assert_eq!(s.steps(), 1000);
        assert!((s.betas[0] - 1e-4).abs() < 1e-15 && (s.betas[999] - 0.02).abs() < 1e-15);
        let direct: f64 = (0..=10).map(|i| 1.0 - s.betas[i]).product();
        assert!((s.alpha_bar(10) - direct).abs() < 1e-14);
        assert!(s.alpha_bar(999) < 1e-4, "almost pure noise at T");
    }

    #[test]
    fn cosine_schedule_is_monotone_and_ends_near_zero() {
        let s = VpSchedule::new(BetaSchedule::Cosine, 0.0, 0.0, 1000).unwrap();
        assert!(s.alphas_cumprod.windows(2).all(|w| w[1] < w[0]));
        assert!(s.alpha_bar(0) > 0.999 && s.alpha_bar(999) < 1e-3);
    }

    #[test]
    fn bad_schedules_are_refused() {
        assert!(VpSchedule::new(BetaSchedule::Linear, 0.03, 0.02, 1000).is_err());
        assert!(VpSchedule::new(BetaSchedule::Linear, 1e-4, 0.02, 1).is_err());
    }

    #[test]
    fn edm_preconditioning_is_unit_variance() {
        // For x ~ N(0, σ_d²): Var(c_in (x + σ n)) = 1 and Var of the effective training target is 1.
        let e = Edm::default();
        for sigma in [0.01, 0.5, 3.0, 80.0] {
            let p = e.precond(sigma);
            let var_in = p.c_in * p.c_in * (e.sigma_data.powi(2) + sigma * sigma);
            assert!((var_in - 1.0).abs() < 1e-12);
            // c_skip² σ² + (1 − c_skip)² σ_d² = c_out²
            let lhs = p.c_skip.powi(2) * sigma * sigma + (1.0 - p.c_skip).powi(2) * e.sigma_data.powi(2);
            assert!((lhs - p.c_out.powi(2)).abs() < 1e-12);
            assert!((e.loss_weight(sigma) * p.c_out.powi(2) - 1.0).abs() < 1e-12, "λ c_out² = 1");
        }
        let s = e.karras_sigmas(18, 7.0);
        assert_eq!(s.len(), 19);
        assert!((s[0] - 80.0).abs() < 1e-9 && (s[17] - 0.002).abs() < 1e-12 && s[18] == 0.0);
    }
}
