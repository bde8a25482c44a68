//! Dropout with a counter-based mask: element i of a tensor is kept iff uniform(seed, i) >= p, where
//! uniform(seed, i) is the top 24 bits of a splitmix64 hash of (seed, i) over 2^24. The mask is never
//! stored; backward regenerates it from the seed. CPU and CUDA drop exactly the same elements.
pub mod cpu;
pub mod cuda;

use crate::autograd::Node;
use crate::cpu_map;
use crate::ops::compute;
use crate::tensor::Tensor;
use anyhow::{bail, Result};

/// The host-side constants of one dropout mask.
#[derive(Clone, Copy, Debug)]
pub struct Mask {
    /// Stream key: the first splitmix64 output of `seed`.
    pub key: u64,
    /// Keep iff bits24 >= threshold = ceil(p * 2^24) (u >= p with u = bits24 / 2^24, in integers).
    pub threshold: u32,
    /// 1 / (1 - p).
    pub scale: f64,
}

impl Mask {
    pub fn new(p: f64, seed: u64) -> Mask {
        Mask {
            key: cpu::mix64(seed.wrapping_add(cpu::GOLDEN)),
            threshold: (p * (1u64 << 24) as f64).ceil() as u32,
            scale: 1.0 / (1.0 - p),
        }
    }
    /// Whether element `i` is kept (the exact rule both backends apply).
    pub fn keeps(&self, i: u64) -> bool {
        cpu::bits24(self.key, i) >= self.threshold
    }
}

fn apply_raw(x: &Tensor, dir: &'static str, m: Mask) -> Result<Tensor> {
    compute(
        "dropout",
        &[x],
        x.shape().clone(),
        |s| Ok(cpu_map!(s[0], |v| cpu::apply(v, m))),
        |gpu, s| cuda::apply(gpu, dir, s[0], m),
    )
}

/// Zeroes each element with probability p and scales the kept ones by 1 / (1 - p). The mask depends only
/// on (seed, flat index), so the same seed gives the same mask on either device. p = 0 returns x itself.
pub fn dropout(x: &Tensor, p: f64, seed: u64) -> Result<Tensor> {
    if !(0.0..1.0).contains(&p) {
        bail!("dropout: p must be in [0, 1), got {p} (input shape {})", x.shape());
    }
    if p == 0.0 {
        return Ok(x.clone());
    }
    let m = Mask::new(p, seed);
    let out = apply_raw(x, "fwd", m)?;
    Ok(out.with_node(Node::record("dropout", &[x], move |g| Ok(vec![Some(apply_raw(g, "bwd", m)?)]))))
}
