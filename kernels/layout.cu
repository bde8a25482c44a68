// layout.cu: channel slab copies (concat / split / their backwards), nearest 2x upsampling and 2x2 pooling.
// defines: channel_copy_fwd_{u16,u32,u128}, upsample2x_fwd_{f32,bf16}, pool2x_fwd_{f32,bf16}.
// All memory-bound: every element is read once and written once; consecutive threads touch consecutive
// addresses, 16 bytes at a time where the shapes and pointers allow.
#include "common.cuh"

// Copies a slab of channels between two NCHW tensors viewed as [rows = N, row_len] (row_len = C * H * W):
// dst[r * dst_row + dst_off + k] = src[r * src_row + src_off + k] for k < run. Concat writes each input into
// its channel range of the output, split (and concat's backward) reads a range out, split's backward writes
// a gradient back into a zeroed tensor. A pure copy needs no arithmetic, so it is instantiated per element
// *size*, and the launcher picks 16-byte units (uint4) whenever run, strides, offsets and both base pointers
// allow it: one 128-bit load/store per thread instead of four or eight scalar ones.
// grid.y walks rows (N) and grid.x strides along the run, so there is no 64-bit division per element.
template <typename U>
__device__ void channel_copy(const U* __restrict__ src, U* __restrict__ dst, int64_t rows, int64_t run,
                             int64_t src_row, int64_t src_off, int64_t dst_row, int64_t dst_off) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const U* s = src + r * src_row + src_off;
    U* d = dst + r * dst_row + dst_off;
    for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < run; k += (int64_t)gridDim.x * blockDim.x)
      d[k] = s[k];
  }
}

#define CHANNEL_COPY(U, sfx)                                                                                 \
  extern "C" __global__ void channel_copy_fwd_##sfx(const U* src, U* dst, int64_t rows, int64_t run,        \
                                                    int64_t src_row, int64_t src_off, int64_t dst_row,      \
                                                    int64_t dst_off) {                                       \
    channel_copy<U>(src, dst, rows, run, src_row, src_off, dst_row, dst_off);                                \
  }
CHANNEL_COPY(uint16_t, u16)
CHANNEL_COPY(uint32_t, u32)
CHANNEL_COPY(uint4, u128)

// A run of N elements moved as one access (two 16-byte ones for 32 bytes); the launchers' alignment checks
// make every use below aligned to min(16, sizeof(Pack)).
template <typename T, int N> struct alignas(N * sizeof(T) < 16 ? N * sizeof(T) : 16) Pack {
  T v[N];
};

// The resampling kernels walk rows: r = p * h + y of the narrow side (upsample's input, pool's output) and a
// chunk of V columns, one 32-bit division per chunk (the launcher keeps rows * chunks below 2^32). V = 4 when
// w % 4 == 0 and both pointers are 16-byte aligned: 8- or 16-byte loads and 16- or 32-byte stores (bf16, f32)
// instead of one narrow access per element; V = 1 otherwise.
__device__ __forceinline__ bool rows_of_4(const void* a, const void* b, int64_t w) {
  return w % 4 == 0 && reinterpret_cast<uintptr_t>(a) % 16 == 0 && reinterpret_cast<uintptr_t>(b) % 16 == 0;
}

// Nearest 2x upsampling times `scale`: x [planes, h, w] -> y [planes, 2h, 2w]. Input row r becomes output rows
// 2r and 2r + 1 (p * 2h + 2y = 2r), each element two neighbours in both. Scale 1 is the upsample forward;
// scale 1/4 is avg_pool2x's backward (every input pixel of a 2x2 window receives a quarter of its gradient).
template <typename T, int V>
__device__ void upsample2x_rows(const T* __restrict__ x, T* __restrict__ y, uint32_t rows, uint32_t w, float scale) {
  const uint32_t chunks = w / V, n = rows * chunks;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const uint32_t r = i / chunks, k = (i - r * chunks) * V;
    const Pack<T, V> a = *reinterpret_cast<const Pack<T, V>*>(x + (size_t)r * w + k);
    Pack<T, 2 * V> b;
#pragma unroll
    for (int e = 0; e < V; ++e) b.v[2 * e] = b.v[2 * e + 1] = from_float<T>(scale * to_float(a.v[e]));
    T* top = y + (size_t)r * 4 * w + 2 * k;
    *reinterpret_cast<Pack<T, 2 * V>*>(top) = b;
    *reinterpret_cast<Pack<T, 2 * V>*>(top + 2 * w) = b;
  }
}

// 2x2 window sums times `scale`: x [planes, 2h, 2w] -> y [planes, h, w] (f32 sum of the four inputs, in the
// order top-left, top-right, bottom-left, bottom-right). Output row r reads input rows 2r and 2r + 1. Scale 1/4
// is the avg_pool2x forward; scale 1 is upsample2x's backward (each input pixel's gradient is the sum over the
// 2x2 block it was copied to).
template <typename T, int V>
__device__ void pool2x_rows(const T* __restrict__ x, T* __restrict__ y, uint32_t rows, uint32_t w, float scale) {
  const uint32_t chunks = w / V, n = rows * chunks;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const uint32_t r = i / chunks, k = (i - r * chunks) * V;
    const T* top = x + (size_t)r * 4 * w + 2 * k;
    const Pack<T, 2 * V> t = *reinterpret_cast<const Pack<T, 2 * V>*>(top);
    const Pack<T, 2 * V> b = *reinterpret_cast<const Pack<T, 2 * V>*>(top + 2 * w);
    Pack<T, V> o;
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const float s = to_float(t.v[2 * e]) + to_float(t.v[2 * e + 1]) + to_float(b.v[2 * e]) + to_float(b.v[2 * e + 1]);
      o.v[e] = from_float<T>(scale * s);
    }
    *reinterpret_cast<Pack<T, V>*>(y + (size_t)r * w + k) = o;
  }
}

#define RESAMPLE(T, sfx)                                                                                      \
  extern "C" __global__ void upsample2x_fwd_##sfx(const T* x, T* y, int64_t planes, int64_t h, int64_t w,    \
                                                  float scale) {                                              \
    if (rows_of_4(x, y, w))                                                                                   \
      upsample2x_rows<T, 4>(x, y, planes * h, w, scale);                                                     \
    else                                                                                                      \
      upsample2x_rows<T, 1>(x, y, planes * h, w, scale);                                                     \
  }                                                                                                           \
  extern "C" __global__ void pool2x_fwd_##sfx(const T* x, T* y, int64_t planes, int64_t h, int64_t w,        \
                                              float scale) {                                                  \
    if (rows_of_4(x, y, w))                                                                                   \
      pool2x_rows<T, 4>(x, y, planes * h, w, scale);                                                         \
    else                                                                                                      \
      pool2x_rows<T, 1>(x, y, planes * h, w, scale);                                                         \
  }
RESAMPLE(float, f32)
RESAMPLE(bf16, bf16)
