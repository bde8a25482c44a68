//! Group normalisation with an optional fused SiLU (the U-Net's `GroupNorm -> SiLU` pair in one pass):
//! x [N, C, ...spatial] (rank >= 2), gamma/beta [C];
//! y = (x - mean_g) / sqrt(var_g + eps) * gamma + beta, then SiLU if asked, with PyTorch's GroupNorm semantics
//! (statistics per example and group of C / groups channels, biased variance).
//! The forward saves (mean, rstd) per (n, g) (f32 on CUDA); the backward recomputes the pre-activation from x
//! and those statistics instead of storing it.
pub mod cpu;
pub mod cuda;

use crate::autograd::Node;
use crate::backend::cpu::Real;
use crate::backend::typed_slices;
use crate::ops::compute_many;
use crate::tensor::{CpuStorage, Shape, Tensor};
use crate::DType;
use anyhow::{bail, Result};
pub use cpu::Dims;

pub(crate) fn check(x: &Tensor, gamma: &Tensor, beta: &Tensor, groups: usize, eps: f64) -> Result<Dims> {
    x.check_same_kind(gamma, "group_norm")?;
    x.check_same_kind(beta, "group_norm")?;
    if x.shape().rank() < 2 {
        bail!("group_norm: expected x of shape [N, C, ...spatial] (rank >= 2), got {}", x.shape());
    }
    let (n, c) = (x.dims()[0], x.dims()[1]);
    for (name, t) in [("gamma", gamma), ("beta", beta)] {
        if t.shape().rank() != 1 || t.numel() != c {
            bail!("group_norm: {name} must have shape [{c}] for x {}, got {}", x.shape(), t.shape());
        }
    }
    if groups == 0 || c % groups != 0 {
        bail!("group_norm: {c} channels of x {} do not split into {groups} equal groups", x.shape());
    }
    if eps.is_nan() || eps <= 0.0 || eps.is_infinite() {
        bail!("group_norm: eps must be positive and finite, got {eps}");
    }
    Ok(Dims { n, c, groups, spatial: x.dims()[2..].iter().product() })
}

/// Group norm of x [N, C, ...spatial] with per-channel gamma and beta [C], then SiLU if `silu`.
/// Gradients flow to x, gamma and beta.
pub fn group_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, groups: usize, eps: f64, silu: bool) -> Result<Tensor> {
    let d = check(x, gamma, beta, groups, eps)?;
    let mut outs = compute_many(
        "group_norm",
        &[x, gamma, beta],
        vec![x.shape().clone(), Shape::new(&[d.n, d.groups, 2])],
        |s| match s[0].dtype() {
            DType::F64 => forward_cpu::<f64>(s, d, eps, silu),
            _ => forward_cpu::<f32>(s, d, eps, silu),
        },
        |gpu, s| {
            let (y, st) = cuda::forward(gpu, s[0], s[1], s[2], d, eps, silu)?;
            Ok(vec![y, st])
        },
    )?;
    let stats = outs.pop().unwrap();
    let y = outs.pop().unwrap();
    let (xd, gd, bd) = (x.detach(), gamma.detach(), beta.detach());
    let (need_g, need_b) = (gamma.tracks_grad(), beta.tracks_grad());
    Ok(y.with_node(Node::record("group_norm", &[x, gamma, beta], move |dy| {
        let [dx, dg, db] = backward_raw(&xd, &gd, &bd, &stats, dy, d, silu)?;
        Ok(vec![Some(dx), if need_g { Some(dg) } else { None }, if need_b { Some(db) } else { None }])
    })))
}

/// (dx, dgamma, dbeta) of the group norm of x from the forward's stats and dy (no autograd).
pub(crate) fn backward_raw(
    xd: &Tensor,
    gd: &Tensor,
    bd: &Tensor,
    stats: &Tensor,
    dy: &Tensor,
    d: Dims,
    silu: bool,
) -> Result<[Tensor; 3]> {
    let grads = compute_many(
        "group_norm",
        &[xd, gd, bd, stats, dy],
        vec![xd.shape().clone(), gd.shape().clone(), bd.shape().clone()],
        |s| match s[0].dtype() {
            DType::F64 => backward_cpu::<f64>(s, d, silu),
            _ => backward_cpu::<f32>(s, d, silu),
        },
        |gpu, s| {
            let (dx, dg, db) = cuda::backward(gpu, s[0], s[1], s[2], s[3], s[4], d, silu)?;
            Ok(vec![dx, dg, db])
        },
    )?;
    let mut it = grads.into_iter();
    match (it.next(), it.next(), it.next()) {
        (Some(dx), Some(dg), Some(db)) => Ok([dx, dg, db]),
        _ => unreachable!("compute_many returns one tensor per shape"),
    }
}

/// The CPU forward for x's element type: [y, stats].
fn forward_cpu<T: Real>(s: &[&CpuStorage], d: Dims, eps: f64, silu: bool) -> Result<Vec<CpuStorage>> {
    let v = typed_slices::<T>("group_norm", s)?;
    let (y, st) = cpu::forward(v[0], v[1], v[2], d, eps, silu);
    Ok(vec![T::wrap(y), T::wrap(st)])
}

/// The CPU backward for x's element type from [x, gamma, beta, stats, dy]: [dx, dgamma, dbeta].
fn backward_cpu<T: Real>(s: &[&CpuStorage], d: Dims, silu: bool) -> Result<Vec<CpuStorage>> {
    let v = typed_slices::<T>("group_norm backward", s)?;
    let (dx, dg, db) = cpu::backward(v[0], v[1], v[2], v[3], v[4], d, silu);
    Ok(vec![T::wrap(dx), T::wrap(dg), T::wrap(db)])
}
