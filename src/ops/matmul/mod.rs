//! Matrix products: `matmul` (a [M, K] @ b [K, N]) and `linear` (x [B, in] @ w[out, in]^T + bias, PyTorch's
//! layout). Both are one primitive, `gemm_raw` = op(A) · op(B) with a transpose flag per operand, so every
//! gradient reads the forward operands in place (no transpose copies):
//!   matmul: dA = dC · B^T, dB = A^T · dC;   linear: dx = dy · W, dW = dy^T · x, dbias = column sums of dy.
pub mod cpu;
pub mod cuda;

use crate::autograd::Node;
use crate::cpu_map2;
use crate::ops::{add_along, compute};
use crate::tensor::Tensor;
use anyhow::{bail, Result};

/// op(A) · op(B) without autograd. A is stored [M, K] or, with `ta`, [K, M]; B is stored [K, N] or, with
/// `tb`, [N, K]. The caller has checked ranks, the inner dimension, dtypes and devices.
pub(crate) fn gemm_raw(a: &Tensor, b: &Tensor, ta: bool, tb: bool) -> Result<Tensor> {
    let (a0, a1) = a.shape().matrix("matmul")?;
    let (b0, b1) = b.shape().matrix("matmul")?;
    let (m, k) = if ta { (a1, a0) } else { (a0, a1) };
    let (kb, n) = if tb { (b1, b0) } else { (b0, b1) };
    if k != kb {
        bail!("matmul: inner dimensions differ ({k} and {kb}) for shapes {} and {}", a.shape(), b.shape());
    }
    compute(
        "matmul",
        &[a, b],
        [m, n],
        |s| Ok(cpu_map2!(s[0], s[1], |x, y| cpu::matmul(x, y, m, k, n, ta, tb))),
        |gpu, s| cuda::matmul(gpu, s[0], s[1], m, k, n, ta, tb),
    )
}

/// a [M, K] @ b [K, N] -> [M, N].
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.check_same_kind(b, "matmul")?;
    if a.shape().rank() != 2 || b.shape().rank() != 2 {
        bail!("matmul: expected two matrices (rank 2), got shapes {} and {}", a.shape(), b.shape());
    }
    if a.dims()[1] != b.dims()[0] {
        bail!(
            "matmul: inner dimensions differ, a {} has {} columns but b {} has {} rows",
            a.shape(),
            a.dims()[1],
            b.shape(),
            b.dims()[0]
        );
    }
    let out = gemm_raw(a, b, false, false)?;
    let (ad, bd) = (a.detach(), b.detach());
    let (need_a, need_b) = (a.tracks_grad(), b.tracks_grad());
    Ok(out.with_node(Node::record("matmul", &[a, b], move |g| {
        let ga = if need_a { Some(gemm_raw(g, &bd, false, true)?) } else { None };
        let gb = if need_b { Some(gemm_raw(&ad, g, true, false)?) } else { None };
        Ok(vec![ga, gb])
    })))
}

/// x [..., in] · w^T + bias with w [out, in] (PyTorch's layout) and bias [out] -> [..., out]. Leading axes
/// of x are flattened into rows (x of rank 2 is the usual [B, in]).
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    x.check_same_kind(w, "linear")?;
    if x.shape().rank() < 2 || w.shape().rank() != 2 {
        bail!("linear: expected x [B, in] and w [out, in], got shapes {} and {}", x.shape(), w.shape());
    }
    let in_f = *x.dims().last().unwrap();
    let (out_f, w_in) = (w.dims()[0], w.dims()[1]);
    if in_f != w_in {
        bail!(
            "linear: x {} has {in_f} input features but w {} (layout [out, in]) expects {w_in}",
            x.shape(),
            w.shape()
        );
    }
    if let Some(b) = bias {
        x.check_same_kind(b, "linear")?;
        if b.shape().rank() != 1 || b.numel() != out_f {
            bail!("linear: bias must have shape [{out_f}] for w {}, got {}", w.shape(), b.shape());
        }
    }
    let rows = x.numel() / in_f.max(1);
    let x2 = if x.shape().rank() == 2 { x.clone() } else { x.reshape([rows, in_f])? };

    let y = gemm_raw(&x2, w, false, true)?;
    let (xd, wd) = (x2.detach(), w.detach());
    let (need_x, need_w) = (x2.tracks_grad(), w.tracks_grad());
    let y = y.with_node(Node::record("linear", &[&x2, w], move |g| {
        let gx = if need_x { Some(gemm_raw(g, &wd, false, false)?) } else { None };
        let gw = if need_w { Some(gemm_raw(g, &xd, true, false)?) } else { None };
        Ok(vec![gx, gw])
    }));
    let y = match bias {
        Some(b) => add_along(&y, b, 1)?,
        None => y,
    };
    if x.shape().rank() == 2 {
        Ok(y)
    } else {
        let mut dims = x.dims().to_vec();
        *dims.last_mut().unwrap() = out_f;
        y.reshape(dims)
    }
}
