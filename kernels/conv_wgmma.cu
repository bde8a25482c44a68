// conv_wgmma.cu: the bf16 convolution of conv.cu as implicit GEMMs on Hopper's warpgroup MMA (sm_90a), on
// channels-last operands the launcher makes.
// defines: conv2d_fwd_bf16_wgmma, conv2d_dgrad_bf16_wgmma, conv2d_wgrad_bf16_wgmma, conv_nchw_to_nhwc_bf16,
//          conv_dgrad_weights_bf16, conv_wgrad_sum_khwc_bf16.
//
// The GEMM is conv.cu's forward with the reduction reordered so that it is contiguous in memory:
//   y[n, co, oh, ow]   M = N*Ho*Wo (img, oh, ow)   N = C_out   K = K*K*C_in (kh, kw, c), c fastest
//   A = x_nhwc[img, oh*s - p + kh, ow*s - p + kw, c] (0 in the padding), B = w_khwc[co, kh, kw, c], stored
//   through the ConvEpilogue (conv.cuh)
// With C_in % 8 == 0 (the launcher's condition), 8 consecutive k are 8 channels of one tap: one 16-byte
// cp.async chunk from x_nhwc, zero-filled when the tap falls in the padding, straight into the swizzled
// K-major tile of wgmma_gemm.cuh (no scalar gather, no bounds check per element). B is a plain row-major
// matrix [C_out][K*K*C_in]. The transposes into channels-last (conv_nchw_to_nhwc_bf16, for x and for w) are
// the price of that layout: one read and one write of the input per forward; whether it pays is for a GPU
// run to show (issue 11), so the launcher takes this path only when the wgmma kernels are selected.
//
// The input gradient, per sub-pixel class (conv.cuh SubPixel, class z = blockIdx.z: only the taps that reach
// the class, so a stride-2 3x3 gradient multiplies 9 taps instead of 36; stride 1 is one class of every tap):
//   dx[img, c, s*i + py, s*j + px]   M = N*Hc*Wc (img, i, j)   N = C_in   K = nkh*nkw*C_out (a, b, co), co fastest
//   A = dy_nhwc[img, i + oy - a, j + ox - b, co] (0 outside dy): 8 channels of one tap per 16-byte chunk
//       (C_out % 8 == 0, the launcher's condition), as the forward's A;
//   B = the class's weights, a row-major [C_in][nkh*nkw*C_out] matrix that conv_dgrad_weights_bf16 gathers
//       from w (the classes' matrices one after the other: together w's size).
//
// The weight gradient, a GEMM over every output pixel of the batch:
//   dw[co, kh, kw, c]   M = C_out   N = K*K*C_in (kh, kw, c)   K = N*Ho*Wo (img, oh, ow)
//   A = dy[img, co, oh, ow]: NCHW keeps a pixel run contiguous per channel, so A is a K-major tile read in
//       8-pixel chunks (Ho*Wo % 8 == 0, the launcher's condition, keeps a chunk inside one image);
//   B = x_nhwc[img, oh*s - p + kh, ow*s - p + kw, c]: 8 channels of one tap per chunk, an MN-major tile
//       (rows = pixels, N contiguous).
// The reduction is split over blockIdx.z: split z writes its partial dw to slab z of an f32 workspace, and
// conv_wgrad_sum_khwc_bf16 adds the slabs in split order while it reorders [co][kh][kw][c] to w's
// [co][c][kh][kw] (no atomics: dw is bitwise reproducible).
#include "conv.cuh"
#include "wgmma_gemm.cuh"

