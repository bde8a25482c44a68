//! Launchers for kernels/matmul.cu (f32; bf16 on mma.sync) and kernels/matmul_wgmma.cu (bf16 on Hopper's
//! warpgroup MMA).
use crate::backend::cuda::kernel_choice::{self, KernelFamily, KernelScope};
use crate::backend::cuda::{ptx, CudaStorage, Gpu};
use crate::launch;
use crate::DType;
use anyhow::{bail, Result};
use cudarc::driver::sys::CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
use std::sync::atomic::AtomicU8;

/// The tensor-core kernels a bf16 GEMM runs on: matmul/linear, and the convolution forward (an implicit
/// GEMM, `ops::conv::cuda::fwd_with`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Gemm {
    /// kernels/matmul.cu: mma.sync m16n8k16 (sm_80 and later), 128x128 or 64x64 tiles, two stages.
    MmaSync,
    /// kernels/matmul_wgmma.cu: wgmma m64n128k16 (sm_90a), 128x128x64 tiles, a 4-stage cp.async ring with
    /// the 128-byte swizzle. Verified on the emulated device only: it becomes the default once a GPU run
    /// shows it faster (issue 11), until then `GSURE_BF16_GEMM=wgmma` or `Bf16Gemm::select` picks it.
    Wgmma,
    /// The same wgmma GEMM with its tiles copied by TMA from a producer warp (full/empty mbarriers per
    /// stage), for the matmul only (convolutions take `Wgmma`'s kernels under this choice). Emulator only.
    Tma,
}

impl KernelFamily for Bf16Gemm {
    const ALL: &'static [Bf16Gemm] = &[Bf16Gemm::MmaSync, Bf16Gemm::Wgmma, Bf16Gemm::Tma];
    const ENV: &'static str = "GSURE_BF16_GEMM";
    const WHAT: &'static str = "bf16 GEMM kernel";
    fn name(self) -> &'static str {
        match self {
            Bf16Gemm::MmaSync => "mma",
            Bf16Gemm::Wgmma => "wgmma",
            Bf16Gemm::Tma => "tma",
        }
    }
    fn slot() -> &'static AtomicU8 {
        static SLOT: AtomicU8 = AtomicU8::new(0);
        &SLOT
    }
}

impl Bf16Gemm {
    pub fn parse(s: &str) -> Result<Bf16Gemm> {
        kernel_choice::parse(s)
    }

    pub fn name(self) -> &'static str {
        KernelFamily::name(self)
    }

    /// The kernels every bf16 GEMM of this process runs on: as `select`ed, else `GSURE_BF16_GEMM`
    /// (`mma`, `wgmma` or `tma`), else mma.sync.
    pub fn selected() -> Result<Bf16Gemm> {
        kernel_choice::selected()
    }

    pub fn select(kind: Bf16Gemm) {
        kernel_choice::select(kind)
    }

    /// Whether the convolutions run on the wgmma kernels under this choice.
    pub fn wgmma_convs(self) -> bool {
        matches!(self, Bf16Gemm::Wgmma | Bf16Gemm::Tma)
    }

    /// Selects these kernels until the returned scope is dropped, then restores the previous choice.
    pub fn scoped(self) -> KernelScope {
        kernel_choice::scoped(self)
    }

    /// Why this GPU and build cannot run these kernels, if they cannot.
    pub fn unsupported(self, gpu: &Gpu) -> Option<String> {
        match self {
            Bf16Gemm::MmaSync => None,
            Bf16Gemm::Wgmma | Bf16Gemm::Tma if gpu.compute_capability() == (9, 0) && ptx::CUDA_ARCH == "sm_90a" => None,
            Bf16Gemm::Wgmma | Bf16Gemm::Tma => Some(format!(
                "the wgmma GEMM needs kernels built for sm_90a (GSURE_CUDA_ARCH, now {}) on a compute capability \
                 9.0 GPU ({} is {}.{})",
                ptx::CUDA_ARCH,
                gpu.name(),
                gpu.compute_capability().0,
                gpu.compute_capability().1
            )),
        }
    }
}

/// kernels/wgmma_gemm.cuh's SMEM_BYTES: 4 stages of two 16 KiB operand tiles, + 1 KiB to align the ring.
pub(crate) const WGMMA_SMEM_BYTES: usize = 4 * 2 * 128 * 64 * 2 + 1024;

/// A kernel on wgmma_gemm.cuh's main loop, with its dynamic shared memory limit raised to the ring's size.
pub(crate) fn wgmma_func(gpu: &Gpu, module: &'static str, name: &str) -> Result<cudarc::driver::CudaFunction> {
    let f = gpu.func(module, name)?;
    f.set_attribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, WGMMA_SMEM_BYTES as i32)
        .map_err(|e| anyhow::anyhow!("{name} needs {WGMMA_SMEM_BYTES} bytes of shared memory: {e:?}"))?;
    Ok(f)
}

