//! Launchers for kernels/attention.cu and kernels/attention_bwd_mma.cu (see the kernel files for the tiling
//! and fragment layouts).
//!
//! Forward: bf16 with head dim 32/64/128/256 runs the tensor-core kernel (64 queries per block, 4 warps),
//! head dim 512 the tensor-core kernel that splits the output by channels across 8 warps;
//! everything else runs the CUDA-core flash kernel instantiated for a head-dim bound DMAX in
//! {32, 64, 128, 256, 512} (tiles of 32 queries/keys and 128 threads; 16 and 64 at DMAX = 512, the one
//! head of C = 512 in the GSURE paper's DDIM U-Nets, so the shared tiles fit in 227 KiB). Backward:
//! `attention_delta` (D_i = rowsum(dO ⊙ O)), then dK/dV parallel over key tiles and dQ parallel over query
//! tiles (two deterministic passes, no atomics): on tensor cores for bf16 with head dim 32/64/128/256/512
//! (`AttentionBwd::TensorCore`, the default), else on the CUDA-core kernels.
use super::Dims;
use crate::backend::cuda::kernel_choice::{self, KernelFamily, KernelScope};
use crate::backend::cuda::Gpu;
use crate::backend::cuda::{ptx, typed_name, CudaStorage, GpuBuf};
use crate::launch;
use crate::DType;
use anyhow::{bail, Result};
use cudarc::driver::sys::CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
use std::sync::atomic::AtomicU8;

/// Mirrors `AttnParams` in kernels/attention.cu (pointers as u64; unused ones are 0).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct AttnParams {
    q: u64,
    k: u64,
    v: u64,
    o: u64,
    dout: u64,
    lse: u64,
    delta: u64,
    dq: u64,
    dk: u64,
    dv: u64,
    batch: i32,
    channels: i32,
    tokens: i32,
    heads: i32,
    head_dim: i32,
    scale: f32,
}
// SAFETY: plain-old-data mirrored field for field by the C struct.
unsafe impl cudarc::driver::DeviceRepr for AttnParams {}

/// Tensor-core forward: queries per block, threads.
const MMA_BQ: usize = 64;
const MMA_THREADS: u32 = 128;

/// The kernels the bf16 attention backward runs on (f32 and head dims off the tensor-core list always take
/// the CUDA-core ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionBwd {
    /// kernels/attention_bwd_mma.cu: mma.sync m16n8k16, P and dS as bf16 tiles in shared memory.
    /// Verified on the emulated device only (issue 11).
    TensorCore,
    /// kernels/attention.cu's f32 CUDA-core kernels, kept to be timed beside the tensor-core ones.
    CudaCore,
}

impl KernelFamily for AttentionBwd {
    const ALL: &'static [AttentionBwd] = &[AttentionBwd::TensorCore, AttentionBwd::CudaCore];
    const ENV: &'static str = "GSURE_ATTENTION_BWD";
    const WHAT: &'static str = "attention backward kernel";
    fn name(self) -> &'static str {
        match self {
            AttentionBwd::TensorCore => "mma",
            AttentionBwd::CudaCore => "cuda-core",
        }
    }
    fn slot() -> &'static AtomicU8 {
        static SLOT: AtomicU8 = AtomicU8::new(0);
        &SLOT
    }
}

impl AttentionBwd {
    /// As `kernel_choice::selected`: `GSURE_ATTENTION_BWD` (`mma` or `cuda-core`), else tensor cores.
    pub fn selected() -> Result<AttentionBwd> {
        kernel_choice::selected()
    }
    pub fn scoped(self) -> KernelScope {
        kernel_choice::scoped(self)
    }
}

/// Tiles of one tensor-core backward kernel (`BWD_MMA` in kernels/attention_bwd_mma.cu): rows owned by a
/// block (keys for dK/dV, queries for dQ), columns per loop step, warps, stages of the column ring.
#[derive(Clone, Copy)]
struct BwdTiles {
    rows: usize,
    cols: usize,
    warps: u32,
    stages: usize,
}

