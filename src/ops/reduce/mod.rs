//! Sums: over everything, per example, or over every axis but one (the shared primitive `sum_axis`).
pub mod cpu;
pub mod cuda;

use crate::autograd::Node;
use crate::cpu_map;
use crate::ops::{broadcast, compute, scale};
use crate::tensor::{Shape, Tensor};
use anyhow::{bail, Result};

/// Sums x viewed as [outer, mid, inner] over outer and inner; the result has shape [mid].
pub(crate) fn sum_axis_raw(x: &Tensor, outer: usize, mid: usize, inner: usize) -> Result<Tensor> {
    compute(
        "sum_axis",
        &[x],
        [mid],
        |s| Ok(cpu_map!(s[0], |v| cpu::sum_axis(v, outer, mid, inner))),
        |gpu, s| cuda::sum_axis(gpu, s[0], outer, mid, inner),
    )
}

/// Sums over every axis except `axis`: shape [dims[axis]]. Backward expands the gradient back.
pub fn sum_except(x: &Tensor, axis: usize) -> Result<Tensor> {
    if axis >= x.shape().rank() {
        bail!("sum_except: axis {axis} out of range for shape {}", x.shape());
    }
    let (outer, mid, inner) = x.shape().split_at_axis(axis);
    let out = sum_axis_raw(x, outer, mid, inner)?;
    let shape = x.shape().clone();
    Ok(out
        .with_node(Node::record("sum_except", &[x], move |g| Ok(vec![Some(broadcast::expand_raw(g, &shape, axis)?)]))))
}

/// Sum of all elements, shape [1].
pub fn sum_all(x: &Tensor) -> Result<Tensor> {
    let flat = x.reshape(Shape::new(&[1, x.numel()]))?;
    sum_except(&flat, 0)
}

/// Mean of all elements, shape [1].
pub fn mean_all(x: &Tensor) -> Result<Tensor> {
    scale(&sum_all(x)?, 1.0 / x.numel() as f64)
}

/// Per-example sums of an [N, ...] tensor, shape [N].
pub fn sum_per_example(x: &Tensor) -> Result<Tensor> {
    if x.shape().rank() == 0 {
        bail!("sum_per_example: needs a batch axis, got shape {}", x.shape());
    }
    sum_except(x, 0)
}
