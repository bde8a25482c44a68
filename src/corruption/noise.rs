//! Gaussian denoising: H = I, everything observed (O = all, π = 1), ν = σ0².
use super::{OpKind, OpSpec, Operator};
use rand::rngs::StdRng;

pub struct GaussianDenoising {
    pub sigma0: f64,
    pub chw: [usize; 3],
}

impl Operator for GaussianDenoising {
    fn image_chw(&self) -> [usize; 3] {
        self.chw
    }
    fn sample_mask(&self, _: &mut StdRng) -> Vec<f32> {
        vec![1.0; self.chw[1] * self.chw[2]]
    }
    fn pi(&self) -> Vec<f64> {
        vec![1.0; self.chw[1] * self.chw[2]]
    }
    fn unobservable_fix(&self, _: usize, _: usize) -> String {
        "none needed: denoising observes every coordinate".into()
    }
    fn spec(&self) -> OpSpec {
        OpSpec { sigma0: self.sigma0, ..OpSpec::new(OpKind::Noise) }
    }
    fn pi_description(&self) -> serde_json::Value {
        serde_json::json!(1.0)
    }
}
