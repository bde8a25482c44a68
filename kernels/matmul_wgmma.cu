// matmul_wgmma.cu: the bf16 GEMM of matmul.cu on Hopper's warpgroup MMA (sm_90a).
// defines: matmul_{nn,nt,tn,tt}_bf16_wgmma (cp.async main loop), matmul_{nn,nt,tn,tt}_bf16_tma (TMA, producer warp).
//
// Same contract as matmul.cu (C[M,N] = op(A) · op(B), row-major, "t" = stored transposed, f32 accumulate,
// bf16 out, any M, N, K), for operands whose stored rows are multiples of 8 elements (16-byte cp.async
// chunks; the launcher picks matmul.cu's kernels otherwise). The main loop is wgmma_gemm.cuh's; a stage
// keeps each operand's memory layout, as matmul.cu's tiles do: A stored [M,K] and B stored [N,K] are K-major
// tiles, A stored [K,M] and B stored [K,N] MN-major ones.
#include "gemm.cuh"
#include "wgmma_gemm.cuh"

// The block's tile of C (row-major [M][N], bf16) from the warpgroup's accumulator, bounds-checked.
__device__ __forceinline__ void store_c(const GemmParams& p, int m0, int n0, const float (&acc)[wgmma_gemm::BN / 2]) {
  bf16* c = static_cast<bf16*>(p.c);
  wgmma_gemm::store_rows(acc, [&](int r, int col, float v0, float v1) {
    const int row = m0 + r, cc = n0 + col;
    if (row >= p.m) return;
    bf16* dst = c + (int64_t)row * p.n + cc;
    if (cc + 1 < p.n && p.n % 2 == 0) {
      *reinterpret_cast<uint32_t*>(dst) = pack_bf16x2(v0, v1);  // both in range, 4-byte aligned
    } else {
      if (cc < p.n) dst[0] = __float2bfloat16(v0);
      if (cc + 1 < p.n) dst[1] = __float2bfloat16(v1);
    }
  });
}

template <bool TA, bool TB> __device__ void wgmma_matmul(const GemmParams p) {
  using namespace wgmma_gemm;
  const bf16* a = static_cast<const bf16*>(p.a);
  const bf16* b = static_cast<const bf16*>(p.b);
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;  // M on x: grid.x allows 2^31-1 blocks
  auto load_stage = [&](unsigned char* ta, unsigned char* tb, int kt) {
    const int k0 = kt * BK;
    if (!TA) load_matrix_tile<BM, BK>(ta, a, p.m, p.k, m0, k0);  // A [M,K]: rows m, cols k
    else load_matrix_tile<BK, BM>(ta, a, p.k, p.m, k0, m0);       // A [K,M]: rows k, cols m
    if (TB) load_matrix_tile<BN, BK>(tb, b, p.n, p.k, n0, k0);   // B [N,K]: rows n, cols k
    else load_matrix_tile<BK, BN>(tb, b, p.k, p.n, k0, n0);       // B [K,N]: rows k, cols n
  };
  float acc[BN / 2];
  mainloop<TA, !TB>(acc, (p.k + BK - 1) / BK, load_stage);
  store_c(p, m0, n0, acc);
}

// The same GEMM with its tiles copied by TMA. Each operand's map describes it as stored, [rows][cols] with
// cols contiguous (dims {cols, rows}); its box is 64 columns (128 bytes, the swizzle span) by 128 rows for a
// K-major tile or by 64 k rows for an MN-major one, whose two 64-column blocks are two copies.
template <bool TA, bool TB>
__device__ void tma_matmul(const GemmParams p, const TensorMap* ma, const TensorMap* mb) {
  using namespace wgmma_gemm;
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
  auto load_stage = [&](unsigned char* ta, unsigned char* tb, int kt, uint64_t* bar) {
    const int k0 = kt * BK;
    if (!TA) tma_load_2d(ta, ma, k0, m0, bar);  // A [M,K]: box k0.., rows m0..m0+127
    else tma_load_2d(ta, ma, m0, k0, bar), tma_load_2d(ta + 8192, ma, m0 + 64, k0, bar);
    if (TB) tma_load_2d(tb, mb, k0, n0, bar);   // B [N,K]
    else tma_load_2d(tb, mb, n0, k0, bar), tma_load_2d(tb + 8192, mb, n0 + 64, k0, bar);
  };
  float acc[BN / 2];
  if (!mainloop_tma<TA, !TB>(acc, (p.k + BK - 1) / BK, load_stage)) return;
  store_c(p, m0, n0, acc);
}

// Entry points: matmul_<ta><tb>_bf16_wgmma, one 256-thread block per SM (the ring is 129 KiB).
#define GEMM_WGMMA(lay, TA, TB)                                                                                 \
  extern "C" __global__ void __launch_bounds__(wgmma_gemm::THREADS, 1) matmul_##lay##_bf16_wgmma(const GemmParams p) { \
    wgmma_matmul<TA, TB>(p);                                                                                    \
  }
GEMM_WGMMA(nn, false, false)
GEMM_WGMMA(nt, false, true)
GEMM_WGMMA(tn, true, false)
GEMM_WGMMA(tt, true, true)

// matmul_<ta><tb>_bf16_tma: 288 threads (two warpgroups and the producer warp); maps built by the launcher.
#define GEMM_TMA(lay, TA, TB)                                                                                   \
  extern "C" __global__ void __launch_bounds__(wgmma_gemm::TMA_THREADS, 1) matmul_##lay##_bf16_tma(           \
      const GemmParams p, const __grid_constant__ TensorMap ma, const __grid_constant__ TensorMap mb) {        \
    tma_matmul<TA, TB>(p, &ma, &mb);                                                                            \
  }
GEMM_TMA(nn, false, false)
GEMM_TMA(nt, false, true)
GEMM_TMA(tn, true, false)
GEMM_TMA(tt, true, true)
