//! Which kernels a bench case runs on, so that one run times the families side by side on the same shapes:
//! mma.sync, wgmma and TMA for the bf16 GEMMs, tensor cores and CUDA cores for the attention backward, FFMA
//! and TF32 for the f32 convolutions.
use crate::backend::cuda::KernelScope;
use crate::ops::attention::cuda::AttentionBwd;
use crate::ops::conv::cuda::F32Conv;
use crate::ops::matmul::cuda::Bf16Gemm;
use crate::{DType, Device};

/// The kernels a case runs on: the process's choice, or another family for the case's lifetime (its closure
/// holds the scope, so the choice returns when the runner drops the case).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    Selected,
    Wgmma,
    Tma,
    /// The attention backward on the CUDA-core kernels (`AttentionBwd::CudaCore`).
    AttentionCudaCore,
    /// f32 convolutions on TF32 tensor cores (`F32Conv::Tf32`); the PyTorch reference allows TF32 for the
    /// case too (the case's `"tf32": true`).
    Tf32,
}

impl Kernels {
    pub fn suffix(self) -> &'static str {
        match self {
            Kernels::Selected => "",
            Kernels::Wgmma => " [wgmma]",
            Kernels::Tma => " [tma]",
            Kernels::AttentionCudaCore => " [cuda-core bwd]",
            Kernels::Tf32 => " [tf32]",
        }
    }
    pub fn skip(self) -> Option<fn(&Device, DType) -> Option<String>> {
        match self {
            Kernels::Selected => None,
            Kernels::Wgmma | Kernels::Tma => Some(|device, dtype| match device.gpu() {
                _ if dtype != DType::BF16 => Some("the wgmma GEMM is bf16's".into()),
                Some(gpu) => Bf16Gemm::Wgmma.unsupported(gpu),
                None => Some("wgmma is a CUDA kernel".into()),
            }),
            Kernels::AttentionCudaCore => Some(|device, dtype| match device.gpu() {
                _ if dtype != DType::BF16 => Some("f32 attention always runs on CUDA cores".into()),
                Some(_) => None,
                None => Some("the CUDA-core backward is a CUDA kernel".into()),
            }),
            Kernels::Tf32 => Some(|device, dtype| match device.gpu() {
                _ if dtype != DType::F32 => Some("TF32 is the f32 convolutions' choice".into()),
                Some(_) => None,
                None => Some("the TF32 convolution is a CUDA kernel".into()),
            }),
        }
    }
    pub fn scope(self) -> Option<KernelScope> {
        match self {
            Kernels::Selected => None,
            Kernels::Wgmma => Some(Bf16Gemm::Wgmma.scoped()),
            Kernels::Tma => Some(Bf16Gemm::Tma.scoped()),
            Kernels::AttentionCudaCore => Some(AttentionBwd::CudaCore.scoped()),
            Kernels::Tf32 => Some(F32Conv::Tf32.scoped()),
        }
    }
}
