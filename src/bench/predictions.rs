//! What each bench case should reach on the H200 in bf16, written down before any GPU has run a kernel:
//! a range of its fraction of the nearer ceiling (the bench's `frac_of_ceiling`: achieved TFLOP/s over the
//! run's peak, or GB/s over its measured copy bandwidth), with the reason from the kernel's design. A bf16
//! CUDA run marks each timed direction hit (inside the range), below or above; the first run on hardware
//! is judged against these numbers, and they are corrected only by a measurement. `gsure bench ops
//! --predictions` prints them with each case's floor at the reference ceilings (docs/kernel-predictions.md).
use super::report::{REFERENCE_BF16_TFLOPS, REFERENCE_MEM_GBPS};
use super::BenchCase;
use serde::Serialize;
use std::fmt::Write as _;

/// A predicted range of `frac_of_ceiling` and why.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Prediction {
    pub lo: f64,
    pub hi: f64,
    pub why: &'static str,
}

const fn p(lo: f64, hi: f64, why: &'static str) -> Option<Prediction> {
    Some(Prediction { lo, hi, why })
}

/// How a measured fraction compares with its prediction.
pub fn verdict(measured: f64, p: &Prediction) -> &'static str {
    if measured < p.lo {
        "below"
    } else if measured > p.hi {
        "above"
    } else {
        "hit"
    }
}

/// The case's spatial size H·W (0 where its parameters have none).
fn spatial(case: &BenchCase) -> usize {
    let get = |k: &str| case.params.get(k).and_then(|v| v.as_u64()).unwrap_or(0) as usize;
    get("h") * get("w")
}

/// An attention case's head dim C / heads (0 for other ops).
fn head_dim(case: &BenchCase) -> usize {
    let get = |k: &str| case.params.get(k).and_then(|v| v.as_u64()).unwrap_or(0) as usize;
    get("c").checked_div(get("heads")).unwrap_or(0)
}

