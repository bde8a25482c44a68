//! Multi-head self-attention over the H*W tokens of a feature map, in the channel-first layout that 1x1
//! convolutions give: q, k, v are [B, C, T] (T = H*W), head h uses channels h*D..(h+1)*D with D = C/heads,
//! and out[b, h*D+d, i] = sum_j softmax_j(q_i·k_j / sqrt(D)) v[b, h*D+d, j].
//!
//! The forward also produces the log-sum-exp of every query row ([B, heads, T]; f32 on CUDA, the input's
//! dtype on the CPU), which the backward captures to rebuild the probabilities tile by tile: the CUDA
//! kernels never materialise the T×T matrix (flash attention).
pub mod cpu;
pub mod cuda;

pub use cpu::Dims;

use crate::autograd::Node;
use crate::backend::cpu::Real;
use crate::backend::typed_slices;
use crate::ops::compute_many;
use crate::tensor::{CpuStorage, Tensor};
use crate::Shape;
use anyhow::{bail, Result};

fn cpu_forward<T: Real>(s: &[&CpuStorage], dims: Dims) -> Result<(CpuStorage, CpuStorage)> {
    let x = typed_slices::<T>("attention", s)?;
    let (o, l) = cpu::forward(x[0], x[1], x[2], dims);
    Ok((T::wrap(o), T::wrap(l)))
}

fn cpu_backward<T: Real>(s: &[&CpuStorage], dims: Dims) -> Result<[CpuStorage; 3]> {
    let x = typed_slices::<T>("attention backward", s)?;
    let (dq, dk, dv) = cpu::backward(x[0], x[1], x[2], x[3], x[4], x[5], dims);
    Ok([T::wrap(dq), T::wrap(dk), T::wrap(dv)])
}

/// Checks shapes, dtypes and devices; returns the sizes.
fn validate(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Dims> {
    if q.shape().rank() != 3 {
        bail!("attention: q must be [B, C, T] (T = H*W), got shape {}", q.shape());
    }
    for (name, x) in [("k", k), ("v", v)] {
        if x.shape() != q.shape() {
            bail!("attention: {name} has shape {} but q has shape {}; q, k and v must agree", x.shape(), q.shape());
        }
        q.check_same_kind(x, "attention")?;
    }
    let (b, c, t) = (q.dims()[0], q.dims()[1], q.dims()[2]);
    if b == 0 || c == 0 || t == 0 {
        bail!("attention: empty input of shape {}", q.shape());
    }
    if heads == 0 || c % heads != 0 {
        bail!("attention: {c} channels (q shape {}) are not divisible into heads = {heads}", q.shape());
    }
    Ok(Dims { batch: b, channels: c, tokens: t, heads })
}

/// Multi-head self-attention, see the module docs. Gradients flow to q, k and v.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
    let dims = validate(q, k, v, heads)?;
    let lse_shape = Shape::new(&[dims.batch, dims.heads, dims.tokens]);
    let mut outs = compute_many(
        "attention",
        &[q, k, v],
        vec![q.shape().clone(), lse_shape],
        |s| {
            let (o, l) = match s[0] {
                CpuStorage::F32(_) => cpu_forward::<f32>(s, dims)?,
                CpuStorage::F64(_) => cpu_forward::<f64>(s, dims)?,
            };
            Ok(vec![o, l])
        },
        |gpu, s| {
            let (o, l) = cuda::forward(gpu, s[0], s[1], s[2], dims)?;
            Ok(vec![o, l])
        },
    )?;
    let lse = outs.pop().expect("two outputs");
    let out = outs.pop().expect("two outputs");

    let (qd, kd, vd, od) = (q.detach(), k.detach(), v.detach(), out.detach());
    Ok(out.with_node(Node::record("attention", &[q, k, v], move |g| {
        let [dq, dk, dv] = backward_raw(&qd, &kd, &vd, &od, g, &lse, dims)?;
        Ok(vec![Some(dq), Some(dk), Some(dv)])
    })))
}

/// The three input gradients from the saved tensors (non-recording).
fn backward_raw(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    o: &Tensor,
    g: &Tensor,
    lse: &Tensor,
    dims: Dims,
) -> Result<[Tensor; 3]> {
    o.check_same(g, "attention backward")?;
    let shape = q.shape().clone();
    let grads = compute_many(
        "attention backward",
        &[q, k, v, o, g, lse],
        vec![shape.clone(), shape.clone(), shape],
        |s| {
            let [dq, dk, dv] = match s[0] {
                CpuStorage::F32(_) => cpu_backward::<f32>(s, dims)?,
                CpuStorage::F64(_) => cpu_backward::<f64>(s, dims)?,
            };
            Ok(vec![dq, dk, dv])
        },
        |gpu, s| Ok(cuda::backward(gpu, s[0], s[1], s[2], s[3], s[4], s[5], dims)?.into()),
    )?;
    let [dq, dk, dv]: [Tensor; 3] =
        grads.try_into().map_err(|_| anyhow::anyhow!("attention backward: three gradients"))?;
    Ok([dq, dk, dv])
}