namespace conv_wgmma {
using namespace wgmma_gemm;

// One thread's rows of the A tile: TileChunks<BM, BK> gives it rows tid/8 + 32i (i < 4) at chunk column
// tid % 8, fixed for the whole block, so each row's pixel is decomposed once.
struct PixelRows {
  static constexpr int N = TileChunks<BM, BK>::COUNT;
  const bf16* img_base[N];  // x_nhwc at the row's image
  int ih0[N], iw0[N];       // oh*s - p, ow*s - p; ih0 = INT_MIN/2 marks a row past M
};

__device__ void fwd(const ConvParams p, const bf16* x, const bf16* w, const ConvEpilogue& e, bf16* y) {
  using Chunks = TileChunks<BM, BK>;
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
  const int hwo = p.ho * p.wo;
  PixelRows rows;
#pragma unroll
  for (int i = 0; i < PixelRows::N; ++i) {
    const int m = m0 + Chunks::row(i), img = m / hwo, pix = m - img * hwo, oh = pix / p.wo, ow = pix - oh * p.wo;
    rows.img_base[i] = x + (int64_t)min(img, p.n - 1) * p.h * p.w * p.c;
    rows.ih0[i] = m < p.gm ? oh * p.stride - p.pad : -(1 << 30);
    rows.iw0[i] = ow * p.stride - p.pad;
  }
  auto load_stage = [&](unsigned char* ta, unsigned char* tb, int kt) {
    // This thread's 8 channels of the tile's k range: one tap (kh, kw), channels c..c+7.
    const int k = kt * BK + 8 * Chunks::col(0), tap = k / p.c, c = k - tap * p.c, kh = tap / p.k, kw = tap - kh * p.k;
#pragma unroll
    for (int i = 0; i < PixelRows::N; ++i) {
      const int ih = rows.ih0[i] + kh, iw = rows.iw0[i] + kw;
      const bool in = k < p.gk && ih >= 0 && ih < p.h && iw >= 0 && iw < p.w;
      const bf16* src = in ? rows.img_base[i] + ((int64_t)ih * p.w + iw) * p.c + c : x;
      cp_async_16(smem_addr(swizzled_chunk<BM>(ta, Chunks::row(i), Chunks::col(i))), src, in ? 16 : 0);
    }
    load_matrix_tile<BN, BK>(tb, w, p.co, p.gk, n0, kt * BK);  // w_khwc [C_out][K*K*C_in]: rows co, cols k
  };
  float acc[BN / 2];
  mainloop<false, false>(acc, (p.gk + BK - 1) / BK, load_stage);

  // This thread's two output rows (pixels) of the tile: store_rows hands rows row0 and row0 + 8, so two
  // scalars (an array indexed by the row would live in local memory).
  const int row0 = 64 * (threadIdx.x / 128) + 16 * (threadIdx.x / 32 % 4) + threadIdx.x % 32 / 4;
  auto out_base = [&](int r) {  // y[img, 0, oh, ow] of tile row r, or -1 past M
    const int m = m0 + r, img = m / hwo;
    return m < p.gm ? (int64_t)img * p.co * hwo + (m - img * hwo) : (int64_t)-1;
  };
  const int64_t base_lo = out_base(row0), base_hi = out_base(row0 + 8);
  const int img_lo = (m0 + row0) / hwo, img_hi = (m0 + row0 + 8) / hwo;
  store_rows(acc, [&](int r, int col, float v0, float v1) {
    const int64_t base = r == row0 ? base_lo : base_hi;
    const int img_co = (r == row0 ? img_lo : img_hi) * p.co, co = n0 + col;
    if (base < 0) return;
    // Two output channels of one pixel: planes hwo apart (NCHW), so two 2-byte stores.
    auto store = [&](int co, float v) {
      const int64_t at = base + (int64_t)co * hwo;
      y[at] = __float2bfloat16(epilogue<bf16>(e, v, img_co + co, co, at));
    };
    if (co < p.co) store(co, v0);
    if (co + 1 < p.co) store(co + 1, v1);
  });
}

// The element offset of class z's weight matrix in conv_dgrad_weights_bf16's output: the classes before it.
__device__ __forceinline__ int64_t class_weights_at(const ConvParams& p, int z) {
  int64_t at = 0;
  for (int c = 0; c < z; ++c) {
    const SubPixel o(p, c);
    at += (int64_t)p.c * o.nkh * o.nkw * p.co;
  }
  return at;
}

__device__ void dgrad(const ConvParams p, const bf16* dy, const bf16* w_cls, bf16* dx) {
  using Chunks = TileChunks<BM, BK>;
  const SubPixel sp(p);
  const int q = sp.hc * sp.wc, gm = p.n * q, gk = sp.nkh * sp.nkw * p.co;
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
  if (m0 >= gm) return;  // the launch is sized for class 0, the largest; block-uniform, before any barrier
  const bf16* w = w_cls + class_weights_at(p, blockIdx.z);
  // Rows as the forward's, with (ih0, iw0) = (i + oy, j + ox): the tap (a, b) reads dy at (ih0 - a, iw0 - b).
  PixelRows rows;
#pragma unroll
  for (int i = 0; i < PixelRows::N; ++i) {
    const int m = m0 + Chunks::row(i), img = m / q, pix = m - img * q, ii = pix / sp.wc, jj = pix - ii * sp.wc;
    rows.img_base[i] = dy + (int64_t)min(img, p.n - 1) * p.ho * p.wo * p.co;
    rows.ih0[i] = m < gm ? ii + sp.oy : -(1 << 30);
    rows.iw0[i] = jj + sp.ox;
  }
  auto load_stage = [&](unsigned char* ta, unsigned char* tb, int kt) {
    // This thread's 8 channels of the tile's k range: one tap (a, b), output channels co..co+7.
    const int k = kt * BK + 8 * Chunks::col(0), tap = k / p.co, co = k - tap * p.co, a = tap / sp.nkw,
              b = tap - a * sp.nkw;
#pragma unroll
    for (int i = 0; i < PixelRows::N; ++i) {
      const int oh = rows.ih0[i] - a, ow = rows.iw0[i] - b;
      const bool in = k < gk && oh >= 0 && oh < p.ho && ow >= 0 && ow < p.wo;
      const bf16* src = in ? rows.img_base[i] + ((int64_t)oh * p.wo + ow) * p.co + co : dy;
      cp_async_16(smem_addr(swizzled_chunk<BM>(ta, Chunks::row(i), Chunks::col(i))), src, in ? 16 : 0);
    }
    load_matrix_tile<BN, BK>(tb, w, p.c, gk, n0, kt * BK);
  };
  float acc[BN / 2];
  mainloop<false, false>(acc, (gk + BK - 1) / BK, load_stage);  // a class no tap reaches stores zeros

  const int row0 = 64 * (threadIdx.x / 128) + 16 * (threadIdx.x / 32 % 4) + threadIdx.x % 32 / 4;
  const int64_t plane = (int64_t)p.h * p.w;
  auto out_base = [&](int r) {  // dx[img, 0, s*i + py, s*j + px] of tile row r, or -1 past the class's M
    const int m = m0 + r, img = m / q, pix = m - img * q, ii = pix / sp.wc, jj = pix - ii * sp.wc;
    return m < gm ? img * p.c * plane + (int64_t)(p.stride * ii + sp.py) * p.w + p.stride * jj + sp.px : (int64_t)-1;
  };
  const int64_t base_lo = out_base(row0), base_hi = out_base(row0 + 8);
  store_rows(acc, [&](int r, int col, float v0, float v1) {
    const int64_t base = r == row0 ? base_lo : base_hi;
    const int c = n0 + col;
    if (base < 0) return;
    if (c < p.c) dx[base + c * plane] = __float2bfloat16(v0);
    if (c + 1 < p.c) dx[base + (c + 1) * plane] = __float2bfloat16(v1);
  });
}

__device__ void wgrad(const ConvParams p, const bf16* x, const bf16* dy, float* partial) {
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
  const int hwo = p.ho * p.wo, kk = p.k * p.k;
  const int k_begin = blockIdx.z * p.k_split, k_end = min(p.gk, k_begin + p.k_split);
  // A (dy) chunks: rows co = tid/8 + 32i, pixel chunk column tid % 8 fixed.
  using AChunks = TileChunks<BM, BK>;
  // B (x) chunks: rows = pixels tid/16 + 16i, column tid % 16 fixed: one tap and 8 channels for the block.
  using BChunks = TileChunks<BK, BN>;
  const int ncol = n0 + 8 * BChunks::col(0), tap = ncol / p.c, c = ncol - tap * p.c, kh = tap / p.k, kw = tap - kh * p.k;
  const bool ncol_in = ncol < p.gn;
  auto load_stage = [&](unsigned char* ta, unsigned char* tb, int kt) {
    const int q0 = k_begin + kt * BK;
    {
      const int q = q0 + 8 * AChunks::col(0), img = q / hwo, pix = q - img * hwo;
#pragma unroll
      for (int i = 0; i < AChunks::COUNT; ++i) {
        const int co = m0 + AChunks::row(i);
        const bool in = co < p.co && q < k_end;
        const bf16* src = in ? dy + ((int64_t)img * p.co + co) * hwo + pix : dy;
        cp_async_16(smem_addr(swizzled_chunk<BM>(ta, AChunks::row(i), AChunks::col(i))), src, in ? 16 : 0);
      }
    }
#pragma unroll
    for (int i = 0; i < BChunks::COUNT; ++i) {
      const int q = q0 + BChunks::row(i), img = q / hwo, pix = q - img * hwo, oh = pix / p.wo, ow = pix - oh * p.wo;
      const int ih = oh * p.stride - p.pad + kh, iw = ow * p.stride - p.pad + kw;
      const bool in = ncol_in && q < k_end && ih >= 0 && ih < p.h && iw >= 0 && iw < p.w;
      const bf16* src = in ? x + (((int64_t)img * p.h + ih) * p.w + iw) * p.c + c : x;
      cp_async_16(smem_addr(swizzled_chunk<BK>(tb, BChunks::row(i), BChunks::col(i))), src, in ? 16 : 0);
    }
  };
  float acc[BN / 2];
  mainloop<false, true>(acc, (k_end - k_begin + BK - 1) / BK, load_stage);
  float* slab = partial + (int64_t)blockIdx.z * p.gm * p.gn;
  store_rows(acc, [&](int r, int col, float v0, float v1) {
    const int co = m0 + r, n = n0 + col;
    if (co >= p.gm) return;
    float* dst = slab + (int64_t)co * p.gn + n;
    if (n + 1 < p.gn) {
      *reinterpret_cast<float2*>(dst) = make_float2(v0, v1);  // gn = K*K*C_in is even (C_in % 8 == 0)
    } else if (n < p.gn) {
      dst[0] = v0;
    }
  });
}
}  // namespace conv_wgmma

