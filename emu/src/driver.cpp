// driver.cpp: the fake CUDA driver, libcuda.so.1 of the emulator. cudarc dlopens it through
// LD_LIBRARY_PATH (emu/run sets it, and only for the command it runs) and resolves each cu* symbol on first
// use; every function the engine can reach through cudarc 0.19 is here (driver_unsupported.cpp answers the
// rest with CUDA_ERROR_NOT_SUPPORTED and says which). It reports a device only when GSURE_EMU=1, so a
// stray LD_LIBRARY_PATH cannot make a program believe it has a GPU.
//
// Device memory is host memory (a device pointer is a host address, so kernels dereference it directly),
// accounted against GSURE_EMU_MEMORY_MIB (default 8192) so that running out behaves as on a GPU; copies and
// memsets must lie inside live allocations. Modules: cuModuleLoadData reads the .entry list of the PTX
// (ptx.cpp), finds the host-compiled kernel module (<stem>.so beside this library) whose entry table has
// them all, and checks every parameter count and size against the kernel's C++ signature. cuLaunchKernel
// enforces block size against __launch_bounds__, the 48 KiB dynamic shared memory default, the 227 KiB
// opt-in ceiling and grid limits, then runs the grid (block.cpp) before it returns: the emulated device is
// synchronous. A failing launch prints its report and returns CUDA_ERROR_LAUNCH_FAILED.
//
// CUDA graphs by stream capture: on a capturing stream every operation (launch, copy, memset, event record,
// host function) is checked as it is issued and recorded instead of run; cuGraphLaunch runs the recorded
// nodes in order, reading host memory and kernel pointers as they are then, and refuses a node whose device
// memory has been freed since the capture. The capture rules a GPU enforces are enforced here (capture on the
// legacy stream, synchronising or allocating while a global or thread-local capture is active, waiting on an
// event from outside the capture: each an error that invalidates the capture), and one more: a captured copy
// to or from the host must use page-locked memory (cuMemHostAlloc), since a pageable buffer is usually gone by
// the time the graph replays.
#include <cuda.h>
// cudarc binds both the plain and the versioned names of these; cuda.h would rename the plain ones.
#undef cuDeviceGetUuid
#undef cuEventElapsedTime
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "block.h"
#include "ptx.h"
#include "tensormap.h"

using namespace gsure_emu;

namespace {

constexpr size_t KiB = 1024, MiB = KiB * KiB;
constexpr size_t SMEM_DEFAULT = 48 * KiB, SMEM_OPTIN = 227 * KiB;
constexpr int SM_COUNT = 132;

void say(const std::string& s) { std::fprintf(stderr, "gsure emulator: %s\n", s.c_str()); }

bool enabled() {
  const char* e = std::getenv("GSURE_EMU");
  return e && std::strcmp(e, "1") == 0;
}

// ---------------------------------------------------------------------------------------- memory
struct Memory {
  std::mutex m;
  std::map<uintptr_t, size_t> live;  // base -> bytes
  size_t used = 0;
  size_t total = [] {
    const char* e = std::getenv("GSURE_EMU_MEMORY_MIB");
    return (e ? std::strtoull(e, nullptr, 10) : 8192) * MiB;
  }();

  CUresult alloc(CUdeviceptr* p, size_t bytes) {
    if (!p) return CUDA_ERROR_INVALID_VALUE;
    if (bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    std::lock_guard<std::mutex> lk(m);
    if (used + bytes > total) return CUDA_ERROR_OUT_OF_MEMORY;
    void* h = std::aligned_alloc(256, (bytes + 255) / 256 * 256);  // cudaMalloc's alignment
    if (!h) return CUDA_ERROR_OUT_OF_MEMORY;
    live[reinterpret_cast<uintptr_t>(h)] = bytes;
    used += bytes;
    *p = reinterpret_cast<CUdeviceptr>(h);
    return CUDA_SUCCESS;
  }
  CUresult free(CUdeviceptr p) {
    if (p == 0) return CUDA_SUCCESS;
    std::lock_guard<std::mutex> lk(m);
    auto it = live.find((uintptr_t)p);
    if (it == live.end()) {
      say("cuMemFree of " + hex(p) + ", which is not the start of a live allocation");
      return CUDA_ERROR_INVALID_VALUE;
    }
    used -= it->second;
    std::free(reinterpret_cast<void*>(it->first));
    live.erase(it);
    return CUDA_SUCCESS;
  }
  // Whether [p, p + bytes) lies inside one live allocation.
  bool contains(uintptr_t p, size_t bytes) {
    std::lock_guard<std::mutex> lk(m);
    auto it = live.upper_bound(p);
    if (it == live.begin()) return false;
    --it;
    return p >= it->first && p + bytes <= it->first + it->second;
  }
  static std::string hex(uint64_t v) {
    char b[32];
    std::snprintf(b, sizeof b, "0x%llx", (unsigned long long)v);
    return b;
  }
};
Memory& memory() {
  static Memory* m = new Memory();
  return *m;
}

// Page-locked host allocations (cuMemHostAlloc), base -> bytes: what a captured copy may read or write.
struct Pinned {
  std::mutex m;
  std::map<uintptr_t, size_t> live;
  bool contains(const void* p, size_t bytes) {
    const auto a = reinterpret_cast<uintptr_t>(p);
    std::lock_guard<std::mutex> lk(m);
    auto it = live.upper_bound(a);
    if (it == live.begin()) return false;
    --it;
    return a >= it->first && a + bytes <= it->first + it->second;
  }
};
Pinned& pinned() {
  static Pinned* p = new Pinned();
  return *p;
}

CUresult check_range(const char* fn, CUdeviceptr p, size_t bytes) {
  if (bytes == 0) return CUDA_SUCCESS;
  if (memory().contains((uintptr_t)p, bytes)) return CUDA_SUCCESS;
  say(std::string(fn) + ": device range " + Memory::hex(p) + " + " + std::to_string(bytes) +
      " bytes is not inside a live allocation");
  return CUDA_ERROR_INVALID_VALUE;
}

// ---------------------------------------------------------------------------------------- modules
// A host-compiled kernel module: <stem>.so with the entry table its generated wrapper defines.
struct HostModule {
  std::string path;
  void* handle;
  std::map<std::string, const KernelEntry*> entries;
};

std::string module_dir() {
  if (const char* e = std::getenv("GSURE_EMU_MODULES")) return e;
  Dl_info info{};
  dladdr(reinterpret_cast<void*>(&module_dir), &info);
  std::string p = info.dli_fname ? info.dli_fname : "";
  return p.substr(0, p.rfind('/'));
}

std::mutex modules_mutex;
std::vector<HostModule>* host_modules = nullptr;

std::vector<HostModule>& all_host_modules() {
  if (host_modules) return *host_modules;
  host_modules = new std::vector<HostModule>();
  const std::string dir = module_dir() + "/kernels";
  DIR* d = opendir(dir.c_str());
  if (!d) {
    say("no kernel modules in " + dir + " (build them with emu/build)");
    return *host_modules;
  }
  std::vector<std::string> names;
  while (dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    if (n.size() > 3 && n.substr(n.size() - 3) == ".so") names.push_back(n);
  }
  closedir(d);
  for (const auto& n : names) {
    HostModule hm;
    hm.path = dir + "/" + n;
    hm.handle = dlopen(hm.path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!hm.handle) {
      say(std::string("cannot load ") + hm.path + ": " + dlerror());
      continue;
    }
    auto table = reinterpret_cast<const KernelEntry*>(dlsym(hm.handle, "gsure_emu_entries"));
    auto count = reinterpret_cast<const int*>(dlsym(hm.handle, "gsure_emu_entry_count"));
    if (!table || !count) {
      say(hm.path + " has no entry table (not built by emu/build?)");
      continue;
    }
    for (int i = 0; i < *count; ++i) hm.entries[table[i].name] = &table[i];
    host_modules->push_back(std::move(hm));
  }
  return *host_modules;
}

struct Function;
struct Module {
  const HostModule* host;
  std::map<std::string, std::unique_ptr<Function>> functions;
};
struct Function {
  Module* module;
  const KernelEntry* entry;
  PtxEntry ptx;
  size_t max_dynamic_smem = SMEM_DEFAULT;
};

// The launch trace (GSURE_EMU_TRACE=FILE): one line per kernel entry point the process launched, for the
// coverage check (emu/coverage).
void trace_launch(const Function& f) {
  static const char* path = std::getenv("GSURE_EMU_TRACE");
  if (!path) return;
  static std::mutex m;
  static std::set<const Function*> seen;
  std::lock_guard<std::mutex> lk(m);
  if (!seen.insert(&f).second) return;
  const int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0) return;
  const std::string line = std::string(f.entry->name) + "\n";
  (void)!write(fd, line.data(), line.size());
  close(fd);
}

struct Event {
  std::chrono::steady_clock::time_point t;
  bool recorded = false;
  uint64_t capture = 0;  // the capture that recorded it last (0: recorded outside any capture)
};

// ------------------------------------------------------------------------------ streams and graphs
// One operation of a stream, run at once or, on a capturing stream, when its graph is launched.
struct Node {
  std::string what;  // for reports: "kernel NAME", "cuMemcpyHtoDAsync of N bytes", ...
  std::function<CUresult()> run;
};
struct Graph {
  std::vector<Node> nodes;
};
struct GraphExec {
  std::vector<Node> nodes;
};
struct Stream {
  // A driver is thread-safe, and in a relaxed capture other threads may issue to or query this stream.
  std::mutex m;
  std::atomic<uint64_t> capture{0};  // id of the capture in progress, 0 when not capturing
  CUstreamCaptureMode mode = CU_STREAM_CAPTURE_MODE_GLOBAL;
  std::thread::id capturing_thread;
  std::string invalidated;  // (under m) why the capture can no longer end in a graph, "" while it can
  std::unique_ptr<Graph> graph;  // (under m)

