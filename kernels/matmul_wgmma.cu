// matmul_wgmma.cu: the bf16 GEMM of matmul.cu on Hopper's warpgroup MMA (sm_90a).
// defines: matmul_{nn,nt,tn,tt}_bf16_wgmma.
//
// Same contract as matmul.cu (C[M,N] = op(A) · op(B), row-major, "t" = stored transposed, f32 accumulate,
// bf16 out, any M, N, K), for operands whose stored rows are multiples of 8 elements (16-byte cp.async
// chunks; the launcher picks matmul.cu's kernels otherwise).
//
// Block tile 128 x 128 x 64, 256 threads = two warpgroups, each owning 64 rows of C as one
// wgmma.m64n128k16 accumulator (64 f32 registers a thread); four k16 steps per k tile.
// Operand tiles go global -> shared by cp.async (every thread, 16-byte chunks, out-of-range chunks
// zero-filled) into a ring of STAGES stages. A stage keeps each operand's memory layout, as matmul.cu's
// tiles do, and wgmma's transpose bits do the rest: A stored [M,K] and B stored [N,K] are K-major tiles,
// A stored [K,M] and B stored [K,N] are MN-major ones (wgmma.cuh has the layouts).
//
// Shared layout of one operand tile, stored [rows][cols] with cols contiguous (rows = m or n and cols = k
// for a K-major tile, rows = k and cols = m or n for an MN-major one): blocks of 64 columns (128 bytes), each
// [rows][128 B], the 16-byte chunk c of row r at chunk position c ^ (r % 8). That is the 128-byte swizzle
// (rows 128 B apart, so address bits 7-9 are r % 8), which puts the eight rows of a column of chunks in
// eight different bank groups for both the cp.async stores and the tensor core's reads. Every block starts
// on a 1 KiB boundary, so the pattern starts at its origin (descriptor base offset 0):
//   K-major:  SBO = 1 KiB (8 rows), LBO unused; a k16 step advances the start by 32 B.
//   MN-major: SBO = 1 KiB (8 k rows), LBO = one 64-column block (64 rows * 128 B = 8 KiB); a k16 step
//             advances the start by 2 KiB (16 k rows).
//
// Pipeline: STAGES - 2 tiles are loaded ahead and one wgmma group stays in flight (wait_group 1), so the
// stage refilled at step kt is the one read at kt - 2, whose wgmma group the wait at the end of kt - 1
// completed in every warpgroup before the barrier at the top of kt.
#include "bulk.cuh"
#include "gemm.cuh"
#include "wgmma.cuh"

namespace wgmma_gemm {
constexpr int BM = 128, BN = 128, BK = 64, STAGES = 4, THREADS = 256;
constexpr int TILE_BYTES = 128 * BK * 2;  // one operand's stage: 128 rows (or 2 blocks of 64 k rows) x 128 B
constexpr int STAGE_BYTES = 2 * TILE_BYTES;
// The launcher's dynamic shared memory (WGMMA_SMEM_BYTES in src/ops/matmul/cuda.rs): + slack to align the ring.
constexpr int SMEM_BYTES = STAGES * STAGE_BYTES + 1024;
static_assert(SMEM_BYTES <= 227 * 1024, "a block has at most 227 KiB of shared memory");

// Loads the tile of an operand stored [rows][cols] (cols contiguous) at rows r0..r0+TR-1, cols
// c0..c0+TC-1 into `dst` in the swizzled block layout above; chunks past the matrix are zero-filled.
template <int TR, int TC>
__device__ __forceinline__ void load_tile(unsigned char* dst, const bf16* src, int rows, int cols, int r0, int c0) {
  constexpr int CHUNKS_PER_ROW = TC / 8, CHUNKS = TR * CHUNKS_PER_ROW;
  static_assert(CHUNKS % THREADS == 0, "tile chunks must divide evenly among threads");
#pragma unroll
  for (int it = 0; it < CHUNKS / THREADS; ++it) {
    const int ch = threadIdx.x + it * THREADS;
    // Consecutive threads take consecutive chunks of a row: 128-byte coalesced global reads.
    const int tr = ch / CHUNKS_PER_ROW, tc = ch % CHUNKS_PER_ROW;
    const int r = r0 + tr, col = c0 + tc * 8;
    const int valid = r < rows ? max(0, min(8, cols - col)) : 0;
    unsigned char* d = dst + (tc / 8) * (TR * 128) + tr * 128 + (((tc % 8) ^ (tr % 8)) * 16);
    // With src-size 0 nothing is read, but keep the address inside the allocation anyway.
    cp_async_16(smem_addr(d), valid > 0 ? src + (int64_t)r * cols + col : src, valid * 2);
  }
}

template <bool TA, bool TB>
__device__ void gemm(const GemmParams p) {
  DYNAMIC_SHARED(__align__(16) unsigned char, raw);
  unsigned char* ring = raw + (1024 - reinterpret_cast<uintptr_t>(raw) % 1024) % 1024;
  const bf16* a = static_cast<const bf16*>(p.a);
  const bf16* b = static_cast<const bf16*>(p.b);
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;  // M on x: grid.x allows 2^31-1 blocks
  const int group = threadIdx.x / 128;                   // the warpgroup: rows 64 group.. of the tile

  auto tile_a = [&](int s) { return ring + s * STAGE_BYTES; };
  auto tile_b = [&](int s) { return ring + s * STAGE_BYTES + TILE_BYTES; };
  auto load_stage = [&](int s, int k0) {
    if (!TA) load_tile<BM, BK>(tile_a(s), a, p.m, p.k, m0, k0);  // A [M,K]: rows m, cols k
    else load_tile<BK, BM>(tile_a(s), a, p.k, p.m, k0, m0);       // A [K,M]: rows k, cols m
    if (TB) load_tile<BN, BK>(tile_b(s), b, p.n, p.k, n0, k0);   // B [N,K]: rows n, cols k
    else load_tile<BK, BN>(tile_b(s), b, p.k, p.n, k0, n0);       // B [K,N]: rows k, cols n
  };
  // Descriptors of k16 step `ks` of stage s. This warpgroup's 64 rows of A: rows 64·group.. of a K-major
  // tile (8 KiB in), or the group-th 64-column block of an MN-major one (also 8 KiB in).
  constexpr bool A_MN = TA, B_MN = !TB;
  auto desc_a = [&](int s, int ks) {
    return wgmma_desc(tile_a(s) + group * 8192 + ks * (A_MN ? 2048 : 32), A_MN ? 8192 : 16, 1024, WGMMA_SW128);
  };
  auto desc_b = [&](int s, int ks) {
    return wgmma_desc(tile_b(s) + ks * (B_MN ? 2048 : 32), B_MN ? 8192 : 16, 1024, WGMMA_SW128);
  };

  float acc[BN / 2];
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) acc[i] = 0.f;

