//! Launchers for kernels/norm.cu.
use super::cpu::Dims;
use crate::backend::cuda::{ptx, typed_name, CudaStorage, Gpu, GpuBuf};
use crate::launch;
use anyhow::{bail, Result};

/// Mirrors `struct GnParams` in kernels/norm.cu (pointers as u64 device addresses; 0 where unused).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct GnParams {
    x: u64,
    gamma: u64,
    beta: u64,
    y: u64,
    stats: u64,
    dy: u64,
    partial: u64,
    affine: u64,
    n: i32,
    c: i32,
    groups: i32,
    spatial: i64,
    eps: f32,
    silu: i32,
}
// SAFETY: plain-old-data with the same #[repr(C)] layout as the C struct.
unsafe impl cudarc::driver::DeviceRepr for GnParams {}

impl GnParams {
    /// The sizes and inputs every kernel reads; the outputs a kernel writes are set by its launcher.
    fn new(x: &CudaStorage, gamma: &CudaStorage, beta: &CudaStorage, d: Dims, eps: f64, silu: bool) -> GnParams {
        GnParams {
            x: x.ptr(),
            gamma: gamma.ptr(),
            beta: beta.ptr(),
            y: 0,
            stats: 0,
            dy: 0,
            partial: 0,
            affine: 0,
            n: d.n as i32,
            c: d.c as i32,
            groups: d.groups as i32,
            spatial: d.spatial as i64,
            eps: eps as f32,
            silu: silu as i32,
        }
    }
}

/// Threads per (n, g) block: 8 warps.
const BLOCK: u32 = 256;
/// The backward's dynamic shared memory (2 * cpg * segments floats) must fit the default 48 KiB.
const MAX_SHARED: usize = 48 * 1024 - 32 * 4;

fn check_sizes(d: Dims) -> Result<()> {
    let blocks = d.n * d.groups;
    if blocks > i32::MAX as usize || d.c > i32::MAX as usize || d.n > i32::MAX as usize {
        bail!("group_norm: N = {}, C = {}, groups = {} exceed the kernel's 32-bit sizes", d.n, d.c, d.groups);
    }
    let cpg = d.c / d.groups.max(1);
    if cpg * d.spatial > i32::MAX as usize {
        // The kernels index a group's slab with 32-bit integers.
        bail!("group_norm: a group of {cpg} channels x {} pixels exceeds the kernel's 32-bit sizes", d.spatial);
    }
    Ok(())
}

/// Returns (y, stats) with stats f32 [N, G, 2] = (mean, rstd).
pub fn forward(
    gpu: &Gpu,
    x: &CudaStorage,
    gamma: &CudaStorage,
    beta: &CudaStorage,
    d: Dims,
    eps: f64,
    silu: bool,
) -> Result<(CudaStorage, CudaStorage)> {
    check_sizes(d)?;
    let y = CudaStorage::alloc(gpu, x.dtype(), x.len())?;
    let stats: GpuBuf<f32> = gpu.alloc(d.n * d.groups * 2)?;
    if d.n * d.groups > 0 {
        let p = GnParams { y: y.ptr(), stats: stats.ptr(), ..GnParams::new(x, gamma, beta, d, eps, silu) };
        let name = typed_name("group_norm_fwd", x.dtype())?;
        launch!(gpu, gpu.func(ptx::NORM, &name)?, ((d.n * d.groups) as u32, BLOCK, 0), p)?;
    }
    Ok((y, CudaStorage::F32(stats)))
}

/// Returns (stats, affine): stats f32 [N, G, 2] = (mean, rstd) and affine f32 [N, C, 2] = (scale, shift),
/// the normalisation as x · scale + shift per image and channel (what a convolution's prologue reads).
pub fn scale_shift(
    gpu: &Gpu,
    x: &CudaStorage,
    gamma: &CudaStorage,
    beta: &CudaStorage,
    d: Dims,
    eps: f64,
) -> Result<(CudaStorage, CudaStorage)> {
    check_sizes(d)?;
    let stats: GpuBuf<f32> = gpu.alloc(d.n * d.groups * 2)?;
    let affine: GpuBuf<f32> = gpu.alloc(d.n * d.c * 2)?;
    if d.n * d.groups > 0 {
        let p = GnParams { stats: stats.ptr(), affine: affine.ptr(), ..GnParams::new(x, gamma, beta, d, eps, false) };
        let name = typed_name("group_norm_scale_shift", x.dtype())?;
        launch!(gpu, gpu.func(ptx::NORM, &name)?, ((d.n * d.groups) as u32, BLOCK, 0), p)?;
    }
    Ok((CudaStorage::F32(stats), CudaStorage::F32(affine)))
}

/// Returns (dx, dgamma, dbeta).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    gpu: &Gpu,
    x: &CudaStorage,
    gamma: &CudaStorage,
    beta: &CudaStorage,
    stats: &CudaStorage,
    dy: &CudaStorage,
    d: Dims,
    silu: bool,
) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
    check_sizes(d)?;
    let dt = x.dtype();
    let dx = CudaStorage::alloc(gpu, dt, x.len())?;
    let dgamma = CudaStorage::alloc(gpu, dt, d.c)?;
    let dbeta = CudaStorage::alloc(gpu, dt, d.c)?;
    if d.c == 0 {
        return Ok((dx, dgamma, dbeta));
    }
    // per-(n, c) partials: [2, N, C] (sums of dpre * x̂, then of dpre); the backward kernel writes every
    // entry (each (n, c) belongs to exactly one (n, g) block), so no zeroing is needed
    let partial: GpuBuf<f32> = gpu.alloc(2 * d.n * d.c)?;
    if d.n * d.groups > 0 {
        // Mirror of the kernel's split of each channel into segments so every warp has work.
        let cpg = d.c / d.groups;
        let warps = (BLOCK / 32) as usize;
        let segs = if cpg >= warps { 1 } else { warps.div_ceil(cpg) };
        let shared = 2 * cpg * segs * 4;
        if shared > MAX_SHARED {
            bail!(
                "group_norm: {cpg} channels per group is more than the CUDA backward supports (at most {})",
                MAX_SHARED / 8
            );
        }
        let p = GnParams {
            y: dx.ptr(),
            stats: stats.ptr(),
            dy: dy.ptr(),
            partial: partial.ptr(),
            ..GnParams::new(x, gamma, beta, d, 0.0, silu)
        };
        let name = typed_name("group_norm_bwd", dt)?;
        launch!(gpu, gpu.func(ptx::NORM, &name)?, ((d.n * d.groups) as u32, BLOCK, shared), p)?;
    }
    let name = typed_name("group_norm_affine_grad", dt)?;
    launch!(
        gpu,
        gpu.func(ptx::NORM, &name)?,
        ((d.c as u32).div_ceil(128), 128u32, 0),
        partial.ptr(),
        dgamma.ptr(),
        dbeta.ptr(),
        d.n as i32,
        d.c as i32
    )?;
    Ok((dx, dgamma, dbeta))
}
