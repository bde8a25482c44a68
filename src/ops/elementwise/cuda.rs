//! Launchers for kernels/elementwise.cu.
use super::Unary;
use crate::backend::cuda::{blocks_for, ptx, CudaStorage, Gpu};
use crate::launch;
use crate::DType;
use anyhow::Result;

const BLOCK: u32 = 256;
/// Blocks per SM at most: enough to fill the GPU several times over; the grid-stride loop covers the rest.
const BLOCKS_PER_SM: u32 = 16;

fn grid(gpu: &Gpu, n: usize) -> u32 {
    blocks_for(n, BLOCK, 1).min(gpu.sm_count() * BLOCKS_PER_SM)
}

fn kernel(gpu: &Gpu, op: &str, dir: &str, dtype: DType) -> Result<cudarc::driver::CudaFunction> {
    gpu.typed_func(ptx::ELEMENTWISE, &format!("{op}_{dir}"), dtype)
}

pub fn unary_fwd(gpu: &Gpu, op: Unary, x: &CudaStorage) -> Result<CudaStorage> {
    let n = x.len();
    let y = CudaStorage::alloc(gpu, x.dtype(), n)?;
    launch!(gpu, kernel(gpu, op.name(), "fwd", x.dtype())?, (grid(gpu, n), BLOCK, 0), x.ptr(), y.ptr(), n as i64)?;
    Ok(y)
}

pub fn unary_bwd(gpu: &Gpu, op: Unary, x: &CudaStorage, y: &CudaStorage, dy: &CudaStorage) -> Result<CudaStorage> {
    let n = x.len();
    let dx = CudaStorage::alloc(gpu, x.dtype(), n)?;
    launch!(
        gpu,
        kernel(gpu, op.name(), "bwd", x.dtype())?,
        (grid(gpu, n), BLOCK, 0),
        x.ptr(),
        y.ptr(),
        dy.ptr(),
        dx.ptr(),
        n as i64
    )?;
    Ok(dx)
}

/// `name` is add, sub or mul.
pub fn binary(gpu: &Gpu, name: &str, a: &CudaStorage, b: &CudaStorage) -> Result<CudaStorage> {
    let n = a.len();
    let out = CudaStorage::alloc(gpu, a.dtype(), n)?;
    launch!(
        gpu,
        kernel(gpu, name, "fwd", a.dtype())?,
        (grid(gpu, n), BLOCK, 0),
        a.ptr(),
        b.ptr(),
        out.ptr(),
        n as i64
    )?;
    Ok(out)
}

pub fn affine(gpu: &Gpu, x: &CudaStorage, a: f64, b: f64) -> Result<CudaStorage> {
    let n = x.len();
    let y = CudaStorage::alloc(gpu, x.dtype(), n)?;
    launch!(
        gpu,
        kernel(gpu, "affine", "fwd", x.dtype())?,
        (grid(gpu, n), BLOCK, 0),
        x.ptr(),
        y.ptr(),
        a as f32,
        b as f32,
        n as i64
    )?;
    Ok(y)
}

pub fn where_(gpu: &Gpu, m: &CudaStorage, a: &CudaStorage, b: &CudaStorage) -> Result<CudaStorage> {
    let n = a.len();
    let out = CudaStorage::alloc(gpu, a.dtype(), n)?;
    launch!(
        gpu,
        kernel(gpu, "where", "fwd", a.dtype())?,
        (grid(gpu, n), BLOCK, 0),
        m.ptr(),
        a.ptr(),
        b.ptr(),
        out.ptr(),
        n as i64
    )?;
    Ok(out)
}

/// Converts between f32 and bf16 on the device.
pub fn cast(gpu: &Gpu, x: &CudaStorage, to: DType) -> Result<CudaStorage> {
    let n = x.len();
    let name = match (x.dtype(), to) {
        (DType::F32, DType::BF16) => "cast_f32_bf16",
        (DType::BF16, DType::F32) => "cast_bf16_f32",
        (from, to) => anyhow::bail!("cast: no CUDA conversion from {from} to {to}"),
    };
    let y = CudaStorage::alloc(gpu, to, n)?;
    launch!(gpu, gpu.func(ptx::ELEMENTWISE, name)?, (grid(gpu, n), BLOCK, 0), x.ptr(), y.ptr(), n as i64)?;
    Ok(y)
}
