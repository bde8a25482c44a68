// mma.cuh: thin wrappers over the tensor-core PTX the bf16 kernels use (sm_80+; Hopper runs them too).
// defines: mma_bf16_16816 (D = A*B + C, m16n8k16, bf16 in, f32 accumulate), mma_tf32_1688 (m16n8k8, tf32
//          in, f32 accumulate) and to_tf32, ldmatrix_x4 / ldmatrix_x2 (+ _trans), cp_async_16 /
//          cp_async_commit / cp_async_wait, smem_addr and its type smem_addr_t.
//
// Fragment layouts of mma.m16n8k16 (PTX ISA, "Matrix Fragments for mma.m16n8k16"), lane = threadIdx.x % 32,
// g = lane / 4 (group), t = lane % 4 (thread in group):
//   A (16x16, row-major), 4 regs of 2 bf16: a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..)
//   B (16x8, "col"),      2 regs of 2 bf16: b0 = (k = 2t..2t+1, n = g), b1 = (k = 2t+8.., n = g)
//   C/D (16x8, f32),      4 floats:         c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..2t+1)
// and of mma.m16n8k8 with .tf32 operands (one 32-bit element a register; C/D as above):
//   A (16x8, row-major), 4 regs: a0 = (g, t), a1 = (g+8, t), a2 = (g, t+4), a3 = (g+8, t+4)
//   B (8x8, "col"),      2 regs: b0 = (k = t, n = g), b1 = (k = t+4, n = g)
// A tf32 operand is an f32 whose low 13 mantissa bits are zero (to_tf32: cvt.rna, round to nearest, ties
// away from zero); the hardware ignores those bits, so an unconverted f32 would be truncated instead.
#pragma once
#include "common.cuh"

#ifdef GSURE_EMU
// The emulator (emu/) runs each instruction as a warp collective in its runtime: mma and ldmatrix gather
// all 32 lanes' registers and follow the fragment layouts above; cp.async queues the copy and performs it at
// the wait that covers its group, so data that is read before its wait is stale, as it may be on the GPU.
// A shared-memory address is a host pointer there, hence the address type.
typedef const void* smem_addr_t;
__device__ __forceinline__ smem_addr_t smem_addr(const void* p) { return p; }
__device__ __forceinline__ void mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2], GSURE_EMU_SITE) {
  gsure_emu_mma_bf16_16816(d, a, b, file, line);
}
__device__ __forceinline__ void mma_tf32_1688(float d[4], const uint32_t a[4], const uint32_t b[2], GSURE_EMU_SITE) {
  gsure_emu_mma_tf32_1688(d, a, b, file, line);
}
// cvt.rna.tf32.f32 on the bits: adding half an ulp of tf32 to the magnitude rounds it half away from zero;
// infinities pass unchanged and NaN becomes the canonical quiet NaN (whose low bits are zero).
__device__ __forceinline__ uint32_t to_tf32(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) == 0x7f800000u) return (u & 0x007fffffu) ? 0x7fc00000u : u;
  return (u + 0x1000u) & ~0x1fffu;
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], smem_addr_t addr, GSURE_EMU_SITE) {
  gsure_emu_ldmatrix(r, 4, 0, addr, file, line);
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], smem_addr_t addr, GSURE_EMU_SITE) {
  gsure_emu_ldmatrix(r, 4, 1, addr, file, line);
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t r[2], smem_addr_t addr, GSURE_EMU_SITE) {
  gsure_emu_ldmatrix(r, 2, 0, addr, file, line);
}
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t r[2], smem_addr_t addr, GSURE_EMU_SITE) {
  gsure_emu_ldmatrix(r, 2, 1, addr, file, line);
}
__device__ __forceinline__ void cp_async_16(smem_addr_t dst, const void* src, int src_bytes = 16, GSURE_EMU_SITE) {
  gsure_emu_cp_async(const_cast<void*>(dst), src, 16, src_bytes, file, line);
}
__device__ __forceinline__ void cp_async_commit() { gsure_emu_cp_async_commit(); }
template <int N> __device__ __forceinline__ void cp_async_wait(GSURE_EMU_SITE) {
  gsure_emu_cp_async_wait(N, file, line);
}
#else
// A shared-memory address as the PTX instructions take it: 32 bits in the shared window.
typedef uint32_t smem_addr_t;
__device__ __forceinline__ smem_addr_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ void mma_tf32_1688(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// f32 -> tf32 (the f32 bit pattern with the low 13 mantissa bits rounded away), as mma's .tf32 operands take.
__device__ __forceinline__ uint32_t to_tf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
}

// Four 8x8 b16 tiles from shared memory; lanes 8i..8i+7 give the row addresses of tile i.
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], smem_addr_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], smem_addr_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t r[2], smem_addr_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t r[2], smem_addr_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(addr));
}

// 16-byte global -> shared copy that bypasses registers; src_bytes < 16 zero-fills the rest (bounds).
__device__ __forceinline__ void cp_async_16(smem_addr_t dst, const void* src, int src_bytes = 16) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

#endif  // GSURE_EMU

// Packs two floats into a bf16x2 register (low half = a).
__device__ __forceinline__ uint32_t pack_bf16x2(float a, float b) {
  __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<uint32_t*>(&v);
}
