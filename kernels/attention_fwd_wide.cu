// attention_fwd_wide.cu: the tensor-core flash forward for head dims too wide for attention.cu's fwd_mma, whose
// warps each hold a 16 x D output accumulator (D / 2 floats a thread: 256 at D = 512, the one head of the GSURE
// paper's DDIM U-Nets at 8x8 and 16x16). Here the output is split by channels across warps, as the backward
// (attention_bwd_mma.cu) splits it.
// defines:
//   attention_fwd_mma_d512_bf16   bf16 in and out, mma.m16n8k16 with f32 accumulate, online softmax, lse saved
//
// Block: BQ queries of one (b, h), NW warps in RT = BQ / 16 row groups x CG = NW / RT column groups. Warp w owns
// query rows 16 (w % RT) and, per key tile of BK keys,
//   phase 1: scores S = Q^T K for its rows and the keys WC (w / RT) (scores_tile, reducing over all D);
//            the row maxima and sums of the CG warps that share rows meet in shared memory (red_max, red_sum),
//            so every one of them holds the same running max m and sum l; P = exp2(S - m) goes to Ps as bf16;
//   phase 2: O[rows][channels DW (w / RT)] = alpha O + P V^T (accumulate_tile: A = Ps [query][key], B = Vs
//            [d][key], both with the reduction contiguous), alpha = exp2(m_old - m_new) per row.
// Softmax in log2 units as in fwd_mma (scores times scale * log2 e); lse is converted back to ln.
#include "attention.cuh"

__host__ __device__ constexpr int fwd_wide_smem_bytes(int D, int BQ, int BK, int NW) {
  return 2 * (D * (BQ + 8) + 2 * D * (BK + 8) + BQ * (BK + 8)) + 4 * 2 * (NW / (BQ / 16)) * BQ;
}