impl BwdTiles {
    /// (dK/dV, dQ) tiles for a head dim, as instantiated in the kernel file.
    fn for_head_dim(d: usize) -> Option<(BwdTiles, BwdTiles)> {
        let t = |rows, cols, warps, stages| BwdTiles { rows, cols, warps, stages };
        Some(match d {
            32 => (t(64, 64, 4, 2), t(64, 64, 4, 2)),
            64 => (t(64, 64, 4, 2), t(64, 64, 4, 2)),
            128 => (t(32, 64, 4, 1), t(64, 32, 4, 2)),
            256 => (t(16, 64, 4, 1), t(64, 32, 8, 2)),
            512 => (t(16, 64, 8, 1), t(32, 32, 8, 1)),
            _ => return None,
        })
    }
    /// `bwd_smem_bytes`: R1, R2 [D][rows+8], C1, C2 [stages][D][cols+8], dS (and P for dK/dV) [rows][cols+8]
    /// bf16, lse and delta for the tile's queries in f32 (per stage for dK/dV).
    fn smem(self, d: usize, key_rows: bool) -> usize {
        let (r, c, st) = (self.rows, self.cols, self.stages);
        let tiles = if key_rows { 2 } else { 1 };
        2 * (2 * d * (r + 8) + st * 2 * d * (c + 8) + tiles * r * (c + 8)) + 8 * if key_rows { st * c } else { r }
    }
}

/// A CUDA-core kernel instantiation: the register-array bound DMAX on the head dim, and its square tile of
/// queries x keys (4 threads per tile row); `tile_for` in kernels/attention.cu.
#[derive(Clone, Copy)]
struct Generic {
    dmax: usize,
    tile: usize,
}

impl Generic {
    fn for_head_dim(d: usize) -> Result<Generic> {
        let dmax = match d {
            0..=32 => 32,
            33..=64 => 64,
            65..=128 => 128,
            129..=256 => 256,
            257..=512 => 512,
            _ => bail!("attention: head dim {d} > 512 is not supported on CUDA (use more heads)"),
        };
        Ok(Generic { dmax, tile: if dmax > 256 { 16 } else { 32 } })
    }
    fn threads(self) -> u32 {
        4 * self.tile as u32
    }
}

/// Whether the grids (query or key tiles x batch*heads) would have no blocks: T = 0 or B = 0, when every
/// output is empty. `attention` refuses such inputs; the launchers still never launch 0 blocks.
fn no_blocks(dims: Dims) -> Result<bool> {
    if dims.heads == 0 {
        bail!("attention: heads must be at least 1 (B = {}, C = {}, T = {})", dims.batch, dims.channels, dims.tokens);
    }
    Ok(dims.tokens == 0 || dims.batch == 0)
}

fn params(dims: Dims) -> Result<AttnParams> {
    let bh = dims.batch * dims.heads;
    if bh > 65535 {
        bail!("attention: batch x heads = {bh} exceeds the CUDA grid limit 65535");
    }
    if dims.batch * dims.channels * dims.tokens > i32::MAX as usize {
        // Offsets inside the kernels are 64-bit, but sizes travel as i32.
        bail!("attention: tensor of {} elements is too large", dims.batch * dims.channels * dims.tokens);
    }
    Ok(AttnParams {
        batch: dims.batch as i32,
        channels: dims.channels as i32,
        tokens: dims.tokens as i32,
        heads: dims.heads as i32,
        head_dim: dims.head_dim() as i32,
        scale: dims.scale() as f32,
        ..Default::default()
    })
}

/// Loads the kernel and raises its dynamic shared memory limit when it needs more than the default 48 KiB.
fn func(gpu: &Gpu, module: &'static str, name: &str, smem: usize) -> Result<cudarc::driver::CudaFunction> {
    let f = gpu.func(module, name)?;
    if smem > 48 * 1024 {
        f.set_attribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem as i32)
            .map_err(|e| anyhow::anyhow!("attention: {name} needs {smem} bytes of shared memory: {e:?}"))?;
    }
    Ok(f)
}

