//! Corruption operators and their spectral view (docs/METHODS.md §2). What the corrupted-data objectives see of
//! an operator is a [`SpectralBatch`]: observations in spectral coordinates with, per coordinate, whether
//! it is observed, its noise variance and its weight.
//!
//! Every operator here is diagonal in a fixed orthonormal basis: H = U Σ Vᵀ with U = I, Σ = a 0/1 mask M
//! drawn per example, and V = I (pixels) or Vᵀ = F (the centred unitary 2-D DFT). So Σ† = Σ, Hᵀ = V M,
//! H† = V M (M is a projector) and ȳ = Σ† Uᵀ y = M ⊙ y. Observations are held on the full grid of spectral
//! coordinates, zero off the observed set O (y lies in the range of U Σ): `observe` adds σ0 z on O only.
//!
//! A family ([`PixelInpainting`], [`PatchInpainting`], [`BoxInpainting`], [`GaussianDenoising`],
//! [`MriSingleCoil`]) implements [`Operator`]: its parameters and image size, how to draw one mask, and the
//! analytic probability π_i = Prob(i ∈ O) over that draw. [`Operator::batch`] draws the masks of given
//! example indices (example i always gets the same mask for a given seed) and returns an [`OperatorBatch`],
//! which applies H, Hᵀ, H†, Vᵀ, V and builds the [`SpectralBatch`].
pub mod boxhole;
pub mod make;
pub mod mri;
pub mod noise;
pub mod patch;
pub mod pixel;
pub mod spec;

pub use boxhole::BoxInpainting;
pub use make::CorruptedData;
pub use mri::MriSingleCoil;
pub use noise::GaussianDenoising;
pub use patch::PatchInpainting;
pub use pixel::PixelInpainting;
pub use spec::{OpKind, OpSpec};

use crate::ops;
use crate::{DType, Device, Tensor};
use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// The orthonormal basis V of an operator H = U Σ Vᵀ: pixels (inpainting, denoising) or the centred
/// unitary 2-D DFT (single-coil MRI; spectral tensors then hold real and imaginary parts as 2 channels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Basis {
    Pixel,
    Fourier,
}

impl Basis {
    pub fn name(self) -> &'static str {
        match self {
            Basis::Pixel => "pixel",
            Basis::Fourier => "fourier",
        }
    }
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

impl SpectralBatch {
    /// The same batch on `device` (one upload per tensor; the tensors themselves when already there).
    pub fn to_device(&self, device: &crate::Device) -> Result<SpectralBatch> {
        Ok(SpectralBatch {
            basis: self.basis,
            ybar: self.ybar.to_device(device)?,
            observed: self.observed.to_device(device)?,
            nu: self.nu.to_device(device)?,
            w2: self.w2.to_device(device)?,
        })
    }
}

/// One family of random corruption operators at a fixed image size. Masks are over the H×W grid of spectral
/// coordinates and shared by every channel (pixel masks across colour channels; k-space masks across the
/// real and imaginary parts), and every singular value is 0 or 1, so ν = σ0² on O.
pub trait Operator: Send + Sync {
    /// Channels, height and width of the images x the operator acts on (C = 2 for MRI: complex images).
    fn image_chw(&self) -> [usize; 3];
    /// Draws one mask over the H×W grid (row-major, 0/1).
    fn sample_mask(&self, rng: &mut StdRng) -> Vec<f32>;
    /// π over the H×W grid: the probability that each coordinate is observed under `sample_mask` (analytic).
    fn pi(&self) -> Vec<f64>;
    /// Which parameter to change, and how, when coordinate (row, col) is never observed (π = 0).
    fn unobservable_fix(&self, row: usize, col: usize) -> String;
    /// The parameters with every default resolved: `spec().build(image_chw())` rebuilds this operator.
    fn spec(&self) -> OpSpec;
    /// π in words for the dataset metadata (a scalar when uniform, else per-line or per-region).
    fn pi_description(&self) -> serde_json::Value;

