// block.cpp: the block scheduler (fibers, barriers, warp collectives, tensor-core instructions, cp.async,
// mbarriers and bulk async copies) and the worker pool (see block.h).
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
enum class OpKind : uint8_t { Shfl, Vote, SyncWarp, Mma, Ldmatrix };

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
  const void* src;
  unsigned bytes;
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
  std::vector<unsigned char> dynamic_smem;
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
      case OpKind::Ldmatrix: complete_ldmatrix(base); break;
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
      std::memcpy(c.dst, c.src, c.bytes);
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
    ids.clear();
    for (auto& g : fibers)
      if (g.state == State::Mbarrier && g.wait_bar == bar && (m.phase & 1) != g.wait_parity) ids.push_back(g.tid);
    order(ids);
    for (unsigned id : ids) {
      --m.waiters;
      fibers[id].wait_bar = nullptr;
      if (tls_fiber && tls_fiber->tid == id) fibers[id].state = State::Ready;  // the running thread goes on
      else make_ready(id);
    }
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
  dynamic_smem.assign(l.dynamic_smem, 0xcd);  // a kernel that reads dynamic shared memory it never wrote sees junk
  at_barrier = done = 0;
  warp_waiting.assign((nthreads + 31) / 32, 0);
  epoch = 0;
  error.clear();
  ready.clear();
  mbars.clear();
  race_on = race_enabled();
  rng.seed(schedule().seed * 1000003u + bidx.x * 7919u + bidx.y * 104729u + bidx.z);
  race_block_begin(l, nthreads, dynamic_smem.empty() ? nullptr : dynamic_smem.data(), dynamic_smem.size());
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
    f.info.dynamic_smem = dynamic_smem.empty() ? nullptr : dynamic_smem.data();
    f.state = State::Ready;
    f.op = nullptr;
    f.committed.clear();
    f.open.clear();
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
  for (auto& [bar, m] : mbars)  // copies still in flight land when the block ends
    for (const BulkCopy& c : m.in_flight) std::memcpy(c.dst, c.src, c.bytes);
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
  if ((m.phase & 1) != (parity & 1)) return;  // that phase has completed
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
