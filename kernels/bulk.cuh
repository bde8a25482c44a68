// bulk.cuh: Hopper's asynchronous bulk copies and the shared-memory mbarriers they complete on (sm_90).
// defines: mbar_init, mbar_arrive, mbar_arrive_expect_tx, mbar_wait (parity), bulk_copy_g2s,
//          fence_proxy_async_shared.
//
// The pattern (PTX ISA, "mbarrier" and "cp.async.bulk"): one thread initialises a barrier with the number of
// arrivals a phase needs; a producer announces the bytes a phase will receive (arrive.expect_tx), then issues
// bulk copies that complete on the barrier (complete_tx); the phase completes when every arrival and every
// byte is in, and a consumer waits for it by parity (phase k has parity k & 1). Waiting for the parity of the
// phase before the first one returns at once, which is why a producer waits on a fresh "empty" barrier with
// parity 1.
#pragma once
#include "common.cuh"
#include "mma.cuh"

#ifdef GSURE_EMU
// The emulator keeps each barrier's state beside the block and lands a bulk copy as late as the hardware
// may: once its barrier has every arrival and a thread waits for the phase. Data read without a wait is
// stale there, and a phase completed by arrivals alone (expect_tx missing) leaves its copies in flight.
__device__ __forceinline__ void mbar_init(uint64_t* bar, unsigned count, GSURE_EMU_SITE) {
  gsure_emu_mbar_init(bar, count, file, line);
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar, GSURE_EMU_SITE) { gsure_emu_mbar_arrive(bar, 0, file, line); }
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, unsigned bytes, GSURE_EMU_SITE) {
  gsure_emu_mbar_arrive(bar, bytes, file, line);
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, unsigned parity, GSURE_EMU_SITE) {
  gsure_emu_mbar_wait(bar, parity, file, line);
}
__device__ __forceinline__ void bulk_copy_g2s(void* dst, const void* src, unsigned bytes, uint64_t* bar,
                                              GSURE_EMU_SITE) {
  gsure_emu_bulk_copy_g2s(dst, src, bytes, bar, file, line);
}
// Orders this thread's generic-proxy shared-memory writes before later async-proxy accesses (wgmma's operand
// reads, a bulk copy that reads shared memory). The emulator tracks the bytes this thread's cp.async copies
// wrote into dynamic shared memory since its last fence and refuses an mma_async that reads one of them.
__device__ __forceinline__ void fence_proxy_async_shared(GSURE_EMU_SITE) { gsure_emu_fence_proxy_async(file, line); }
#else
__device__ __forceinline__ void mbar_init(uint64_t* bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("{\n .reg .b64 state;\n mbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(smem_addr(bar))
               : "memory");
}
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, unsigned bytes) {
  asm volatile("{\n .reg .b64 state;\n mbarrier.arrive.expect_tx.shared::cta.b64 state, [%0], %1;\n}\n" ::"r"(
                   smem_addr(bar)),
               "r"(bytes)
               : "memory");
}
// try_wait may suspend the thread for a while before it fails; the loop retries until the phase completes.
// Labels inside the braces are local to this instance of the asm.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, unsigned parity) {
  asm volatile(
      "{\n .reg .pred done;\n WAIT:\n mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n @!done bra WAIT;\n}\n" ::
          "r"(smem_addr(bar)),
      "r"(parity)
      : "memory");
}
// `bytes` (a multiple of 16) from global `src` to shared `dst` (both 16-byte aligned), completing on `bar`.
__device__ __forceinline__ void bulk_copy_g2s(void* dst, const void* src, unsigned bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                   smem_addr(dst)),
               "l"(src), "r"(bytes), "r"(smem_addr(bar))
               : "memory");
}
__device__ __forceinline__ void fence_proxy_async_shared() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
#endif  // GSURE_EMU
