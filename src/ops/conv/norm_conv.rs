//! A group norm (+ SiLU) (+ dropout) feeding a convolution, as one op: the U-Nets' GroupNorm → SiLU →
//! (dropout →) conv. On CUDA the convolution normalises its input as it gathers it (kernels/conv.cuh
//! `ConvParams::affine`, `ConvParams::drop`), so the normalised activation is never written, read back, or
//! kept for the backward: the forward reads x, the weight gradient re-applies the normalisation and the mask
//! to x as it reads it (the mask is a function of the element's index and the seed: nothing is stored). The
//! group statistics and the per-channel affine map they make come from one small kernel (norm.cu
//! `group_norm_scale_shift`).
//!
//! The CPU twin normalises into a tensor, masks it and runs the plain convolution on it: its outputs and
//! gradients are bitwise those of `group_norm`, `dropout` and `conv2d_with` in turn (a test holds it).
use super::{check_epilogue, cpu, cuda, dgrad_raw, epilogue_grads, scaled_gradient, Epilogue, Geom, Prologue};
use crate::autograd::Node;
use crate::backend::cpu::Real;
use crate::backend::typed_slices;
use crate::ops::dropout::{self, Mask};
use crate::ops::matmul::cuda::Bf16Gemm;
use crate::ops::norm::{self, Dims};
use crate::ops::{compute, compute_many};
use crate::tensor::{CpuStorage, Shape, Tensor};
use crate::DType;
use anyhow::Result;

/// The group norm in front of the convolution: its parameters gamma, beta [C_in], its group count and eps,
/// whether SiLU follows it, and the dropout mask after that (`dropout::mask`; None for none).
#[derive(Clone, Copy, Debug)]
pub struct InputNorm<'a> {
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub groups: usize,
    pub eps: f64,
    pub silu: bool,
    pub dropout: Option<Mask>,
}

/// conv2d_with(drop(act(group_norm(x))), w, stride, padding, epi) with act SiLU if `norm.silu` and drop
/// `norm.dropout`'s mask (if any), as one op. Gradients flow to x, gamma, beta, w and the epilogue's operands.
pub fn norm_conv2d(
    x: &Tensor,
    norm: InputNorm,
    w: &Tensor,
    stride: usize,
    padding: usize,
    epi: Epilogue<&Tensor>,
) -> Result<Tensor> {
    let InputNorm { gamma, beta, groups, eps, silu, dropout: mask } = norm;
    let d = norm::check(x, gamma, beta, groups, eps)?;
    let g = Geom::new(x.dims(), w.dims(), stride, padding)?;
    x.check_same_kind(w, "norm_conv2d")?;
    check_epilogue(&g, x, w, &epi)?;

    let mut inputs = vec![x, gamma, beta, w];
    inputs.extend(epi.operands().copied());
    let shape = epi.map(|_| ());
    let shapes = vec![Shape::new(&g.y_dims()), Shape::new(&[d.n, d.groups, 2]), Shape::new(&[d.n, d.c, 2])];
    let mut outs = compute_many(
        "norm_conv2d",
        &inputs,
        shapes,
        |s| match s[0].dtype() {
            DType::F64 => fwd_cpu::<f64>(&g, d, eps, (silu, mask), s, &shape),
            _ => fwd_cpu::<f32>(&g, d, eps, (silu, mask), s, &shape),
        },
        |gpu, s| {
            let (stats, affine) = norm::cuda::scale_shift(gpu, s[0], s[1], s[2], d, eps)?;
            let pro = Prologue { affine: &affine, silu, dropout: mask };
            let e = shape.refill(&s[4..]).map(|s| *s);
            let y = cuda::fwd_with(gpu, &g, s[0], s[3], Some(pro), e, Bf16Gemm::selected()?)?;
            Ok(vec![y, stats, affine])
        },
    )?;
    let (affine, stats, y) = (outs.pop().unwrap(), outs.pop().unwrap(), outs.pop().unwrap());

    let (xd, gd, bd, wd) = (x.detach(), gamma.detach(), beta.detach(), w.detach());
    let need_norm = x.tracks_grad() || gamma.tracks_grad() || beta.tracks_grad();
    let need = [x.tracks_grad(), gamma.tracks_grad(), beta.tracks_grad(), w.tracks_grad()];
    let need_epi = epi.map(|t| t.tracks_grad());
    Ok(y.with_node(Node::record("norm_conv2d", &inputs, move |dy| {
        let dy = scaled_gradient(dy, need_epi.scale)?;
        let mut grads = vec![None, None, None];
        if need_norm {
            // the gradient of the convolution's input, back through the mask, then through the norm
            let mut da = dgrad_raw(g, &dy, &wd)?;
            if let Some(m) = mask {
                da = dropout::apply_raw(&da, "bwd", m)?;
            }
            let [dx, dg, db] = norm::backward_raw(&xd, &gd, &bd, &stats, &da, d, silu)?;
            grads = [dx, dg, db].into_iter().zip(need).map(|(t, n)| n.then_some(t)).collect();
        }
        grads.push(if need[3] { Some(wgrad_raw(g, d, (silu, mask), &xd, &affine, &dy)?) } else { None });
        grads.extend(epilogue_grads(&g, &dy, &need_epi)?);
        Ok(grads)
    })))
}

