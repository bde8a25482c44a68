// attention.cu: multi-head self-attention over the T = H*W tokens, flash style (the T x T matrix is never
// stored). Layout [B, C, T] channel-first: head h of batch b is the [D, T] block at ((b*C + h*D) * T), so for a
// fixed channel the tokens are contiguous and every tile load below reads contiguous tokens (coalesced).
// defines:
//   attention_fwd_d{32,64,128,256,512}_{f32,bf16}  CUDA-core flash forward (online softmax), any D <= DMAX
//   attention_fwd_mma_d{32,64,128,256}_bf16         tensor-core flash forward (mma.m16n8k16, f32 accumulate)
//   attention_delta_{f32,bf16}                   delta[b,h,i] = sum_d dO[d,i] * O[d,i]
//   attention_bwd_dkdv_d{..}_{f32,bf16}          dK, dV, one block per key tile (loops over query tiles)
//   (the DDIM U-Nets of the GSURE paper use one head of D = 512 at 8x8 and 16x16: the d512 kernels use
//   16-row tiles and 64 threads, so that their shared tiles fit the 227 KiB a block can have; in bf16 that
//   head runs on tensor cores, attention_fwd_wide.cu and attention_bwd_mma.cu)
//   attention_bwd_dq_d{..}_{f32,bf16}            dQ, one block per query tile (loops over key tiles)
// All kernels: grid = (tiles along T, B*heads), computation in f32, lse saved in f32 natural-log units.
#include "attention.cuh"

// Tiles of the CUDA-core kernels: GQ = GK = TILE queries x keys (32, or 16 at DMAX = 512), 4 * TILE threads.
// A thread owns one row of the tile (tid / 4) and a quarter of the other axis (columns sub + 4*j,
// sub = tid % 4), so the four threads of a row are adjacent lanes and row reductions are two xor-shuffles.
__host__ __device__ constexpr int tile_for(int dmax) { return dmax > 256 ? 16 : 32; }

// dst[d * ld + j] = src[d * T + t0 + j] for d < D, j < cols; zero past T (f32 shared memory).
template <typename T>
__device__ __forceinline__ void load_tile_f32(float* dst, int ld, const T* src, int D, int Tn, int t0, int cols) {
  for (int e = threadIdx.x; e < D * cols; e += blockDim.x) {
    const int d = e / cols, j = e - d * cols;
    dst[d * ld + j] = t0 + j < Tn ? to_float(src[(int64_t)d * Tn + t0 + j]) : 0.f;
  }
}

// ---------------------------------------------------------------------------------------------------------
// CUDA-core forward. Shared (floats): Qs [D][GQ], Ks [D][GK], Vs [D][GK+1], Ps [GQ][GK+1]. The +1 pads put
// the four channels (or rows) a warp reads at once in different banks. Thread: query row r = tid/4, keys
// sub + 4*jj of each tile, output channels sub + 4*jd (acc in registers, DMAX/4 of them).
template <typename T, int DMAX>
__device__ void fwd_generic(const AttnParams& p) {
  constexpr int GQ = tile_for(DMAX), GK = GQ;
  DYNAMIC_SHARED(float, smem);
  const int D = p.D, Tn = p.T;
  float* Qs = smem;
  float* Ks = Qs + D * GQ;
  float* Vs = Ks + D * GK;
  float* Ps = Vs + D * (GK + 1);
  const int64_t base = head_offset(p);
  const T* q = (const T*)p.q + base;
  const T* k = (const T*)p.k + base;
  const T* v = (const T*)p.v + base;
  T* o = (T*)p.o + base;
  const int q0 = blockIdx.x * GQ, tid = threadIdx.x, r = tid >> 2, sub = tid & 3;

  load_tile_f32(Qs, GQ, q, D, Tn, q0, GQ);
  float acc[DMAX / 4];
#pragma unroll
  for (int jd = 0; jd < DMAX / 4; jd++) acc[jd] = 0.f;
  float m = -INFINITY, l = 0.f;

  for (int k0 = 0; k0 < Tn; k0 += GK) {
    __syncthreads();  // the previous tile's Ks/Vs/Ps are no longer read (and Qs is loaded on entry)
    load_tile_f32(Ks, GK, k, D, Tn, k0, GK);
    load_tile_f32(Vs, GK + 1, v, D, Tn, k0, GK);
    __syncthreads();
    float s[GK / 4];
#pragma unroll
    for (int jj = 0; jj < GK / 4; jj++) s[jj] = 0.f;
    for (int d = 0; d < D; d++) {
      const float qv = Qs[d * GQ + r];
#pragma unroll
      for (int jj = 0; jj < GK / 4; jj++) s[jj] += qv * Ks[d * GK + sub + 4 * jj];
    }
    float mt = m;
#pragma unroll
    for (int jj = 0; jj < GK / 4; jj++) {
      s[jj] = k0 + sub + 4 * jj < Tn ? s[jj] * p.scale : -INFINITY;  // keys past T do not exist
      mt = fmaxf(mt, s[jj]);
    }
    mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1));
    mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 2));
    // Key k0 < T is valid for every row, so mt is finite from the first tile on; exp(-inf - mt) = 0.
    const float alpha = expf(m - mt);
    float ls = 0.f;
