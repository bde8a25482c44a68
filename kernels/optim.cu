// optim.cu: the fused AdamW update over every parameter tensor in one launch (multi-tensor apply), and EMA.
// defines: adamw_step_f32 (master weights, gradients and moments are f32: bf16 training keeps f32 masters,
//          and the bf16 cast's backward hands them f32 gradients), ema_update_f32.
// Each slot describes one parameter tensor; slots are laid end to end in chunks of CHUNK elements and block b
// finds its slot by binary search over the slots' first-chunk indices. When `shadow` is set the updated
// weight is also written as bf16 (the copy the bf16 forward reads), saving a separate cast pass.
#include "common.cuh"

#define CHUNK 4096

template <typename G> struct AdamSlot {
  float* param;
  const G* grad;
  float* m;
  float* v;
  bf16* shadow;        // may be null
  int64_t n;
  int64_t first_chunk; // prefix sum of ceil(n / CHUNK) over earlier slots
};

struct AdamHyper {
  float lr, beta1, beta2, eps, weight_decay;
  float bias_correction1, bias_correction2;  // 1 - beta^step
  float grad_scale;                           // multiplies every gradient (clipping, loss scaling)
};

template <typename G>
__device__ void adamw_step(const AdamSlot<G>* __restrict__ slots, int num_slots, AdamHyper h) {
  // Binary search: the last slot whose first_chunk <= blockIdx.x.
  int lo = 0, hi = num_slots - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) / 2;
    if (slots[mid].first_chunk <= (int64_t)blockIdx.x) lo = mid; else hi = mid - 1;
  }
  const AdamSlot<G> s = slots[lo];
  const int64_t start = ((int64_t)blockIdx.x - s.first_chunk) * CHUNK;
  const int64_t end = min(start + CHUNK, s.n);
  for (int64_t i = start + threadIdx.x; i < end; i += blockDim.x) {
    const float g = to_float(s.grad[i]) * h.grad_scale;
    const float m = h.beta1 * s.m[i] + (1.f - h.beta1) * g;
    const float v = h.beta2 * s.v[i] + (1.f - h.beta2) * g * g;
    s.m[i] = m;
    s.v[i] = v;
    const float mhat = m / h.bias_correction1, vhat = v / h.bias_correction2;
    // Decoupled weight decay (AdamW); weight_decay = 0 gives Adam.
    const float p = s.param[i] * (1.f - h.lr * h.weight_decay) - h.lr * mhat / (sqrtf(vhat) + h.eps);
    s.param[i] = p;
    if (s.shadow) s.shadow[i] = __float2bfloat16(p);
  }
}

extern "C" __global__ void adamw_step_f32(const AdamSlot<float>* slots, int num_slots, AdamHyper h) {
  adamw_step<float>(slots, num_slots, h);
}

// ema = decay * ema + (1 - decay) * param, over one flat range.
extern "C" __global__ void ema_update_f32(float* __restrict__ ema, const float* __restrict__ param, float decay,
                                          int64_t n) {
  GRID_STRIDE_LOOP(i, n) ema[i] = decay * ema[i] + (1.f - decay) * param[i];
}
