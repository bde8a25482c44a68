// race.cpp: the shared-memory race detector (see race.h) and the ThreadSanitizer instrumentation hooks it
// implements. Runs only when the kernel modules were built instrumented (emu/build race) and
// GSURE_EMU_RACECHECK=1; blocks then run one at a time, on the launching thread.
#include "race.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "block.h"

namespace gsure_emu {
namespace {

constexpr uint16_t MANY = 0xffff;

// Where an access came from: a return address inside a kernel module (instrumented access), or, with the
// top bit set, an interned file:line of the runtime's own accesses on a thread's behalf (ldmatrix, cp.async).
struct Site {
  std::string file;
  int line;
};
std::mutex sites_mutex;
std::vector<std::unique_ptr<Site>> sites;
constexpr uintptr_t SITE_TAG = uintptr_t(1) << 63;

uintptr_t intern(const char* file, int line) {
  std::lock_guard<std::mutex> lk(sites_mutex);
  for (size_t i = 0; i < sites.size(); ++i)
    if (sites[i]->line == line && sites[i]->file == file) return SITE_TAG | i;
  sites.push_back(std::make_unique<Site>(Site{file, line}));
  return SITE_TAG | (sites.size() - 1);
}

std::string describe(uintptr_t s) {
  if (s & SITE_TAG) {
    std::lock_guard<std::mutex> lk(sites_mutex);
    const Site& site = *sites[s & ~SITE_TAG];
    return site.file + ":" + std::to_string(site.line);
  }
  Dl_info info{};
  if (!dladdr(reinterpret_cast<void*>(s - 1), &info) || !info.dli_fname) return "pc " + std::to_string(s);
  char cmd[1024];
  std::snprintf(cmd, sizeof cmd, "addr2line -C -i -e '%s' 0x%lx 2>/dev/null", info.dli_fname,
                (unsigned long)(s - 1 - reinterpret_cast<uintptr_t>(info.dli_fbase)));
  std::string out;
  if (FILE* p = popen(cmd, "r")) {
    char line[512];
    // With -i the first line is the innermost (inlined) location, the last the kernel's own frame.
    while (std::fgets(line, sizeof line, p)) {
      std::string l = line;
      while (!l.empty() && (l.back() == '\n' || l.back() == '\r')) l.pop_back();
      if (!out.empty()) out += " inlined in ";
      out += l;
    }
    pclose(p);
  }
  return out.empty() ? std::string(info.dli_fname) : out;
}

struct Cell {
  uint32_t w_epoch = 0, r_epoch = 0;  // block epoch + 1 of the last write / read(s); 0 = none
  uint16_t w_tid = 0, r_tid = 0;
  uint32_t w_wep = 0, r_wep = 0;      // the accessing warp's sync epoch then
  uint32_t w_tick = 0, r_tick = 0;    // the accessing thread's mbarrier arrivals before the access
  uintptr_t w_site = 0, r_site = 0;
};

struct Region {
  uintptr_t lo = 0, hi = 0;
  const char* what = "";
  std::vector<Cell> shadow;
  const std::vector<bool>* ignored = nullptr;  // bytes that are no GPU memory (see guard_bytes)
};

// The bytes of a module's TLS block that hold C++ initialisation guards (`_ZGV...` symbols). A
// `__shared__` array of a type with a constructor (bf16) is a function-local static thread_local, which the
// compiler guards; the first thread of a worker to pass the declaration sets the guard and the others read
// it, an emulator artifact with no counterpart on the GPU, so those bytes are not checked. Read once per
// module from its ELF symbol table.
const std::vector<bool>& guard_bytes(const char* path, size_t tls_size) {
  static std::mutex m;
  static std::map<std::string, std::vector<bool>> cache;
  std::lock_guard<std::mutex> lk(m);
  auto it = cache.find(path);
  if (it != cache.end()) return it->second;
  std::vector<bool>& g = cache[path];
  g.assign(tls_size, false);
  FILE* f = std::fopen(path, "rb");
  if (!f) return g;
  std::vector<char> file;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) file.insert(file.end(), buf, buf + n);
  std::fclose(f);
  if (file.size() < sizeof(Elf64_Ehdr)) return g;
  const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(file.data());
  const auto* sh = reinterpret_cast<const Elf64_Shdr*>(file.data() + eh->e_shoff);
  for (int i = 0; i < eh->e_shnum; ++i) {
    if (sh[i].sh_type != SHT_SYMTAB) continue;
    const auto* syms = reinterpret_cast<const Elf64_Sym*>(file.data() + sh[i].sh_offset);
    const char* names = file.data() + sh[sh[i].sh_link].sh_offset;
    for (size_t k = 0; k < sh[i].sh_size / sizeof(Elf64_Sym); ++k) {
      const Elf64_Sym& s = syms[k];
      if (ELF64_ST_TYPE(s.st_info) != STT_TLS || std::strncmp(names + s.st_name, "_ZGV", 4) != 0) continue;
      for (uint64_t b = s.st_value; b < s.st_value + std::max<uint64_t>(s.st_size, 1) && b < tls_size; ++b) g[b] = true;
    }
  }
  return g;
}

// mbarrier ordering, as vector clocks over arrivals: thread u's tick counts its arrivals; an arrival
// releases u's accesses before it into the barrier's current phase; the phase's completion folds them into
// the barrier's completed clock; a thread whose wait returns acquires that clock into its row of `seen`. An
// access by u at tick x happened before thread t's access if x < seen[t][u]. (Acquiring every completed
// phase, not only the one waited for, may order a little more than the ISA does: a race hidden, never one
// invented.)
struct BarClocks {
  std::vector<uint32_t> pending, completed;
};
struct State {
  unsigned tid = 0, warp = 0;
  uint32_t epoch = 1;
  std::vector<uint32_t> warp_epoch;
  unsigned nthreads = 0;
  std::vector<uint32_t> ticks;  // per thread
  std::vector<uint32_t> seen;   // nthreads x nthreads, allocated at the block's first acquire
  std::map<const void*, BarClocks> bars;
  Region regions[2];  // dynamic, static
  std::string report;
  const Launch* launch = nullptr;
};
// One per launching thread; `active` is read by every instrumented access, so it is initial-exec TLS.
thread_local State* st_ptr __attribute__((tls_model("initial-exec"))) = nullptr;
thread_local bool active __attribute__((tls_model("initial-exec"))) = false;
State& state() {
  if (!st_ptr) st_ptr = new State();
  return *st_ptr;
}
#define st (state())

bool enabled_now() {
  static const bool on = [] {
    const char* e = std::getenv("GSURE_EMU_RACECHECK");
    return e && std::strcmp(e, "1") == 0;
  }();
  return on;
}

// The calling thread's TLS block of a kernel module: where its static __shared__ arrays live.
void static_range(const void* handle, uintptr_t* lo, uintptr_t* hi, const std::vector<bool>** ignored) {
  *lo = *hi = 0;
  *ignored = nullptr;
  auto anchor = reinterpret_cast<void* (*)()>(dlsym(const_cast<void*>(handle), "gsure_emu_tls_anchor"));
  if (!anchor) return;
  anchor();  // allocates this thread's block for the module
  void* data = nullptr;
  if (dlinfo(const_cast<void*>(handle), RTLD_DI_TLS_DATA, &data) != 0 || !data) return;
  link_map* lm = nullptr;
  dlinfo(const_cast<void*>(handle), RTLD_DI_LINKMAP, &lm);
  struct Q {
    uintptr_t base;
    size_t memsz;
  } q{lm ? lm->l_addr : 0, 0};
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* p) {
        auto* q = static_cast<Q*>(p);
        if (info->dlpi_addr != q->base) return 0;
        for (int i = 0; i < info->dlpi_phnum; ++i)
          if (info->dlpi_phdr[i].p_type == PT_TLS) q->memsz = info->dlpi_phdr[i].p_memsz;
        return 1;
      },
      &q);
  *lo = reinterpret_cast<uintptr_t>(data);
  *hi = *lo + q.memsz;
  if (lm && lm->l_name) *ignored = &guard_bytes(lm->l_name, q.memsz);
}

