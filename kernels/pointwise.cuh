// pointwise.cuh: the loop of every element-by-element kernel, with 16-byte accesses.
// defines: pointwise<T, NIN>(in, out, n, f): out[i] = f(in[0][i], ..., in[NIN-1][i]) for i < n, f on floats.
//
// When every pointer is 16-byte aligned (the allocator's buffers are; a view at an odd offset may not be),
// each thread moves 16 bytes of each operand at a time (8 bf16 or 4 f32: one LDG.128/STG.128 instead of 8
// or 4 narrow ones, and one loop step and bounds check per vector), then the last n % V elements one at a
// time; otherwise the whole range one element at a time. The loop index steps by the grid size, so no
// element needs a division.
#pragma once
#include "common.cuh"

template <typename T, int NIN, class F>
__device__ __forceinline__ void pointwise(const T* const (&in)[NIN], T* __restrict__ out, int64_t n, const F& f) {
  constexpr int V = 16 / sizeof(T);
  bool aligned = reinterpret_cast<uintptr_t>(out) % 16 == 0;
#pragma unroll
  for (int k = 0; k < NIN; ++k) aligned = aligned && reinterpret_cast<uintptr_t>(in[k]) % 16 == 0;
  int64_t done = 0;
  if (aligned) {
    const int64_t vectors = n / V;
    GRID_STRIDE_LOOP(v, vectors) {
      __align__(16) T x[NIN][V];
#pragma unroll
      for (int k = 0; k < NIN; ++k) *reinterpret_cast<uint4*>(x[k]) = reinterpret_cast<const uint4*>(in[k])[v];
      __align__(16) T y[V];
#pragma unroll
      for (int e = 0; e < V; ++e) {
        float args[NIN];
#pragma unroll
        for (int k = 0; k < NIN; ++k) args[k] = to_float(x[k][e]);
        y[e] = from_float<T>(f(args));
      }
      reinterpret_cast<uint4*>(out)[v] = *reinterpret_cast<const uint4*>(y);
    }
    done = vectors * V;
  }
  GRID_STRIDE_LOOP(j, n - done) {
    const int64_t i = done + j;
    float args[NIN];
#pragma unroll
    for (int k = 0; k < NIN; ++k) args[k] = to_float(in[k][i]);
    out[i] = from_float<T>(f(args));
  }
}
