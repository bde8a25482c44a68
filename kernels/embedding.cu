// embedding.cu: sinusoidal timestep / noise-level embeddings, forward and backward with respect to t.
// defines: sinusoidal_embedding_fwd_{f32,bf16}, sinusoidal_embedding_bwd_{f32,bf16}.
// t [n] -> out [n, dim]; with half = dim / 2 and freq_k = exp(neg_log_scale * k) for k < half:
//   cos_first = 0 (DDIM):  out[:, k] = sin(t freq_k), out[:, half + k] = cos(t freq_k), out[:, 2 half] = 0
//   cos_first = 1 (EDM):   out[:, k] = cos(t freq_k), out[:, half + k] = sin(t freq_k)
// The phase t * freq_k reaches ~1000 rad for DDIM timesteps; in f32 its rounding error (~6e-5 rad) would be
// visible in the output, so the phase and sin/cos are evaluated in double. The op is tiny (n * dim is a few
// ten thousand elements), so FP64 throughput does not matter.
#include "common.cuh"

template <typename T>
__device__ void emb_fwd(const T* __restrict__ t, T* __restrict__ out, int64_t n, int dim, int half,
                        double neg_log_scale, int cos_first) {
  GRID_STRIDE_LOOP(i, n * dim) {
    const int64_t row = i / dim;
    const int j = (int)(i - row * dim);
    float v = 0.f;  // the zero pad of an odd DDIM dim
    if (j < 2 * half) {
      const int k = j < half ? j : j - half;
      const bool sin_part = (j < half) != (cos_first != 0);
      const double phase = (double)to_float(t[row]) * exp(neg_log_scale * k);
      v = (float)(sin_part ? sin(phase) : cos(phase));
    }
    out[i] = from_float<T>(v);
  }
}

// dt[row] = sum_k g[row, k] d/dt out[row, k]: one warp per row, lanes stride over the columns and the warp
// sum combines them in a fixed order (deterministic). d/dt sin(t f) = f cos(t f), d/dt cos(t f) = -f sin(t f).
template <typename T>
__device__ void emb_bwd(const T* __restrict__ t, const T* __restrict__ g, T* __restrict__ dt, int64_t n, int dim,
                        int half, double neg_log_scale, int cos_first) {
  const int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= n) return;
  const double tv = (double)to_float(t[row]);
  double acc = 0.0;
  for (int j = lane; j < 2 * half; j += 32) {
    const int k = j < half ? j : j - half;
    const bool sin_part = (j < half) != (cos_first != 0);
    const double f = exp(neg_log_scale * k), phase = tv * f;
    acc += (double)to_float(g[row * dim + j]) * (sin_part ? f * cos(phase) : -f * sin(phase));
  }
  const float s = warp_sum((float)acc);
  if (lane == 0) dt[row] = from_float<T>(s);
}

#define EMB(T, sfx)                                                                                              \
  extern "C" __global__ void sinusoidal_embedding_fwd_##sfx(const T* t, T* out, int64_t n, int dim, int half,    \
                                                            double neg_log_scale, int cos_first) {               \
    emb_fwd<T>(t, out, n, dim, half, neg_log_scale, cos_first);                                                 \
  }                                                                                                              \
  extern "C" __global__ void sinusoidal_embedding_bwd_##sfx(const T* t, const T* g, T* dt, int64_t n, int dim,  \
                                                            int half, double neg_log_scale, int cos_first) {     \
    emb_bwd<T>(t, g, dt, n, dim, half, neg_log_scale, cos_first);                                               \
  }
EMB(float, f32)
EMB(bf16, bf16)