fn check_dtype(op: &str, xs: &[&CudaStorage]) -> Result<DType> {
    let dt = xs[0].dtype();
    for x in xs {
        if x.dtype() != dt {
            bail!("{op}: inputs of different dtypes ({} and {})", dt, x.dtype());
        }
    }
    Ok(dt)
}

/// Returns (out [B, C, T] in the input dtype, lse [B, heads, T] in f32).
pub fn forward(
    gpu: &Gpu,
    q: &CudaStorage,
    k: &CudaStorage,
    v: &CudaStorage,
    dims: Dims,
) -> Result<(CudaStorage, CudaStorage)> {
    let dt = check_dtype("attention", &[q, k, v])?;
    let t = dims.tokens;
    let out = CudaStorage::alloc(gpu, dt, q.len())?;
    let lse: GpuBuf<f32> = gpu.alloc(dims.batch * dims.heads * t)?;
    if no_blocks(dims)? {
        // T = 0 or B = 0: both outputs are empty, and a grid of 0 blocks is an invalid launch.
        return Ok((out, CudaStorage::F32(lse)));
    }
    let mut p = params(dims)?;
    let d = dims.head_dim();
    (p.q, p.k, p.v, p.o, p.lse) = (q.ptr(), k.ptr(), v.ptr(), out.ptr(), lse.ptr());
    let bh = (dims.batch * dims.heads) as u32;
    if dt == DType::BF16 && d == 512 {
        // kernels/attention_fwd_wide.cu (fwd_wide_smem_bytes): Qs [D][BQ+8] + Ks, Vs [D][BK+8] + Ps [BQ][BK+8]
        // bf16, the row maxima and sums of the column groups [CG][BQ] in f32.
        let (bq, bk, warps) = (32, 32, 8); // FWD_WIDE(512, 32, 32, 8)
        let groups = warps / (bq / 16);
        let smem = 2 * (d * (bq + 8) + 2 * d * (bk + 8) + bq * (bk + 8)) + 8 * groups * bq;
        let f = func(gpu, ptx::ATTENTION_FWD_WIDE, "attention_fwd_mma_d512_bf16", smem)?;
        launch!(gpu, f, ((t.div_ceil(bq) as u32, bh), warps as u32 * 32, smem), p)?;
    } else if dt == DType::BF16 && matches!(d, 32 | 64 | 128 | 256) {
        // bf16 Qs [D][BQ+8] + Ks, Vs [STAGES][D][BK+8] with BK = 64 for D <= 64, else 32, and two stages
        // below D = 256 (fwd_mma<D, BK, STAGES> in the kernel file).
        let bk = if d <= 64 { 64 } else { 32 };
        let stages = if d < 256 { 2 } else { 1 };
        let smem = 2 * d * (MMA_BQ + 8 + 2 * stages * (bk + 8));
        let name = format!("attention_fwd_mma_d{d}_bf16");
        launch!(gpu, func(gpu, ptx::ATTENTION, &name, smem)?, ((t.div_ceil(MMA_BQ) as u32, bh), MMA_THREADS, smem), p)?;
    } else {
        let g = Generic::for_head_dim(d)?;
        let tile = g.tile;
        // Qs [D][GQ] + Ks [D][GK] + Vs [D][GK+1] + Ps [GQ][GK+1], floats (GQ = GK = tile).
        let smem = 4 * (d * (3 * tile + 1) + tile * (tile + 1));
        let name = typed_name(&format!("attention_fwd_d{}", g.dmax), dt)?;
        launch!(gpu, func(gpu, ptx::ATTENTION, &name, smem)?, ((t.div_ceil(tile) as u32, bh), g.threads(), smem), p)?;
    }
    Ok((out, CudaStorage::F32(lse)))
}

