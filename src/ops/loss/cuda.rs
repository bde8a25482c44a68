//! Launchers for kernels/loss.cu.
use crate::backend::cuda::{blocks_for, ptx, typed_name, CudaStorage, Gpu, GpuBuf};
use crate::launch;
use anyhow::Result;

const BLOCK: u32 = 256;
/// Blocks per SM a per-example reduction aims for.
const BLOCKS_PER_SM: usize = 4;

/// Blocks per example for a per-example reduction (here and in the fused GSURE loss): enough to fill the GPU
/// when there are few examples, but each thread still sums at least ~4 elements; 1 (the single-kernel path,
/// no partials) for short rows or many examples.
pub(crate) fn splits(gpu: &Gpu, rows: usize, m: usize) -> usize {
    (gpu.sm_count() as usize * BLOCKS_PER_SM).div_ceil(rows.max(1)).min(m.div_ceil(BLOCK as usize * 4)).clamp(1, 1024)
}

/// The second pass of a split per-example reduction: one warp per example adds its `s` f32 partials in a
/// fixed order and writes `loss[row]` (scaled by `inv_m`). A no-op when `s == 1`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn finish_rows(
    gpu: &Gpu,
    module: &'static str,
    kernel: &str,
    partial: u64,
    loss: &CudaStorage,
    rows: usize,
    s: usize,
    inv_m: f32,
) -> Result<()> {
    if s <= 1 || rows == 0 {
        return Ok(());
    }
    const WARPS: u32 = 8;
    launch!(
        gpu,
        gpu.func(module, kernel)?,
        ((rows as u32).div_ceil(WARPS), 32 * WARPS, 0),
        partial,
        loss.ptr(),
        rows as i64,
        s as i32,
        inv_m
    )
}

pub fn masked_mse_fwd(
    gpu: &Gpu,
    p: &CudaStorage,
    t: &CudaStorage,
    w: &CudaStorage,
    rows: usize,
    m: usize,
) -> Result<CudaStorage> {
    let loss = CudaStorage::alloc(gpu, p.dtype(), rows)?;
    if rows == 0 {
        // No examples: the loss is empty, and grid.y = rows would be 0.
        return Ok(loss);
    }
    let dtype = p.dtype();
    let s = splits(gpu, rows, m);
    let partial: Option<GpuBuf<f32>> = if s > 1 { Some(gpu.alloc(rows * s)?) } else { None };
    let partial_ptr = partial.as_ref().map_or(0, |b| b.ptr());
    let inv_m = 1.0 / m as f32;
    launch!(
        gpu,
        gpu.typed_func(ptx::LOSS, "masked_mse_fwd", dtype)?,
        ((s as u32, rows.min(65535) as u32), BLOCK, 0),
        p.ptr(),
        t.ptr(),
        w.ptr(),
        partial_ptr,
        loss.ptr(),
        rows as i64,
        m as i64,
        inv_m
    )?;
    finish_rows(gpu, ptx::LOSS, &typed_name("masked_mse_fwd_final", dtype)?, partial_ptr, &loss, rows, s, inv_m)?;
    Ok(loss)
}

/// Writes dpred (and dtarget = -dpred) in one pass; either may be skipped.
#[allow(clippy::too_many_arguments)]
pub fn masked_mse_bwd(
    gpu: &Gpu,
    p: &CudaStorage,
    t: &CudaStorage,
    w: &CudaStorage,
    g: &CudaStorage,
    rows: usize,
    m: usize,
    want_pred: bool,
    want_target: bool,
) -> Result<(Option<CudaStorage>, Option<CudaStorage>)> {
    let dp = if want_pred { Some(CudaStorage::alloc(gpu, p.dtype(), rows * m)?) } else { None };
    let dt = if want_target { Some(CudaStorage::alloc(gpu, p.dtype(), rows * m)?) } else { None };
    if rows * m == 0 {
        // Empty gradients; grid.y = rows (and the grid.x bound divided by it) would be 0.
        return Ok((dp, dt));
    }
    let gy = rows.min(65535) as u32;
    let gx = blocks_for(m, BLOCK, 1).min(((gpu.sm_count() * 16) / gy).max(1));
    launch!(
        gpu,
        gpu.typed_func(ptx::LOSS, "masked_mse_bwd", p.dtype())?,
        ((gx, gy), BLOCK, 0),
        p.ptr(),
        t.ptr(),
        w.ptr(),
        g.ptr(),
        dp.as_ref().map_or(0, |b| b.ptr()),
        dt.as_ref().map_or(0, |b| b.ptr()),
        rows as i64,
        m as i64,
        2.0 / m as f32
    )?;
    Ok((dp, dt))
}