std::string thread_name(unsigned tid) {
  const Dim b = st.launch->block;
  return "thread (" + std::to_string(tid % b.x) + "," + std::to_string(tid / b.x % b.y) + "," +
         std::to_string(tid / (b.x * b.y)) + ")";
}

void race(const char* kind, const Region& r, uintptr_t addr, unsigned t1, uintptr_t s1, unsigned t2, uintptr_t s2) {
  if (!st.report.empty()) return;
  const std::string first = t1 == MANY ? "several threads" : thread_name(t1);
  st.report = std::string("shared-memory race (") + kind + ") in " + st.launch->entry->name + " on " + r.what +
              " byte " + std::to_string(addr - r.lo) + ", between barriers:\n    " + first + " at " + describe(s1) +
              "\n    " + thread_name(t2) + " at " + describe(s2);
}

bool ordered(uint16_t other, uint32_t other_wep, uint32_t other_tick) {
  if (other == MANY) return false;
  // Same barrier interval: ordered if both are in one warp and it synchronised in between, or if the other
  // thread arrived on an mbarrier after its access and this thread's wait acquired that arrival.
  if (other / 32 == st.warp && st.warp_epoch[st.warp] != other_wep) return true;
  return !st.seen.empty() && other_tick < st.seen[(size_t)st.tid * st.nthreads + other];
}

