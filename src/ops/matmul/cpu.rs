//! CPU twin of kernels/matmul.cu: C = op(A) · op(B) through `matrixmultiply`, whose sgemm/dgemm take
//! arbitrary row and column strides, so a transposed operand is just swapped strides (no copy).
use crate::backend::cpu::Real;

/// C [m, n] = op(A) · op(B); A is stored [m, k] or, with `ta`, [k, m]; B is [k, n] or, with `tb`, [n, k].
pub fn matmul<T: Real>(a: &[T], b: &[T], m: usize, k: usize, n: usize, ta: bool, tb: bool) -> Vec<T> {
    let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
    let mut c = vec![T::zero(); m * n];
    T::gemm(m, k, n, (a, rsa, csa), (b, rsb, csb), T::zero(), (&mut c, n as isize, 1));
    c
}