// Grid: (ceil(M / 128), ceil(C_out / 128)); 256 threads; wgmma_gemm::SMEM_BYTES of dynamic shared memory.
// y (NCHW) is stored through the epilogue `e` (conv.cuh).
extern "C" __global__ void __launch_bounds__(wgmma_gemm::THREADS, 1)
    conv2d_fwd_bf16_wgmma(const ConvParams p, const bf16* x_nhwc, const bf16* w_khwc, const ConvEpilogue e, bf16* y) {
  conv_wgmma::fwd(p, x_nhwc, w_khwc, e, y);
}

// Grid: (ceil(N*Hc*Wc / 128) of class 0, ceil(C_in / 128), stride^2 classes); dy channels-last, the classes'
// weights from conv_dgrad_weights_bf16, dx NCHW (every element written by exactly one class).
extern "C" __global__ void __launch_bounds__(wgmma_gemm::THREADS, 1)
    conv2d_dgrad_bf16_wgmma(const ConvParams p, const bf16* dy_nhwc, const bf16* w_cls, bf16* dx) {
  conv_wgmma::dgrad(p, dy_nhwc, w_cls, dx);
}

// Grid: (ceil(C_out / 128), ceil(K*K*C_in / 128), splits); partial [splits][C_out][K*K*C_in] f32, every
// element of every slab written.
extern "C" __global__ void __launch_bounds__(wgmma_gemm::THREADS, 1)
    conv2d_wgrad_bf16_wgmma(const ConvParams p, const bf16* x_nhwc, const bf16* dy, float* partial) {
  conv_wgmma::wgrad(p, x_nhwc, dy, partial);
}

