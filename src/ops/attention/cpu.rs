//! CPU twin of kernels/attention.cu: per (batch, head), explicit scores, a numerically stable softmax and the
//! weighted sum of values, each product a GEMM; the backward rebuilds the probabilities from the saved
//! log-sum-exp per query row.
//! Parallel over (batch, head) with rayon. Layout: [B, C, T] channel-first, head h owns channels h*D..(h+1)*D,
//! so one (b, h) block is the contiguous slice [(b*C + h*D)*T, (b*C + (h+1)*D)*T).
use crate::backend::cpu::{lane_sum, Real};
use rayon::prelude::*;

/// Sizes of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub batch: usize,
    pub channels: usize,
    pub tokens: usize,
    pub heads: usize,
}

impl Dims {
    pub fn head_dim(&self) -> usize {
        self.channels / self.heads
    }
    pub fn scale(&self) -> f64 {
        1.0 / (self.head_dim() as f64).sqrt()
    }
    /// Elements of one (b, h) block of a [B, C, T] tensor.
    fn block(&self) -> usize {
        self.head_dim() * self.tokens
    }
}

/// A row-major [rows, cols] matrix as a GEMM operand (slice, row stride, column stride) ...
fn mat<T>(x: &[T], cols: usize) -> (&[T], isize, isize) {
    (x, cols as isize, 1)
}

/// ... and its transpose, read with swapped strides (no copy).
fn mat_t<T>(x: &[T], cols: usize) -> (&[T], isize, isize) {
    (x, 1, cols as isize)
}

/// S = scale Qᵀ K for one (b, h) block: S[i][j] = scale Σ_c q[c][i] k[c][j], a row-major [T, T] matrix.
fn scores<T: Real>(q: &[T], k: &[T], d: usize, t: usize, scale: T) -> Vec<T> {
    let mut s = vec![T::zero(); t * t];
    T::gemm(t, d, t, mat_t(q, t), mat(k, t), T::zero(), (&mut s, t as isize, 1));
    s.iter_mut().for_each(|v| *v *= scale);
    s
}

/// Forward: returns (out [B, C, T], lse [B, heads, T]) with lse[i] = log sum_j exp(scale * q_i·k_j).
pub fn forward<T: Real>(q: &[T], k: &[T], v: &[T], dims: Dims) -> (Vec<T>, Vec<T>) {
    let (d, t, blk) = (dims.head_dim(), dims.tokens, dims.block());
    let scale = T::of(dims.scale());
    let mut out = vec![T::zero(); q.len()];
    let mut lse = vec![T::zero(); dims.batch * dims.heads * t];
    out.par_chunks_mut(blk).zip(lse.par_chunks_mut(t)).enumerate().for_each(|(bh, (o, l))| {
        let range = bh * blk..(bh + 1) * blk;
        let mut p = scores(&q[range.clone()], &k[range.clone()], d, t, scale);
        // a numerically stable softmax per query row i, remembering its log-sum-exp
        for (row, li) in p.chunks_mut(t).zip(l.iter_mut()) {
            let m = row.iter().copied().fold(T::neg_infinity(), T::max);
            row.iter_mut().for_each(|v| *v = (*v - m).exp_v());
            let sum = lane_sum(row, |v| v);
            row.iter_mut().for_each(|v| *v = *v / sum);
            *li = m + sum.ln();
        }
        // O = V Pᵀ: o[c][i] = Σ_j v[c][j] P[i][j], written channel-first as the layout wants
        T::gemm(d, t, t, mat(&v[range], t), mat_t(&p, t), T::zero(), (o, t as isize, 1));
    });
    (out, lse)
}

/// Backward from the saved statistics: with P_ij = exp(scale q_i·k_j - lse_i), dP = dO·V^T,
/// dS = P ⊙ (dP - rowsum(dO ⊙ O)): dQ = scale dS K, dK = scale dS^T Q, dV = P^T dO. Returns (dq, dk, dv).
/// In the channel-first blocks these are GEMMs: dP = dOᵀ V, dq = scale K dSᵀ, dk = scale Q dS, dv = dO P.
#[allow(clippy::too_many_arguments)]
pub fn backward<T: Real>(
    q: &[T],
    k: &[T],
    v: &[T],
    o: &[T],
    dout: &[T],
    lse: &[T],
    dims: Dims,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (d, t, blk) = (dims.head_dim(), dims.tokens, dims.block());
    let scale = T::of(dims.scale());
    let mut dq = vec![T::zero(); q.len()];
    let mut dk = vec![T::zero(); q.len()];
    let mut dv = vec![T::zero(); q.len()];
    dq.par_chunks_mut(blk).zip(dk.par_chunks_mut(blk)).zip(dv.par_chunks_mut(blk)).enumerate().for_each(
        |(bh, ((dqb, dkb), dvb))| {
            let range = bh * blk..(bh + 1) * blk;
            let (qb, kb, vb, ob, dob) =
                (&q[range.clone()], &k[range.clone()], &v[range.clone()], &o[range.clone()], &dout[range]);
            let l = &lse[bh * t..(bh + 1) * t];
            // P from the saved log-sum-exp
            let mut p = scores(qb, kb, d, t, scale);
            for (row, &li) in p.chunks_mut(t).zip(l) {
                row.iter_mut().for_each(|v| *v = (*v - li).exp_v());
            }
            // delta_i = Σ_c dO[c][i] O[c][i] (= rowsum(dO ⊙ O) in token-major terms)
            let mut delta = vec![T::zero(); t];
            for (doc, oc) in dob.chunks(t).zip(ob.chunks(t)) {
                for ((dl, &a), &b) in delta.iter_mut().zip(doc).zip(oc) {
                    *dl += a * b;
                }
            }
            let mut ds = vec![T::zero(); t * t];
            T::gemm(t, d, t, mat_t(dob, t), mat(vb, t), T::zero(), (&mut ds, t as isize, 1));
            // dS, with the softmax scale folded in once for both dq and dk
            for ((dsr, pr), &dl) in ds.chunks_mut(t).zip(p.chunks(t)).zip(&delta) {
                for (x, &pv) in dsr.iter_mut().zip(pr) {
                    *x = scale * pv * (*x - dl);
                }
            }
            T::gemm(d, t, t, mat(kb, t), mat_t(&ds, t), T::zero(), (dqb, t as isize, 1));
            T::gemm(d, t, t, mat(qb, t), mat(&ds, t), T::zero(), (dkb, t as isize, 1));
            T::gemm(d, t, t, mat(dob, t), mat(&p, t), T::zero(), (dvb, t as isize, 1));
        },
    );
    (dq, dk, dv)
}
