//! Corruption operators and their spectral view (METHODS.md §2). What the corrupted-data objectives see of
//! an operator is a [`SpectralBatch`]: observations in spectral coordinates with, per coordinate, whether
//! it is observed, its noise variance and its weight.
use crate::Tensor;

/// The orthonormal basis V of an operator H = U Σ Vᵀ: pixels (inpainting, denoising) or the centred
/// unitary 2-D DFT (single-coil MRI; spectral tensors then hold real and imaginary parts as 2 channels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Basis {
    Pixel,
    Fourier,
}

/// A batch of corrupted observations in spectral coordinates, all tensors of one shape [N, C, H, W]
/// (C = 2 for the Fourier basis: real and imaginary parts).
pub struct SpectralBatch {
    pub basis: Basis,
    /// ȳ = Σ† Uᵀ y, zero off the observed set.
    pub ybar: Tensor,
    /// 1 on the observed set O (singular value > 0), 0 elsewhere.
    pub observed: Tensor,
    /// ν_i = σ0² / s_i² on O, 0 elsewhere.
    pub nu: Tensor,
    /// W²_i = 1 / π_i on O (π_i = Prob(i ∈ O) over the random operator), 0 elsewhere.
    pub w2: Tensor,
}
