// attention.cuh: what the attention kernels (attention.cu, attention_bwd_mma.cu) share: the parameter block,
// where a head starts, and the bf16 tile load of the tensor-core kernels.
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
// of the block; complete on return. With T % 8 == 0 every row start (d * T) and tile column (a multiple of 8)
// is 16-byte aligned, as cp.async needs, and a chunk of 8 tokens is either all inside T or all outside; other T
// take scalar loads.
__device__ __forceinline__ void load_tile_bf16(bf16* dst, int ld, const bf16* src, int D, int Tn, int t0, int cols) {
  if ((Tn & 7) == 0) {
    const int chunks = cols / 8;
    for (int e = threadIdx.x; e < D * chunks; e += blockDim.x) {
      const int d = e / chunks, j = (e - d * chunks) * 8;
      const bool in = t0 + j < Tn;
      const bf16* s = in ? src + (int64_t)d * Tn + t0 + j : src;
      cp_async_16(smem_addr(dst + d * ld + j), s, in ? 16 : 0);
    }
    cp_async_commit();
    cp_async_wait<0>();
  } else {
    for (int e = threadIdx.x; e < D * cols; e += blockDim.x) {
      const int d = e / cols, j = e - d * cols;
      dst[d * ld + j] = t0 + j < Tn ? src[(int64_t)d * Tn + t0 + j] : __float2bfloat16(0.f);
    }
  }
}
