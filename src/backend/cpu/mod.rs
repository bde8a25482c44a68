//! The CPU reference backend: plain loops over `Vec<f32>`/`Vec<f64>`, written to be read. Each op's CPU
//! twin lives next to its CUDA launcher in `src/ops/<op>/cpu.rs` and is generic over [`Real`].
use num_traits::{Float, FromPrimitive};
use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{AddAssign, MulAssign, SubAssign};

/// The element types of the CPU backend (f32 and f64).
pub trait Real:
    Float + FromPrimitive + Sum + AddAssign + SubAssign + MulAssign + Send + Sync + Debug + Default + 'static
{
    fn of(x: f64) -> Self {
        Self::from_f64(x).unwrap()
    }
}
impl Real for f32 {}
impl Real for f64 {}

/// Applies a generic expression to a `CpuStorage`, keeping its dtype:
/// `cpu_map!(storage, |v| some_generic_fn(v))` where `v: &Vec<T>` and the body returns `Vec<T>`.
#[macro_export]
macro_rules! cpu_map {
    ($s:expr, |$v:ident| $body:expr) => {
        match $s {
            $crate::tensor::CpuStorage::F32($v) => $crate::tensor::CpuStorage::F32($body),
            $crate::tensor::CpuStorage::F64($v) => $crate::tensor::CpuStorage::F64($body),
        }
    };
}

/// Like `cpu_map!` over two storages of one dtype (the caller has checked the dtypes agree).
#[macro_export]
macro_rules! cpu_map2 {
    ($a:expr, $b:expr, |$x:ident, $y:ident| $body:expr) => {
        match ($a, $b) {
            ($crate::tensor::CpuStorage::F32($x), $crate::tensor::CpuStorage::F32($y)) => {
                $crate::tensor::CpuStorage::F32($body)
            }
            ($crate::tensor::CpuStorage::F64($x), $crate::tensor::CpuStorage::F64($y)) => {
                $crate::tensor::CpuStorage::F64($body)
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
                $crate::tensor::CpuStorage::F32($x),
                $crate::tensor::CpuStorage::F32($y),
                $crate::tensor::CpuStorage::F32($z),
            ) => $crate::tensor::CpuStorage::F32($body),
            (
                $crate::tensor::CpuStorage::F64($x),
                $crate::tensor::CpuStorage::F64($y),
                $crate::tensor::CpuStorage::F64($z),
            ) => $crate::tensor::CpuStorage::F64($body),
            _ => unreachable!("dtypes were checked by the op"),
        }
    };
}
