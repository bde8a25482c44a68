//! Launchers for kernels/layout.cu.
use crate::backend::cuda::{blocks_for, ptx, CudaStorage, Gpu};
use crate::launch;
use anyhow::{bail, Result};

const BLOCK: u32 = 256;
/// Blocks per SM at most: enough to fill the GPU several times over; grid-stride loops cover the rest.
const BLOCKS_PER_SM: u32 = 16;

/// Copies a channel slab: with both tensors viewed as [rows, *_row] elements,
/// dst[r, dst_off + k] = src[r, src_off + k] for k < run. Picks 16-byte units when every count and both
/// base pointers are 16-byte aligned, else the element size (the copy does no arithmetic).
#[allow(clippy::too_many_arguments)]
pub fn channel_copy(
    gpu: &Gpu,
    src: &CudaStorage,
    dst: &CudaStorage,
    rows: usize,
    run: usize,
    src_row: usize,
    src_off: usize,
    dst_row: usize,
    dst_off: usize,
) -> Result<()> {
    if rows == 0 || run == 0 {
        return Ok(());
    }
    let esize = src.dtype().size_in_bytes();
    let per16 = 16 / esize;
    let vec16 = [run, src_row, src_off, dst_row, dst_off].iter().all(|v| v.is_multiple_of(per16))
        && src.ptr().is_multiple_of(16)
        && dst.ptr().is_multiple_of(16);
    let (unit, name) = if vec16 {
        (per16, "channel_copy_fwd_u128")
    } else if esize == 4 {
        (1, "channel_copy_fwd_u32")
    } else {
        (1, "channel_copy_fwd_u16")
    };
    let gy = rows.min(65535) as u32;
    let gx = blocks_for(run / unit, BLOCK, 1).min((gpu.sm_count() * BLOCKS_PER_SM / gy).max(1));
    launch!(
        gpu,
        gpu.func(ptx::LAYOUT, name)?,
        ((gx, gy), BLOCK, 0),
        src.ptr(),
        dst.ptr(),
        rows as i64,
        (run / unit) as i64,
        (src_row / unit) as i64,
        (src_off / unit) as i64,
        (dst_row / unit) as i64,
        (dst_off / unit) as i64
    )
}

/// Nearest 2x upsampling times `scale`: [planes, h, w] -> [planes, 2h, 2w].
pub fn upsample2x(gpu: &Gpu, x: &CudaStorage, planes: usize, h: usize, w: usize, scale: f64) -> Result<CudaStorage> {
    resample(gpu, "upsample2x", x, planes * 4 * h * w, planes, h, w, scale)
}

/// 2x2 window sums times `scale`: [planes, 2h, 2w] -> [planes, h, w] (h, w are the output sizes).
pub fn pool2x(gpu: &Gpu, x: &CudaStorage, planes: usize, h: usize, w: usize, scale: f64) -> Result<CudaStorage> {
    resample(gpu, "pool2x", x, planes * h * w, planes, h, w, scale)
}

#[allow(clippy::too_many_arguments)]
fn resample(
    gpu: &Gpu,
    op: &str,
    x: &CudaStorage,
    n_out: usize,
    planes: usize,
    h: usize,
    w: usize,
    scale: f64,
) -> Result<CudaStorage> {
    let y = CudaStorage::alloc(gpu, x.dtype(), n_out)?;
    if n_out == 0 {
        return Ok(y);
    }
    if planes * h * w > u32::MAX as usize {
        // The kernels count rows x column chunks in 32 bits.
        bail!("{op}: {planes} planes of {h}x{w} exceed the CUDA kernels' 32-bit element count; split the batch");
    }
    launch!(
        gpu,
        gpu.typed_func(ptx::LAYOUT, &format!("{op}_fwd"), x.dtype())?,
        (blocks_for(n_out, BLOCK, 1).min(gpu.sm_count() * BLOCKS_PER_SM), BLOCK, 0),
        x.ptr(),
        y.ptr(),
        planes as i64,
        h as i64,
        w as i64,
        scale as f32
    )?;
    Ok(y)
}