    /// Short name as in the CLI and the dataset metadata ("pixel", "patch", "box", "noise", "mri").
    fn name(&self) -> &'static str {
        self.spec().kind.name()
    }
    fn basis(&self) -> Basis {
        self.spec().kind.basis()
    }
    /// Noise level σ0 of y = H x + σ0 z.
    fn sigma0(&self) -> f64 {
        self.spec().sigma0
    }
    /// The mask of example `index` for dataset seed `seed`: a function of (seed, index) only.
    fn mask_of(&self, seed: u64, index: usize) -> Vec<f32> {
        self.sample_mask(&mut example_rng(seed, index, 0))
    }
    /// Channels of the spectral coordinates (2 for the Fourier basis).
    fn spectral_channels(&self) -> usize {
        match self.basis() {
            Basis::Pixel => self.image_chw()[0],
            Basis::Fourier => 2,
        }
    }
    /// The operators of examples `indices` (masks from [`Operator::mask_of`]).
    fn batch(&self, seed: u64, indices: &[usize]) -> OperatorBatch {
        let masks: Vec<f32> = indices.iter().flat_map(|&i| self.mask_of(seed, i)).collect();
        OperatorBatch::from_masks(self, masks)
    }
}

/// A per-example, per-stream rng: example i of a dataset with seed s always draws the same mask (stream 0)
/// and noise (stream 1), whatever batch it is drawn in.
pub fn example_rng(seed: u64, index: usize, stream: u64) -> StdRng {
    let mut h = seed ^ 0x6a09_e667_f3bc_c909;
    for v in [index as u64, stream] {
        // splitmix64 steps: neighbouring (seed, index) pairs get unrelated streams.
        h = h.wrapping_add(v).wrapping_add(0x9e37_79b9_7f4a_7c15);
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
    }
    StdRng::seed_from_u64(h)
}

/// Refuses an operator under which some coordinate is never observed (π_i = 0): no objective can learn what
/// it never sees, and W² = 1/π would be infinite. The error names the coordinate, the parameter and the fix.
pub fn check_observable(op: &dyn Operator) -> Result<()> {
    let [_, h, w] = op.image_chw();
    let pi = op.pi();
    let never = pi.iter().filter(|&&p| p <= 0.0).count();
    if let Some(first) = pi.iter().position(|&p| p <= 0.0) {
        let (r, c) = (first / w, first % w);
        bail!(
            "{} operator at {h}x{w}: {never} of {} coordinates are never observed (π = 0), the first at row {r}, \
             column {c}; the method cannot learn what is never observed. Fix: {}",
            op.name(),
            h * w,
            op.unobservable_fix(r, c)
        );
    }
    Ok(())
}

/// The operators H_1..H_N of a batch of examples: the shared family data (basis, σ0, π) and one H×W mask per
/// example. Images x are [N, C, H, W] as in [`Operator::image_chw`]; observations y and spectral
/// coefficients are [N, C_s, H, W] with C_s = [`Operator::spectral_channels`]. Tensor arguments may live on
/// any device and dtype; results follow them, and every map is differentiable (recorded ops).
#[derive(Clone, Debug)]
pub struct OperatorBatch {
    pub name: &'static str,
    pub basis: Basis,
    pub sigma0: f64,
    /// [C, H, W] of the images.
    pub image_chw: [usize; 3],
    /// Channels of the spectral coordinates.
    pub spectral_channels: usize,
    /// [N, 1, H, W] 0/1 masks, row-major.
    pub masks: Vec<f32>,
    /// π over the H×W grid.
    pub pi: Vec<f64>,
}

