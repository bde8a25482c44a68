// loss.cu: the per-example weighted (masked) MSE of the diffusion objectives, fused.
// defines: masked_mse_fwd_{f32,bf16}, masked_mse_fwd_final_{f32,bf16}, masked_mse_bwd_{f32,bf16}.
// pred, target, weight are [n, m] (m = elements per example); loss[r] = (1/m) sum_k w (p - t)^2.
// Forward: grid (splits, rows); block b of row r sums a strided share of the row's m elements in f32 and
// the block reduction combines the threads in a fixed order. With splits = 1 the block writes loss[r]
// directly (one kernel, each input read once); otherwise it writes partial[r * splits + b] and
// masked_mse_fwd_final adds each row's partials in a fixed order. No atomics: results are deterministic.
// Backward: dpred = g[r] * (2/m) * w * (p - t) and, when asked, dtarget = -dpred, in one pass.
#include "common.cuh"

template <typename T>
__device__ void mse_fwd(const T* __restrict__ pred, const T* __restrict__ target, const T* __restrict__ weight,
                        float* __restrict__ partial, T* __restrict__ loss, int64_t rows, int64_t m, float inv_m) {
  __shared__ float scratch[32];
  const int splits = gridDim.x;
  // grid.y walks the rows (a loop in case rows exceed the grid limit); uniform per block, so the
  // __syncthreads inside block_sum is reached by every thread.
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const int64_t base = r * m;
    float acc = 0.f;
    for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < m; k += (int64_t)splits * blockDim.x) {
      const float d = to_float(pred[base + k]) - to_float(target[base + k]);
      acc += to_float(weight[base + k]) * d * d;
    }
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) split_rows_store(acc, partial, loss, r, inv_m);
  }
}

// grid (x blocks along the row, rows): the per-row upstream gradient is read once per thread and row, and
// no element needs a division to find its row. dtarget may be null (target needs no gradient).
template <typename T>
__device__ void mse_bwd(const T* __restrict__ pred, const T* __restrict__ target, const T* __restrict__ weight,
                        const T* __restrict__ g, T* __restrict__ dpred, T* __restrict__ dtarget, int64_t rows,
                        int64_t m, float two_over_m) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const int64_t base = r * m;
    const float gs = to_float(g[r]) * two_over_m;
    for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < m; k += (int64_t)gridDim.x * blockDim.x) {
      const int64_t i = base + k;
      const float d = gs * to_float(weight[i]) * (to_float(pred[i]) - to_float(target[i]));
      if (dpred) dpred[i] = from_float<T>(d);
      if (dtarget) dtarget[i] = from_float<T>(-d);
    }
  }
}

#define MSE(T, sfx)                                                                                               \
  extern "C" __global__ void masked_mse_fwd_##sfx(const T* pred, const T* target, const T* weight,              \
                                                  float* partial, T* loss, int64_t rows, int64_t m, float inv_m) { \
    mse_fwd<T>(pred, target, weight, partial, loss, rows, m, inv_m);                                             \
  }                                                                                                               \
  extern "C" __global__ void masked_mse_fwd_final_##sfx(const float* partial, T* loss, int64_t rows, int splits, \
                                                        float inv_m) {                                            \
    split_rows_final<T>(partial, loss, rows, splits, inv_m);                                                      \
  }                                                                                                               \
  extern "C" __global__ void masked_mse_bwd_##sfx(const T* pred, const T* target, const T* weight, const T* g,   \
                                                  T* dpred, T* dtarget, int64_t rows, int64_t m,                  \
                                                  float two_over_m) {                                             \
    mse_bwd<T>(pred, target, weight, g, dpred, dtarget, rows, m, two_over_m);                                    \
  }
MSE(float, f32)
MSE(bf16, bf16)
