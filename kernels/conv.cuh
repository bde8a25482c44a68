// conv.cuh: the parameters every convolution kernel (conv.cu, conv_wgmma.cu) takes, and the forward's
// epilogue.
#pragma once
#include "common.cuh"

// Mirrors `ConvParams` in src/ops/conv/cuda.rs (#[repr(C)], 14 x i32).
struct ConvParams {
  int n, c, h, w;          // input x [n, c, h, w]
  int co, k, stride, pad;  // weights [co, c, k, k]
  int ho, wo;              // output y [n, co, ho, wo]
  int gm, gn, gk;          // GEMM sizes of this launch
  int k_split;             // reduction length per blockIdx.z, a multiple of the k tile (gk rounded up if 1 split)
};

// What the forward adds to each output before it stores it, in one pass with the GEMM (the U-Nets'
// residual blocks: bias, time embedding, skip connection, output scale). Mirrors `ConvEpilogue` in
// src/ops/conv/cuda.rs; a null pointer adds nothing, and the tensors have the output's dtype:
//   y[img, co, pix] = (((acc + bias[co]) + per_image[img, co]) + residual[img, co, pix]) * scale
// in f32, rounded once (the unfused ops rounded after each add); the CPU twin adds in the same order.
struct ConvEpilogue {
  const void* bias;       // [C_out]
  const void* per_image;  // [N, C_out]
  const void* residual;   // [N, C_out, H_out, W_out]
  float scale;
};

// The epilogue applied to output (img, co) at y-offset `at` = (img * C_out + co) * H_out * W_out + pix.
template <typename T>
__device__ __forceinline__ float epilogue(const ConvEpilogue& e, float v, int img_co, int co, int64_t at) {
  if (e.bias) v += to_float(static_cast<const T*>(e.bias)[co]);
  if (e.per_image) v += to_float(static_cast<const T*>(e.per_image)[img_co]);
  if (e.residual) v += to_float(static_cast<const T*>(e.residual)[at]);
  return v * e.scale;
}