  // Marks the capture in progress invalid, keeping the first reason; says it the first time.
  void invalidate(const std::string& why, const std::string& report) {
    std::lock_guard<std::mutex> lk(m);
    if (!capture || !invalidated.empty()) return;
    invalidated = why;
    say(report);
  }
};

bool is_legacy(CUstream s) { return s == nullptr || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD; }
Stream* stream_of(CUstream s) { return is_legacy(s) ? nullptr : reinterpret_cast<Stream*>(s); }
bool capturing(CUstream s) {
  Stream* st = stream_of(s);
  return st && st->capture;
}

// Every stream with a capture in progress, for the calls a capture forbids process-wide (global mode) or on
// its own thread (thread-local mode). Never destroyed, like memory(): a call during process exit finds them.
// Lock order: captures_mutex before a stream's own mutex.
std::mutex& captures_mutex = *new std::mutex();
std::set<Stream*>& active_captures = *new std::set<Stream*>();
std::atomic<uint64_t> next_capture{1};

// For a call that synchronises with the device or allocates outside stream order (cuMemAlloc, a synchronous
// copy, cuStreamSynchronize, ...): CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED when a capture forbids it, and that
// capture is invalidated, as on a GPU.
CUresult unsafe_during_capture(const char* call) {
  std::lock_guard<std::mutex> lk(captures_mutex);
  CUresult r = CUDA_SUCCESS;
  for (Stream* st : active_captures) {
    const bool forbids = st->mode == CU_STREAM_CAPTURE_MODE_GLOBAL ||
                         (st->mode == CU_STREAM_CAPTURE_MODE_THREAD_LOCAL &&
                          st->capturing_thread == std::this_thread::get_id());
    if (!forbids) continue;
    st->invalidate(std::string(call) + " was called during the capture",
                   std::string(call) + " during a stream capture: not permitted (the capture is invalidated; "
                   "issue it before cuStreamBeginCapture or after cuStreamEndCapture)");
    r = CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  }
  return r;
}

// Runs `node` now, or records it on a capturing stream.
CUresult issue(CUstream s, Node node) {
  Stream* st = stream_of(s);
  if (st) {
    std::unique_lock<std::mutex> lk(st->m);
    if (st->capture) {
      if (!st->invalidated.empty()) return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
      st->graph->nodes.push_back(std::move(node));
      return CUDA_SUCCESS;
    }
  }
  return node.run();
}

// A captured copy's host side must be page-locked: checked when it is captured (and again at each replay,
// by the node itself).
CUresult check_host_side(CUstream s, const char* call, const void* host, size_t n) {
  if (!capturing(s) || n == 0 || pinned().contains(host, n)) return CUDA_SUCCESS;
  stream_of(s)->invalidate(std::string(call) + " with pageable host memory",
                           std::string(call) + " during a stream capture with pageable host memory at " +
                               Memory::hex(reinterpret_cast<uintptr_t>(host)) +
                               ": a graph reads and writes host memory when it is launched, so use a page-locked "
                               "buffer (cuMemHostAlloc) that lives as long as the graph");
  return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
}
// A copy node as captured: at replay its host buffer must still be page-locked memory (not freed since).
Node host_checked(Node node, const void* host, size_t n) {
  std::string what = node.what;
  return {what, [what, host, n, run = std::move(node.run)] {
            if (n && !pinned().contains(host, n)) {
              say(what + " (replayed from a graph): its host buffer " + Memory::hex(reinterpret_cast<uintptr_t>(host)) +
                  " is no longer page-locked memory (freed since the capture?)");
              return CUDA_ERROR_INVALID_VALUE;
            }
            return run();
          }};
}

int dummy_context, dummy_pool;

}  // namespace

