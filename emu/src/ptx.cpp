// ptx.cpp: a small scanner for the parts of PTX the fake driver checks (ptx.h). PTX as nvcc writes it:
//   .visible .entry NAME(
//       .param .u64 .ptr .align 1 NAME_param_0,
//       .param .align 8 .b8 NAME_param_1[40]
//   )
//   .maxntid 256, 1, 1
//   {
//       .shared .align 4 .b8 _ZZ...As[4224];
//       ...
//   }
#include "ptx.h"

#include <cstring>
#include <regex>

namespace gsure_emu {
namespace {

uint32_t scalar_size(const std::string& t) {
  // "u64", "f32", "b8", ... -> bytes
  if (t.size() < 2) return 0;
  const std::string bits = t.substr(1);
  if (bits == "8") return 1;
  if (bits == "16") return 2;
  if (bits == "32") return 4;
  if (bits == "64") return 8;
  return 0;
}

}  // namespace

namespace {
std::vector<PtxEntry> parse_text(const std::string& text);
}

std::vector<PtxEntry> parse_ptx_entries(const char* image, size_t len) {
  // A fatbin holds its PTX image as NUL-terminated text among binary data; its SASS part may carry a second
  // copy in a debug section with NUL bytes between the lines. Only NUL-free pieces that are whole PTX
  // modules (a .version directive and .entry points) count.
  std::vector<PtxEntry> out;
  size_t start = 0;
  while (start < len) {
    const char* nul = static_cast<const char*>(std::memchr(image + start, 0, len - start));
    const size_t end = nul ? (size_t)(nul - image) : len;
    const std::string piece(image + start, end - start);
    if (piece.find(".version") != std::string::npos && piece.find(".entry ") != std::string::npos) {
      for (auto& e : parse_text(piece)) out.push_back(std::move(e));
    }
    start = end + 1;
  }
  return out;
}

namespace {
std::vector<PtxEntry> parse_text(const std::string& text) {
  std::vector<PtxEntry> out;
  size_t pos = 0;
  while ((pos = text.find(".entry ", pos)) != std::string::npos) {
    pos += 7;
    const size_t open = text.find('(', pos);
    if (open == std::string::npos) break;
    PtxEntry e;
    e.name = text.substr(pos, open - pos);
    while (!e.name.empty() && (e.name.back() == ' ' || e.name.back() == '\t')) e.name.pop_back();
    const size_t close = text.find(')', open);
    if (close == std::string::npos) break;
    const std::string plist = text.substr(open + 1, close - open - 1);
    static const std::regex param(R"(\.param\s+((?:\.\w+\s+(?:\d+\s+)?)*)(\w+)(?:\[(\d+)\])?)");
    for (auto it = std::sregex_iterator(plist.begin(), plist.end(), param); it != std::sregex_iterator(); ++it) {
      const std::string quals = (*it)[1];
      PtxParam p{0};
      // `.b8 name[N]` is an N-byte aggregate; otherwise the last type qualifier (.u64, .f32, ...) sizes it.
      std::string type;
      static const std::regex q(R"(\.(\w+))");
      for (auto qi = std::sregex_iterator(quals.begin(), quals.end(), q); qi != std::sregex_iterator(); ++qi) {
        const std::string t = (*qi)[1];
        if (t != "ptr" && t != "align" && t != "global" && t != "shared" && t != "const" && t != "local") type = t;
      }
      if ((*it)[3].matched)
        p.size = (uint32_t)std::stoul((*it)[3]) * (scalar_size(type) ? scalar_size(type) : 1);
      else
        p.size = scalar_size(type);
      e.params.push_back(p);
    }
    // Directives between the parameter list and the body.
    const size_t body = text.find('{', close);
    if (body == std::string::npos) break;
    const std::string directives = text.substr(close + 1, body - close - 1);
    static const std::regex ntid(R"(\.maxntid\s+(\d+)(?:\s*,\s*(\d+))?(?:\s*,\s*(\d+))?)");
    std::smatch m;
    if (std::regex_search(directives, m, ntid)) {
      uint32_t n = (uint32_t)std::stoul(m[1]);
      if (m[2].matched) n *= (uint32_t)std::stoul(m[2]);
      if (m[3].matched) n *= (uint32_t)std::stoul(m[3]);
      e.max_threads = n;
    }
    // The body ends at the first closing brace at the start of a line.
    size_t end = text.find("\n}", body);
    if (end == std::string::npos) end = text.size();
    const std::string b = text.substr(body, end - body);
    static const std::regex shared(R"(\n\s*\.shared\s+(?:\.align\s+\d+\s+)?\.(\w+)\s+\w+\[(\d+)\])");
    for (auto it = std::sregex_iterator(b.begin(), b.end(), shared); it != std::sregex_iterator(); ++it) {
      const uint32_t unit = scalar_size((*it)[1]);
      e.static_smem += (uint32_t)std::stoul((*it)[2]) * (unit ? unit : 1);
    }
    out.push_back(std::move(e));
    pos = end;
  }
  return out;
}
}  // namespace

}  // namespace gsure_emu