/// The prediction for one direction (`backward` false: forward) of `case` in bf16 on the H200.
pub fn predicted(case: &BenchCase, backward: bool) -> Option<Prediction> {
    if case.label.ends_with("[tf32]") {
        return None; // f32 runs only: the bf16 predictions do not judge them
    }
    let elems = if backward { case.elems_bwd } else { case.elems_fwd };
    // Below ~4 MB a memory-bound kernel is mostly launch and tail (~3-5 µs against a floor of ~1 µs).
    let small = elems < 4e6;
    let stride = case.params.get("stride").and_then(|v| v.as_u64()).unwrap_or(1);
    let k = case.params.get("k").and_then(|v| v.as_u64()).unwrap_or(3);
    let wgmma = case.label.ends_with("[wgmma]");
    let tma = case.label.ends_with("[tma]");
    let cuda_core = case.label.ends_with("[cuda-core bwd]");
    let epilogue = case.label.contains(" +temb") || case.label.contains(" +residual");
    let dropout = case.params.get("dropout").and_then(|v| v.as_f64()).unwrap_or(0.0) > 0.0;
    match (case.op, backward) {
        ("conv2d", false) if wgmma => p(
            0.25,
            0.45,
            "implicit GEMM on the wgmma GEMM's main loop, 16-byte cp.async gathers from channels-last copies: \
             the two transposes (x and w, ~70 MB for 128×128×32×32) and 2-byte NCHW stores of the output cost \
             ~20-30 % beside the mainloop's 0.35-0.60",
        ),
        ("conv2d", true) if wgmma && stride == 1 => p(
            0.20,
            0.40,
            "dgrad as one wgmma implicit GEMM on channels-last dy (the sub-pixel kernel's single class), wgrad as \
             a split-K wgmma GEMM over N·H·W with an f32 slab sum; dy and x each transposed to channels-last once \
             more",
        ),
        ("conv2d", true) if wgmma => p(
            0.10,
            0.25,
            "stride 2: dgrad as four sub-pixel wgmma GEMMs (1, 2, 2 and 4 taps of C_out: short reductions, the \
             1-tap class a K of 128 = two k tiles) and 2-byte scattered stores; wgrad as at stride 1 on a quarter \
             of the pixels",
        ),
        ("norm_conv2d", false) if dropout => p(
            0.06,
            0.16,
            "the fused forward's 0.08-0.18 with a splitmix64 hash (two 64-bit multiplies) per gathered element \
             on top; the PyTorch reference writes and reads the dropped tensor and its mask (3-4 more passes)",
        ),
        ("norm_conv2d", true) if dropout => p(
            0.03,
            0.12,
            "the fused backward's 0.04-0.13 with the mask drawn again in the weight gradient's gather and \
             dropout's backward over the input gradient (2 passes of x's size)",
        ),
        ("norm_conv2d", false) => p(
            0.08,
            0.18,
            "the plain forward's gather with the normalisation in it (the (scale, shift) pair from L1, an FMA and \
             a SiLU per gathered element: ~10-20 % slower than the 0.10-0.20) and a statistics pass over x \
             (34 MB, ~8 µs); the PyTorch reference writes and reads the normalised tensor (2 more passes)",
        ),
        ("norm_conv2d", true) => p(
            0.04,
            0.13,
            "the plain backward's 0.05-0.15 with the normalisation re-applied in the weight gradient's gather and \
             the group norm's two-pass backward over x and the input gradient",
        ),
        ("conv2d", false) if epilogue => p(
            0.10,
            0.20,
            "the plain forward's 0.10-0.20: the epilogue reads one residual value per output (or one per image \
             and channel) beside the GEMM's ~50 µs floor; PyTorch's reference adds in a separate kernel (2-3 \
             more passes of y, 34 MB each: ~16-24 µs at 4.3 TB/s), which the fused one does not pay",
        ),
        ("conv2d", false) if k == 1 => p(0.03, 0.12, "1×1: a thin GEMM (K = C_in) through the 3×3 kernel's gather"),
        ("conv2d", false) if stride == 2 => p(0.05, 0.15, "stride 2: a quarter of the columns, same scalar gather"),
        ("conv2d", false) if spatial(case) <= 64 => {
            p(0.05, 0.15, "8×8 and 4×4: few GEMM columns per block, the grid barely fills 132 SMs")
        }
        ("conv2d", false) => p(
            0.10,
            0.20,
            "mma.sync m16n8k16, operands gathered one scalar at a time in NCHW with bounds checks, two-deep \
             register prefetch, no cp.async, one 256-thread block per SM: 80-150 TFLOP/s",
        ),
        ("conv2d", true) if stride == 2 => p(
            0.05,
            0.15,
            "stride 2: the input gradient as four sub-pixel GEMMs (9 taps where zero insertion multiplies 36, no \
             division per element) and the weight gradient, both on the scalar NCHW gather",
        ),
        ("conv2d", true) => p(
            0.05,
            0.15,
            "input and weight gradients on the forward's scheme; wgrad reduces over N·H·W with a final sum pass",
        ),
        ("attention", false) if head_dim(case) > 256 && spatial(case) <= 64 => p(
            0.01,
            0.06,
            "D = 512 at T = 64: two 32-query blocks per head, each loading two K/V tiles of 64 KiB and waiting",
        ),
        ("attention", false) if head_dim(case) > 256 => p(
            0.05,
            0.15,
            "D = 512 on attention_fwd_wide.cu: output split by channels over 8 warps (one block per SM by \
             registers and shared memory), each K/V tile loaded and waited for, 4 barriers a tile, the four column \
             groups of a row each load the same Q fragments",
        ),
        ("attention", false) if spatial(case) <= 64 => {
            p(0.01, 0.08, "T = 64: a handful of query tiles per head, the grid leaves most SMs idle")
        }
        ("attention", false) if head_dim(case) <= 128 => p(
            0.10,
            0.30,
            "mma.sync forward with a two-stage K/V ring (the next tile's cp.async overlaps this tile's MMAs), P \
             straight from the S accumulators, 2 barriers a tile",
        ),
        ("attention", false) => p(
            0.05,
            0.20,
            "mma.sync forward at D = 256: one K/V stage (a second would halve the blocks per SM), each tile loaded \
             and waited for before its MMAs",
        ),
        ("attention", true) if cuda_core && spatial(case) <= 64 => p(0.002, 0.02, "CUDA-core f32 backward at T = 64"),
        ("attention", true) if cuda_core => p(
            0.005,
            0.03,
            "backward on CUDA cores in f32 (FFMA is ~1/12 of the tensor peak), two passes that each recompute S, \
             4 warps per SM at D = 256",
        ),
        ("attention", true) if spatial(case) <= 64 => p(
            0.02,
            0.08,
            "tensor-core backward at T = 64: each block loads one or two column tiles, waits, and runs a few tile \
             GEMMs; latency-bound, and the dQ pass recomputes S and dP",
        ),
        ("attention", true) => p(
            0.08,
            0.20,
            "mma.sync backward: 7 tile GEMMs for the 5 the FLOPs count (dQ's pass recomputes S and dP, for \
             determinism), 3 barriers a tile, 128-175 registers (1-4 blocks per SM); the next column tile's \
             copies overlap this tile's MMAs except in dK/dV at D >= 128 and dQ at D = 512",
        ),
        ("linear", _) => p(0.005, 0.05, "17-134 MFLOP: a few µs of launch and tail against a floor under 0.2 µs"),
        ("matmul", false) if tma => p(
            0.55,
            0.80,
            "the wgmma main loop fed by TMA from a producer warp (full/empty mbarriers, 4 stages, 90 registers): \
             no address arithmetic or cp.async issue in the math warps, no block-wide barrier per k tile",
        ),
        ("matmul", true) if tma => p(0.50, 0.75, "the nt and tn GEMMs on the TMA kernel"),
        ("matmul", false) if wgmma => p(
            0.35,
            0.60,
            "wgmma m64n128k16, 128×128×64 tiles in a 4-stage cp.async ring (no TMA, no producer warp), one group in \
             flight, one or two 256-thread blocks per SM by registers (118-142; the 129 KiB ring allows one), 7.8 waves of 1024 tiles on 132 SMs",
        ),
        ("matmul", true) if wgmma => {
            p(0.30, 0.55, "the nt and tn GEMMs on the same kernel (MN-major operands through wgmma's transpose bits)")
        }
        ("matmul", false) => p(
            0.25,
            0.45,
            "mma.sync bf16 with 128×128 tiles and cp.async double buffering; mma.sync reaches ~60 % of wgmma's peak \
             at best",
        ),
        ("matmul", true) => p(0.20, 0.45, "two GEMMs of the forward's size, one with a transposed operand layout"),
        ("group_norm", _) if small => p(0.10, 0.40, "2 MB of activations: launch-bound"),
        ("group_norm", false) => {
            p(0.30, 0.60, "statistics then apply: x read twice and written once (2/3 of the minimal-bytes rate)")
        }
        ("group_norm", true) => p(0.20, 0.50, "two reductions (Σdy, Σdy·x̂) before the input gradient"),
        ("silu" | "add" | "affine" | "where" | "dropout" | "mul_along", _) if small => {
            p(0.20, 0.50, "4 MB or less: launch and tail")
        }
        ("silu" | "add" | "affine" | "where", _) => {
            p(0.65, 0.90, "one pass, 16-byte loads and stores per thread (pointwise.cuh), no division")
        }
        ("mul_along", _) => {
            p(0.65, 0.90, "one pass, 16-byte vectors inside one channel (H·W % 8 == 0), no division per element")
        }
        ("dropout", _) => p(
            0.55,
            0.85,
            "one pass with 16-byte accesses, but a splitmix64 hash (two 64-bit multiplies) per element: near the \
             integer throughput for bf16",
        ),
        ("sum_all", _) if small => p(0.05, 0.25, "0.4 M elements: two launches (partials, final) for ~1 µs of data"),
        ("sum_all", _) => p(0.40, 0.75, "partial sums per block, then one final block"),
        ("concat", _) if elems < 1.5e7 => {
            p(0.30, 0.60, "16-byte slab copies, one image row per grid row, 10-25 MB: launch and tail weigh")
        }
        ("concat", _) => p(0.55, 0.85, "16-byte slab copies (channel_copy_fwd_u128), no index arithmetic per element"),
        ("upsample2x" | "avg_pool2x", _) if elems < 1.5e7 => p(
            0.25,
            0.55,
            "4 columns a thread (8- to 32-byte accesses), one 32-bit division per 4 elements, 10-25 MB",
        ),
        ("upsample2x" | "avg_pool2x", _) => {
            p(0.55, 0.85, "4 columns a thread (8- to 32-byte accesses), one 32-bit division per 4 elements")
        }
        ("masked_mse" | "gsure_loss", _) if small => p(0.05, 0.30, "under 4 MB and a two-pass row reduction"),
        ("masked_mse" | "gsure_loss", _) => p(0.30, 0.60, "fused loss, per-row partial sums then a final pass"),
        ("embedding", _) => p(0.001, 0.02, "16 k elements: one launch for nanoseconds of data"),
        ("masked_fft2c" | "masked_ifft2c", _) if small => p(0.05, 0.30, "small images: one fused kernel, launch-bound"),
        ("masked_fft2c" | "masked_ifft2c", _) => p(
            0.15,
            0.40,
            "a row pass and a column pass, each reading and writing the whole image (2× the minimal bytes); 320 \
             = 2⁶·5 mixed radix",
        ),
        _ => None,
    }
}