// ============================================================================================ the API
extern "C" {

CUresult cuInit(unsigned int flags) {
  (void)flags;
  return enabled() ? CUDA_SUCCESS : CUDA_ERROR_NO_DEVICE;
}
CUresult cuDriverGetVersion(int* v) {
  if (!v) return CUDA_ERROR_INVALID_VALUE;
  *v = 13000;
  return CUDA_SUCCESS;
}
CUresult cuDeviceGetCount(int* count) {
  if (!count) return CUDA_ERROR_INVALID_VALUE;
  *count = enabled() ? 1 : 0;
  return CUDA_SUCCESS;
}
CUresult cuDeviceGet(CUdevice* dev, int ordinal) {
  if (!dev || ordinal != 0 || !enabled()) return CUDA_ERROR_INVALID_DEVICE;
  *dev = 0;
  return CUDA_SUCCESS;
}
CUresult cuDeviceGetName(char* name, int len, CUdevice) {
  if (!name || len <= 0) return CUDA_ERROR_INVALID_VALUE;
  std::snprintf(name, (size_t)len, "gsure emulated device (CPU, sm_90 limits, schedule %s)", schedule_name().c_str());
  return CUDA_SUCCESS;
}
CUresult cuDeviceGetUuid(CUuuid* uuid, CUdevice) {
  if (!uuid) return CUDA_ERROR_INVALID_VALUE;
  std::memset(uuid, 0x9e, sizeof *uuid);
  return CUDA_SUCCESS;
}
CUresult cuDeviceGetUuid_v2(CUuuid* uuid, CUdevice d) { return cuDeviceGetUuid(uuid, d); }
CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice) {
  if (!bytes) return CUDA_ERROR_INVALID_VALUE;
  *bytes = memory().total;
  return CUDA_SUCCESS;
}

// The limits of an H100/H200 (sm_90), so that launches are refused where the real device refuses them.
CUresult cuDeviceGetAttribute(int* v, CUdevice_attribute a, CUdevice) {
  if (!v) return CUDA_ERROR_INVALID_VALUE;
  switch (a) {
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *v = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X: *v = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: *v = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: *v = 64; break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: *v = 2147483647; break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y: *v = 65535; break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: *v = 65535; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: *v = (int)SMEM_DEFAULT; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: *v = (int)SMEM_OPTIN; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: *v = 228 * (int)KiB; break;
    case CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY: *v = 64 * (int)KiB; break;
    case CU_DEVICE_ATTRIBUTE_WARP_SIZE: *v = 32; break;
    case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK: *v = 65536; break;
    case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR: *v = 65536; break;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *v = SM_COUNT; break;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: *v = 2048; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR: *v = 32; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *v = 9; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *v = 0; break;
    case CU_DEVICE_ATTRIBUTE_CLOCK_RATE: *v = 1980000; break;
    case CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE: *v = 2619000; break;
    case CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH: *v = 6144; break;
    case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: *v = 50 * (int)MiB; break;
    case CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED: *v = 1; break;
    case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: *v = 1; break;
    case CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS: *v = 1; break;
    case CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT: *v = 2; break;
    case CU_DEVICE_ATTRIBUTE_INTEGRATED: *v = 0; break;
    case CU_DEVICE_ATTRIBUTE_ECC_ENABLED: *v = 0; break;
    case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID: *v = 0; break;
    case CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID: *v = 0; break;
    case CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID: *v = 0; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_MODE: *v = CU_COMPUTEMODE_DEFAULT; break;
    case CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH: *v = 0; break;
    case CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY: *v = 0; break;
    case CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY: *v = 0; break;
    default:
      say("cuDeviceGetAttribute: attribute " + std::to_string((int)a) + " is not emulated (add it to emu/src/driver.cpp)");
      return CUDA_ERROR_NOT_SUPPORTED;
  }
  return CUDA_SUCCESS;
}

// ------------------------------------------------------------------------------------------ contexts
CUresult cuDevicePrimaryCtxRetain(CUcontext* ctx, CUdevice) {
  if (!ctx) return CUDA_ERROR_INVALID_VALUE;
  if (!enabled()) return CUDA_ERROR_NO_DEVICE;
  *ctx = reinterpret_cast<CUcontext>(&dummy_context);
  return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return CUDA_SUCCESS; }
thread_local CUcontext current_ctx = nullptr;
CUresult cuCtxGetCurrent(CUcontext* ctx) {
  if (!ctx) return CUDA_ERROR_INVALID_VALUE;
  *ctx = current_ctx;
  return CUDA_SUCCESS;
}
CUresult cuCtxSetCurrent(CUcontext ctx) {
  current_ctx = ctx;
  return CUDA_SUCCESS;
}
CUresult cuCtxPushCurrent_v2(CUcontext ctx) { return cuCtxSetCurrent(ctx); }
CUresult cuCtxPopCurrent_v2(CUcontext* ctx) {
  if (ctx) *ctx = current_ctx;
  return CUDA_SUCCESS;
}
CUresult cuCtxCreate_v3(CUcontext* ctx, void*, int, unsigned, CUdevice d) { return cuDevicePrimaryCtxRetain(ctx, d); }
CUresult cuCtxCreate_v4(CUcontext* ctx, CUctxCreateParams*, unsigned, CUdevice d) { return cuDevicePrimaryCtxRetain(ctx, d); }
CUresult cuCtxDestroy_v2(CUcontext) { return CUDA_SUCCESS; }
// Synchronising the context waits for a capturing stream too: refused during any capture, in every mode.
CUresult cuCtxSynchronize() {
  std::vector<Stream*> capturing_now;
  {
    std::lock_guard<std::mutex> lk(captures_mutex);
    capturing_now.assign(active_captures.begin(), active_captures.end());
  }
  for (Stream* st : capturing_now)
    st->invalidate("cuCtxSynchronize was called during the capture",
                   "cuCtxSynchronize during a stream capture: not permitted (the capture is invalidated)");
  return capturing_now.empty() ? CUDA_SUCCESS : CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
}
CUresult cuCtxSetFlags(unsigned int) { return CUDA_SUCCESS; }
CUresult cuCtxGetStreamPriorityRange(int* least, int* greatest) {
  if (least) *least = 0;
  if (greatest) *greatest = -5;
  return CUDA_SUCCESS;
}
CUresult cuCtxGetLimit(size_t* v, CUlimit) {
  if (!v) return CUDA_ERROR_INVALID_VALUE;
  *v = 0;
  return CUDA_SUCCESS;
}
CUresult cuCtxSetLimit(CUlimit, size_t) { return CUDA_SUCCESS; }
CUresult cuCtxGetCacheConfig(CUfunc_cache* c) {
  if (c) *c = CU_FUNC_CACHE_PREFER_NONE;
  return CUDA_SUCCESS;
}
CUresult cuCtxSetCacheConfig(CUfunc_cache) { return CUDA_SUCCESS; }

