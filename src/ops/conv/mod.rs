//! 2-D convolution (NCHW, square kernel, symmetric zero padding, equal strides) with gradients for the
//! input, the weights and the bias. CPU: im2col + GEMM (`cpu.rs`); CUDA: implicit GEMM without an im2col
//! buffer (`cuda.rs`, `kernels/conv.cu`).
pub mod cpu;
pub mod cuda;
mod pixel_major;

use crate::autograd::Node;
use crate::ops::{compute, reduce};
use crate::tensor::Tensor;
use crate::{cpu_map2, cpu_map3};
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

/// Forward without autograd.
fn conv2d_raw(g: Geom, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let mut inputs = vec![x, w];
    inputs.extend(bias);
    compute(
        "conv2d",
        &inputs,
        g.y_dims(),
        |s| {
            Ok(match s.get(2) {
                Some(b) => cpu_map3!(s[0], s[1], *b, |x, w, b| cpu::fwd(&g, x, w, Some(b))),
                None => cpu_map2!(s[0], s[1], |x, w| cpu::fwd(&g, x, w, None)),
            })
        },
        |gpu, s| cuda::fwd(gpu, &g, s[0], s[1], s.get(2).copied()),
    )
}

/// dx from dy and the weights (no autograd).
fn dgrad_raw(g: Geom, dy: &Tensor, w: &Tensor) -> Result<Tensor> {
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
    let g = Geom::new(x.dims(), w.dims(), stride, padding)?;
    x.check_same_kind(w, "conv2d")?;
    if let Some(b) = bias {
        if b.dims() != [g.co] {
            bail!(
                "conv2d: bias must have shape [{}] for weights {}, got {} (input {})",
                g.co,
                w.shape(),
                b.shape(),
                x.shape()
            );
        }
        x.check_same_kind(b, "conv2d")?;
    }
    let y = conv2d_raw(g, x, w, bias)?;

    let mut inputs = vec![x, w];
    inputs.extend(bias);
    let (xd, wd) = (x.detach(), w.detach());
    let need = [x.tracks_grad(), w.tracks_grad(), bias.is_some_and(|b| b.tracks_grad())];
    let has_bias = bias.is_some();
    Ok(y.with_node(Node::record("conv2d", &inputs, move |dy| {
        let dx = if need[0] { Some(dgrad_raw(g, dy, &wd)?) } else { None };
        let dw = if need[1] { Some(wgrad_raw(g, &xd, dy)?) } else { None };
        let mut grads = vec![dx, dw];
        if has_bias {
            // db[co] = sum of dy over the batch and the output pixels.
            grads.push(if need[2] { Some(reduce::sum_axis_raw(dy, g.n, g.co, g.ho * g.wo)?) } else { None });
        }
        Ok(grads)
    })))
}
