// conv.cu: 2-D convolution (NCHW, square K x K kernel, zero padding, equal strides) as implicit GEMM: the
// GEMM operands are gathered from the tensors on the fly while filling shared memory, no im2col buffer.
// defines: conv2d_{fwd,dgrad,wgrad}_{f32,tf32,bf16}, conv2d_wgrad_sum_{f32,bf16}.
//
// The three directions are one GEMM C[M x N] = sum_k A[m, k] * B[k, n] each, differing only in how A and B
// are gathered and where C goes (CUTLASS "implicit GEMM convolution" mapping):
//   fwd    y[n, co, oh, ow]   M = N*Ho*Wo (img, oh, ow)  N = C_out  K = C_in*K*K (c, kh, kw)
//          A = x[img, c, oh*s - p + kh, ow*s - p + kw] (0 in the padding), B = w[co, (c, kh, kw)], stored
//          through the ConvEpilogue (conv.cuh: bias, per-image add, residual, scale)
//   dgrad  dx[n, c, ih, iw]   per class (py, px) of input pixels (ih % s, iw % s), on blockIdx.z (SubPixel):
//          M = N*Hc*Wc (img, i, j) with ih = s*i + py, iw = s*j + px   N = C_in
//          K = C_out*nkh*nkw (co, a, b) over the taps that reach the class, kh = kh0 + s*a, kw = kw0 + s*b
//          A = dy[img, co, i + oy - a, j + ox - b] (0 outside dy), B = w[co, c, kh, kw]; at stride 1 the one
//          class is every pixel and every tap, and a stride-2 3x3 gradient multiplies 9 taps instead of 36.
//   wgrad  dw[co, c, kh, kw]  M = C_out  N = C_in*K*K (c, kh, kw)  K = N*Ho*Wo (img, oh, ow)
//          A = dy[img, co, oh, ow], B = x[img, c, oh*s - p + kh, ow*s - p + kw]; the long reduction is split
//          over blockIdx.z (split-K): split z writes its partial dw to slab z of an f32 workspace, and
//          conv2d_wgrad_sum adds the slabs in split order (no atomics: dw is bitwise reproducible).
// Every index fits in int32: the launcher refuses tensors of 2^31 elements or more.
//
// Operand loading: a "loader" owns one GEMM row (m of A, or n of B), fixed for the whole block, and gathers
// 8 consecutive k of that row per call, walking (c, kh, kw) or (img, oh, ow) with carries instead of
// dividing per element. Rows outside M/N and k >= K read as 0, so partial tiles need no other masking.
#include "conv.cuh"
#include "mma.cuh"

enum { FWD = 0, DGRAD = 1, WGRAD = 2 };

// ---------------------------------------------------------------------------------------------------------
// Loaders. init(p, src, row) once per block; load8(p, k0, v) fills v[0..8) with rows' elements k0..k0+7.

// fwd A: row m = (img, oh, ow), k = (c, kh, kw) -> x[img, c, oh*s - p + kh, ow*s - p + kw].
template <typename T> struct LoadXByPixel {
  const T* base;
  uint64_t drop_key;
  int ih0, iw0, img;
  bool valid;
  __device__ void init(const ConvParams& p, const T* x, int m) {
    valid = m < p.gm;
    const int q = p.ho * p.wo;
    const int img = valid ? m / q : 0, pix = valid ? m - img * q : 0;
    const int oh = pix / p.wo, ow = pix - oh * p.wo;
    ih0 = oh * p.stride - p.pad;
    iw0 = ow * p.stride - p.pad;
    base = x + (size_t)img * p.c * p.h * p.w;
    this->img = img;
    drop_key = conv_drop_key(p);
  }
  __device__ void load8(const ConvParams& p, int k0, float v[8]) const {
    const int kk = p.k * p.k;
    int c = k0 / kk, r = k0 - c * kk;
    int kh = r / p.k, kw = r - kh * p.k;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int ih = ih0 + kh, iw = iw0 + kw;
      // unsigned compare: negative coordinates (top/left padding) wrap to huge values and fail too.
      const bool in = valid && k0 + i < p.gk && (unsigned)ih < (unsigned)p.h && (unsigned)iw < (unsigned)p.w;
      const int at = (c * p.h + ih) * p.w + iw;  // in image img
      v[i] = in ? conv_input(p, drop_key, img, c, (int64_t)img * p.c * p.h * p.w + at, to_float(base[at])) : 0.f;
      if (++kw == p.k) {
        kw = 0;
        if (++kh == p.k) { kh = 0; ++c; }
      }
    }
  }
};