/// The floor of one direction at the reference ceilings, in µs: the larger of FLOPs over the bf16 peak and
/// bf16 bytes over the copy bandwidth.
fn floor_us(flops: f64, elems: f64) -> f64 {
    let compute = flops / (REFERENCE_BF16_TFLOPS * 1e12);
    let memory = 2.0 * elems / (REFERENCE_MEM_GBPS * 1e9);
    1e6 * compute.max(memory)
}

/// Every case's predictions as a markdown table, with its floors at the reference ceilings.
pub fn table(cases: &[BenchCase]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Predicted kernel speed on the H200 (bf16), written before any GPU run\n");
    let _ = writeln!(
        s,
        "Written by `gsure bench ops --predictions` from `src/bench/predictions.rs` (regenerate it when they\n\
         change). Each range is the fraction of the nearer ceiling (`%peak` in `gsure bench ops`:\n\
         achieved TFLOP/s over the run's bf16 peak, or minimal bytes over its measured copy bandwidth) that the\n\
         case's kernel should reach, from its design; a bf16 CUDA run marks every direction hit, below or above.\n\
         Floors are at the reference ceilings ({REFERENCE_BF16_TFLOPS:.0} TFLOP/s bf16, {:.1} TB/s copy, the H200\n\
         lent to this project), the larger of FLOPs/peak and bytes/bandwidth. Nothing here has been measured.\n",
        REFERENCE_MEM_GBPS / 1e3
    );
    let _ = writeln!(s, "| op | case | dir | floor µs | predicted % of ceiling | why |");
    let _ = writeln!(s, "|---|---|---|---:|---:|---|");
    for case in cases {
        for (dir, backward, flops, elems) in
            [("fwd", false, case.flops_fwd, case.elems_fwd), ("bwd", true, case.flops_bwd, case.elems_bwd)]
        {
            if backward && elems == 0.0 {
                continue;
            }
            let Some(p) = predicted(case, backward) else { continue };
            let _ = writeln!(
                s,
                "| {} | {} | {dir} | {:.2} | {:.1}-{:.1} | {} |",
                case.op,
                case.label,
                floor_us(flops, elems),
                100.0 * p.lo,
                100.0 * p.hi,
                p.why
            );
        }
    }
    s
}
