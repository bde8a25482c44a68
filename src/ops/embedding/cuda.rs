//! Launchers for kernels/embedding.cu.
use super::Layout;
use crate::backend::cuda::{blocks_for, ptx, CudaStorage, Gpu};
use crate::launch;
use anyhow::Result;

const BLOCK: u32 = 256;

pub fn fwd(gpu: &Gpu, t: &CudaStorage, l: Layout) -> Result<CudaStorage> {
    let n = t.len();
    let out = CudaStorage::alloc(gpu, t.dtype(), n * l.dim)?;
    if n == 0 {
        return Ok(out);
    }
    launch!(
        gpu,
        gpu.typed_func(ptx::EMBEDDING, "sinusoidal_embedding_fwd", t.dtype())?,
        (blocks_for(n * l.dim, BLOCK, 1).min(gpu.sm_count() * 16), BLOCK, 0),
        t.ptr(),
        out.ptr(),
        n as i64,
        l.dim as i32,
        l.half as i32,
        l.neg_log_scale(),
        l.cos_first as i32
    )?;
    Ok(out)
}

pub fn bwd(gpu: &Gpu, t: &CudaStorage, g: &CudaStorage, l: Layout) -> Result<CudaStorage> {
    let n = t.len();
    let dt = CudaStorage::alloc(gpu, t.dtype(), n)?;
    if n == 0 {
        return Ok(dt);
    }
    // One warp per example.
    const WARPS: u32 = 8;
    launch!(
        gpu,
        gpu.typed_func(ptx::EMBEDDING, "sinusoidal_embedding_bwd", t.dtype())?,
        ((n as u32).div_ceil(WARPS), 32 * WARPS, 0),
        t.ptr(),
        g.ptr(),
        dt.ptr(),
        n as i64,
        l.dim as i32,
        l.half as i32,
        l.neg_log_scale(),
        l.cos_first as i32
    )?;
    Ok(dt)
}
