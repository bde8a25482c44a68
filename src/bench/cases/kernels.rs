//! Which bf16 tensor-core kernels a bench case runs on, so that one run times mma.sync and wgmma side by
//! side on the same shapes.
use crate::backend::cuda::KernelScope;
use crate::ops::matmul::cuda::Bf16Gemm;
use crate::{DType, Device};

/// The bf16 kernels a case runs on: the process's choice, or wgmma for the case's lifetime (its closure
/// holds the scope, so the choice returns when the runner drops the case).
#[derive(Clone, Copy)]
pub enum Kernels {
    Selected,
    Wgmma,
    Tma,
}

impl Kernels {
    pub fn suffix(self) -> &'static str {
        match self {
            Kernels::Selected => "",
            Kernels::Wgmma => " [wgmma]",
            Kernels::Tma => " [tma]",
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
        }
    }
    pub fn scope(self) -> Option<KernelScope> {
        match self {
            Kernels::Selected => None,
            Kernels::Wgmma => Some(Bf16Gemm::Wgmma.scoped()),
            Kernels::Tma => Some(Bf16Gemm::Tma.scoped()),
        }
    }
}
