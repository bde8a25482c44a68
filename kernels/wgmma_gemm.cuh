// wgmma_gemm.cuh: the main loop of the Hopper bf16 GEMMs (matmul_wgmma.cu, conv_wgmma.cu): a block tile
// of 128 x 128 x 64, 256 threads = two warpgroups, each owning 64 rows of the tile as one wgmma.m64n128k16
// accumulator (64 f32 registers a thread), four k16 steps per k tile.
// defines: wgmma_gemm::{BM, BN, BK, STAGES, THREADS, TMA_THREADS, TILE_BYTES, SMEM_BYTES}, swizzled_chunk,
//          load_matrix_tile, mainloop (cp.async, every thread loads), mainloop_tma (a producer warp issues
//          TMA copies, full/empty mbarriers per stage), store_rows.
//
// Operand tiles go global -> shared by cp.async (every thread, 16-byte chunks, chunks outside the operand
// zero-filled) into a ring of STAGES stages; the caller's loader says where each chunk comes from. A stage
// holds an A tile and a B tile, each either K-major (rows = m or n, cols = k) or MN-major (rows = k,
// cols = m or n); wgmma's transpose bits take either (wgmma.cuh has the layouts).
//
// Shared layout of one operand tile of [rows][cols] (cols contiguous): blocks of 64 columns (128 bytes),
// each [rows][128 B], the 16-byte chunk c of row r at chunk position c ^ (r % 8). That is the 128-byte
// swizzle (rows 128 B apart, so address bits 7-9 are r % 8), which puts the eight rows of a column of chunks
// in eight different bank groups for both the cp.async stores and the tensor core's reads. Every block
// starts on a 1 KiB boundary, so the pattern starts at its origin (descriptor base offset 0):
//   K-major:  SBO = 1 KiB (8 rows), LBO unused; a k16 step advances the start by 32 B.
//   MN-major: SBO = 1 KiB (8 k rows), LBO = one 64-column block (64 rows * 128 B = 8 KiB); a k16 step
//             advances the start by 2 KiB (16 k rows).
//
// Pipeline: STAGES - 2 tiles are loaded ahead and one wgmma group stays in flight (wait_group 1), so the
// stage refilled at step kt is the one read at kt - 2, whose wgmma group the wait at the end of kt - 1
// completed in every warpgroup before the barrier at the top of kt.
#pragma once
#include "bulk.cuh"
#include "tma.cuh"
#include "wgmma.cuh"

