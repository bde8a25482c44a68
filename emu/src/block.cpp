// block.cpp: the block scheduler (fibers, barriers, warp collectives, tensor-core instructions, cp.async,
// mbarriers and bulk async copies, warpgroup MMA) and the worker pool (see block.h).
#include "block.h"

#include <dlfcn.h>
#include <setjmp.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <vector>

#include "fiber.h"
#include "race.h"
#include "tensormap.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
// AddressSanitizer must be told about every stack switch, or it takes the fiber stacks for overflows.
#define ASAN_START(save, bottom, size) __sanitizer_start_switch_fiber(save, bottom, size)
#define ASAN_FINISH(save, bottom, size) __sanitizer_finish_switch_fiber(save, bottom, size)
#else
#define ASAN_START(save, bottom, size) ((void)(save), (void)(bottom), (void)(size))
#define ASAN_FINISH(save, bottom, size) ((void)(save), (void)(bottom), (void)(size))
#endif

namespace gsure_emu {
namespace {

enum class State : uint8_t { Ready, Barrier, Warp, Mbarrier, Done };
enum class OpKind : uint8_t { Shfl, Vote, SyncWarp, Mma, MmaTf32, Ldmatrix, WgFence, WgMma, WgCommit, WgWait };

// A warp collective as one lane posts it; lives on that lane's stack while it waits.
struct WarpOp {
  OpKind kind;
  unsigned mask;
  const char* file;
  int line;
  int sub = 0;         // shuffle or vote kind, ldmatrix count
  uint32_t value = 0;  // shuffle value, vote predicate
  int arg = 0, width = 32;
  uint32_t result = 0;
  float* d = nullptr;  // mma
  const uint32_t* a = nullptr;
  const uint32_t* b = nullptr;
  uint32_t* regs = nullptr;  // ldmatrix
  int trans = 0;
  const void* addr = nullptr;
  uint64_t desc_a = 0, desc_b = 0;  // wgmma
};

// One warp's share of a wgmma.mma_async (its 16 rows of D), queued until a wait_group covers it.
struct WgmmaOp {
  int n, accumulate, trans_a, trans_b;
  uint64_t desc_a, desc_b;
  float* d[32];  // each lane's accumulator registers (on the lane's stack, alive until the lane exits)
  const char* file;
  int line;
};
// A warp's wgmma state: whether a wgmma.fence came since its last wait_group, how many mma_async it has
// issued (to check the warpgroup's four warps issue the same sequence), and its queued work.
struct WgmmaWarp {
  bool fenced = false;
  size_t issued = 0;
  std::vector<WgmmaOp> open;                 // issued since the last commit_group
  std::deque<std::vector<WgmmaOp>> groups;   // committed, not yet waited for, oldest first
};

struct CpAsync {
  void* dst;
  const void* src;
  int bytes, src_bytes;
};

// A shared-memory mbarrier (PTX ISA "Parallel Synchronization and Communication Instructions: mbarrier"): an
// expected arrival count, the arrivals and transaction bytes still pending in the current phase, and how
// many phases have completed (the current phase's parity is `phase & 1`). The hardware keeps this in the
// barrier's 8 bytes of shared memory in an unspecified encoding; kernels touch it only through mbarrier
// instructions, so the emulator keeps it beside the block, keyed by address.
struct BulkCopy {
  void* dst;
  const void* src;  // null: the bytes are `staged` (a tensor copy, gathered when it was issued)
  unsigned bytes;
  std::vector<unsigned char> staged = {};
};
struct Mbarrier {
  unsigned count = 0, pending = 0;
  int64_t tx = 0;       // transaction bytes expected and not yet completed in this phase
  uint64_t phase = 0;   // completed phases
  std::vector<BulkCopy> in_flight;  // cp.async.bulk copies that complete on this barrier, not landed yet
  unsigned waiters = 0;
};

struct Fiber {
  void* sp = nullptr;
  ThreadInfo info{};
  unsigned tid = 0, warp = 0, lane = 0;
  State state = State::Ready;
  const char* file = nullptr;  // where it waits
  int line = 0;
  WarpOp* op = nullptr;
  const void* wait_bar = nullptr;  // the mbarrier it waits on, for the phase of parity wait_parity to complete
  unsigned wait_parity = 0;
  std::vector<std::vector<CpAsync>> committed;  // cp.async groups not yet waited for, oldest first
  std::vector<CpAsync> open;                    // issued since the last commit
  // Dynamic shared memory its cp.async copies wrote (offset, bytes) since its last fence.proxy.async.
  std::vector<std::pair<size_t, size_t>> unfenced;
};

enum class Order { RoundRobin, Reverse, WarpAhead, Random };
struct Schedule {
  Order order = Order::RoundRobin;
  uint64_t seed = 1;
  std::string name = "rr";
};

const Schedule& schedule() {
  static const Schedule s = [] {
    Schedule s;
    const char* e = std::getenv("GSURE_EMU_SCHEDULE");
    std::string v = e ? e : "rr";
    if (v == "rr" || v.empty()) {
    } else if (v == "reverse") {
      s.order = Order::Reverse;
    } else if (v == "warp-ahead") {
      s.order = Order::WarpAhead;
    } else if (v.rfind("random", 0) == 0) {
      s.order = Order::Random;
      if (v.size() > 7 && v[6] == ':') s.seed = std::strtoull(v.c_str() + 7, nullptr, 10);
    } else {
      std::fprintf(stderr, "gsure emulator: GSURE_EMU_SCHEDULE=%s is not one of rr, reverse, warp-ahead, random[:seed]\n",
                   v.c_str());
      std::abort();
    }
    s.name = v;
    return s;
  }();
  return s;
}

size_t stack_bytes() {
  static const size_t bytes = [] {
    const char* e = std::getenv("GSURE_EMU_STACK_KIB");
#if defined(__SANITIZE_ADDRESS__)
    size_t kib = 512;  // ASan's redzones triple frame sizes
#else
    size_t kib = 128;
#endif
    if (e) kib = std::strtoull(e, nullptr, 10);
    return kib << 10;
  }();
  return bytes;
}

// Everything one worker needs to run blocks, kept from launch to launch (stacks are the expensive part).
struct Worker;
// Read on every kernel-side call: initial-exec TLS (no __tls_get_addr; libcuda.so.1 is dlopened, and these
// few bytes fit glibc's static TLS surplus).
#define GSURE_EMU_FAST_TLS __attribute__((tls_model("initial-exec")))
thread_local Worker* tls_worker GSURE_EMU_FAST_TLS = nullptr;
thread_local Fiber* tls_fiber GSURE_EMU_FAST_TLS = nullptr;

struct Failure {
  std::string report;
};

struct Worker {
  std::vector<Fiber> fibers;
  std::vector<Stack> stacks;
  void* sched_sp = nullptr;
  const Launch* launch = nullptr;
  Dim block_idx{};
  std::deque<unsigned> ready;
  std::vector<unsigned> warp_waiting;  // lanes of each warp posted at a collective
  std::vector<unsigned> ids;           // scratch for releasing threads in schedule order
  unsigned at_barrier = 0, done = 0, nthreads = 0;
  uint64_t epoch = 0;  // block barriers completed
  std::string error;   // first failure in this block
  std::mt19937_64 rng;
  std::vector<unsigned char> dynamic_storage;
  unsigned char* dynamic_smem_ptr = nullptr;  // the block's dynamic shared memory, inside dynamic_storage
  size_t dynamic_smem_bytes = 0;
  // The generic proxy's writes the async proxy may not see yet: for each byte of dynamic shared memory, 1 +
  // the thread whose cp.async wrote it since that thread's last fence.proxy.async, or 0. wgmma reads shared
  // memory through the async proxy, so an operand byte still marked when an mma_async issues is an error
  // (PTX ISA, "Asynchronous proxy": a fence.proxy.async must order the writes before the async accesses).
  // Sized when a block's first cp.async lands in dynamic shared memory (kernels without one pay nothing).
  std::vector<uint16_t> generic_writer;
  sigjmp_buf fault_jmp;
  volatile sig_atomic_t in_block = 0;
  char altstack[64 * 1024];
  stack_t previous_altstack{};

