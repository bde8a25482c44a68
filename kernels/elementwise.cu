// elementwise.cu: pointwise ops, forward and backward, f32 and bf16 (bf16 computes in f32 registers).
// defines: <unary>_{fwd,bwd}_{f32,bf16} for silu, sigmoid, exp, square; add/sub/mul_fwd; affine_fwd;
//          where_fwd; cast_f32_bf16, cast_bf16_f32.
// Memory-bound: one read per input and one write per output, 16 bytes at a time where aligned (pointwise.cuh).
#include "pointwise.cuh"

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

template <typename Op, typename T> __device__ void unary_fwd(const T* x, T* y, int64_t n) {
  pointwise<T, 1>({x}, y, n, [](const float (&a)[1]) { return Op::fwd(a[0]); });
}
template <typename Op, typename T> __device__ void unary_bwd(const T* x, const T* y, const T* dy, T* dx, int64_t n) {
  pointwise<T, 3>({x, y, dy}, dx, n, [](const float (&a)[3]) { return Op::bwd(a[0], a[1], a[2]); });
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

#define BINARY(name, expr, T, sfx)                                                                     \
  extern "C" __global__ void name##_fwd_##sfx(const T* a, const T* b, T* out, int64_t n) {            \
    pointwise<T, 2>({a, b}, out, n, [](const float (&v)[2]) { const float x = v[0], y = v[1]; return expr; }); \
  }
BINARY(add, x + y, float, f32)
BINARY(add, x + y, bf16, bf16)
BINARY(sub, x - y, float, f32)
BINARY(sub, x - y, bf16, bf16)
BINARY(mul, x * y, float, f32)
BINARY(mul, x * y, bf16, bf16)

// y = a * x + b with host scalars.
#define AFFINE(T, sfx)                                                                                  \
  extern "C" __global__ void affine_fwd_##sfx(const T* x, T* y, float a, float b, int64_t n) {           \
    pointwise<T, 1>({x}, y, n, [a, b](const float (&v)[1]) { return a * v[0] + b; });                      \
  }
AFFINE(float, f32)
AFFINE(bf16, bf16)

// out = mask != 0 ? a : b (the mask is any tensor of the same dtype; nonzero means "take a").
// (a and b pass through float and back unchanged: bf16 -> f32 is exact.)
#define WHERE(T, sfx)                                                                                   \
  extern "C" __global__ void where_fwd_##sfx(const T* m, const T* a, const T* b, T* out, int64_t n) {   \
    pointwise<T, 3>({m, a, b}, out, n, [](const float (&v)[3]) { return v[0] != 0.f ? v[1] : v[2]; });  \
  }
WHERE(float, f32)
WHERE(bf16, bf16)

extern "C" __global__ void cast_f32_bf16(const float* __restrict__ x, bf16* __restrict__ y, int64_t n) {
  GRID_STRIDE_LOOP(i, n) y[i] = __float2bfloat16(x[i]);
}
extern "C" __global__ void cast_bf16_f32(const bf16* __restrict__ x, float* __restrict__ y, int64_t n) {
  GRID_STRIDE_LOOP(i, n) y[i] = __bfloat162float(x[i]);
}
