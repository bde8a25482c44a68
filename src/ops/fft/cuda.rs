//! Launchers for kernels/fft.cu. Images of at most `POINTS` complex points take the single-launch "fused"
//! kernel (one block per image, everything in shared memory); larger ones take two launches, a row pass
//! into an f32 complex scratch buffer and a column pass that applies the centring, scale and forward mask
//! (see the header of kernels/fft.cu for what is fused where).
use crate::backend::cuda::Gpu;
use crate::backend::cuda::{ptx, typed_name, CudaStorage, GpuBuf};
use crate::launch;
use anyhow::{bail, Result};
use cudarc::driver::sys::CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
use std::sync::atomic::{AtomicU8, Ordering};

/// Block size of every kernel (FFT_THREADS in kernels/fft.cu).
const THREADS: u32 = 512;
/// Most complex points one block transforms (FFT_THREADS * FFT_PTS in kernels/fft.cu).
pub const POINTS: usize = 4096;
/// Largest H or W the kernels take: a row pass block needs at least one whole row (<= POINTS), and the
/// twiddle table plus one row fit in 64 KiB of shared memory.
pub const MAX_SIDE: usize = 4096;
/// Blocks per SM the row and column passes aim for (two), shrinking their tiles until the grid has that many.
const BLOCKS_PER_SM: usize = 2;

/// Which kernels run: `Auto` picks the single launch when the image fits (H·W <= POINTS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Auto = 0,
    /// Always the two-pass kernels (for tests of that path at small sizes, and for benchmarking).
    TwoPass = 1,
}

static FORCED: AtomicU8 = AtomicU8::new(0);

/// Overrides the choice of kernels for every later call in the process (tests and benchmarks only).
pub fn force_path(path: Path) {
    FORCED.store(path as u8, Ordering::SeqCst);
}

/// Mirrors `FftParams` in kernels/fft.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct FftParams {
    x: u64,
    mask: u64,
    y: u64,
    scratch: u64,
    n: i32,
    h: i32,
    w: i32,
    tile: i32,
    scale: f32,
    pad: i32,
}
// SAFETY: #[repr(C)] plain data whose layout matches the C struct (4 u64, 4 i32, f32, i32: 48 bytes).
unsafe impl cudarc::driver::DeviceRepr for FftParams {}

/// Loads `name` and raises its dynamic shared memory limit when it needs more than the default 48 KiB.
fn func(gpu: &Gpu, name: &str, smem: usize) -> Result<cudarc::driver::CudaFunction> {
    let f = gpu.func(ptx::FFT, name)?;
    if smem > 48 * 1024 {
        f.set_attribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem as i32)
            .map_err(|e| anyhow::anyhow!("fft: {name} needs {smem} bytes of shared memory: {e:?}"))?;
    }
    Ok(f)
}

/// Rows (or columns) per block for sequences of length `len` with `count` sequences per image: as many as
/// fit in POINTS, but few enough that the grid reaches BLOCKS_PER_SM blocks per SM.
fn tile(gpu: &Gpu, len: usize, count: usize, batch: usize) -> usize {
    let fit = (POINTS / len).max(1);
    let spread = (batch * count).div_ceil(gpu.sm_count() as usize * BLOCKS_PER_SM).max(1);
    // At least 8 (when they fit) so a column tile reads 64-byte runs of the scratch.
    fit.min(spread.max(8)).min(count)
}

/// y = M ⊙ F x (`inverse` false) or Fᴴ (M ⊙ x) (`inverse` true) of x [n, 2, h, w]; mask [n, 1, h, w] or none.
pub fn masked_fft2c(
    gpu: &Gpu,
    x: &CudaStorage,
    mask: Option<&CudaStorage>,
    n: usize,
    h: usize,
    w: usize,
    inverse: bool,
) -> Result<CudaStorage> {
    let op = if inverse { "masked_ifft2c" } else { "masked_fft2c" };
    if let Some(m) = mask {
        if m.dtype() != x.dtype() {
            bail!("{op}: input of dtype {} and mask of dtype {}", x.dtype(), m.dtype());
        }
    }
    if h > MAX_SIDE || w > MAX_SIDE {
        bail!("{op}: image size {h}x{w} exceeds the CUDA kernels' limit of {MAX_SIDE} per side");
    }
    if n > 65535 {
        bail!("{op}: batch {n} exceeds the CUDA grid limit 65535");
    }
    let dtype = x.dtype();
    let y = CudaStorage::alloc(gpu, x.dtype(), x.len())?;
    if n == 0 || h == 0 || w == 0 {
        // No image or no points: the output is empty (and n blocks, or h / w tiles, would be 0).
        return Ok(y);
    }
    let mut p = FftParams {
        x: x.ptr(),
        mask: mask.map_or(0, |m| m.ptr()),
        y: y.ptr(),
        n: n as i32,
        h: h as i32,
        w: w as i32,
        scale: (1.0 / ((h * w) as f64).sqrt()) as f32,
        ..Default::default()
    };
    let f2 = std::mem::size_of::<[f32; 2]>();
    let forced = FORCED.load(Ordering::SeqCst) == Path::TwoPass as u8;
    if h * w <= POINTS && !forced {
        // One launch: shared [tw_w: w][tw_h: h][image: h*w] complex f32.
        let smem = (w + h + h * w) * f2;
        let name = typed_name(&format!("{op}_fused"), dtype)?;
        launch!(gpu, func(gpu, &name, smem)?, (n as u32, THREADS, smem), p)?;
        return Ok(y);
    }
    // Two launches through an f32 complex scratch [n, h, w], freed (in stream order) when this returns.
    let scratch: GpuBuf<f32> = gpu.alloc(2 * n * h * w)?;
    p.scratch = scratch.ptr();

    let rows = tile(gpu, w, h, n);
    p.tile = rows as i32;
    let smem = (w + rows * w) * f2;
    let name = typed_name(&format!("{op}_rows"), dtype)?;
    launch!(gpu, func(gpu, &name, smem)?, ((h.div_ceil(rows) as u32, n as u32), THREADS, smem), p)?;

    let cols = tile(gpu, h, w, n);
    p.tile = cols as i32;
    let smem = (h + h * cols) * f2;
    let name = typed_name(&format!("{op}_cols"), dtype)?;
    launch!(gpu, func(gpu, &name, smem)?, ((w.div_ceil(cols) as u32, n as u32), THREADS, smem), p)?;
    drop(scratch);
    Ok(y)
}
