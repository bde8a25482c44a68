// norm.cu: group normalisation with an optional fused SiLU, forward and backward, f32 and bf16 storage
// (all arithmetic in f32).
// defines: group_norm_fwd_{f32,bf16}, group_norm_scale_shift_{f32,bf16}, group_norm_bwd_{f32,bf16},
//          group_norm_affine_grad_{f32,bf16}.
//
// x is [N, C, S] (S = flattened spatial size); group g of example n is the contiguous run of
// M = (C / G) * S elements starting at (n * C + g * C/G) * S, so one block per (n, g) reads a dense slab.
//   x̂ = (x - mean) * rstd,  pre = x̂ * gamma[c] + beta[c],  y = silu ? pre * sigmoid(pre) : pre
// stats is f32 [N, G, 2] = (mean, rstd), written by the forward and read by the backward, which recomputes
// x̂ and pre from x instead of storing them (one f32 pair per group instead of a tensor per activation).
#include "common.cuh"

struct GnParams {
  const void* x;
  const void* gamma;
  const void* beta;
  void* y;        // fwd: y; bwd: dx
  float* stats;   // [N, G, 2]
  const void* dy; // bwd only
  float* partial; // bwd only: [2, N, C] per-(n, c) sums of dpre * x̂ and of dpre
  float* affine;  // scale_shift only: [N, C, 2] = (rstd * gamma[c], beta[c] - mean * rstd * gamma[c])
  int32_t n, c, groups;
  int64_t spatial;
  float eps;
  int32_t silu;
};

__device__ __forceinline__ float sigmoidf(float v) { return 1.f / (1.f + expf(-v)); }

// The element loops of both directions move V = 16 / sizeof(T) elements at a time (one 16-byte load or store)
// when a channel's S elements are a whole number of vectors and the group's slabs are 16-byte aligned, else
// one; a vector's channel is one 32-bit division (the launcher keeps a group's M below 2^31).
// Where block (n, g)'s slab starts: (n * C + g * C/G) * S.
__device__ __forceinline__ int64_t group_base(const GnParams& p) {
  const int64_t n = blockIdx.x / p.groups, g = blockIdx.x % p.groups;
  return (n * p.c + g * (p.c / p.groups)) * p.spatial;
}

template <typename T>
__device__ __forceinline__ bool gn_vectors(const void* a, const void* b, const void* c, int64_t spatial) {
  constexpr int V = 16 / sizeof(T);
  const uintptr_t any = reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(b) | reinterpret_cast<uintptr_t>(c);
  return spatial % V == 0 && any % 16 == 0;
}

template <typename T, int V>
__device__ __forceinline__ void load_v(T (&v)[V], const T* src, int iv) {
  if constexpr (V > 1) *reinterpret_cast<uint4*>(v) = reinterpret_cast<const uint4*>(src)[iv];
  else v[0] = src[iv];
}
template <typename T, int V>
__device__ __forceinline__ void store_v(T* dst, int iv, const T (&v)[V]) {
  if constexpr (V > 1) reinterpret_cast<uint4*>(dst)[iv] = *reinterpret_cast<const uint4*>(v);
  else dst[iv] = v[0];
}

// Block (n, g)'s statistics, two-pass (the mean, then the mean of squared deviations, so large means do not
// cancel), written to stats[n, g] by thread 0; every thread gets (mean, rstd). x is the group's slab of m
// elements.
template <typename T, int V>
__device__ float2 gn_stats(const GnParams& p, const T* x, int m) {
  __shared__ float scratch[32];
  const int nv = m / V;
  const float inv_m = 1.f / (float)m;
  float s = 0.f;
  for (int iv = threadIdx.x; iv < nv; iv += blockDim.x) {
    __align__(16) T v[V];
    load_v(v, x, iv);
#pragma unroll
    for (int e = 0; e < V; ++e) s += to_float(v[e]);
  }
  const float mean = block_sum(s, scratch) * inv_m;
  float var_sum = 0.f;
  for (int iv = threadIdx.x; iv < nv; iv += blockDim.x) {
    __align__(16) T v[V];
    load_v(v, x, iv);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const float d = to_float(v[e]) - mean;
      var_sum += d * d;
    }
  }
  const float var = block_sum(var_sum, scratch) * inv_m;  // biased, as PyTorch's GroupNorm
  const float rstd = rsqrtf(var + p.eps);
  if (threadIdx.x == 0) {
    p.stats[2 * blockIdx.x] = mean;
    p.stats[2 * blockIdx.x + 1] = rstd;
  }
  return make_float2(mean, rstd);
}

