//! A 1-D tensor applied along one axis: per-channel bias and scale (axis 1 of NCHW), per-example scale
//! (axis 0), linear bias (axis 1 of [rows, features]). The only broadcasting gsure does, and only on request.
pub mod cpu;
pub mod cuda;

use crate::autograd::Node;
use crate::ops::{compute, mul, reduce};
use crate::tensor::{Shape, Tensor};
use crate::{cpu_map, cpu_map2};
use anyhow::{bail, Result};

fn check(op: &str, x: &Tensor, s: &Tensor, axis: usize) -> Result<(usize, usize, usize)> {
    x.check_same_kind(s, op)?;
    if axis >= x.shape().rank() {
        bail!("{op}: axis {axis} out of range for shape {}", x.shape());
    }
    if s.shape().rank() != 1 || s.numel() != x.dims()[axis] {
        bail!(
            "{op}: expected a vector of length {} (axis {axis} of {}), got shape {}",
            x.dims()[axis],
            x.shape(),
            s.shape()
        );
    }
    Ok(x.shape().split_at_axis(axis))
}

fn along_raw(name: &'static str, x: &Tensor, s: &Tensor, axis: usize) -> Result<Tensor> {
    let (outer, mid, inner) = check(name, x, s, axis)?;
    compute(
        name,
        &[x, s],
        x.shape().clone(),
        |st| {
            Ok(cpu_map2!(st[0], st[1], |xv, sv| if name == "add_along" {
                cpu::along(xv, sv, mid, inner, |a, b| a + b)
            } else {
                cpu::along(xv, sv, mid, inner, |a, b| a * b)
            }))
        },
        |gpu, st| cuda::along(gpu, name, st[0], st[1], outer, mid, inner),
    )
}

/// A vector `s` of length dims[axis] expanded to `shape` (no autograd; used by backward passes).
pub(crate) fn expand_raw(s: &Tensor, shape: &Shape, axis: usize) -> Result<Tensor> {
    let (outer, mid, inner) = shape.split_at_axis(axis);
    if s.numel() != mid {
        bail!("expand: vector of {} elements for axis {axis} of {shape}", s.numel());
    }
    compute(
        "expand",
        &[s],
        shape.clone(),
        |st| Ok(cpu_map!(st[0], |sv| cpu::expand(sv, outer, mid, inner))),
        |gpu, st| cuda::expand(gpu, st[0], outer, mid, inner),
    )
}

/// x + s broadcast along `axis` (s has shape [dims[axis]]): a bias.
pub fn add_along(x: &Tensor, s: &Tensor, axis: usize) -> Result<Tensor> {
    let out = along_raw("add_along", x, s, axis)?;
    Ok(out.with_node(Node::record("add_along", &[x, s], move |g| {
        Ok(vec![Some(g.clone()), Some(reduce::sum_except(g, axis)?)])
    })))
}

/// x ⊙ s broadcast along `axis`: a per-channel or per-example scale.
pub fn mul_along(x: &Tensor, s: &Tensor, axis: usize) -> Result<Tensor> {
    let out = along_raw("mul_along", x, s, axis)?;
    let (xd, sd) = (x.detach(), s.detach());
    let (need_x, need_s) = (x.tracks_grad(), s.tracks_grad());
    Ok(out.with_node(Node::record("mul_along", &[x, s], move |g| {
        let gx = if need_x { Some(along_raw("mul_along", g, &sd, axis)?) } else { None };
        let gs = if need_s { Some(reduce::sum_except(&mul(g, &xd)?, axis)?) } else { None };
        Ok(vec![gx, gs])
    })))
}
