// matmul.cu: one GEMM family, C[M,N] = op(A) · op(B), row-major, f32 accumulate, no epilogue.
// defines: matmul_{nn,nt,tn,tt}_f32 (CUDA cores), matmul_{nn,nt,tn,tt}_bf16_{128,64} (tensor cores).
//
// The two letters say how A and B are stored: n = as used (A [M,K], B [K,N]); t = transposed in memory
// (A stored [K,M], B stored [N,K]). So a backward pass reads the forward operands in place:
//   matmul  dA = dC · B^T  -> "nt" on (dC, B);   dB = A^T · dC -> "tn" on (A, dC)
//   linear  y = x · W^T    -> "nt" on (x, W);    dx = dy · W   -> "nn";   dW = dy^T · x -> "tn"
// and no transpose kernel is ever needed. Every operand is dense, so the leading dimension of a stored
// matrix is its column count (lda = K or M, ldb = N or K, ldc = N).
//
// f32: 64x64 block tile, BK = 16, 256 threads, each thread a 4x4 micro-tile on rows ty + 16i, cols tx + 16j
//      (strided, so a warp's shared-memory reads of A broadcast and of B are 16 consecutive words).
// bf16: BMxBNx32 block tile (128x128 with 8 warps as 2x4, or 64x64 with 4 warps as 2x2), mma.m16n8k16 with
//      f32 accumulators, double-buffered shared memory filled by cp.async when rows are 16-byte aligned
//      (ld % 8 == 0) and by bounds-checked scalar loads otherwise; out-of-range elements are zero-filled so
//      M, N, K need not be multiples of anything. Shared tiles keep the operand's memory layout and the
//      transposition is done by ldmatrix (.trans or not), see load_frag_a / load_frag_b.
#include "gemm.cuh"
#include "mma.cuh"