  // Faults are caught on this alternate stack (a fiber's own stack may be what overflowed).
  Worker() {
    stack_t ss{};
    ss.ss_sp = altstack;
    ss.ss_size = sizeof(altstack);
    sigaltstack(&ss, &previous_altstack);
  }
  // Puts back the thread's previous alternate stack: AddressSanitizer unmaps whatever alternate stack a
  // thread has when it exits, and ours lives inside this heap object.
  ~Worker() {
    sigaltstack(&previous_altstack, nullptr);
    for (auto& s : stacks) s.release();
  }

  std::string where(const Fiber& f) const {
    std::ostringstream o;
    o << launch->entry->name << " (" << launch->module << ") block (" << block_idx.x << "," << block_idx.y << ","
      << block_idx.z << ") thread (" << f.info.thread_idx.x << "," << f.info.thread_idx.y << "," << f.info.thread_idx.z
      << ")";
    return o.str();
  }

  void fail(const std::string& msg) {
    if (error.empty()) error = msg;
  }

  void make_ready(unsigned id) {
    fibers[id].state = State::Ready;
    const Order o = schedule().order;
    if (o == Order::WarpAhead && fibers[id].warp == 0)
      ready.push_front(id);  // warp 0 runs ahead whenever it can
    else
      ready.push_back(id);
  }

  // Releases every thread waiting at the block barrier once all live threads are there.
  void check_barrier() {
    if (at_barrier == 0 || at_barrier + done < nthreads) return;
    const Fiber* first = nullptr;
    for (auto& f : fibers) {
      if (f.state == State::Done) {
        for (auto& g : fibers)
          if (g.state == State::Barrier) {
            fail("divergent __syncthreads: " + where(g) + " waits at " + g.file + ":" + std::to_string(g.line) +
                 " but " + where(f) + " has exited (a barrier must be reached by every thread of the block)");
            return;
          }
      }
      if (f.state != State::Barrier) continue;
      if (!first) first = &f;
      if (f.line != first->line || (f.file != first->file && std::strcmp(f.file, first->file) != 0)) {
        fail("divergent __syncthreads: " + where(*first) + " waits at " + first->file + ":" +
             std::to_string(first->line) + ", " + where(f) + " at " + f.file + ":" + std::to_string(f.line));
        return;
      }
    }
    ++epoch;
    race_barrier();
    at_barrier = 0;
    ids.clear();
    for (auto& f : fibers)
      if (f.state == State::Barrier) ids.push_back(f.tid);
    order(ids);
    for (unsigned id : ids) make_ready(id);
  }

  void order(std::vector<unsigned>& ids) {
    switch (schedule().order) {
      case Order::Reverse: std::reverse(ids.begin(), ids.end()); break;
      case Order::Random: std::shuffle(ids.begin(), ids.end(), rng); break;
      default: break;
    }
  }

  // Completes the collective the lanes of `warp` wait at, once every lane its mask names has posted it.
  void check_warp(unsigned warp) {
    const unsigned base = warp * 32;
    WarpOp* op = nullptr;
    const Fiber* poster = nullptr;
    for (unsigned l = 0; l < 32 && base + l < nthreads; ++l)
      if (fibers[base + l].state == State::Warp) {
        op = fibers[base + l].op;
        poster = &fibers[base + l];
        break;
      }
    if (!op) return;
    const unsigned mask = op->mask;
    for (unsigned l = 0; l < 32; ++l) {
      if (!(mask >> l & 1)) continue;
      if (base + l >= nthreads) {
        fail(std::string("warp collective at ") + op->file + ":" + std::to_string(op->line) + " in " + where(*poster) +
             " names lane " + std::to_string(l) + " in its mask, which does not exist in this block");
        return;
      }
      const Fiber& f = fibers[base + l];
      if (f.state == State::Done) {
        fail(std::string("warp collective at ") + op->file + ":" + std::to_string(op->line) + " waits for lane " +
             std::to_string(l) + " of " + where(*poster) + ", which has exited");
        return;
      }
      if (f.state != State::Warp) return;  // not there yet
      const WarpOp* o = f.op;
      if (o->kind != op->kind || o->mask != op->mask || o->line != op->line || o->sub != op->sub ||
          (o->file != op->file && std::strcmp(o->file, op->file) != 0)) {
        fail(std::string("divergent warp collectives: ") + where(*poster) + " at " + op->file + ":" +
             std::to_string(op->line) + " (mask " + hex(op->mask) + "), " + where(f) + " at " + o->file + ":" +
             std::to_string(o->line) + " (mask " + hex(o->mask) + ")");
        return;
      }
    }
    if (!(mask >> poster->lane & 1)) {
      fail(std::string("warp collective at ") + op->file + ":" + std::to_string(op->line) + ": " + where(*poster) +
           " is not in its own mask " + hex(mask));
      return;
    }
    complete(base, mask, op->kind);
    race_warp_sync(warp, mask);
    ids.clear();
    for (unsigned l = 0; l < 32; ++l)
      if (mask >> l & 1) ids.push_back(base + l);
    warp_waiting[warp] -= (unsigned)ids.size();
    order(ids);
    for (unsigned id : ids) make_ready(id);
  }

  static std::string hex(unsigned v) {
    char b[16];
    std::snprintf(b, sizeof b, "0x%08x", v);
    return b;
  }

  WarpOp* lane_op(unsigned base, unsigned l) { return fibers[base + l].op; }

  void complete(unsigned base, unsigned mask, OpKind kind) {
    switch (kind) {
      case OpKind::SyncWarp: break;
      case OpKind::Shfl: complete_shfl(base, mask); break;
      case OpKind::Vote: {
        unsigned ballot = 0;
        for (unsigned l = 0; l < 32; ++l)
          if ((mask >> l & 1) && lane_op(base, l)->value) ballot |= 1u << l;
        for (unsigned l = 0; l < 32; ++l) {
          if (!(mask >> l & 1)) continue;
          WarpOp* o = lane_op(base, l);
          o->result = o->sub == VOTE_BALLOT ? ballot : o->sub == VOTE_ANY ? ballot != 0 : ballot == mask;
        }
        break;
      }
      case OpKind::Mma: complete_mma(base); break;
      case OpKind::MmaTf32: complete_mma_tf32(base); break;
      case OpKind::Ldmatrix: complete_ldmatrix(base); break;
      case OpKind::WgFence: wgmma[base / 32].fenced = true; break;
      case OpKind::WgMma: issue_wgmma(base); break;
      case OpKind::WgCommit: {
        WgmmaWarp& s = wgmma[base / 32];
        s.groups.push_back(std::move(s.open));
        s.open.clear();
        break;
      }
      case OpKind::WgWait: {
        WgmmaWarp& s = wgmma[base / 32];
        while (error.empty() && s.groups.size() > (size_t)lane_op(base, 0)->arg) {
          for (const WgmmaOp& op : s.groups.front()) run_wgmma(base / 32, op);
          s.groups.pop_front();
        }
        s.fenced = false;
        break;
      }
    }
  }

  // ------------------------------------------------------------------------------------------------ wgmma
  std::vector<WgmmaWarp> wgmma;                                     // per warp
  std::vector<std::vector<std::pair<const char*, int>>> wgmma_sites;  // per warpgroup: its mma_async sequence