// fwd B: row n = co, k = (c, kh, kw) -> w[co, k] (w is [co, C*K*K] row-major: k is contiguous).
template <typename T> struct LoadWByOut {
  const T* row;
  bool valid;
  __device__ void init(const ConvParams& p, const T* w, int co) {
    valid = co < p.gn;
    row = w + (size_t)(valid ? co : 0) * p.gk;
  }
  __device__ void load8(const ConvParams& p, int k0, float v[8]) const {
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = (valid && k0 + i < p.gk) ? to_float(row[k0 + i]) : 0.f;
  }
};

// dgrad A: row m = (img, i, j) of the block's class, k = (co, a, b) -> dy[img, co, i + oy - a, j + ox - b]
// when inside dy, else 0 (that tap fell past the border).
template <typename T> struct LoadDyByInputPixel {
  const T* base;
  int oh0, ow0, nkh, nkw;
  bool valid;
  __device__ void init(const ConvParams& p, const T* dy, int m) {
    const SubPixel sp(p);
    valid = m < p.gm;
    const int q = sp.hc * sp.wc;
    const int img = valid ? m / q : 0, pix = valid ? m - img * q : 0;
    const int i = pix / max(sp.wc, 1), j = pix - i * sp.wc;
    oh0 = i + sp.oy;
    ow0 = j + sp.ox;
    nkh = sp.nkh;
    nkw = sp.nkw;
    base = dy + (size_t)img * p.co * p.ho * p.wo;
  }
  __device__ void load8(const ConvParams& p, int k0, float v[8]) const {
    const int kk = max(nkh * nkw, 1);
    int co = k0 / kk, r = k0 - co * kk;
    int a = r / max(nkw, 1), b = r - a * nkw;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int oh = oh0 - a, ow = ow0 - b;
      // unsigned compare: a tap past the top/left border gives a negative coordinate, which wraps and fails.
      const bool in = valid && k0 + i < p.gk && (unsigned)oh < (unsigned)p.ho && (unsigned)ow < (unsigned)p.wo;
      v[i] = in ? to_float(base[(co * p.ho + oh) * p.wo + ow]) : 0.f;
      if (++b == nkw) {
        b = 0;
        if (++a == nkh) { a = 0; ++co; }
      }
    }
  }
};

// dgrad B: row n = c, k = (co, a, b) -> w[co, c, kh0 + s*a, kw0 + s*b] (at stride 1 runs of K*K contiguous
// elements, stride C*K*K).
template <typename T> struct LoadWByIn {
  const T* w;
  int c, kh0, kw0, nkh, nkw;
  bool valid;
  __device__ void init(const ConvParams& p, const T* w_, int c_) {
    const SubPixel sp(p);
    valid = c_ < p.gn;
    c = valid ? c_ : 0;
    w = w_;
    kh0 = sp.kh0;
    kw0 = sp.kw0;
    nkh = sp.nkh;
    nkw = sp.nkw;
  }
  __device__ void load8(const ConvParams& p, int k0, float v[8]) const {
    const int kk = max(nkh * nkw, 1);
    int co = k0 / kk, r = k0 - co * kk;
    int a = r / max(nkw, 1), b = r - a * nkw;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int kh = kh0 + p.stride * a, kw = kw0 + p.stride * b;
      v[i] = (valid && k0 + i < p.gk) ? to_float(w[((co * p.c + c) * p.k + kh) * p.k + kw]) : 0.f;
      if (++b == nkw) {
        b = 0;
        if (++a == nkh) { a = 0; ++co; }
      }
    }
  }
};

