//! CPU twin of kernels/matmul.cu: C = op(A) · op(B) through `matrixmultiply`, whose sgemm/dgemm take
//! arbitrary row and column strides, so a transposed operand is just swapped strides (no copy).
use crate::backend::cpu::Real;

/// The f32/f64 GEMM entry points of `matrixmultiply`, behind one generic call.
pub trait Gemm: Real {
    /// c[m, n] (row-major, dense) = a · b, with a and b addressed by (row stride, column stride).
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: &[Self],
        rsa: isize,
        csa: isize,
        b: &[Self],
        rsb: isize,
        csb: isize,
    ) -> Vec<Self>;
}

macro_rules! impl_gemm {
    ($t:ty, $f:path) => {
        impl Gemm for $t {
            fn gemm(
                m: usize,
                k: usize,
                n: usize,
                a: &[$t],
                rsa: isize,
                csa: isize,
                b: &[$t],
                rsb: isize,
                csb: isize,
            ) -> Vec<$t> {
                let mut c = vec![0 as $t; m * n];
                if m == 0 || n == 0 || k == 0 {
                    return c;
                }
                assert!(a.len() >= m * k && b.len() >= k * n, "gemm: operand buffers too small");
                // SAFETY: the strides address a[i*rsa + p*csa] for i < m, p < k, which stays inside a dense
                // m*k (or transposed k*m) buffer, checked above; likewise for b; c is a dense m*n buffer.
                unsafe {
                    $f(m, k, n, 1.0, a.as_ptr(), rsa, csa, b.as_ptr(), rsb, csb, 0.0, c.as_mut_ptr(), n as isize, 1)
                };
                c
            }
        }
    };
}
impl_gemm!(f32, matrixmultiply::sgemm);
impl_gemm!(f64, matrixmultiply::dgemm);

/// C [m, n] = op(A) · op(B); A is stored [m, k] or, with `ta`, [k, m]; B is [k, n] or, with `tb`, [n, k].
pub fn matmul<T: Gemm>(a: &[T], b: &[T], m: usize, k: usize, n: usize, ta: bool, tb: bool) -> Vec<T> {
    let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
    T::gemm(m, k, n, a, rsa, csa, b, rsb, csb)
}