// ---------------------------------------------------------------------------------------------------------
// f32, CUDA cores
// ---------------------------------------------------------------------------------------------------------
namespace f32gemm {
constexpr int BM = 64, BN = 64, BK = 16, THREADS = 256;
// Row pitch BM + 2 = 66 words: when a tile is filled along k (A not transposed, B transposed) lanes 0-15 of
// a warp write k = 0..15 of one column and lanes 16-31 the next column; 66k mod 32 = 2k puts the first half
// on even banks and the second (column + 1) on odd banks: conflict-free (a pitch of 68 was 2-way).
constexpr int PAD = 2;

// Element (i, kk) of op(A): A stored [M,K] (lda = K) or, transposed, [K,M] (lda = M).
template <bool TA>
__device__ __forceinline__ float load_a(const float* a, int i, int kk, int m, int k) {
  if (i >= m || kk >= k) return 0.f;
  return TA ? a[(int64_t)kk * m + i] : a[(int64_t)i * k + kk];
}
// Element (kk, j) of op(B): B stored [K,N] (ldb = N) or, transposed, [N,K] (ldb = K).
template <bool TB>
__device__ __forceinline__ float load_b(const float* b, int kk, int j, int k, int n) {
  if (kk >= k || j >= n) return 0.f;
  return TB ? b[(int64_t)j * k + kk] : b[(int64_t)kk * n + j];
}

template <bool TA, bool TB>
__device__ void gemm(const GemmParams p) {
  // Both tiles are k-major so the inner product loop reads a row of As and a row of Bs per kk.
  __shared__ float As[BK][BM + PAD];
  __shared__ float Bs[BK][BN + PAD];
  const float* a = static_cast<const float*>(p.a);
  const float* b = static_cast<const float*>(p.b);
  float* c = static_cast<float*>(p.c);
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;  // M on x: grid.x allows 2^31-1 blocks
  float acc[4][4] = {};

  for (int k0 = 0; k0 < p.k; k0 += BK) {
    // Each thread fills 4 elements of each tile. Consecutive threads walk the operand's contiguous
    // dimension in global memory (k for a row-major A, m for a transposed one) so loads coalesce.
#pragma unroll
    for (int r = 0; r < BM * BK / THREADS; ++r) {
      const int e = tid + r * THREADS;
      const int kk = TA ? e / BM : e % BK;
      const int i = TA ? e % BM : e / BK;
      As[kk][i] = load_a<TA>(a, m0 + i, k0 + kk, p.m, p.k);
    }
#pragma unroll
    for (int r = 0; r < BN * BK / THREADS; ++r) {
      const int e = tid + r * THREADS;
      const int kk = TB ? e % BK : e / BN;
      const int j = TB ? e / BK : e % BN;
      Bs[kk][j] = load_b<TB>(b, k0 + kk, n0 + j, p.k, p.n);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      float av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = As[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = Bs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();  // the next iteration overwrites the tiles
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int row = m0 + ty + 16 * i;
    if (row >= p.m) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int col = n0 + tx + 16 * j;
      if (col < p.n) c[(int64_t)row * p.n + col] = acc[i][j];
    }
  }
}
}  // namespace f32gemm

#define GEMM_F32(name, TA, TB) \
  extern "C" __global__ void __launch_bounds__(256) name(const GemmParams p) { f32gemm::gemm<TA, TB>(p); }
GEMM_F32(matmul_nn_f32, false, false)
GEMM_F32(matmul_nt_f32, false, true)
GEMM_F32(matmul_tn_f32, true, false)
GEMM_F32(matmul_tt_f32, true, true)

// ---------------------------------------------------------------------------------------------------------
// bf16, tensor cores (mma.sync m16n8k16, f32 accumulate)
// ---------------------------------------------------------------------------------------------------------
namespace bf16gemm {
constexpr int BK = 32;
// Every shared row is padded by 8 bf16 (16 bytes): row strides of 80 (BK + 8), 144 (64 + 8) or 272 bytes
// (128 + 8) put the 8 rows one ldmatrix reads into 8 different 16-byte bank groups (no conflicts), and keep
// every row 16-byte aligned for cp.async and ldmatrix.
constexpr int PAD = 8;

// Shared layout of one operand tile that spans `outer` x BK of the GEMM: if the operand is stored with k
// contiguous ("k-major": A not transposed, B transposed) the tile is [outer][BK + PAD], otherwise it is
// [BK][outer + PAD]. Returns the element count of one stage.
template <int OUTER, bool K_CONTIG>
__host__ __device__ constexpr int tile_elems() {
  return K_CONTIG ? OUTER * (BK + PAD) : BK * (OUTER + PAD);
}

// Copies one tile of an operand from global to shared memory, in 8-element (16-byte) chunks.
// The operand is stored row-major as [rows, cols] with cols contiguous; this tile covers rows
// r0..r0+TR-1 and cols c0..c0+TC-1 and lands in `dst` as [TR][TC + PAD]; out-of-range elements are zeros.
// VEC: the row length `cols` is a multiple of 8 (so every chunk is 16-byte aligned): use cp.async, whose
//      src-size operand zero-fills a partial chunk. Otherwise: scalar loads, packed and stored as 16 bytes.
template <int TR, int TC, int THREADS, bool VEC>
__device__ __forceinline__ void load_tile(bf16* dst, const bf16* src, int rows, int cols, int r0, int c0) {
  constexpr int CHUNKS_PER_ROW = TC / 8, CHUNKS = TR * CHUNKS_PER_ROW;
  static_assert(CHUNKS % THREADS == 0, "tile chunks must divide evenly among threads");
#pragma unroll
  for (int it = 0; it < CHUNKS / THREADS; ++it) {
    const int ch = threadIdx.x + it * THREADS;
    const int tr = ch / CHUNKS_PER_ROW, tc = (ch % CHUNKS_PER_ROW) * 8;
    const int r = r0 + tr, col = c0 + tc;
    bf16* d = dst + tr * (TC + PAD) + tc;
    int valid = (r < rows) ? min(8, cols - col) : 0;
    valid = max(valid, 0);
    if (VEC) {
      // With src-size 0 nothing is read, but keep the address inside the allocation anyway.
      const bf16* s = valid > 0 ? src + (int64_t)r * cols + col : src;
      cp_async_16(smem_addr(d), s, valid * 2);
    } else {
      __align__(16) bf16 v[8];
      const bf16* s = src + (int64_t)r * cols + col;
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] = e < valid ? s[e] : __float2bfloat16(0.f);
      *reinterpret_cast<uint4*>(d) = *reinterpret_cast<const uint4*>(v);
    }
  }
}

// A fragment (16 rows of M x 16 of K, see mma.cuh) at tile rows mb.., k offset ks, for the 4 8x8 matrices
// (m 0-7, k 0-7), (m 8-15, k 0-7), (m 0-7, k 8-15), (m 8-15, k 8-15) in that order (= a0..a3).
template <int BM, bool TA>
__device__ __forceinline__ void load_frag_a(uint32_t fa[4], const bf16* sA, int mb, int ks) {
  const int lane = threadIdx.x & 31, i = lane / 8, r = lane % 8;
  if (!TA) {
    // sA is [BM][BK+PAD] (k contiguous): plain ldmatrix; lane l gives row m = l % 16, k half l / 16.
    const bf16* p = sA + (mb + (lane % 16)) * (BK + PAD) + ks + (lane / 16) * 8;
    ldmatrix_x4(fa, smem_addr(p));
  } else {
    // sA is [BK][BM+PAD] (m contiguous): memory rows are k, so ldmatrix.trans hands each lane (m, 2 k's);
    // matrix i covers k rows (i / 2) * 8 + r at m offset (i % 2) * 8.
    const bf16* p = sA + (ks + r + (i / 2) * 8) * (BM + PAD) + mb + (i % 2) * 8;
    ldmatrix_x4_trans(fa, smem_addr(p));
  }
}

// B fragments of two adjacent n8 tiles (k 16 x n 16 at tile column nb, k offset ks): fb[0], fb[1] = b0, b1
// of the tile at nb, fb[2], fb[3] = b0, b1 of the tile at nb + 8. The 4 matrices are (n 0-7, k 0-7),
// (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15).
template <int BN, bool TB>
__device__ __forceinline__ void load_frag_b(uint32_t fb[4], const bf16* sB, int nb, int ks) {
  const int lane = threadIdx.x & 31, i = lane / 8, r = lane % 8;
  if (TB) {
    // sB is [BN][BK+PAD] (k contiguous): memory rows are n, plain ldmatrix gives lane (n = g, k = 2t..).
    const bf16* p = sB + (nb + r + (i / 2) * 8) * (BK + PAD) + ks + (i % 2) * 8;
    ldmatrix_x4(fb, smem_addr(p));
  } else {
    // sB is [BK][BN+PAD] (n contiguous): memory rows are k, ldmatrix.trans gives lane (n = g, k = 2t..).
    const bf16* p = sB + (ks + r + (i % 2) * 8) * (BN + PAD) + nb + (i / 2) * 8;
    ldmatrix_x4_trans(fb, smem_addr(p));
  }
}

template <int BM, int BN, int WARPS_M, int WARPS_N, bool TA, bool TB, bool VEC>
__device__ void gemm(const GemmParams p) {
  constexpr int THREADS = WARPS_M * WARPS_N * 32;
  constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;  // warp tile
  constexpr int MT = WM / 16, NT = WN / 8;             // mma tiles per warp
  static_assert(NT % 2 == 0, "B fragments are loaded two n8 tiles at a time");
  constexpr int A_ELEMS = tile_elems<BM, !TA>(), B_ELEMS = tile_elems<BN, TB>();
  // Two stages: the tile for step kt+1 is in flight while step kt is multiplied.
  __shared__ __align__(16) bf16 smem[2 * (A_ELEMS + B_ELEMS)];

  const bf16* a = static_cast<const bf16*>(p.a);
  const bf16* b = static_cast<const bf16*>(p.b);
  bf16* c = static_cast<bf16*>(p.c);
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;  // M on x: grid.x allows 2^31-1 blocks
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  const int wm = warp / WARPS_N, wn = warp % WARPS_N;

  auto stage_a = [&](int s) { return smem + s * (A_ELEMS + B_ELEMS); };
  auto stage_b = [&](int s) { return smem + s * (A_ELEMS + B_ELEMS) + A_ELEMS; };
  auto load_stage = [&](int s, int k0) {
    // A stored [M,K]: tile rows m, cols k. A stored [K,M]: tile rows k, cols m.
    if (!TA) load_tile<BM, BK, THREADS, VEC>(stage_a(s), a, p.m, p.k, m0, k0);
    else load_tile<BK, BM, THREADS, VEC>(stage_a(s), a, p.k, p.m, k0, m0);
    // B stored [K,N]: tile rows k, cols n. B stored [N,K]: tile rows n, cols k.
    if (!TB) load_tile<BK, BN, THREADS, VEC>(stage_b(s), b, p.k, p.n, k0, n0);
    else load_tile<BN, BK, THREADS, VEC>(stage_b(s), b, p.n, p.k, n0, k0);
  };

  float acc[MT][NT][4];
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

  const int ktiles = (p.k + BK - 1) / BK;
  if (ktiles > 0) load_stage(0, 0);
  cp_async_commit();
  for (int kt = 0; kt < ktiles; ++kt) {
    const int s = kt & 1;
    if (kt + 1 < ktiles) load_stage(s ^ 1, (kt + 1) * BK);
    cp_async_commit();   // always commit (possibly empty) so wait_group<1> below means "stage s landed"
    cp_async_wait<1>();
    __syncthreads();     // stage s (cp.async or plain stores) visible to every warp
    const bf16* sA = stage_a(s);
    const bf16* sB = stage_b(s);
#pragma unroll
    for (int ks = 0; ks < BK; ks += 16) {
      uint32_t fa[MT][4], fb[NT / 2][4];
#pragma unroll
      for (int i = 0; i < MT; ++i) load_frag_a<BM, TA>(fa[i], sA, wm * WM + i * 16, ks);
#pragma unroll
      for (int j = 0; j < NT / 2; ++j) load_frag_b<BN, TB>(fb[j], sB, wn * WN + j * 16, ks);
#pragma unroll
      for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NT; ++j) mma_bf16_16816(acc[i][j], fa[i], &fb[j / 2][(j % 2) * 2]);
    }
    __syncthreads();  // everyone is done with stage s before iteration kt+1 refills it
  }
  cp_async_wait<0>();