#pragma unroll
    for (int jj = 0; jj < GK / 4; jj++) {
      const float pj = expf(s[jj] - mt);
      ls += pj;
      Ps[r * (GK + 1) + sub + 4 * jj] = pj;
    }
    ls += __shfl_xor_sync(0xffffffffu, ls, 1);
    ls += __shfl_xor_sync(0xffffffffu, ls, 2);
    l = l * alpha + ls;
    m = mt;
    __syncwarp();  // row r of Ps was written by the 4 lanes of this quad, all in this warp
#pragma unroll
    for (int jd = 0; jd < DMAX / 4; jd++) acc[jd] *= alpha;
    for (int c = 0; c < GK; c++) {
      const float pc = Ps[r * (GK + 1) + c];
#pragma unroll
      for (int jd = 0; jd < DMAX / 4; jd++) {
        const int d = sub + 4 * jd;
        if (d < D) acc[jd] += pc * Vs[d * (GK + 1) + c];
      }
    }
  }
  const int i = q0 + r;
  if (i < Tn) {
    const float inv = 1.f / l;
#pragma unroll
    for (int jd = 0; jd < DMAX / 4; jd++) {
      const int d = sub + 4 * jd;
      if (d < D) o[(int64_t)d * Tn + i] = from_float<T>(acc[jd] * inv);
    }
    if (sub == 0) p.lse[(int64_t)blockIdx.y * Tn + i] = m + logf(l);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Tensor-core forward (bf16, D in {32, 64, 128, 256}). Block: BQ = 64 queries of one (b, h), 4 warps, warp w
// owns query rows 16w..16w+15. KV tiles of BK keys (64, or 32 at D >= 128 to bound shared memory and the
// S registers; the O accumulators take D/2 registers per thread).
//
// Shared memory keeps the global channel-first layout: Qs [D][BQ], Ks [D][BK], Vs [D][BK] (bf16, rows padded by
// 8 elements = 16 bytes so the 8 row addresses of an ldmatrix hit 8 distinct 4-bank groups). No transposes are
// needed because ldmatrix's .trans option supplies them (see mma.cuh for the fragment layouts; g = lane/4,
// t = lane%4; ldmatrix gives lane (g, 2t..2t+1) of each stored 8x8 tile, .trans gives (2t..2t+1, g)):
//   S = Q K^T: A = Q (rows q, cols d): a0 = (q g, d 2t..) = stored Qs[d 2t..][q g]  -> ldmatrix.trans on Qs;
//              B = K^T (k = d, n = key): b0 = (d 2t.., key g) = Ks[d 2t..][key g]  -> ldmatrix.trans on Ks.
//   O = P V:   A = P from the S accumulators (c0,c1 of n-tiles 2kc and 2kc+1 are exactly a0..a3, FA2 trick);
//              B = V (k = key, n = d): b0 = (key 2t.., d g) = Vs[d g][key 2t..]  -> plain ldmatrix on Vs.
// The output is staged in Qs ([d][q], bf16) so the global store is along contiguous tokens.
// Softmax runs in log2 units (scores pre-multiplied by scale * log2 e, exp2f); lse is converted back to ln.
// STAGES = 2: K/V tiles in a two-stage ring, the next tile's cp.async issued before this tile's MMAs, so its
// load overlaps them; STAGES = 1 (D = 256, where a second stage would halve the blocks per SM): load, wait, compute.
template <int D, int BK, int STAGES>
__device__ void fwd_mma(const AttnParams& p) {
  constexpr int BQ = 64, LDQ = BQ + 8, LDK = BK + 8;
  // Dynamic: D = 256 needs 76 KiB (the launcher raises the limit). Every region starts at a multiple of
  // 16 bytes (D * LDQ * 2 and D * LDK * 2 are multiples of 16), as cp.async and ldmatrix require.
  DYNAMIC_SHARED(__align__(16) bf16, smem_bf16);
  bf16* Qs = smem_bf16;                 // [D][LDQ]
  bf16* Ks0 = Qs + D * LDQ;             // [STAGES][D][LDK]
  bf16* Vs0 = Ks0 + STAGES * D * LDK;   // [STAGES][D][LDK]
  const int Tn = p.T;
  const int64_t base = head_offset(p);
  const bf16* q = (const bf16*)p.q + base;
  const bf16* k = (const bf16*)p.k + base;
  const bf16* v = (const bf16*)p.v + base;
  bf16* o = (bf16*)p.o + base;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int q0 = blockIdx.x * BQ;
  // Q and the first K/V tile in one cp.async group.
  issue_tile_bf16(Qs, LDQ, q, D, Tn, q0, BQ);
  issue_tile_bf16(Ks0, LDK, k, D, Tn, 0, BK);
  issue_tile_bf16(Vs0, LDK, v, D, Tn, 0, BK);
  cp_async_commit();
  float acc[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // rows g and g + 8 of this warp
  const float sl2 = p.scale * 1.4426950408889634f;

  for (int k0 = 0, st = 0; k0 < Tn; k0 += BK, st = (st + 1) % STAGES) {
    __syncthreads();  // every warp is done with the previous tile: the stage refilled below is free
    ring_step<STAGES>(k0, BK, Tn, st, [&](int ns, int t) {
      issue_tile_bf16(Ks0 + ns * D * LDK, LDK, k, D, Tn, t, BK);
      issue_tile_bf16(Vs0 + ns * D * LDK, LDK, v, D, Tn, t, BK);
    });
    __syncthreads();  // this tile (and on the first pass Qs) landed for every thread
    const bf16* Ks = Ks0 + st * D * LDK;
    const bf16* Vs = Vs0 + st * D * LDK;

    float s[BK / 8][4];
#pragma unroll
    for (int i = 0; i < BK / 8; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
      // ldmatrix x4 tile i = lane/8 of A: i=0 (d+0, q+0) a0, i=1 (d+0, q+8) a1, i=2 (d+8, q+0) a2, i=3 (d+8, q+8) a3.
      uint32_t a[4];
      ldmatrix_x4_trans(a, smem_addr(&Qs[(kk * 16 + (lane & 7) + ((lane >> 4) & 1) * 8) * LDQ + warp * 16 +
                                         ((lane >> 3) & 1) * 8]));
#pragma unroll
      for (int np = 0; np < BK / 16; np++) {
        // Tiles: i=0 (d+0, key+0) b0 and i=1 (d+8, key+0) b1 of n-tile 2np; i=2, 3 the same for n-tile 2np+1.
        uint32_t b[4];
        ldmatrix_x4_trans(b, smem_addr(&Ks[(kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LDK + np * 16 +
                                           ((lane >> 4) & 1) * 8]));
        mma_bf16_16816(s[2 * np], a, b);
        mma_bf16_16816(s[2 * np + 1], a, b + 2);
      }
    }

    // s[nt][e]: row g (e < 2) or g + 8 (e >= 2), key k0 + nt*8 + 2*t4 + (e & 1).
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int nt = 0; nt < BK / 8; nt++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int j = k0 + nt * 8 + 2 * t4 + (e & 1);
        s[nt][e] = j < Tn ? s[nt][e] * sl2 : -INFINITY;
        mx[e >> 1] = fmaxf(mx[e >> 1], s[nt][e]);
      }
    }
    float rs[2] = {0.f, 0.f}, alpha[2];
#pragma unroll
    for (int x = 0; x < 2; x++) {
      // The four lanes of a quad (same g) hold the row's columns.
      mx[x] = fmaxf(mx[x], __shfl_xor_sync(0xffffffffu, mx[x], 1));
      mx[x] = fmaxf(mx[x], __shfl_xor_sync(0xffffffffu, mx[x], 2));
      alpha[x] = exp2f(m[x] - mx[x]);  // 0 on the first tile (m = -inf, mx finite: key k0 = 0 exists)
      m[x] = mx[x];
    }
#pragma unroll
    for (int nt = 0; nt < BK / 8; nt++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        s[nt][e] = exp2f(s[nt][e] - mx[e >> 1]);
        rs[e >> 1] += s[nt][e];
      }
    }
#pragma unroll
    for (int x = 0; x < 2; x++) {
      rs[x] += __shfl_xor_sync(0xffffffffu, rs[x], 1);
      rs[x] += __shfl_xor_sync(0xffffffffu, rs[x], 2);
      l[x] = l[x] * alpha[x] + rs[x];
    }
#pragma unroll
    for (int i = 0; i < D / 8; i++) {
      acc[i][0] *= alpha[0];
      acc[i][1] *= alpha[0];
      acc[i][2] *= alpha[1];
      acc[i][3] *= alpha[1];
    }

#pragma unroll
    for (int kc = 0; kc < BK / 16; kc++) {
      uint32_t a[4] = {pack_bf16x2(s[2 * kc][0], s[2 * kc][1]), pack_bf16x2(s[2 * kc][2], s[2 * kc][3]),
                       pack_bf16x2(s[2 * kc + 1][0], s[2 * kc + 1][1]),
                       pack_bf16x2(s[2 * kc + 1][2], s[2 * kc + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; dp++) {
        // Tiles: i=0 (d+0, key+0) b0, i=1 (d+0, key+8) b1 of d-tile 2dp; i=2, 3 (d+8, ...) of d-tile 2dp+1.
        uint32_t b[4];
        ldmatrix_x4(b, smem_addr(&Vs[(dp * 16 + (lane & 7) + ((lane >> 4) & 1) * 8) * LDK + kc * 16 +
                                     ((lane >> 3) & 1) * 8]));
        mma_bf16_16816(acc[2 * dp], a, b);
        mma_bf16_16816(acc[2 * dp + 1], a, b + 2);
      }
    }
  }

  const float inv0 = 1.f / l[0], inv1 = 1.f / l[1];
  const int row = warp * 16 + g;
  if (t4 == 0) {
    if (q0 + row < Tn) p.lse[(int64_t)blockIdx.y * Tn + q0 + row] = (m[0] + log2f(l[0])) * 0.6931471805599453f;
    if (q0 + row + 8 < Tn)
      p.lse[(int64_t)blockIdx.y * Tn + q0 + row + 8] = (m[1] + log2f(l[1])) * 0.6931471805599453f;
  }
  __syncthreads();  // every warp is done reading Qs
  // acc[dt][e]: channel dt*8 + 2*t4 + (e & 1), row g (e < 2) or g + 8.
#pragma unroll
  for (int dt = 0; dt < D / 8; dt++) {
    const int d = dt * 8 + 2 * t4;
    Qs[d * LDQ + row] = __float2bfloat16(acc[dt][0] * inv0);
    Qs[(d + 1) * LDQ + row] = __float2bfloat16(acc[dt][1] * inv0);
    Qs[d * LDQ + row + 8] = __float2bfloat16(acc[dt][2] * inv1);
    Qs[(d + 1) * LDQ + row + 8] = __float2bfloat16(acc[dt][3] * inv1);
  }
  __syncthreads();
  for (int e = tid; e < D * BQ; e += 128) {
    const int d = e / BQ, j = e - d * BQ;
    if (q0 + j < Tn) o[(int64_t)d * Tn + q0 + j] = Qs[d * LDQ + j];
  }
}

// ---------------------------------------------------------------------------------------------------------
// Backward, step 1: delta[b, h, i] = sum_d dO[d, i] * O[d, i] (thread per token, reads along tokens).
template <typename T>
__device__ void delta_kernel(const AttnParams& p) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= p.T) return;
  const int64_t base = head_offset(p);
  const T* o = (const T*)p.o + base;
  const T* dout = (const T*)p.dout + base;
  float s = 0.f;
  for (int d = 0; d < p.D; d++) s += to_float(dout[(int64_t)d * p.T + i]) * to_float(o[(int64_t)d * p.T + i]);
  p.delta[(int64_t)blockIdx.y * p.T + i] = s;
}

