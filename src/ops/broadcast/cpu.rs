//! CPU twin of kernels/broadcast.cu.
use crate::backend::cpu::Real;

/// out[o, m, i] = f(x[o, m, i], s[m]) with x viewed as [outer, mid, inner].
pub fn along<T: Real>(x: &[T], s: &[T], mid: usize, inner: usize, f: impl Fn(T, T) -> T) -> Vec<T> {
    x.iter().enumerate().map(|(j, &v)| f(v, s[(j / inner) % mid])).collect()
}

/// out[o, m, i] = s[m].
pub fn expand<T: Real>(s: &[T], outer: usize, mid: usize, inner: usize) -> Vec<T> {
    (0..outer * mid * inner).map(|j| s[(j / inner) % mid]).collect()
}