impl OperatorBatch {
    /// The batch of `op` with explicit masks [N, 1, H, W] (e.g. read back from a dataset file).
    pub fn from_masks(op: &(impl Operator + ?Sized), masks: Vec<f32>) -> OperatorBatch {
        OperatorBatch {
            name: op.name(),
            basis: op.basis(),
            sigma0: op.sigma0(),
            image_chw: op.image_chw(),
            spectral_channels: op.spectral_channels(),
            masks,
            pi: op.pi(),
        }
    }
    pub fn len(&self) -> usize {
        self.masks.len() / (self.image_chw[1] * self.image_chw[2])
    }
    pub fn is_empty(&self) -> bool {
        self.masks.is_empty()
    }
    pub fn image_dims(&self) -> [usize; 4] {
        let [c, h, w] = self.image_chw;
        [self.len(), c, h, w]
    }
    pub fn spectral_dims(&self) -> [usize; 4] {
        let [_, h, w] = self.image_chw;
        [self.len(), self.spectral_channels, h, w]
    }
    /// The 0/1 observed set over the spectral coordinates [N, C_s, H, W] (mask repeated per channel).
    pub fn observed_host(&self) -> Vec<f32> {
        self.per_channel(|m, _| m)
    }
    /// W² = 1/π on O and 0 elsewhere, [N, C_s, H, W].
    pub fn w2_host(&self) -> Vec<f64> {
        self.per_channel(|m, i| if m != 0.0 { 1.0 / self.pi[i] } else { 0.0 })
    }
    fn per_channel<T>(&self, f: impl Fn(f32, usize) -> T) -> Vec<T> {
        let hw = self.image_chw[1] * self.image_chw[2];
        let mut out = Vec::with_capacity(self.masks.len() * self.spectral_channels);
        for mask in self.masks.chunks_exact(hw) {
            for _ in 0..self.spectral_channels {
                out.extend(mask.iter().enumerate().map(|(i, &m)| f(m, i)));
            }
        }
        out
    }

    fn check(&self, what: &str, t: &Tensor, want: [usize; 4]) -> Result<()> {
        if t.dims() != want {
            bail!(
                "{} operator, {what}: got shape {}, expected {want:?} (batch of {} examples)",
                self.name,
                t.shape(),
                self.len()
            );
        }
        Ok(())
    }
    fn mask_tensor(&self, like: &Tensor, channels: usize) -> Result<Tensor> {
        let [_, h, w] = self.image_chw;
        let data: Vec<f64> = if channels == 1 {
            self.masks.iter().map(|&m| m as f64).collect()
        } else {
            let hw = h * w;
            let mut d = Vec::with_capacity(self.masks.len() * channels);
            for mask in self.masks.chunks_exact(hw) {
                for _ in 0..channels {
                    d.extend(mask.iter().map(|&m| m as f64));
                }
            }
            d
        };
        Tensor::from_f64(&data, [self.len(), channels, h, w], like.dtype(), like.device())
    }
    /// Images as the operator's domain: MRI accepts real images [N, 1, H, W] and promotes them to complex
    /// [N, 2, H, W] (zero imaginary part).
    fn domain(&self, what: &str, x: &Tensor) -> Result<Tensor> {
        let [n, c, h, w] = self.image_dims();
        if self.basis == Basis::Fourier && c == 2 && x.dims() == [n, 1, h, w] {
            let zero = Tensor::zeros(x.shape().clone(), x.dtype(), x.device())?;
            return ops::layout::concat_channels(&[x, &zero]);
        }
        self.check(what, x, [n, c, h, w])?;
        Ok(x.clone())
    }

