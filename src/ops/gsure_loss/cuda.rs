//! Launchers for kernels/gsure_loss.cu.
use crate::backend::cuda::{blocks_for, ptx, typed_name, CudaStorage, Gpu, GpuBuf};
use crate::launch;
use anyhow::Result;

use super::CoefArg;

const BLOCK: u32 = 256;

use crate::ops::loss::cuda::{finish_rows, splits};

/// The element inputs in kernel order: d, de, r, obs, w2, nu (None: null), b.
pub struct Args<'a> {
    pub d: &'a CudaStorage,
    pub de: &'a CudaStorage,
    pub r: &'a CudaStorage,
    pub obs: &'a CudaStorage,
    pub w2: &'a CudaStorage,
    pub nu: Option<&'a CudaStorage>,
    pub b: &'a CudaStorage,
}

/// The coefficient table's device address, uploading host values (kept alive by the returned buffer).
fn coef_on_device(gpu: &Gpu, coef: &CoefArg<'_>) -> Result<(Option<GpuBuf<f32>>, u64)> {
    Ok(match coef {
        CoefArg::Host(v) => {
            let buf: GpuBuf<f32> = gpu.upload(&v.iter().map(|&c| c as f32).collect::<Vec<_>>())?;
            let ptr = buf.ptr();
            (Some(buf), ptr)
        }
        CoefArg::Device(ptr) => (None, *ptr),
    })
}

pub fn gsure_fwd(gpu: &Gpu, x: &Args, coef: CoefArg<'_>, rows: usize, m: usize) -> Result<CudaStorage> {
    let (_upload, coef_ptr) = coef_on_device(gpu, &coef)?;
    let loss = CudaStorage::alloc(gpu, x.d.dtype(), rows)?;
    if rows == 0 {
        // No examples: the loss is empty, and grid.y = rows would be 0.
        return Ok(loss);
    }
    let dtype = x.d.dtype();
    let s = splits(gpu, rows, m);
    let partial: Option<GpuBuf<f32>> = if s > 1 { Some(gpu.alloc(rows * s)?) } else { None };
    let partial_ptr = partial.as_ref().map_or(0, |b| b.ptr());
    let inv_m = 1.0 / m as f32;
    launch!(
        gpu,
        gpu.typed_func(ptx::GSURE_LOSS, "gsure_loss_fwd", dtype)?,
        ((s as u32, rows.min(65535) as u32), BLOCK, 0),
        x.d.ptr(),
        x.de.ptr(),
        x.r.ptr(),
        x.obs.ptr(),
        x.w2.ptr(),
        x.nu.map_or(0, |n| n.ptr()),
        x.b.ptr(),
        coef_ptr,
        partial_ptr,
        loss.ptr(),
        rows as i64,
        m as i64,
        inv_m
    )?;
    finish_rows(gpu, ptx::GSURE_LOSS, &typed_name("gsure_loss_fwd_final", dtype)?, partial_ptr, &loss, rows, s, inv_m)?;
    Ok(loss)
}

/// Writes dd and dde in one pass; either may be skipped (de itself is never read: the loss is linear in it).
pub fn gsure_bwd(
    gpu: &Gpu,
    x: &Args,
    coef: &CoefArg<'_>,
    g: &CudaStorage,
    rows: usize,
    m: usize,
    want: (bool, bool),
) -> Result<(Option<CudaStorage>, Option<CudaStorage>)> {
    let (_upload, coef_ptr) = coef_on_device(gpu, coef)?;
    let dd = if want.0 { Some(CudaStorage::alloc(gpu, x.d.dtype(), rows * m)?) } else { None };
    let dde = if want.1 { Some(CudaStorage::alloc(gpu, x.d.dtype(), rows * m)?) } else { None };
    if rows * m == 0 {
        // Empty gradients; grid.y = rows (and the grid.x bound divided by it) would be 0.
        return Ok((dd, dde));
    }
    let gy = rows.min(65535) as u32;
    let gx = blocks_for(m, BLOCK, 1).min(((gpu.sm_count() * 16) / gy).max(1));
    launch!(
        gpu,
        gpu.typed_func(ptx::GSURE_LOSS, "gsure_loss_bwd", x.d.dtype())?,
        ((gx, gy), BLOCK, 0),
        x.d.ptr(),
        x.r.ptr(),
        x.obs.ptr(),
        x.w2.ptr(),
        x.nu.map_or(0, |n| n.ptr()),
        x.b.ptr(),
        coef_ptr,
        g.ptr(),
        dd.as_ref().map_or(0, |b| b.ptr()),
        dde.as_ref().map_or(0, |b| b.ptr()),
        rows as i64,
        m as i64,
        1.0 / m as f32
    )?;
    Ok((dd, dde))
}
