// block.h: running a kernel launch on the host. Each block runs on one worker thread as one fiber per CUDA
// thread; blocks are spread over a pool of workers (GSURE_EMU_WORKERS, default: the number of cores).
// Fibers switch only at synchronisation points (barriers, warp collectives, cp.async waits), so every
// interleaving the emulator explores is one a GPU could produce between two such points; GSURE_EMU_SCHEDULE
// picks which: rr (default, index order), reverse, warp-ahead (one warp runs as far ahead of the others as
// the barriers allow; the only order that caught a missing write-after-read barrier in block_sum), or
// random[:seed].
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "../include/gsure_emu.cuh"

namespace gsure_emu {

// One kernel entry point of a host-compiled module, from the module's generated entry table.
struct KernelEntry {
  const char* name;
  void (*call)(void* const* params);  // runs the kernel body as the current thread, args unpacked from params
  int nparams;
  const uint32_t* param_sizes;
  const bool* param_is_pointer;  // from the C++ signature: nvcc 13 no longer marks pointers `.ptr` in PTX
};

struct Shared;  // a module's static __shared__ storage for the running block (race.cpp)

struct Launch {
  const KernelEntry* entry;
  const char* module;    // for reports
  Dim grid, block;
  size_t dynamic_smem;   // bytes
  void* const* params;   // one pointer per parameter, alive for the launch
  const void* tls_module_id;  // the module's handle, to find its static shared memory per worker
};

// Runs every block of the launch and returns "" or a report naming the kernel, block, thread and source line.
std::string run_launch(const Launch& launch);

// The schedule order and seed in force (for reports and the self-tests).
std::string schedule_name();

}  // namespace gsure_emu
