//! Every op the engine has, one module per family; each op has a forward and a backward on the CPU
//! (`<family>/cpu.rs`, the reference) and on CUDA (`<family>/cuda.rs` launching `kernels/<family>.cu`).
//! Public functions take and return [`Tensor`]s and record themselves for autograd. The optimiser family
//! (`optim/`, `kernels/optim.cu`) updates parameters in place instead, each op with its CPU twin beside
//! its launch.
pub mod attention;
pub mod broadcast;
pub mod conv;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod fft;
pub mod gsure_loss;
pub mod layout;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod reduce;

pub use attention::attention;
pub use broadcast::{add_along, mul_along};
pub use conv::conv2d;
pub use dropout::dropout;
pub use elementwise::{add, affine, exp, mul, scale, sigmoid, silu, square, sub, where_};
pub use embedding::{sinusoidal_embedding, EmbeddingKind};
pub use layout::{avg_pool2x, concat_channels, narrow_channels, split_channels, upsample_nearest2x};
pub use loss::masked_mse;
pub use matmul::{linear, matmul};
pub use norm::group_norm;
pub use reduce::{mean_all, sum_all, sum_except, sum_per_example};

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
    let mut outs =
        compute_many(op, inputs, vec![shape.into()], |s| Ok(vec![cpu(s)?]), |gpu, s| Ok(vec![cuda(gpu, s)?]))?;
    Ok(outs.remove(0))
}

/// Like [`compute`] for a computation with several outputs (a forward and the statistics its backward
/// needs; the gradients of several inputs): one output per entry of `shapes`, in order.
pub(crate) fn compute_many(
    op: &str,
    inputs: &[&Tensor],
    shapes: Vec<Shape>,
    cpu: impl FnOnce(&[&CpuStorage]) -> Result<Vec<CpuStorage>>,
    cuda: impl FnOnce(&Gpu, &[&CudaStorage]) -> Result<Vec<CudaStorage>>,
) -> Result<Vec<Tensor>> {
    let _range = crate::nvtx::range(op);
    let device = inputs[0].device().clone();
    for t in &inputs[1..] {
        if t.device() != &device {
            bail!("{op}: inputs on different devices ({} and {})", device, t.device());
        }
    }
    let guards: Vec<_> = inputs.iter().map(|t| t.storage()).collect();
    let outs: Vec<Storage> = match &device {
        crate::Device::Cpu => {
            let s: Vec<&CpuStorage> = guards
                .iter()
                .map(|g| match &**g {
                    Storage::Cpu(s) => s,
                    Storage::Cuda(_) => unreachable!("device checked"),
                })
                .collect();
            cpu(&s)?.into_iter().map(Storage::Cpu).collect()
        }
        crate::Device::Cuda(gpu) => {
            let s: Vec<&CudaStorage> = guards
                .iter()
                .map(|g| match &**g {
                    Storage::Cuda(s) => s,
                    Storage::Cpu(_) => unreachable!("device checked"),
                })
                .collect();
            cuda(gpu, &s)?.into_iter().map(Storage::Cuda).collect()
        }
    };
    drop(guards);
    if outs.len() != shapes.len() {
        bail!("{op}: computed {} outputs for {} shapes", outs.len(), shapes.len());
    }
    outs.into_iter().zip(shapes).map(|(s, shape)| Tensor::from_storage(s, shape, device.clone())).collect()
}
