// tensormap.h: the emulator's contents of a CUtensorMap (128 opaque bytes on the GPU). The fake driver's
// cuTensorMapEncodeTiled checks its arguments as the driver documents and writes this; a kernel receives
// the map by value (a __grid_constant__ parameter) and cp.async.bulk.tensor reads it (block.cpp).
#pragma once
#include <cstdint>

namespace gsure_emu {
struct TensorMapEmu {
  static constexpr uint64_t MAGIC = 0x414d54455255534full;  // "OSURETMA": a map this driver encoded
  uint64_t magic;
  uint64_t address;    // the tensor's first element (device = host memory)
  uint64_t dim[5];     // elements per dimension, dimension 0 innermost
  uint64_t stride[5];  // bytes between consecutive indices of each dimension (stride[0] = the element size)
  uint32_t box[5];     // elements the box spans per dimension
  uint32_t rank, elem_bytes, swizzle_bytes;  // swizzle_bytes: 0 (none), 32, 64 or 128
};
static_assert(sizeof(TensorMapEmu) <= 128, "a CUtensorMap has 128 bytes");
}  // namespace gsure_emu
