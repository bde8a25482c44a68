//! Launchers for kernels/conv.cu (implicit-GEMM convolution; see the header comment of the .cu file for
//! the GEMM each direction computes).
use super::{Epilogue, Geom, Prologue};
use crate::backend::cuda::kernel_choice::{self, KernelFamily, KernelScope};
use crate::backend::cuda::{blocks_for, ptx, typed_name, CudaStorage, Gpu};
use crate::launch;
use crate::ops::dropout::cuda::DropoutArg;
use crate::ops::matmul::cuda::{wgmma_func, Bf16Gemm, WGMMA_SMEM_BYTES};
use crate::DType;
use anyhow::{bail, Result};
use std::sync::atomic::AtomicU8;

/// Mirrors `struct ConvParams` in kernels/conv.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConvParams {
    n: i32,
    c: i32,
    h: i32,
    w: i32,
    co: i32,
    k: i32,
    stride: i32,
    pad: i32,
    ho: i32,
    wo: i32,
    gm: i32,
    gn: i32,
    gk: i32,
    k_split: i32,
    /// The input's prologue: f32 [N, C, 2] (scale, shift) per image and channel, or 0 for none.
    affine: u64,
    silu: i32,
    _pad: i32,
    /// The input's dropout mask (all zero: none).
    drop: DropoutArg,
}
// SAFETY: plain #[repr(C)] struct of i32, one u64 (at offset 56, 8-aligned in both) and a DropoutArg (at 72,
// after the C struct's padding of `silu`, written here as `_pad`): identical in layout to the C struct, 104
// bytes.
unsafe impl cudarc::driver::DeviceRepr for ConvParams {}

/// Mirrors `struct ConvEpilogue` in kernels/conv.cuh: the forward's epilogue operands (0 for absent).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct EpilogueArg {
    bias: u64,
    per_image: u64,
    residual: u64,
    scale: f32,
    _pad: u32,
}
// SAFETY: plain #[repr(C)] struct of three u64 and an f32 (padded to the C struct's 32 bytes).
unsafe impl cudarc::driver::DeviceRepr for EpilogueArg {}

impl EpilogueArg {
    fn of(e: &Epilogue<&CudaStorage>) -> EpilogueArg {
        let ptr = |s: Option<&CudaStorage>| s.map_or(0, |s| s.ptr());
        let (bias, per_image, residual) = (ptr(e.bias), ptr(e.per_image), ptr(e.residual));
        EpilogueArg { bias, per_image, residual, scale: e.scale as f32, _pad: 0 }
    }
}

/// The kernels an f32 convolution runs on (conv.cu): FFMA on the CUDA cores, exact f32 products (the
/// default), or TF32 tensor cores (`mma.sync` m16n8k8: operands rounded to 10 mantissa bits, f32
/// accumulation, as cuDNN's default for f32 convolutions). Verified on the emulated device only: TF32 becomes
/// a candidate for the default once a GPU run shows it faster; `GSURE_F32_CONV=tf32` or `F32Conv::select`
/// picks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum F32Conv {
    Ffma,
    Tf32,
}

impl KernelFamily for F32Conv {
    const ALL: &'static [F32Conv] = &[F32Conv::Ffma, F32Conv::Tf32];
    const ENV: &'static str = "GSURE_F32_CONV";
    const WHAT: &'static str = "f32 convolution kernel";
    fn name(self) -> &'static str {
        match self {
            F32Conv::Ffma => "ffma",
            F32Conv::Tf32 => "tf32",
        }
    }
    fn slot() -> &'static AtomicU8 {
        static SLOT: AtomicU8 = AtomicU8::new(0);
        &SLOT
    }
}

impl F32Conv {
    pub fn parse(s: &str) -> Result<F32Conv> {
        kernel_choice::parse(s)
    }
    pub fn name(self) -> &'static str {
        KernelFamily::name(self)
    }
    /// The kernels every f32 convolution of this process runs on: as `select`ed, else `GSURE_F32_CONV`
    /// (`ffma` or `tf32`), else FFMA.
    pub fn selected() -> Result<F32Conv> {
        kernel_choice::selected()
    }
    pub fn select(kind: F32Conv) {
        kernel_choice::select(kind)
    }
    /// Selects these kernels until the returned scope is dropped, then restores the previous choice.
    pub fn scoped(self) -> KernelScope {
        kernel_choice::scoped(self)
    }
}

