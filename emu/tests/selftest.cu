// selftest.cu: small kernels with known answers for the emulator's self-test (emu/tests/run), and mutants
// of real kernel idioms that the emulator must catch. Compiled by nvcc (their PTX is what the fake driver
// loads) and by emu/build (the host module).
#include "mma.cuh"

// --- block_sum (common.cuh) twice in a row, and the mutant without its write-after-read barrier ----------
__device__ float block_sum_no_war(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;  // MUTANT: the __syncthreads() before this store is gone
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.f;
  return warp_sum(v);
}
template <bool MUTANT> __device__ void two_sums(const float* x, float* out) {
  __shared__ float scratch[32];
  const float v = x[threadIdx.x];
  const float s1 = MUTANT ? block_sum_no_war(v, scratch) : block_sum(v, scratch);
  const float s2 = MUTANT ? block_sum_no_war(v * v, scratch) : block_sum(v * v, scratch);
  out[2 * threadIdx.x] = s1;
  out[2 * threadIdx.x + 1] = s2;
}
extern "C" __global__ void st_two_sums(const float* x, float* out) { two_sums<false>(x, out); }
extern "C" __global__ void st_two_sums_no_war(const float* x, float* out) { two_sums<true>(x, out); }

// --- shuffles and votes: out[lane * 6 + k] -----------------------------------------------------------------
extern "C" __global__ void st_shuffles(const int* in, int* out) {
  const int lane = threadIdx.x & 31, v = in[threadIdx.x];
  int* o = out + threadIdx.x * 6;
  o[0] = __shfl_xor_sync(0xffffffffu, v, 5);
  o[1] = __shfl_sync(0xffffffffu, v, 7, 16);
  o[2] = __shfl_up_sync(0xffffffffu, v, 3, 8);
  o[3] = __shfl_down_sync(0xffffffffu, v, 2);
  o[4] = (int)__ballot_sync(0xffffffffu, v & 1);
  o[5] = __all_sync(0xffffffffu, v > -1000) + 2 * __any_sync(0xffffffffu, v == 12345);
  (void)lane;
}

