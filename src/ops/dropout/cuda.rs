//! Launchers for kernels/dropout.cu.
use super::Mask;
use crate::backend::cuda::{blocks_for, ptx, CudaStorage, Gpu};
use crate::launch;
use anyhow::Result;

const BLOCK: u32 = 256;

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
        m.key,
        m.device_seed.map_or(0, |(ptr, _)| ptr),
        m.device_seed.map_or(0, |(_, layer)| layer),
        m.threshold,
        m.scale as f32
    )?;
    Ok(y)
}
