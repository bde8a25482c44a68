//! Sinusoidal embeddings of the diffusion time / noise level, differentiable with respect to t.
pub mod cpu;
pub mod cuda;

use crate::autograd::Node;
use crate::ops::compute;
use crate::tensor::Tensor;
use crate::{cpu_map, cpu_map2};
use anyhow::{bail, Result};

/// Which reference embedding to reproduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmbeddingKind {
    /// DDPM/DDIM `get_timestep_embedding`: freq_k = exp(-ln(10000) k / (half - 1)), [sin, cos], zero-padded
    /// to an odd `dim`. t holds (integer-valued) timesteps.
    Ddim,
    /// EDM `PositionalEmbedding` (endpoint=False, max_positions 10000): freq_k = (1/10000)^(k / half),
    /// [cos, sin]. t holds c_noise.
    Edm,
}

/// Sizes and frequencies of one embedding (shared by the CPU twin and the launchers).
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub dim: usize,
    pub half: usize,
    /// Denominator of the frequency exponent: half - 1 (DDIM) or half (EDM).
    pub denom: usize,
    /// EDM puts the cosines first.
    pub cos_first: bool,
}

impl Layout {
    /// freq_k = exp(neg_log_scale * k).
    pub fn neg_log_scale(&self) -> f64 {
        -(10000f64).ln() / self.denom as f64
    }
    pub fn freqs(&self) -> Vec<f64> {
        (0..self.half).map(|k| (self.neg_log_scale() * k as f64).exp()).collect()
    }
}

fn layout(t: &Tensor, dim: usize, kind: EmbeddingKind) -> Result<Layout> {
    if t.shape().rank() != 1 {
        bail!("sinusoidal_embedding: expected t of shape [N], got shape {}", t.shape());
    }
    let half = dim / 2;
    match kind {
        EmbeddingKind::Ddim if dim < 4 => {
            bail!(
                "sinusoidal_embedding: Ddim needs dim >= 4 (half - 1 divides the exponent), got dim {dim} for t {}",
                t.shape()
            )
        }
        EmbeddingKind::Edm if dim < 2 || !dim.is_multiple_of(2) => {
            bail!("sinusoidal_embedding: Edm needs an even dim >= 2, got dim {dim} for t {}", t.shape())
        }
        EmbeddingKind::Ddim => Ok(Layout { dim, half, denom: half - 1, cos_first: false }),
        EmbeddingKind::Edm => Ok(Layout { dim, half, denom: half, cos_first: true }),
    }
}

/// t [N] -> [N, dim] sinusoidal embedding; the gradient flows back to t.
pub fn sinusoidal_embedding(t: &Tensor, dim: usize, kind: EmbeddingKind) -> Result<Tensor> {
    let l = layout(t, dim, kind)?;
    let out = compute(
        "sinusoidal_embedding",
        &[t],
        [t.numel(), dim],
        |s| Ok(cpu_map!(s[0], |v| cpu::fwd(v, l))),
        |gpu, s| cuda::fwd(gpu, s[0], l),
    )?;
    let td = t.detach();
    Ok(out.with_node(Node::record("sinusoidal_embedding", &[t], move |g| {
        let dt = compute(
            "sinusoidal_embedding",
            &[&td, g],
            td.shape().clone(),
            |s| Ok(cpu_map2!(s[0], s[1], |tv, gv| cpu::bwd(tv, gv, l))),
            |gpu, s| cuda::bwd(gpu, s[0], s[1], l),
        )?;
        Ok(vec![Some(dt)])
    })))
}
