// dropout.cu: dropout with a counter-based mask, forward and backward, f32 and bf16.
// defines: dropout_fwd_{f32,bf16}, dropout_bwd_{f32,bf16}.
// The mask (which elements are kept, and how a graph-replayed step derives its key) is dropout.cuh's.
// Nothing is stored: backward regenerates the mask from (key, i) and applies the same scale to the gradient.
#include "dropout.cuh"

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

#define DROPOUT(T, sfx)                                                                               \
  extern "C" __global__ void dropout_fwd_##sfx(const T* x, T* y, int64_t n, DropoutMask m) {              \
    dropout_apply<T>(x, y, n, m.resolved_key(), m.threshold, m.scale);                                 \
  }                                                                                                     \
  extern "C" __global__ void dropout_bwd_##sfx(const T* dy, T* dx, int64_t n, DropoutMask m) {           \
    dropout_apply<T>(dy, dx, n, m.resolved_key(), m.threshold, m.scale);                               \
  }
DROPOUT(float, f32)
DROPOUT(bf16, bf16)
