// conv.cuh: the parameters every convolution kernel (conv.cu, conv_wgmma.cu) takes.
#pragma once

// Mirrors `ConvParams` in src/ops/conv/cuda.rs (#[repr(C)], 14 x i32).
struct ConvParams {
  int n, c, h, w;          // input x [n, c, h, w]
  int co, k, stride, pad;  // weights [co, c, k, k]
  int ho, wo;              // output y [n, co, ho, wo]
  int gm, gn, gk;          // GEMM sizes of this launch
  int k_split;             // reduction length per blockIdx.z, a multiple of the k tile (gk rounded up if 1 split)
};
