// broadcast.cu: a 1-D tensor s applied along one axis of x, with x viewed as [outer, mid, inner] and s of
// length mid: per-channel bias and scale on NCHW (outer = N, mid = C, inner = H*W), per-example scale
// (outer = 1, mid = N), linear bias (outer = rows, mid = features, inner = 1).
// defines: add_along_fwd_*, mul_along_fwd_*, expand_fwd_* (out[o, m, i] = s[m]), for f32 and bf16.
#include "common.cuh"

// The channel of element j is (j / inner) % mid. A thread's elements are j0, j0 + G, j0 + 2G, ... (G the
// grid size), so it divides once, for j0 and for G, and then steps its position (i = j % inner, m) by G's
// quotient and remainder with one carry: no division per element. V = 16 / sizeof(T) when inner % V == 0 and
// the pointers are 16-byte aligned: j then counts 16-byte vectors, all of whose elements share one channel
// (inner is taken in vectors), one load and store each; V = 1 otherwise.
template <typename T, int OP, int V>  // OP 0: x + s, 1: x * s, 2: s (expand)
__device__ void along(const T* __restrict__ x, const T* __restrict__ s, T* __restrict__ out, int64_t outer,
                      int64_t mid, int64_t inner) {
  inner /= V;
  const int64_t n = outer * mid * inner, j0 = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  if (j0 >= n) return;
  const int64_t step_m = stride / inner % mid, step_i = stride % inner;
  int64_t i = j0 % inner, m = j0 / inner % mid;
  for (int64_t j = j0; j < n; j += stride) {
    const float sv = to_float(s[m]);
    __align__(16) T v[V];
    if (OP != 2) {
      if constexpr (V > 1) *reinterpret_cast<uint4*>(v) = reinterpret_cast<const uint4*>(x)[j];
      else v[0] = x[j];
    }
#pragma unroll
    for (int e = 0; e < V; ++e) {
      if (OP == 0) v[e] = from_float<T>(to_float(v[e]) + sv);
      if (OP == 1) v[e] = from_float<T>(to_float(v[e]) * sv);
      if (OP == 2) v[e] = s[m];
    }
    if constexpr (V > 1) reinterpret_cast<uint4*>(out)[j] = *reinterpret_cast<const uint4*>(v);
    else out[j] = v[0];
    i += step_i;
    m += step_m;
    if (i >= inner) i -= inner, ++m;  // i < 2 inner and m < 2 mid here: one subtraction each
    if (m >= mid) m -= mid;
  }
}

// The 16-byte path when every vector stays inside one channel and the pointers allow it.
template <typename T, int OP>
__device__ __forceinline__ void along_any(const T* x, const T* s, T* out, int64_t outer, int64_t mid, int64_t inner) {
  constexpr int V = 16 / sizeof(T);
  const bool aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
  if (inner % V == 0 && aligned)
    along<T, OP, V>(x, s, out, outer, mid, inner);
  else
    along<T, OP, 1>(x, s, out, outer, mid, inner);
}

#define ALONG(T, sfx)                                                                                          \
  extern "C" __global__ void add_along_fwd_##sfx(const T* x, const T* s, T* out, int64_t outer, int64_t mid,  \
                                                 int64_t inner) {                                              \
    along_any<T, 0>(x, s, out, outer, mid, inner);                                                                \
  }                                                                                                            \
  extern "C" __global__ void mul_along_fwd_##sfx(const T* x, const T* s, T* out, int64_t outer, int64_t mid,  \
                                                 int64_t inner) {                                              \
    along_any<T, 1>(x, s, out, outer, mid, inner);                                                                \
  }                                                                                                            \
  extern "C" __global__ void expand_fwd_##sfx(const T* s, T* out, int64_t outer, int64_t mid, int64_t inner) { \
    along_any<T, 2>(nullptr, s, out, outer, mid, inner);                                                          \
  }
ALONG(float, f32)
ALONG(bf16, bf16)