/// A CUtensorMap passed by value (kernels/tma.cuh's `TensorMap`).
#[repr(C, align(128))]
#[derive(Clone, Copy)]
pub(crate) struct TensorMap(cudarc::driver::sys::CUtensorMap);
// SAFETY: 128 plain bytes, passed by value as the kernel's `const __grid_constant__ TensorMap`.
unsafe impl cudarc::driver::DeviceRepr for TensorMap {}

/// The map of a bf16 matrix stored [rows][cols] (cols contiguous, cols % 8 == 0, 16-byte aligned) with a
/// box of 64 columns (128 bytes, the 128-byte swizzle's span) by `box_rows` rows, zeros outside.
pub(crate) fn tensor_map_2d(ptr: u64, rows: usize, cols: usize, box_rows: u32) -> Result<TensorMap> {
    use cudarc::driver::sys::*;
    let dims: [u64; 2] = [cols as u64, rows as u64];
    let strides: [u64; 1] = [cols as u64 * 2];
    let boxes: [u32; 2] = [64, box_rows];
    let ones: [u32; 2] = [1, 1];
    let mut map = TensorMap(CUtensorMap { opaque: [0; 16] });
    // SAFETY: the arrays outlive the call, which only writes `map`.
    let r = unsafe {
        cuTensorMapEncodeTiled(
            &mut map.0,
            CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
            2,
            ptr as *mut core::ffi::c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            boxes.as_ptr(),
            ones.as_ptr(),
            CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
            CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
            CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    if r != CUresult::CUDA_SUCCESS {
        bail!("cuTensorMapEncodeTiled for a [{rows}, {cols}] bf16 matrix (box 64 x {box_rows}): {r:?}");
    }
    Ok(map)
}

/// Mirrors `struct GemmParams` in kernels/gemm.cuh (pointers as u64 device addresses).
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

/// C [m, n] = op(A) · op(B) (see `cpu::matmul` for the storage of A and B), bf16 on the `selected` kernels.
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
    matmul_with(gpu, a, b, m, k, n, ta, tb, Bf16Gemm::selected()?)
}

/// `matmul` with the bf16 kernels named. The wgmma kernels take operands whose stored rows are multiples
/// of 8 elements (16-byte chunks); other shapes run on mma.sync's scalar-load variant whichever is named.
#[allow(clippy::too_many_arguments)]
pub fn matmul_with(
    gpu: &Gpu,
    a: &CudaStorage,
    b: &CudaStorage,
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
    kernels: Bf16Gemm,
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
            // cp.async moves 16-byte chunks: every stored row (length = the operand's column count) must
            // be a multiple of 8 bf16 and the buffers 16-byte aligned; otherwise the scalar-load variant.
            let (a_cols, b_cols) = (if ta { m } else { k }, if tb { k } else { n });
            let vec = a_cols.is_multiple_of(8)
                && b_cols.is_multiple_of(8)
                && a.ptr().is_multiple_of(16)
                && b.ptr().is_multiple_of(16);
            if kernels == Bf16Gemm::Tma && vec {
                if let Some(why) = kernels.unsupported(gpu) {
                    bail!("matmul: {why}; run with GSURE_BF16_GEMM=mma");
                }
                // Each operand as stored: [rows][cols], cols contiguous; a K-major tile's box is 128 rows.
                let (a_rows, b_rows) = (if ta { k } else { m }, if tb { n } else { k });
                let ma = tensor_map_2d(a.ptr(), a_rows, a_cols, if ta { 64 } else { 128 })?;
                let mb = tensor_map_2d(b.ptr(), b_rows, b_cols, if tb { 128 } else { 64 })?;
                let f = wgmma_func(gpu, ptx::MATMUL_WGMMA, &format!("matmul_{lay}_bf16_tma"))?;
                launch!(gpu, f, (grid(m, n, 128)?, 288u32, WGMMA_SMEM_BYTES as u32), params, ma, mb)?;
                return Ok(c);
            }
            if kernels == Bf16Gemm::Wgmma && vec {
                if let Some(why) = kernels.unsupported(gpu) {
                    bail!("matmul: {why}; run with GSURE_BF16_GEMM=mma");
                }
                let f = wgmma_func(gpu, ptx::MATMUL_WGMMA, &format!("matmul_{lay}_bf16_wgmma"))?;
                launch!(gpu, f, (grid(m, n, 128)?, 256u32, WGMMA_SMEM_BYTES as u32), params)?;
                return Ok(c);
            }
            // Below one 128x128 tile per SM the 64x64 variant keeps more of the GPU busy.
            let big = m.div_ceil(128) * n.div_ceil(128) >= gpu.sm_count() as usize;
            let (tile, threads) = if big { (128, 256u32) } else { (64, 128u32) };
            let name = format!("matmul_{lay}_bf16_{tile}{}", if vec { "_vec" } else { "" });
            let grid = grid(m, n, tile)?;
            launch!(gpu, gpu.func(ptx::MATMUL, &name)?, (grid, threads, 0), params)?;
        }
        DType::F64 => anyhow::bail!("the CUDA backend holds f32 and bf16, not f64"),
    }
    Ok(c)
}