// --- one mma.m16n8k16 with fragments loaded from global per the documented layouts ----------------------
// A [16][16] row-major, B [8][16] (n rows, k contiguous), D [16][8].
extern "C" __global__ void st_mma(const bf16* A, const bf16* B, float* D) {
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  auto pair = [](const bf16* p) {
    uint32_t r;
    memcpy(&r, p, 4);
    return r;
  };
  uint32_t a[4] = {pair(A + g * 16 + 2 * t), pair(A + (g + 8) * 16 + 2 * t), pair(A + g * 16 + 2 * t + 8),
                   pair(A + (g + 8) * 16 + 2 * t + 8)};
  uint32_t b[2] = {pair(B + g * 16 + 2 * t), pair(B + g * 16 + 2 * t + 8)};
  float d[4] = {1.f, 2.f, 3.f, 4.f};  // C: checks the accumulate
  mma_bf16_16816(d, a, b);
  D[g * 8 + 2 * t] = d[0], D[g * 8 + 2 * t + 1] = d[1], D[(g + 8) * 8 + 2 * t] = d[2], D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

// --- one mma.m16n8k8 .tf32: A [16][8] row-major, B [8][8] (n rows, k contiguous), D [16][8] ---------------
// `convert` 0 passes the f32 bits unrounded (the mutant: the emulator must refuse it when a value has
// mantissa bits below tf32's); rounding goes through to_tf32 (cvt.rna).
extern "C" __global__ void st_mma_tf32(const float* A, const float* B, float* D, int convert) {
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  auto op = [&](float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    return convert ? to_tf32(v) : u;
  };
  uint32_t a[4] = {op(A[g * 8 + t]), op(A[(g + 8) * 8 + t]), op(A[g * 8 + t + 4]), op(A[(g + 8) * 8 + t + 4])};
  uint32_t b[2] = {op(B[g * 8 + t]), op(B[g * 8 + t + 4])};
  float d[4] = {1.f, 2.f, 3.f, 4.f};  // C: checks the accumulate
  mma_tf32_1688(d, a, b);
  D[g * 8 + 2 * t] = d[0], D[g * 8 + 2 * t + 1] = d[1], D[(g + 8) * 8 + 2 * t] = d[2], D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

// to_tf32 on a list of values (the rounding rule: nearest, ties away from zero; inf kept, NaN quiet).
extern "C" __global__ void st_to_tf32(const float* x, uint32_t* out, int n) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = to_tf32(x[i]);
}

// --- ldmatrix x4, plain and .trans, from four 8x8 b16 matrices stored one after the other ------------------
template <bool TRANS> __device__ void ldm(const uint16_t* m, uint32_t* out) {
  __shared__ __align__(16) uint16_t s[4 * 64];
  for (int i = threadIdx.x; i < 256; i += 32) s[i] = m[i];
  __syncwarp();
  uint32_t r[4];
  const uint16_t* row = s + (threadIdx.x / 8) * 64 + (threadIdx.x % 8) * 8;
  if (TRANS) ldmatrix_x4_trans(r, smem_addr(row));
  else ldmatrix_x4(r, smem_addr(row));
  for (int i = 0; i < 4; ++i) out[threadIdx.x * 4 + i] = r[i];
}
extern "C" __global__ void st_ldmatrix(const uint16_t* m, uint32_t* out) { ldm<false>(m, out); }
extern "C" __global__ void st_ldmatrix_trans(const uint16_t* m, uint32_t* out) { ldm<true>(m, out); }

// --- cp.async into dynamic shared memory, and the mutant that reads before its wait ------------------------
template <bool WAIT> __device__ void copy_in(const float* src, float* out) {
  DYNAMIC_SHARED(__align__(16) float, buf);
  cp_async_16(smem_addr(buf + 4 * threadIdx.x), src + 4 * threadIdx.x);
  cp_async_commit();
  if (WAIT) cp_async_wait<0>();  // MUTANT: no wait, the data has not landed when it is read
  __syncthreads();
  const int other = (threadIdx.x + 1) % blockDim.x;
  for (int i = 0; i < 4; ++i) out[4 * threadIdx.x + i] = buf[4 * other + i];
  cp_async_wait<0>();
}
extern "C" __global__ void st_cp_async(const float* src, float* out) { copy_in<true>(src, out); }
extern "C" __global__ void st_cp_async_no_wait(const float* src, float* out) { copy_in<false>(src, out); }

// --- errors the emulator must report ------------------------------------------------------------------------
extern "C" __global__ void st_divergent_barrier(float* out) {
  if (threadIdx.x < 16) __syncthreads();
  out[threadIdx.x] = 1.f;
}
extern "C" __global__ void st_exited_barrier(float* out) {
  if (threadIdx.x >= 40) return;
  __syncthreads();
  out[threadIdx.x] = 1.f;
}
extern "C" __global__ void st_deadlock(float* out) {
  // Warp 1's low half waits at a full-warp shuffle its high half never reaches; everyone else is at the barrier.
  float v = out[threadIdx.x];
  if (threadIdx.x >= 32 && threadIdx.x < 48) v = __shfl_xor_sync(0xffffffffu, v, 1);
  else __syncthreads();
  out[threadIdx.x] = v;
}
extern "C" __global__ void st_race(float* out) {
  __shared__ float cell[2];
  if (threadIdx.x == 0) cell[0] = 1.f;
  const float v = threadIdx.x == 1 ? cell[0] : 0.f;  // no barrier between the write and this read
  __syncthreads();
  out[threadIdx.x] = v;
}
extern "C" __global__ void st_no_race(float* out) {
  __shared__ float cell[2];
  if (threadIdx.x == 0) cell[0] = 1.f;
  __syncthreads();
  out[threadIdx.x] = threadIdx.x == 1 ? cell[0] : 0.f;
}
extern "C" __global__ void st_dynamic_oob(float* out, int n) {
  DYNAMIC_SHARED(__align__(16) float, buf);
  if (threadIdx.x == 0) buf[n] = 1.f;  // one past the launch's dynamic shared memory
  out[threadIdx.x] = 0.f;
}
extern "C" __global__ void st_global_oob(float* out, int n) {
  if (threadIdx.x == 0) out[n] = 1.f;  // one past the allocation
}
extern "C" __global__ void __launch_bounds__(256) st_bounded(float* out) { out[threadIdx.x] = (float)threadIdx.x; }
extern "C" __global__ void st_axpy(const float* x, float* y, float a, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] += a * x[i];
}