// ------------------------------------------------------------------------------------------ memory
CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total) {
  std::lock_guard<std::mutex> lk(memory().m);
  if (free_bytes) *free_bytes = memory().total - memory().used;
  if (total) *total = memory().total;
  return CUDA_SUCCESS;
}
// Allocation outside stream order is forbidden while a capture is active; the stream-ordered forms would be
// graph memory nodes, which the emulated device does not model (allocate before the capture, as a caching
// allocator in steady state does).
CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) {
  if (CUresult r = unsafe_during_capture("cuMemAlloc")) return r;
  return memory().alloc(p, bytes);
}
CUresult alloc_async(const char* call, CUdeviceptr* p, size_t bytes, CUstream s) {
  if (capturing(s)) {
    stream_of(s)->invalidate(std::string(call) + " on the capturing stream",
                             std::string(call) + " on a capturing stream: graph memory nodes are not emulated "
                             "(allocate before cuStreamBeginCapture)");
    return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  }
  return memory().alloc(p, bytes);
}
CUresult cuMemAllocAsync(CUdeviceptr* p, size_t bytes, CUstream s) { return alloc_async("cuMemAllocAsync", p, bytes, s); }
CUresult cuMemAllocFromPoolAsync(CUdeviceptr* p, size_t bytes, CUmemoryPool, CUstream s) {
  return alloc_async("cuMemAllocFromPoolAsync", p, bytes, s);
}
CUresult cuMemFree_v2(CUdeviceptr p) {
  if (CUresult r = unsafe_during_capture("cuMemFree")) return r;
  return memory().free(p);
}
CUresult cuMemFreeAsync(CUdeviceptr p, CUstream s) {
  if (capturing(s)) {
    stream_of(s)->invalidate("cuMemFreeAsync on the capturing stream",
                             "cuMemFreeAsync on a capturing stream: graph memory nodes are not emulated (free "
                             "after cuStreamEndCapture)");
    return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  }
  return memory().free(p);
}
CUresult cuMemHostAlloc(void** p, size_t bytes, unsigned int) {
  if (!p) return CUDA_ERROR_INVALID_VALUE;
  *p = std::malloc(bytes ? bytes : 1);
  if (!*p) return CUDA_ERROR_OUT_OF_MEMORY;
  std::lock_guard<std::mutex> lk(pinned().m);
  pinned().live[reinterpret_cast<uintptr_t>(*p)] = bytes ? bytes : 1;
  return CUDA_SUCCESS;
}
CUresult cuMemAllocHost_v2(void** p, size_t bytes) { return cuMemHostAlloc(p, bytes, 0); }
CUresult cuMemFreeHost(void* p) {
  {
    std::lock_guard<std::mutex> lk(pinned().m);
    pinned().live.erase(reinterpret_cast<uintptr_t>(p));
  }
  std::free(p);
  return CUDA_SUCCESS;
}

// The copies and memsets, each as a node: checked when issued, and again when a graph replays it (the
// memory may have been freed in between).
Node htod(CUdeviceptr dst, const void* src, size_t n) {
  return {"cuMemcpyHtoDAsync of " + std::to_string(n) + " bytes to " + Memory::hex(dst), [=] {
            if (CUresult r = check_range("cuMemcpyHtoD", dst, n)) return r;
            if (n) std::memcpy(reinterpret_cast<void*>(dst), src, n);
            return CUDA_SUCCESS;
          }};
}
Node dtoh(void* dst, CUdeviceptr src, size_t n) {
  return {"cuMemcpyDtoHAsync of " + std::to_string(n) + " bytes from " + Memory::hex(src), [=] {
            if (CUresult r = check_range("cuMemcpyDtoH", src, n)) return r;
            if (n) std::memcpy(dst, reinterpret_cast<const void*>(src), n);
            return CUDA_SUCCESS;
          }};
}
Node dtod(CUdeviceptr dst, CUdeviceptr src, size_t n) {
  return {"cuMemcpyDtoDAsync of " + std::to_string(n) + " bytes", [=] {
            if (CUresult r = check_range("cuMemcpyDtoD (destination)", dst, n)) return r;
            if (CUresult r = check_range("cuMemcpyDtoD (source)", src, n)) return r;
            if (n) std::memmove(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), n);
            return CUDA_SUCCESS;
          }};
}
// cuMemsetD8/D16/D32: n elements of T set to v (a template, so C++ linkage inside this extern "C" block).
extern "C++" template <typename T> Node memset_node(const char* call, CUdeviceptr dst, T v, size_t n) {
  return {std::string(call) + "Async of " + std::to_string(n) + " x " + std::to_string(sizeof(T)) + " bytes", [=] {
            if (CUresult r = check_range(call, dst, n * sizeof(T))) return r;
            auto* p = reinterpret_cast<T*>(dst);
            for (size_t i = 0; i < n; ++i) p[i] = v;
            return CUDA_SUCCESS;
          }};
}
// A captured node's device range must be valid when captured too (a GPU refuses a bad copy at capture).
CUresult issue_checked(CUstream s, Node node, const char* call, CUdeviceptr p, size_t bytes) {
  if (CUresult r = check_range(call, p, bytes)) return r;
  return issue(s, std::move(node));
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t n) {
  if (CUresult r = unsafe_during_capture("cuMemcpyHtoD")) return r;
  return htod(dst, src, n).run();
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, CUstream s) {
  if (CUresult r = check_host_side(s, "cuMemcpyHtoDAsync", src, n)) return r;
  Node node = capturing(s) ? host_checked(htod(dst, src, n), src, n) : htod(dst, src, n);
  return issue_checked(s, std::move(node), "cuMemcpyHtoDAsync", dst, n);
}
CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t n) {
  if (CUresult r = unsafe_during_capture("cuMemcpyDtoH")) return r;
  return dtoh(dst, src, n).run();
}
CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, CUstream s) {
  if (CUresult r = check_host_side(s, "cuMemcpyDtoHAsync", dst, n)) return r;
  Node node = capturing(s) ? host_checked(dtoh(dst, src, n), dst, n) : dtoh(dst, src, n);
  return issue_checked(s, std::move(node), "cuMemcpyDtoHAsync", src, n);
}
CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) {
  if (CUresult r = unsafe_during_capture("cuMemcpyDtoD")) return r;
  return dtod(dst, src, n).run();
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) {
  if (CUresult r = check_range("cuMemcpyDtoDAsync (source)", src, n)) return r;
  return issue_checked(s, dtod(dst, src, n), "cuMemcpyDtoDAsync (destination)", dst, n);
}
CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char v, size_t n) {
  if (CUresult r = unsafe_during_capture("cuMemsetD8")) return r;
  return memset_node<unsigned char>("cuMemsetD8", dst, v, n).run();
}
CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, CUstream s) {
  return issue_checked(s, memset_node<unsigned char>("cuMemsetD8", dst, v, n), "cuMemsetD8Async", dst, n);
}
CUresult cuMemsetD16_v2(CUdeviceptr dst, unsigned short v, size_t n) {
  if (CUresult r = unsafe_during_capture("cuMemsetD16")) return r;
  return memset_node<unsigned short>("cuMemsetD16", dst, v, n).run();
}
CUresult cuMemsetD16Async(CUdeviceptr dst, unsigned short v, size_t n, CUstream s) {
  return issue_checked(s, memset_node<unsigned short>("cuMemsetD16", dst, v, n), "cuMemsetD16Async", dst, n * 2);
}
CUresult cuMemsetD32_v2(CUdeviceptr dst, unsigned int v, size_t n) {
  if (CUresult r = unsafe_during_capture("cuMemsetD32")) return r;
  return memset_node<unsigned int>("cuMemsetD32", dst, v, n).run();
}
CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned int v, size_t n, CUstream s) {
  return issue_checked(s, memset_node<unsigned int>("cuMemsetD32", dst, v, n), "cuMemsetD32Async", dst, n * 4);
}