/// One conv.cu kernel family: its names' suffix and its block tile (m, n, k) (the F_*, T_* and H_* constants).
#[derive(Clone, Copy, Debug)]
struct Family {
    suffix: &'static str,
    tile: (usize, usize, usize),
}

impl Family {
    /// The family tensors of `dtype` run on: bf16 on mma.sync, f32 as `F32Conv::selected` says.
    fn of(dtype: DType) -> Result<Family> {
        let (suffix, tile) = match dtype {
            DType::BF16 => ("bf16", (128, 128, 32)),
            DType::F32 => match F32Conv::selected()? {
                F32Conv::Ffma => ("f32", (64, 64, 32)),
                F32Conv::Tf32 => ("tf32", (128, 128, 16)),
            },
            other => bail!("conv2d: no CUDA kernels for {other:?} tensors (f32 or bf16)"),
        };
        Ok(Family { suffix, tile })
    }
    fn kernel(self, gpu: &Gpu, dir: &str) -> Result<cudarc::driver::CudaFunction> {
        gpu.func(ptx::CONV, &format!("conv2d_{dir}_{}", self.suffix))
    }
}

/// Kernels index with i32: refuse anything whose element count does not fit.
fn check_i32(g: &Geom, what: &str) -> Result<()> {
    let limit = i32::MAX as usize;
    let biggest = [g.n * g.c * g.h * g.w, g.n * g.co * g.ho * g.wo, g.co * g.kdim()].into_iter().max().unwrap_or(0);
    if biggest >= limit {
        bail!(
            "{what}: a tensor of {biggest} elements (input {:?}, weights {:?}) exceeds the CUDA kernels' 32-bit indexing; \
             split the batch",
            g.x_dims(),
            g.w_dims()
        );
    }
    // Coordinates like oh*stride - pad + kh are int32 in the kernels too.
    if g.h + 2 * g.pad >= 1 << 30 || g.w + 2 * g.pad >= 1 << 30 || g.stride >= 1 << 30 {
        bail!(
            "{what}: padding {} / stride {} too large for the CUDA kernels (input {:?})",
            g.pad,
            g.stride,
            g.x_dims()
        );
    }
    Ok(())
}

fn params(g: &Geom, gm: usize, gn: usize, gk: usize, k_split: usize) -> ConvParams {
    let i = |v: usize| v as i32;
    ConvParams {
        n: i(g.n),
        c: i(g.c),
        h: i(g.h),
        w: i(g.w),
        co: i(g.co),
        k: i(g.k),
        stride: i(g.stride),
        pad: i(g.pad),
        ho: i(g.ho),
        wo: i(g.wo),
        gm: i(gm),
        gn: i(gn),
        gk: i(gk),
        k_split: i(k_split),
        affine: 0,
        silu: 0,
        _pad: 0,
        drop: DropoutArg::default(),
    }
}

impl ConvParams {
    /// These parameters with the input read through `pro` (kernels/conv.cuh `ConvParams::affine`).
    fn with_prologue(self, pro: Option<Prologue<&CudaStorage>>) -> ConvParams {
        match pro {
            Some(pro) => ConvParams {
                affine: pro.affine.ptr(),
                silu: pro.silu as i32,
                drop: DropoutArg::of(pro.dropout),
                ..self
            },
            None => self,
        }
    }
}

/// Launches one direction as a GEMM of gm x gn over gk, with `splits` slices of the reduction on grid z.
/// (k per split, number of splits) for a reduction of `gk` in k tiles of `bk`, asked to split `splits`
/// ways: each split covers a whole number of k tiles (no tile straddles two splits) and none is empty. An
/// empty reduction (gk = 0: no input channels, or no output channels in dgrad) still runs one split, whose
/// blocks write 0 (+ bias).
fn split_plan(gk: usize, bk: usize, splits: usize) -> (usize, usize) {
    let per_split = gk.div_ceil(bk).div_ceil(splits.max(1)).max(1) * bk;
    (per_split, gk.div_ceil(per_split).max(1))
}

/// What grid z of a conv.cu launch enumerates.
#[derive(Clone, Copy)]
enum Grid {
    /// Slices of the reduction (split-K, wgrad), as asked; `split_plan` fixes the count.
    Splits(usize),
    /// The stride^2 sub-pixel classes of dgrad, each with its whole reduction.
    Classes(usize),
}