  std::string site(const char* file, int line) { return std::string(file) + ":" + std::to_string(line); }

  // Checks the lanes agree and the warpgroup exists, then queues the warp's share.
  void issue_wgmma(unsigned base) {
    const unsigned warp = base / 32;
    const WarpOp* o0 = lane_op(base, 0);
    const std::string at = "wgmma.mma_async at " + site(o0->file, o0->line);
    for (unsigned l = 1; l < 32; ++l) {
      const WarpOp* o = lane_op(base, l);
      if (o->desc_a != o0->desc_a || o->desc_b != o0->desc_b || o->value != o0->value || o->trans != o0->trans) {
        fail(at + ": lane " + std::to_string(l) + " of " + where(fibers[base]) +
             " gives other descriptors or scale-d than lane 0 (every thread of the warpgroup must give the same)");
        return;
      }
    }
    if ((warp / 4 + 1) * 128 > nthreads) {
      fail(at + " in " + where(fibers[base]) + ": the block's " + std::to_string(nthreads) +
           " threads leave its warpgroup (warps " + std::to_string(warp / 4 * 4) + ".." +
           std::to_string(warp / 4 * 4 + 3) + ") incomplete");
      return;
    }
    if (!generic_writer.empty() && !operands_fenced(base, at)) return;
    WgmmaWarp& s = wgmma[warp];
    if (!s.fenced) {
      fail(at + " in " + where(fibers[base]) +
           ": no wgmma.fence since the warp's last wgmma.wait_group (or the kernel's start); the accumulators "
           "must be fenced before an mma_async reads them (the emulator cannot see register accesses, so it "
           "asks for the fence the PTX ISA requires whenever they may have been touched)");
      return;
    }
    auto& seq = wgmma_sites[warp / 4];
    if (s.issued < seq.size()) {
      const auto& [file, line] = seq[s.issued];
      if (line != o0->line || (file != o0->file && std::strcmp(file, o0->file) != 0)) {
        fail(at + " in " + where(fibers[base]) + ": mma_async number " + std::to_string(s.issued) +
             " of its warpgroup was issued at " + site(file, line) +
             " by another warp (the four warps of a warpgroup must issue the same instructions)");
        return;
      }
    } else {
      seq.emplace_back(o0->file, o0->line);
    }
    ++s.issued;
    WgmmaOp op{o0->sub, (int)o0->value, o0->trans & 1, o0->trans >> 1, o0->desc_a, o0->desc_b, {}, o0->file, o0->line};
    for (unsigned l = 0; l < 32; ++l) op.d[l] = lane_op(base, l)->d;
    s.open.push_back(op);
  }

  // Whether every shared-memory byte this warp's share of the mma_async reads (its 16 rows of A, all of B)
  // is visible to the async proxy: no cp.async of a thread wrote it since that thread's fence.proxy.async.
  bool operands_fenced(unsigned base, const std::string& at) {
    const WarpOp* o0 = lane_op(base, 0);
    const WgmmaOp op{o0->sub, 0, o0->trans & 1, o0->trans >> 1, o0->desc_a, o0->desc_b, {}, o0->file, o0->line};
    const int row0 = 16 * (int)(base / 32 % 4);
    auto check = [&](const uint16_t* p, const char* which) {
      if (!p) return false;
      const size_t off = reinterpret_cast<const unsigned char*>(p) - dynamic_smem_ptr;
      const unsigned writer = std::max(generic_writer[off], generic_writer[off + 1]);
      if (writer == 0) return true;
      fail(at + " in " + where(fibers[base]) + ": operand " + which + " reads shared memory (byte " +
           std::to_string(off) + ") that " + where(fibers[writer - 1]) +
           " wrote by cp.async without a fence.proxy.async since: the async proxy wgmma reads through may not "
           "see it (fence_proxy_async_shared() after the cp.async wait, before the barrier)");
      return false;
    };
    for (int i = 0; i < 16; ++i)
      for (int k = 0; k < 16; ++k)
        if (!check(wgmma_element(op.desc_a, op.trans_a, row0 + i, k, op, "A"), "A")) return false;
    for (int j = 0; j < op.n; ++j)
      for (int k = 0; k < 16; ++k)
        if (!check(wgmma_element(op.desc_b, op.trans_b, j, k, op, "B"), "B")) return false;
    return true;
  }

  // fence.proxy.async by fiber f: its generic writes so far become visible to the async proxy.
  void fence_proxy_async(Fiber& f) {
    for (const auto& [off, bytes] : f.unfenced)
      for (size_t b = off; b < off + bytes; ++b)
        if (generic_writer[b] == f.tid + 1) generic_writer[b] = 0;
    f.unfenced.clear();
  }

  // The shared-memory address of element (mn, k) of an operand, by its descriptor (layouts in
  // kernels/wgmma.cuh, after the PTX ISA's canonical layouts); null after a failure.
  const uint16_t* wgmma_element(uint64_t desc, bool mn_major, int mn, int k, const WgmmaOp& op, const char* which) {
    const uint32_t start = (uint32_t)(desc & 0x3FFF) << 4, lbo = (uint32_t)(desc >> 16 & 0x3FFF) << 4,
                   sbo = (uint32_t)(desc >> 32 & 0x3FFF) << 4, base_offset = (uint32_t)(desc >> 49 & 7),
                   mode = (uint32_t)(desc >> 62 & 3);
    if (base_offset != 0) {
      fail("wgmma.mma_async at " + site(op.file, op.line) + ": operand " + which +
           " has a non-zero matrix base offset, which the emulator does not model");
      return nullptr;
    }
    static constexpr uint32_t swizzle_bits[4] = {0, 3, 2, 1};  // interleave, 128, 64, 32 bytes
    const uint32_t row_chunks = 1u << swizzle_bits[mode];     // 16-byte chunks in one swizzle row
    uint32_t off;
    if (!mn_major) {
      off = mode == 0 ? (mn % 8) * 16 + (mn / 8) * sbo + (k / 8) * lbo
                      : (mn % 8) * row_chunks * 16 + (mn / 8) * sbo + (k / 8) * 16;
      off += (k % 8) * 2;
    } else {
      const uint32_t c = mn / 8;
      off = mode == 0 ? c * sbo + (k % 8) * 16 + (k / 8) * lbo
                      : (c % row_chunks) * 16 + (c / row_chunks) * lbo + (k % 8) * row_chunks * 16 + (k / 8) * sbo;
      off += (mn % 8) * 2;
    }
    uint32_t addr = (start + off) & 0x3FFFF;
    if (mode != 0) addr ^= (addr >> 7 & (row_chunks - 1)) << 4;
    // The descriptor holds the low 18 bits of the address; the block's dynamic buffer is under 256 KiB, so
    // they name one byte of it.
    const auto base = reinterpret_cast<uintptr_t>(dynamic_smem_ptr);
    const uint32_t rel = (addr - (uint32_t)(base & 0x3FFFF)) & 0x3FFFF;
    if (!dynamic_smem_ptr || rel + 2 > dynamic_smem_bytes) {
      fail("wgmma.mma_async at " + site(op.file, op.line) + ": operand " + which + " element (" + std::to_string(mn) +
           ", " + std::to_string(k) + ") lies outside the block's dynamic shared memory (the emulator takes wgmma "
           "operands from dynamic shared memory only)");
      return nullptr;
    }
    return reinterpret_cast<const uint16_t*>(base + rel);
  }

