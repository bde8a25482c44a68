//! Launchers for kernels/broadcast.cu.
use crate::backend::cuda::{blocks_for, ptx, CudaStorage, Gpu};
use crate::launch;
use anyhow::Result;

const BLOCK: u32 = 256;

/// `name` is add_along or mul_along.
pub fn along(
    gpu: &Gpu,
    name: &str,
    x: &CudaStorage,
    s: &CudaStorage,
    outer: usize,
    mid: usize,
    inner: usize,
) -> Result<CudaStorage> {
    let n = x.len();
    let out = CudaStorage::alloc(gpu, x.dtype(), n)?;
    launch!(
        gpu,
        gpu.typed_func(ptx::BROADCAST, &format!("{name}_fwd"), x.dtype())?,
        (blocks_for(n, BLOCK, 1).min(gpu.sm_count() * 16), BLOCK, 0),
        x.ptr(),
        s.ptr(),
        out.ptr(),
        outer as i64,
        mid as i64,
        inner as i64
    )?;
    Ok(out)
}

pub fn expand(gpu: &Gpu, s: &CudaStorage, outer: usize, mid: usize, inner: usize) -> Result<CudaStorage> {
    let n = outer * mid * inner;
    let out = CudaStorage::alloc(gpu, s.dtype(), n)?;
    launch!(
        gpu,
        gpu.typed_func(ptx::BROADCAST, "expand_fwd", s.dtype())?,
        (blocks_for(n, BLOCK, 1).min(gpu.sm_count() * 16), BLOCK, 0),
        s.ptr(),
        out.ptr(),
        outer as i64,
        mid as i64,
        inner as i64
    )?;
    Ok(out)
}