// A two-stage bulk-copy pipeline: thread 0 fills stage k % 2 with tile k (256 floats) through
// cp.async.bulk on `full`, every thread doubles its 4 floats of the tile and arrives on `empty`, which
// thread 0 waits on before refilling the stage. MODE 0: correct; 1: consumers skip the `full` wait;
// 2: the producer announces no bytes (arrive without expect_tx); 3: the producer skips the `empty` wait.
#include "bulk.cuh"
template <int MODE> __device__ void pipeline(const float* src, float* out, int tiles) {
  __shared__ __align__(128) float stage[2][256];
  __shared__ __align__(8) uint64_t full[2], empty[2];
  const int t = threadIdx.x;
  if (t == 0)
    for (int s = 0; s < 2; ++s) mbar_init(&full[s], 1), mbar_init(&empty[s], blockDim.x);
  __syncthreads();
  for (int k = 0; k < tiles; ++k) {
    const int s = k % 2;
    const unsigned parity = (k / 2) & 1;
    if (t == 0) {
      if (MODE != 3) mbar_wait(&empty[s], parity ^ 1);
      if (MODE == 2) mbar_arrive(&full[s]);
      else mbar_arrive_expect_tx(&full[s], 256 * sizeof(float));
      bulk_copy_g2s(stage[s], src + k * 256, 256 * sizeof(float), &full[s]);
    }
    if (MODE != 1) mbar_wait(&full[s], parity);
    for (int i = 0; i < 4; ++i) out[k * 256 + t * 4 + i] = 2.f * stage[s][t * 4 + i];
    mbar_arrive(&empty[s]);
  }
}
extern "C" __global__ void st_bulk_pipeline(const float* src, float* out, int tiles) { pipeline<0>(src, out, tiles); }
extern "C" __global__ void st_bulk_no_full_wait(const float* src, float* out, int tiles) { pipeline<1>(src, out, tiles); }
extern "C" __global__ void st_bulk_no_expect_tx(const float* src, float* out, int tiles) { pipeline<2>(src, out, tiles); }
extern "C" __global__ void st_bulk_no_empty_wait(const float* src, float* out, int tiles) { pipeline<3>(src, out, tiles); }
// A consumer waits for a phase nobody completes: a deadlock the emulator must name.
extern "C" __global__ void st_mbar_deadlock(float* out) {
  __shared__ __align__(8) uint64_t bar;
  if (threadIdx.x == 0) mbar_init(&bar, blockDim.x + 1);
  __syncthreads();
  mbar_arrive(&bar);
  mbar_wait(&bar, 0);
  out[threadIdx.x] = 1.f;
}