  // D(16 rows of this warp, N) = A(those rows, 16) · B(16, N) (+ D), read and written now, at the wait.
  // bf16 products are exact; each sum is formed in f64 and rounded once, as complete_mma does.
  void run_wgmma(unsigned warp, const WgmmaOp& op) {
    const int row0 = 16 * (int)(warp % 4), n = op.n;
    float A[16][16], B[16][128];
    auto bf16_at = [](const uint16_t* p) { return bits_to_float((uint32_t)*p << 16); };
    for (int i = 0; i < 16; ++i)
      for (int k = 0; k < 16; ++k) {
        const uint16_t* p = wgmma_element(op.desc_a, op.trans_a, row0 + i, k, op, "A");
        if (!p) return;
        A[i][k] = bf16_at(p);
      }
    for (int j = 0; j < n; ++j)
      for (int k = 0; k < 16; ++k) {
        const uint16_t* p = wgmma_element(op.desc_b, op.trans_b, j, k, op, "B");
        if (!p) return;
        B[k][j] = bf16_at(p);
      }
    if (race_on) {  // the async proxy's reads, as the waiting warp's (lane 0), one element per 8 of k
      for (int i = 0; i < 16; ++i)
        for (int k = 0; k < 16; k += 8)
          race_access(wgmma_element(op.desc_a, op.trans_a, row0 + i, k, op, "A"), 2, false, warp * 32, op.file, op.line);
      for (int j = 0; j < n; ++j)
        for (int k = 0; k < 16; k += 8)
          race_access(wgmma_element(op.desc_b, op.trans_b, j, k, op, "B"), 2, false, warp * 32, op.file, op.line);
    }
    for (unsigned l = 0; l < 32; ++l) {
      float* d = op.d[l];
      const int g = (int)l / 4, t = (int)l % 4;
      for (int j = 0; j < n / 8; ++j)
        for (int v = 0; v < 4; ++v) {
          const int r = g + 8 * (v >> 1), c = 8 * j + 2 * t + (v & 1);
          double s = op.accumulate ? d[4 * j + v] : 0.0;
          for (int k = 0; k < 16; ++k) s += (double)A[r][k] * (double)B[k][c];
          d[4 * j + v] = (float)s;
        }
    }
  }

  // PTX shfl.sync semantics: lanes are split into segments of `width`; a source outside the segment (up/down)
  // or outside the mask returns the lane's own value.
  void complete_shfl(unsigned base, unsigned mask) {
    for (unsigned l = 0; l < 32; ++l) {
      if (!(mask >> l & 1)) continue;
      WarpOp* o = lane_op(base, l);
      const int w = o->width, seg = (int)l / w * w, in = (int)l - seg;
      int src = (int)l;
      switch (o->sub) {
        case SHFL_IDX: src = seg + (o->arg % w + w) % w; break;
        case SHFL_UP: src = in - o->arg >= 0 ? (int)l - o->arg : (int)l; break;
        case SHFL_DOWN: src = in + o->arg < w ? (int)l + o->arg : (int)l; break;
        case SHFL_XOR: src = seg + ((in ^ o->arg) % w); break;
      }
      if (src < 0 || src > 31 || !(mask >> src & 1)) {
        fail(std::string("shuffle at ") + o->file + ":" + std::to_string(o->line) + ": lane " + std::to_string(l) +
             " reads lane " + std::to_string(src) + ", which is not in the mask " + hex(mask));
        src = (int)l;
      }
      o->result = lane_op(base, (unsigned)src)->value;
    }
  }

  static float bf16_lo(uint32_t r) { return bits_to_float(r << 16); }
  static float bf16_hi(uint32_t r) { return bits_to_float(r & 0xffff0000u); }
  static float bits_to_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }

  // mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32 over the 32 lanes' fragments (layouts in kernels/mma.cuh).
  // bf16 products are exact in f32; the sum is formed in f64 and rounded once (the tensor core's internal
  // order is unspecified; this is the exactly rounded result).
  void complete_mma(unsigned base) {
    float A[16][16], B[16][8];
    double C[16][8];
    for (unsigned l = 0; l < 32; ++l) {
      const WarpOp* o = lane_op(base, l);
      const int g = l / 4, t = l % 4;
      const uint32_t* a = o->a;
      A[g][2 * t] = bf16_lo(a[0]), A[g][2 * t + 1] = bf16_hi(a[0]);
      A[g + 8][2 * t] = bf16_lo(a[1]), A[g + 8][2 * t + 1] = bf16_hi(a[1]);
      A[g][2 * t + 8] = bf16_lo(a[2]), A[g][2 * t + 9] = bf16_hi(a[2]);
      A[g + 8][2 * t + 8] = bf16_lo(a[3]), A[g + 8][2 * t + 9] = bf16_hi(a[3]);
      B[2 * t][g] = bf16_lo(o->b[0]), B[2 * t + 1][g] = bf16_hi(o->b[0]);
      B[2 * t + 8][g] = bf16_lo(o->b[1]), B[2 * t + 9][g] = bf16_hi(o->b[1]);
      C[g][2 * t] = o->d[0], C[g][2 * t + 1] = o->d[1], C[g + 8][2 * t] = o->d[2], C[g + 8][2 * t + 1] = o->d[3];
    }
    float D[16][8];
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 8; ++j) {
        double s = C[i][j];
        for (int k = 0; k < 16; ++k) s += (double)A[i][k] * (double)B[k][j];
        D[i][j] = (float)s;
      }
    for (unsigned l = 0; l < 32; ++l) {
      float* d = lane_op(base, l)->d;
      const int g = l / 4, t = l % 4;
      d[0] = D[g][2 * t], d[1] = D[g][2 * t + 1], d[2] = D[g + 8][2 * t], d[3] = D[g + 8][2 * t + 1];
    }
  }

