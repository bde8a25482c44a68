//! 2-D convolution (NCHW, square kernel, symmetric zero padding, equal strides) with gradients for the
//! input, the weights and the bias. CPU: im2col + GEMM (`cpu.rs`); CUDA: implicit GEMM without an im2col
//! buffer (`cuda.rs`, `kernels/conv.cu`).
pub mod cpu;
pub mod cuda;
mod norm_conv;
mod pixel_major;

pub use norm_conv::{norm_conv2d, InputNorm};

use crate::autograd::Node;
use crate::backend::cpu::Real;
use crate::backend::typed_slices;
use crate::ops::dropout::Mask;
use crate::ops::{compute, reduce, scale};
use crate::tensor::{CpuStorage, Tensor};
use crate::{cpu_map2, DType};
use anyhow::{bail, Result};

/// Sizes of one convolution: input [n, c, h, w], weights [co, c, k, k], output [n, co, ho, wo].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub co: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub ho: usize,
    pub wo: usize,
}

impl Geom {
    /// Checks the shapes of a conv2d call and derives the output size; errors name the op and the shapes.
    pub fn new(x: &[usize], w: &[usize], stride: usize, padding: usize) -> Result<Geom> {
        let fmt = |d: &[usize]| format!("{d:?}");
        let &[n, c, h, wd] = x else {
            bail!("conv2d: expected input x of rank 4 [N, C_in, H, W], got shape {}", fmt(x));
        };
        let &[co, ci, kh, kw] = w else {
            bail!("conv2d: expected weights of rank 4 [C_out, C_in, K, K], got shape {} (input {})", fmt(w), fmt(x));
        };
        if x.contains(&0) || w.contains(&0) {
            bail!("conv2d: zero-sized input {} or weights {}", fmt(x), fmt(w));
        }
        if ci != c {
            bail!("conv2d: input has {c} channels ({}) but the weights expect {ci} ({})", fmt(x), fmt(w));
        }
        if kh != kw {
            bail!("conv2d: only square kernels are supported, got weights {} (input {})", fmt(w), fmt(x));
        }
        if stride == 0 {
            bail!("conv2d: stride must be at least 1 (input {}, weights {})", fmt(x), fmt(w));
        }
        // Checked: an absurd padding must be an error, not an overflow panic.
        let padded = |d: usize| padding.checked_mul(2).and_then(|p| p.checked_add(d));
        let (Some(hp), Some(wp)) = (padded(h), padded(wd)) else {
            bail!("conv2d: padding {padding} is too large (input {}, weights {})", fmt(x), fmt(w));
        };
        if hp < kh || wp < kh {
            bail!(
                "conv2d: kernel {kh}x{kh} is larger than the padded input {}x{} (input {}, weights {}, padding {padding})",
                hp,
                wp,
                fmt(x),
                fmt(w)
            );
        }
        let ho = (hp - kh) / stride + 1;
        let wo = (wp - kh) / stride + 1;
        Ok(Geom { n, c, h, w: wd, co, k: kh, stride, pad: padding, ho, wo })
    }
    /// Reduction length of the forward GEMM: C_in * K * K.
    pub fn kdim(&self) -> usize {
        self.c * self.k * self.k
    }
    pub fn x_dims(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }
    pub fn w_dims(&self) -> [usize; 4] {
        [self.co, self.c, self.k, self.k]
    }
    pub fn y_dims(&self) -> [usize; 4] {
        [self.n, self.co, self.ho, self.wo]
    }
}

/// What the forward adds to the convolution's output, and how it scales it, in the same pass as the GEMM
/// (the U-Nets' residual blocks: bias, time embedding, skip connection, skip scale):
///
///   y[n, co, p] = (((conv(x, w)[n, co, p] + bias[co]) + per_image[n, co]) + residual[n, co, p]) · scale
///
/// `S` holds each operand: `&Tensor` for [`conv2d_with`], a slice for the CPU twin, `&CudaStorage` for the
/// kernels. On the CPU the adds are those the separate ops made, in the same order (f32 results are
/// bitwise those of conv2d, add_along, add and scale); on CUDA they happen in f32 before the one rounding
/// to the output's dtype.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<S> {
    /// [C_out]
    pub bias: Option<S>,
    /// [N, C_out]: one value per example and output channel (a projected time embedding).
    pub per_image: Option<S>,
    /// [N, C_out, H_out, W_out]: a skip connection.
    pub residual: Option<S>,
    pub scale: f64,
}