#[allow(clippy::too_many_arguments)]
fn run_gemm(
    gpu: &Gpu,
    dir: &str,
    family: Family,
    g: &Geom,
    (gm, gn, gk): (usize, usize, usize),
    z: Grid,
    ptrs: &[u64; 3],
    pro: Option<Prologue<&CudaStorage>>,
    epilogue: Option<EpilogueArg>,
) -> Result<()> {
    if gm == 0 || gn == 0 {
        // The output (gm x gn) is empty: nothing to launch, and a grid of 0 blocks is invalid.
        return Ok(());
    }
    let (bm, bn, bk) = family.tile;
    let (per_split, z) = match z {
        Grid::Splits(asked) => split_plan(gk, bk, asked),
        Grid::Classes(classes) => (split_plan(gk, bk, 1).0, classes),
    };
    let p = params(g, gm, gn, gk, per_split).with_prologue(pro);
    let grid = (gm.div_ceil(bm) as u32, gn.div_ceil(bn) as u32, z as u32);
    if grid.1 > 65535 || grid.2 > 65535 {
        bail!("conv2d: grid {grid:?} too large for input {:?}, weights {:?}", g.x_dims(), g.w_dims());
    }
    let f = family.kernel(gpu, dir)?;
    let [a, b, c] = *ptrs;
    match epilogue {
        Some(e) => launch!(gpu, f, (grid, 256u32, 0), p, a, b, e, c),
        None => launch!(gpu, f, (grid, 256u32, 0), p, a, b, c),
    }
}

/// y = conv(x, w) through the epilogue `e`, bf16 on the `Bf16Gemm::selected` kernels.
pub fn fwd(gpu: &Gpu, g: &Geom, x: &CudaStorage, w: &CudaStorage, e: Epilogue<&CudaStorage>) -> Result<CudaStorage> {
    fwd_with(gpu, g, x, w, None, e, Bf16Gemm::selected()?)
}

/// `fwd` with x read through the prologue `pro` (if any) and the bf16 kernels named: wgmma
/// (kernels/conv_wgmma.cu) takes C_in % 8 == 0, other shapes run on conv.cu's mma.sync kernel whichever is
/// named.
pub fn fwd_with(
    gpu: &Gpu,
    g: &Geom,
    x: &CudaStorage,
    w: &CudaStorage,
    pro: Option<Prologue<&CudaStorage>>,
    e: Epilogue<&CudaStorage>,
    kernels: Bf16Gemm,
) -> Result<CudaStorage> {
    check_i32(g, "conv2d")?;
    let y = CudaStorage::alloc(gpu, x.dtype(), g.n * g.co * g.ho * g.wo)?;
    let gemm = (g.n * g.ho * g.wo, g.co, g.kdim());
    let e = EpilogueArg::of(&e);
    if x.dtype() == DType::BF16 && g.c.is_multiple_of(8) && kernels.wgmma_convs() {
        wgmma_supported(gpu, "conv2d")?;
        fwd_wgmma(gpu, g, x, w, pro, e, &y)?;
        return Ok(y);
    }
    run_gemm(gpu, "fwd", Family::of(x.dtype())?, g, gemm, Grid::Splits(1), &[x.ptr(), w.ptr(), y.ptr()], pro, Some(e))?;
    Ok(y)
}

/// Why the wgmma convolution cannot run here, as an error, if it cannot.
fn wgmma_supported(gpu: &Gpu, what: &str) -> Result<()> {
    match Bf16Gemm::Wgmma.unsupported(gpu) {
        Some(why) => bail!("{what}: {why}; run with GSURE_BF16_GEMM=mma"),
        None => Ok(()),
    }
}

/// kernels/conv_wgmma.cu's forward: x and w to channels-last, then the implicit GEMM on wgmma.
/// A prologue is applied by the transpose of x.
fn fwd_wgmma(
    gpu: &Gpu,
    g: &Geom,
    x: &CudaStorage,
    w: &CudaStorage,
    pro: Option<Prologue<&CudaStorage>>,
    e: EpilogueArg,
    y: &CudaStorage,
) -> Result<()> {
    let x_nhwc = CudaStorage::alloc(gpu, DType::BF16, g.n * g.c * g.h * g.w)?;
    let w_khwc = CudaStorage::alloc(gpu, DType::BF16, g.co * g.kdim())?;
    nchw_to_nhwc(gpu, x, &x_nhwc, (g.n, g.c, g.h * g.w), pro)?;
    nchw_to_nhwc(gpu, w, &w_khwc, (g.co, g.c, g.k * g.k), None)?;
    fwd_wgmma_nhwc(gpu, g, &x_nhwc, &w_khwc, e, y)
}