// One block per (n, g): blockIdx.x = n * G + g. The statistics, then one pass that normalises, applies the
// affine map and the optional SiLU. The group's slab is re-read three times; it is small (M elements) and
// stays in L1/L2.
template <typename T, int V>
__device__ void gn_fwd(const GnParams p) {
  const T* gamma = static_cast<const T*>(p.gamma);
  const T* beta = static_cast<const T*>(p.beta);
  const int cpg = p.c / p.groups;
  const int64_t ng = blockIdx.x, n = ng / p.groups, g = ng % p.groups;
  const int m = cpg * (int)p.spatial, nv = m / V, sv = (int)p.spatial / V;
  const int64_t base = (n * p.c + g * cpg) * p.spatial;
  const T* x = static_cast<const T*>(p.x) + base;
  T* y = static_cast<T*>(p.y) + base;
  const float2 st = gn_stats<T, V>(p, x, m);
  const float mean = st.x, rstd = st.y;
  for (int iv = threadIdx.x; iv < nv; iv += blockDim.x) {
    const int c = g * cpg + iv / sv;
    const float ga = to_float(gamma[c]), be = to_float(beta[c]);
    __align__(16) T v[V];
    load_v(v, x, iv);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const float pre = (to_float(v[e]) - mean) * rstd * ga + be;
      v[e] = from_float<T>(p.silu ? pre * sigmoidf(pre) : pre);
    }
    store_v(y, iv, v);
  }
}

// The statistics and, per channel of the group, the affine map they make with gamma and beta: what a
// convolution that normalises its input as it reads it needs (kernels/conv.cuh ConvParams::affine):
//   affine[n, c] = (scale, shift) = (rstd * gamma[c], beta[c] - mean * rstd * gamma[c]), pre = x * scale + shift
// (the CPU twin's form of the normalisation, src/ops/norm/cpu.rs). One block per (n, g).
template <typename T, int V>
__device__ void gn_scale_shift(const GnParams p) {
  const int cpg = p.c / p.groups;
  const int64_t ng = blockIdx.x, n = ng / p.groups, g = ng % p.groups;
  const int64_t base = (n * p.c + g * cpg) * p.spatial;
  const float2 st = gn_stats<T, V>(p, static_cast<const T*>(p.x) + base, cpg * (int)p.spatial);
  for (int cl = threadIdx.x; cl < cpg; cl += blockDim.x) {
    const int c = g * cpg + cl;
    const float scale = st.y * to_float(static_cast<const T*>(p.gamma)[c]);
    p.affine[2 * (n * p.c + c)] = scale;
    p.affine[2 * (n * p.c + c) + 1] = to_float(static_cast<const T*>(p.beta)[c]) - st.x * scale;
  }
}

// Backward, one block per (n, g). With dpre = dy * silu'(pre) (or dy) and dx̂ = dpre * gamma[c]:
//   dx = rstd * (dx̂ - mean_g(dx̂) - x̂ * mean_g(dx̂ * x̂))
// and mean_g(dx̂ * x̂) = sum_c gamma[c] * P1[c] / M, mean_g(dx̂) = sum_c gamma[c] * P2[c] / M, where
// P1[c] = sum_s dpre * x̂ and P2[c] = sum_s dpre are exactly the per-(n, c) partials of dgamma and dbeta.
// So pass 1 computes P1, P2 per channel (written to `partial` for group_norm_affine_grad), the block combines
// them into the two group sums, and pass 2 writes dx.
// Pass 1 splits each channel's S elements into `segs` segments so that all warps have work even when a group
// has fewer channels than the block has warps; warp w takes work items w, w + warps, ... (item = channel *
// segs + segment) and writes its warp sum to its own shared slot, and the slots of a channel are added in a
// fixed order afterwards: the result is deterministic (no atomics).
// Dynamic shared memory: 2 * cpg * segs floats.
template <typename T, int V>
__device__ void gn_bwd(const GnParams p) {
  DYNAMIC_SHARED(float, slots);  // [2][cpg * segs]
  __shared__ float scratch[32];
  const T* x = static_cast<const T*>(p.x);
  const T* gamma = static_cast<const T*>(p.gamma);
  const T* beta = static_cast<const T*>(p.beta);
  const T* dy = static_cast<const T*>(p.dy);
  T* dx = static_cast<T*>(p.y);
  const int cpg = p.c / p.groups;
  const int64_t ng = blockIdx.x, n = ng / p.groups, g = ng % p.groups;
  const int64_t m = (int64_t)cpg * p.spatial;
  const int64_t base = (n * p.c + g * cpg) * p.spatial;
  const float mean = p.stats[2 * ng], rstd = p.stats[2 * ng + 1];
  const int warps = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  const int segs = (cpg >= warps) ? 1 : (warps + cpg - 1) / cpg;
  const int64_t seg_len = (p.spatial + segs - 1) / segs;
  const int items = cpg * segs;

  for (int item = warp; item < items; item += warps) {
    const int cl = item / segs, sg = item % segs;
    const int c = g * cpg + cl;
    const float ga = to_float(gamma[c]), be = to_float(beta[c]);
    const int64_t s0 = sg * seg_len, s1 = (s0 + seg_len < p.spatial) ? s0 + seg_len : p.spatial;
    float p1 = 0.f, p2 = 0.f;
    for (int64_t s = s0 + lane; s < s1; s += 32) {
      const int64_t idx = base + (int64_t)cl * p.spatial + s;
      const float xh = (to_float(x[idx]) - mean) * rstd;
      float dpre = to_float(dy[idx]);
      if (p.silu) {
        // d/dpre [pre * sigmoid(pre)] = sig * (1 + pre * (1 - sig))
        const float pre = xh * ga + be, sig = sigmoidf(pre);
        dpre *= sig * (1.f + pre * (1.f - sig));
      }
      p1 += dpre * xh;
      p2 += dpre;
    }
    p1 = warp_sum(p1);
    p2 = warp_sum(p2);
    if (lane == 0) {
      slots[item] = p1;
      slots[items + item] = p2;
    }
  }
  __syncthreads();
  // Per channel: fold the segments in order, publish the (n, c) partials, weight by gamma for the group sums.
  float a = 0.f, b = 0.f;
  for (int cl = threadIdx.x; cl < cpg; cl += blockDim.x) {
    float p1 = 0.f, p2 = 0.f;
    for (int sg = 0; sg < segs; ++sg) {
      p1 += slots[cl * segs + sg];
      p2 += slots[items + cl * segs + sg];
    }
    const int c = g * cpg + cl;
    const int64_t nc = n * p.c + c;
    p.partial[nc] = p1;
    p.partial[(int64_t)p.n * p.c + nc] = p2;
    const float ga = to_float(gamma[c]);
    a += ga * p1;
    b += ga * p2;
  }
  const float inv_m = 1.f / (float)m;
  const float mean_dxh_xh = block_sum(a, scratch) * inv_m;
  const float mean_dxh = block_sum(b, scratch) * inv_m;

  const int nv = (int)m / V, sv = (int)p.spatial / V;
  for (int iv = threadIdx.x; iv < nv; iv += blockDim.x) {
    const int c = g * cpg + iv / sv;
    const float ga = to_float(gamma[c]), be = to_float(beta[c]);
    __align__(16) T xv[V], gv[V];
    load_v(xv, x + base, iv);
    load_v(gv, dy + base, iv);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const float xh = (to_float(xv[e]) - mean) * rstd;
      float dpre = to_float(gv[e]);
      if (p.silu) {
        const float pre = xh * ga + be, sig = sigmoidf(pre);
        dpre *= sig * (1.f + pre * (1.f - sig));
      }
      xv[e] = from_float<T>(rstd * (dpre * ga - mean_dxh - xh * mean_dxh_xh));
    }
    store_v(dx + base, iv, xv);
  }
}