impl<S> Epilogue<S> {
    /// Nothing added, scale 1: the bare convolution.
    pub fn none() -> Self {
        Epilogue { bias: None, per_image: None, residual: None, scale: 1.0 }
    }
    pub fn with_bias(bias: Option<S>) -> Self {
        Epilogue { bias, ..Epilogue::none() }
    }
    pub fn with_per_image(self, per_image: S) -> Self {
        Epilogue { per_image: Some(per_image), ..self }
    }
    pub fn with_residual(self, residual: S) -> Self {
        Epilogue { residual: Some(residual), ..self }
    }
    pub fn scaled(self, scale: f64) -> Self {
        Epilogue { scale, ..self }
    }
    pub fn map<U>(self, mut f: impl FnMut(S) -> U) -> Epilogue<U> {
        Epilogue {
            bias: self.bias.map(&mut f),
            per_image: self.per_image.map(&mut f),
            residual: self.residual.map(&mut f),
            scale: self.scale,
        }
    }
    /// The operands present, in the order bias, per_image, residual.
    fn operands(&self) -> impl Iterator<Item = &S> {
        [&self.bias, &self.per_image, &self.residual].into_iter().flatten()
    }
    /// The same epilogue with its operands taken, in [`Epilogue::operands`] order, from `from`.
    fn refill<'a, U>(&self, from: &'a [U]) -> Epilogue<&'a U> {
        let mut next = from.iter();
        let mut take = |present: bool| if present { next.next() } else { None };
        Epilogue {
            bias: take(self.bias.is_some()),
            per_image: take(self.per_image.is_some()),
            residual: take(self.residual.is_some()),
            scale: self.scale,
        }
    }
}

/// A group norm (+ SiLU) (+ dropout) applied to the convolution's input as the kernels gather it
/// ([`norm_conv2d`]): they read a = act(x · scale[n, c] + shift[n, c]), `affine` holding (scale, shift) per
/// image and channel (f32 [N, C, 2] from `norm::cuda::scale_shift`), act SiLU if `silu`, then a's element
/// at flat index i dropped by `dropout` as the dropout op would drop it.
#[derive(Clone, Copy, Debug)]
pub struct Prologue<S> {
    pub affine: S,
    pub silu: bool,
    pub dropout: Option<Mask>,
}

/// The CPU forward for the element type of x.
fn fwd_cpu<T: Real>(g: &Geom, s: &[&CpuStorage], epi: &Epilogue<()>) -> Result<CpuStorage> {
    let v = typed_slices::<T>("conv2d", s)?;
    Ok(T::wrap(cpu::fwd(g, v[0], v[1], &epi.refill(&v[2..]).map(|s| *s))))
}

/// Forward without autograd.
fn conv2d_raw(g: Geom, x: &Tensor, w: &Tensor, epi: Epilogue<&Tensor>) -> Result<Tensor> {
    let mut inputs = vec![x, w];
    inputs.extend(epi.operands().copied());
    let shape = epi.map(|_| ());
    compute(
        "conv2d",
        &inputs,
        g.y_dims(),
        |s| match s[0].dtype() {
            DType::F64 => fwd_cpu::<f64>(&g, s, &shape),
            _ => fwd_cpu::<f32>(&g, s, &shape),
        },
        |gpu, s| cuda::fwd(gpu, &g, s[0], s[1], shape.refill(&s[2..]).map(|s| *s)),
    )
}

/// dx from dy and the weights (no autograd).
pub(crate) fn dgrad_raw(g: Geom, dy: &Tensor, w: &Tensor) -> Result<Tensor> {
    compute(
        "conv2d_dgrad",
        &[dy, w],
        g.x_dims(),
        |s| Ok(cpu_map2!(s[0], s[1], |dy, w| cpu::dgrad(&g, dy, w))),
        |gpu, s| cuda::dgrad(gpu, &g, s[0], s[1]),
    )
}

/// dW from the input and dy (no autograd).
fn wgrad_raw(g: Geom, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    compute(
        "conv2d_wgrad",
        &[x, dy],
        g.w_dims(),
        |s| Ok(cpu_map2!(s[0], s[1], |x, dy| cpu::wgrad(&g, x, dy))),
        |gpu, s| cuda::wgrad(gpu, &g, s[0], s[1]),
    )
}