    /// Vᵀ x: the spectral coefficients x̄ of images x.
    pub fn to_spectral(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.domain("to_spectral input x", x)?;
        match self.basis {
            Basis::Pixel => Ok(x),
            Basis::Fourier => ops::fft::fft2c(&x),
        }
    }
    /// V x̄: images from spectral coefficients.
    pub fn from_spectral(&self, xbar: &Tensor) -> Result<Tensor> {
        self.check("from_spectral input", xbar, self.spectral_dims())?;
        match self.basis {
            Basis::Pixel => Ok(xbar.clone()),
            Basis::Fourier => ops::fft::ifft2c(xbar),
        }
    }
    /// P x̄ = M ⊙ x̄ in spectral coordinates (the projector onto O).
    pub fn project(&self, xbar: &Tensor) -> Result<Tensor> {
        self.check("project input", xbar, self.spectral_dims())?;
        ops::elementwise::mul(xbar, &self.mask_tensor(xbar, self.spectral_channels)?)
    }
    /// H x = M ⊙ Vᵀ x (noise-free), [N, C_s, H, W].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.domain("forward input x", x)?;
        match self.basis {
            Basis::Pixel => ops::elementwise::mul(&x, &self.mask_tensor(&x, self.spectral_channels)?),
            Basis::Fourier => ops::fft::masked_fft2c(&x, &self.mask_tensor(&x, 1)?),
        }
    }
    /// Hᵀ y = V (M ⊙ y), [N, C, H, W] (complex images for MRI).
    pub fn adjoint(&self, y: &Tensor) -> Result<Tensor> {
        self.check("adjoint input y", y, self.spectral_dims())?;
        match self.basis {
            Basis::Pixel => ops::elementwise::mul(y, &self.mask_tensor(y, self.spectral_channels)?),
            Basis::Fourier => ops::fft::masked_ifft2c(y, &self.mask_tensor(y, 1)?),
        }
    }
    /// H† y = V Σ† Uᵀ y = V (M ⊙ y): equal to Hᵀ because every singular value is 0 or 1.
    pub fn pinv(&self, y: &Tensor) -> Result<Tensor> {
        self.adjoint(y)
    }
    /// y = H x + σ0 z with z standard normal on O (zero elsewhere), z drawn from `rng`.
    pub fn observe(&self, x: &Tensor, rng: &mut impl rand::Rng) -> Result<Tensor> {
        let hx = self.forward(x)?;
        if self.sigma0 == 0.0 {
            return Ok(hx);
        }
        let z = Tensor::randn(hx.shape().clone(), hx.dtype(), hx.device(), rng)?;
        let z = ops::elementwise::mul(
            &ops::elementwise::scale(&z, self.sigma0)?,
            &self.mask_tensor(&hx, self.spectral_channels)?,
        )?;
        ops::elementwise::add(&hx, &z)
    }
    /// The spectral view of observations y [N, C_s, H, W]: ȳ = Σ† Uᵀ y = M ⊙ y, O, ν = σ0² on O and
    /// W² = 1/π on O, all as `dtype` on `device`.
    pub fn spectral(&self, y: &Tensor, device: &Device, dtype: DType) -> Result<SpectralBatch> {
        self.check("spectral input y", y, self.spectral_dims())?;
        let ybar = self.project(&y.detach())?.to_device(device)?.to_dtype(dtype)?;
        self.spectral_from_host(None, device, dtype).map(|mut b| {
            b.ybar = ybar;
            b
        })
    }
    /// The spectral view from host data: `ybar` [N, C_s, H, W] (already zero off O, as stored in a
    /// corrupted dataset), or zeros when None.
    pub fn spectral_from_host(&self, ybar: Option<&[f32]>, device: &Device, dtype: DType) -> Result<SpectralBatch> {
        let dims = self.spectral_dims();
        let observed = self.observed_host();
        let nu: Vec<f64> = observed.iter().map(|&m| m as f64 * self.sigma0 * self.sigma0).collect();
        let to = |v: &[f32]| -> Result<Tensor> {
            let d: Vec<f64> = v.iter().map(|&x| x as f64).collect();
            Tensor::from_f64(&d, dims, dtype, device)
        };
        let ybar = match ybar {
            Some(v) => {
                if v.len() != observed.len() {
                    bail!("{} operator: ybar has {} values, expected {dims:?}", self.name, v.len());
                }
                let masked: Vec<f32> = v.iter().zip(&observed).map(|(&y, &m)| y * m).collect();
                to(&masked)?
            }
            None => Tensor::zeros(dims, dtype, device)?,
        };
        Ok(SpectralBatch {
            basis: self.basis,
            ybar,
            observed: to(&observed)?,
            nu: Tensor::from_f64(&nu, dims, dtype, device)?,
            w2: Tensor::from_f64(&self.w2_host(), dims, dtype, device)?,
        })
    }
}
