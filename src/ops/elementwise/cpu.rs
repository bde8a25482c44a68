//! CPU twins of kernels/elementwise.cu.
use super::Unary;
use crate::backend::cpu::Real;
use rayon::prelude::*;

impl Unary {
    pub(crate) fn fwd<T: Real>(self, x: T) -> T {
        let one = T::one();
        match self {
            Unary::Silu => x / (one + (-x).exp_v()),
            Unary::Sigmoid => one / (one + (-x).exp_v()),
            Unary::Exp => x.exp(),
            Unary::Square => x * x,
        }
    }
    /// dx given the input x, the output y and the output gradient dy.
    pub(crate) fn bwd<T: Real>(self, x: T, y: T, dy: T) -> T {
        let one = T::one();
        match self {
            Unary::Silu => {
                let s = one / (one + (-x).exp_v());
                dy * s * (one + x * (one - s))
            }
            Unary::Sigmoid => dy * y * (one - y),
            Unary::Exp => dy * y,
            Unary::Square => T::of(2.0) * x * dy,
        }
    }
}

pub fn unary_fwd<T: Real>(op: Unary, x: &[T]) -> Vec<T> {
    map1(x, |v| op.fwd(v))
}

pub fn unary_bwd<T: Real>(op: Unary, x: &[T], y: &[T], dy: &[T]) -> Vec<T> {
    map3(x, y, dy, |x, y, dy| op.bwd(x, y, dy))
}

pub fn zip<T: Real>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    map2(a, b, f)
}

pub fn affine<T: Real>(x: &[T], a: f64, b: f64) -> Vec<T> {
    let (a, b) = (T::of(a), T::of(b));
    map1(x, |v| a * v + b)
}

pub fn where_<T: Real>(m: &[T], a: &[T], b: &[T]) -> Vec<T> {
    map3(m, a, b, |m, a, b| if m != T::zero() { a } else { b })
}

/// Arrays at least this long are split over the thread pool in chunks of this size: below it, waking the
/// pool costs more than the loop. Each output element depends on its inputs alone, so the result is the
/// same to the bit either way.
const PAR_CHUNK: usize = 1 << 14;

fn map1<T: Real>(x: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    if x.len() < 2 * PAR_CHUNK {
        return x.iter().map(|&v| f(v)).collect();
    }
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(PAR_CHUNK).zip(x.par_chunks(PAR_CHUNK)).for_each(|(o, x)| {
        for (o, &v) in o.iter_mut().zip(x) {
            *o = f(v);
        }
    });
    out
}

fn map2<T: Real>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    if a.len() < 2 * PAR_CHUNK {
        return a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect();
    }
    let mut out = vec![T::zero(); a.len().min(b.len())];
    out.par_chunks_mut(PAR_CHUNK).zip(a.par_chunks(PAR_CHUNK)).zip(b.par_chunks(PAR_CHUNK)).for_each(|((o, a), b)| {
        for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
            *o = f(x, y);
        }
    });
    out
}

fn map3<T: Real>(a: &[T], b: &[T], c: &[T], f: impl Fn(T, T, T) -> T + Sync) -> Vec<T> {
    if a.len() < 2 * PAR_CHUNK {
        return a.iter().zip(b).zip(c).map(|((&x, &y), &z)| f(x, y, z)).collect();
    }
    let mut out = vec![T::zero(); a.len().min(b.len()).min(c.len())];
    out.par_chunks_mut(PAR_CHUNK)
        .zip(a.par_chunks(PAR_CHUNK))
        .zip(b.par_chunks(PAR_CHUNK))
        .zip(c.par_chunks(PAR_CHUNK))
        .for_each(|(((o, a), b), c)| {
            for (((o, &x), &y), &z) in o.iter_mut().zip(a).zip(b).zip(c) {
                *o = f(x, y, z);
            }
        });
    out
}
