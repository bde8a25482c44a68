// ptx.h: what the fake driver reads from a PTX module (or from the PTX text inside a fatbin): each .entry's
// name, parameter sizes, launch bounds and static shared memory, so that a launch can be
// checked as the real driver and hardware would check it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace gsure_emu {

struct PtxParam {
  uint32_t size;  // pointer-ness is not here: nvcc 13 writes no `.ptr`; it comes from the C++ signature
};

struct PtxEntry {
  std::string name;
  std::vector<PtxParam> params;
  uint32_t max_threads = 0;    // .maxntid x*y*z (from __launch_bounds__), 0 = none
  uint32_t static_smem = 0;    // bytes of .shared declared in the entry's body
};

// Every .entry in the image; images without PTX text give an empty list.
std::vector<PtxEntry> parse_ptx_entries(const char* image, size_t len);

}  // namespace gsure_emu
