// nvtx.cpp: a stand-in for libnvToolsExt.so.1 on the emulated device. cudarc loads it like the real one
// (emu/run puts it on LD_LIBRARY_PATH); instead of forwarding to a profiler it keeps each thread's range
// stack, so that a test can see which ranges gsure opens and that every pop matches a push.
//
//   GSURE_EMU_NVTX=FILE   append one line per event: "push <thread> <depth> <name>", "pop <thread> <depth>",
//                         "mark <thread> <name>", and "error <thread> pop with no open range"
//
// A thread that ends with open ranges is reported on stderr. The entry points are those of
// NVTX v2's C API that gsure reaches through cudarc (push/pop/mark, the ASCII and Ex forms).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

namespace {

// The leading fields of nvtxEventAttributes_v2 (NVTX's ABI), up to the message.
struct EventAttributes {
  uint16_t version, size;
  uint32_t category;
  int32_t color_type;
  uint32_t color;
  int32_t payload_type, reserved0;
  uint64_t payload;
  int32_t message_type;  // 1: ASCII
  const char* message;
};

struct Trace {
  std::mutex m;
  FILE* file = nullptr;
  int next_thread = 0;

  Trace() {
    if (const char* path = std::getenv("GSURE_EMU_NVTX")) {
      file = std::fopen(path, "a");
      if (!file) std::fprintf(stderr, "gsure emu nvtx: cannot open GSURE_EMU_NVTX=%s\n", path);
    }
  }
  ~Trace() {
    std::lock_guard<std::mutex> lk(m);
    if (file) std::fclose(file);
  }
  void line(const std::string& s) {
    if (!file) return;
    std::lock_guard<std::mutex> lk(m);
    std::fputs(s.c_str(), file);
    std::fputc('\n', file);
    std::fflush(file);
  }
};

Trace& trace() {
  static Trace t;
  return t;
}

struct ThreadStack {
  int id;
  std::vector<std::string> names;
  ThreadStack() {
    std::lock_guard<std::mutex> lk(trace().m);
    id = trace().next_thread++;
  }
  ~ThreadStack() {
    if (!names.empty())
      std::fprintf(stderr, "gsure emu nvtx: thread %d ended with %zu open range(s), innermost \"%s\"\n", id,
                   names.size(), names.back().c_str());
  }
};

ThreadStack& stack() {
  static thread_local ThreadStack s;
  return s;
}

int push(const char* name) {
  ThreadStack& s = stack();
  s.names.emplace_back(name ? name : "");
  trace().line("push " + std::to_string(s.id) + " " + std::to_string(s.names.size()) + " " + s.names.back());
  return (int)s.names.size() - 1;  // the level of the new range, from 0 (as NVTX returns it)
}

const char* ascii(const EventAttributes* a) { return a && a->message_type == 1 ? a->message : ""; }

}  // namespace

extern "C" {

int nvtxRangePushA(const char* message) { return push(message); }
int nvtxRangePushEx(const EventAttributes* attributes) { return push(ascii(attributes)); }

int nvtxRangePop() {
  ThreadStack& s = stack();
  if (s.names.empty()) {
    trace().line("error " + std::to_string(s.id) + " pop with no open range");
    std::fprintf(stderr, "gsure emu nvtx: thread %d popped a range with none open\n", s.id);
    return -1;
  }
  trace().line("pop " + std::to_string(s.id) + " " + std::to_string(s.names.size()));
  s.names.pop_back();
  return (int)s.names.size();
}

void nvtxMarkA(const char* message) {
  trace().line("mark " + std::to_string(stack().id) + " " + (message ? message : ""));
}
void nvtxMarkEx(const EventAttributes* attributes) { nvtxMarkA(ascii(attributes)); }

}  // extern "C"