// dgamma[c] = sum_n P1[n, c], dbeta[c] = sum_n P2[n, c]: one thread per channel adds its column in order of
// n (deterministic; consecutive threads read consecutive channels, so the loads coalesce).
template <typename T>
__device__ void gn_affine_grad(const float* partial, T* dgamma, T* dbeta, int n, int c) {
  const int ch = blockIdx.x * blockDim.x + threadIdx.x;
  if (ch >= c) return;
  float s1 = 0.f, s2 = 0.f;
  for (int i = 0; i < n; ++i) {
    s1 += partial[(int64_t)i * c + ch];
    s2 += partial[(int64_t)(n + i) * c + ch];
  }
  dgamma[ch] = from_float<T>(s1);
  dbeta[ch] = from_float<T>(s2);
}

#define GROUP_NORM(T, sfx)                                                                                    \
  extern "C" __global__ void group_norm_fwd_##sfx(const GnParams p) {                                        \
    const int64_t base = group_base(p);                                                                       \
    if (gn_vectors<T>((const T*)p.x + base, (T*)p.y + base, (const T*)p.x + base, p.spatial))                \
      gn_fwd<T, 16 / sizeof(T)>(p);                                                                           \
    else                                                                                                      \
      gn_fwd<T, 1>(p);                                                                                        \
  }                                                                                                           \
  extern "C" __global__ void group_norm_scale_shift_##sfx(const GnParams p) {                                \
    if (gn_vectors<T>((const T*)p.x + group_base(p), p.x, p.x, p.spatial))                                    \
      gn_scale_shift<T, 16 / sizeof(T)>(p);                                                                   \
    else                                                                                                      \
      gn_scale_shift<T, 1>(p);                                                                                \
  }                                                                                                           \
  extern "C" __global__ void group_norm_bwd_##sfx(const GnParams p) {                                        \
    const int64_t base = group_base(p);                                                                       \
    if (gn_vectors<T>((const T*)p.x + base, (T*)p.y + base, (const T*)p.dy + base, p.spatial))               \
      gn_bwd<T, 16 / sizeof(T)>(p);                                                                           \
    else                                                                                                      \
      gn_bwd<T, 1>(p);                                                                                        \
  }                                                                                                           \
  extern "C" __global__ void group_norm_affine_grad_##sfx(const float* partial, T* dgamma, T* dbeta, int n, \
                                                          int c) {                                          \
    gn_affine_grad<T>(partial, dgamma, dbeta, n, c);                                                        \
  }
GROUP_NORM(float, f32)
GROUP_NORM(bf16, bf16)