  // mma.sync.m16n8k8.row.col.f32.tf32.tf32.f32 (PTX ISA "Matrix Fragments for mma.m16n8k8", .tf32; CUTLASS
  // cute's SM80_16x8x8_F32TF32TF32F32_TN: A ((4,8),(2,2)):((16,1),(8,64)) over (M16,K8), B ((4,8),2):((8,1),32)
  // over (N8,K8)), g = lane / 4, t = lane % 4:
  //   A a0 = (g, t), a1 = (g+8, t), a2 = (g, t+4), a3 = (g+8, t+4); B b0 = (k = t, n = g), b1 = (k = t+4, n = g);
  //   C/D as m16n8k16. An operand register must hold a tf32 value (the low 13 bits of the f32 zero, as
  //   cvt.rna.tf32.f32 leaves them): the hardware ignores those bits, so a kernel that skips the conversion
  //   truncates where it meant to round; the emulator refuses it instead.
  void complete_mma_tf32(unsigned base) {
    float A[16][8], B[8][8];
    double C[16][8];
    const WarpOp* o0 = lane_op(base, 0);
    for (unsigned l = 0; l < 32; ++l) {
      const WarpOp* o = lane_op(base, l);
      const int g = l / 4, t = l % 4;
      for (int r = 0; r < 4; ++r)
        if ((r < 2 ? o->b[r] : 0u) & 0x1fffu || o->a[r] & 0x1fffu) {
          fail("mma.sync m16n8k8 .tf32 at " + site(o0->file, o0->line) + ": lane " + std::to_string(l) + " of " +
               where(fibers[base + l]) +
               " gives an operand that is not tf32 (low 13 bits set): round it with cvt.rna.tf32.f32 (to_tf32)");
          return;
        }
      auto f = [](uint32_t bits) {
        float v;
        memcpy(&v, &bits, 4);
        return v;
      };
      A[g][t] = f(o->a[0]), A[g + 8][t] = f(o->a[1]), A[g][t + 4] = f(o->a[2]), A[g + 8][t + 4] = f(o->a[3]);
      B[t][g] = f(o->b[0]), B[t + 4][g] = f(o->b[1]);
      C[g][2 * t] = o->d[0], C[g][2 * t + 1] = o->d[1], C[g + 8][2 * t] = o->d[2], C[g + 8][2 * t + 1] = o->d[3];
    }
    float D[16][8];
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 8; ++j) {
        double s = C[i][j];
        for (int k = 0; k < 8; ++k) s += (double)A[i][k] * (double)B[k][j];
        D[i][j] = (float)s;
      }
    for (unsigned l = 0; l < 32; ++l) {
      float* d = lane_op(base, l)->d;
      const int g = l / 4, t = l % 4;
      d[0] = D[g][2 * t], d[1] = D[g][2 * t + 1], d[2] = D[g + 8][2 * t], d[3] = D[g + 8][2 * t + 1];
    }
  }

  // ldmatrix.sync.m8n8.x{1,2,4}[.trans].shared.b16: lanes 8i..8i+7 give the row addresses of matrix i; lane l
  // receives, in register i, elements (row l/4, cols 2(l%4), +1) of matrix i, or with .trans (rows 2(l%4), +1,
  // col l/4), the lower index in the low half.
  void complete_ldmatrix(unsigned base) {
    const WarpOp* o0 = lane_op(base, 0);
    const int count = o0->sub;
    uint16_t M[4][8][8];
    for (int i = 0; i < count; ++i)
      for (int r = 0; r < 8; ++r) {
        const WarpOp* o = lane_op(base, 8 * i + r);
        const auto p = reinterpret_cast<uintptr_t>(o->addr);
        if (p % 16) {
          fail(std::string("ldmatrix at ") + o->file + ":" + std::to_string(o->line) + ": lane " +
               std::to_string(8 * i + r) + " gives a row address that is not 16-byte aligned");
          return;
        }
        race_access(o->addr, 16, false, base + 8 * i + r, o->file, o->line);
        std::memcpy(M[i][r], o->addr, 16);
      }
    for (unsigned l = 0; l < 32; ++l) {
      WarpOp* o = lane_op(base, l);
      const int g = l / 4, t = l % 4;
      for (int i = 0; i < count; ++i) {
        uint16_t lo, hi;
        if (o->trans)
          lo = M[i][2 * t][g], hi = M[i][2 * t + 1][g];
        else
          lo = M[i][g][2 * t], hi = M[i][g][2 * t + 1];
        o->regs[i] = (uint32_t)lo | ((uint32_t)hi << 16);
      }
    }
  }

  // The scheduler's stack, as ASan learns it when a fiber first runs.
  const void* sched_bottom = nullptr;
  size_t sched_size = 0;

  void yield(Fiber& f) {
    void* fake = nullptr;
    ASAN_START(&fake, sched_bottom, sched_size);
    gsure_emu_switch(&f.sp, sched_sp);
    ASAN_FINISH(fake, &sched_bottom, &sched_size);
  }

  // Runs the posting lane's collective to completion (the scheduler does the work once all lanes posted).
  void warp_collective(WarpOp& op) {
    Fiber& f = *tls_fiber;
    f.op = &op;
    f.file = op.file;
    f.line = op.line;
    f.state = State::Warp;
    // The collective can complete only once as many lanes as its mask names have posted.
    if (++warp_waiting[f.warp] >= (unsigned)__builtin_popcount(op.mask)) pending_check_warp = (int)f.warp;
    yield(f);
    f.op = nullptr;
  }
  // -------------------------------------------------------------------------------------------- mbarriers
  std::unordered_map<const void*, Mbarrier> mbars;  // this block's, by shared-memory address

  Mbarrier& mbar(const void* bar, const char* what, const char* file, int line) {
    auto it = mbars.find(bar);
    if (it == mbars.end())
      trap_here(std::string(what) + " on an mbarrier that was never initialised (mbarrier.init)", file, line);
    return it->second;
  }
  [[noreturn]] void trap_here(const std::string& what, const char* file, int line);

  // Bulk copies land late, as late as the hardware may: when the barrier they complete on has all its
  // arrivals and a thread waits for the phase. So data read without waiting is stale, and a phase completed
  // by arrivals alone (a missing expect_tx) leaves its copies in flight.
  void land(Mbarrier& m, const char* file, int line) {
    for (const BulkCopy& c : m.in_flight) {
      std::memcpy(c.dst, c.src ? c.src : c.staged.data(), c.bytes);
      if (race_on) race_async_write(c.dst, c.bytes);
      m.tx -= c.bytes;
    }
    m.in_flight.clear();
    if (m.tx < 0)
      trap_here("cp.async.bulk completed more bytes on an mbarrier than its phase expected (an expect_tx is "
                "missing or too small)", file, line);
  }
  // Completes the phase once its arrivals and transaction bytes are in, and wakes whoever waits for it.
  void try_complete(const void* bar, Mbarrier& m, const char* file, int line) {
    if (m.pending == 0 && m.tx > 0 && m.waiters > 0) land(m, file, line);
    if (m.pending != 0 || m.tx != 0) return;
    ++m.phase;
    m.pending = m.count;
    if (race_on) race_mbar_complete(bar);
    ids.clear();
    for (auto& g : fibers)
      if (g.state == State::Mbarrier && g.wait_bar == bar && (m.phase & 1) != g.wait_parity) ids.push_back(g.tid);
    order(ids);
    for (unsigned id : ids) {
      --m.waiters;
      if (race_on) race_mbar_acquire(bar, id);
      fibers[id].wait_bar = nullptr;
      if (tls_fiber && tls_fiber->tid == id) fibers[id].state = State::Ready;  // the running thread goes on
      else make_ready(id);
    }
  }

  // The block's dynamic shared memory, filled with junk (a kernel that reads what it never wrote sees it).
  // With AddressSanitizer it is a heap block of exactly the launch's size, so an access past it is caught;
  // otherwise it starts 16 bytes past a 1 KiB boundary: the GPU promises 16-byte alignment only, and a
  // kernel that needs more (a swizzled wgmma tile) must align its own pointers, here as there.
  void place_dynamic_smem(size_t bytes) {
    dynamic_smem_bytes = bytes;
    generic_writer.clear();
    if (bytes == 0) {
      dynamic_smem_ptr = nullptr;
      return;
    }
#if defined(__SANITIZE_ADDRESS__)
    dynamic_storage.assign(bytes, 0xcd);
    dynamic_smem_ptr = dynamic_storage.data();
#else
    dynamic_storage.assign(bytes + 2048, 0xcd);
    const uintptr_t p = reinterpret_cast<uintptr_t>(dynamic_storage.data());
    dynamic_smem_ptr = dynamic_storage.data() + ((1024 + 16 - p % 1024) % 1024);
#endif
  }

  int pending_check_warp = -1;
  bool race_on = false;
  bool pending_check_barrier = false;

  void run_block(const Launch& l, Dim bidx);
  static void fiber_main(void* arg);
  void finish_copies(Fiber& f, size_t keep);
};

void Worker::trap_here(const std::string& what, const char* file, int line) {
  gsure_emu_trap(what.c_str(), file, line);
  std::abort();  // gsure_emu_trap does not return
}

void Worker::finish_copies(Fiber& f, size_t keep) {
  while (f.committed.size() > keep) {
    for (const CpAsync& c : f.committed.front()) {
      race_access(c.dst, c.bytes, true, f.tid, "cp.async", 0);
      std::memcpy(c.dst, c.src, (size_t)c.src_bytes);
      std::memset(static_cast<char*>(c.dst) + c.src_bytes, 0, (size_t)(c.bytes - c.src_bytes));
      const auto dst = reinterpret_cast<uintptr_t>(c.dst), lo = reinterpret_cast<uintptr_t>(dynamic_smem_ptr);
      const size_t off = dst - lo;
      if (dynamic_smem_ptr && dst >= lo && off + c.bytes <= dynamic_smem_bytes) {
        if (generic_writer.empty()) generic_writer.assign(dynamic_smem_bytes, 0);
        std::fill_n(generic_writer.begin() + off, c.bytes, (uint16_t)(f.tid + 1));
        f.unfenced.emplace_back((size_t)off, (size_t)c.bytes);
      }
    }
    f.committed.erase(f.committed.begin());
  }
}