// Backward, step 2: dK and dV for one key tile of GK keys, looping over all query tiles. P and dS are rebuilt
// per tile from lse and delta: P = exp(scale q·k - lse), dS = P (dO·v - delta). Thread: key c = tid/4 (rows of
// the transposed tile), queries sub + 4*jj; dK/dV accumulators for channels sub + 4*jd in registers.
// Shared (floats): Ks [D][GK], Vs [D][GK], Qs [D][GQ+1], dOs [D][GQ+1], Ps [GK][GQ+1], dSs [GK][GQ+1],
// lse_s [GQ], delta_s [GQ].
template <typename T, int DMAX>
__device__ void bwd_dkdv(const AttnParams& p) {
  constexpr int GQ = tile_for(DMAX), GK = GQ;
  DYNAMIC_SHARED(float, smem);
  const int D = p.D, Tn = p.T;
  constexpr int LQ = GQ + 1;
  float* Ks = smem;
  float* Vs = Ks + D * GK;
  float* Qs = Vs + D * GK;
  float* dOs = Qs + D * LQ;
  float* Ps = dOs + D * LQ;
  float* dSs = Ps + GK * LQ;
  float* lse_s = dSs + GK * LQ;
  float* delta_s = lse_s + GQ;
  const int64_t base = head_offset(p);
  const T* q = (const T*)p.q + base;
  const T* k = (const T*)p.k + base;
  const T* v = (const T*)p.v + base;
  const T* dout = (const T*)p.dout + base;
  const float* lse = p.lse + (int64_t)blockIdx.y * Tn;
  const float* delta = p.delta + (int64_t)blockIdx.y * Tn;
  const int k0 = blockIdx.x * GK, tid = threadIdx.x, c = tid >> 2, sub = tid & 3;

  load_tile_f32(Ks, GK, k, D, Tn, k0, GK);
  load_tile_f32(Vs, GK, v, D, Tn, k0, GK);
  float dk[DMAX / 4], dv[DMAX / 4];
#pragma unroll
  for (int jd = 0; jd < DMAX / 4; jd++) dk[jd] = dv[jd] = 0.f;

  for (int q0 = 0; q0 < Tn; q0 += GQ) {
    __syncthreads();  // previous query tile consumed
    load_tile_f32(Qs, LQ, q, D, Tn, q0, GQ);
    load_tile_f32(dOs, LQ, dout, D, Tn, q0, GQ);
    for (int i = tid; i < GQ; i += blockDim.x) {
      // Rows past T: lse = +inf makes P = 0, so they add nothing.
      lse_s[i] = q0 + i < Tn ? lse[q0 + i] : INFINITY;
      delta_s[i] = q0 + i < Tn ? delta[q0 + i] : 0.f;
    }
    __syncthreads();
    float s[GQ / 4], dp[GQ / 4];
#pragma unroll
    for (int jj = 0; jj < GQ / 4; jj++) s[jj] = dp[jj] = 0.f;
    for (int d = 0; d < D; d++) {
      const float kv = Ks[d * GK + c], vv = Vs[d * GK + c];
#pragma unroll
      for (int jj = 0; jj < GQ / 4; jj++) {
        s[jj] += kv * Qs[d * LQ + sub + 4 * jj];
        dp[jj] += vv * dOs[d * LQ + sub + 4 * jj];
      }
    }
#pragma unroll
    for (int jj = 0; jj < GQ / 4; jj++) {
      const int i = sub + 4 * jj;
      const float pij = expf(s[jj] * p.scale - lse_s[i]);
      Ps[c * LQ + i] = pij;
      dSs[c * LQ + i] = pij * (dp[jj] - delta_s[i]);
    }
    __syncwarp();  // row c of Ps/dSs was written by this quad, all in this warp
    for (int i = 0; i < GQ; i++) {
      const float pv = Ps[c * LQ + i], ds = dSs[c * LQ + i];
#pragma unroll
      for (int jd = 0; jd < DMAX / 4; jd++) {
        const int d = sub + 4 * jd;
        if (d < D) {
          dv[jd] += pv * dOs[d * LQ + i];
          dk[jd] += ds * Qs[d * LQ + i];
        }
      }
    }
  }
  const int j = k0 + c;
  if (j < Tn) {
    T* gk = (T*)p.dk + base;
    T* gv = (T*)p.dv + base;
#pragma unroll
    for (int jd = 0; jd < DMAX / 4; jd++) {
      const int d = sub + 4 * jd;
      if (d < D) {
        gk[(int64_t)d * Tn + j] = from_float<T>(dk[jd] * p.scale);
        gv[(int64_t)d * Tn + j] = from_float<T>(dv[jd]);
      }
    }
  }
}