// wgrad A: row m = co, k = (img, oh, ow) -> dy[img, co, oh, ow] (contiguous within one image).
template <typename T> struct LoadDyByOut {
  const T* dy;
  int co;
  bool valid;
  __device__ void init(const ConvParams& p, const T* dy_, int co_) {
    valid = co_ < p.gm;
    co = valid ? co_ : 0;
    dy = dy_;
  }
  __device__ void load8(const ConvParams& p, int k0, float v[8]) const {
    const int q = p.ho * p.wo;
    int img = k0 / q, pix = k0 - img * q;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      v[i] = (valid && k0 + i < p.gk) ? to_float(dy[(img * p.co + co) * q + pix]) : 0.f;
      if (++pix == q) { pix = 0; ++img; }
    }
  }
};

// wgrad B: row n = (c, kh, kw), k = (img, oh, ow) -> x[img, c, oh*s - p + kh, ow*s - p + kw].
template <typename T> struct LoadXByTap {
  const T* x;
  uint64_t drop_key;
  int c, kh, kw;
  bool valid;
  __device__ void init(const ConvParams& p, const T* x_, int j) {
    valid = j < p.gn;
    const int kk = p.k * p.k;
    const int jj = valid ? j : 0;
    c = jj / kk;
    const int r = jj - c * kk;
    kh = r / p.k;
    kw = r - kh * p.k;
    x = x_;
    drop_key = conv_drop_key(p);
  }
  __device__ void load8(const ConvParams& p, int k0, float v[8]) const {
    const int q = p.ho * p.wo;
    int img = k0 / q, pix = k0 - img * q;
    int oh = pix / p.wo, ow = pix - oh * p.wo;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int ih = oh * p.stride - p.pad + kh, iw = ow * p.stride - p.pad + kw;
      const bool in = valid && k0 + i < p.gk && (unsigned)ih < (unsigned)p.h && (unsigned)iw < (unsigned)p.w;
      const int at = ((img * p.c + c) * p.h + ih) * p.w + iw;
      v[i] = in ? conv_input(p, drop_key, img, c, at, to_float(x[at])) : 0.f;
      if (++ow == p.wo) {
        ow = 0;
        if (++oh == p.ho) { oh = 0; ++img; }
      }
    }
  }
};

// Writes one C element to its place (rows/cols outside the GEMM are dropped); the forward's through its
// epilogue (`e` is unused by the other directions).
template <int MODE, typename T>
__device__ __forceinline__ void store_c(const ConvParams& p, void* out, const ConvEpilogue& e, int m, int col,
                                        float v) {
  if (m >= p.gm || col >= p.gn) return;
  if constexpr (MODE == FWD) {
    const int q = p.ho * p.wo, img = m / q, pix = m - img * q, at = (img * p.co + col) * q + pix;
    static_cast<T*>(out)[at] = from_float<T>(epilogue<T>(e, v, img * p.co + col, col, at));
  } else if constexpr (MODE == DGRAD) {
    const SubPixel sp(p);
    const int q = sp.hc * sp.wc, img = m / q, pix = m - img * q;
    const int i = pix / sp.wc, j = pix - i * sp.wc;
    static_cast<T*>(out)[((img * p.c + col) * p.h + p.stride * i + sp.py) * p.w + p.stride * j + sp.px] =
        from_float<T>(v);
  } else {
    // Split z's partial dw into slab z of the f32 workspace [splits][co][c*k*k].
    static_cast<float*>(out)[((size_t)blockIdx.z * p.gm + m) * p.gn + col] = v;
  }
}