void Worker::fiber_main(void* arg) {
  Fiber& f = *static_cast<Fiber*>(arg);
  Worker& w = *tls_worker;
  ASAN_FINISH(nullptr, &w.sched_bottom, &w.sched_size);
  w.launch->entry->call(w.launch->params);
  if (!f.open.empty()) f.committed.push_back(std::move(f.open));  // copies still in flight land at exit
  f.open.clear();
  w.finish_copies(f, 0);
  f.state = State::Done;
  ++w.done;
  w.pending_check_barrier = w.at_barrier > 0;
  if (w.warp_waiting[f.warp] > 0) w.pending_check_warp = (int)f.warp;  // a lane it waits for may be this one
  ASAN_START(nullptr, w.sched_bottom, w.sched_size);  // this stack is done with
  gsure_emu_switch(&f.sp, w.sched_sp);
  std::abort();  // a finished fiber is never resumed
}

void fault_handler(int sig, siginfo_t* si, void* uc);

void Worker::run_block(const Launch& l, Dim bidx) {
  launch = &l;
  block_idx = bidx;
  const Dim bd = l.block;
  nthreads = bd.x * bd.y * bd.z;
  fibers.resize(nthreads);
  while (stacks.size() < nthreads) {
    stacks.emplace_back();
    stacks.back().allocate(stack_bytes());
  }
  place_dynamic_smem(l.dynamic_smem);
  at_barrier = done = 0;
  warp_waiting.assign((nthreads + 31) / 32, 0);
  epoch = 0;
  error.clear();
  ready.clear();
  mbars.clear();
  race_on = race_enabled();
  rng.seed(schedule().seed * 1000003u + bidx.x * 7919u + bidx.y * 104729u + bidx.z);
  wgmma.assign(warp_waiting.size(), WgmmaWarp{});
  wgmma_sites.assign((warp_waiting.size() + 3) / 4, {});
  race_block_begin(l, nthreads, dynamic_smem_ptr, dynamic_smem_bytes);
  ids.clear();
  for (unsigned t = 0; t < nthreads; ++t) {
    Fiber& f = fibers[t];
    f.tid = t;
    f.warp = t / 32;
    f.lane = t % 32;
    f.info.thread_idx = {t % bd.x, t / bd.x % bd.y, t / (bd.x * bd.y)};
    f.info.block_idx = bidx;
    f.info.block_dim = bd;
    f.info.grid_dim = l.grid;
    f.info.dynamic_smem = dynamic_smem_ptr;
    f.state = State::Ready;
    f.op = nullptr;
    f.committed.clear();
    f.open.clear();
    f.unfenced.clear();  // offsets into the previous block's dynamic shared memory
    f.sp = fiber_prepare(stacks[t], &Worker::fiber_main, &f);
    ids.push_back(t);
  }
  order(ids);
  for (unsigned id : ids) make_ready(id);

  in_block = 1;
  if (sigsetjmp(fault_jmp, 1) != 0) {
    in_block = 0;
    tls_fiber = nullptr;
    race_block_end();
    return;  // the fault handler or a trap wrote `error`
  }
  while (error.empty()) {
    if (ready.empty()) {
      if (done == nthreads) break;
      // Before calling it a deadlock, let every waiting warp say whether its lanes disagree.
      for (unsigned w = 0; w < warp_waiting.size() && error.empty(); ++w)
        if (warp_waiting[w]) check_warp(w);
      if (!error.empty() || !ready.empty()) continue;
      // Nobody can run: a deadlock. Name every distinct wait site and how many threads wait there.
      std::map<std::string, unsigned> sites;
      for (auto& f : fibers) {
        if (f.state == State::Done) continue;
        std::string kind = f.state == State::Barrier ? "__syncthreads"
                           : f.state == State::Mbarrier
                               ? "mbarrier wait (parity " + std::to_string(f.wait_parity) + ")"
                               : "warp collective";
        sites[kind + " at " + f.file + ":" + std::to_string(f.line)]++;
      }
      std::string msg = "deadlock in " + std::string(l.entry->name) + " block (" + std::to_string(bidx.x) + "," +
                        std::to_string(bidx.y) + "," + std::to_string(bidx.z) + "): " + std::to_string(done) + " of " +
                        std::to_string(nthreads) + " threads exited; the rest wait at:";
      for (auto& [s, n] : sites) msg += "\n    " + std::to_string(n) + " thread(s) at " + s;
      fail(msg);
      break;
    }
    const unsigned id = ready.front();
    ready.pop_front();
    Fiber& f = fibers[id];
    if (f.state != State::Ready) continue;
    tls_fiber = &f;
    if (race_on) race_switch_to(f.tid, f.warp);
    void* fake = nullptr;
    ASAN_START(&fake, stacks[id].base, stacks[id].size);
    gsure_emu_switch(&sched_sp, f.sp);
    ASAN_FINISH(fake, nullptr, nullptr);
    tls_fiber = nullptr;
    if (pending_check_warp >= 0) {
      const int w = pending_check_warp;
      pending_check_warp = -1;
      check_warp((unsigned)w);
    }
    if (pending_check_barrier) {
      pending_check_barrier = false;
      check_barrier();
    }
  }
  in_block = 0;
  for (unsigned w = 0; w < wgmma.size() && error.empty(); ++w)
    if (!wgmma[w].open.empty() || !wgmma[w].groups.empty()) {
      const WgmmaOp& op = wgmma[w].open.empty() ? wgmma[w].groups.back().back() : wgmma[w].open.back();
      fail("wgmma.mma_async at " + site(op.file, op.line) + " in " + where(fibers[w * 32]) +
           " was never waited for (a wgmma.wait_group 0 is missing before the accumulators are used)");
    }
  for (auto& [bar, m] : mbars)  // copies still in flight land when the block ends
    for (const BulkCopy& c : m.in_flight) std::memcpy(c.dst, c.src ? c.src : c.staged.data(), c.bytes);
  mbars.clear();
  const std::string race = race_block_end();
  if (!race.empty()) fail(race);
}

// Owns the thread's worker: created on the first block the thread runs, destroyed when the thread exits
// (before the C library and the sanitizers tear the thread down), so its alternate stack is gone by then.
struct WorkerOwner {
  ~WorkerOwner() {
    delete tls_worker;
    tls_worker = nullptr;
  }
};
thread_local WorkerOwner worker_owner;

Worker& this_worker() {
  if (!tls_worker) {
    (void)&worker_owner;  // odr-use: registers the owner's destructor for this thread
    tls_worker = new Worker();
  }
  return *tls_worker;
}

// A fault inside a kernel (a bad pointer, a stack overflow): report where and abandon the block.
void fault_handler(int sig, siginfo_t* si, void* uc) {
  Worker* w = tls_worker;
  if (!w || !w->in_block || !tls_fiber) {
    signal(sig, SIG_DFL);
    raise(sig);
    return;
  }
  const greg_t pc = static_cast<ucontext_t*>(uc)->uc_mcontext.gregs[REG_RIP];
  Dl_info info{};
  std::string where = "pc " + Worker::hex((unsigned)pc);
  if (dladdr(reinterpret_cast<void*>(pc), &info) && info.dli_fname) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "+0x%lx", (unsigned long)(pc - (greg_t)info.dli_fbase));
    where = std::string(info.dli_fname) + buf + " (addr2line -f -C -e " + info.dli_fname + " " + (buf + 1) +
            " names the .cu line)";
  }
  char addr[32];
  std::snprintf(addr, sizeof addr, "%p", si->si_addr);
  w->error = std::string(sig == SIGSEGV ? "invalid memory access" : sig == SIGBUS ? "misaligned access" : "fault") +
             " at address " + addr + " in " + w->where(*tls_fiber) + ", " + where;
  siglongjmp(w->fault_jmp, 1);
}