/// Returns [dq, dk, dv] in the input dtype.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    gpu: &Gpu,
    q: &CudaStorage,
    k: &CudaStorage,
    v: &CudaStorage,
    o: &CudaStorage,
    dout: &CudaStorage,
    lse: &CudaStorage,
    dims: Dims,
) -> Result<[CudaStorage; 3]> {
    let dt = check_dtype("attention backward", &[q, k, v, o, dout])?;
    if lse.dtype() != DType::F32 {
        bail!("attention backward: the saved log-sum-exp must be f32, got {}", lse.dtype());
    }
    let (dq, dk, dv) = (
        CudaStorage::alloc(gpu, dt, q.len())?,
        CudaStorage::alloc(gpu, dt, q.len())?,
        CudaStorage::alloc(gpu, dt, q.len())?,
    );
    if no_blocks(dims)? {
        // Empty gradients (T = 0 or B = 0); no launch with a grid of 0 blocks.
        return Ok([dq, dk, dv]);
    }
    let mut p = params(dims)?;
    let (d, t) = (dims.head_dim(), dims.tokens);
    let delta: GpuBuf<f32> = gpu.alloc(dims.batch * dims.heads * t)?;
    (p.q, p.k, p.v, p.o, p.dout, p.lse, p.delta) =
        (q.ptr(), k.ptr(), v.ptr(), o.ptr(), dout.ptr(), lse.ptr(), delta.ptr());
    (p.dq, p.dk, p.dv) = (dq.ptr(), dk.ptr(), dv.ptr());
    let bh = (dims.batch * dims.heads) as u32;

    let delta_block = 128u32;
    let name = typed_name("attention_delta", dt)?;
    launch!(gpu, gpu.func(ptx::ATTENTION, &name)?, (((t as u32).div_ceil(delta_block), bh), delta_block, 0), p)?;

    if let (DType::BF16, AttentionBwd::TensorCore, Some((dkdv_tiles, dq_tiles))) =
        (dt, AttentionBwd::selected()?, BwdTiles::for_head_dim(d))
    {
        for (tiles, key_rows, kernel) in [(dkdv_tiles, true, "dkdv"), (dq_tiles, false, "dq")] {
            let smem = tiles.smem(d, key_rows);
            let name = format!("attention_bwd_mma_{kernel}_d{d}_bf16");
            let f = func(gpu, ptx::ATTENTION_BWD_MMA, &name, smem)?;
            launch!(gpu, f, ((t.div_ceil(tiles.rows) as u32, bh), tiles.warps * 32, smem), p)?;
        }
        return Ok([dq, dk, dv]);
    }

    let g = Generic::for_head_dim(d)?;
    let (dm, tile) = (g.dmax, g.tile);
    // Ks [D][GK] + Vs [D][GK] + Qs [D][GQ+1] + dOs [D][GQ+1] + Ps, dSs [GK][GQ+1] + lse, delta [GQ], floats.
    let smem = 4 * (d * (4 * tile + 2) + 2 * tile * (tile + 1) + 2 * tile);
    let name = typed_name(&format!("attention_bwd_dkdv_d{dm}"), dt)?;
    launch!(gpu, func(gpu, ptx::ATTENTION, &name, smem)?, ((t.div_ceil(tile) as u32, bh), g.threads(), smem), p)?;

    // Qs [D][GQ] + dOs [D][GQ] + Ks [D][GK+1] + Vs [D][GK] + dSs [GQ][GK+1], floats.
    let smem = 4 * (d * (4 * tile + 1) + tile * (tile + 1));
    let name = typed_name(&format!("attention_bwd_dq_d{dm}"), dt)?;
    launch!(gpu, func(gpu, ptx::ATTENTION, &name, smem)?, ((t.div_ceil(tile) as u32, bh), g.threads(), smem), p)?;
    Ok([dq, dk, dv])
}
