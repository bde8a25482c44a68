//! Launchers for kernels/matmul.cu.
use crate::backend::cuda::{ptx, CudaStorage, Gpu};
use crate::launch;
use crate::DType;
use anyhow::Result;

/// Mirrors `struct GemmParams` in kernels/matmul.cu (pointers as u64 device addresses).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct GemmParams {
    a: u64,
    b: u64,
    c: u64,
    m: i32,
    n: i32,
    k: i32,
}
// SAFETY: plain-old-data with the same #[repr(C)] layout as the C struct.
unsafe impl cudarc::driver::DeviceRepr for GemmParams {}

/// Tiles of M on grid.x (up to 2^31 - 1), tiles of N on grid.y (up to 65535).
fn grid(m: usize, n: usize, tile: usize) -> Result<(u32, u32)> {
    let (gm, gn) = (m.div_ceil(tile), n.div_ceil(tile));
    if gn > 65535 {
        anyhow::bail!("matmul: N = {n} needs {gn} column tiles, more than a grid's 65535");
    }
    Ok((gm as u32, gn as u32))
}

/// C [m, n] = op(A) · op(B) (see `cpu::matmul` for the storage of A and B).
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    gpu: &Gpu,
    a: &CudaStorage,
    b: &CudaStorage,
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
) -> Result<CudaStorage> {
    let c = CudaStorage::alloc(gpu, a.dtype(), m * n)?;
    if m == 0 || n == 0 {
        return Ok(c);
    }
    for (what, v) in [("M", m), ("N", n), ("K", k)] {
        if v > i32::MAX as usize {
            anyhow::bail!("matmul: {what} = {v} exceeds the kernel's 32-bit sizes");
        }
    }
    let lay = format!("{}{}", if ta { "t" } else { "n" }, if tb { "t" } else { "n" });
    let params = GemmParams { a: a.ptr(), b: b.ptr(), c: c.ptr(), m: m as i32, n: n as i32, k: k as i32 };
    match a.dtype() {
        DType::F32 => {
            let grid = grid(m, n, 64)?;
            launch!(gpu, gpu.func(ptx::MATMUL, &format!("matmul_{lay}_f32"))?, (grid, 256u32, 0), params)?;
        }
        DType::BF16 => {
            // Below one 128x128 tile per SM the 64x64 variant keeps more of the GPU busy.
            let big = m.div_ceil(128) * n.div_ceil(128) >= gpu.sm_count() as usize;
            let (tile, threads) = if big { (128, 256u32) } else { (64, 128u32) };
            // cp.async moves 16-byte chunks: every stored row (length = the operand's column count) must
            // be a multiple of 8 bf16 and the buffers 16-byte aligned; otherwise the scalar-load variant.
            let (a_cols, b_cols) = (if ta { m } else { k }, if tb { k } else { n });
            let vec = a_cols.is_multiple_of(8)
                && b_cols.is_multiple_of(8)
                && a.ptr().is_multiple_of(16)
                && b.ptr().is_multiple_of(16);
            let name = format!("matmul_{lay}_bf16_{tile}{}", if vec { "_vec" } else { "" });
            let grid = grid(m, n, tile)?;
            launch!(gpu, gpu.func(ptx::MATMUL, &name)?, (grid, threads, 0), params)?;
        }
        DType::F64 => anyhow::bail!("the CUDA backend holds f32 and bf16, not f64"),
    }
    Ok(c)
}