namespace wgmma_gemm {
constexpr int BM = 128, BN = 128, BK = 64, STAGES = 4, THREADS = 256;
constexpr int TMA_THREADS = THREADS + 32;  // mainloop_tma: the two warpgroups and the producer warp
constexpr int TILE_BYTES = 128 * BK * 2;  // one operand's stage: 128 rows (or 2 blocks of 64 k rows) x 128 B
constexpr int STAGE_BYTES = 2 * TILE_BYTES;
// The launchers' dynamic shared memory (WGMMA_SMEM_BYTES in src/ops/matmul/cuda.rs): + slack to align the ring.
constexpr int SMEM_BYTES = STAGES * STAGE_BYTES + 1024;
static_assert(SMEM_BYTES <= 227 * 1024, "a block has at most 227 KiB of shared memory");

// Where chunk tc (8 columns) of row tr of a tile with TR rows lands in the layout above.
template <int TR> __device__ __forceinline__ unsigned char* swizzled_chunk(unsigned char* tile, int tr, int tc) {
  return tile + (tc / 8) * (TR * 128) + tr * 128 + (((tc % 8) ^ (tr % 8)) * 16);
}

// The chunks of a TR x TC tile, as this thread's share: chunk i of the thread is (row, chunk) =
// (ch / (TC / 8), ch % (TC / 8)) with ch = threadIdx.x + i * THREADS, so consecutive threads take
// consecutive chunks of a row (128-byte coalesced global reads) and a thread's chunk column is fixed.
template <int TR, int TC> struct TileChunks {
  static constexpr int PER_ROW = TC / 8, COUNT = TR * PER_ROW / THREADS;
  static_assert(TR * PER_ROW % THREADS == 0, "tile chunks must divide evenly among threads");
  static __device__ __forceinline__ int row(int i) { return (threadIdx.x + i * THREADS) / PER_ROW; }
  static __device__ __forceinline__ int col(int i) { return (threadIdx.x + i * THREADS) % PER_ROW; }
};

// Loads the tile of a matrix stored [rows][cols] (cols contiguous, cols % 8 == 0) at rows r0..r0+TR-1,
// cols c0..c0+TC-1; chunks past the matrix are zero-filled.
template <int TR, int TC>
__device__ __forceinline__ void load_matrix_tile(unsigned char* dst, const bf16* src, int rows, int cols, int r0,
                                                 int c0) {
  using T = TileChunks<TR, TC>;
#pragma unroll
  for (int i = 0; i < T::COUNT; ++i) {
    const int tr = T::row(i), tc = T::col(i), r = r0 + tr, col = c0 + tc * 8;
    const int valid = r < rows ? max(0, min(8, cols - col)) : 0;
    // With src-size 0 nothing is read, but keep the address inside the allocation anyway.
    cp_async_16(smem_addr(swizzled_chunk<TR>(dst, tr, tc)), valid > 0 ? src + (int64_t)r * cols + col : src,
                valid * 2);
  }
}

// The start of the ring of STAGES stages: the block's dynamic shared memory rounded up to 1 KiB (the
// 128-byte swizzle's repeat), so that every tile's pattern starts at its origin.
__device__ __forceinline__ unsigned char* ring_base() {
  DYNAMIC_SHARED(__align__(16) unsigned char, raw);
  return raw + (1024 - reinterpret_cast<uintptr_t>(raw) % 1024) % 1024;
}

// The descriptor of k16 step `ks` of a 128-byte-swizzled tile starting at `tile` (layouts above): a step
// is 32 B along a K-major tile's rows or 2 KiB (16 k rows) down an MN-major one, whose LBO is the next
// 64-column block (unused for K-major, "assumed 1").
template <bool MN> __device__ __forceinline__ uint64_t tile_desc(const unsigned char* tile, int ks) {
  return wgmma_desc(tile + ks * (MN ? 2048 : 32), MN ? 8192 : 16, 1024, WGMMA_SW128);
}

// Runs the k loop: load_stage(a_tile, b_tile, k_tile) fills one stage with tile k_tile's operands (cp.async,
// without committing); returns this warpgroup's 64 x 128 accumulator (wgmma.cuh's fragment layout).
// A_MN / B_MN: the tiles are MN-major.
template <bool A_MN, bool B_MN, class LoadStage>
__device__ __forceinline__ void mainloop(float (&acc)[BN / 2], int ktiles, const LoadStage& load_stage) {
  unsigned char* ring = ring_base();
  const int group = threadIdx.x / 128;  // the warpgroup: rows 64 group.. of the tile
  auto tile_a = [&](int s) { return ring + s * STAGE_BYTES; };
  auto tile_b = [&](int s) { return ring + s * STAGE_BYTES + TILE_BYTES; };
  // This warpgroup's 64 rows of A: rows 64·group.. of a K-major tile (8 KiB in), or the group-th 64-column
  // block of an MN-major one (also 8 KiB in).
  auto desc_a = [&](int s, int ks) { return tile_desc<A_MN>(tile_a(s) + group * 8192, ks); };
  auto desc_b = [&](int s, int ks) { return tile_desc<B_MN>(tile_b(s), ks); };
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) acc[i] = 0.f;
#pragma unroll
  for (int s = 0; s < STAGES - 2; ++s) {
    if (s < ktiles) load_stage(tile_a(s), tile_b(s), s);
    cp_async_commit();  // always commit (possibly empty) so the group count below is the tile count
  }
  for (int kt = 0; kt < ktiles; ++kt) {
    const int s = kt % STAGES;
    cp_async_wait<STAGES - 3>();  // this thread's chunks of tile kt have landed
    fence_proxy_async_shared();   // ... and are visible to the tensor core's (async proxy) reads
    __syncthreads();              // every thread's chunks; every warpgroup is past its reads of tile kt - 2
    const int next = kt + STAGES - 2;
    if (next < ktiles) load_stage(tile_a(next % STAGES), tile_b(next % STAGES), next);
    cp_async_commit();
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < BK / 16; ++ks) wgmma_bf16<BN, A_MN, B_MN>(acc, desc_a(s, ks), desc_b(s, ks), 1);
    wgmma_commit();
    wgmma_wait<1>();
  }
  wgmma_wait<0>();
  cp_async_wait<0>();
}