// Memory pools: one default pool whose attributes are accepted and read back as zero.
CUresult cuDeviceGetDefaultMemPool(CUmemoryPool* pool, CUdevice) {
  if (!pool) return CUDA_ERROR_INVALID_VALUE;
  *pool = reinterpret_cast<CUmemoryPool>(&dummy_pool);
  return CUDA_SUCCESS;
}
CUresult cuDeviceGetMemPool(CUmemoryPool* pool, CUdevice d) { return cuDeviceGetDefaultMemPool(pool, d); }
CUresult cuDeviceSetMemPool(CUdevice, CUmemoryPool) { return CUDA_SUCCESS; }
CUresult cuMemPoolSetAttribute(CUmemoryPool, CUmemPool_attribute, void*) { return CUDA_SUCCESS; }
CUresult cuMemPoolGetAttribute(CUmemoryPool, CUmemPool_attribute, void* value) {
  if (value) std::memset(value, 0, sizeof(uint64_t));
  return CUDA_SUCCESS;
}
CUresult cuMemPoolTrimTo(CUmemoryPool, size_t) { return CUDA_SUCCESS; }

// ------------------------------------------------------------------------------------ streams, events
CUresult cuStreamCreate(CUstream* s, unsigned int) {
  if (!s) return CUDA_ERROR_INVALID_VALUE;
  *s = reinterpret_cast<CUstream>(new Stream());
  return CUDA_SUCCESS;
}
CUresult cuStreamCreateWithPriority(CUstream* s, unsigned int f, int) { return cuStreamCreate(s, f); }
CUresult cuStreamDestroy_v2(CUstream s) {
  Stream* st = stream_of(s);
  if (!st) return CUDA_ERROR_INVALID_HANDLE;
  if (st->capture) {
    say("cuStreamDestroy of a stream whose capture was never ended (end it with cuStreamEndCapture)");
    std::lock_guard<std::mutex> lk(captures_mutex);
    active_captures.erase(st);
  }
  delete st;
  return CUDA_SUCCESS;
}
CUresult cuStreamSynchronize(CUstream s) {
  if (capturing(s)) {
    stream_of(s)->invalidate("cuStreamSynchronize of the capturing stream",
                             "cuStreamSynchronize of a capturing stream: not permitted (the capture is invalidated)");
    return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  }
  return unsafe_during_capture("cuStreamSynchronize");
}
CUresult cuStreamQuery(CUstream s) {
  if (capturing(s)) {
    stream_of(s)->invalidate("cuStreamQuery of the capturing stream",
                             "cuStreamQuery of a capturing stream: not permitted (the capture is invalidated)");
    return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  }
  return CUDA_SUCCESS;
}
CUresult cuStreamWaitEvent(CUstream s, CUevent e, unsigned int) {
  if (!e) return CUDA_ERROR_INVALID_HANDLE;
  Stream* st = stream_of(s);
  if (st && st->capture && reinterpret_cast<Event*>(e)->capture != st->capture) {
    st->invalidate("cuStreamWaitEvent on an event recorded outside the capture",
                   "cuStreamWaitEvent in a capture on an event recorded outside it: not permitted "
                   "(CUDA_ERROR_STREAM_CAPTURE_ISOLATION; the capture is invalidated)");
    return CUDA_ERROR_STREAM_CAPTURE_ISOLATION;
  }
  return CUDA_SUCCESS;  // the emulated device has run everything issued before it
}
CUresult cuStreamIsCapturing(CUstream s, CUstreamCaptureStatus* status) {
  if (!status) return CUDA_ERROR_INVALID_VALUE;
  Stream* st = stream_of(s);
  if (!st) {
    *status = CU_STREAM_CAPTURE_STATUS_NONE;
    return CUDA_SUCCESS;
  }
  std::lock_guard<std::mutex> lk(st->m);
  *status = !st->capture                ? CU_STREAM_CAPTURE_STATUS_NONE
            : st->invalidated.empty()   ? CU_STREAM_CAPTURE_STATUS_ACTIVE
                                        : CU_STREAM_CAPTURE_STATUS_INVALIDATED;
  return CUDA_SUCCESS;
}
CUresult cuStreamBeginCapture_v2(CUstream s, CUstreamCaptureMode mode) {
  Stream* st = stream_of(s);
  if (!st) {
    say("cuStreamBeginCapture on the legacy (NULL) stream: not permitted; capture a stream made by "
        "cuStreamCreate");
    return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  }
  if (mode != CU_STREAM_CAPTURE_MODE_GLOBAL && mode != CU_STREAM_CAPTURE_MODE_THREAD_LOCAL &&
      mode != CU_STREAM_CAPTURE_MODE_RELAXED)
    return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard<std::mutex> all(captures_mutex);
  std::lock_guard<std::mutex> lk(st->m);
  if (st->capture) return CUDA_ERROR_ILLEGAL_STATE;
  st->mode = mode;
  st->capturing_thread = std::this_thread::get_id();
  st->invalidated.clear();
  st->graph = std::make_unique<Graph>();
  st->capture = next_capture++;
  active_captures.insert(st);
  return CUDA_SUCCESS;
}
CUresult cuStreamEndCapture(CUstream s, CUgraph* graph) {
  if (!graph) return CUDA_ERROR_INVALID_VALUE;
  *graph = nullptr;
  Stream* st = stream_of(s);
  if (!st) return CUDA_ERROR_ILLEGAL_STATE;
  std::lock_guard<std::mutex> all(captures_mutex);
  std::lock_guard<std::mutex> lk(st->m);
  if (!st->capture) return CUDA_ERROR_ILLEGAL_STATE;
  if (st->mode != CU_STREAM_CAPTURE_MODE_RELAXED && st->capturing_thread != std::this_thread::get_id())
    return CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD;
  active_captures.erase(st);
  st->capture = 0;
  std::unique_ptr<Graph> g = std::move(st->graph);
  if (!st->invalidated.empty()) {
    say("cuStreamEndCapture: the capture was invalidated (" + st->invalidated + "); no graph");
    return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
  }
  *graph = reinterpret_cast<CUgraph>(g.release());
  return CUDA_SUCCESS;
}
CUresult cuLaunchHostFunc(CUstream s, CUhostFn fn, void* data) {
  if (!fn) return CUDA_ERROR_INVALID_VALUE;
  return issue(s, {"host function", [=] {
                     fn(data);
                     return CUDA_SUCCESS;
                   }});
}

