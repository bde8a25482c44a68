// fiber.h: a CUDA thread's execution context on the host: a stack and a saved stack pointer, switched by
// hand-written x86-64 assembly (fiber.cpp). glibc's swapcontext saves the signal mask with a system call on
// every switch and was measured 10x slower; a block barrier over 256 threads is 512 switches.
#pragma once
#include <cstddef>

namespace gsure_emu {

// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack, stores the stack
// pointer in *save, loads `load` and restores from there.
extern "C" void gsure_emu_switch(void** save, void* load);

// A stack with a guard page below it, reused from block to block (mmap'd, touched pages only).
struct Stack {
  char* base = nullptr;  // lowest usable byte
  size_t size = 0;
  void allocate(size_t bytes);
  void release();
};

// A stack pointer from which gsure_emu_switch starts `entry(arg)` on `stack`. `entry` must never return.
void* fiber_prepare(const Stack& stack, void (*entry)(void*), void* arg);

}  // namespace gsure_emu
