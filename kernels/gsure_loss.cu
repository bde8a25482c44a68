// gsure_loss.cu: the GSURE loss (docs/METHODS.md §4.2) of a batch, fused: fidelity + finite-difference divergence.
// defines: gsure_loss_fwd_{f32,bf16}, gsure_loss_fwd_final_{f32,bf16}, gsure_loss_bwd_{f32,bf16}.
//
// All element tensors are [rows, m] (m = coordinates per example): d = D(x̄_t), de = D(x̄_t + ε b), r (target),
// obs (0/1 observed set O), w2 (W²), nu (ν; may be null: factor 1), b (probe). coef is f32 [rows, 2]:
// (c_fid, c_div) with c_div = α_n / ε_n already divided by the example's finite-difference step. Per element
//   l_i = c_fid · o w2 (d − r)²  +  c_div · o w2 ν b (de − d)
// and loss[r] = (1/m) Σ_i l_i. Every input is read exactly once per pass; everything is computed in f32.
// Forward: grid (splits, rows) exactly as loss.cu's masked_mse: with splits = 1 each block writes loss[r]
// directly; otherwise partials and a fixed-order final pass (no atomics: deterministic).
// Backward: the loss is linear in de, so dde = g (1/m) c_div o w2 ν b needs no read of d, de or r;
// dd = g (1/m) (2 c_fid o w2 (d − r) − c_div o w2 ν b). Both are written in the same pass (de is never read).
#include "common.cuh"

template <typename T>
__device__ __forceinline__ float nu_at(const T* __restrict__ nu, int64_t i) {
  return nu ? to_float(nu[i]) : 1.f;  // nu == null: the `xt` and `reference` modes (no ν in c_i)
}

template <typename T>
__device__ void gsure_fwd(const T* __restrict__ d, const T* __restrict__ de, const T* __restrict__ r,
                          const T* __restrict__ obs, const T* __restrict__ w2, const T* __restrict__ nu,
                          const T* __restrict__ b, const float* __restrict__ coef, float* __restrict__ partial,
                          T* __restrict__ loss, int64_t rows, int64_t m, float inv_m) {
  __shared__ float scratch[32];
  const int splits = gridDim.x;
  // grid.y walks the rows (a loop in case rows exceed the grid limit); uniform per block, so every thread
  // reaches the __syncthreads inside block_sum.
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const int64_t base = row * m;
    const float c_fid = coef[2 * row], c_div = coef[2 * row + 1];
    float acc = 0.f;
    for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < m; k += (int64_t)splits * blockDim.x) {
      const int64_t i = base + k;
      const float dv = to_float(d[i]);
      const float ow = to_float(obs[i]) * to_float(w2[i]);
      const float diff = dv - to_float(r[i]);
      // The finite difference de − d is taken in f32 after loading: with bf16 storage the two outputs are
      // each rounded once, never their (small) difference.
      const float fd = to_float(de[i]) - dv;
      acc += ow * (c_fid * diff * diff + c_div * nu_at(nu, i) * to_float(b[i]) * fd);
    }
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) split_rows_store(acc, partial, loss, row, inv_m);
  }
}

// grid (x blocks along the row, rows): the per-row upstream gradient and coefficients are read once per
// thread and row. dd or dde may be null (that output needs no gradient).
template <typename T>
__device__ void gsure_bwd(const T* __restrict__ d, const T* __restrict__ r, const T* __restrict__ obs,
                          const T* __restrict__ w2, const T* __restrict__ nu, const T* __restrict__ b,
                          const float* __restrict__ coef, const T* __restrict__ g, T* __restrict__ dd,
                          T* __restrict__ dde, int64_t rows, int64_t m, float inv_m) {
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const int64_t base = row * m;
    const float gs = to_float(g[row]) * inv_m;
    const float c_fid2 = 2.f * coef[2 * row] * gs, c_div = coef[2 * row + 1] * gs;
    for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < m; k += (int64_t)gridDim.x * blockDim.x) {
      const int64_t i = base + k;
      const float ow = to_float(obs[i]) * to_float(w2[i]);
      const float div = c_div * ow * nu_at(nu, i) * to_float(b[i]);
      if (dde) dde[i] = from_float<T>(div);
      if (dd) dd[i] = from_float<T>(c_fid2 * ow * (to_float(d[i]) - to_float(r[i])) - div);
    }
  }
}

#define GSURE(T, sfx)                                                                                            \
  extern "C" __global__ void gsure_loss_fwd_##sfx(const T* d, const T* de, const T* r, const T* obs,           \
                                                  const T* w2, const T* nu, const T* b, const float* coef,      \
                                                  float* partial, T* loss, int64_t rows, int64_t m,              \
                                                  float inv_m) {                                                 \
    gsure_fwd<T>(d, de, r, obs, w2, nu, b, coef, partial, loss, rows, m, inv_m);                                \
  }                                                                                                              \
  extern "C" __global__ void gsure_loss_fwd_final_##sfx(const float* partial, T* loss, int64_t rows, int splits, \
                                                        float inv_m) {                                           \
    split_rows_final<T>(partial, loss, rows, splits, inv_m);                                                     \
  }                                                                                                              \
  extern "C" __global__ void gsure_loss_bwd_##sfx(const T* d, const T* r, const T* obs, const T* w2, const T* nu, \
                                                  const T* b, const float* coef, const T* g, T* dd, T* dde,      \
                                                  int64_t rows, int64_t m, float inv_m) {                        \
    gsure_bwd<T>(d, r, obs, w2, nu, b, coef, g, dd, dde, rows, m, inv_m);                                       \
  }
GSURE(float, f32)
GSURE(bf16, bf16)