template <int D, int BQ, int BK, int NW>
__device__ void fwd_wide(const AttnParams& p) {
  constexpr int RT = BQ / 16, CG = NW / RT, WC = BK / CG, DW = D / CG;
  static_assert(BQ % 16 == 0 && NW % RT == 0 && WC % 8 == 0 && WC * CG == BK && DW % 16 == 0 && DW * CG == D,
                "warp split");
  constexpr int LQ = BQ + 8, LK = BK + 8;
  DYNAMIC_SHARED(__align__(16) bf16, smem);
  bf16* Qs = smem;          // [D][LQ]; the output is staged here at the end
  bf16* Ks = Qs + D * LQ;   // [D][LK]
  bf16* Vs = Ks + D * LK;   // [D][LK]
  bf16* Ps = Vs + D * LK;   // [BQ][LK]
  float* red_max = reinterpret_cast<float*>(Ps + BQ * LK);  // [CG][BQ]
  float* red_sum = red_max + CG * BQ;                        // [CG][BQ]

  const int Tn = p.T;
  const int64_t base = head_offset(p);
  const bf16* q = (const bf16*)p.q + base;
  const bf16* k = (const bf16*)p.k + base;
  const bf16* v = (const bf16*)p.v + base;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int q0 = blockIdx.x * BQ;
  const int cg = warp / RT, rw = (warp % RT) * 16, cw = cg * WC, dw = cg * DW;
  const float sl2 = p.scale * LOG2E;

  load_tile_bf16(Qs, LQ, q, D, Tn, q0, BQ);
  float acc[DW / 8][4];
#pragma unroll
  for (int i = 0; i < DW / 8; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // rows rw + g and rw + g + 8

  for (int k0 = 0; k0 < Tn; k0 += BK) {
    __syncthreads();  // the previous tile's Ks/Vs/Ps/red_sum are consumed (and Qs visible on the first pass)
    load_tile_bf16(Ks, LK, k, D, Tn, k0, BK);
    load_tile_bf16(Vs, LK, v, D, Tn, k0, BK);
    __syncthreads();

    float s[WC / 8][4];
#pragma unroll
    for (int i = 0; i < WC / 8; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
    scores_tile<D, WC>(s, Qs, LQ, rw, Ks, LK, cw, lane);
    // s[nt][e]: row rw + g (e < 2) or + 8, key k0 + cw + nt*8 + 2t + (e & 1).
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < WC / 8; nt++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        s[nt][e] = k0 + cw + nt * 8 + 2 * t4 + (e & 1) < Tn ? s[nt][e] * sl2 : -INFINITY;
        mx[e >> 1] = fmaxf(mx[e >> 1], s[nt][e]);
      }
    }
#pragma unroll
    for (int x = 0; x < 2; x++) {
      mx[x] = fmaxf(mx[x], __shfl_xor_sync(0xffffffffu, mx[x], 1));
      mx[x] = fmaxf(mx[x], __shfl_xor_sync(0xffffffffu, mx[x], 2));
      if (t4 == 0) red_max[cg * BQ + rw + g + 8 * x] = mx[x];
    }
    __syncthreads();
    float alpha[2], rs[2] = {0.f, 0.f};
#pragma unroll
    for (int x = 0; x < 2; x++) {
      float mt = m[x];
#pragma unroll
      for (int c = 0; c < CG; c++) mt = fmaxf(mt, red_max[c * BQ + rw + g + 8 * x]);
      // Key k0 < T exists for every row, so mt is finite from the first tile on: alpha = 0 there.
      alpha[x] = exp2f(m[x] - mt);
      m[x] = mt;
    }
#pragma unroll
    for (int nt = 0; nt < WC / 8; nt++) {
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const float p0 = exp2f(s[nt][2 * h] - m[h]), p1 = exp2f(s[nt][2 * h + 1] - m[h]);
        rs[h] += p0 + p1;
        *reinterpret_cast<uint32_t*>(&Ps[(rw + g + 8 * h) * LK + cw + nt * 8 + 2 * t4]) = pack_bf16x2(p0, p1);
      }
    }
#pragma unroll
    for (int x = 0; x < 2; x++) {
      rs[x] += __shfl_xor_sync(0xffffffffu, rs[x], 1);
      rs[x] += __shfl_xor_sync(0xffffffffu, rs[x], 2);
      if (t4 == 0) red_sum[cg * BQ + rw + g + 8 * x] = rs[x];
    }
    __syncthreads();  // Ps rows and red_sum are complete
#pragma unroll
    for (int x = 0; x < 2; x++) {
      float ls = 0.f;
#pragma unroll
      for (int c = 0; c < CG; c++) ls += red_sum[c * BQ + rw + g + 8 * x];
      l[x] = l[x] * alpha[x] + ls;
    }
#pragma unroll
    for (int i = 0; i < DW / 8; i++) {
      acc[i][0] *= alpha[0];
      acc[i][1] *= alpha[0];
      acc[i][2] *= alpha[1];
      acc[i][3] *= alpha[1];
    }
    accumulate_tile<BK, DW>(acc, Ps, LK, rw, Vs, LK, dw, lane);
  }

  const float inv0 = 1.f / l[0], inv1 = 1.f / l[1];
  if (cg == 0 && t4 == 0) {
    const int i0 = q0 + rw + g;
    if (i0 < Tn) p.lse[(int64_t)blockIdx.y * Tn + i0] = (m[0] + log2f(l[0])) * 0.6931471805599453f;
    if (i0 + 8 < Tn) p.lse[(int64_t)blockIdx.y * Tn + i0 + 8] = (m[1] + log2f(l[1])) * 0.6931471805599453f;
  }
#pragma unroll
  for (int i = 0; i < DW / 8; i++) {
    acc[i][0] *= inv0;
    acc[i][1] *= inv0;
    acc[i][2] *= inv1;
    acc[i][3] *= inv1;
  }
  __syncthreads();  // every warp is done reading Qs
  stage_tile<DW>(Qs, LQ, rw, dw, acc, 1.f, lane);
  __syncthreads();
  store_tile_bf16((bf16*)p.o + base, Qs, LQ, D, Tn, q0, BQ);
}

// D = 512: 32 queries, 32-key tiles, 8 warps (2 row groups x 4 column groups: 8 keys and 128 channels a warp,
// 64 accumulator floats a thread, 144 registers), 123.5 KiB of shared memory. 64 queries with 16 warps would
// halve the K/V loads per query, but 512 threads leave 128 registers a thread and ptxas spills.
#define FWD_WIDE(D, BQ, BK, NW)                                                                       \
  static_assert(fwd_wide_smem_bytes(D, BQ, BK, NW) <= 227 * 1024, "shared tiles");                  \
  extern "C" __global__ void __launch_bounds__(NW * 32) attention_fwd_mma_d##D##_bf16(AttnParams p) { \
    fwd_wide<D, BQ, BK, NW>(p);                                                                     \
  }
FWD_WIDE(512, 32, 32, 8)