/// conv2d_fwd_bf16_wgmma on channels-last x [n, h, w, c] and w [co, kh, kw, c]; y is NCHW.
fn fwd_wgmma_nhwc(
    gpu: &Gpu,
    g: &Geom,
    x: &CudaStorage,
    w: &CudaStorage,
    e: EpilogueArg,
    y: &CudaStorage,
) -> Result<()> {
    let (gm, gn, gk) = (g.n * g.ho * g.wo, g.co, g.kdim());
    if gm == 0 || gn == 0 {
        return Ok(());
    }
    let grid = (gm.div_ceil(128) as u32, gn.div_ceil(128) as u32);
    if grid.1 > 65535 {
        bail!("conv2d: {} output channels need more than a grid's 65535 column tiles", g.co);
    }
    let f = wgmma_func(gpu, ptx::CONV_WGMMA, "conv2d_fwd_bf16_wgmma")?;
    let p = params(g, gm, gn, gk, gk);
    launch!(gpu, f, (grid, 256u32, WGMMA_SMEM_BYTES), p, x.ptr(), w.ptr(), e, y.ptr())
}

/// dst [batches][cols][rows] = src [batches][rows][cols] transposed per batch (bf16), through the prologue
/// `pro` when given (row r of batch b is channel r of image b).
fn nchw_to_nhwc(
    gpu: &Gpu,
    src: &CudaStorage,
    dst: &CudaStorage,
    (batches, rows, cols): (usize, usize, usize),
    pro: Option<Prologue<&CudaStorage>>,
) -> Result<()> {
    if batches == 0 || rows == 0 || cols == 0 {
        return Ok(());
    }
    if batches > 65535 {
        bail!("conv2d: a batch of {batches} is more than the channels-last transpose's 65535 grid layers");
    }
    let grid = (cols.div_ceil(32) as u32, rows.div_ceil(32) as u32, batches as u32);
    let f = gpu.func(ptx::CONV_WGMMA, "conv_nchw_to_nhwc_bf16")?;
    let (affine, silu) = pro.map_or((0, 0), |p| (p.affine.ptr(), p.silu as i32));
    let drop = DropoutArg::of(pro.and_then(|p| p.dropout));
    let dims = (rows as i32, cols as i32);
    launch!(gpu, f, (grid, (32u32, 8u32, 1u32), 0), src.ptr(), dst.ptr(), dims.0, dims.1, affine, silu, drop)
}

/// dx from dy and w, bf16 on the `Bf16Gemm::selected` kernels.
pub fn dgrad(gpu: &Gpu, g: &Geom, dy: &CudaStorage, w: &CudaStorage) -> Result<CudaStorage> {
    dgrad_with(gpu, g, dy, w, Bf16Gemm::selected()?)
}

/// `dgrad` with the bf16 kernels named: wgmma takes C_out % 8 == 0 (kernels/conv_wgmma.cu's sub-pixel
/// input gradient, any stride); other shapes run on conv.cu's mma.sync kernel whichever is named.
pub fn dgrad_with(gpu: &Gpu, g: &Geom, dy: &CudaStorage, w: &CudaStorage, kernels: Bf16Gemm) -> Result<CudaStorage> {
    check_i32(g, "conv2d backward")?;
    let dx = CudaStorage::alloc(gpu, dy.dtype(), g.n * g.c * g.h * g.w)?;
    if dy.dtype() == DType::BF16 && g.co.is_multiple_of(8) && kernels.wgmma_convs() {
        wgmma_supported(gpu, "conv2d backward")?;
        dgrad_wgmma(gpu, g, dy, w, &dx)?;
        return Ok(dx);
    }
    // One GEMM per sub-pixel class (ih % s, iw % s) on grid z (SubPixel in conv.cuh), sized for the largest:
    // class 0 has the most pixels, ceil(H/s) x ceil(W/s), and no class more than ceil(K/s)^2 taps.
    let s = g.stride;
    let gemm = (g.n * g.h.div_ceil(s) * g.w.div_ceil(s), g.c, g.co * g.k.div_ceil(s).pow(2));
    run_gemm(
        gpu,
        "dgrad",
        Family::of(dy.dtype())?,
        g,
        gemm,
        Grid::Classes(s * s),
        &[dy.ptr(), w.ptr(), dx.ptr()],
        None,
        None,
    )?;
    Ok(dx)
}

