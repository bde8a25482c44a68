// conv.cuh: the parameters every convolution kernel (conv.cu, conv_wgmma.cu) takes, and the forward's
// epilogue.
#pragma once
#include "common.cuh"
#include "dropout.cuh"

// Mirrors `ConvParams` in src/ops/conv/cuda.rs (#[repr(C)], 14 x i32, a pointer, an i32, a DropoutMask).
struct ConvParams {
  int n, c, h, w;          // input x [n, c, h, w]
  int co, k, stride, pad;  // weights [co, c, k, k]
  int ho, wo;              // output y [n, co, ho, wo]
  int gm, gn, gk;          // GEMM sizes of this launch
  int k_split;             // reduction length per blockIdx.z, a multiple of the k tile (gk rounded up if 1 split)
  // The input's prologue (forward and weight gradient, null elsewhere): the convolution reads
  // a = act(x * scale + shift) with (scale, shift) = affine[img, c] (f32 [N, C, 2], norm.cu's
  // group_norm_scale_shift) and act SiLU if `silu`, else the identity: a group norm (+ SiLU) applied as the
  // operand is gathered, so its output is never stored. The padding stays 0 (it pads a, not x).
  const float* affine;
  int silu;
  // Then a dropout mask on a (a zero mask, threshold 0, keeps everything): element i of the activation, at
  // the flat NCHW index i = ((img * C + c) * H + ih) * W + iw, kept and scaled as dropout.cu would: the
  // U-Nets' GroupNorm -> SiLU -> dropout -> conv read as one operand.
  DropoutMask drop;
};

// The prologue at image-channel `nc` = img * C + c: act(x * scale + shift), or x without an affine map.
__device__ __forceinline__ float prologue(const float* affine, int silu, int64_t nc, float x) {
  if (!affine) return x;
  const float pre = x * affine[2 * nc] + affine[2 * nc + 1];
  return silu ? pre * (1.f / (1.f + expf(-pre))) : pre;  // norm.cu's SiLU
}

// The key of p's dropout mask, resolved once per thread (a graph-replayed step reads it from device memory).
__device__ __forceinline__ uint64_t conv_drop_key(const ConvParams& p) {
  return p.drop.threshold ? p.drop.resolved_key() : 0;
}

// x as the convolution reads it: the prologue of `p` at image `img`, channel `c`, flat input index `at`,
// with `drop_key` = conv_drop_key(p).
__device__ __forceinline__ float conv_input(const ConvParams& p, uint64_t drop_key, int img, int c, int64_t at,
                                            float x) {
  const float a = prologue(p.affine, p.silu, (int64_t)img * p.c + c, x);
  return p.drop.threshold ? p.drop.apply(drop_key, at, a) : a;
}

// What the forward adds to each output before it stores it, in one pass with the GEMM (the U-Nets'
// residual blocks: bias, time embedding, skip connection, output scale). Mirrors `ConvEpilogue` in
// src/ops/conv/cuda.rs; a null pointer adds nothing, and the tensors have the output's dtype:
//   y[img, co, pix] = (((acc + bias[co]) + per_image[img, co]) + residual[img, co, pix]) * scale
// in f32, rounded once (the unfused ops rounded after each add); the CPU twin adds in the same order.
struct ConvEpilogue {
  const void* bias;       // [C_out]
  const void* per_image;  // [N, C_out]
  const void* residual;   // [N, C_out, H_out, W_out]
  float scale = 1.f;      // so that `ConvEpilogue{}` (the other directions' argument) is the identity
};

// The epilogue applied to output (img, co) at y-offset `at` = (img * C_out + co) * H_out * W_out + pix.
template <typename T>
__device__ __forceinline__ float epilogue(const ConvEpilogue& e, float v, int img_co, int co, int64_t at) {
  if (e.bias) v += to_float(static_cast<const T*>(e.bias)[co]);
  if (e.per_image) v += to_float(static_cast<const T*>(e.per_image)[img_co]);
  if (e.residual) v += to_float(static_cast<const T*>(e.residual)[at]);
  return v * e.scale;
}

// The input gradient's sub-pixel classes. dx[ih] gathers dy[oh] over the taps with ih + pad - kh = s*oh, so
// the input pixels with ih % s = py are reached only by the taps kh = kh0 + s*a with kh0 = (py + pad) % s, and
// then oh = i + oy - a for ih = s*i + py, with oy = (py + pad - kh0) / s exact: no tap multiplies a zero and
// no index is divided per element. Class z (blockIdx.z in the dgrad kernels) is (py, px) = (z / s, z % s);
// the launch's gm is the largest class's (class 0, ceil(H/s) x ceil(W/s) pixels) and its gk a bound on every
// class's (C_out * ceil(K/s)^2); dgrad's entry points narrow both to the block's own class (`narrowed`).
// conv.cu's and conv_wgmma.cu's input gradients share it.
struct SubPixel {
  int py, px, hc, wc, kh0, kw0, nkh, nkw, oy, ox;
  __device__ explicit SubPixel(const ConvParams& p) : SubPixel(p, blockIdx.z) {}
  __device__ SubPixel(const ConvParams& p, int z) {
    const int s = p.stride;
    py = z / s;
    px = z - py * s;
    hc = p.h > py ? (p.h - py + s - 1) / s : 0;
    wc = p.w > px ? (p.w - px + s - 1) / s : 0;
    kh0 = (py + p.pad) % s;
    kw0 = (px + p.pad) % s;
    nkh = p.k > kh0 ? (p.k - kh0 + s - 1) / s : 0;  // 0: no tap reaches the class (1x1 stride 2), dx = 0
    nkw = p.k > kw0 ? (p.k - kw0 + s - 1) / s : 0;
    oy = (py + p.pad - kh0) / s;
    ox = (px + p.pad - kw0) / s;
  }
  // p with gm and gk of this class.
  __device__ ConvParams narrowed(ConvParams p) const {
    p.gm = p.n * hc * wc;
    p.gk = p.co * nkh * nkw;
    return p;
  }
};