CUresult cuEventCreate(CUevent* e, unsigned int) {
  if (!e) return CUDA_ERROR_INVALID_VALUE;
  *e = reinterpret_cast<CUevent>(new Event());
  return CUDA_SUCCESS;
}
CUresult cuEventDestroy_v2(CUevent e) {
  delete reinterpret_cast<Event*>(e);
  return CUDA_SUCCESS;
}
// Inside a capture a plain record only marks a point other streams may wait on within the capture (as on a
// GPU, where only cuEventRecordWithFlags(CU_EVENT_RECORD_EXTERNAL) makes a node that replays); outside, it
// records now.
CUresult cuEventRecord(CUevent e, CUstream s) {
  if (!e) return CUDA_ERROR_INVALID_HANDLE;
  auto* ev = reinterpret_cast<Event*>(e);
  if (Stream* st = stream_of(s); st && st->capture) {
    ev->capture = st->capture;
    return CUDA_SUCCESS;
  }
  ev->capture = 0;
  ev->t = std::chrono::steady_clock::now();
  ev->recorded = true;
  return CUDA_SUCCESS;
}
CUresult cuEventQuery(CUevent) { return CUDA_SUCCESS; }
CUresult cuEventSynchronize(CUevent) { return unsafe_during_capture("cuEventSynchronize"); }
CUresult cuEventElapsedTime_v2(float* ms, CUevent a, CUevent b) {
  if (!ms || !a || !b) return CUDA_ERROR_INVALID_VALUE;
  auto *ea = reinterpret_cast<Event*>(a), *eb = reinterpret_cast<Event*>(b);
  if (!ea->recorded || !eb->recorded) return CUDA_ERROR_INVALID_HANDLE;
  *ms = std::chrono::duration<float, std::milli>(eb->t - ea->t).count();
  return CUDA_SUCCESS;
}
CUresult cuEventElapsedTime(float* ms, CUevent a, CUevent b) { return cuEventElapsedTime_v2(ms, a, b); }

// -------------------------------------------------------------------------------------------- graphs
CUresult cuGraphInstantiateWithFlags(CUgraphExec* exec, CUgraph graph, unsigned long long flags) {
  if (!exec || !graph) return CUDA_ERROR_INVALID_VALUE;
  if (flags & CUDA_GRAPH_INSTANTIATE_FLAG_DEVICE_LAUNCH) {
    say("cuGraphInstantiateWithFlags: device launch is not emulated");
    return CUDA_ERROR_INVALID_VALUE;
  }
  *exec = reinterpret_cast<CUgraphExec>(new GraphExec{reinterpret_cast<Graph*>(graph)->nodes});
  return CUDA_SUCCESS;
}
CUresult cuGraphClone(CUgraph* clone, CUgraph graph) {
  if (!clone || !graph) return CUDA_ERROR_INVALID_VALUE;
  *clone = reinterpret_cast<CUgraph>(new Graph(*reinterpret_cast<Graph*>(graph)));
  return CUDA_SUCCESS;
}
CUresult cuGraphDestroy(CUgraph graph) {
  delete reinterpret_cast<Graph*>(graph);
  return CUDA_SUCCESS;
}
CUresult cuGraphExecDestroy(CUgraphExec exec) {
  delete reinterpret_cast<GraphExec*>(exec);
  return CUDA_SUCCESS;
}
CUresult cuGraphUpload(CUgraphExec exec, CUstream) { return exec ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE; }
// Runs the nodes in capture order (a captured single stream is a chain); the first failure names its node.
CUresult cuGraphLaunch(CUgraphExec exec, CUstream s) {
  if (!exec) return CUDA_ERROR_INVALID_VALUE;
  if (capturing(s)) {
    say("cuGraphLaunch into a capturing stream (a child graph) is not emulated");
    return CUDA_ERROR_NOT_SUPPORTED;
  }
  const auto& nodes = reinterpret_cast<GraphExec*>(exec)->nodes;
  for (size_t i = 0; i < nodes.size(); ++i)
    if (CUresult r = nodes[i].run()) {
      say("cuGraphLaunch: node " + std::to_string(i) + " of " + std::to_string(nodes.size()) + " (" +
          nodes[i].what + ") failed");
      return r;
    }
  return CUDA_SUCCESS;
}

// ------------------------------------------------------------------------------------------ modules
CUresult cuModuleLoadData(CUmodule* out, const void* image) {
  if (!out || !image) return CUDA_ERROR_INVALID_VALUE;
  // A PTX image is NUL-terminated text; a fatbin carries its size in its header (magic 0xBA55ED50, then
  // version, header size and the payload size as 64-bit), with the PTX as plain text inside.
  size_t len;
  uint32_t magic;
  std::memcpy(&magic, image, 4);
  if (magic == 0xBA55ED50u) {
    uint16_t header;
    uint64_t payload;
    std::memcpy(&header, static_cast<const char*>(image) + 6, 2);
    std::memcpy(&payload, static_cast<const char*>(image) + 8, 8);
    len = header + payload;
  } else {
    len = std::strlen(static_cast<const char*>(image));
  }
  const std::vector<PtxEntry> entries = parse_ptx_entries(static_cast<const char*>(image), len);
  if (entries.empty()) {
    say("cuModuleLoadData: the image holds no PTX text with .entry points (a fatbin must keep its PTX "
        "uncompressed for the emulator)");
    return CUDA_ERROR_INVALID_IMAGE;
  }
  std::lock_guard<std::mutex> lk(modules_mutex);
  const HostModule* host = nullptr;
  for (const auto& hm : all_host_modules())
    if (hm.entries.count(entries[0].name)) host = &hm;
  if (!host) {
    say("cuModuleLoadData: no host-compiled module in " + module_dir() + "/kernels has kernel " + entries[0].name +
        " (rebuild the emulator: emu/build)");
    return CUDA_ERROR_INVALID_IMAGE;
  }
  auto m = std::make_unique<Module>();
  m->host = host;
  for (const PtxEntry& e : entries) {
    auto it = host->entries.find(e.name);
    if (it == host->entries.end()) {
      say("cuModuleLoadData: kernel " + e.name + " is in the PTX but not in " + host->path +
          " (stale emulator build? run emu/build)");
      return CUDA_ERROR_INVALID_IMAGE;
    }
    const KernelEntry* k = it->second;
    if ((size_t)k->nparams != e.params.size()) {
      say("cuModuleLoadData: kernel " + e.name + " has " + std::to_string(e.params.size()) +
          " parameters in its PTX but " + std::to_string(k->nparams) + " in its C++ signature");
      return CUDA_ERROR_INVALID_IMAGE;
    }
    for (size_t i = 0; i < e.params.size(); ++i)
      if (e.params[i].size != k->param_sizes[i]) {
        say("cuModuleLoadData: kernel " + e.name + " parameter " + std::to_string(i) + " is " +
            std::to_string(e.params[i].size) + " bytes in its PTX but " + std::to_string(k->param_sizes[i]) +
            " in its C++ signature");
        return CUDA_ERROR_INVALID_IMAGE;
      }
    m->functions[e.name] = std::make_unique<Function>(Function{m.get(), k, e});
  }
  *out = reinterpret_cast<CUmodule>(m.release());
  return CUDA_SUCCESS;
}
CUresult cuModuleLoad(CUmodule* out, const char* path) {
  FILE* f = std::fopen(path, "rb");
  if (!f) return CUDA_ERROR_FILE_NOT_FOUND;
  std::string data;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) data.append(buf, n);
  std::fclose(f);
  return cuModuleLoadData(out, data.c_str());
}
CUresult cuModuleUnload(CUmodule m) {
  delete reinterpret_cast<Module*>(m);
  return CUDA_SUCCESS;
}
CUresult cuModuleGetFunction(CUfunction* f, CUmodule m, const char* name) {
  if (!f || !m || !name) return CUDA_ERROR_INVALID_VALUE;
  auto* mod = reinterpret_cast<Module*>(m);
  auto it = mod->functions.find(name);
  if (it == mod->functions.end()) return CUDA_ERROR_NOT_FOUND;
  *f = reinterpret_cast<CUfunction>(it->second.get());
  return CUDA_SUCCESS;
}

