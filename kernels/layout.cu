// layout.cu: channel slab copies (concat / split / their backwards), nearest 2x upsampling and 2x2 pooling.
// defines: channel_copy_fwd_{u16,u32,u128}, upsample2x_fwd_{f32,bf16}, pool2x_fwd_{f32,bf16}.
// All memory-bound: every element is read once and written once; consecutive threads touch consecutive
// addresses.
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

// Nearest 2x upsampling times `scale`: x [planes, h, w] -> y [planes, 2h, 2w], one thread per output element
// so the writes (twice as many as the reads) are perfectly coalesced; each input element is read by four
// neighbouring threads and served from L1/L2. Scale 1 is the upsample forward; scale 1/4 is avg_pool2x's
// backward (every input pixel of a 2x2 window receives a quarter of the window's gradient).
template <typename T>
__device__ void upsample2x(const T* __restrict__ x, T* __restrict__ y, int64_t planes, int64_t h, int64_t w,
                           float scale) {
  const int64_t wo = 2 * w, ho = 2 * h, n = planes * ho * wo;
  GRID_STRIDE_LOOP(i, n) {
    const int64_t ox = i % wo, t = i / wo, oy = t % ho, p = t / ho;
    y[i] = from_float<T>(scale * to_float(x[(p * h + (oy >> 1)) * w + (ox >> 1)]));
  }
}

// 2x2 window sums times `scale`: x [planes, 2h, 2w] -> y [planes, h, w], one thread per output element
// (f32 sum of the four inputs). Scale 1/4 is the avg_pool2x forward; scale 1 is upsample2x's backward
// (each input pixel's gradient is the sum over the 2x2 block it was copied to). Neighbouring threads read
// neighbouring pairs of each input row, so the two row reads per thread coalesce across the warp.
template <typename T>
__device__ void pool2x(const T* __restrict__ x, T* __restrict__ y, int64_t planes, int64_t h, int64_t w,
                       float scale) {
  const int64_t wi = 2 * w, n = planes * h * w;
  GRID_STRIDE_LOOP(i, n) {
    const int64_t ox = i % w, t = i / w, oy = t % h, p = t / h;
    const T* top = x + (p * 2 * h + 2 * oy) * wi + 2 * ox;
    const float s = to_float(top[0]) + to_float(top[1]) + to_float(top[wi]) + to_float(top[wi + 1]);
    y[i] = from_float<T>(scale * s);
  }
}

#define RESAMPLE(T, sfx)                                                                                      \
  extern "C" __global__ void upsample2x_fwd_##sfx(const T* x, T* y, int64_t planes, int64_t h, int64_t w,    \
                                                  float scale) {                                              \
    upsample2x<T>(x, y, planes, h, w, scale);                                                                \
  }                                                                                                           \
  extern "C" __global__ void pool2x_fwd_##sfx(const T* x, T* y, int64_t planes, int64_t h, int64_t w,        \
                                              float scale) {                                                  \
    pool2x<T>(x, y, planes, h, w, scale);                                                                    \
  }
RESAMPLE(float, f32)
RESAMPLE(bf16, bf16)