void install_fault_handlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa{};
    sa.sa_sigaction = fault_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
#if !defined(__SANITIZE_ADDRESS__)
    sigaction(SIGSEGV, &sa, nullptr);
    sigaction(SIGBUS, &sa, nullptr);
#endif
    sigaction(SIGFPE, &sa, nullptr);
    sigaction(SIGILL, &sa, nullptr);
  });
}

// ------------------------------------------------------------------------------------------- pool
struct Job {
  const Launch* launch;
  uint64_t nblocks;
  std::atomic<uint64_t> next{0};
  std::atomic<unsigned> active{0};
  std::mutex m;
  std::string error;
  std::condition_variable finished;
};

unsigned worker_count() {
  static const unsigned n = [] {
    const char* e = std::getenv("GSURE_EMU_WORKERS");
    unsigned v = e ? (unsigned)std::strtoul(e, nullptr, 10) : std::thread::hardware_concurrency();
    return std::max(1u, v);
  }();
  return n;
}

void work_on(Job& job) {
  Worker& w = this_worker();
  const Dim g = job.launch->grid;
  for (;;) {
    const uint64_t b = job.next.fetch_add(1);
    if (b >= job.nblocks) break;
    {
      std::lock_guard<std::mutex> lk(job.m);
      if (!job.error.empty()) break;
    }
    const Dim bidx{(unsigned)(b % g.x), (unsigned)(b / g.x % g.y), (unsigned)(b / ((uint64_t)g.x * g.y))};
    w.run_block(*job.launch, bidx);
    if (!w.error.empty()) {
      std::lock_guard<std::mutex> lk(job.m);
      if (job.error.empty()) job.error = w.error;
      job.next = job.nblocks;
    }
  }
}

struct Pool {
  std::mutex m;
  std::condition_variable wake;
  std::deque<Job*> jobs;
  std::vector<std::thread> threads;

  Pool() {
    for (unsigned i = 1; i < worker_count(); ++i)
      threads.emplace_back([this] {
        for (;;) {
          Job* job;
          {
            std::unique_lock<std::mutex> lk(m);
            wake.wait(lk, [&] { return !jobs.empty(); });
            job = jobs.front();
            if (job->next.load() >= job->nblocks) {
              jobs.pop_front();
              continue;
            }
            job->active++;
          }
          work_on(*job);
          {
            std::lock_guard<std::mutex> lk(job->m);
            if (--job->active == 0) job->finished.notify_all();
          }
        }
      });
    for (auto& t : threads) t.detach();
  }
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: workers outlive static destruction at exit
  return *p;
}

}  // namespace

std::string schedule_name() { return schedule().name; }

std::string run_launch(const Launch& launch) {
  install_fault_handlers();
  Job job;
  job.launch = &launch;
  job.nblocks = (uint64_t)launch.grid.x * launch.grid.y * launch.grid.z;
  const bool parallel = worker_count() > 1 && job.nblocks > 1 && !race_enabled();
  if (parallel) {
    std::lock_guard<std::mutex> lk(pool().m);
    pool().jobs.push_back(&job);
    pool().wake.notify_all();
  }
  work_on(job);
  if (parallel) {
    {
      std::lock_guard<std::mutex> lk(pool().m);
      auto& q = pool().jobs;
      q.erase(std::remove(q.begin(), q.end(), &job), q.end());
    }
    std::unique_lock<std::mutex> lk(job.m);
    job.finished.wait(lk, [&] { return job.active == 0; });
  }
  return job.error;
}

}  // namespace gsure_emu

// --------------------------------------------------------------------------------- kernel-side calls
using namespace gsure_emu;

extern "C" {

const ThreadInfo* gsure_emu_self() {
  static const ThreadInfo none{};
  return tls_fiber ? &tls_fiber->info : &none;
}

void gsure_emu_syncthreads(const char* file, int line) {
  Worker& w = *tls_worker;
  Fiber& f = *tls_fiber;
  f.state = State::Barrier;
  f.file = file;
  f.line = line;
  ++w.at_barrier;
  w.pending_check_barrier = true;
  w.yield(f);
}

void gsure_emu_syncwarp(unsigned mask, const char* file, int line) {
  WarpOp op{OpKind::SyncWarp, mask, file, line};
  tls_worker->warp_collective(op);
}

uint32_t gsure_emu_shfl(int kind, unsigned mask, uint32_t value, int arg, int width, const char* file, int line) {
  if (width < 1 || width > 32 || (width & (width - 1)))
    gsure_emu_trap("shuffle width must be a power of two in 1..32", file, line);
  WarpOp op{OpKind::Shfl, mask, file, line};
  op.sub = kind;
  op.value = value;
  op.arg = arg;
  op.width = width;
  tls_worker->warp_collective(op);
  return op.result;
}

unsigned gsure_emu_vote(int kind, unsigned mask, int pred, const char* file, int line) {
  WarpOp op{OpKind::Vote, mask, file, line};
  op.sub = kind;
  op.value = pred != 0;
  tls_worker->warp_collective(op);
  return op.result;
}

void gsure_emu_mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2], const char* file, int line) {
  WarpOp op{OpKind::Mma, 0xffffffffu, file, line};
  op.d = d;
  op.a = a;
  op.b = b;
  tls_worker->warp_collective(op);
}

void gsure_emu_mma_tf32_1688(float d[4], const uint32_t a[4], const uint32_t b[2], const char* file, int line) {
  WarpOp op{OpKind::MmaTf32, 0xffffffffu, file, line};
  op.d = d;
  op.a = a;
  op.b = b;
  tls_worker->warp_collective(op);
}

void gsure_emu_ldmatrix(uint32_t* regs, int count, int trans, const void* row_addr, const char* file, int line) {
  WarpOp op{OpKind::Ldmatrix, 0xffffffffu, file, line};
  op.sub = count;
  op.regs = regs;
  op.trans = trans;
  op.addr = row_addr;
  tls_worker->warp_collective(op);
}

void gsure_emu_cp_async(void* dst, const void* src, int bytes, int src_bytes, const char* file, int line) {
  if (reinterpret_cast<uintptr_t>(dst) % 16 || (src_bytes > 0 && reinterpret_cast<uintptr_t>(src) % 16))
    gsure_emu_trap("cp.async with an address that is not 16-byte aligned", file, line);
  if (src_bytes < 0 || src_bytes > bytes) gsure_emu_trap("cp.async src-size outside 0..16", file, line);
  tls_fiber->open.push_back({dst, src, bytes, src_bytes});
}

void gsure_emu_cp_async_commit() {
  Fiber& f = *tls_fiber;
  f.committed.push_back(std::move(f.open));
  f.open.clear();
}

void gsure_emu_cp_async_wait(int pending, const char*, int) { tls_worker->finish_copies(*tls_fiber, (size_t)pending); }

void gsure_emu_mbar_init(void* bar, unsigned count, const char* file, int line) {
  Worker& w = *tls_worker;
  if (reinterpret_cast<uintptr_t>(bar) % 8) w.trap_here("mbarrier.init at an address that is not 8-byte aligned", file, line);
  if (count == 0 || count >= (1u << 20)) w.trap_here("mbarrier.init with a count outside 1..2^20-1", file, line);
  Mbarrier& m = w.mbars[bar];
  if (m.waiters) w.trap_here("mbarrier.init of a barrier that threads wait on", file, line);
  m = Mbarrier{};
  m.count = m.pending = count;
}