// The input gradient's weights for class z = blockIdx.z (conv.cuh SubPixel), at class_weights_at(p, z):
// w_cls[c][(a * nkw + b) * C_out + co] = w[co, c, kh0 + s*a, kw0 + s*b]. Grid: (blocks, 1, stride^2).
extern "C" __global__ void conv_dgrad_weights_bf16(const ConvParams p, const bf16* w, bf16* w_cls) {
  const SubPixel sp(p);
  const int gk = sp.nkh * sp.nkw * p.co;
  bf16* out = w_cls + conv_wgmma::class_weights_at(p, blockIdx.z);
  GRID_STRIDE_LOOP(e, (int64_t)p.c * gk) {
    // 32-bit index arithmetic: the weights have fewer than 2^31 elements (the launcher's check_i32)
    const int ei = (int)e, c = ei / gk, r = ei - c * gk, tap = r / p.co, co = r - tap * p.co;
    const int a = tap / sp.nkw, b = tap - a * sp.nkw;
    out[e] = w[(((int64_t)co * p.c + c) * p.k + sp.kh0 + p.stride * a) * p.k + sp.kw0 + p.stride * b];
  }
}

// dw[co, c, kh, kw] = sum over z = 0, 1, ... of partial[z][co][(kh*K + kw)*C + c], in that order.
extern "C" __global__ void conv_wgrad_sum_khwc_bf16(const float* partial, bf16* dw, int co, int c, int kk, int splits) {
  const int64_t n = (int64_t)co * c * kk;
  GRID_STRIDE_LOOP(e, n) {
    const int ei = (int)e, tap = ei % kk, ci = ei / kk % c, o = ei / (kk * c);  // 32-bit: dw has < 2^31 elements
    const int64_t src = ((int64_t)o * kk + tap) * c + ci;
    float s = 0.f;
    for (int z = 0; z < splits; ++z) s += partial[z * n + src];
    dw[e] = __float2bfloat16(s);
  }
}

