//! Single-coil MRI: H = M F with F the centred unitary 2-D DFT (Vᵀ = F, U = I) and M a mask of vertical
//! k-space lines (columns), the same for the real and imaginary parts. Images are complex [N, 2, H, W]
//! (real [N, 1, H, W] are promoted with a zero imaginary part).
//!
//! Lines: the n_acs centre columns [W/2 − n_acs/2, W/2 − n_acs/2 + n_acs) are always sampled (W/2 is the
//! DC column of the centred DFT). To reach L = round(W / R) lines in all, m = min(max(L − n_acs, 0), n_out)
//! of the n_out = W − n_acs outer columns are added, either uniformly at random without replacement or
//! equispaced: positions ⌊j n_out / m⌋ + u (mod n_out), j < m, in the list of outer columns, with a uniform
//! random cyclic offset u. Either way each outer column is sampled with probability exactly
//! π = m / n_out (for the equispaced scheme because a uniform cyclic shift of an m-element set hits each
//! position with probability m / n_out), so W² = 1 on the centre lines and n_out / m (#outer / #sampled
//! outer) elsewhere. m = 0 < n_out (R too high for the centre block) leaves outer lines never observed,
//! which `check_observable` refuses.
use super::{OpKind, OpSpec, Operator};
use rand::rngs::StdRng;
use rand::Rng;

pub struct MriSingleCoil {
    /// Acceleration R >= 1.
    pub r: f64,
    /// Number of always-sampled centre lines.
    pub acs: usize,
    pub equispaced: bool,
    pub sigma0: f64,
    /// Image height and width.
    pub hw: [usize; 2],
}

impl MriSingleCoil {
    pub fn new(r: f64, acs: usize, equispaced: bool, sigma0: f64, hw: [usize; 2]) -> MriSingleCoil {
        MriSingleCoil { r, acs, equispaced, sigma0, hw }
    }
    /// The centre columns [start, start + acs).
    pub fn acs_range(&self) -> std::ops::Range<usize> {
        let start = self.hw[1] / 2 - self.acs / 2;
        start..start + self.acs
    }
    /// The outer columns, in increasing order.
    pub fn outer_lines(&self) -> Vec<usize> {
        let acs = self.acs_range();
        (0..self.hw[1]).filter(|c| !acs.contains(c)).collect()
    }
    /// Number of outer lines sampled per mask: m = min(max(round(W / R) − n_acs, 0), n_out).
    pub fn sampled_outer(&self) -> usize {
        let w = self.hw[1];
        let total = (w as f64 / self.r).round() as usize;
        total.saturating_sub(self.acs).min(w - self.acs)
    }
    /// Draws the sampled columns as a 0/1 vector of length W.
    pub fn sample_lines(&self, rng: &mut StdRng) -> Vec<bool> {
        let w = self.hw[1];
        let mut lines = vec![false; w];
        for c in self.acs_range() {
            lines[c] = true;
        }
        let outer = self.outer_lines();
        let (n_out, m) = (outer.len(), self.sampled_outer());
        if m == 0 {
            return lines;
        }
        if self.equispaced {
            let u = rng.random_range(0..n_out);
            for j in 0..m {
                lines[outer[(j * n_out / m + u) % n_out]] = true;
            }
        } else {
            for k in rand::seq::index::sample(rng, n_out, m) {
                lines[outer[k]] = true;
            }
        }
        lines
    }
    /// π per column.
    pub fn pi_lines(&self) -> Vec<f64> {
        let acs = self.acs_range();
        let n_out = self.hw[1] - self.acs;
        let outer = if n_out == 0 { 1.0 } else { self.sampled_outer() as f64 / n_out as f64 };
        (0..self.hw[1]).map(|c| if acs.contains(&c) { 1.0 } else { outer }).collect()
    }
}

impl Operator for MriSingleCoil {
    fn image_chw(&self) -> [usize; 3] {
        [2, self.hw[0], self.hw[1]]
    }
    fn sample_mask(&self, rng: &mut StdRng) -> Vec<f32> {
        let lines = self.sample_lines(rng);
        let mut m = Vec::with_capacity(self.hw[0] * self.hw[1]);
        for _ in 0..self.hw[0] {
            m.extend(lines.iter().map(|&l| if l { 1.0f32 } else { 0.0 }));
        }
        m
    }
    fn pi(&self) -> Vec<f64> {
        let lines = self.pi_lines();
        (0..self.hw[0]).flat_map(|_| lines.iter().copied()).collect()
    }
    fn unobservable_fix(&self, _: usize, _: usize) -> String {
        let w = self.hw[1];
        format!(
            "at R = {} a {w}-line k-space gets round({w}/R) = {} lines, no more than the {} centre lines (--acs), \
             so the outer lines are never sampled; lower --R to {:.3} or less, or lower --acs",
            self.r,
            (w as f64 / self.r).round(),
            self.acs,
            w as f64 / (self.acs + 1) as f64
        )
    }
    fn spec(&self) -> OpSpec {
        OpSpec {
            sigma0: self.sigma0,
            r: Some(self.r),
            acs: Some(self.acs),
            equispaced: self.equispaced,
            ..OpSpec::new(OpKind::Mri)
        }
    }
    fn pi_description(&self) -> serde_json::Value {
        let n_out = self.hw[1] - self.acs;
        let acs = self.acs_range();
        serde_json::json!({
            "per": "k-space column",
            "centre_lines": [acs.start, acs.end],
            "centre": 1.0,
            "outer": if n_out == 0 { 1.0 } else { self.sampled_outer() as f64 / n_out as f64 },
            "outer_lines": n_out,
            "sampled_outer_lines": self.sampled_outer(),
            "scheme": if self.equispaced { "equispaced" } else { "random" },
        })
    }
}