void check(uintptr_t addr, size_t n, bool write, uintptr_t site) {
  for (Region& r : st.regions) {
    if (addr >= r.hi || addr + n <= r.lo) continue;
    const uint32_t e = st.epoch, wep = st.warp_epoch[st.warp], tick = st.ticks[st.tid];
    const uint16_t tid = (uint16_t)st.tid;
    for (uintptr_t a = std::max(addr, r.lo); a < std::min(addr + n, r.hi); ++a) {
      if (r.ignored && (*r.ignored)[a - r.lo]) continue;
      Cell& c = r.shadow[a - r.lo];
      if (c.w_epoch == e && c.w_tid != tid && !ordered(c.w_tid, c.w_wep, c.w_tick))
        race(write ? "write after write" : "read after write", r, a, c.w_tid, c.w_site, tid, site);
      if (write) {
        if (c.r_epoch == e && c.r_tid != tid && !ordered(c.r_tid, c.r_wep, c.r_tick))
          race("write after read", r, a, c.r_tid, c.r_site, tid, site);
        c.w_epoch = e, c.w_tid = tid, c.w_wep = wep, c.w_tick = tick, c.w_site = site;
      } else if (c.r_epoch != e || c.r_tid == tid) {
        c.r_epoch = e, c.r_tid = tid, c.r_wep = wep, c.r_tick = tick, c.r_site = site;
      } else {
        c.r_tid = MANY;
      }
    }
  }
}

}  // namespace

bool race_enabled() { return enabled_now(); }

void race_block_begin(const Launch& launch, unsigned nthreads, void* dyn, size_t dyn_bytes) {
  if (!enabled_now()) return;
  active = true;
  st.launch = &launch;
  st.epoch = 1;
  st.report.clear();
  st.warp_epoch.assign((nthreads + 31) / 32, 0);
  st.nthreads = nthreads;
  st.ticks.assign(nthreads, 0);
  st.seen.clear();
  st.bars.clear();
  st.regions[0].lo = reinterpret_cast<uintptr_t>(dyn);
  st.regions[0].hi = st.regions[0].lo + dyn_bytes;
  st.regions[0].what = "dynamic shared memory";
  static_range(launch.tls_module_id, &st.regions[1].lo, &st.regions[1].hi, &st.regions[1].ignored);
  st.regions[1].what = "static __shared__ memory";
  for (Region& r : st.regions) r.shadow.assign(r.hi - r.lo, Cell{});
}

std::string race_block_end() {
  if (!active) return "";
  active = false;
  return std::move(st.report);
}

void race_switch_to(unsigned tid, unsigned warp) {
  st.tid = tid;
  st.warp = warp;
}
void race_barrier() {
  if (active) ++st.epoch;
}
void race_warp_sync(unsigned warp, unsigned) {
  if (active && warp < st.warp_epoch.size()) ++st.warp_epoch[warp];
}
void race_access(const void* addr, size_t bytes, bool write, unsigned tid, const char* file, int line) {
  if (!active) return;
  const unsigned saved = st.tid, saved_warp = st.warp;
  st.tid = tid;
  st.warp = tid / 32;
  check(reinterpret_cast<uintptr_t>(addr), bytes, write, intern(file, line));
  st.tid = saved;
  st.warp = saved_warp;
}
void race_atomic(const void*, size_t) {}