// Warp-specialised: warp 2 only produces (one elected lane), warps 0-1 only consume, so no consumer's wait
// comes after the producer's copy in its own program order.
extern "C" __global__ void st_bulk_warp_specialised(const float* src, float* out, int tiles) {
  __shared__ __align__(128) float stage[2][256];
  __shared__ __align__(8) uint64_t full[2], empty[2];
  const int t = threadIdx.x;
  if (t == 0)
    for (int s = 0; s < 2; ++s) mbar_init(&full[s], 1), mbar_init(&empty[s], 64);
  __syncthreads();
  for (int k = 0; k < tiles; ++k) {
    const int s = k % 2;
    const unsigned parity = (k / 2) & 1;
    if (t == 64) {
      mbar_wait(&empty[s], parity ^ 1);
      mbar_arrive_expect_tx(&full[s], 256 * sizeof(float));
      bulk_copy_g2s(stage[s], src + k * 256, 256 * sizeof(float), &full[s]);
    } else if (t < 64) {
      mbar_wait(&full[s], parity);
      for (int i = 0; i < 4; ++i) out[k * 256 + t * 4 + i] = 2.f * stage[s][t * 4 + i];
      mbar_arrive(&empty[s]);
    }
  }
}

// --- wgmma.mma_async from shared memory (wgmma.cuh) ---------------------------------------------------------
// Each operand tile is written by the layout the PTX ISA's worked examples give as a CuTe layout (a shape and
// stride per dimension, in elements) followed by Swizzle<B,4,3> on the byte offset: a formulation separate
// from the emulator's, which decodes the descriptor's LBO, SBO and mode. One warpgroup; D [64][N] row-major.
#include "wgmma.cuh"
struct StOperand {
  int shape[2][3], stride[2][3];  // [0]: the m or n dimension, [1]: k; three modes each, innermost first
  int swizzle_bits;               // B of Swizzle<B,4,3>: 0, 1, 2, 3 for interleave, 32, 64, 128 bytes
  unsigned lbo, sbo, mode, step;  // descriptor fields (bytes, WgmmaSwizzle) and the start advance per k16
};
struct StWgmma {
  StOperand a, b;
  int ksteps;
};
__device__ unsigned st_byte(const StOperand& o, int mn, int k) {
  int off = 0;
  for (int d = 0, idx[2] = {mn, k}; d < 2; ++d)
    for (int m = 0, i = idx[d]; m < 3; ++m) off += i % o.shape[d][m] * o.stride[d][m], i /= o.shape[d][m];
  const unsigned bytes = 2u * off;
  return bytes ^ ((bytes >> 7) & ((1u << o.swizzle_bits) - 1)) << 4;
}
enum StWgmmaMutant { ST_WG_OK, ST_WG_NO_WAIT, ST_WG_NO_FENCE, ST_WG_REFILL };
template <int N, int TA, int TB, int MUTANT>
__device__ void wgmma_case(const bf16* A, const bf16* B, float* D, const StWgmma c) {
  DYNAMIC_SHARED(__align__(16) unsigned char, raw);
  unsigned char* sa = raw + (1024 - reinterpret_cast<uintptr_t>(raw) % 1024) % 1024;  // swizzle atoms start at 1 KiB
  unsigned char* sb = sa + 16384;
  const int K = 16 * c.ksteps;
  for (int i = threadIdx.x; i < 64 * K; i += blockDim.x)
    *reinterpret_cast<bf16*>(sa + st_byte(c.a, i / K, i % K)) = A[i];
  for (int i = threadIdx.x; i < N * K; i += blockDim.x)
    *reinterpret_cast<bf16*>(sb + st_byte(c.b, i % N, i / N)) = B[i];  // B is [K][N]
  fence_proxy_async_shared();  // the generic-proxy stores above, before the async proxy reads them
  __syncthreads();
  float d[N / 2];
  for (int i = 0; i < N / 2; ++i) d[i] = 1000.f;  // junk that accumulate = 0 must ignore
  if (MUTANT != ST_WG_NO_FENCE) wgmma_fence();
  for (int s = 0; s < c.ksteps; ++s)
    wgmma_bf16<N, TA, TB>(d, wgmma_desc(sa + s * c.a.step, c.a.lbo, c.a.sbo, (WgmmaSwizzle)c.a.mode),
                          wgmma_desc(sb + s * c.b.step, c.b.lbo, c.b.sbo, (WgmmaSwizzle)c.b.mode), s > 0);
  wgmma_commit();
  if (MUTANT == ST_WG_REFILL) {  // MUTANT: the A tile is refilled before the wait that covers its reads
    __syncthreads();
    for (int i = threadIdx.x; i < 64 * K; i += blockDim.x) *reinterpret_cast<bf16*>(sa + st_byte(c.a, i / K, i % K)) = bf16(0.f);
  }
  if (MUTANT != ST_WG_NO_WAIT) wgmma_wait<0>();  // MUTANT (no wait): the accumulators are read before it
  const int w = threadIdx.x / 32, g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
  for (int j = 0; j < N / 8; ++j)
    for (int v = 0; v < 4; ++v) D[(16 * w + g + 8 * (v >> 1)) * N + 8 * j + 2 * t + (v & 1)] = d[4 * j + v];
  if (MUTANT == ST_WG_NO_WAIT) wgmma_wait<0>();
}
extern "C" __global__ void st_wgmma_kk(const bf16* A, const bf16* B, float* D, const StWgmma c) {
  wgmma_case<128, 0, 0, ST_WG_OK>(A, B, D, c);
}
extern "C" __global__ void st_wgmma_mn(const bf16* A, const bf16* B, float* D, const StWgmma c) {
  wgmma_case<64, 1, 1, ST_WG_OK>(A, B, D, c);
}
extern "C" __global__ void st_wgmma_kn(const bf16* A, const bf16* B, float* D, const StWgmma c) {
  wgmma_case<64, 0, 1, ST_WG_OK>(A, B, D, c);
}
extern "C" __global__ void st_wgmma_no_wait(const bf16* A, const bf16* B, float* D, const StWgmma c) {
  wgmma_case<128, 0, 0, ST_WG_NO_WAIT>(A, B, D, c);
}
extern "C" __global__ void st_wgmma_no_fence(const bf16* A, const bf16* B, float* D, const StWgmma c) {
  wgmma_case<128, 0, 0, ST_WG_NO_FENCE>(A, B, D, c);
}
// The same m64n128 product with the operand tiles brought in by cp.async (wgmma_gemm.cuh's main loop): the
// tiles' shared-memory image is first written to global memory (st_wgmma_image), then copied in 16-byte
// chunks. cp.async writes through the generic proxy and wgmma reads through the async proxy, so each thread
// must fence.proxy.async its landed copies before the barrier; `FENCE` false is the mutant without it.
extern "C" __global__ void st_wgmma_image(const bf16* A, const bf16* B, unsigned char* image, const StWgmma c) {
  const int K = 16 * c.ksteps, N = 128;
  for (int i = threadIdx.x; i < 64 * K; i += blockDim.x) *reinterpret_cast<bf16*>(image + st_byte(c.a, i / K, i % K)) = A[i];
  for (int i = threadIdx.x; i < N * K; i += blockDim.x)
    *reinterpret_cast<bf16*>(image + 16384 + st_byte(c.b, i % N, i / N)) = B[i];
}
template <bool FENCE> __device__ void wgmma_cp_case(const unsigned char* image, float* D, const StWgmma c) {
  constexpr int N = 128;
  DYNAMIC_SHARED(__align__(16) unsigned char, raw);
  unsigned char* sa = raw + (1024 - reinterpret_cast<uintptr_t>(raw) % 1024) % 1024;
  unsigned char* sb = sa + 16384;
  for (int i = threadIdx.x; i < 32768 / 16; i += blockDim.x) cp_async_16(smem_addr(sa + 16 * i), image + 16 * i);
  cp_async_commit();
  cp_async_wait<0>();
  if (FENCE) fence_proxy_async_shared();
  __syncthreads();
  float d[N / 2];
  wgmma_fence();
  for (int s = 0; s < c.ksteps; ++s)
    wgmma_bf16<N, 0, 0>(d, wgmma_desc(sa + s * c.a.step, c.a.lbo, c.a.sbo, (WgmmaSwizzle)c.a.mode),
                        wgmma_desc(sb + s * c.b.step, c.b.lbo, c.b.sbo, (WgmmaSwizzle)c.b.mode), s > 0);
  wgmma_commit();
  wgmma_wait<0>();
  const int w = threadIdx.x / 32, g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
  for (int j = 0; j < N / 8; ++j)
    for (int v = 0; v < 4; ++v) D[(16 * w + g + 8 * (v >> 1)) * N + 8 * j + 2 * t + (v & 1)] = d[4 * j + v];
}
extern "C" __global__ void st_wgmma_cp_async(const unsigned char* image, float* D, const StWgmma c) {
  wgmma_cp_case<true>(image, D, c);
}
extern "C" __global__ void st_wgmma_cp_async_no_proxy_fence(const unsigned char* image, float* D, const StWgmma c) {
  wgmma_cp_case<false>(image, D, c);
}
extern "C" __global__ void st_wgmma_refill(const bf16* A, const bf16* B, float* D, const StWgmma c) {
  wgmma_case<128, 0, 0, ST_WG_REFILL>(A, B, D, c);
}

