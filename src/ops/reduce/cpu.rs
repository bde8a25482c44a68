//! CPU twin of kernels/reduce.cu (accumulates in the storage precision, in index order).
use crate::backend::cpu::Real;

/// out[m] = sum over o, i of x[o, m, i] with x viewed as [outer, mid, inner].
pub fn sum_axis<T: Real>(x: &[T], outer: usize, mid: usize, inner: usize) -> Vec<T> {
    let mut out = vec![T::zero(); mid];
    for o in 0..outer {
        for (m, acc) in out.iter_mut().enumerate() {
            let row = &x[(o * mid + m) * inner..(o * mid + m + 1) * inner];
            *acc += row.iter().copied().sum::<T>();
        }
    }
    out
}
