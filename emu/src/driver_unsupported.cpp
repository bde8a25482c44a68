// driver_unsupported.cpp: the driver calls cudarc 0.19 can make that the emulated device does not model.
// cudarc resolves symbols lazily and panics on a missing one, so each exists and fails loudly instead:
// it prints its name and returns CUDA_ERROR_NOT_SUPPORTED. (No cuda.h here: these definitions take no
// parameters, which is ABI-compatible with any caller on x86-64 and would clash with its prototypes.)
// cuGraphInstantiate (the CUDA 11 signature, which cudarc binds but never calls) stays here.
#include <cstdio>

namespace {
int unsupported(const char* name) {
  std::fprintf(stderr, "gsure emulator: %s is not emulated (emu/src/driver_unsupported.cpp)\n", name);
  return 801;  // CUDA_ERROR_NOT_SUPPORTED
}
}  // namespace

#define UNSUPPORTED(name) \
  extern "C" int name() { return unsupported(#name); }
UNSUPPORTED(cuDestroyExternalMemory)
UNSUPPORTED(cuExternalMemoryGetMappedBuffer)
UNSUPPORTED(cuImportExternalMemory)
UNSUPPORTED(cuGraphInstantiate)
UNSUPPORTED(cuLaunchCooperativeKernel)
UNSUPPORTED(cuMemAdvise_v2)
UNSUPPORTED(cuMemAllocManaged)
UNSUPPORTED(cuMemPoolCreate)
UNSUPPORTED(cuMemPoolDestroy)
UNSUPPORTED(cuMemPrefetchAsync_v2)
UNSUPPORTED(cuMemcpyPeerAsync)
UNSUPPORTED(cuModuleGetGlobal_v2)
UNSUPPORTED(cuOccupancyAvailableDynamicSMemPerBlock)
UNSUPPORTED(cuOccupancyMaxActiveClusters)
UNSUPPORTED(cuOccupancyMaxPotentialBlockSize)
UNSUPPORTED(cuOccupancyMaxPotentialBlockSizeWithFlags)
UNSUPPORTED(cuOccupancyMaxPotentialClusterSize)
UNSUPPORTED(cuStreamAttachMemAsync)