  // Accumulator layout (mma.cuh): c0,c1 at (g, 2t..2t+1), c2,c3 at (g+8, 2t..2t+1) of each 16x8 tile.
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int i = 0; i < MT; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = m0 + wm * WM + i * 16 + g + h * 8;
      if (row >= p.m) continue;
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        const int col = n0 + wn * WN + j * 8 + 2 * t;
        bf16* dst = c + (int64_t)row * p.n + col;
        if (col + 1 < p.n && (p.n % 2) == 0) {
          // both columns in range and the pair is 4-byte aligned (n even, col even): one bf16x2 store
          *reinterpret_cast<uint32_t*>(dst) = pack_bf16x2(acc[i][j][2 * h], acc[i][j][2 * h + 1]);
        } else {
          if (col < p.n) dst[0] = __float2bfloat16(acc[i][j][2 * h]);
          if (col + 1 < p.n) dst[1] = __float2bfloat16(acc[i][j][2 * h + 1]);
        }
      }
    }
  }
}
}  // namespace bf16gemm

// Entry points: matmul_<ta><tb>_bf16_<tile>[_vec]. _128: 128x128 tile, 8 warps (2x4, warp tile 64x32);
// _64: 64x64 tile, 4 warps (2x2, warp tile 32x32), for small problems where 128x128 leaves SMs idle.
#define GEMM_BF16_ONE(name, BM, BN, WMS, WNS, TA, TB, VEC)                                 \
  extern "C" __global__ void __launch_bounds__(WMS * WNS * 32) name(const GemmParams p) { \
    bf16gemm::gemm<BM, BN, WMS, WNS, TA, TB, VEC>(p);                                    \
  }
#define GEMM_BF16(lay, TA, TB)                                                         \
  GEMM_BF16_ONE(matmul_##lay##_bf16_128, 128, 128, 2, 4, TA, TB, false)                \
  GEMM_BF16_ONE(matmul_##lay##_bf16_128_vec, 128, 128, 2, 4, TA, TB, true)             \
  GEMM_BF16_ONE(matmul_##lay##_bf16_64, 64, 64, 2, 2, TA, TB, false)                   \
  GEMM_BF16_ONE(matmul_##lay##_bf16_64_vec, 64, 64, 2, 2, TA, TB, true)
GEMM_BF16(nn, false, false)
GEMM_BF16(nt, false, true)
GEMM_BF16(tn, true, false)
GEMM_BF16(tt, true, true)
