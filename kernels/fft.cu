// fft.cu: the centred unitary 2-D DFT of complex images with the k-space mask fused in (ops::fft).
// defines: masked_fft2c_{fused,rows,cols}_{f32,bf16}   y = M ⊙ F x        (mask applied at the store)
//          masked_ifft2c_{fused,rows,cols}_{f32,bf16}  x = Fᴴ (M ⊙ y)     (mask applied at the load)
// F = fftshift ∘ FFT ∘ ifftshift / √(HW) on [N, 2, H, W] tensors (channel 0 real, 1 imaginary), mask
// [N, 1, H, W] real or absent (null pointer: the plain fft2c / ifft2c). H and W are products of 2, 3 and 5.
//
// What is fused, honestly:
//  * "fused": ONE launch does the whole thing for an image that fits in one block (H·W <= 4096 points,
//    e.g. 64², 12x20, 15x15; see FFT_PTS): one block per image loads it with the ifftshift index map (and
//    the mask, for the adjoint), does the row FFTs and the column FFTs in shared memory, and stores with the
//    fftshift map, the 1/√(HW) scale and (forward) the mask. One read of x and mask, one write of y.
//  * "rows" + "cols": TWO launches for larger images (128², 256², 320²: 256² complex f32 = 512 KiB and 320²
//    = 800 KiB do not fit in the 227 KiB of an H100 SM, 128² exceeds the register budget of one block, and
//    a grid-wide barrier is not used). The row pass transforms a tile of rows per block (ifftshift on load,
//    adjoint mask on load) into an f32 complex scratch buffer [N, H, W] in global memory (L2-resident at
//    the benchmark sizes); the column pass transforms a tile of columns per block and applies the fftshift,
//    scale and forward mask on the store. No separate mask, shift or interleave kernels: x and the mask are
//    read once and y written once, plus one scratch round trip.
//
// The 1-D transforms are mixed-radix Stockham (radix 4 while 4 divides, then 2, 3, 5: the same stage order,
// index formulas and butterflies as src/ops/fft/cpu.rs, which the tests check against a naive f64 DFT), done
// in place in shared memory: every thread reads its butterflies' inputs into registers, the block
// synchronises, then every thread writes its outputs (Stockham writes elsewhere than it reads, and the
// barrier makes that safe without a second buffer). Twiddles come from a per-block table of exp(±2πi m/n),
// m < n, computed with double-precision sincospi and rounded once to f32.
// bf16 storage, f32 arithmetic; the scratch of the two-pass path is always f32.
#include "common.cuh"

// Mirrors `FftParams` in src/ops/fft/cuda.rs (#[repr(C)], 48 bytes).
struct FftParams {
  unsigned long long x;        // input [N, 2, H, W] of T
  unsigned long long mask;     // [N, 1, H, W] of T, or 0 for no mask
  unsigned long long y;        // output [N, 2, H, W] of T
  unsigned long long scratch;  // two-pass only: [N, H, W] float2, the row-transformed images
  int n, h, w;
  int tile;     // rows per block (row pass) or columns per block (column pass); unused by "fused"
  float scale;  // 1 / sqrt(H W)
  int pad;
};

// Block size of every kernel here, and the most complex points a thread holds in registers during a
// stage: a block transforms at most FFT_THREADS * FFT_PTS = 4096 points (a 64² image, or a tile of rows or
// columns). With 8 points ptxas fits a kernel in ~110 registers without spills; 16 points spilled once the
// four radix instantiations share a kernel (ptxas -v), hence the whole-image kernel stops at 4096 points.
// Mirrored by THREADS and POINTS in src/ops/fft/cuda.rs.
#define FFT_THREADS 512
#define FFT_PTS 8

