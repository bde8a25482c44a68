// attention.cuh: what the attention kernels (attention.cu, attention_bwd_mma.cu, attention_fwd_wide.cu) share:
// the parameter block, where a head starts, and the tensor-core kernels' tile loads and stores and their
// per-warp tile products (mma.cuh has the fragment layouts; g = lane / 4, t = lane % 4).
#pragma once
#include "mma.cuh"

// Mirrors AttnParams in src/ops/attention/cuda.rs. Pointers the kernel does not use are null.
struct AttnParams {
  const void* q;
  const void* k;
  const void* v;
  void* o;
  const void* dout;
  float* lse;    // [B, heads, T]
  float* delta;  // [B, heads, T]
  void* dq;
  void* dk;
  void* dv;
  int B, C, T, heads, D;
  float scale;  // 1 / sqrt(D)
};

__device__ __forceinline__ int64_t head_offset(const AttnParams& p) {
  const int bh = blockIdx.y, b = bh / p.heads, h = bh % p.heads;
  return ((int64_t)b * p.C + (int64_t)h * p.D) * p.T;
}

// dst[d * ld + j] = src[d * T + t0 + j] for d < D, j < cols, zero past T (bf16 shared memory), by every thread
// of the block. With T % 8 == 0 every row start (d * T) and tile column (a multiple of 8) is 16-byte aligned, as
// cp.async needs, and a chunk of 8 tokens is either all inside T or all outside: the copies are issued as
// cp.async into the open group (the caller commits and waits). Other T take scalar loads, complete on return.
__device__ __forceinline__ void issue_tile_bf16(bf16* dst, int ld, const bf16* src, int D, int Tn, int t0, int cols) {
  if ((Tn & 7) == 0) {
    const int chunks = cols / 8;
    for (int e = threadIdx.x; e < D * chunks; e += blockDim.x) {
      const int d = e / chunks, j = (e - d * chunks) * 8;
      const bool in = t0 + j < Tn;
      const bf16* s = in ? src + (int64_t)d * Tn + t0 + j : src;
      cp_async_16(smem_addr(dst + d * ld + j), s, in ? 16 : 0);
    }
  } else {
    for (int e = threadIdx.x; e < D * cols; e += blockDim.x) {
      const int d = e / cols, j = e - d * cols;
      dst[d * ld + j] = t0 + j < Tn ? src[(int64_t)d * Tn + t0 + j] : __float2bfloat16(0.f);
    }
  }
}

// issue_tile_bf16, complete (for this thread's copies) on return.
__device__ __forceinline__ void load_tile_bf16(bf16* dst, int ld, const bf16* src, int D, int Tn, int t0, int cols) {
  issue_tile_bf16(dst, ld, src, D, Tn, t0, cols);
  cp_async_commit();
  cp_async_wait<0>();
}

// One step of a loop over tiles t0 = 0, step, 2 step, ... < T whose tiles live in a ring of STAGES (1 or 2)
// shared-memory stages, tile 0 already issued into stage 0 (its cp.async group committed): issues the tile
// the ring needs now into its stage with `issue(stage, t)` and commits it, then waits until tile t0 has landed
// for this thread. STAGES = 2 issues tile t0 + step (its copies overlap the caller's work on t0), STAGES = 1
// tile t0 itself (from the second step on). The caller brackets it with barriers: before, so the stage being
// refilled is no longer read; after, so every thread's copies of tile t0 are visible.
template <int STAGES, class Issue>
__device__ __forceinline__ void ring_step(int t0, int step, int Tn, int st, const Issue& issue) {
  static_assert(STAGES == 1 || STAGES == 2, "one or two stages");
  const int next = STAGES == 2 ? t0 + step : t0;
  if (next < Tn && (STAGES == 2 || t0 > 0)) {
    issue((st + 1) % STAGES, next);
    cp_async_commit();
  }
  if (STAGES == 2 && next < Tn) {
    cp_async_wait<1>();  // tile t0's group is complete, the next one may still be in flight
  } else {
    cp_async_wait<0>();
  }
}

constexpr float LOG2E = 1.4426950408889634f;