// ---------------------------------------------------------------------------------------------------------
// f32: CUDA-core GEMM, 64x64 block tile, k tile 32, 256 threads each computing a 4x4 micro-tile.
// Shared tiles are stored k-major (As[k][m], Bs[k][n]) so a thread reads its 4 rows / 4 cols as one float4;
// rows padded to 68 floats (272 bytes keeps float4 alignment). Two buffers: the next tile is gathered into
// registers while the current one is multiplied, then stored to the other buffer; one barrier per tile.
constexpr int F_BM = 64, F_BN = 64, F_BK = 32, F_THREADS = 256, F_LD = F_BM + 4;

template <int MODE, typename LA, typename LB, typename TA, typename TB>
__device__ __forceinline__ void gemm_f32(const ConvParams& p, const TA* a_src, const TB* b_src,
                                         const ConvEpilogue& e, void* out) {
  __shared__ __align__(16) float As[2][F_BK][F_LD];
  __shared__ __align__(16) float Bs[2][F_BK][F_LD];
  const int tid = threadIdx.x;
  const int bm = blockIdx.x * F_BM, bn = blockIdx.y * F_BN;
  // Loading: thread owns row tid % 64 of both tiles and k chunk (tid / 64) * 8 .. +8 (32 lanes of a warp take
  // 32 consecutive rows, so the transposed smem stores hit 32 different banks).
  const int lrow = tid % F_BM, lk = (tid / F_BM) * 8;
  LA la;
  LB lb;
  la.init(p, a_src, bm + lrow);
  lb.init(p, b_src, bn + lrow);
  const int k_begin = MODE == WGRAD ? blockIdx.z * p.k_split : 0;  // dgrad's z is its sub-pixel class
  const int k_end = min(p.gk, k_begin + p.k_split);
  const int tiles = k_end > k_begin ? (k_end - k_begin + F_BK - 1) / F_BK : 0;

  float ra[8], rb[8];
  auto stash = [&](int buf) {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      As[buf][lk + i][lrow] = ra[i];
      Bs[buf][lk + i][lrow] = rb[i];
    }
  };
  if (tiles > 0) {
    la.load8(p, k_begin + lk, ra);
    lb.load8(p, k_begin + lk, rb);
    stash(0);
  }
  __syncthreads();

  // Compute: thread (tx, ty) = (tid % 16, tid / 16) owns C rows tx*4..+3 and cols ty*4..+3.
  const int tx = tid % 16, ty = tid / 16;
  float acc[4][4] = {};
  for (int t = 0; t < tiles; ++t) {
    const int cur = t & 1;
    const bool more = t + 1 < tiles;
    if (more) {
      la.load8(p, k_begin + (t + 1) * F_BK + lk, ra);
      lb.load8(p, k_begin + (t + 1) * F_BK + lk, rb);
    }
#pragma unroll
    for (int kk = 0; kk < F_BK; ++kk) {
      const float4 a = *reinterpret_cast<const float4*>(&As[cur][kk][tx * 4]);
      const float4 b = *reinterpret_cast<const float4*>(&Bs[cur][kk][ty * 4]);
      const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    // The other buffer was last read in iteration t-1, which every thread finished before the barrier below
    // of that iteration, so it can be overwritten now.
    if (more) stash(cur ^ 1);
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) store_c<MODE, float>(p, out, e, bm + tx * 4 + i, bn + ty * 4 + j, acc[i][j]);
}