// --- cp.async.bulk.tensor (tma.cuh): one box of a tensor map into dynamic shared memory, copied out raw ------
#include "tma.cuh"
// Thread 0 issues `load(box, bar)` for `bytes` bytes into a 1 KiB-aligned box; every thread then waits and
// copies the box out.
template <class Load>
__device__ void tma_box_case(unsigned char* out, int bytes, Load load) {
  DYNAMIC_SHARED(__align__(16) unsigned char, raw);
  unsigned char* box = raw + (1024 - reinterpret_cast<uintptr_t>(raw) % 1024) % 1024;
  __shared__ __align__(8) uint64_t bar;
  if (threadIdx.x == 0) {
    mbar_init(&bar, 1);
    mbar_arrive_expect_tx(&bar, bytes);
    load(box, &bar);
  }
  __syncthreads();
  mbar_wait(&bar, 0);
  for (int i = threadIdx.x; i < bytes; i += blockDim.x) out[i] = box[i];
}
extern "C" __global__ void st_tma_2d(const __grid_constant__ TensorMap map, int x, int y, unsigned char* out,
                                     int bytes) {
  tma_box_case(out, bytes, [&](unsigned char* box, uint64_t* bar) { tma_load_2d(box, &map, x, y, bar); });
}
extern "C" __global__ void st_tma_3d(const __grid_constant__ TensorMap map, int x, int y, int z, unsigned char* out,
                                     int bytes) {
  tma_box_case(out, bytes, [&](unsigned char* box, uint64_t* bar) { tma_load_3d(box, &map, x, y, z, bar); });
}

// --- an mbarrier hand-off: warp 0 writes shared memory and arrives, warp 1 waits and reads. The race detector
// orders the two through the barrier; the mutant reads without waiting (a race, in any schedule).
template <bool WAIT> __device__ void handoff(float* d) {
  __shared__ float buf[32];
  __shared__ __align__(8) uint64_t bar;
  if (threadIdx.x == 0) mbar_init(&bar, 32);
  __syncthreads();
  if (threadIdx.x < 32) {
    buf[threadIdx.x] = 3.f * threadIdx.x + 1.f;
    mbar_arrive(&bar);
  } else {
    if (WAIT) mbar_wait(&bar, 0);  // MUTANT (no wait): the read below races with warp 0's write
    d[threadIdx.x - 32] = buf[63 - threadIdx.x];
  }
  if (!WAIT && threadIdx.x >= 32) mbar_wait(&bar, 0);
}
extern "C" __global__ void st_mbar_handoff(float* d) { handoff<true>(d); }
extern "C" __global__ void st_mbar_handoff_no_wait(float* d) { handoff<false>(d); }