  const int ktiles = (p.k + BK - 1) / BK;
#pragma unroll
  for (int s = 0; s < STAGES - 2; ++s) {
    if (s < ktiles) load_stage(s, s * BK);
    cp_async_commit();  // always commit (possibly empty) so the group count below is the tile count
  }
  for (int kt = 0; kt < ktiles; ++kt) {
    const int s = kt % STAGES;
    cp_async_wait<STAGES - 3>();  // this thread's chunks of tile kt have landed
    fence_proxy_async_shared();   // ... and are visible to the tensor core's (async proxy) reads
    __syncthreads();              // every thread's chunks; every warpgroup is past its reads of tile kt - 2
    const int next = kt + STAGES - 2;
    if (next < ktiles) load_stage(next % STAGES, next * BK);
    cp_async_commit();
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < BK / 16; ++ks) wgmma_bf16<BN, A_MN, B_MN>(acc, desc_a(s, ks), desc_b(s, ks), 1);
    wgmma_commit();
    wgmma_wait<1>();
  }
  wgmma_wait<0>();
  cp_async_wait<0>();

  // Accumulator layout (wgmma.cuh): acc[4j + v] = C(64·group + 16·(warp % 4) + g + 8·(v / 2), 8j + 2t + v % 2).
  bf16* c = static_cast<bf16*>(p.c);
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int row_base = m0 + 64 * group + 16 * (threadIdx.x / 32 % 4) + g;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = row_base + 8 * h;
    if (row >= p.m) continue;
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
      const int col = n0 + 8 * j + 2 * t;
      bf16* dst = c + (int64_t)row * p.n + col;
      const float v0 = acc[4 * j + 2 * h], v1 = acc[4 * j + 2 * h + 1];
      if (col + 1 < p.n && p.n % 2 == 0) {
        *reinterpret_cast<uint32_t*>(dst) = pack_bf16x2(v0, v1);  // both in range, 4-byte aligned
      } else {
        if (col < p.n) dst[0] = __float2bfloat16(v0);
        if (col + 1 < p.n) dst[1] = __float2bfloat16(v1);
      }
    }
  }
}
}  // namespace wgmma_gemm

// Entry points: matmul_<ta><tb>_bf16_wgmma, one 256-thread block per SM (the ring is 129 KiB).
#define GEMM_WGMMA(lay, TA, TB)                                                                         \
  extern "C" __global__ void __launch_bounds__(wgmma_gemm::THREADS, 1) matmul_##lay##_bf16_wgmma(const GemmParams p) { \
    wgmma_gemm::gemm<TA, TB>(p);                                                                        \
  }
GEMM_WGMMA(nn, false, false)
GEMM_WGMMA(nt, false, true)
GEMM_WGMMA(tn, true, false)
GEMM_WGMMA(tt, true, true)