/// kernels/conv_wgmma.cu's input gradient: dy to channels-last, the classes' weight matrices, then one
/// implicit GEMM per sub-pixel class (ih % s, iw % s) on grid z, sized for the most pixels (class 0's) and
/// the most taps any class has.
fn dgrad_wgmma(gpu: &Gpu, g: &Geom, dy: &CudaStorage, w: &CudaStorage, dx: &CudaStorage) -> Result<()> {
    let s = g.stride;
    let (gm, gn, gk) = (g.n * g.h.div_ceil(s) * g.w.div_ceil(s), g.c, g.co * g.k.div_ceil(s).pow(2));
    if gm == 0 || gn == 0 {
        return Ok(());
    }
    let grid = (gm.div_ceil(128) as u32, gn.div_ceil(128) as u32, (s * s) as u32);
    if grid.1 > 65535 || grid.2 > 65535 {
        bail!("conv2d backward: grid {grid:?} too large for input {:?}, weights {:?}", g.x_dims(), g.w_dims());
    }
    let p = params(g, gm, gn, gk, gk);
    let dy_nhwc = CudaStorage::alloc(gpu, DType::BF16, g.n * g.co * g.ho * g.wo)?;
    nchw_to_nhwc(gpu, dy, &dy_nhwc, (g.n, g.co, g.ho * g.wo), None)?;
    // the classes' matrices hold every tap once: w's size
    let w_cls = CudaStorage::alloc(gpu, DType::BF16, g.co * g.kdim())?;
    let per_class = g.c * g.co * g.k.div_ceil(s).pow(2);
    let f = gpu.func(ptx::CONV_WGMMA, "conv_dgrad_weights_bf16")?;
    let wgrid = (blocks_for(per_class, 256, 4), 1u32, (s * s) as u32);
    launch!(gpu, f, (wgrid, 256u32, 0), p, w.ptr(), w_cls.ptr())?;
    let f = wgmma_func(gpu, ptx::CONV_WGMMA, "conv2d_dgrad_bf16_wgmma")?;
    launch!(gpu, f, (grid, 256u32, WGMMA_SMEM_BYTES), p, dy_nhwc.ptr(), w_cls.ptr(), dx.ptr())
}

/// Blocks per SM that keep the GPU busy: two waves of one-block-per-SM kernels.
const BLOCKS_PER_SM: usize = 2;
/// Fewest k tiles a split should cover, so that summing the partial slabs stays a small part of the work.
const MIN_TILES_PER_SPLIT: usize = 8;

/// dw from x and dy: the reduction over N*H_out*W_out is split across blocks (split-K); split z writes its
/// partial dw to slab z of an f32 workspace and `conv2d_wgrad_sum` adds the slabs in split order into dw's
/// dtype, so dw is bitwise reproducible (no atomics). One f32 split is the result itself.
pub fn wgrad(gpu: &Gpu, g: &Geom, x: &CudaStorage, dy: &CudaStorage) -> Result<CudaStorage> {
    wgrad_with(gpu, g, x, None, dy, Bf16Gemm::selected()?)
}

/// Splits of a reduction of `gk` in k tiles of `bk` for a GEMM of `tiles` block tiles: enough blocks for
/// BLOCKS_PER_SM waves, each split at least MIN_TILES_PER_SPLIT k tiles long.
fn wgrad_splits(gpu: &Gpu, tiles: usize, gk: usize, bk: usize) -> usize {
    (gpu.sm_count() as usize * BLOCKS_PER_SM).div_ceil(tiles.max(1)).min(gk.div_ceil(bk * MIN_TILES_PER_SPLIT)).max(1)
}

