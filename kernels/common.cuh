// common.cuh: shared device helpers for every kernel family.
// defines: DYNAMIC_SHARED (the block's dynamic shared memory), i64/i32 index types, bf16 <-> float conversion (to_float/from_float), grid-stride loop macro,
//          the split-rows reduction (split_rows_store/split_rows_final),
//          warp and block sum reductions, ceil_div.
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;

// `DYNAMIC_SHARED(T, name);` declares `name` as the block's dynamic shared memory (the launch's
// shared_mem_bytes) viewed as T[]; T may carry an __align__. On the GPU it is the usual `extern __shared__`
// array; the emulator (emu/, GSURE_EMU) hands each block a buffer of the launch's size, aligned to 16 bytes
// and no more (as the GPU promises), which under --asan ends exactly at that size, so an access past it is caught.
#ifdef GSURE_EMU
#define DYNAMIC_SHARED(T, name) \
  typedef T gsure_emu_dynamic_##name; \
  gsure_emu_dynamic_##name* const name = static_cast<gsure_emu_dynamic_##name*>(gsure_emu_self()->dynamic_smem)
#else
#define DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_float<bf16>(float x) { return __float2bfloat16(x); }

// Every thread visits indices i, i + gridDim*blockDim, ... below n (64-bit so huge tensors are safe).
#define GRID_STRIDE_LOOP(i, n) \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (int64_t)(n); \
       i += (int64_t)gridDim.x * blockDim.x)

__host__ __device__ __forceinline__ int ceil_div(int a, int b) { return (a + b - 1) / b; }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Sum over the whole block; every thread gets the result. `scratch` holds >= 32 floats of shared memory.
// blockDim.x must be a multiple of 32.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.f;
  return warp_sum(v);
}

// The split-rows reduction plan (ops/loss/cuda.rs: splits + finish_rows) shared by the per-example losses:
// grid (splits, rows), block b of row r reduces a strided share of the row. With one split the block's
// total is the row's result; otherwise it is a partial, and split_rows_final adds each row's partials in a
// fixed order (no atomics: deterministic). Called by thread 0 with the block's total.
template <typename T>
__device__ __forceinline__ void split_rows_store(float block_total, float* __restrict__ partial, T* __restrict__ out,
                                                 int64_t row, float scale) {
  const int splits = gridDim.x;
  if (splits == 1)
    out[row] = from_float<T>(block_total * scale);
  else
    partial[row * splits + blockIdx.x] = block_total;
}

// One warp per row adds the row's `splits` partials (lane-strided, then a fixed-order warp sum).
template <typename T>
__device__ void split_rows_final(const float* __restrict__ partial, T* __restrict__ out, int64_t rows, int splits,
                                 float scale) {
  const int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  float acc = 0.f;
  for (int s = lane; s < splits; s += 32) acc += partial[row * splits + s];
  acc = warp_sum(acc);
  if (lane == 0) out[row] = from_float<T>(acc * scale);
}
