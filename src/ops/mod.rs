//! Every op the engine has, one module per family; each op has a forward and a backward on the CPU
//! (`<family>/cpu.rs`, the reference) and on CUDA (`<family>/cuda.rs` launching `kernels/<family>.cu`).
//! Public functions take and return [`Tensor`]s and record themselves for autograd.
pub mod attention;
pub mod broadcast;
pub mod conv;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod layout;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod reduce;

pub use broadcast::{add_along, mul_along};
pub use elementwise::{add, affine, exp, mul, scale, sigmoid, silu, square, sub, where_};
pub use reduce::{mean_all, sum_all, sum_per_example};

use crate::backend::cuda::{CudaStorage, Gpu};
use crate::tensor::{CpuStorage, Shape, Storage, Tensor};
use anyhow::{bail, Result};

/// Runs one computation on the device of `inputs` and wraps the result as a fresh tensor of `shape`
/// (without autograd history; the op attaches its node). The caller has checked dtypes and devices.
pub(crate) fn compute(
    op: &str,
    inputs: &[&Tensor],
    shape: impl Into<Shape>,
    cpu: impl FnOnce(&[&CpuStorage]) -> Result<CpuStorage>,
    cuda: impl FnOnce(&Gpu, &[&CudaStorage]) -> Result<CudaStorage>,
) -> Result<Tensor> {
    let device = inputs[0].device().clone();
    for t in &inputs[1..] {
        if t.device() != &device {
            bail!("{op}: inputs on different devices ({} and {})", device, t.device());
        }
    }
    let guards: Vec<_> = inputs.iter().map(|t| t.storage()).collect();
    let out = match &device {
        crate::Device::Cpu => {
            let s: Vec<&CpuStorage> = guards
                .iter()
                .map(|g| match &**g {
                    Storage::Cpu(s) => s,
                    Storage::Cuda(_) => unreachable!("device checked"),
                })
                .collect();
            Storage::Cpu(cpu(&s)?)
        }
        crate::Device::Cuda(gpu) => {
            let s: Vec<&CudaStorage> = guards
                .iter()
                .map(|g| match &**g {
                    Storage::Cuda(s) => s,
                    Storage::Cpu(_) => unreachable!("device checked"),
                })
                .collect();
            Storage::Cuda(cuda(gpu, &s)?)
        }
    };
    drop(guards);
    Tensor::from_storage(out, shape, device)
}

/// A fresh CUDA buffer of `n` elements in `dtype` (uninitialised).
pub(crate) fn cuda_alloc(gpu: &Gpu, dtype: crate::DType, n: usize) -> Result<CudaStorage> {
    Ok(match dtype {
        crate::DType::F32 => CudaStorage::F32(gpu.alloc(n)?),
        crate::DType::BF16 => CudaStorage::BF16(gpu.alloc(n)?),
        crate::DType::F64 => bail!("the CUDA backend holds f32 and bf16, not f64"),
    })
}

/// A fresh zeroed CUDA buffer of `n` elements in `dtype`.
#[allow(dead_code)]
pub(crate) fn cuda_zeros(gpu: &Gpu, dtype: crate::DType, n: usize) -> Result<CudaStorage> {
    Ok(match dtype {
        crate::DType::F32 => CudaStorage::F32(gpu.alloc_zeros(n)?),
        crate::DType::BF16 => CudaStorage::BF16(gpu.alloc_zeros(n)?),
        crate::DType::F64 => bail!("the CUDA backend holds f32 and bf16, not f64"),
    })
}