/// 2-D convolution: x [N, C_in, H, W], w [C_out, C_in, K, K], optional bias [C_out]; zero padding
/// `padding` on every side and the same `stride` along both axes. Returns [N, C_out, H_out, W_out] with
/// H_out = (H + 2*padding - K) / stride + 1. All tensors share one dtype and device.
pub fn conv2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, stride: usize, padding: usize) -> Result<Tensor> {
    conv2d_with(x, w, stride, padding, Epilogue::with_bias(bias))
}

/// [`conv2d`] with its output passed through an [`Epilogue`] in the same pass; the gradients are those of
/// the separate ops (the per-image values get dy summed over the pixels, the residual dy itself).
pub fn conv2d_with(x: &Tensor, w: &Tensor, stride: usize, padding: usize, epi: Epilogue<&Tensor>) -> Result<Tensor> {
    let g = Geom::new(x.dims(), w.dims(), stride, padding)?;
    x.check_same_kind(w, "conv2d")?;
    check_epilogue(&g, x, w, &epi)?;
    let y = conv2d_raw(g, x, w, epi)?;

    let mut inputs = vec![x, w];
    inputs.extend(epi.operands().copied());
    let (xd, wd) = (x.detach(), w.detach());
    let need = [x.tracks_grad(), w.tracks_grad()];
    let need_epi = epi.map(|t| t.tracks_grad());
    Ok(y.with_node(Node::record("conv2d", &inputs, move |dy| {
        let dy = scaled_gradient(dy, need_epi.scale)?;
        let dx = if need[0] { Some(dgrad_raw(g, &dy, &wd)?) } else { None };
        let dw = if need[1] { Some(wgrad_raw(g, &xd, &dy)?) } else { None };
        let mut grads = vec![dx, dw];
        grads.extend(epilogue_grads(&g, &dy, &need_epi)?);
        Ok(grads)
    })))
}

/// The shapes and kinds of an epilogue's operands for a convolution of `g` on x and w.
fn check_epilogue(g: &Geom, x: &Tensor, w: &Tensor, epi: &Epilogue<&Tensor>) -> Result<()> {
    let expect = [("bias", epi.bias, vec![g.co]), ("per_image", epi.per_image, vec![g.n, g.co])];
    for (what, t, dims) in expect.into_iter().chain([("residual", epi.residual, g.y_dims().to_vec())]) {
        let Some(t) = t else { continue };
        if t.dims() != dims.as_slice() {
            bail!(
                "conv2d: {what} must have shape {dims:?} for input {} and weights {}, got {}",
                x.shape(),
                w.shape(),
                t.shape()
            );
        }
        x.check_same_kind(t, "conv2d")?;
    }
    if !epi.scale.is_finite() {
        bail!("conv2d: the epilogue's scale must be finite, got {}", epi.scale);
    }
    Ok(())
}

/// The gradient of y·scale's input: dy · scale (dy itself at scale 1).
fn scaled_gradient(dy: &Tensor, s: f64) -> Result<Tensor> {
    if s == 1.0 {
        Ok(dy.clone())
    } else {
        scale(dy, s)
    }
}

/// The gradients of the epilogue's operands present (in [`Epilogue::operands`] order) from the scaled dy;
/// `need` says which track gradients.
fn epilogue_grads(g: &Geom, dy: &Tensor, need: &Epilogue<bool>) -> Result<Vec<Option<Tensor>>> {
    let q = g.ho * g.wo;
    let mut grads = Vec::new();
    // db[co] = sum of dy over the batch and the output pixels.
    if let Some(need) = need.bias {
        grads.push(if need { Some(reduce::sum_axis_raw(dy, g.n, g.co, q)?) } else { None });
    }
    // d per_image[n, co] = sum of dy over the output pixels.
    if let Some(need) = need.per_image {
        let sums = || reduce::sum_axis_raw(dy, 1, g.n * g.co, q)?.reshape([g.n, g.co]);
        grads.push(if need { Some(sums()?) } else { None });
    }
    if let Some(need) = need.residual {
        grads.push(need.then(|| dy.clone()));
    }
    Ok(grads)
}
