//! Pixel inpainting: each pixel observed independently with probability 1 − p, the same mask for every
//! channel. π_i = 1 − p everywhere.
use super::{OpKind, OpSpec, Operator};
use rand::rngs::StdRng;
use rand::Rng;

pub struct PixelInpainting {
    /// Drop probability, in [0, 1).
    pub p: f64,
    pub sigma0: f64,
    pub chw: [usize; 3],
}

impl Operator for PixelInpainting {
    fn image_chw(&self) -> [usize; 3] {
        self.chw
    }
    fn sample_mask(&self, rng: &mut StdRng) -> Vec<f32> {
        (0..self.chw[1] * self.chw[2]).map(|_| if rng.random::<f64>() < self.p { 0.0 } else { 1.0 }).collect()
    }
    fn pi(&self) -> Vec<f64> {
        vec![1.0 - self.p; self.chw[1] * self.chw[2]]
    }
    fn unobservable_fix(&self, _: usize, _: usize) -> String {
        "lower --p below 1".into()
    }
    fn spec(&self) -> OpSpec {
        OpSpec { sigma0: self.sigma0, p: Some(self.p), ..OpSpec::new(OpKind::Pixel) }
    }
    fn pi_description(&self) -> serde_json::Value {
        serde_json::json!(1.0 - self.p)
    }
}
