//! The two backends: `cpu` (the readable reference, f32 and f64) and `cuda` (f32 and bf16, kernels in
//! `kernels/*.cu`). A `Device` names where a tensor lives, [`Storage`] holds its elements, [`DType`] says
//! which. Nothing here imports from the tensor, autograd or ops layers above.
pub mod cpu;
pub mod cuda;
mod dtype;
mod storage;

pub use dtype::DType;
pub use storage::{typed_slices, CpuElement, CpuStorage, Storage};

use anyhow::Result;
use cuda::Gpu;
use std::fmt;
use std::sync::Arc;

#[derive(Clone)]
pub enum Device {
    Cpu,
    Cuda(Arc<Gpu>),
}

impl Device {
    /// The shared CUDA device, or an error that says why it is not usable and what to do.
    pub fn cuda() -> Result<Device> {
        Ok(Device::Cuda(Gpu::shared()?))
    }
    /// CUDA when usable, else the CPU.
    pub fn best() -> Device {
        Device::cuda().unwrap_or(Device::Cpu)
    }
    /// Parses `cpu` or `cuda` (the CLI's `--device`).
    pub fn parse(name: &str) -> Result<Device> {
        match name {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Device::cuda(),
            other => anyhow::bail!("unknown device {other:?}: use cpu or cuda"),
        }
    }
    pub fn is_cuda(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }
    pub fn gpu(&self) -> Option<&Arc<Gpu>> {
        match self {
            Device::Cuda(g) => Some(g),
            Device::Cpu => None,
        }
    }
}

impl PartialEq for Device {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) => true,
            (Device::Cuda(a), Device::Cuda(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(g) => write!(f, "cuda ({})", g.name()),
        }
    }
}
impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