CUresult cuFuncSetAttribute(CUfunction f, CUfunction_attribute a, int v) {
  auto* fn = reinterpret_cast<Function*>(f);
  if (!fn) return CUDA_ERROR_INVALID_HANDLE;
  if (a == CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) {
    if (v < 0 || (size_t)v + fn->ptx.static_smem > SMEM_OPTIN) {
      say(std::string("cuFuncSetAttribute: ") + fn->entry->name + " asks for " + std::to_string(v) +
          " bytes of dynamic shared memory; with its " + std::to_string(fn->ptx.static_smem) +
          " static bytes that exceeds the 227 KiB a block can have");
      return CUDA_ERROR_INVALID_VALUE;
    }
    fn->max_dynamic_smem = (size_t)v;
  }
  return CUDA_SUCCESS;
}
CUresult cuFuncSetCacheConfig(CUfunction, CUfunc_cache) { return CUDA_SUCCESS; }
CUresult cuFuncGetAttribute(int* v, CUfunction_attribute a, CUfunction f) {
  auto* fn = reinterpret_cast<Function*>(f);
  if (!v || !fn) return CUDA_ERROR_INVALID_VALUE;
  switch (a) {
    case CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *v = fn->ptx.max_threads ? (int)fn->ptx.max_threads : 1024; break;
    case CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES: *v = (int)fn->ptx.static_smem; break;
    case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: *v = (int)fn->max_dynamic_smem; break;
    case CU_FUNC_ATTRIBUTE_NUM_REGS: *v = 32; break;
    case CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES: *v = 0; break;
    case CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES: *v = 0; break;
    case CU_FUNC_ATTRIBUTE_PTX_VERSION: *v = 90; break;
    case CU_FUNC_ATTRIBUTE_BINARY_VERSION: *v = 90; break;
    default: return CUDA_ERROR_NOT_SUPPORTED;
  }
  return CUDA_SUCCESS;
}
CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int* n, CUfunction f, int block, size_t smem) {
  auto* fn = reinterpret_cast<Function*>(f);
  if (!n || !fn || block <= 0) return CUDA_ERROR_INVALID_VALUE;
  int by_threads = 2048 / block, by_smem = 32;
  const size_t per_block = smem + fn->ptx.static_smem;
  if (per_block) by_smem = (int)(228 * KiB / per_block);
  *n = std::max(0, std::min(std::min(by_threads, by_smem), 32));
  return CUDA_SUCCESS;
}
CUresult cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int* n, CUfunction f, int block, size_t smem, unsigned) {
  return cuOccupancyMaxActiveBlocksPerMultiprocessor(n, f, block, smem);
}

CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned smem, CUstream stream, void** params, void** extra) {
  auto* fn = reinterpret_cast<Function*>(f);
  if (!fn) return CUDA_ERROR_INVALID_HANDLE;
  const std::string name = fn->entry->name;
  auto refuse = [&](const std::string& why) {
    say("cuLaunchKernel " + name + " refused: " + why);
    return CUDA_ERROR_INVALID_VALUE;
  };
  if (gx == 0 || gy == 0 || gz == 0)
    return refuse("grid (" + std::to_string(gx) + "," + std::to_string(gy) + "," + std::to_string(gz) +
                  ") has a zero dimension");
  if (gx > 2147483647u || gy > 65535 || gz > 65535)
    return refuse("grid (" + std::to_string(gx) + "," + std::to_string(gy) + "," + std::to_string(gz) +
                  ") exceeds (2^31-1, 65535, 65535)");
  if (bx == 0 || by == 0 || bz == 0 || bx > 1024 || by > 1024 || bz > 64 || (uint64_t)bx * by * bz > 1024)
    return refuse("block (" + std::to_string(bx) + "," + std::to_string(by) + "," + std::to_string(bz) +
                  ") is outside the device's limits (1024 threads, z <= 64)");
  const uint64_t threads = (uint64_t)bx * by * bz;
  if (fn->ptx.max_threads && threads > fn->ptx.max_threads)
    return refuse(std::to_string(threads) + " threads per block, above its __launch_bounds__ of " +
                  std::to_string(fn->ptx.max_threads) + " (CUDA_ERROR_INVALID_VALUE on the GPU too)");
  if (smem > fn->max_dynamic_smem)
    return refuse(std::to_string(smem) + " bytes of dynamic shared memory, above the " +
                  std::to_string(fn->max_dynamic_smem) +
                  (fn->max_dynamic_smem == SMEM_DEFAULT
                       ? " bytes allowed without cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)"
                       : " bytes set with cuFuncSetAttribute"));
  if (extra) return refuse("the `extra` argument form is not emulated");
  if (fn->entry->nparams > 0 && !params) return refuse("kernelParams is null");
  // Copy the arguments (the caller's may go away once the launch is queued, and a captured launch replays
  // them) and check pointer arguments now; a replay checks them again, against the memory live then.
  auto storage = std::make_shared<std::vector<std::vector<unsigned char>>>((size_t)fn->entry->nparams);
  for (int i = 0; i < fn->entry->nparams; ++i) {
    const uint32_t size = fn->entry->param_sizes[i];
    (*storage)[i].assign(static_cast<unsigned char*>(params[i]), static_cast<unsigned char*>(params[i]) + size);
  }
  auto bad_pointer = [fn, storage]() -> std::string {
    for (int i = 0; i < fn->entry->nparams; ++i) {
      if (!fn->entry->param_is_pointer[i] || fn->entry->param_sizes[i] != 8) continue;
      uint64_t p;
      std::memcpy(&p, (*storage)[i].data(), 8);
      if (p != 0 && !memory().contains(p, 0) && !memory().contains(p - 1, 1))
        return "parameter " + std::to_string(i) + " (a pointer) is " + Memory::hex(p) + ", which is not device memory";
    }
    return "";
  };
  if (std::string why = bad_pointer(); !why.empty()) return refuse(why);
  const unsigned sm = smem;
  return issue(stream, {"kernel " + name, [=] {
                          if (std::string why = bad_pointer(); !why.empty()) {
                            say("kernel " + name + " (replayed from a graph): " + why + " (freed since the capture?)");
                            return CUDA_ERROR_INVALID_VALUE;
                          }
                          std::vector<void*> args(storage->size());
                          for (size_t i = 0; i < args.size(); ++i) args[i] = (*storage)[i].data();
                          trace_launch(*fn);
                          Launch l{fn->entry, fn->module->host->path.c_str(), {gx, gy, gz}, {bx, by, bz}, sm,
                                   args.data(), fn->module->host->handle};
                          const std::string error = run_launch(l);
                          if (!error.empty()) {
                            say(error);
                            return CUDA_ERROR_LAUNCH_FAILED;
                          }
                          return CUDA_SUCCESS;
                        }});
}

CUresult cuProfilerStart() { return CUDA_SUCCESS; }
CUresult cuProfilerStop() { return CUDA_SUCCESS; }

