// optim.cu: the optimiser step with no host round trip — the global gradient norm and clip gate, the fused
// AdamW update over every parameter tensor in one launch (multi-tensor apply), and EMA in one launch.
// defines: grad_sumsq_f32, grad_clip_gate_f32, adamw_step_f32 (master weights, gradients and moments are f32:
//          bf16 training keeps f32 masters, and the bf16 cast's backward hands them f32 gradients),
//          ema_update_multi_f32.
// The gate is four floats on the device, [loss, grad norm, clip scale, skip]: grad_clip_gate_f32 writes it,
// AdamW and EMA read it (skip != 0: the loss or the norm is not finite, and neither touches any weight), and
// the host reads it whenever it wants the step's loss and norm. With `sticky` the gate halts the run: once a
// step's skip is set, every later gate written into the same buffer says halted (skip = 2), so a host that
// reads gates a few steps late still finds the weights of the step before the first bad one.
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

// The per-step schedule AdamW may read from the device: [lr, bias correction 1, bias correction 2].
#define ADAM_LR 0
#define ADAM_BC1 1
#define ADAM_BC2 2

// Gate fields (see the top of the file).
#define GATE_LOSS 0
#define GATE_NORM 1
#define GATE_SCALE 2
#define GATE_SKIP 3

// The slot whose chunks hold chunk `blockIdx.x`: the last slot whose first_chunk <= blockIdx.x (binary search).
template <typename Slot> __device__ __forceinline__ int slot_of_block(const Slot* __restrict__ slots, int num_slots) {
  int lo = 0, hi = num_slots - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) / 2;
    if (slots[mid].first_chunk <= (int64_t)blockIdx.x) lo = mid; else hi = mid - 1;
  }
  return lo;
}

struct GradSlot {
  const float* grad;
  int64_t n;
  int64_t first_chunk;  // as in AdamSlot
};

// partial[b] = the sum of squares of chunk b of the gradients (one chunk per block).
extern "C" __global__ void __launch_bounds__(256)
    grad_sumsq_f32(const GradSlot* __restrict__ slots, int num_slots, float* __restrict__ partial) {
  __shared__ float scratch[32];
  const GradSlot s = slots[slot_of_block(slots, num_slots)];
  const int64_t start = ((int64_t)blockIdx.x - s.first_chunk) * CHUNK;
  const int64_t end = min(start + CHUNK, s.n);
  float acc = 0.f;
  for (int64_t i = start + threadIdx.x; i < end; i += blockDim.x) acc += s.grad[i] * s.grad[i];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__device__ __forceinline__ double warp_sum_f64(double v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// One block of 256: the global norm from the chunks' partial sums (in f64, in a fixed order: the same
// gate on every run), the clip scale that brings it down to max_norm (when max_norm > 0), and the skip flag.
extern "C" __global__ void __launch_bounds__(256)
    grad_clip_gate_f32(const float* __restrict__ partial, int chunks, const float* __restrict__ loss, float max_norm,
                       int sticky, float* __restrict__ gate) {
  __shared__ double warps[8];
  double acc = 0.0;
  for (int i = threadIdx.x; i < chunks; i += blockDim.x) acc += (double)partial[i];
  acc = warp_sum_f64(acc);
  if ((threadIdx.x & 31) == 0) warps[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x != 0) return;
  double total = 0.0;
  for (int w = 0; w < (int)(blockDim.x >> 5); ++w) total += warps[w];
  const float norm = (float)sqrt(total), l = loss ? *loss : 0.f;  // loss may be null: the norm alone
  const bool finite = isfinite(l) && isfinite(norm);
  const bool halted = sticky && gate[GATE_SKIP] != 0.f;  // the previous gate of this buffer: a bad step before
  const float scale = max_norm > 0.f && norm > max_norm ? max_norm / (norm + 1e-6f) : 1.f;
  gate[GATE_LOSS] = l;
  gate[GATE_NORM] = norm;
  gate[GATE_SCALE] = finite && !halted ? scale : 0.f;
  gate[GATE_SKIP] = halted ? 2.f : (finite ? 0.f : 1.f);
}

template <typename G>
__device__ void adamw_step(const AdamSlot<G>* __restrict__ slots, int num_slots, AdamHyper h,
                           const float* __restrict__ gate, const float* __restrict__ schedule) {
  // A step replayed from a CUDA graph reads what changes from step to step (learning rate, bias
  // corrections) from device memory written before the replay.
  if (schedule) {
    h.lr = schedule[ADAM_LR];
    h.bias_correction1 = schedule[ADAM_BC1];
    h.bias_correction2 = schedule[ADAM_BC2];
  }
  float scale = h.grad_scale;
  if (gate) {
    if (gate[GATE_SKIP] != 0.f) return;
    scale *= gate[GATE_SCALE];
  }
  const AdamSlot<G> s = slots[slot_of_block(slots, num_slots)];
  const int64_t start = ((int64_t)blockIdx.x - s.first_chunk) * CHUNK;
  const int64_t end = min(start + CHUNK, s.n);
  for (int64_t i = start + threadIdx.x; i < end; i += blockDim.x) {
    const float g = to_float(s.grad[i]) * scale;
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

// `gate` may be null: the update then uses h.grad_scale alone. `schedule` may be null: the update then uses
// the learning rate and bias corrections in h.
extern "C" __global__ void adamw_step_f32(const AdamSlot<float>* slots, int num_slots, AdamHyper h, const float* gate,
                                          const float* schedule) {
  adamw_step<float>(slots, num_slots, h, gate, schedule);
}

struct EmaSlot {
  float* ema;
  const float* param;
  int64_t n;
  int64_t first_chunk;  // as in AdamSlot
};

// ema = decay * ema + (1 - decay) * param for every parameter tensor, one chunk per block; nothing when the
// gate says the step is skipped (gate may be null).
extern "C" __global__ void ema_update_multi_f32(const EmaSlot* __restrict__ slots, int num_slots, float decay,
                                                const float* __restrict__ gate) {
  if (gate && gate[GATE_SKIP] != 0.f) return;
  const EmaSlot s = slots[slot_of_block(slots, num_slots)];
  const int64_t start = ((int64_t)blockIdx.x - s.first_chunk) * CHUNK;
  const int64_t end = min(start + CHUNK, s.n);
  for (int64_t i = start + threadIdx.x; i < end; i += blockDim.x) s.ema[i] = decay * s.ema[i] + (1.f - decay) * s.param[i];
}