// dst[b, j, i] = src[b, i, j] for src [batches][rows][cols]: x [N][C][H*W] -> [N][H*W][C], and the weights
// [C_out][C_in][K*K] -> [C_out][K*K][C_in]. A 32 x 32 tile through shared memory (padded to 33 columns so
// the transposed reads fall in 32 different banks), read and written along rows: both sides coalesced.
// For x, `affine` (null for the others) and `drop` (zero for the others) apply the convolution's prologue
// (conv.cuh) on the way, row r of batch b being channel r of image b and the source offset the flat NCHW
// index the mask is drawn at: the channels-last copy is then the normalised (and dropped-out) input itself.
// Grid: (ceil(cols / 32), ceil(rows / 32), batches); block (32, 8).
extern "C" __global__ void __launch_bounds__(256)
    conv_nchw_to_nhwc_bf16(const bf16* src, bf16* dst, int rows, int cols, const float* affine, int silu,
                           DropoutMask drop) {
  __shared__ bf16 tile[32][33];
  const uint64_t drop_key = drop.threshold ? drop.resolved_key() : 0;
  const int64_t batch = (int64_t)blockIdx.z * rows * cols;
  const int c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
  for (int i = threadIdx.y; i < 32; i += 8) {
    const int r = r0 + i, c = c0 + threadIdx.x;
    if (r < rows && c < cols) {
      const int64_t at = batch + (int64_t)r * cols + c;
      float v = prologue(affine, silu, (int64_t)blockIdx.z * rows + r, __bfloat162float(src[at]));
      if (drop.threshold) v = drop.apply(drop_key, at, v);
      tile[i][threadIdx.x] = __float2bfloat16(v);
    }
  }
  __syncthreads();
  for (int i = threadIdx.y; i < 32; i += 8) {
    const int c = c0 + i, r = r0 + threadIdx.x;
    if (r < rows && c < cols) dst[batch + (int64_t)c * rows + r] = tile[threadIdx.x][i];
  }
}