CUresult cuGetErrorName(CUresult e, const char** s) {
  if (!s) return CUDA_ERROR_INVALID_VALUE;
  switch (e) {
#define NAME(x) \
  case x: *s = #x; break;
    NAME(CUDA_SUCCESS)
    NAME(CUDA_ERROR_INVALID_VALUE)
    NAME(CUDA_ERROR_OUT_OF_MEMORY)
    NAME(CUDA_ERROR_NOT_INITIALIZED)
    NAME(CUDA_ERROR_NO_DEVICE)
    NAME(CUDA_ERROR_INVALID_DEVICE)
    NAME(CUDA_ERROR_INVALID_IMAGE)
    NAME(CUDA_ERROR_INVALID_HANDLE)
    NAME(CUDA_ERROR_NOT_FOUND)
    NAME(CUDA_ERROR_LAUNCH_FAILED)
    NAME(CUDA_ERROR_NOT_SUPPORTED)
    NAME(CUDA_ERROR_FILE_NOT_FOUND)
    NAME(CUDA_ERROR_ILLEGAL_STATE)
    NAME(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED)
    NAME(CUDA_ERROR_STREAM_CAPTURE_INVALIDATED)
    NAME(CUDA_ERROR_STREAM_CAPTURE_ISOLATION)
    NAME(CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD)
#undef NAME
    default: *s = "CUDA_ERROR_UNKNOWN"; break;
  }
  return CUDA_SUCCESS;
}
CUresult cuGetErrorString(CUresult e, const char** s) {
  if (!s) return CUDA_ERROR_INVALID_VALUE;
  switch (e) {
    case CUDA_SUCCESS: *s = "no error"; break;
    case CUDA_ERROR_INVALID_VALUE: *s = "invalid argument (the emulator printed why)"; break;
    case CUDA_ERROR_OUT_OF_MEMORY: *s = "out of memory (emulated device, GSURE_EMU_MEMORY_MIB)"; break;
    case CUDA_ERROR_NO_DEVICE: *s = "no CUDA-capable device is detected (GSURE_EMU=1 is not set)"; break;
    case CUDA_ERROR_INVALID_IMAGE: *s = "device kernel image is invalid (the emulator printed why)"; break;
    case CUDA_ERROR_LAUNCH_FAILED: *s = "unspecified launch failure (the emulator printed the kernel, block, "
                                        "thread and line)"; break;
    case CUDA_ERROR_NOT_SUPPORTED: *s = "operation not supported by the emulated device"; break;
    case CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED: *s = "operation not permitted when stream is capturing (the "
                                                     "emulator printed which)"; break;
    case CUDA_ERROR_STREAM_CAPTURE_INVALIDATED: *s = "operation failed due to a previous error during "
                                                     "capture (the emulator printed which)"; break;
    default: return cuGetErrorName(e, s);
  }
  return CUDA_SUCCESS;
}


// Tiled tensor maps for cp.async.bulk.tensor, checked against the requirements cuda.h lists. Modelled:
// whole-byte element types, ranks 1-5, no interleave, swizzle none/32/64/128 B (16-byte atoms), element
// strides of 1, out-of-bounds elements filled with zeros; the rest is refused as not supported.
CUresult cuTensorMapEncodeTiled(CUtensorMap* map, CUtensorMapDataType type, cuuint32_t rank, void* address,
                                const cuuint64_t* dims, const cuuint64_t* strides, const cuuint32_t* box,
                                const cuuint32_t* element_strides, CUtensorMapInterleave interleave,
                                CUtensorMapSwizzle swizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill fill) {
  auto refuse = [](CUresult r, const std::string& why) {
    say("cuTensorMapEncodeTiled: " + why);
    return r;
  };
  static constexpr int ELEM_BYTES[] = {1, 2, 4, 4, 8, 8, 2, 4, 8, 2, 4, 4, 4};  // UINT8 .. TFLOAT32_FTZ
  if (!map || reinterpret_cast<uintptr_t>(map) % 64) return refuse(CUDA_ERROR_INVALID_VALUE, "the map must be 64-byte aligned");
  if ((int)type < 0 || (int)type >= (int)(sizeof ELEM_BYTES / sizeof ELEM_BYTES[0]))
    return refuse(CUDA_ERROR_NOT_SUPPORTED, "packed (sub-byte) element types are not emulated");
  if (rank == 0 || rank > 5) return refuse(CUDA_ERROR_INVALID_VALUE, "rank must be 1..5");
  if (interleave != CU_TENSOR_MAP_INTERLEAVE_NONE) return refuse(CUDA_ERROR_NOT_SUPPORTED, "interleaved layouts are not emulated");
  if (swizzle > CU_TENSOR_MAP_SWIZZLE_128B) return refuse(CUDA_ERROR_NOT_SUPPORTED, "the 32/64-byte-atom swizzles are not emulated");
  if (fill != CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) return refuse(CUDA_ERROR_NOT_SUPPORTED, "NaN out-of-bounds fill is not emulated");
  if (reinterpret_cast<uintptr_t>(address) % 16) return refuse(CUDA_ERROR_INVALID_VALUE, "the global address must be 16-byte aligned");
  TensorMapEmu m{};
  m.magic = TensorMapEmu::MAGIC;
  m.address = reinterpret_cast<uintptr_t>(address);
  m.rank = rank;
  m.elem_bytes = (uint32_t)ELEM_BYTES[type];
  m.swizzle_bytes = swizzle == CU_TENSOR_MAP_SWIZZLE_NONE ? 0 : 16u << swizzle;  // 32, 64, 128
  uint64_t extent = m.elem_bytes;  // bytes the dimensions below span
  for (cuuint32_t d = 0; d < rank; ++d) {
    if (dims[d] == 0 || dims[d] > (1ull << 32)) return refuse(CUDA_ERROR_INVALID_VALUE, "globalDim must be 1..2^32");
    if (box[d] == 0 || box[d] > 256) return refuse(CUDA_ERROR_INVALID_VALUE, "boxDim must be 1..256");
    if (element_strides[d] != 1) return refuse(CUDA_ERROR_NOT_SUPPORTED, "element strides other than 1 are not emulated");
    m.dim[d] = dims[d];
    m.box[d] = box[d];
    if (d == 0) {
      m.stride[0] = m.elem_bytes;
    } else {
      const uint64_t st = strides[d - 1];
      if (st % 16 || st >= (1ull << 40)) return refuse(CUDA_ERROR_INVALID_VALUE, "globalStrides must be multiples of 16 below 2^40");
      if (st < extent) return refuse(CUDA_ERROR_INVALID_VALUE, "a stride smaller than the dimensions below it overlaps them");
      m.stride[d] = st;
    }
    extent = m.stride[d] * dims[d];
  }
  if (box[0] * m.elem_bytes % 16) return refuse(CUDA_ERROR_INVALID_VALUE, "boxDim[0] must span a multiple of 16 bytes");
  if (m.swizzle_bytes && box[0] * m.elem_bytes > m.swizzle_bytes)
    return refuse(CUDA_ERROR_INVALID_VALUE, "the box's inner dimension spans more bytes than the swizzle");
  std::memset(map, 0, sizeof(CUtensorMap));
  std::memcpy(map, &m, sizeof m);
  return CUDA_SUCCESS;
}

}  // extern "C"
