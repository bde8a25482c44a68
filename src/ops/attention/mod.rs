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
use crate::ops::compute;
use crate::tensor::{CpuStorage, Storage, Tensor};
use anyhow::{bail, Result};
use std::cell::RefCell;

/// CPU element types, for pulling typed slices out of several storages at once.
trait CpuElem: crate::backend::cpu::Real {
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    fn wrap(v: Vec<Self>) -> CpuStorage;
}
impl CpuElem for f32 {
    fn slice(s: &CpuStorage) -> Option<&[f32]> {
        match s {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
    fn wrap(v: Vec<f32>) -> CpuStorage {
        CpuStorage::F32(v)
    }
}
impl CpuElem for f64 {
    fn slice(s: &CpuStorage) -> Option<&[f64]> {
        match s {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
    fn wrap(v: Vec<f64>) -> CpuStorage {
        CpuStorage::F64(v)
    }
}

fn slices<'a, T: CpuElem>(op: &str, s: &[&'a CpuStorage]) -> Result<Vec<&'a [T]>> {
    s.iter()
        .map(|x| T::slice(x).ok_or_else(|| anyhow::anyhow!("{op}: inputs of different dtypes ({})", x.dtype())))
        .collect()
}

fn cpu_forward<T: CpuElem>(s: &[&CpuStorage], dims: Dims) -> Result<(CpuStorage, CpuStorage)> {
    let x = slices::<T>("attention", s)?;
    let (o, l) = cpu::forward(x[0], x[1], x[2], dims);
    Ok((T::wrap(o), T::wrap(l)))
}

fn cpu_backward<T: CpuElem>(s: &[&CpuStorage], dims: Dims) -> Result<[CpuStorage; 3]> {
    let x = slices::<T>("attention backward", s)?;
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
    // `compute` returns one tensor; the log-sum-exp rides along in this cell.
    let lse_cell: RefCell<Option<Storage>> = RefCell::new(None);
    let out = compute(
        "attention",
        &[q, k, v],
        q.shape().clone(),
        |s| {
            let (o, l) = match s[0] {
                CpuStorage::F32(_) => cpu_forward::<f32>(s, dims)?,
                CpuStorage::F64(_) => cpu_forward::<f64>(s, dims)?,
            };
            *lse_cell.borrow_mut() = Some(Storage::Cpu(l));
            Ok(o)
        },
        |gpu, s| {
            let (o, l) = cuda::forward(gpu, s[0], s[1], s[2], dims)?;
            *lse_cell.borrow_mut() = Some(Storage::Cuda(l));
            Ok(o)
        },
    )?;
    let lse_storage = lse_cell.into_inner().expect("the forward stores the log-sum-exp");
    let lse = Tensor::from_storage(lse_storage, [dims.batch, dims.heads, dims.tokens], q.device().clone())?;

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
    let rest: RefCell<Option<[Storage; 2]>> = RefCell::new(None);
    let dq = compute(
        "attention backward",
        &[q, k, v, o, g, lse],
        q.shape().clone(),
        |s| {
            let [dq, dk, dv] = match s[0] {
                CpuStorage::F32(_) => cpu_backward::<f32>(s, dims)?,
                CpuStorage::F64(_) => cpu_backward::<f64>(s, dims)?,
            };
            *rest.borrow_mut() = Some([Storage::Cpu(dk), Storage::Cpu(dv)]);
            Ok(dq)
        },
        |gpu, s| {
            let [dq, dk, dv] = cuda::backward(gpu, s[0], s[1], s[2], s[3], s[4], s[5], dims)?;
            *rest.borrow_mut() = Some([Storage::Cuda(dk), Storage::Cuda(dv)]);
            Ok(dq)
        },
    )?;
    let [dk, dv] = rest.into_inner().expect("the backward stores dk and dv");
    let dk = Tensor::from_storage(dk, q.shape().clone(), q.device().clone())?;
    let dv = Tensor::from_storage(dv, q.shape().clone(), q.device().clone())?;
    Ok([dq, dk, dv])
}
