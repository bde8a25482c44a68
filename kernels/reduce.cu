// reduce.cu: sums over every axis but one, in two deterministic passes (no atomics, so CUDA results do not
// depend on scheduling). x is viewed as [outer, mid, inner]; out[m] = sum over o, i of x[o, m, i].
// defines: sum_axis_partial_{f32,bf16}, sum_axis_final_{f32,bf16}.
// Pass 1: grid (splits, min(mid, 65535)); block b of row m sums a strided share of the outer*inner elements of m into
//         partial[m * splits + b] (f32). Pass 2: one warp per m adds its `splits` partials in fixed order
//         (common.cuh's split_rows_final).
#include "common.cuh"

template <typename T>
__device__ void sum_axis_partial(const T* __restrict__ x, float* __restrict__ partial, int64_t outer, int64_t mid,
                                 int64_t inner) {
  __shared__ float scratch[32];
  const int64_t count = outer * inner;
  const int splits = gridDim.x;
  // grid.y is capped at 65535 by the launcher, so rows loop with stride gridDim.y (a sum over a long last
  // axis can have more). m is uniform per block, so every thread reaches block_sum's __syncthreads.
  for (int64_t m = blockIdx.y; m < mid; m += gridDim.y) {
    float acc = 0.f;
    for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < count; j += (int64_t)splits * blockDim.x) {
      const int64_t o = j / inner, i = j - o * inner;
      acc += to_float(x[(o * mid + m) * inner + i]);
    }
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) partial[m * splits + blockIdx.x] = acc;
  }
}

#define REDUCE(T, sfx)                                                                                        \
  extern "C" __global__ void sum_axis_partial_##sfx(const T* x, float* partial, int64_t outer, int64_t mid, \
                                                    int64_t inner) {                                          \
    sum_axis_partial<T>(x, partial, outer, mid, inner);                                                      \
  }                                                                                                           \
  extern "C" __global__ void sum_axis_final_##sfx(const float* partial, T* out, int64_t mid, int splits) {    \
    split_rows_final<T>(partial, out, mid, splits, 1.f);                                                      \
  }
REDUCE(float, f32)
REDUCE(bf16, bf16)
