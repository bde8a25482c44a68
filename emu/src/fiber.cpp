// fiber.cpp: the context switch and fiber stacks (see fiber.h).
#include "fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

// Frame layout of a suspended fiber, from its saved stack pointer upward:
//   [0] MXCSR (4 bytes) and x87 control word (2 bytes), [8] r15, r14, r13, r12, rbx, rbp, [56] return address.
asm(R"(
  .text
  .globl gsure_emu_switch
  .type gsure_emu_switch, @function
gsure_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size gsure_emu_switch, .-gsure_emu_switch

  .globl gsure_emu_fiber_start
  .type gsure_emu_fiber_start, @function
gsure_emu_fiber_start:
  # First entry of a fiber: r12 = arg, r13 = entry; the stack is 16-byte aligned here, as a call expects.
  movq %r12, %rdi
  callq *%r13
  ud2
  .size gsure_emu_fiber_start, .-gsure_emu_fiber_start
  .section .note.GNU-stack,"",@progbits
  .text
)");

extern "C" void gsure_emu_fiber_start();

namespace gsure_emu {

void Stack::allocate(size_t bytes) {
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  bytes = (bytes + page - 1) / page * page;
  void* m = mmap(nullptr, bytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) {
    std::fprintf(stderr, "gsure emulator: cannot map a %zu KiB fiber stack\n", bytes >> 10);
    std::abort();
  }
  mprotect(m, page, PROT_NONE);  // a thread that overflows its stack faults instead of corrupting another's
  base = static_cast<char*>(m) + page;
  size = bytes;
}

void Stack::release() {
  if (!base) return;
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  munmap(base - page, size + page);
  base = nullptr;
  size = 0;
}

void* fiber_prepare(const Stack& stack, void (*entry)(void*), void* arg) {
  uintptr_t top = (reinterpret_cast<uintptr_t>(stack.base) + stack.size) & ~uintptr_t(15);
  uint64_t* f = reinterpret_cast<uint64_t*>(top) - 8;
  uint32_t mxcsr;
  uint16_t fpucw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpucw));
  f[0] = (uint64_t)mxcsr | ((uint64_t)fpucw << 32);
  f[1] = 0;                                    // r15
  f[2] = 0;                                    // r14
  f[3] = reinterpret_cast<uint64_t>(entry);    // r13
  f[4] = reinterpret_cast<uint64_t>(arg);      // r12
  f[5] = 0;                                    // rbx
  f[6] = 0;                                    // rbp
  f[7] = reinterpret_cast<uint64_t>(&gsure_emu_fiber_start);  // return address; after `ret` rsp = top
  return f;
}

}  // namespace gsure_emu