// C[r][c] = sum_d X[d][r0 + r] * Y[d][c0 + c] for r < 16, c < W (one warp; X, Y bf16 [D][ld]).
template <int D, int W>
__device__ __forceinline__ void scores_tile(float c[W / 8][4], const bf16* X, int ldx, int r0, const bf16* Y, int ldy,
                                            int c0, int lane) {
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++) {
    // x4 tile i = lane / 8: i=0 (d+0, r+0) a0, i=1 (d+0, r+8) a1, i=2 (d+8, r+0) a2, i=3 (d+8, r+8) a3.
    uint32_t a[4];
    ldmatrix_x4_trans(a, smem_addr(&X[(kk * 16 + (lane & 7) + ((lane >> 4) & 1) * 8) * ldx + r0 + ((lane >> 3) & 1) * 8]));
#pragma unroll
    for (int np = 0; np < W / 16; np++) {
      // i=0 (d+0, c+0) b0 and i=1 (d+8, c+0) b1 of n-tile 2np; i=2, 3 the same for n-tile 2np+1.
      uint32_t b[4];
      ldmatrix_x4_trans(b, smem_addr(&Y[(kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * ldy + c0 + np * 16 +
                                        ((lane >> 4) & 1) * 8]));
      mma_bf16_16816(c[2 * np], a, b);
      mma_bf16_16816(c[2 * np + 1], a, b + 2);
    }
    if constexpr (W % 16 == 8) {
      // The odd last n-tile: lanes 0-15 address (d+0, c+0) and (d+8, c+0).
      uint32_t b[2];
      ldmatrix_x2_trans(b, smem_addr(&Y[(kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * ldy + c0 + (W - 8)]));
      mma_bf16_16816(c[W / 8 - 1], a, b);
    }
  }
}

// C[r][c] += sum_k A[r0 + r][k] * B[c0 + c][k] for r < 16, c < W, k < K (one warp; A bf16 [rows][lda], B bf16
// [channels][ldb]).
template <int K, int W>
__device__ __forceinline__ void accumulate_tile(float c[W / 8][4], const bf16* A, int lda, int r0, const bf16* B,
                                                int ldb, int c0, int lane) {
#pragma unroll
  for (int kc = 0; kc < K / 16; kc++) {
    // x4 tile i: i=0 (r+0, k+0) a0, i=1 (r+8, k+0) a1, i=2 (r+0, k+8) a2, i=3 (r+8, k+8) a3.
    uint32_t a[4];
    ldmatrix_x4(a, smem_addr(&A[(r0 + (lane & 7) + ((lane >> 3) & 1) * 8) * lda + kc * 16 + ((lane >> 4) & 1) * 8]));
#pragma unroll
    for (int dp = 0; dp < W / 16; dp++) {
      // i=0 (n+0, k+0) b0, i=1 (n+0, k+8) b1 of n-tile 2dp; i=2, 3 (n+8, ...) of n-tile 2dp+1.
      uint32_t b[4];
      ldmatrix_x4(b, smem_addr(&B[(c0 + dp * 16 + (lane & 7) + ((lane >> 4) & 1) * 8) * ldb + kc * 16 +
                                  ((lane >> 3) & 1) * 8]));
      mma_bf16_16816(c[2 * dp], a, b);
      mma_bf16_16816(c[2 * dp + 1], a, b + 2);
    }
  }
}

// Writes a warp's 16 x W accumulator piece, times `mul`, transposed into S [channel][row] (bf16) at (r0, c0).
template <int W>
__device__ __forceinline__ void stage_tile(bf16* S, int ld, int r0, int c0, const float c[W / 8][4], float mul,
                                           int lane) {
  const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
  for (int dt = 0; dt < W / 8; dt++) {
    const int d = c0 + dt * 8 + 2 * t4;
    S[d * ld + r0 + g] = __float2bfloat16(c[dt][0] * mul);
    S[(d + 1) * ld + r0 + g] = __float2bfloat16(c[dt][1] * mul);
    S[d * ld + r0 + g + 8] = __float2bfloat16(c[dt][2] * mul);
    S[(d + 1) * ld + r0 + g + 8] = __float2bfloat16(c[dt][3] * mul);
  }
}

// dst[d * T + t0 + j] = S[d * ld + j] for d < D, j < rows, t0 + j < T, by every thread of the block.
__device__ __forceinline__ void store_tile_bf16(bf16* dst, const bf16* S, int ld, int D, int Tn, int t0, int rows) {
  if ((Tn & 7) == 0) {
    // 16-byte stores: T % 8 == 0 keeps every chunk aligned and either inside T or past it.
    const int chunks = rows / 8;
    for (int e = threadIdx.x; e < D * chunks; e += blockDim.x) {
      const int d = e / chunks, j = (e - d * chunks) * 8;
      if (t0 + j < Tn) *reinterpret_cast<uint4*>(dst + (int64_t)d * Tn + t0 + j) = *reinterpret_cast<const uint4*>(S + d * ld + j);
    }
  } else {
    for (int e = threadIdx.x; e < D * rows; e += blockDim.x) {
      const int d = e / rows, j = e - d * rows;
      if (t0 + j < Tn) dst[(int64_t)d * Tn + t0 + j] = S[d * ld + j];
    }
  }
}
