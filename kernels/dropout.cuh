// dropout.cuh: the counter-based dropout mask, shared by dropout.cu and the convolutions' input prologue
// (conv.cuh), so a mask applied as a convolution gathers its input drops exactly the elements dropout.cu
// would.
// Element i is kept iff (mix64(key + (i + 1) * GOLDEN) >> 40) >= threshold, where key = mix64(seed + GOLDEN)
// and threshold = ceil(p * 2^24) are computed on the host (the i-th output of a splitmix64 stream seeded with
// key). A step replayed from a CUDA graph cannot pass a new key by value: it passes `step_seed`, the device
// address of the step's seed, and the layer's key is derived here as the host derives it for a host seed:
// key = mix64(layer_seed + GOLDEN) with layer_seed = mix64(step_seed ^ layer * GOLDEN) (nn::layer_seed).
// The CPU twin (src/ops/dropout/cpu.rs) evaluates the same integer expression, so both backends drop
// exactly the same elements; the comparison is on integers, so no float rounding of p can split them.
#pragma once
#include "common.cuh"

#define GOLDEN 0x9E3779B97F4A7C15ull

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The key the host would pass: by value, or derived from the step seed in device memory.
__device__ __forceinline__ uint64_t dropout_key(uint64_t key, const uint64_t* step_seed, uint64_t layer) {
  if (step_seed == nullptr) return key;
  return mix64(mix64(*step_seed ^ layer * GOLDEN) + GOLDEN);
}

__device__ __forceinline__ bool kept(uint64_t key, int64_t i, uint32_t threshold) {
  return (uint32_t)(mix64(key + (uint64_t)(i + 1) * GOLDEN) >> 40) >= threshold;
}

// One mask as a kernel argument. Mirrors `DropoutArg` in src/ops/dropout/cuda.rs (#[repr(C)], 24 bytes of
// u64 then a u32 and an f32). threshold 0 keeps every element: with scale 1 (p = 0) that is no dropout, so a
// zeroed argument is the identity.
struct DropoutMask {
  uint64_t key;               // the stream key for a host seed (ignored when step_seed is set)
  const uint64_t* step_seed;  // the step's seed in device memory, or null
  uint64_t layer;             // the layer the key is derived for from step_seed
  uint32_t threshold;         // keep iff bits24 >= threshold
  float scale;                // 1 / (1 - p), applied to kept elements

  __device__ __forceinline__ uint64_t resolved_key() const { return dropout_key(key, step_seed, layer); }
  // v as the mask leaves element i, given the resolved key.
  __device__ __forceinline__ float apply(uint64_t k, int64_t i, float v) const {
    return kept(k, i, threshold) ? v * scale : 0.f;
  }
};