__device__ __forceinline__ float2 cadd(float2 a, float2 b) { return make_float2(a.x + b.x, a.y + b.y); }
__device__ __forceinline__ float2 csub(float2 a, float2 b) { return make_float2(a.x - b.x, a.y - b.y); }
__device__ __forceinline__ float2 cscale(float2 a, float s) { return make_float2(a.x * s, a.y * s); }
__device__ __forceinline__ float2 cmul(float2 a, float2 b) {
  return make_float2(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
}
// a * (sigma i), sigma = ±1: (x + iy)(σi) = σ(-y + ix).
__device__ __forceinline__ float2 mul_si(float2 a, float sigma) { return make_float2(-a.y * sigma, a.x * sigma); }

// The P-point DFT b_s = Σ_q a_q exp(σ 2πi qs/P) in place; the formulas of cpu::butterfly.
template <int P>
__device__ __forceinline__ void butterfly(float2 (&a)[P], float sigma) {
  if constexpr (P == 2) {
    const float2 a0 = a[0], a1 = a[1];
    a[0] = cadd(a0, a1);
    a[1] = csub(a0, a1);
  } else if constexpr (P == 3) {
    // w = exp(σ 2πi/3) = -1/2 + σ i √3/2.
    const float2 a0 = a[0], t = cadd(a[1], a[2]), d = csub(a[1], a[2]);
    const float2 m = csub(a0, cscale(t, 0.5f));
    const float2 rot = cscale(mul_si(d, sigma), 0.86602540378443865f);
    a[0] = cadd(a0, t);
    a[1] = cadd(m, rot);
    a[2] = csub(m, rot);
  } else if constexpr (P == 4) {
    // w = σi: b1 = (a0 - a2) + σi(a1 - a3), b2 = (a0 + a2) - (a1 + a3), b3 = (a0 - a2) - σi(a1 - a3).
    const float2 s02 = cadd(a[0], a[2]), d02 = csub(a[0], a[2]);
    const float2 s13 = cadd(a[1], a[3]), d13 = mul_si(csub(a[1], a[3]), sigma);
    a[0] = cadd(s02, s13);
    a[1] = cadd(d02, d13);
    a[2] = csub(s02, s13);
    a[3] = csub(d02, d13);
  } else {
    static_assert(P == 5, "radix 2, 3, 4 or 5");
    // c_k = cos(2πk/5), s_k = sin(2πk/5); t1 = a1 + a4, t2 = a2 + a3, d1 = a1 - a4, d2 = a2 - a3:
    // b1,4 = a0 + c1 t1 + c2 t2 ± σi (s1 d1 + s2 d2), b2,3 = a0 + c2 t1 + c1 t2 ± σi (s2 d1 - s1 d2).
    const float c1 = 0.30901699437494742f, c2 = -0.80901699437494742f;
    const float s1 = 0.95105651629515357f, s2 = 0.58778525229247313f;
    const float2 a0 = a[0];
    const float2 t1 = cadd(a[1], a[4]), t2 = cadd(a[2], a[3]), d1 = csub(a[1], a[4]), d2 = csub(a[2], a[3]);
    const float2 m1 = cadd(a0, cadd(cscale(t1, c1), cscale(t2, c2)));
    const float2 m2 = cadd(a0, cadd(cscale(t1, c2), cscale(t2, c1)));
    const float2 r1 = mul_si(cadd(cscale(d1, s1), cscale(d2, s2)), sigma);
    const float2 r2 = mul_si(csub(cscale(d1, s2), cscale(d2, s1)), sigma);
    a[0] = cadd(a0, cadd(t1, t2));
    a[1] = cadd(m1, r1);
    a[4] = csub(m1, r1);
    a[2] = cadd(m2, r2);
    a[3] = csub(m2, r2);
  }
}

// tw[m] = exp(σ 2πi m / n), m < n: double-precision sincospi rounded once to f32. No barrier here; the
// caller's barrier after its load covers the table.
__device__ __forceinline__ void build_twiddles(float2* tw, int n, float sigma) {
  for (int m = threadIdx.x; m < n; m += blockDim.x) {
    double s, c;
    sincospi(2.0 * (double)m / (double)n, &s, &c);
    tw[m] = make_float2((float)c, sigma * (float)s);
  }
}

// The radix of the next stage, the rule of cpu::radices: 4 while 4 divides what is left, then 2, 3, 5.
__device__ __forceinline__ int next_radix(int rem) {
  return rem % 4 == 0 ? 4 : rem % 2 == 0 ? 2 : rem % 3 == 0 ? 3 : 5;
}

// One radix-P Stockham stage over `nseq` sequences of length n in shared memory; element e of sequence s is
// buf[s * seq_stride + e * el_stride]. Before the stage, r_prev = n / l_prev interleaved subsequences are
// each transformed to length l_prev (A[j, k] at element j + r_prev k); the stage merges subsequences
// j + r q (q < P, r = r_prev / P) into
//   B[j, k1 + l_prev s] = Σ_q w_P^{qs} (w_L^{q k1} A[j + r q, k1]),  L = l_prev P,
// stored at element j + r (k1 + l_prev s). One butterfly per (sequence, j, k1); w_L^{q k1} = tw[q k1 r]
// (q k1 r < L r = n, so no reduction). Butterfly bf -> (sequence, j, k1) puts the unit-stride index
// fastest across threads (j when el_stride is 1, the sequence when seq_stride is 1) so that a warp touches
// consecutive shared-memory words.
// In place: all reads of the stage land in registers before the barrier, all writes come after it.
// Requires nseq * n <= MAXPTS * blockDim.x (each thread then holds at most ceil(MAXPTS / P) butterflies).
template <int P, int MAXPTS>
__device__ __forceinline__ void stockham_stage(float2* buf, const float2* tw, int n, int nseq, int seq_stride,
                                               int el_stride, bool seq_fastest, int l_prev, float sigma) {
  constexpr int MAXB = (MAXPTS + P - 1) / P;
  const int r = n / (l_prev * P);
  const int per_seq = n / P;
  const int nbf = nseq * per_seq;
  const int wstep = r * l_prev * el_stride;  // between the outputs of one butterfly
  float2 v[MAXB][P];
  int wofs[MAXB];  // where output 0 of each butterfly goes (-1: no butterfly); the only index kept
#pragma unroll
  for (int i = 0; i < MAXB; ++i) {
    const int bf = threadIdx.x + i * blockDim.x;
    wofs[i] = -1;
    if (bf < nbf) {
      const int seq = seq_fastest ? bf % nseq : bf / per_seq;
      const int local = seq_fastest ? bf / nseq : bf % per_seq;
      const int j = local % r, k1 = local / r;
      const float2* s = buf + seq * seq_stride + (j + r * P * k1) * el_stride;
#pragma unroll
      for (int q = 0; q < P; ++q) {
        float2 a = s[q * r * el_stride];
        if (q > 0) a = cmul(a, tw[q * k1 * r]);
        v[i][q] = a;
      }
      butterfly<P>(v[i], sigma);
      wofs[i] = seq * seq_stride + (j + r * k1) * el_stride;
    }
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < MAXB; ++i) {
    if (wofs[i] >= 0) {
#pragma unroll
      for (int q = 0; q < P; ++q) buf[wofs[i] + q * wstep] = v[i][q];
    }
  }
  __syncthreads();
}

// The unscaled DFT (sign σ) of `nseq` sequences of length n in shared memory, in place. Every thread runs
// the same stage loop (it depends on n only), so the barriers inside are uniform. Ends with a barrier.
template <int MAXPTS>
__device__ void fft_seqs(float2* buf, const float2* tw, int n, int nseq, int seq_stride, int el_stride,
                         bool seq_fastest, float sigma) {
  int rem = n, l_prev = 1;
  while (rem > 1) {
    const int p = next_radix(rem);
    if (rem % p != 0) break;  // unreachable: the host admits products of 2, 3 and 5 only
    switch (p) {
      case 4: stockham_stage<4, MAXPTS>(buf, tw, n, nseq, seq_stride, el_stride, seq_fastest, l_prev, sigma); break;
      case 2: stockham_stage<2, MAXPTS>(buf, tw, n, nseq, seq_stride, el_stride, seq_fastest, l_prev, sigma); break;
      case 3: stockham_stage<3, MAXPTS>(buf, tw, n, nseq, seq_stride, el_stride, seq_fastest, l_prev, sigma); break;
      default: stockham_stage<5, MAXPTS>(buf, tw, n, nseq, seq_stride, el_stride, seq_fastest, l_prev, sigma); break;
    }
    rem /= p;
    l_prev *= p;
  }
}

// Loads are issued LOAD_UNROLL at a time per thread before any shared-memory store, so each thread keeps
// several global reads in flight (the fused kernel has only one block per image to hide latency with).
#define LOAD_UNROLL 4

// Loads rows [i0, i0 + nrows) of the ifftshifted image into buf (row t at buf + t * W): element (i, j)
// reads x at ((i + H/2) mod H, (j + W/2) mod W), times the mask there when MASK_ON_LOAD (the adjoint).
template <typename T, bool MASK_ON_LOAD>
__device__ __forceinline__ void load_rows(float2* buf, const T* __restrict__ x, const T* __restrict__ mask, int H,
                                          int W, int i0, int nrows) {
  const int HW = H * W, total = nrows * W, ch = H / 2, cw = W / 2;
  for (int base = 0; base < total; base += LOAD_UNROLL * blockDim.x) {
    float re[LOAD_UNROLL], im[LOAD_UNROLL];
#pragma unroll
    for (int k = 0; k < LOAD_UNROLL; ++k) {
      const int idx = base + k * blockDim.x + threadIdx.x;
      if (idx < total) {
        const int i = i0 + idx / W, j = idx % W;
        const int src = ((i + ch) % H) * W + (j + cw) % W;
        float m = 1.f;
        if (MASK_ON_LOAD && mask) m = to_float(mask[src]);
        re[k] = to_float(x[src]) * m;
        im[k] = to_float(x[HW + src]) * m;
      }
    }
#pragma unroll
    for (int k = 0; k < LOAD_UNROLL; ++k) {
      const int idx = base + k * blockDim.x + threadIdx.x;
      if (idx < total) buf[idx] = make_float2(re[k], im[k]);
    }
  }
}

// Stores the transformed complex value of FFT index (u, v) to the fftshifted output position
// ((u + H/2) mod H, (v + W/2) mod W), scaled, times the mask there when MASK_ON_STORE (the forward).
template <typename T, bool MASK_ON_STORE>
__device__ __forceinline__ void store_point(T* __restrict__ y, const T* __restrict__ mask, int H, int W, int u,
                                            int v, float2 val, float scale) {
  const int dst = ((u + H / 2) % H) * W + (v + W / 2) % W;
  float s = scale;
  if (MASK_ON_STORE && mask) s *= to_float(mask[dst]);
  y[dst] = from_float<T>(val.x * s);
  y[H * W + dst] = from_float<T>(val.y * s);
}

// ---------------------------------------------------------------------------------------------- fused
// One block per image, the whole image in shared memory: [tw_w: W][tw_h: H][image: H x W] float2.
template <typename T, bool INV>
__device__ void fft2c_fused(const FftParams& p) {
  DYNAMIC_SHARED(float2, smem);
  const int H = p.h, W = p.w, HW = H * W;
  const float sigma = INV ? 1.f : -1.f;
  float2* tw_w = smem;
  float2* tw_h = smem + W;
  float2* buf = smem + W + H;
  const int64_t b = blockIdx.x;
  const T* x = reinterpret_cast<const T*>(p.x) + b * 2 * HW;
  const T* mask = p.mask ? reinterpret_cast<const T*>(p.mask) + b * HW : nullptr;
  T* y = reinterpret_cast<T*>(p.y) + b * 2 * HW;

  build_twiddles(tw_w, W, sigma);
  build_twiddles(tw_h, H, sigma);
  load_rows<T, INV>(buf, x, mask, H, W, 0, H);
  __syncthreads();
  // Rows: H sequences of W at stride 1. Columns: W sequences of H at stride W, the column index fastest.
  fft_seqs<FFT_PTS>(buf, tw_w, W, H, W, 1, false, sigma);
  fft_seqs<FFT_PTS>(buf, tw_h, H, W, 1, W, true, sigma);
  // Walk the output in order (coalesced stores); output (ou, ov) holds FFT index (ou - H/2, ov - W/2) mod.
  for (int idx = threadIdx.x; idx < HW; idx += blockDim.x) {
    const int ou = idx / W, ov = idx % W;
    const int u = (ou + H - H / 2) % H, v = (ov + W - W / 2) % W;
    store_point<T, !INV>(y, mask, H, W, u, v, buf[u * W + v], p.scale);
  }
}

// ------------------------------------------------------------------------------------------- two-pass
// Row pass, grid (ceil(H / tile), N): rows [i0, i0 + tile) of the ifftshifted image (adjoint: masked) are
// transformed along W and written to scratch[b, i, :] (f32 complex). Shared: [tw_w: W][rows: tile x W].
template <typename T, bool INV>
__device__ void fft2c_rows(const FftParams& p) {
  DYNAMIC_SHARED(float2, smem);
  const int H = p.h, W = p.w, HW = H * W;
  const float sigma = INV ? 1.f : -1.f;
  const int i0 = blockIdx.x * p.tile;
  if (i0 >= H) return;  // uniform per block
  const int nrows = min(p.tile, H - i0);
  float2* tw = smem;
  float2* buf = smem + W;
  const int64_t b = blockIdx.y;
  const T* x = reinterpret_cast<const T*>(p.x) + b * 2 * HW;
  const T* mask = p.mask ? reinterpret_cast<const T*>(p.mask) + b * HW : nullptr;

  build_twiddles(tw, W, sigma);
  load_rows<T, INV>(buf, x, mask, H, W, i0, nrows);
  __syncthreads();
  fft_seqs<FFT_PTS>(buf, tw, W, nrows, W, 1, false, sigma);
  // The tile's rows are contiguous in scratch: a straight coalesced copy.
  float2* out = reinterpret_cast<float2*>(p.scratch) + b * HW + (int64_t)i0 * W;
  for (int idx = threadIdx.x; idx < nrows * W; idx += blockDim.x) out[idx] = buf[idx];
}

// Column pass, grid (ceil(W / tile), N): columns [v0, v0 + tile) of scratch[b] are transformed along H;
// FFT index (u, v) goes to the fftshifted output position, scaled, masked (forward). The tile is kept in
// its global row-major order, buf[u * ncols + c], so both the load and the FFT's warps (sequence index
// fastest) touch consecutive words. Shared: [tw_h: H][tile: H x ncols].
template <typename T, bool INV>
__device__ void fft2c_cols(const FftParams& p) {
  DYNAMIC_SHARED(float2, smem);
  const int H = p.h, W = p.w, HW = H * W;
  const float sigma = INV ? 1.f : -1.f;
  const int v0 = blockIdx.x * p.tile;
  if (v0 >= W) return;  // uniform per block
  const int ncols = min(p.tile, W - v0);
  float2* tw = smem;
  float2* buf = smem + H;
  const int64_t b = blockIdx.y;
  const float2* in = reinterpret_cast<const float2*>(p.scratch) + b * HW;
  const T* mask = p.mask ? reinterpret_cast<const T*>(p.mask) + b * HW : nullptr;
  T* y = reinterpret_cast<T*>(p.y) + b * 2 * HW;

  build_twiddles(tw, H, sigma);
  const int total = H * ncols;
  for (int base = 0; base < total; base += LOAD_UNROLL * blockDim.x) {
    float2 t[LOAD_UNROLL];
#pragma unroll
    for (int k = 0; k < LOAD_UNROLL; ++k) {
      const int idx = base + k * blockDim.x + threadIdx.x;
      if (idx < total) t[k] = in[(idx / ncols) * W + v0 + idx % ncols];
    }
#pragma unroll
    for (int k = 0; k < LOAD_UNROLL; ++k) {
      const int idx = base + k * blockDim.x + threadIdx.x;
      if (idx < total) buf[idx] = t[k];
    }
  }
  __syncthreads();
  fft_seqs<FFT_PTS>(buf, tw, H, ncols, 1, ncols, true, sigma);
  for (int idx = threadIdx.x; idx < total; idx += blockDim.x) {
    const int u = idx / ncols, c = idx % ncols;
    store_point<T, !INV>(y, mask, H, W, u, v0 + c, buf[idx], p.scale);
  }
}

#define FFT_ENTRIES(T, sfx)                                                                                   \
  extern "C" __global__ void __launch_bounds__(FFT_THREADS) masked_fft2c_fused_##sfx(FftParams p) {          \
    fft2c_fused<T, false>(p);                                                                                 \
  }                                                                                                           \
  extern "C" __global__ void __launch_bounds__(FFT_THREADS) masked_ifft2c_fused_##sfx(FftParams p) {         \
    fft2c_fused<T, true>(p);                                                                                  \
  }                                                                                                           \
  extern "C" __global__ void __launch_bounds__(FFT_THREADS) masked_fft2c_rows_##sfx(FftParams p) {           \
    fft2c_rows<T, false>(p);                                                                                  \
  }                                                                                                           \
  extern "C" __global__ void __launch_bounds__(FFT_THREADS) masked_ifft2c_rows_##sfx(FftParams p) {          \
    fft2c_rows<T, true>(p);                                                                                   \
  }                                                                                                           \
  extern "C" __global__ void __launch_bounds__(FFT_THREADS) masked_fft2c_cols_##sfx(FftParams p) {           \
    fft2c_cols<T, false>(p);                                                                                  \
  }                                                                                                           \
  extern "C" __global__ void __launch_bounds__(FFT_THREADS) masked_ifft2c_cols_##sfx(FftParams p) {          \
    fft2c_cols<T, true>(p);                                                                                   \
  }
FFT_ENTRIES(float, f32)
FFT_ENTRIES(bf16, bf16)