// Backward, step 3: dQ for one query tile of GQ queries, looping over all key tiles; dQ = scale dS K.
// Thread: query r = tid/4, keys sub + 4*jj; dQ accumulators for channels sub + 4*jd.
// Shared (floats): Qs [D][GQ], dOs [D][GQ], Ks [D][GK+1], Vs [D][GK], dSs [GQ][GK+1].
template <typename T, int DMAX>
__device__ void bwd_dq(const AttnParams& p) {
  constexpr int GQ = tile_for(DMAX), GK = GQ;
  DYNAMIC_SHARED(float, smem);
  const int D = p.D, Tn = p.T;
  constexpr int LK = GK + 1;
  float* Qs = smem;
  float* dOs = Qs + D * GQ;
  float* Ks = dOs + D * GQ;
  float* Vs = Ks + D * LK;
  float* dSs = Vs + D * GK;
  const int64_t base = head_offset(p);
  const T* q = (const T*)p.q + base;
  const T* k = (const T*)p.k + base;
  const T* v = (const T*)p.v + base;
  const T* dout = (const T*)p.dout + base;
  const int q0 = blockIdx.x * GQ, tid = threadIdx.x, r = tid >> 2, sub = tid & 3;
  const int i = q0 + r;
  const bool row_ok = i < Tn;
  const float lse_r = row_ok ? p.lse[(int64_t)blockIdx.y * Tn + i] : 0.f;
  const float delta_r = row_ok ? p.delta[(int64_t)blockIdx.y * Tn + i] : 0.f;

  load_tile_f32(Qs, GQ, q, D, Tn, q0, GQ);
  load_tile_f32(dOs, GQ, dout, D, Tn, q0, GQ);
  float dq[DMAX / 4];
#pragma unroll
  for (int jd = 0; jd < DMAX / 4; jd++) dq[jd] = 0.f;

  for (int k0 = 0; k0 < Tn; k0 += GK) {
    __syncthreads();
    load_tile_f32(Ks, LK, k, D, Tn, k0, GK);
    load_tile_f32(Vs, GK, v, D, Tn, k0, GK);
    __syncthreads();
    float s[GK / 4], dp[GK / 4];
#pragma unroll
    for (int jj = 0; jj < GK / 4; jj++) s[jj] = dp[jj] = 0.f;
    for (int d = 0; d < D; d++) {
      const float qv = Qs[d * GQ + r], gv = dOs[d * GQ + r];
#pragma unroll
      for (int jj = 0; jj < GK / 4; jj++) {
        s[jj] += qv * Ks[d * LK + sub + 4 * jj];
        dp[jj] += gv * Vs[d * GK + sub + 4 * jj];
      }
    }
#pragma unroll
    for (int jj = 0; jj < GK / 4; jj++) {
      const int j = k0 + sub + 4 * jj;
      const float pij = j < Tn && row_ok ? expf(s[jj] * p.scale - lse_r) : 0.f;  // keys past T do not exist
      dSs[r * LK + sub + 4 * jj] = pij * (dp[jj] - delta_r);
    }
    __syncwarp();  // row r of dSs was written by this quad, all in this warp
    for (int c = 0; c < GK; c++) {
      const float ds = dSs[r * LK + c];
#pragma unroll
      for (int jd = 0; jd < DMAX / 4; jd++) {
        const int d = sub + 4 * jd;
        if (d < D) dq[jd] += ds * Ks[d * LK + c];
      }
    }
  }
  if (row_ok) {
    T* gq = (T*)p.dq + base;
#pragma unroll
    for (int jd = 0; jd < DMAX / 4; jd++) {
      const int d = sub + 4 * jd;
      if (d < D) gq[(int64_t)d * Tn + i] = from_float<T>(dq[jd] * p.scale);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
#define GENERIC(DMAX, T, sfx)                                                                                  \
  extern "C" __global__ void __launch_bounds__(4 * tile_for(DMAX)) attention_fwd_d##DMAX##_##sfx(AttnParams p) { \
    fwd_generic<T, DMAX>(p);                                                                                   \
  }                                                                                                            \
  extern "C" __global__ void __launch_bounds__(4 * tile_for(DMAX))                                             \
      attention_bwd_dkdv_d##DMAX##_##sfx(AttnParams p) {                                                       \
    bwd_dkdv<T, DMAX>(p);                                                                                      \
  }                                                                                                            \
  extern "C" __global__ void __launch_bounds__(4 * tile_for(DMAX)) attention_bwd_dq_d##DMAX##_##sfx(AttnParams p) { \
    bwd_dq<T, DMAX>(p);                                                                                        \
  }