void race_mbar_arrive(const void* bar, unsigned tid) {
  if (!active || tid >= st.nthreads) return;
  BarClocks& b = st.bars[bar];
  if (b.pending.empty()) b.pending.assign(st.nthreads, 0);
  b.pending[tid] = std::max(b.pending[tid], ++st.ticks[tid]);
}
void race_mbar_complete(const void* bar) {
  if (!active) return;
  BarClocks& b = st.bars[bar];
  if (b.completed.empty()) b.completed.assign(st.nthreads, 0);
  for (size_t u = 0; u < b.pending.size(); ++u) b.completed[u] = std::max(b.completed[u], b.pending[u]);
  b.pending.assign(st.nthreads, 0);
}
void race_mbar_acquire(const void* bar, unsigned tid) {
  if (!active || tid >= st.nthreads) return;
  const BarClocks& b = st.bars[bar];
  if (b.completed.empty()) return;
  if (st.seen.empty()) st.seen.assign((size_t)st.nthreads * st.nthreads, 0);
  uint32_t* row = st.seen.data() + (size_t)tid * st.nthreads;
  for (unsigned u = 0; u < st.nthreads; ++u) row[u] = std::max(row[u], b.completed[u]);
}
void race_async_write(const void* addr, size_t bytes) {
  if (!active) return;
  const uintptr_t a0 = reinterpret_cast<uintptr_t>(addr);
  for (Region& r : st.regions)
    for (uintptr_t a = std::max(a0, r.lo); a < std::min(a0 + bytes, r.hi); ++a) r.shadow[a - r.lo] = Cell{};
}

}  // namespace gsure_emu

// --------------------------------------------------------------------- ThreadSanitizer's entry points
// The instrumented kernel modules call these before each access; outside a checked block they return at once.
using gsure_emu::active;
using gsure_emu::state;
#define GSURE_EMU_TSAN_ACCESS(n)                                                                          \
  extern "C" void __tsan_read##n(void* p) {                                                               \
    if (active) gsure_emu::check(reinterpret_cast<uintptr_t>(p), n, false, (uintptr_t)__builtin_return_address(0)); \
  }                                                                                                       \
  extern "C" void __tsan_write##n(void* p) {                                                              \
    if (active) gsure_emu::check(reinterpret_cast<uintptr_t>(p), n, true, (uintptr_t)__builtin_return_address(0)); \
  }                                                                                                       \
  extern "C" void __tsan_unaligned_read##n(void* p) {                                                     \
    if (active) gsure_emu::check(reinterpret_cast<uintptr_t>(p), n, false, (uintptr_t)__builtin_return_address(0)); \
  }                                                                                                       \
  extern "C" void __tsan_unaligned_write##n(void* p) {                                                    \
    if (active) gsure_emu::check(reinterpret_cast<uintptr_t>(p), n, true, (uintptr_t)__builtin_return_address(0)); \
  }
GSURE_EMU_TSAN_ACCESS(1)
GSURE_EMU_TSAN_ACCESS(2)
GSURE_EMU_TSAN_ACCESS(4)
GSURE_EMU_TSAN_ACCESS(8)
GSURE_EMU_TSAN_ACCESS(16)
extern "C" void __tsan_read_range(void* p, unsigned long n) {
  if (active) gsure_emu::check(reinterpret_cast<uintptr_t>(p), n, false, (uintptr_t)__builtin_return_address(0));
}
extern "C" void __tsan_write_range(void* p, unsigned long n) {
  if (active) gsure_emu::check(reinterpret_cast<uintptr_t>(p), n, true, (uintptr_t)__builtin_return_address(0));
}
extern "C" void __tsan_func_entry(void*) {}
extern "C" void __tsan_func_exit() {}
extern "C" void __tsan_init() {}
extern "C" void __tsan_vptr_update(void**, void*) {}
extern "C" void __tsan_vptr_read(void**) {}
// Atomics in kernels (global counters) are not shared-memory accesses the detector orders; perform them.
extern "C" int __tsan_atomic32_fetch_add(volatile int* p, int v, int) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
extern "C" long __tsan_atomic64_fetch_add(volatile long* p, long v, int) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
extern "C" int __tsan_atomic32_load(const volatile int* p, int) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
extern "C" long __tsan_atomic64_load(const volatile long* p, int) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
extern "C" void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
