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

/// Where a mask's seed is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seed {
    /// The layer's seed, on the host.
    Host(u64),
    /// The step's seed in device memory (the address of a u64), and the layer: the kernel derives the
    /// layer's seed as [`crate::nn::layer_seed`] does, so a step replayed from a CUDA graph gets new masks
    /// from the seed written before each replay. CUDA only.
    Device { step_seed: u64, layer: u64 },
}

impl From<u64> for Seed {
    fn from(seed: u64) -> Seed {
        Seed::Host(seed)
    }
}

/// The host-side constants of one dropout mask.
#[derive(Clone, Copy, Debug)]
pub struct Mask {
    /// Stream key: the first splitmix64 output of the seed (0 for a device seed, derived by the kernel).
    pub key: u64,
    /// A device seed's (address of the step seed, layer); None for a host seed.
    pub device_seed: Option<(u64, u64)>,
    /// Keep iff bits24 >= threshold = ceil(p * 2^24) (u >= p with u = bits24 / 2^24, in integers).
    pub threshold: u32,
    /// 1 / (1 - p).
    pub scale: f64,
}

impl Mask {
    pub fn new(p: f64, seed: impl Into<Seed>) -> Mask {
        let (key, device_seed) = match seed.into() {
            Seed::Host(seed) => (cpu::mix64(seed.wrapping_add(cpu::GOLDEN)), None),
            Seed::Device { step_seed, layer } => (0, Some((step_seed, layer))),
        };
        Mask { key, device_seed, threshold: (p * (1u64 << 24) as f64).ceil() as u32, scale: 1.0 / (1.0 - p) }
    }
    /// Whether element `i` is kept (the exact rule both backends apply).
    pub fn keeps(&self, i: u64) -> bool {
        cpu::bits24(self.key, i) >= self.threshold
    }
}

/// The mask of `dropout(_, p, seed)`, None for p = 0 (nothing dropped); `what` names the caller in the error
/// for a p outside [0, 1) (formatted only then).
pub fn mask(p: f64, seed: impl Into<Seed>, what: impl std::fmt::Display) -> Result<Option<Mask>> {
    if !(0.0..1.0).contains(&p) {
        bail!("{what}: dropout p must be in [0, 1), got {p}");
    }
    Ok((p > 0.0).then(|| Mask::new(p, seed)))
}

/// The CPU twin's mask on `x` (forward and backward alike), refusing a seed in device memory.
pub(crate) fn apply_cpu<T: crate::backend::cpu::Real>(x: &[T], m: Mask, what: &str) -> Result<Vec<T>> {
    if m.device_seed.is_some() {
        bail!("{what}: a dropout seed in device memory on the CPU (pass the seed itself)");
    }
    Ok(cpu::apply(x, m))
}

/// y = mask(x) without autograd: `dir` is fwd or bwd (the same map).
pub(crate) fn apply_raw(x: &Tensor, dir: &'static str, m: Mask) -> Result<Tensor> {
    compute(
        "dropout",
        &[x],
        x.shape().clone(),
        |s| Ok(cpu_map!(s[0], |v| apply_cpu(v, m, "dropout")?)),
        |gpu, s| cuda::apply(gpu, dir, s[0], m),
    )
}

/// Zeroes each element with probability p and scales the kept ones by 1 / (1 - p). The mask depends only
/// on (seed, flat index), so the same seed gives the same mask on either device. p = 0 returns x itself.
pub fn dropout(x: &Tensor, p: f64, seed: impl Into<Seed>) -> Result<Tensor> {
    match mask(p, seed, format_args!("dropout (input shape {})", x.shape()))? {
        Some(m) => apply_mask(x, m),
        None => Ok(x.clone()),
    }
}

/// x with the mask `m` applied (the dropout of `m`'s p and seed), with its gradient.
pub fn apply_mask(x: &Tensor, m: Mask) -> Result<Tensor> {
    let out = apply_raw(x, "fwd", m)?;
    Ok(out.with_node(Node::record("dropout", &[x], move |g| Ok(vec![Some(apply_raw(g, "bwd", m)?)]))))
}