GENERIC(32, float, f32)
GENERIC(64, float, f32)
GENERIC(128, float, f32)
GENERIC(256, float, f32)
GENERIC(512, float, f32)
GENERIC(32, bf16, bf16)
GENERIC(64, bf16, bf16)
GENERIC(128, bf16, bf16)
GENERIC(256, bf16, bf16)
GENERIC(512, bf16, bf16)

extern "C" __global__ void attention_delta_f32(AttnParams p) { delta_kernel<float>(p); }
extern "C" __global__ void attention_delta_bf16(AttnParams p) { delta_kernel<bf16>(p); }

// <D, BK, STAGES>, mirrored by `forward` in src/ops/attention/cuda.rs.
extern "C" __global__ void __launch_bounds__(128) attention_fwd_mma_d32_bf16(AttnParams p) { fwd_mma<32, 64, 2>(p); }
extern "C" __global__ void __launch_bounds__(128) attention_fwd_mma_d64_bf16(AttnParams p) { fwd_mma<64, 64, 2>(p); }
extern "C" __global__ void __launch_bounds__(128) attention_fwd_mma_d128_bf16(AttnParams p) { fwd_mma<128, 32, 2>(p); }
extern "C" __global__ void __launch_bounds__(128) attention_fwd_mma_d256_bf16(AttnParams p) { fwd_mma<256, 32, 1>(p); }