// ---------------------------------------------------------------------------------------------------------
// bf16: tensor cores (mma.sync m16n8k16, bf16 in, f32 accumulate). Block tile 128x128, k tile 32, 8 warps
// in a 2 (m) x 4 (n) grid, each warp a 64x32 C tile = 4 x 4 mma tiles (64 f32 accumulators per thread).
// Shared tiles are k-contiguous, As[m][k] and Bs[n][k], rows padded to 40 bf16 (80 bytes = 20 banks):
//  - a fragment register holds two consecutive k of one row, so it is one 32-bit load; for the 8 groups
//    g = lane/4 the rows start at banks 20g mod 32 = {0,20,8,28,16,4,24,12}, +t (lane%4) spans all 32 banks:
//    conflict-free;
//  - the loader stores 8 packed bf16 (16 bytes) per row chunk; 8 consecutive rows again map to 8 disjoint
//    4-bank groups, so the 16-byte stores are conflict-free too.
// Fragments (mma.cuh): A a0=(g, 2t..2t+1) a1=(g+8, 2t..) a2=(g, 2t+8..) a3=(g+8, 2t+8..) read as As[row][k];
// B b0=(k=2t..2t+1, n=g) b1=(k=2t+8.., n=g) read as Bs[n][k]; the lower k sits at the lower address, which is
// the low half of the 32-bit register as mma expects. C c0,c1=(g, 2t..2t+1), c2,c3=(g+8, 2t..2t+1).
constexpr int H_BM = 128, H_BN = 128, H_BK = 32, H_THREADS = 256, H_LD = H_BK + 8;

__device__ __forceinline__ uint32_t lds32(const bf16* p) { return *reinterpret_cast<const uint32_t*>(p); }

template <int MODE, typename LA, typename LB>
__device__ __forceinline__ void gemm_bf16(const ConvParams& p, const bf16* a_src, const bf16* b_src,
                                          const ConvEpilogue& e, void* out) {
  __shared__ __align__(16) bf16 As[2][H_BM][H_LD];
  __shared__ __align__(16) bf16 Bs[2][H_BN][H_LD];
  const int tid = threadIdx.x;
  const int bm = blockIdx.x * H_BM, bn = blockIdx.y * H_BN;
  // Loading: a 128 x 32 tile is 128 rows x 4 chunks of 8 k = 512 chunks; thread owns row tid % 128 and chunks
  // c0 = tid / 128 and c0 + 2 of both A and B (lanes of a warp: consecutive rows, same chunk).
  const int lrow = tid % H_BM, lk0 = (tid / H_BM) * 8, lk1 = lk0 + 16;
  LA la;
  LB lb;
  la.init(p, a_src, bm + lrow);
  lb.init(p, b_src, bn + lrow);
  const int k_begin = MODE == WGRAD ? blockIdx.z * p.k_split : 0;  // dgrad's z is its sub-pixel class
  const int k_end = min(p.gk, k_begin + p.k_split);
  const int tiles = k_end > k_begin ? (k_end - k_begin + H_BK - 1) / H_BK : 0;

  float ra0[8], ra1[8], rb0[8], rb1[8];
  auto gather = [&](int kt) {
    la.load8(p, kt + lk0, ra0);
    la.load8(p, kt + lk1, ra1);
    lb.load8(p, kt + lk0, rb0);
    lb.load8(p, kt + lk1, rb1);
  };
  auto pack = [](const float v[8]) {
    return make_uint4(pack_bf16x2(v[0], v[1]), pack_bf16x2(v[2], v[3]), pack_bf16x2(v[4], v[5]),
                      pack_bf16x2(v[6], v[7]));
  };
  auto stash = [&](int buf) {
    *reinterpret_cast<uint4*>(&As[buf][lrow][lk0]) = pack(ra0);
    *reinterpret_cast<uint4*>(&As[buf][lrow][lk1]) = pack(ra1);
    *reinterpret_cast<uint4*>(&Bs[buf][lrow][lk0]) = pack(rb0);
    *reinterpret_cast<uint4*>(&Bs[buf][lrow][lk1]) = pack(rb1);
  };
  if (tiles > 0) {
    gather(k_begin);
    stash(0);
  }
  __syncthreads();

  const int warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const int wm = (warp / 4) * 64, wn = (warp % 4) * 32;
  float acc[4][4][4] = {};
  for (int t = 0; t < tiles; ++t) {
    const int cur = t & 1;
    const bool more = t + 1 < tiles;
    if (more) gather(k_begin + (t + 1) * H_BK);
#pragma unroll
    for (int kk = 0; kk < H_BK; kk += 16) {
      uint32_t af[4][4], bfr[4][2];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const bf16* r0 = &As[cur][wm + i * 16 + g][kk + 2 * t4];
        const bf16* r8 = r0 + 8 * H_LD;  // row g + 8
        af[i][0] = lds32(r0);
        af[i][1] = lds32(r8);
        af[i][2] = lds32(r0 + 8);  // k + 8
        af[i][3] = lds32(r8 + 8);
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const bf16* c0 = &Bs[cur][wn + j * 8 + g][kk + 2 * t4];
        bfr[j][0] = lds32(c0);
        bfr[j][1] = lds32(c0 + 8);
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_bf16_16816(acc[i][j], af[i], bfr[j]);
    }
    if (more) stash(cur ^ 1);  // buffer cur^1 was last read in iteration t-1, before its barrier
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int m = bm + wm + i * 16 + g, col = bn + wn + j * 8 + 2 * t4;
      store_c<MODE, bf16>(p, out, e, m, col, acc[i][j][0]);
      store_c<MODE, bf16>(p, out, e, m, col + 1, acc[i][j][1]);
      store_c<MODE, bf16>(p, out, e, m + 8, col, acc[i][j][2]);
      store_c<MODE, bf16>(p, out, e, m + 8, col + 1, acc[i][j][3]);
    }
}

