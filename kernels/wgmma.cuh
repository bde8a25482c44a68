// wgmma.cuh: Hopper's warpgroup matrix multiply (sm_90a): wgmma.mma_async with both operands in shared
// memory, described by 64-bit matrix descriptors.
// defines: WgmmaSwizzle, wgmma_desc, wgmma_fence, wgmma_commit, wgmma_wait<N>,
//          wgmma_bf16<N, TRANS_A, TRANS_B>(d, desc_a, desc_b, accumulate)  (N = 64 or 128).
//
// One wgmma.mma_async.m64nNk16.f32.bf16.bf16 is issued by a warpgroup (4 consecutive warps, 128 threads):
// D[64][N] (+)= A[64][16] · B[16][N]. Warp w % 4 of the group owns rows 16(w % 4)..+15 of D, and its lane
// (g = lane / 4, t = lane % 4) holds, for j = 0..N/8-1 (PTX ISA "Matrix Fragments for wgmma.mma_async.m64nNk16"):
//   d[4j + 0], d[4j + 1] = D(16(w%4) + g,     8j + 2t, +1)
//   d[4j + 2], d[4j + 3] = D(16(w%4) + g + 8, 8j + 2t, +1)
//
// Shared-memory operands (PTX ISA "Shared Memory Matrix Layout", the same canonical layouts as CUTLASS's
// make_gmma_desc). An operand is "K-major" when k is contiguous (A stored [M][K], B stored [N][K]) and
// "MN-major" (TRANS = 1) when m or n is. Memory is seen as 16-byte chunks of 8 bf16; a swizzle mode of S
// bytes (32, 64, 128) lays rows of S bytes and XORs the chunk index (address bits 4..) with the row index mod
// S/16 (address bits 7..), so eight consecutive rows of a column of chunks sit in different bank groups.
//   K-major,  swizzled:   element (mn, k) at  (mn % 8)·S + (mn / 8)·SBO + (k / 8)·16 + (k % 8)·2
//   K-major,  interleave: element (mn, k) at  (mn % 8)·16 + (mn / 8)·SBO + (k / 8)·LBO + (k % 8)·2
//   MN-major, swizzled:   element (mn, k) at  (mn / 8 % (S/16))·16 + (mn / 8 / (S/16))·LBO + (k % 8)·S
//                                               + (k / 8)·SBO + (mn % 8)·2
//   MN-major, interleave: element (mn, k) at  (mn / 8)·SBO + (k % 8)·16 + (k / 8)·LBO + (mn % 8)·2
// then, when swizzled, address bits 4.. ^= bits 7.. (3, 2 or 1 bits for 128, 64, 32 bytes) of the absolute
// shared-memory address: a tile whose swizzle pattern is to start at its own origin must be aligned to 8·S
// bytes (the descriptor's base-offset field, which shifts the pattern, is left 0 here).
#pragma once
#include "common.cuh"
#include "mma.cuh"

// The descriptor's swizzle field (bits 62-63).
enum WgmmaSwizzle : uint32_t { WGMMA_INTERLEAVE = 0, WGMMA_SW128 = 1, WGMMA_SW64 = 2, WGMMA_SW32 = 3 };

// Bits 0-13: start address >> 4; 16-29: leading-dimension byte offset >> 4; 32-45: stride-dimension byte
// offset >> 4; 49-51: base offset (0); 62-63: swizzle. Addresses are taken modulo the 256 KiB shared window.
__device__ __forceinline__ uint64_t wgmma_desc(const void* smem, uint32_t lbo, uint32_t sbo, WgmmaSwizzle swizzle) {
#ifdef GSURE_EMU
  const uint64_t addr = reinterpret_cast<uintptr_t>(smem);  // the emulator maps it back into the block's buffer
#else
  const uint64_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
#endif
  return ((addr & 0x3FFFF) >> 4) | (uint64_t)((lbo & 0x3FFFF) >> 4) << 16 | (uint64_t)((sbo & 0x3FFFF) >> 4) << 32 |
         (uint64_t)swizzle << 62;
}

#ifdef GSURE_EMU
// The emulator runs each instruction as a warp collective (emu/src/block.cpp): mma_async queues the warp's
// share of the product, which is computed at the wait_group that covers its group, reading shared memory and
// writing the accumulators only then; so accumulators read before their wait are stale, and a stage refilled
// before the wait that covers its reads corrupts the product, as either may on the GPU.
__device__ __forceinline__ void wgmma_fence(GSURE_EMU_SITE) { gsure_emu_wgmma_fence(file, line); }
__device__ __forceinline__ void wgmma_commit(GSURE_EMU_SITE) { gsure_emu_wgmma_commit(file, line); }
template <int N> __device__ __forceinline__ void wgmma_wait(GSURE_EMU_SITE) { gsure_emu_wgmma_wait(N, file, line); }
template <int N, int TRANS_A, int TRANS_B>
__device__ __forceinline__ void wgmma_bf16(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, int accumulate,
                                           GSURE_EMU_SITE) {
  gsure_emu_wgmma_bf16(d, N, desc_a, desc_b, accumulate, TRANS_A, TRANS_B, file, line);
}
#else
// Orders this thread's register accesses (accumulators) before the wgmma.mma_async that follow.
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
// Closes a wgmma-group of every mma_async issued since the last commit.
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most N wgmma-groups are pending.
template <int N> __device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// wgmma exists only in sm_90a code: other targets (GSURE_CUDA_ARCH=sm_80 or compute_90) compile a trap, and
// the host never launches a wgmma kernel on a device without it (Bf16Gemm::unsupported).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define GSURE_WGMMA 1
#endif

// The accumulator operand lists {%0, ..., %N/2-1}.
#define WGMMA_D_REGS_64 \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define WGMMA_D_REGS_128 \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"

#define WGMMA_D8(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
                    "+f"(d[i + 6]), "+f"(d[i + 7])
#define WGMMA_D32(i) WGMMA_D8(i), WGMMA_D8(i + 8), WGMMA_D8(i + 16), WGMMA_D8(i + 24)

// `accumulate` = 0: D = A·B (the accumulators' old values are ignored); 1: D += A·B. The immediates after
// the predicate are scale-a, scale-b (1: no negation) and the two transposes.
template <int N, int TRANS_A, int TRANS_B>
__device__ __forceinline__ void wgmma_bf16(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, int accumulate) {
  static_assert(N == 64 || N == 128, "wgmma_bf16 is instantiated for N = 64 and 128");
#ifndef GSURE_WGMMA
  (void)d, (void)desc_a, (void)desc_b, (void)accumulate;
  __trap();
#else
  if constexpr (N == 64) {
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.b32 p, %34, 0;\n"
        " wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {" WGMMA_D_REGS_64 "}, %32, %33, p, 1, 1, %35, %36;\n}\n"
        : WGMMA_D32(0)
        : "l"(desc_a), "l"(desc_b), "r"(accumulate), "n"(TRANS_A), "n"(TRANS_B));
  } else {
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.b32 p, %66, 0;\n"
        " wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {" WGMMA_D_REGS_128 "}, %64, %65, p, 1, 1, %67, %68;\n}\n"
        : WGMMA_D32(0), WGMMA_D32(32)
        : "l"(desc_a), "l"(desc_b), "r"(accumulate), "n"(TRANS_A), "n"(TRANS_B));
  }
#endif
}
#undef WGMMA_D8
#undef WGMMA_D32
#endif  // GSURE_EMU