/// SiLU or not, and the dropout mask: what follows the norm's affine map.
type Activation = (bool, Option<Mask>);

/// The convolution's input on the CPU: x through the norm's affine map, the activation and the mask.
fn activation<T: Real>(x: &[T], affine: &[T], d: Dims, (silu, mask): Activation) -> Result<Vec<T>> {
    let a = norm::cpu::apply(x, affine, d, silu);
    match mask {
        Some(m) => dropout::apply_cpu(&a, m, "norm_conv2d"),
        None => Ok(a),
    }
}

/// The CPU forward for x's element type: the norm (and mask) into a tensor, then the convolution on it.
fn fwd_cpu<T: Real>(
    g: &Geom,
    d: Dims,
    eps: f64,
    act: Activation,
    s: &[&CpuStorage],
    epi: &Epilogue<()>,
) -> Result<Vec<CpuStorage>> {
    let v = typed_slices::<T>("norm_conv2d", s)?;
    // norm::cpu::forward's three steps, keeping the map the CUDA backward needs
    let stats = norm::cpu::stats(v[0], d, eps);
    let affine = norm::cpu::scale_shift(&stats, v[1], v[2], d);
    let a = activation(v[0], &affine, d, act)?;
    let y = cpu::fwd(g, &a, v[3], &epi.refill(&v[4..]).map(|s| *s));
    Ok(vec![T::wrap(y), T::wrap(stats), T::wrap(affine)])
}

/// dW from x read through the forward's affine map (and mask) and dy (no autograd); the CPU normalises x
/// again (bitwise the forward's activation: the same map, the same arithmetic, the same mask).
fn wgrad_raw(g: Geom, d: Dims, act: Activation, x: &Tensor, affine: &Tensor, dy: &Tensor) -> Result<Tensor> {
    compute(
        "norm_conv2d_wgrad",
        &[x, affine, dy],
        g.w_dims(),
        |s| match s[0].dtype() {
            DType::F64 => wgrad_cpu::<f64>(&g, d, act, s),
            _ => wgrad_cpu::<f32>(&g, d, act, s),
        },
        |gpu, s| {
            let pro = Prologue { affine: s[1], silu: act.0, dropout: act.1 };
            cuda::wgrad_with(gpu, &g, s[0], Some(pro), s[2], Bf16Gemm::selected()?)
        },
    )
}

fn wgrad_cpu<T: Real>(g: &Geom, d: Dims, act: Activation, s: &[&CpuStorage]) -> Result<CpuStorage> {
    let v = typed_slices::<T>("norm_conv2d backward", s)?;
    Ok(T::wrap(cpu::wgrad(g, &activation(v[0], v[1], d, act)?, v[2])))
}
