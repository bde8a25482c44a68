//! Launchers for kernels/dropout.cu.
use super::Mask;
use crate::backend::cuda::{blocks_for, ptx, CudaStorage, Gpu};
use crate::launch;
use anyhow::Result;

const BLOCK: u32 = 256;

/// Mirrors `struct DropoutMask` in kernels/dropout.cuh: one mask as a kernel argument (all zero: none).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DropoutArg {
    key: u64,
    step_seed: u64,
    layer: u64,
    threshold: u32,
    scale: f32,
}
// SAFETY: plain #[repr(C)] struct of three u64, a u32 and an f32: 32 bytes, no padding, as the C struct.
unsafe impl cudarc::driver::DeviceRepr for DropoutArg {}

impl DropoutArg {
    pub fn of(m: Option<Mask>) -> DropoutArg {
        m.map_or_else(DropoutArg::default, |m| DropoutArg {
            key: m.key,
            step_seed: m.device_seed.map_or(0, |(ptr, _)| ptr),
            layer: m.device_seed.map_or(0, |(_, layer)| layer),
            threshold: m.threshold,
            scale: m.scale as f32,
        })
    }
}

/// `dir` is fwd or bwd (the same map; the names keep the kernel convention).
pub fn apply(gpu: &Gpu, dir: &str, x: &CudaStorage, m: Mask) -> Result<CudaStorage> {
    let n = x.len();
    let y = CudaStorage::alloc(gpu, x.dtype(), n)?;
    if n == 0 {
        return Ok(y);
    }
    launch!(
        gpu,
        gpu.typed_func(ptx::DROPOUT, &format!("dropout_{dir}"), x.dtype())?,
        (blocks_for(n, BLOCK, 1).min(gpu.sm_count() * 16), BLOCK, 0),
        x.ptr(),
        y.ptr(),
        n as i64,
        DropoutArg::of(Some(m))
    )?;
    Ok(y)
}
