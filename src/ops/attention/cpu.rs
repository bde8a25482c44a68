//! CPU twin of kernels/attention.cu: per (batch, head), explicit scores, a numerically stable softmax and the
//! weighted sum of values; the backward rebuilds the probabilities from the saved log-sum-exp per query row.
//! Parallel over (batch, head) with rayon. Layout: [B, C, T] channel-first, head h owns channels h*D..(h+1)*D,
//! so one (b, h) block is the contiguous slice [(b*C + h*D)*T, (b*C + (h+1)*D)*T).
use crate::backend::cpu::Real;
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

/// Copies a channel-first [D, T] block into token-major [T, D] so dot products over channels are contiguous.
fn token_major<T: Real>(x: &[T], d: usize, t: usize) -> Vec<T> {
    let mut out = vec![T::zero(); d * t];
    for c in 0..d {
        for i in 0..t {
            out[i * d + c] = x[c * t + i];
        }
    }
    out
}

fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    a.iter().zip(b).fold(T::zero(), |s, (&x, &y)| s + x * y)
}

/// Forward: returns (out [B, C, T], lse [B, heads, T]) with lse[i] = log sum_j exp(scale * q_i·k_j).
pub fn forward<T: Real>(q: &[T], k: &[T], v: &[T], dims: Dims) -> (Vec<T>, Vec<T>) {
    let (d, t, blk) = (dims.head_dim(), dims.tokens, dims.block());
    let scale = T::of(dims.scale());
    let mut out = vec![T::zero(); q.len()];
    let mut lse = vec![T::zero(); dims.batch * dims.heads * t];
    out.par_chunks_mut(blk).zip(lse.par_chunks_mut(t)).enumerate().for_each(|(bh, (o, l))| {
        let range = bh * blk..(bh + 1) * blk;
        let (qt, kt) = (token_major(&q[range.clone()], d, t), token_major(&k[range.clone()], d, t));
        let vb = &v[range];
        let mut p = vec![T::zero(); t];
        for i in 0..t {
            let qi = &qt[i * d..(i + 1) * d];
            for (j, pj) in p.iter_mut().enumerate() {
                *pj = scale * dot(qi, &kt[j * d..(j + 1) * d]);
            }
            let m = p.iter().copied().fold(T::neg_infinity(), T::max);
            let mut sum = T::zero();
            for pj in p.iter_mut() {
                *pj = (*pj - m).exp();
                sum += *pj;
            }
            for c in 0..d {
                o[c * t + i] = dot(&p, &vb[c * t..(c + 1) * t]) / sum;
            }
            l[i] = m + sum.ln();
        }
    });
    (out, lse)
}

/// Backward from the saved statistics: with P_ij = exp(scale q_i·k_j - lse_i), dP = dO·V^T,
/// dS = P ⊙ (dP - rowsum(dO ⊙ O)): dQ = scale dS K, dK = scale dS^T Q, dV = P^T dO. Returns (dq, dk, dv).
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
            let tm = |x: &[T]| token_major(&x[range.clone()], d, t);
            let (qt, kt, vt, ot, dot_) = (tm(q), tm(k), tm(v), tm(o), tm(dout));
            let l = &lse[bh * t..(bh + 1) * t];
            // Token-major accumulators, transposed back at the end.
            let (mut gq, mut gk, mut gv) = (vec![T::zero(); blk], vec![T::zero(); blk], vec![T::zero(); blk]);
            for i in 0..t {
                let (qi, doi) = (&qt[i * d..(i + 1) * d], &dot_[i * d..(i + 1) * d]);
                let delta = dot(doi, &ot[i * d..(i + 1) * d]);
                for j in 0..t {
                    let (kj, vj) = (&kt[j * d..(j + 1) * d], &vt[j * d..(j + 1) * d]);
                    let p = (scale * dot(qi, kj) - l[i]).exp();
                    let ds = p * (dot(doi, vj) - delta);
                    for c in 0..d {
                        gq[i * d + c] += scale * ds * kj[c];
                        gk[j * d + c] += scale * ds * qi[c];
                        gv[j * d + c] += p * doi[c];
                    }
                }
            }
            for c in 0..d {
                for i in 0..t {
                    dqb[c * t + i] = gq[i * d + c];
                    dkb[c * t + i] = gk[i * d + c];
                    dvb[c * t + i] = gv[i * d + c];
                }
            }
        },
    );
    (dq, dk, dv)
}
