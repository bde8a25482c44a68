// dropout.cu: dropout with a counter-based mask, forward and backward, f32 and bf16.
// defines: dropout_fwd_{f32,bf16}, dropout_bwd_{f32,bf16}.
// Element i is kept iff (mix64(key + (i + 1) * GOLDEN) >> 40) >= threshold, where key = mix64(seed + GOLDEN)
// and threshold = ceil(p * 2^24) are computed on the host (the i-th output of a splitmix64 stream seeded with
// key). A step replayed from a CUDA graph cannot pass a new key by value: it passes `step_seed`, the device
// address of the step's seed, and the layer's key is derived here as the host derives it for a host seed:
// key = mix64(layer_seed + GOLDEN) with layer_seed = mix64(step_seed ^ layer * GOLDEN) (nn::layer_seed).
// The CPU twin (src/ops/dropout/cpu.rs) evaluates the same integer expression, so both backends drop
// exactly the same elements; the comparison is on integers, so no float rounding of p can split them.
// Nothing is stored: backward regenerates the mask from (key, i) and applies the same scale to the gradient.
#include "common.cuh"

#define GOLDEN 0x9E3779B97F4A7C15ull

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The key the host would pass: by value, or derived from the step seed in device memory.
__device__ __forceinline__ uint64_t dropout_key(uint64_t key, const uint64_t* step_seed, uint64_t layer) {
  if (step_seed == nullptr) return key;
  return mix64(mix64(*step_seed ^ layer * GOLDEN) + GOLDEN);
}

__device__ __forceinline__ bool kept(uint64_t key, int64_t i, uint32_t threshold) {
  return (uint32_t)(mix64(key + (uint64_t)(i + 1) * GOLDEN) >> 40) >= threshold;
}

// y = keep(i) ? x * scale : 0. Used for the forward (x = input) and the backward (x = output gradient). As in
// pointwise.cuh: 16 bytes of x and y a thread step when both are 16-byte aligned, then the tail one element
// at a time (the mask depends on the element's index only, so the split changes nothing).
template <typename T>
__device__ void dropout_apply(const T* __restrict__ x, T* __restrict__ y, int64_t n, uint64_t key,
                              uint32_t threshold, float scale) {
  constexpr int V = 16 / sizeof(T);
  int64_t done = 0;
  if (reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0) {
    const int64_t vectors = n / V;
    GRID_STRIDE_LOOP(v, vectors) {
      __align__(16) T a[V];
      *reinterpret_cast<uint4*>(a) = reinterpret_cast<const uint4*>(x)[v];
#pragma unroll
      for (int e = 0; e < V; ++e)
        a[e] = kept(key, v * V + e, threshold) ? from_float<T>(to_float(a[e]) * scale) : from_float<T>(0.f);
      reinterpret_cast<uint4*>(y)[v] = *reinterpret_cast<const uint4*>(a);
    }
    done = vectors * V;
  }
  GRID_STRIDE_LOOP(j, n - done) {
    const int64_t i = done + j;
    y[i] = kept(key, i, threshold) ? from_float<T>(to_float(x[i]) * scale) : from_float<T>(0.f);
  }
}

#define DROPOUT(T, sfx)                                                                                   \
  extern "C" __global__ void dropout_fwd_##sfx(const T* x, T* y, int64_t n, uint64_t key,                 \
                                               const uint64_t* step_seed, uint64_t layer, uint32_t threshold, \
                                               float scale) {                                               \
    dropout_apply<T>(x, y, n, dropout_key(key, step_seed, layer), threshold, scale);                       \
  }                                                                                                         \
  extern "C" __global__ void dropout_bwd_##sfx(const T* dy, T* dx, int64_t n, uint64_t key,                \
                                               const uint64_t* step_seed, uint64_t layer, uint32_t threshold, \
                                               float scale) {                                               \
    dropout_apply<T>(dy, dx, n, dropout_key(key, step_seed, layer), threshold, scale);                     \
  }
DROPOUT(float, f32)
DROPOUT(bf16, bf16)
