// gsure_emu.cuh: the CUDA language surface on the host, force-included (g++ -include) before every
// kernels/*.cu when the emulator builds them. The kernel sources are the same files nvcc compiles; the only
// kernel-side portability branches live in common.cuh (DYNAMIC_SHARED) and mma.cuh (the tensor-core
// wrappers), both keyed on GSURE_EMU.
//
// How CUDA maps onto the host (emu/README.md has the whole picture):
// - a CUDA thread is a fiber; the fibers of one block run on one worker thread, so `__shared__` is a
//   function-local `static thread_local` (one copy per worker = per running block);
// - threadIdx/blockIdx/blockDim/gridDim read the running fiber's record (gsure_emu_self);
// - barriers, warp collectives, mma/ldmatrix and cp.async call into the runtime (libcuda.so.1 of emu/),
//   which switches fibers and checks that the participants agree (site, mask, kind);
// - the call site of each collective (__builtin_FILE/LINE) is what a divergence or deadlock report names.
#pragma once
#define GSURE_EMU 1

#include <cuda_bf16.h>  // the real header's host paths: bf16 rounding identical to the device's
#include <stdint.h>
#include <cmath>
#include <cstring>

// ---------------------------------------------------------------------------------------------- keywords
// cuda_bf16.h may have defined some of these for host compilers already.
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __launch_bounds__
#undef __align__
#undef __shared__
#undef __constant__
#undef __grid_constant__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)  // the limit is read from the PTX's .maxntid and enforced at launch
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static thread_local
#define __constant__ static
#define __grid_constant__

// ------------------------------------------------------------------------------------- runtime interface
namespace gsure_emu {
struct Dim { unsigned x, y, z; };
// What a kernel can read about the thread it runs as; owned by the runtime, one per fiber.
struct ThreadInfo {
  Dim thread_idx, block_idx, block_dim, grid_dim;
  void* dynamic_smem;
};
enum ShflKind : int { SHFL_IDX = 0, SHFL_UP = 1, SHFL_DOWN = 2, SHFL_XOR = 3 };
enum VoteKind : int { VOTE_BALLOT = 0, VOTE_ANY = 1, VOTE_ALL = 2 };
}  // namespace gsure_emu

extern "C" {
const gsure_emu::ThreadInfo* gsure_emu_self();
void gsure_emu_syncthreads(const char* file, int line);
void gsure_emu_syncwarp(unsigned mask, const char* file, int line);
uint32_t gsure_emu_shfl(int kind, unsigned mask, uint32_t value, int arg, int width, const char* file, int line);
unsigned gsure_emu_vote(int kind, unsigned mask, int pred, const char* file, int line);
void gsure_emu_mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2], const char* file, int line);
void gsure_emu_mma_tf32_1688(float d[4], const uint32_t a[4], const uint32_t b[2], const char* file, int line);
void gsure_emu_ldmatrix(uint32_t* regs, int count, int trans, const void* row_addr, const char* file, int line);
void gsure_emu_cp_async(void* dst, const void* src, int bytes, int src_bytes, const char* file, int line);
void gsure_emu_cp_async_commit();
void gsure_emu_cp_async_wait(int pending, const char* file, int line);
void gsure_emu_mbar_init(void* bar, unsigned count, const char* file, int line);
uint64_t gsure_emu_mbar_arrive(void* bar, unsigned expect_tx, const char* file, int line);
void gsure_emu_mbar_expect_tx(void* bar, unsigned bytes, const char* file, int line);
void gsure_emu_mbar_wait(void* bar, unsigned parity, const char* file, int line);
void gsure_emu_bulk_copy_g2s(void* dst, const void* src, unsigned bytes, void* bar, const char* file, int line);
void gsure_emu_wgmma_fence(const char* file, int line);
void gsure_emu_fence_proxy_async(const char* file, int line);
void gsure_emu_wgmma_commit(const char* file, int line);
void gsure_emu_wgmma_wait(int pending, const char* file, int line);
void gsure_emu_wgmma_bf16(float* d, int n, uint64_t desc_a, uint64_t desc_b, int accumulate, int trans_a, int trans_b,
                          const char* file, int line);
void gsure_emu_tma_load(void* dst, const void* map, int rank, const int* coords, void* bar, const char* file, int line);
void gsure_emu_trap(const char* what, const char* file, int line);
float gsure_emu_atomic_add_f32(float* addr, float v);
}

#define threadIdx (gsure_emu_self()->thread_idx)
#define blockIdx (gsure_emu_self()->block_idx)
#define blockDim (gsure_emu_self()->block_dim)
#define gridDim (gsure_emu_self()->grid_dim)
static constexpr int warpSize = 32;

#define GSURE_EMU_SITE const char* file = __builtin_FILE(), int line = __builtin_LINE()

