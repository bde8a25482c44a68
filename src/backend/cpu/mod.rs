//! The CPU reference backend: plain loops over `Vec<f32>`/`Vec<f64>`, written to be read. Each op's CPU
//! twin lives next to its CUDA launcher in `src/ops/<op>/cpu.rs` and is generic over [`Real`].
pub mod alloc;
mod exp;
mod transpose;

use num_traits::{Float, FromPrimitive};
use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{AddAssign, MulAssign, SubAssign};

/// The element types of the CPU backend (f32 and f64).
pub trait Real:
    Float
    + FromPrimitive
    + Sum
    + AddAssign
    + SubAssign
    + MulAssign
    + Send
    + Sync
    + Debug
    + Default
    + super::CpuElement
    + 'static
{
    fn of(x: f64) -> Self {
        Self::from_f64(x).unwrap()
    }

    /// e^x in a form loops can vectorise: [`exp::exp_f32`] for f32 (within 2 ulp, argument clamped to
    /// [−87, 88]); f64, the gradient-check reference, keeps libm's exp.
    fn exp_v(self) -> Self {
        self.exp()
    }

    /// dst[c·rows + r] = src[r·cols + c]: the [rows, cols] matrix `src` into [cols, rows] ([`transpose`]).
    fn transpose(src: &[Self], rows: usize, cols: usize, dst: &mut [Self]) {
        transpose::tiled(src, rows, cols, dst)
    }

    /// Runs `f` on this thread's scratch buffer of `len` elements, whose contents are unspecified (callers
    /// write before they read). Each thread keeps its buffer across calls, so the per-image loops of the
    /// convolutions neither allocate nor zero a column matrix per call.
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;

    /// c = a · b + beta c with a: [m, k], b: [k, n], c: [m, n], each given as (slice, row stride, column
    /// stride): matrixmultiply's sgemm/dgemm, so a transposed operand is just swapped strides (no copy).
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: (&[Self], isize, isize),
        b: (&[Self], isize, isize),
        beta: Self,
        c: (&mut [Self], isize, isize),
    );
}

macro_rules! impl_real {
    ($t:ty, $f:path $(, $exp:path, $transpose:path)?) => {
        impl Real for $t {
            fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
                thread_local! {
                    static SCRATCH: std::cell::RefCell<Vec<$t>> = const { std::cell::RefCell::new(Vec::new()) };
                }
                SCRATCH.with(|cell| match cell.try_borrow_mut() {
                    Ok(mut buf) => {
                        if buf.len() < len {
                            buf.resize(len, 0.0);
                        }
                        f(&mut buf[..len])
                    }
                    // already lent out on this thread (a nested use): a buffer of its own
                    Err(_) => f(&mut vec![0.0; len]),
                })
            }

            $(
                #[inline(always)]
                fn exp_v(self) -> Self {
                    $exp(self)
                }

                fn transpose(src: &[Self], rows: usize, cols: usize, dst: &mut [Self]) {
                    $transpose(src, rows, cols, dst)
                }
            )?
            fn gemm(
                m: usize,
                k: usize,
                n: usize,
                a: (&[Self], isize, isize),
                b: (&[Self], isize, isize),
                beta: Self,
                c: (&mut [Self], isize, isize),
            ) {
                if m == 0 || n == 0 {
                    return;
                }
                // The strided views must stay inside their slices (checked here once; the kernel trusts them).
                let extent = |rows: usize, cols: usize, rs: isize, cs: isize| {
                    if rows == 0 || cols == 0 {
                        0
                    } else {
                        (rows as isize - 1) * rs + (cols as isize - 1) * cs + 1
                    }
                };
                assert!(extent(m, k, a.1, a.2) as usize <= a.0.len());
                assert!(extent(k, n, b.1, b.2) as usize <= b.0.len());
                assert!(extent(m, n, c.1, c.2) as usize <= c.0.len());
                // SAFETY: the extents of the three strided views were checked against their slices above.
                unsafe {
                    $f(m, k, n, 1.0, a.0.as_ptr(), a.1, a.2, b.0.as_ptr(), b.1, b.2, beta, c.0.as_mut_ptr(), c.1, c.2)
                }
            }
        }
    };
}
impl_real!(f32, matrixmultiply::sgemm, exp::exp_f32, transpose::f32);
impl_real!(f64, matrixmultiply::dgemm);

/// Σ f(x_i) in eight interleaved partial sums, added pairwise at the end. A plain fold is one serial chain
/// of adds the compiler may not reorder; eight independent lanes let it vectorise. The order is fixed by
/// the length alone, so results are reproducible run to run.
pub fn lane_sum<T: Real>(xs: &[T], f: impl Fn(T) -> T) -> T {
    let mut lanes = [T::zero(); 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += f(x);
        }
    }
    for (l, &x) in lanes.iter_mut().zip(tail) {
        *l += f(x);
    }
    let [a, b, c, d, e, g, h, i] = lanes;
    ((a + b) + (c + d)) + ((e + g) + (h + i))
}

/// Σ a_i b_i with the lanes of [`lane_sum`].
pub fn lane_dot<T: Real>(a: &[T], b: &[T]) -> T {
    debug_assert_eq!(a.len(), b.len());
    let mut lanes = [T::zero(); 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for ((l, &x), &y) in lanes.iter_mut().zip(x).zip(y) {
            *l += x * y;
        }
    }
    for ((l, &x), &y) in lanes.iter_mut().zip(ta).zip(tb) {
        *l += x * y;
    }
    let [a, b, c, d, e, g, h, i] = lanes;
    ((a + b) + (c + d)) + ((e + g) + (h + i))
}

/// Applies a generic expression to a `CpuStorage`, keeping its dtype:
/// `cpu_map!(storage, |v| some_generic_fn(v))` where `v: &Vec<T>` and the body returns `Vec<T>`.
#[macro_export]
macro_rules! cpu_map {
    ($s:expr, |$v:ident| $body:expr) => {
        match $s {
            $crate::backend::CpuStorage::F32($v) => $crate::backend::CpuStorage::F32($body),
            $crate::backend::CpuStorage::F64($v) => $crate::backend::CpuStorage::F64($body),
        }
    };
}

/// Like `cpu_map!` over two storages of one dtype (the caller has checked the dtypes agree).
#[macro_export]
macro_rules! cpu_map2 {
    ($a:expr, $b:expr, |$x:ident, $y:ident| $body:expr) => {
        match ($a, $b) {
            ($crate::backend::CpuStorage::F32($x), $crate::backend::CpuStorage::F32($y)) => {
                $crate::backend::CpuStorage::F32($body)
            }
            ($crate::backend::CpuStorage::F64($x), $crate::backend::CpuStorage::F64($y)) => {
                $crate::backend::CpuStorage::F64($body)
            }
            _ => unreachable!("dtypes were checked by the op"),
        }
    };
}

/// Like `cpu_map2!` over three storages of one dtype.
#[macro_export]
macro_rules! cpu_map3 {
    ($a:expr, $b:expr, $c:expr, |$x:ident, $y:ident, $z:ident| $body:expr) => {
        match ($a, $b, $c) {
            (
                $crate::backend::CpuStorage::F32($x),
                $crate::backend::CpuStorage::F32($y),
                $crate::backend::CpuStorage::F32($z),
            ) => $crate::backend::CpuStorage::F32($body),
            (
                $crate::backend::CpuStorage::F64($x),
                $crate::backend::CpuStorage::F64($y),
                $crate::backend::CpuStorage::F64($z),
            ) => $crate::backend::CpuStorage::F64($body),
            _ => unreachable!("dtypes were checked by the op"),
        }
    };
}