// ---------------------------------------------------------------------------------------------------------
// f32 on TF32 tensor cores (mma.sync m16n8k8, operands rounded to tf32, f32 accumulate): the bf16 kernel's
// block and warp tiling (128x128, 8 warps of 64x32, 4 x 4 mma tiles each) with a k tile of 16, since an
// element is 4 bytes. Shared tiles hold the tf32 bit patterns k-contiguous, As[m][k] and Bs[n][k], rows padded
// to 20 words (80 bytes):
//  - a fragment register is one element, As[row][k] with row = .. + g, k = .. + t: banks 20g + t mod 32 over
//    the 8 groups g and 4 threads t cover all 32 banks, conflict-free (B likewise);
//  - the loader stores 8 elements (2 x 16 bytes) per row chunk; 8 consecutive rows start at banks 20r mod 32,
//    8 disjoint 4-bank groups, so each quarter-warp's 16-byte stores are conflict-free too.
// Each value is rounded to tf32 once, as it is stashed (cvt.rna: nearest, ties away), not truncated by the
// tensor core. Fragments (mma.cuh): A a0=(g, t) a1=(g+8, t) a2=(g, t+4) a3=(g+8, t+4); B b0=(k=t, n=g)
// b1=(k=t+4, n=g); C as bf16's.
constexpr int T_BM = 128, T_BN = 128, T_BK = 16, T_THREADS = 256, T_LD = T_BK + 4;

