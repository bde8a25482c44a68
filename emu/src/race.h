// race.h: the shared-memory race detector (race.cpp). Enabled in the `race` build of the emulator, whose
// kernel modules are compiled with -fsanitize=thread: that instrumentation calls __tsan_read*/__tsan_write*
// before every memory access, and race.cpp implements those hooks itself (no ThreadSanitizer runtime is
// linked). Every byte of the running block's shared memory (its static __shared__ arrays and its dynamic
// buffer) has a shadow: the last writer and the last reader(s), each with the barrier interval (block epoch)
// and warp-sync interval it happened in. Two accesses to a byte by different threads, at least one a write,
// in the same barrier interval and not separated by a __syncwarp of their warp, are a race; it is reported
// with both source lines, as compute-sanitizer's racecheck does, and fails the launch.
#pragma once
#include <cstddef>
#include <string>

namespace gsure_emu {
struct Launch;

bool race_enabled();
void race_block_begin(const Launch& launch, unsigned nthreads, void* dynamic_smem, size_t dynamic_bytes);
// The block's race report ("" if none); clears the shadow.
std::string race_block_end();
void race_switch_to(unsigned tid, unsigned warp);
void race_barrier();
void race_warp_sync(unsigned warp, unsigned mask);
void race_access(const void* addr, size_t bytes, bool write, unsigned tid, const char* file, int line);
void race_atomic(const void* addr, size_t bytes);
// mbarrier ordering: a thread's arrival releases its earlier accesses into the barrier's phase, the
// phase's completion publishes them, and a thread whose wait returns acquires them.
void race_mbar_arrive(const void* bar, unsigned tid);
void race_mbar_complete(const void* bar);
void race_mbar_acquire(const void* bar, unsigned tid);
// A bulk or tensor copy landed: its bytes start afresh (the async proxy's writes are ordered by the barrier
// its consumers wait on; refilling a stage still being read shows as corrupted data instead).
void race_async_write(const void* addr, size_t bytes);
}  // namespace gsure_emu
