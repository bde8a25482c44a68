//! Losses of the diffusion objectives. `masked_mse` is the per-example weighted squared error that every
//! objective reduces to: the weight carries the observation mask times the W² weighting.
pub mod cpu;
pub mod cuda;

use crate::autograd::Node;
use crate::ops::{compute, compute_many};
use crate::tensor::{CpuStorage, Tensor};
use crate::{cpu_map, cpu_map3};
use anyhow::{bail, Result};

/// (rows, elements per row) after checking that the three tensors agree.
fn check(pred: &Tensor, target: &Tensor, weight: &Tensor) -> Result<(usize, usize)> {
    pred.check_same(target, "masked_mse (pred against target)")?;
    pred.check_same(weight, "masked_mse (pred against weight)")?;
    if pred.shape().rank() == 0 || pred.numel() == 0 {
        bail!("masked_mse: expected non-empty tensors [N, ...], got shape {}", pred.shape());
    }
    let rows = pred.dims()[0];
    Ok((rows, pred.numel() / rows))
}

/// Per-example weighted mean squared error of [N, ...] tensors of one shape: loss [N] with
/// loss_n = (1/m) sum_i weight[n, i] (pred[n, i] - target[n, i])², m = elements per example.
/// Gradients flow to pred and target; weight is treated as a constant.
pub fn masked_mse(pred: &Tensor, target: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let (rows, m) = check(pred, target, weight)?;
    let loss = compute(
        "masked_mse",
        &[pred, target, weight],
        [rows],
        |s| Ok(cpu_map3!(s[0], s[1], s[2], |p, t, w| cpu::masked_mse(p, t, w, m))),
        |gpu, s| cuda::masked_mse_fwd(gpu, s[0], s[1], s[2], rows, m),
    )?;
    let (pd, td, wd) = (pred.detach(), target.detach(), weight.detach());
    let (need_p, need_t) = (pred.tracks_grad(), target.tracks_grad());
    Ok(loss.with_node(Node::record("masked_mse", &[pred, target], move |g| {
        let (dp, dt) = backward_raw(&pd, &td, &wd, g, rows, m, need_p, need_t)?;
        Ok(vec![dp, dt])
    })))
}

/// Both input gradients from one pass over pred, target and weight. `compute` makes one tensor; the
/// second output (dtarget when both are wanted) is handed out of the closures and wrapped here.
#[allow(clippy::too_many_arguments)]
fn backward_raw(
    p: &Tensor,
    t: &Tensor,
    w: &Tensor,
    g: &Tensor,
    rows: usize,
    m: usize,
    need_p: bool,
    need_t: bool,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    if !need_p && !need_t {
        return Ok((None, None));
    }
    let wanted = need_p as usize + need_t as usize;
    let mut grads = compute_many(
        "masked_mse",
        &[p, t, w, g],
        vec![p.shape().clone(); wanted],
        |s| {
            let dp = match (s[0], s[1], s[2], s[3]) {
                (CpuStorage::F32(p), CpuStorage::F32(t), CpuStorage::F32(w), CpuStorage::F32(g)) => {
                    CpuStorage::F32(cpu::masked_mse_bwd(p, t, w, g, m))
                }
                (CpuStorage::F64(p), CpuStorage::F64(t), CpuStorage::F64(w), CpuStorage::F64(g)) => {
                    CpuStorage::F64(cpu::masked_mse_bwd(p, t, w, g, m))
                }
                _ => bail!(
                    "masked_mse: backward got a gradient of dtype {} for inputs of dtype {}",
                    s[3].dtype(),
                    s[0].dtype()
                ),
            };
            let neg = |d: &CpuStorage| cpu_map!(d, |v| v.iter().map(|&x| -x).collect());
            Ok(match (need_p, need_t) {
                (true, true) => vec![neg(&dp), dp].into_iter().rev().collect(),
                (true, false) => vec![dp],
                _ => vec![neg(&dp)],
            })
        },
        |gpu, s| {
            let (dp, dt) = cuda::masked_mse_bwd(gpu, s[0], s[1], s[2], s[3], rows, m, need_p, need_t)?;
            Ok(dp.into_iter().chain(dt).collect())
        },
    )?;
    let second = if wanted == 2 { grads.pop() } else { None };
    let first = grads.pop().expect("one gradient is needed");
    Ok(if need_p { (Some(first), second) } else { (None, Some(first)) })
}
