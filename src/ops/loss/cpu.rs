//! CPU twin of kernels/loss.cu.
use crate::backend::cpu::Real;
use rayon::prelude::*;

/// loss[r] = (1/m) sum_k w (p - t)^2 over row r of [rows, m] tensors.
pub fn masked_mse<T: Real>(p: &[T], t: &[T], w: &[T], m: usize) -> Vec<T> {
    let inv_m = T::of(1.0 / m as f64);
    p.par_chunks(m)
        .zip(t.par_chunks(m))
        .zip(w.par_chunks(m))
        .map(|((p, t), w)| {
            let mut acc = T::zero();
            for ((&p, &t), &w) in p.iter().zip(t).zip(w) {
                acc += w * (p - t) * (p - t);
            }
            acc * inv_m
        })
        .collect()
}

/// dpred = g[r] (2/m) w (p - t) (dtarget is its negation).
pub fn masked_mse_bwd<T: Real>(p: &[T], t: &[T], w: &[T], g: &[T], m: usize) -> Vec<T> {
    let two_over_m = T::of(2.0 / m as f64);
    let mut out = vec![T::zero(); p.len()];
    out.par_chunks_mut(m).zip(p.par_chunks(m)).zip(t.par_chunks(m)).zip(w.par_chunks(m)).zip(g.par_iter()).for_each(
        |((((o, p), t), w), &g)| {
            let gs = g * two_over_m;
            for (o, ((&p, &t), &w)) in o.iter_mut().zip(p.iter().zip(t).zip(w)) {
                *o = gs * w * (p - t);
            }
        },
    );
    out
}
