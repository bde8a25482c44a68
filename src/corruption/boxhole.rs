//! Box inpainting (the Ambient paper's "box"): one s×s square hole, its top-left corner uniformly random
//! over the (H − s + 1)(W − s + 1) positions that keep it inside the image, the same for every channel.
//!
//! π(i, j) = 1 − a(i) b(j) / ((H − s + 1)(W − s + 1)), where a(i) = #{top rows r ∈ [0, H − s] : r ≤ i < r + s}
//! = min(i, H − s) − max(0, i − s + 1) + 1 counts the hole positions covering row i (b likewise for
//! columns). A pixel is always covered (π = 0) when s ≥ (H + 1)/2 and s ≥ (W + 1)/2: the hole then always
//! covers the centre, and `check_observable` refuses it.
use super::{OpKind, OpSpec, Operator};
use rand::rngs::StdRng;
use rand::Rng;

pub struct BoxInpainting {
    /// Side of the hole (0 = nothing missing).
    pub size: usize,
    pub sigma0: f64,
    pub chw: [usize; 3],
}

/// Number of hole positions (top index in [0, n − s]) covering index i of a side of length n.
fn covering(i: usize, n: usize, s: usize) -> usize {
    if s == 0 {
        return 0;
    }
    let hi = i.min(n - s) as isize;
    let lo = (i as isize - s as isize + 1).max(0);
    (hi - lo + 1).max(0) as usize
}

impl Operator for BoxInpainting {
    fn image_chw(&self) -> [usize; 3] {
        self.chw
    }
    fn sample_mask(&self, rng: &mut StdRng) -> Vec<f32> {
        let [_, h, w] = self.chw;
        let s = self.size;
        let top = rng.random_range(0..=h - s);
        let left = rng.random_range(0..=w - s);
        let mut m = vec![1.0; h * w];
        for r in top..top + s {
            m[r * w + left..r * w + left + s].fill(0.0);
        }
        m
    }
    fn pi(&self) -> Vec<f64> {
        let [_, h, w] = self.chw;
        let s = self.size;
        let positions = ((h - s + 1) * (w - s + 1)) as f64;
        let mut pi = Vec::with_capacity(h * w);
        for i in 0..h {
            for j in 0..w {
                pi.push(1.0 - (covering(i, h, s) * covering(j, w, s)) as f64 / positions);
            }
        }
        pi
    }
    fn unobservable_fix(&self, _: usize, _: usize) -> String {
        let [_, h, w] = self.chw;
        format!(
            "a hole of side {} (--box) always covers the centre of a {h}x{w} image; pass --box {} or less",
            self.size,
            h.max(w) / 2
        )
    }
    fn spec(&self) -> OpSpec {
        OpSpec { sigma0: self.sigma0, box_size: Some(self.size), ..OpSpec::new(OpKind::Box) }
    }
    fn pi_description(&self) -> serde_json::Value {
        serde_json::json!(
            "per pixel: 1 - a(i) b(j) / ((H-s+1)(W-s+1)), a(i) = min(i, H-s) - max(0, i-s+1) + 1 hole positions \
             covering row i, b(j) likewise for column j"
        )
    }
}
