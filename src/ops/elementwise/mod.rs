//! Pointwise ops: add, sub, mul (same shapes only), affine/scale, SiLU, sigmoid, exp, square, where.
pub mod cpu;
pub mod cuda;

use crate::autograd::Node;
use crate::ops::compute;
use crate::tensor::Tensor;
use crate::{cpu_map, cpu_map2, cpu_map3};
use anyhow::Result;

/// Pointwise functions with a kernel pair `<name>_{fwd,bwd}_<dtype>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unary {
    Silu,
    Sigmoid,
    Exp,
    Square,
}

impl Unary {
    pub fn name(self) -> &'static str {
        match self {
            Unary::Silu => "silu",
            Unary::Sigmoid => "sigmoid",
            Unary::Exp => "exp",
            Unary::Square => "square",
        }
    }
}

fn unary(op: Unary, x: &Tensor) -> Result<Tensor> {
    let y = compute(
        op.name(),
        &[x],
        x.shape().clone(),
        |s| Ok(cpu_map!(s[0], |v| cpu::unary_fwd(op, v))),
        |gpu, s| cuda::unary_fwd(gpu, op, s[0]),
    )?;
    let (xs, ys) = (x.detach(), y.detach());
    Ok(y.with_node(Node::record(op.name(), &[x], move |g| {
        let dx = compute(
            op.name(),
            &[&xs, &ys, g],
            xs.shape().clone(),
            |s| Ok(cpu_map3!(s[0], s[1], s[2], |x, y, dy| cpu::unary_bwd(op, x, y, dy))),
            |gpu, s| cuda::unary_bwd(gpu, op, s[0], s[1], s[2]),
        )?;
        Ok(vec![Some(dx)])
    })))
}

pub fn silu(x: &Tensor) -> Result<Tensor> {
    unary(Unary::Silu, x)
}
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    unary(Unary::Sigmoid, x)
}
pub fn exp(x: &Tensor) -> Result<Tensor> {
    unary(Unary::Exp, x)
}
pub fn square(x: &Tensor) -> Result<Tensor> {
    unary(Unary::Square, x)
}

fn binary_raw(name: &'static str, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.check_same(b, name)?;
    compute(
        name,
        &[a, b],
        a.shape().clone(),
        |s| {
            Ok(cpu_map2!(s[0], s[1], |x, y| match name {
                "add" => cpu::zip(x, y, |p, q| p + q),
                "sub" => cpu::zip(x, y, |p, q| p - q),
                _ => cpu::zip(x, y, |p, q| p * q),
            }))
        },
        |gpu, s| cuda::binary(gpu, name, s[0], s[1]),
    )
}

/// a + b (same shape, dtype and device).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let out = binary_raw("add", a, b)?;
    Ok(out.with_node(Node::record("add", &[a, b], |g| Ok(vec![Some(g.clone()), Some(g.clone())]))))
}

/// a - b (same shape, dtype and device).
pub fn sub(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let out = binary_raw("sub", a, b)?;
    Ok(out.with_node(Node::record("sub", &[a, b], |g| Ok(vec![Some(g.clone()), Some(scale(g, -1.0)?)]))))
}

/// a ⊙ b (same shape, dtype and device). With a 0/1 `b` this is the mask multiply.
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let out = binary_raw("mul", a, b)?;
    let (ad, bd) = (a.detach(), b.detach());
    let (need_a, need_b) = (a.tracks_grad(), b.tracks_grad());
    Ok(out.with_node(Node::record("mul", &[a, b], move |g| {
        let ga = if need_a { Some(binary_raw("mul", g, &bd)?) } else { None };
        let gb = if need_b { Some(binary_raw("mul", g, &ad)?) } else { None };
        Ok(vec![ga, gb])
    })))
}

/// alpha * x + beta, with host scalars.
pub fn affine(x: &Tensor, alpha: f64, beta: f64) -> Result<Tensor> {
    let y = compute(
        "affine",
        &[x],
        x.shape().clone(),
        |s| Ok(cpu_map!(s[0], |v| cpu::affine(v, alpha, beta))),
        |gpu, s| cuda::affine(gpu, s[0], alpha, beta),
    )?;
    Ok(y.with_node(Node::record("affine", &[x], move |g| Ok(vec![Some(scale(g, alpha)?)]))))
}

/// alpha * x.
pub fn scale(x: &Tensor, alpha: f64) -> Result<Tensor> {
    affine(x, alpha, 0.0)
}

fn where_raw(mask: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    mask.check_same(a, "where")?;
    a.check_same(b, "where")?;
    compute(
        "where",
        &[mask, a, b],
        a.shape().clone(),
        |s| Ok(cpu_map3!(s[0], s[1], s[2], |m, x, y| cpu::where_(m, x, y))),
        |gpu, s| cuda::where_(gpu, s[0], s[1], s[2]),
    )
}

/// Elementwise `mask != 0 ? a : b`. The mask gets no gradient.
pub fn where_(mask: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let out = where_raw(mask, a, b)?;
    let m = mask.detach();
    Ok(out.with_node(Node::record("where", &[a, b], move |g| {
        let zero = Tensor::zeros(g.shape().clone(), g.dtype(), g.device())?;
        Ok(vec![Some(where_raw(&m, g, &zero)?), Some(where_raw(&m, &zero, g)?)])
    })))
}
