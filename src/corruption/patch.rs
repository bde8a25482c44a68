//! Patch inpainting (GSURE paper): the image is cut into a grid of k×k patches from the top-left corner
//! (patches on the right and bottom edges are clipped when k does not divide the size), and each patch is
//! dropped independently with probability p, for every channel. Every pixel lies in exactly one patch, so
//! π_i = 1 − p everywhere.
use super::{OpKind, OpSpec, Operator};
use rand::rngs::StdRng;
use rand::Rng;

pub struct PatchInpainting {
    /// Drop probability of a patch, in [0, 1).
    pub p: f64,
    /// Patch side.
    pub k: usize,
    pub sigma0: f64,
    pub chw: [usize; 3],
}

impl Operator for PatchInpainting {
    fn image_chw(&self) -> [usize; 3] {
        self.chw
    }
    fn sample_mask(&self, rng: &mut StdRng) -> Vec<f32> {
        let [_, h, w] = self.chw;
        let (ph, pw) = (h.div_ceil(self.k), w.div_ceil(self.k));
        let keep: Vec<bool> = (0..ph * pw).map(|_| rng.random::<f64>() >= self.p).collect();
        let mut m = vec![0.0; h * w];
        for r in 0..h {
            for c in 0..w {
                if keep[(r / self.k) * pw + c / self.k] {
                    m[r * w + c] = 1.0;
                }
            }
        }
        m
    }
    fn pi(&self) -> Vec<f64> {
        vec![1.0 - self.p; self.chw[1] * self.chw[2]]
    }
    fn unobservable_fix(&self, _: usize, _: usize) -> String {
        "lower --p below 1".into()
    }
    fn spec(&self) -> OpSpec {
        OpSpec { sigma0: self.sigma0, p: Some(self.p), patch: Some(self.k), ..OpSpec::new(OpKind::Patch) }
    }
    fn pi_description(&self) -> serde_json::Value {
        serde_json::json!(1.0 - self.p)
    }
}