uint64_t gsure_emu_mbar_arrive(void* bar, unsigned expect_tx, const char* file, int line) {
  Worker& w = *tls_worker;
  Mbarrier& m = w.mbar(bar, "mbarrier.arrive", file, line);
  const uint64_t token = m.phase;
  m.tx += expect_tx;
  --m.pending;
  if (w.race_on) race_mbar_arrive(bar, tls_fiber->tid);
  w.try_complete(bar, m, file, line);
  return token;
}

void gsure_emu_mbar_expect_tx(void* bar, unsigned bytes, const char* file, int line) {
  Worker& w = *tls_worker;
  w.mbar(bar, "mbarrier.expect_tx", file, line).tx += bytes;
}

void gsure_emu_mbar_wait(void* bar, unsigned parity, const char* file, int line) {
  Worker& w = *tls_worker;
  Fiber& f = *tls_fiber;
  Mbarrier& m = w.mbar(bar, "mbarrier.try_wait.parity", file, line);
  if ((m.phase & 1) != (parity & 1)) {  // that phase has completed
    if (w.race_on) race_mbar_acquire(bar, f.tid);
    return;
  }
  ++m.waiters;
  f.state = State::Mbarrier;
  f.wait_bar = bar;
  f.wait_parity = parity & 1;
  f.file = file;
  f.line = line;
  w.try_complete(bar, m, file, line);  // its copies may be all that is missing
  if (f.state == State::Mbarrier) w.yield(f);
}

void gsure_emu_bulk_copy_g2s(void* dst, const void* src, unsigned bytes, void* bar, const char* file, int line) {
  Worker& w = *tls_worker;
  if (bytes == 0 || bytes % 16)
    w.trap_here("cp.async.bulk of " + std::to_string(bytes) + " bytes (a positive multiple of 16)", file, line);
  if (reinterpret_cast<uintptr_t>(dst) % 16 || reinterpret_cast<uintptr_t>(src) % 16)
    w.trap_here("cp.async.bulk with an address that is not 16-byte aligned", file, line);
  Mbarrier& m = w.mbar(bar, "cp.async.bulk (its completion mbarrier)", file, line);
  m.in_flight.push_back({dst, src, bytes});
  w.try_complete(bar, m, file, line);  // a consumer may already wait for this phase (a producer-only warp)
}

void gsure_emu_fence_proxy_async(const char*, int) {
  Worker& w = *tls_worker;
  if (!w.generic_writer.empty()) w.fence_proxy_async(*tls_fiber);
  else tls_fiber->unfenced.clear();
}

void gsure_emu_wgmma_fence(const char* file, int line) {
  WarpOp op{OpKind::WgFence, 0xffffffffu, file, line};
  tls_worker->warp_collective(op);
}

void gsure_emu_wgmma_commit(const char* file, int line) {
  WarpOp op{OpKind::WgCommit, 0xffffffffu, file, line};
  tls_worker->warp_collective(op);
}

void gsure_emu_wgmma_wait(int pending, const char* file, int line) {
  WarpOp op{OpKind::WgWait, 0xffffffffu, file, line};
  op.sub = op.arg = pending;
  tls_worker->warp_collective(op);
}

void gsure_emu_wgmma_bf16(float* d, int n, uint64_t desc_a, uint64_t desc_b, int accumulate, int trans_a, int trans_b,
                          const char* file, int line) {
  if (n < 8 || n > 128 || n % 8) gsure_emu_trap("wgmma.mma_async bf16 with N outside 8..128 (multiple of 8)", file, line);
  WarpOp op{OpKind::WgMma, 0xffffffffu, file, line};
  op.sub = n;
  op.d = d;
  op.desc_a = desc_a;
  op.desc_b = desc_b;
  op.value = accumulate != 0;
  op.trans = (trans_a != 0) | (trans_b != 0) << 1;
  tls_worker->warp_collective(op);
}

// cp.async.bulk.tensor (tile mode), global -> shared, completing on `bar`: the box at `coords` of the map,
// out-of-bounds elements zero, laid densely (dimension 0 innermost) and swizzled as the map says (16-byte
// chunk index ^= shared address bits 7.. within each swizzle span, as wgmma reads it). The global reads
// happen at issue (one order the GPU may use); the bytes land with the barrier's phase, as bulk copies do.
void gsure_emu_tma_load(void* dst, const void* map, int rank, const int* coords, void* bar, const char* file,
                        int line) {
  Worker& w = *tls_worker;
  TensorMapEmu m;
  std::memcpy(&m, map, sizeof m);
  if (m.magic != TensorMapEmu::MAGIC)
    w.trap_here("cp.async.bulk.tensor with a tensor map cuTensorMapEncodeTiled did not write", file, line);
  if ((int)m.rank != rank)
    w.trap_here("cp.async.bulk.tensor." + std::to_string(rank) + "d on a tensor map of rank " + std::to_string(m.rank),
                file, line);
  if (reinterpret_cast<uintptr_t>(dst) % 128)
    w.trap_here("cp.async.bulk.tensor into shared memory that is not 128-byte aligned", file, line);
  uint64_t count = 1;
  for (int d = 0; d < rank; ++d) count *= m.box[d];
  BulkCopy c{dst, nullptr, (unsigned)(count * m.elem_bytes)};
  c.staged.assign(c.bytes, 0);
  const uintptr_t base = reinterpret_cast<uintptr_t>(dst);
  const uint32_t span_chunks = m.swizzle_bytes / 16;  // 0: no swizzle
  for (uint64_t e = 0; e < count; ++e) {
    uint64_t rest = e, src = m.address;
    bool in = true;
    for (int d = 0; d < rank; ++d) {
      const int64_t coord = (int64_t)coords[d] + (int64_t)(rest % m.box[d]);
      rest /= m.box[d];
      if (coord < 0 || coord >= (int64_t)m.dim[d]) in = false;
      else src += (uint64_t)coord * m.stride[d];
    }
    uint64_t off = e * m.elem_bytes;
    if (span_chunks) {
      const uintptr_t a = base + off;
      off = (a ^ (((a >> 7) & (span_chunks - 1)) << 4)) - base;
    }
    if (in) std::memcpy(c.staged.data() + off, reinterpret_cast<const void*>(src), m.elem_bytes);
  }
  Mbarrier& mb = w.mbar(bar, "cp.async.bulk.tensor (its completion mbarrier)", file, line);
  mb.in_flight.push_back(std::move(c));
  w.try_complete(bar, mb, file, line);
}

void gsure_emu_trap(const char* what, const char* file, int line) {
  Worker* w = tls_worker;
  if (!w || !tls_fiber) {
    std::fprintf(stderr, "gsure emulator: %s at %s:%d outside a kernel\n", what, file, line);
    std::abort();
  }
  w->fail(std::string(what) + " at " + file + ":" + std::to_string(line) + " in " + w->where(*tls_fiber));
  siglongjmp(w->fault_jmp, 1);
}

float gsure_emu_atomic_add_f32(float* addr, float v) {
  race_atomic(addr, 4);
  uint32_t old = __atomic_load_n(reinterpret_cast<uint32_t*>(addr), __ATOMIC_RELAXED), next;
  float o;
  do {
    std::memcpy(&o, &old, 4);
    const float n = o + v;
    std::memcpy(&next, &n, 4);
  } while (!__atomic_compare_exchange_n(reinterpret_cast<uint32_t*>(addr), &old, next, true, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED));
  return o;
}

}  // extern "C"