template <int MODE, typename LA, typename LB>
__device__ __forceinline__ void gemm_tf32(const ConvParams& p, const float* a_src, const float* b_src,
                                          const ConvEpilogue& e, void* out) {
  __shared__ __align__(16) uint32_t As[2][T_BM][T_LD];
  __shared__ __align__(16) uint32_t Bs[2][T_BN][T_LD];
  const int tid = threadIdx.x;
  const int bm = blockIdx.x * T_BM, bn = blockIdx.y * T_BN;
  // Loading: a 128 x 16 tile is 128 rows x 2 chunks of 8 k; thread owns row tid % 128 and chunk tid / 128 of
  // both A and B (lanes of a warp: consecutive rows, same chunk).
  const int lrow = tid % T_BM, lk = (tid / T_BM) * 8;
  LA la;
  LB lb;
  la.init(p, a_src, bm + lrow);
  lb.init(p, b_src, bn + lrow);
  const int k_begin = MODE == WGRAD ? blockIdx.z * p.k_split : 0;  // dgrad's z is its sub-pixel class
  const int k_end = min(p.gk, k_begin + p.k_split);
  const int tiles = k_end > k_begin ? (k_end - k_begin + T_BK - 1) / T_BK : 0;

  float ra[8], rb[8];
  auto gather = [&](int kt) {
    la.load8(p, kt + lk, ra);
    lb.load8(p, kt + lk, rb);
  };
  auto stash = [&](int buf) {
    auto tf32x4 = [](const float* v) { return make_uint4(to_tf32(v[0]), to_tf32(v[1]), to_tf32(v[2]), to_tf32(v[3])); };
    *reinterpret_cast<uint4*>(&As[buf][lrow][lk]) = tf32x4(ra);
    *reinterpret_cast<uint4*>(&As[buf][lrow][lk + 4]) = tf32x4(ra + 4);
    *reinterpret_cast<uint4*>(&Bs[buf][lrow][lk]) = tf32x4(rb);
    *reinterpret_cast<uint4*>(&Bs[buf][lrow][lk + 4]) = tf32x4(rb + 4);
  };
  if (tiles > 0) {
    gather(k_begin);
    stash(0);
  }
  __syncthreads();

  const int warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const int wm = (warp / 4) * 64, wn = (warp % 4) * 32;
  float acc[4][4][4] = {};
  for (int t = 0; t < tiles; ++t) {
    const int cur = t & 1;
    const bool more = t + 1 < tiles;
    if (more) gather(k_begin + (t + 1) * T_BK);
#pragma unroll
    for (int kk = 0; kk < T_BK; kk += 8) {
      uint32_t af[4][4], bfr[4][2];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const uint32_t* r0 = &As[cur][wm + i * 16 + g][kk + t4];
        const uint32_t* r8 = r0 + 8 * T_LD;  // row g + 8
        af[i][0] = r0[0];
        af[i][1] = r8[0];
        af[i][2] = r0[4];  // k + 4
        af[i][3] = r8[4];
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const uint32_t* c0 = &Bs[cur][wn + j * 8 + g][kk + t4];
        bfr[j][0] = c0[0];
        bfr[j][1] = c0[4];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_tf32_1688(acc[i][j], af[i], bfr[j]);
    }
    if (more) stash(cur ^ 1);  // buffer cur^1 was last read in iteration t-1, before its barrier
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int m = bm + wm + i * 16 + g, col = bn + wn + j * 8 + 2 * t4;
      store_c<MODE, float>(p, out, e, m, col, acc[i][j][0]);
      store_c<MODE, float>(p, out, e, m, col + 1, acc[i][j][1]);
      store_c<MODE, float>(p, out, e, m + 8, col, acc[i][j][2]);
      store_c<MODE, float>(p, out, e, m + 8, col + 1, acc[i][j][3]);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Entry points. Grid: (ceil(M / BM), ceil(N / BN), z) with z the splits of wgrad (else 1) and the stride^2
// sub-pixel classes of dgrad, whose blocks past their class's M return at once.

// The forward and the weight gradient run three blocks an SM since their loaders gained the input prologue
// (64 -> 70 registers); holding them to 64 with __launch_bounds__(F_THREADS, 4) spills.
extern "C" __global__ void __launch_bounds__(F_THREADS)
    conv2d_fwd_f32(ConvParams p, const float* x, const float* w, ConvEpilogue e, float* y) {
  gemm_f32<FWD, LoadXByPixel<float>, LoadWByOut<float>>(p, x, w, e, y);
}
// Four blocks an SM (the sub-pixel bookkeeping cost ptxas two registers over 64).
extern "C" __global__ void __launch_bounds__(F_THREADS, 4)
    conv2d_dgrad_f32(ConvParams p, const float* dy, const float* w, float* dx) {
  const ConvParams q = SubPixel(p).narrowed(p);
  if ((int)blockIdx.x * F_BM >= q.gm) return;  // block-uniform, before any barrier
  gemm_f32<DGRAD, LoadDyByInputPixel<float>, LoadWByIn<float>>(q, dy, w, ConvEpilogue{}, dx);
}
// dw_partial [splits][co][c*k*k] f32: every element of every slab is written.
extern "C" __global__ void __launch_bounds__(F_THREADS)
    conv2d_wgrad_f32(ConvParams p, const float* x, const float* dy, float* dw_partial) {
  gemm_f32<WGRAD, LoadDyByOut<float>, LoadXByTap<float>>(p, dy, x, ConvEpilogue{}, dw_partial);
}

extern "C" __global__ void __launch_bounds__(H_THREADS)
    conv2d_fwd_bf16(ConvParams p, const bf16* x, const bf16* w, ConvEpilogue e, bf16* y) {
  gemm_bf16<FWD, LoadXByPixel<bf16>, LoadWByOut<bf16>>(p, x, w, e, y);
}
extern "C" __global__ void __launch_bounds__(H_THREADS)
    conv2d_dgrad_bf16(ConvParams p, const bf16* dy, const bf16* w, bf16* dx) {
  const ConvParams q = SubPixel(p).narrowed(p);
  if ((int)blockIdx.x * H_BM >= q.gm) return;  // block-uniform, before any barrier
  gemm_bf16<DGRAD, LoadDyByInputPixel<bf16>, LoadWByIn<bf16>>(q, dy, w, ConvEpilogue{}, dx);
}
extern "C" __global__ void __launch_bounds__(H_THREADS)
    conv2d_wgrad_bf16(ConvParams p, const bf16* x, const bf16* dy, float* dw_partial) {
  gemm_bf16<WGRAD, LoadDyByOut<bf16>, LoadXByTap<bf16>>(p, dy, x, ConvEpilogue{}, dw_partial);
}

// f32 tensors on TF32 tensor cores (`F32Conv::Tf32` in src/ops/conv/cuda.rs; the FFMA kernels above stay the
// default until a GPU run compares them).
extern "C" __global__ void __launch_bounds__(T_THREADS)
    conv2d_fwd_tf32(ConvParams p, const float* x, const float* w, ConvEpilogue e, float* y) {
  gemm_tf32<FWD, LoadXByPixel<float>, LoadWByOut<float>>(p, x, w, e, y);
}
extern "C" __global__ void __launch_bounds__(T_THREADS)
    conv2d_dgrad_tf32(ConvParams p, const float* dy, const float* w, float* dx) {
  const ConvParams q = SubPixel(p).narrowed(p);
  if ((int)blockIdx.x * T_BM >= q.gm) return;  // block-uniform, before any barrier
  gemm_tf32<DGRAD, LoadDyByInputPixel<float>, LoadWByIn<float>>(q, dy, w, ConvEpilogue{}, dx);
}
extern "C" __global__ void __launch_bounds__(T_THREADS)
    conv2d_wgrad_tf32(ConvParams p, const float* x, const float* dy, float* dw_partial) {
  gemm_tf32<WGRAD, LoadDyByOut<float>, LoadXByTap<float>>(p, dy, x, ConvEpilogue{}, dw_partial);
}

// dw[i] = sum over z = 0, 1, ... of partial[z][i], in that order, converted to dw's dtype.
template <typename T>
__device__ void wgrad_sum(const float* __restrict__ partial, T* __restrict__ dw, int64_t n, int splits) {
  GRID_STRIDE_LOOP(i, n) {
    float s = 0.f;
    for (int z = 0; z < splits; ++z) s += partial[z * n + i];
    dw[i] = from_float<T>(s);
  }
}
extern "C" __global__ void conv2d_wgrad_sum_f32(const float* partial, float* dw, int64_t n, int splits) {
  wgrad_sum(partial, dw, n, splits);
}
extern "C" __global__ void conv2d_wgrad_sum_bf16(const float* partial, bf16* dw, int64_t n, int splits) {
  wgrad_sum(partial, dw, n, splits);
}