/// `wgrad` with x read through the prologue `pro` (if any) and the bf16 kernels named: wgmma takes
/// C_in % 8 == 0 and H_out·W_out % 8 == 0; other shapes run on conv.cu's mma.sync kernel whichever is named.
pub fn wgrad_with(
    gpu: &Gpu,
    g: &Geom,
    x: &CudaStorage,
    pro: Option<Prologue<&CudaStorage>>,
    dy: &CudaStorage,
    kernels: Bf16Gemm,
) -> Result<CudaStorage> {
    check_i32(g, "conv2d backward")?;
    let dtype = x.dtype();
    let (gm, gn, gk) = (g.co, g.kdim(), g.n * g.ho * g.wo);
    let n = gm * gn;
    if gk == 0 || n == 0 {
        // An empty batch adds nothing: dw is zero (or empty).
        return CudaStorage::zeros(gpu, dtype, n);
    }
    if dtype == DType::BF16 && g.c.is_multiple_of(8) && (g.ho * g.wo).is_multiple_of(8) && kernels.wgmma_convs() {
        wgmma_supported(gpu, "conv2d backward")?;
        return wgrad_wgmma(gpu, g, x, pro, dy);
    }
    let family = Family::of(dtype)?;
    let (bm, bn, bk) = family.tile;
    let asked = wgrad_splits(gpu, gm.div_ceil(bm) * gn.div_ceil(bn), gk, bk);
    let splits = split_plan(gk, bk, asked).1;
    let partial = CudaStorage::alloc(gpu, DType::F32, splits * n)?;
    let ptrs = [x.ptr(), dy.ptr(), partial.ptr()];
    run_gemm(gpu, "wgrad", family, g, (gm, gn, gk), Grid::Splits(asked), &ptrs, pro, None)?;
    if splits == 1 && dtype == DType::F32 {
        return Ok(partial);
    }
    let dw = CudaStorage::alloc(gpu, dtype, n)?;
    let name = typed_name("conv2d_wgrad_sum", dtype)?;
    launch!(
        gpu,
        gpu.func(ptx::CONV, &name)?,
        (blocks_for(n, 256, 4), 256u32, 0),
        partial.ptr(),
        dw.ptr(),
        n as i64,
        splits as i32
    )?;
    Ok(dw)
}

/// kernels/conv_wgmma.cu's weight gradient: x to channels-last, the split-K GEMM into f32 slabs of
/// [co][kh][kw][c], then their sum in split order reordered to [co][c][kh][kw].
fn wgrad_wgmma(
    gpu: &Gpu,
    g: &Geom,
    x: &CudaStorage,
    pro: Option<Prologue<&CudaStorage>>,
    dy: &CudaStorage,
) -> Result<CudaStorage> {
    let (gm, gn, gk) = (g.co, g.kdim(), g.n * g.ho * g.wo);
    let n = gm * gn;
    let x_nhwc = CudaStorage::alloc(gpu, DType::BF16, g.n * g.c * g.h * g.w)?;
    nchw_to_nhwc(gpu, x, &x_nhwc, (g.n, g.c, g.h * g.w), pro)?;
    let bk = 64;
    let (per_split, splits) = split_plan(gk, bk, wgrad_splits(gpu, gm.div_ceil(128) * gn.div_ceil(128), gk, bk));
    let grid = (gm.div_ceil(128) as u32, gn.div_ceil(128) as u32, splits as u32);
    if grid.1 > 65535 || grid.2 > 65535 {
        bail!("conv2d backward: grid {grid:?} too large for input {:?}, weights {:?}", g.x_dims(), g.w_dims());
    }
    let partial = CudaStorage::alloc(gpu, DType::F32, splits * n)?;
    let f = wgmma_func(gpu, ptx::CONV_WGMMA, "conv2d_wgrad_bf16_wgmma")?;
    let p = params(g, gm, gn, gk, per_split);
    launch!(gpu, f, (grid, 256u32, WGMMA_SMEM_BYTES), p, x_nhwc.ptr(), dy.ptr(), partial.ptr())?;
    let dw = CudaStorage::alloc(gpu, DType::BF16, n)?;
    let (co, c, kk) = (g.co as i32, g.c as i32, (g.k * g.k) as i32);
    launch!(
        gpu,
        gpu.func(ptx::CONV_WGMMA, "conv_wgrad_sum_khwc_bf16")?,
        (blocks_for(n, 256, 4), 256u32, 0),
        partial.ptr(),
        dw.ptr(),
        co,
        c,
        kk,
        splits as i32
    )?;
    Ok(dw)
}