inline void __syncthreads(GSURE_EMU_SITE) { gsure_emu_syncthreads(file, line); }
inline void __syncwarp(unsigned mask = 0xffffffffu, GSURE_EMU_SITE) { gsure_emu_syncwarp(mask, file, line); }
inline void __threadfence(GSURE_EMU_SITE) { (void)file, (void)line; __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __trap(GSURE_EMU_SITE) { gsure_emu_trap("__trap()", file, line); }

// Shuffles move 32-bit words; wider types go in 32-bit pieces, as the hardware does.
template <typename T>
inline T gsure_emu_shfl_t(int kind, unsigned mask, T v, int arg, int width, const char* file, int line) {
  static_assert(sizeof(T) % 4 == 0 || sizeof(T) < 4, "shuffle of an odd-sized type");
  uint32_t w[(sizeof(T) + 3) / 4] = {};
  std::memcpy(w, &v, sizeof(T));
  for (unsigned i = 0; i < (sizeof(T) + 3) / 4; ++i) w[i] = gsure_emu_shfl(kind, mask, w[i], arg, width, file, line);
  T out;
  std::memcpy(&out, w, sizeof(T));
  return out;
}
template <typename T> inline T __shfl_sync(unsigned m, T v, int src, int width = 32, GSURE_EMU_SITE) {
  return gsure_emu_shfl_t(gsure_emu::SHFL_IDX, m, v, src, width, file, line);
}
template <typename T> inline T __shfl_up_sync(unsigned m, T v, unsigned d, int width = 32, GSURE_EMU_SITE) {
  return gsure_emu_shfl_t(gsure_emu::SHFL_UP, m, v, (int)d, width, file, line);
}
template <typename T> inline T __shfl_down_sync(unsigned m, T v, unsigned d, int width = 32, GSURE_EMU_SITE) {
  return gsure_emu_shfl_t(gsure_emu::SHFL_DOWN, m, v, (int)d, width, file, line);
}
template <typename T> inline T __shfl_xor_sync(unsigned m, T v, int lane_mask, int width = 32, GSURE_EMU_SITE) {
  return gsure_emu_shfl_t(gsure_emu::SHFL_XOR, m, v, lane_mask, width, file, line);
}
inline unsigned __ballot_sync(unsigned m, int pred, GSURE_EMU_SITE) {
  return gsure_emu_vote(gsure_emu::VOTE_BALLOT, m, pred, file, line);
}
inline int __any_sync(unsigned m, int pred, GSURE_EMU_SITE) { return gsure_emu_vote(gsure_emu::VOTE_ANY, m, pred, file, line); }
inline int __all_sync(unsigned m, int pred, GSURE_EMU_SITE) { return gsure_emu_vote(gsure_emu::VOTE_ALL, m, pred, file, line); }

// ------------------------------------------------------------------------------------------- atomics
// Blocks run concurrently on worker threads, so global atomics are real host atomics.
inline float atomicAdd(float* p, float v) { return gsure_emu_atomic_add_f32(p, v); }
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}

// ------------------------------------------------------------------------------------ device math
// What CUDA's math library has and glibc lacks; each is the exact function, not a fast approximation.
inline float rsqrtf(float x) { return 1.f / sqrtf(x); }
// CUDA declares the classification functions in the global namespace; <cmath> puts them in std::.
using std::isfinite;
using std::isinf;
using std::isnan;
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
// sin(pi x), cos(pi x) with the argument reduced exactly first (as CUDA's sincospi is exact at multiples of 1/2).
inline void sincospi(double x, double* s, double* c) {
  double r = std::fmod(x, 2.0);
  if (r < 0) r += 2.0;
  if (r == 0.0 || r == 1.0) { *s = 0.0; *c = r == 0.0 ? 1.0 : -1.0; return; }
  if (r == 0.5 || r == 1.5) { *s = r == 0.5 ? 1.0 : -1.0; *c = 0.0; return; }
  ::sincos(M_PI * r, s, c);
}
inline void sincospif(float x, float* s, float* c) {
  double sd, cd;
  sincospi((double)x, &sd, &cd);
  *s = (float)sd, *c = (float)cd;
}
// CUDA's integer min/max overloads.
#define GSURE_EMU_MINMAX(T)                             \
  inline T min(T a, T b) { return a < b ? a : b; }      \
  inline T max(T a, T b) { return a > b ? a : b; }
GSURE_EMU_MINMAX(int)
GSURE_EMU_MINMAX(unsigned)
GSURE_EMU_MINMAX(long)
GSURE_EMU_MINMAX(unsigned long)
GSURE_EMU_MINMAX(long long)
GSURE_EMU_MINMAX(unsigned long long)
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
#undef GSURE_EMU_MINMAX
template <typename T> inline T __ldg(const T* p) { return *p; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
