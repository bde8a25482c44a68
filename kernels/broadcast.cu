// broadcast.cu: a 1-D tensor s applied along one axis of x, with x viewed as [outer, mid, inner] and s of
// length mid: per-channel bias and scale on NCHW (outer = N, mid = C, inner = H*W), per-example scale
// (outer = 1, mid = N), linear bias (outer = rows, mid = features, inner = 1).
// defines: add_along_fwd_*, mul_along_fwd_*, expand_fwd_* (out[o, m, i] = s[m]), for f32 and bf16.
#include "common.cuh"

template <typename T, int OP>  // OP 0: x + s, 1: x * s, 2: s (expand)
__device__ void along(const T* __restrict__ x, const T* __restrict__ s, T* __restrict__ out, int64_t outer,
                      int64_t mid, int64_t inner) {
  GRID_STRIDE_LOOP(j, outer * mid * inner) {
    const int64_t m = (j / inner) % mid;
    const float sv = to_float(s[m]);
    if (OP == 0) out[j] = from_float<T>(to_float(x[j]) + sv);
    if (OP == 1) out[j] = from_float<T>(to_float(x[j]) * sv);
    if (OP == 2) out[j] = s[m];
  }
}

#define ALONG(T, sfx)                                                                                          \
  extern "C" __global__ void add_along_fwd_##sfx(const T* x, const T* s, T* out, int64_t outer, int64_t mid,  \
                                                 int64_t inner) {                                              \
    along<T, 0>(x, s, out, outer, mid, inner);                                                                \
  }                                                                                                            \
  extern "C" __global__ void mul_along_fwd_##sfx(const T* x, const T* s, T* out, int64_t outer, int64_t mid,  \
                                                 int64_t inner) {                                              \
    along<T, 1>(x, s, out, outer, mid, inner);                                                                \
  }                                                                                                            \
  extern "C" __global__ void expand_fwd_##sfx(const T* s, T* out, int64_t outer, int64_t mid, int64_t inner) { \
    along<T, 2>(nullptr, s, out, outer, mid, inner);                                                          \
  }
ALONG(float, f32)
ALONG(bf16, bf16)
