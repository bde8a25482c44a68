//! Launchers for kernels/reduce.cu.
use crate::backend::cuda::{ptx, CudaStorage, Gpu};
use crate::launch;
use anyhow::Result;

/// out[m] = sum over o, i of x[o, m, i], in two deterministic passes.
pub fn sum_axis(gpu: &Gpu, x: &CudaStorage, outer: usize, mid: usize, inner: usize) -> Result<CudaStorage> {
    const BLOCK: u32 = 256;
    if mid == 0 {
        // Nothing to sum into; a grid dimension of 0 would be an invalid launch.
        return CudaStorage::alloc(gpu, x.dtype(), 0);
    }
    let count = outer * inner;
    // Enough blocks per row to fill the GPU when there are few rows, one when rows are plenty.
    let want = (gpu.sm_count() as usize * 8).div_ceil(mid.max(1));
    let splits = want.min(count.div_ceil(BLOCK as usize)).clamp(1, 1024) as u32;
    let partial: crate::backend::cuda::GpuBuf<f32> = gpu.alloc(mid * splits as usize)?;
    let dtype = x.dtype();
    launch!(
        gpu,
        gpu.typed_func(ptx::REDUCE, "sum_axis_partial", dtype)?,
        // grid.y is limited to 65535; the kernel loops over the rows beyond it.
        ((splits, mid.min(65535) as u32), BLOCK, 0),
        x.ptr(),
        partial.ptr(),
        outer as i64,
        mid as i64,
        inner as i64
    )?;
    let out = CudaStorage::alloc(gpu, x.dtype(), mid)?;
    let warps_per_block = 8u32;
    launch!(
        gpu,
        gpu.typed_func(ptx::REDUCE, "sum_axis_final", dtype)?,
        ((mid as u32).div_ceil(warps_per_block), 32 * warps_per_block, 0),
        partial.ptr(),
        out.ptr(),
        mid as i64,
        splits as i32
    )?;
    Ok(out)
}