// The k loop with the copies on the tensor memory accelerator (tma.cuh), warp-specialised: threads
// THREADS..THREADS+31 are the producer warp, whose lane 0 fills stage kt % STAGES with tile kt as soon as
// the consumers have released it; the two warpgroups wait for each stage to land and multiply it. Per stage
// two mbarriers: `full` (one arrival, the producer's expect_tx of the stage's bytes, completed by the copies)
// and `empty` (one arrival per consumer thread, once the wgmma group that read the stage has completed:
// with one group kept in flight, stage kt - 1 is released at step kt). The shared layout is the one above:
// TMA's 128-byte swizzle writes exactly it when each box row is 128 bytes and the box starts on 1 KiB.
// load_stage(a_tile, b_tile, kt, bar) issues tile kt's copies (completing on bar); returns true in the
// consumer threads, which hold the accumulator; the producer warp returns false.
template <bool A_MN, bool B_MN, class LoadStage>
__device__ __forceinline__ bool mainloop_tma(float (&acc)[BN / 2], int ktiles, const LoadStage& load_stage) {
  unsigned char* ring = ring_base();
  __shared__ __align__(8) uint64_t full[STAGES], empty[STAGES];
  auto tile_a = [&](int s) { return ring + s * STAGE_BYTES; };
  auto tile_b = [&](int s) { return ring + s * STAGE_BYTES + TILE_BYTES; };
  if (threadIdx.x == 0)
    for (int s = 0; s < STAGES; ++s) mbar_init(&full[s], 1), mbar_init(&empty[s], THREADS);
  __syncthreads();
  if (threadIdx.x >= THREADS) {  // the producer warp
    if (threadIdx.x == THREADS)
      for (int kt = 0; kt < ktiles; ++kt) {
        const int s = kt % STAGES, use = kt / STAGES;
        if (use > 0) mbar_wait(&empty[s], (use - 1) & 1);  // the consumers are done with tile kt - STAGES
        mbar_arrive_expect_tx(&full[s], STAGE_BYTES);
        load_stage(tile_a(s), tile_b(s), kt, &full[s]);
      }
    return false;
  }
  const int group = threadIdx.x / 128;
  auto desc_a = [&](int s, int ks) { return tile_desc<A_MN>(tile_a(s) + group * 8192, ks); };
  auto desc_b = [&](int s, int ks) { return tile_desc<B_MN>(tile_b(s), ks); };
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) acc[i] = 0.f;
  for (int kt = 0; kt < ktiles; ++kt) {
    const int s = kt % STAGES;
    mbar_wait(&full[s], (kt / STAGES) & 1);
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < BK / 16; ++ks) wgmma_bf16<BN, A_MN, B_MN>(acc, desc_a(s, ks), desc_b(s, ks), 1);
    wgmma_commit();
    wgmma_wait<1>();
    if (kt > 0) mbar_arrive(&empty[(kt - 1) % STAGES]);  // tile kt - 1's group has completed
  }
  wgmma_wait<0>();
  return true;
}

// Hands the accumulator to store(row, col, v0, v1) as pairs of adjacent columns: row and col are the tile's
// (0..127), v0 at col, v1 at col + 1. acc[4j + v] = (64·group + 16·(warp % 4) + g + 8·(v / 2), 8j + 2t + v % 2).
template <class Store> __device__ __forceinline__ void store_rows(const float (&acc)[BN / 2], const Store& store) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int row0 = 64 * (threadIdx.x / 128) + 16 * (threadIdx.x / 32 % 4) + g;
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) store(row0 + 8 * h, 8 * j + 2 * t, acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1]);
}
}  // namespace wgmma_gemm
