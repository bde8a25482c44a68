//! The centred unitary 2-D DFT of complex images and its k-space mask (MRI single-coil, docs/METHODS.md §2):
//! `masked_fft2c` (y = M ⊙ F x) and its adjoint `masked_ifft2c` (x = Fᴴ (M ⊙ y)), plus the unmasked
//! `fft2c` / `ifft2c`. Images are [N, 2, H, W] tensors (channel 0 real part, channel 1 imaginary part);
//! masks are real [N, 1, H, W] (0/1 or weights) of the same dtype and device, and get no gradient.
//!
//! F = fftshift ∘ FFT ∘ ifftshift with 1/√(HW) scaling, so F is unitary and, with M real diagonal, the two
//! ops are each other's adjoint: the backward of one is the other applied to the output gradient.
//!
//! Supported sizes: H and W must be products of 2, 3 and 5 (fastMRI's 320 = 2⁶·5 included). Other sizes are
//! refused with an error naming the size and the supported factors, on the CPU and on CUDA alike (no naive
//! O(n²) fallback, so both backends accept exactly the same shapes). CUDA also caps H and W at
//! `cuda::MAX_SIDE`.
pub mod cpu;
pub mod cuda;

use crate::autograd::Node;
use crate::ops::compute;
use crate::tensor::{CpuStorage, Tensor};
use crate::Device;
use anyhow::{bail, Result};

/// (N, H, W) after checking x is a non-empty [N, 2, H, W] of a supported size and the mask, if any, is
/// [N, 1, H, W] of the same dtype and device.
fn check(op: &str, x: &Tensor, mask: Option<&Tensor>) -> Result<(usize, usize, usize)> {
    let d = x.dims();
    if d.len() != 4 || d[1] != 2 || x.numel() == 0 {
        bail!(
            "{op}: expected complex images [N, 2, H, W] (channel 0 real, 1 imaginary), non-empty, got shape {}",
            x.shape()
        );
    }
    let (n, h, w) = (d[0], d[2], d[3]);
    for (axis, size) in [("H", h), ("W", w)] {
        if cpu::radices(size).is_none() {
            bail!(
                "{op}: image size {h}x{w} (input shape {}) is not supported: {axis} = {size} has a prime factor \
                 other than 2, 3 and 5 (supported sizes are products of 2, 3 and 5, e.g. 64, 320 = 2^6*5)",
                x.shape()
            );
        }
    }
    if let Some(m) = mask {
        if m.dims() != [n, 1, h, w] {
            bail!(
                "{op}: mask shape {} does not match the input shape {}: expected [{n}, 1, {h}, {w}]",
                m.shape(),
                x.shape()
            );
        }
        x.check_same_kind(m, &format!("{op} (input against mask)"))?;
    }
    if let Device::Cuda(_) = x.device() {
        if h > cuda::MAX_SIDE || w > cuda::MAX_SIDE {
            bail!("{op}: image size {h}x{w} exceeds the CUDA kernels' limit of {} per side", cuda::MAX_SIDE);
        }
    }
    Ok((n, h, w))
}

/// The transform without autograd: forward y = M ⊙ F x (`inverse` false) or adjoint Fᴴ (M ⊙ y).
fn raw(op: &'static str, x: &Tensor, mask: Option<&Tensor>, inverse: bool) -> Result<Tensor> {
    let (n, h, w) = check(op, x, mask)?;
    let inputs: Vec<&Tensor> = std::iter::once(x).chain(mask).collect();
    compute(
        op,
        &inputs,
        x.shape().clone(),
        |s| {
            Ok(match (s[0], s.get(1).copied()) {
                (CpuStorage::F32(x), None) => CpuStorage::F32(cpu::masked_fft2c(x, None, n, h, w, inverse)),
                (CpuStorage::F64(x), None) => CpuStorage::F64(cpu::masked_fft2c(x, None, n, h, w, inverse)),
                (CpuStorage::F32(x), Some(CpuStorage::F32(m))) => {
                    CpuStorage::F32(cpu::masked_fft2c(x, Some(m), n, h, w, inverse))
                }
                (CpuStorage::F64(x), Some(CpuStorage::F64(m))) => {
                    CpuStorage::F64(cpu::masked_fft2c(x, Some(m), n, h, w, inverse))
                }
                _ => bail!("{op}: input and mask dtypes differ"),
            })
        },
        |gpu, s| cuda::masked_fft2c(gpu, s[0], s.get(1).copied(), n, h, w, inverse),
    )
}

/// y = M ⊙ F x: the centred unitary 2-D DFT of x [N, 2, H, W], masked by the real mask [N, 1, H, W].
/// Gradient to x: Fᴴ (M ⊙ g) = `masked_ifft2c(g, mask)`; the mask gets none.
pub fn masked_fft2c(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let y = raw("masked_fft2c", x, Some(mask), false)?;
    let m = mask.detach();
    Ok(y.with_node(Node::record("masked_fft2c", &[x], move |g| {
        Ok(vec![Some(raw("masked_fft2c (backward)", g, Some(&m), true)?)])
    })))
}

/// x = Fᴴ (M ⊙ y): the adjoint of [`masked_fft2c`] (for a 0/1 mask, the zero-filled reconstruction of
/// k-space y [N, 2, H, W]). Gradient to y: M ⊙ F g = `masked_fft2c(g, mask)`; the mask gets none.
pub fn masked_ifft2c(y: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let x = raw("masked_ifft2c", y, Some(mask), true)?;
    let m = mask.detach();
    Ok(x.with_node(Node::record("masked_ifft2c", &[y], move |g| {
        Ok(vec![Some(raw("masked_ifft2c (backward)", g, Some(&m), false)?)])
    })))
}

/// F x, the unmasked centred unitary 2-D DFT of x [N, 2, H, W]. Gradient: Fᴴ g.
pub fn fft2c(x: &Tensor) -> Result<Tensor> {
    let y = raw("fft2c", x, None, false)?;
    Ok(y.with_node(Node::record("fft2c", &[x], |g| Ok(vec![Some(raw("fft2c (backward)", g, None, true)?)]))))
}

/// Fᴴ y = F⁻¹ y, the inverse of [`fft2c`]. Gradient: F g.
pub fn ifft2c(y: &Tensor) -> Result<Tensor> {
    let x = raw("ifft2c", y, None, true)?;
    Ok(x.with_node(Node::record("ifft2c", &[y], |g| Ok(vec![Some(raw("ifft2c (backward)", g, None, false)?)]))))
}
