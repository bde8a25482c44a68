// elementwise.cu: pointwise ops, forward and backward, f32 and bf16 (bf16 computes in f32 registers).
// defines: <unary>_{fwd,bwd}_{f32,bf16} for silu, sigmoid, exp, square; add/sub/mul_fwd; affine_fwd;
//          where_fwd; cast_f32_bf16, cast_bf16_f32.
// Memory-bound: one read per input and one write per output; grid-stride loops, 256 threads.
#include "common.cuh"

struct Silu {
  static __device__ float fwd(float x) { return x / (1.f + expf(-x)); }
  // d/dx x*s(x) = s + x*s*(1-s)
  static __device__ float bwd(float x, float, float dy) {
    float s = 1.f / (1.f + expf(-x));
    return dy * s * (1.f + x * (1.f - s));
  }
};
struct Sigmoid {
  static __device__ float fwd(float x) { return 1.f / (1.f + expf(-x)); }
  static __device__ float bwd(float, float y, float dy) { return dy * y * (1.f - y); }
};
struct Exp {
  static __device__ float fwd(float x) { return expf(x); }
  static __device__ float bwd(float, float y, float dy) { return dy * y; }
};
struct Square {
  static __device__ float fwd(float x) { return x * x; }
  static __device__ float bwd(float x, float, float dy) { return 2.f * x * dy; }
};

template <typename Op, typename T>
__device__ void unary_fwd(const T* __restrict__ x, T* __restrict__ y, int64_t n) {
  GRID_STRIDE_LOOP(i, n) y[i] = from_float<T>(Op::fwd(to_float(x[i])));
}
template <typename Op, typename T>
__device__ void unary_bwd(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ dy,
                          T* __restrict__ dx, int64_t n) {
  GRID_STRIDE_LOOP(i, n) dx[i] = from_float<T>(Op::bwd(to_float(x[i]), to_float(y[i]), to_float(dy[i])));
}

#define UNARY(name, Op, T, sfx)                                                                  \
  extern "C" __global__ void name##_fwd_##sfx(const T* x, T* y, int64_t n) { unary_fwd<Op, T>(x, y, n); } \
  extern "C" __global__ void name##_bwd_##sfx(const T* x, const T* y, const T* dy, T* dx, int64_t n) {   \
    unary_bwd<Op, T>(x, y, dy, dx, n);                                                           \
  }
UNARY(silu, Silu, float, f32)
UNARY(silu, Silu, bf16, bf16)
UNARY(sigmoid, Sigmoid, float, f32)
UNARY(sigmoid, Sigmoid, bf16, bf16)
UNARY(exp, Exp, float, f32)
UNARY(exp, Exp, bf16, bf16)
UNARY(square, Square, float, f32)
UNARY(square, Square, bf16, bf16)

#define BINARY(name, expr, T, sfx)                                                                        \
  extern "C" __global__ void name##_fwd_##sfx(const T* __restrict__ a, const T* __restrict__ b,          \
                                              T* __restrict__ out, int64_t n) {                           \
    GRID_STRIDE_LOOP(i, n) {                                                                              \
      float x = to_float(a[i]), y = to_float(b[i]);                                                       \
      out[i] = from_float<T>(expr);                                                                       \
    }                                                                                                     \
  }
BINARY(add, x + y, float, f32)
BINARY(add, x + y, bf16, bf16)
BINARY(sub, x - y, float, f32)
BINARY(sub, x - y, bf16, bf16)
BINARY(mul, x * y, float, f32)
BINARY(mul, x * y, bf16, bf16)

// y = a * x + b with host scalars.
#define AFFINE(T, sfx)                                                                                      \
  extern "C" __global__ void affine_fwd_##sfx(const T* __restrict__ x, T* __restrict__ y, float a, float b, \
                                              int64_t n) {                                                  \
    GRID_STRIDE_LOOP(i, n) y[i] = from_float<T>(a * to_float(x[i]) + b);                                    \
  }
AFFINE(float, f32)
AFFINE(bf16, bf16)

// out = mask != 0 ? a : b (the mask is any tensor of the same dtype; nonzero means "take a").
#define WHERE(T, sfx)                                                                                        \
  extern "C" __global__ void where_fwd_##sfx(const T* __restrict__ m, const T* __restrict__ a,              \
                                             const T* __restrict__ b, T* __restrict__ out, int64_t n) {      \
    GRID_STRIDE_LOOP(i, n) out[i] = to_float(m[i]) != 0.f ? a[i] : b[i];                                     \
  }
WHERE(float, f32)
WHERE(bf16, bf16)

extern "C" __global__ void cast_f32_bf16(const float* __restrict__ x, bf16* __restrict__ y, int64_t n) {
  GRID_STRIDE_LOOP(i, n) y[i] = __float2bfloat16(x[i]);
}
extern "C" __global__ void cast_bf16_f32(const bf16* __restrict__ x, float* __restrict__ y, int64_t n) {
  GRID_STRIDE_LOOP(i, n) y[i] = __bfloat162float(x[i]);
}
