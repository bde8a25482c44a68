//! Launchers for kernels/dropout.cu.
use super::Mask;
use crate::backend::cuda::{blocks_for, ptx, CudaStorage, Gpu};
use crate::launch;
use crate::ops::cuda_alloc;
use anyhow::Result;

const BLOCK: u32 = 256;

/// `dir` is fwd or bwd (the same map; the names keep the kernel convention).
pub fn apply(gpu: &Gpu, dir: &str, x: &CudaStorage, m: Mask) -> Result<CudaStorage> {
    let n = x.len();
    let y = cuda_alloc(gpu, x.dtype(), n)?;
    if n == 0 {
        return Ok(y);
    }
    launch!(
        gpu,
        gpu.func(ptx::DROPOUT, &format!("dropout_{dir}_{}", x.dtype().name()))?,
        (blocks_for(n, BLOCK, 1).min(gpu.sm_count() * 16), BLOCK, 0),
        x.ptr(),
        y.ptr(),
        n as i64,
        m.key,
        m.device_seed.map_or(0, |(ptr, _)| ptr),
        m.device_seed.map_or(0, |(_, layer)| layer),
        m.threshold,
        m.scale as f32
    )?;
    Ok(y)
}
