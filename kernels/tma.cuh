// tma.cuh: Hopper's tensor memory accelerator (sm_90): a box of a tensor, global -> shared, in one
// instruction issued by one thread, completing on an mbarrier (bulk.cuh).
// defines: TensorMap, tma_load_2d, tma_load_3d.
//
// The host describes the tensor once with cuTensorMapEncodeTiled (element type, dimensions innermost first,
// byte strides, the box, a swizzle) and passes the map to the kernel by value as a `const __grid_constant__
// TensorMap` parameter. tma_load_Nd copies the box whose first element is at `coords` (element indices,
// innermost first; they may lie outside the tensor, whose missing elements arrive as zeros) to `dst`
// (128-byte aligned; 8·S-byte aligned for the S-byte swizzle to start at dst), laid densely with dimension
// 0 innermost; with a swizzle, the 16-byte chunk index within each S-byte span is XORed with shared address
// bits 7.., the layout wgmma_desc's swizzle modes read. The barrier's phase receives the box's bytes
// (mbar_arrive_expect_tx them first), out-of-bounds fill included.
#pragma once
#include "bulk.cuh"

// A CUtensorMap: 128 opaque bytes written by the driver.
struct __align__(64) TensorMap {
  uint64_t opaque[16];
};

#ifdef GSURE_EMU
__device__ __forceinline__ void tma_load_2d(void* dst, const TensorMap* map, int c0, int c1, uint64_t* bar,
                                            GSURE_EMU_SITE) {
  const int coords[2] = {c0, c1};
  gsure_emu_tma_load(dst, map, 2, coords, bar, file, line);
}
__device__ __forceinline__ void tma_load_3d(void* dst, const TensorMap* map, int c0, int c1, int c2, uint64_t* bar,
                                            GSURE_EMU_SITE) {
  const int coords[3] = {c0, c1, c2};
  gsure_emu_tma_load(dst, map, 3, coords, bar, file, line);
}
#else
__device__ __forceinline__ void tma_load_2d(void* dst, const TensorMap* map, int c0, int c1, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::
          "r"(smem_addr(dst)),
      "l"(map), "r"(c0), "r"(c1), "r"(smem_addr(bar))
      : "memory");
}
__device__ __forceinline__ void tma_load_3d(void* dst, const TensorMap* map, int c0, int c1, int c2, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], "
      "[%5];\n" ::"r"(smem_addr(dst)),
      "l"(map), "r"(c0), "r"(c1), "r"(c2), "r"(smem_addr(bar))
      : "memory");
}
#endif  // GSURE_EMU
