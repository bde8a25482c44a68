// attention_bwd_mma.cu: the attention backward on tensor cores (bf16 in, mma.m16n8k16 with f32 accumulate),
// flash style: P and dS are rebuilt tile by tile from the saved lse and delta = rowsum(dO * O), never stored
// beyond one tile in shared memory. Layout [B, C, T] channel-first as in attention.cu.
// defines:
//   attention_bwd_mma_dkdv_d{32,64,128,256,512}_bf16  dK, dV: one block per key tile, loops over query tiles
//   attention_bwd_mma_dq_d{32,64,128,256,512}_bf16    dQ: one block per query tile, loops over key tiles
//
// Why two kernels (S and dP recomputed twice, 7 tile GEMMs where FlashAttention-2 does 5): FA2 adds every key
// tile's dQ contribution with f32 atomics, whose order changes from run to run; our gradients are bitwise
// reproducible (tests/trainer.rs replays a step and compares). A deterministic single pass would need dQ
// partials per key tile in memory (T/BK slabs of [T, D] f32 per head) or key tiles that take turns on dQ; the
// second recompute costs 40 % more tensor-core work and no memory.
//
// Both kernels are one template. The block owns BR "rows" (keys for dK/dV, queries for dQ) whose two operands
// R1, R2 it loads once, and loops over tiles of BC "columns" with operands C1, C2:
//   dK, dV: R1 = K, R2 = V, C1 = Q, C2 = dO;  S^T = K^T Q, dP^T = V^T dO, dV += P^T dO^T, dK += dS^T Q^T
//   dQ:     R1 = Q, R2 = dO, C1 = K, C2 = V;  S = Q^T K, dP = dO^T V,     dQ += dS K^T
// (each operand [D][tokens] as stored; P = exp(scale S - lse), dS = P (dP - delta), both query-indexed).
// Per column tile, with NW warps:
//   phase 1: warp w computes a 16 x WC piece of S and dP (rows 16 (w % RT), columns WC (w / RT)), reducing
//            over all D channels, turns it into P and dS and stores both as bf16 tiles [BR][BC] in shared memory;
//   phase 2: warp w accumulates a 16 x DW piece of the outputs (channels DW (w / RT)) over the BC columns,
//            A operand = the P/dS tile, B operand = C1/C2.
// Splitting phase 2 by channels keeps the accumulators at 2 BR D / (32 NW) floats a thread (D = 512 fits),
// which the FA2 register trick (P straight from the S accumulators) cannot: it needs the whole row of D.
//
// Fragments (mma.cuh; g = lane / 4, t = lane % 4). Phase 1 reads both operands transposed ([d][token] in shared
// memory, d is the reduction): ldmatrix.trans gives A (row g, d 2t..) = X[d 2t..][row g] and B (d 2t.., col g)
// = Y[d 2t..][col g], as in the tensor-core forward. Phase 2's A = P/dS [row][column] is row-major with the
// reduction (columns) contiguous and B (k = column, n = d) = C[d][column] also has k contiguous: plain ldmatrix
// for both. Every shared row is padded by 8 elements (16 bytes) so an ldmatrix's 8 row addresses hit distinct
// bank groups. The outputs are staged through the R1/R2 tiles ([d][row], the global layout) for stores along
// contiguous tokens.
#include "attention.cuh"

// Shared memory (bytes) of one instantiation; mirrored by `BwdTiles::smem` in src/ops/attention/cuda.rs.
__host__ __device__ constexpr int bwd_smem_bytes(int D, int BR, int BC, int stages, bool key_rows) {
  return 2 * (2 * D * (BR + 8) + stages * 2 * D * (BC + 8) + (key_rows ? 2 : 1) * BR * (BC + 8)) +
         8 * (key_rows ? stages * BC : BR);
}

// STAGES = 2: the column tiles (and their stats) in a two-stage ring, the next tile's cp.async issued before
// this tile's MMAs (see the instantiations for where).
template <int D, int BR, int BC, int NW, int STAGES, bool KEY_ROWS>
__device__ void bwd_mma(const AttnParams& p) {
  constexpr int RT = BR / 16;       // 16-row tiles of the block
  constexpr int WC = BC * RT / NW;  // phase-1 columns per warp
  constexpr int DW = D * RT / NW;   // phase-2 channels per warp
  static_assert(BR % 16 == 0 && BC % 16 == 0 && D % 16 == 0 && NW % RT == 0, "tile shapes");
  static_assert(WC % 8 == 0 && WC * (NW / RT) == BC && DW % 16 == 0 && DW * (NW / RT) == D, "warp split");
  constexpr int LR = BR + 8, LC = BC + 8, NQ = KEY_ROWS ? BC : BR;  // NQ: queries the softmax stats cover
  DYNAMIC_SHARED(__align__(16) bf16, smem);
  bf16* R1s = smem;                          // [D][LR]
  bf16* R2s = R1s + D * LR;                  // [D][LR]
  bf16* C1s0 = R2s + D * LR;                 // [STAGES][D][LC]
  bf16* C2s0 = C1s0 + STAGES * D * LC;       // [STAGES][D][LC]
  bf16* dSs = C2s0 + STAGES * D * LC;        // [BR][LC]
  bf16* Ps = dSs + BR * LC;                  // [BR][LC], dK/dV only
  constexpr int SS = KEY_ROWS ? STAGES : 1;  // stats stages: per column tile for dK/dV, once for dQ
  float* lse2_s0 = reinterpret_cast<float*>(dSs + (KEY_ROWS ? 2 : 1) * BR * LC);  // [SS][NQ], lse in log2 units
  float* delta_s0 = lse2_s0 + SS * NQ;                                              // [SS][NQ]

  const int Tn = p.T;
  const int64_t base = head_offset(p);
  const bf16* q = (const bf16*)p.q + base;
  const bf16* k = (const bf16*)p.k + base;
  const bf16* v = (const bf16*)p.v + base;
  const bf16* dout = (const bf16*)p.dout + base;
  const bf16* r1 = KEY_ROWS ? k : q;
  const bf16* r2 = KEY_ROWS ? v : dout;
  const bf16* c1 = KEY_ROWS ? q : k;
  const bf16* c2 = KEY_ROWS ? dout : v;
  const float* lse = p.lse + (int64_t)blockIdx.y * Tn;
  const float* delta = p.delta + (int64_t)blockIdx.y * Tn;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int row0 = blockIdx.x * BR;
  const int rw = (warp % RT) * 16, cw = (warp / RT) * WC, dw = (warp / RT) * DW;
  const float sl2 = p.scale * LOG2E;

  // Queries past T get lse = +inf, so P = 0 and dS = 0 there.
  auto load_stats = [&](int stage, int t0) {
    for (int i = tid; i < NQ; i += NW * 32) {
      const bool in = t0 + i < Tn;
      lse2_s0[stage * NQ + i] = in ? lse[t0 + i] * LOG2E : INFINITY;
      delta_s0[stage * NQ + i] = in ? delta[t0 + i] : 0.f;
    }
  };
  // The row operands and the first column tile in one cp.async group; the stats by plain loads (the barrier
  // at the loop's first wait publishes both).
  issue_tile_bf16(R1s, LR, r1, D, Tn, row0, BR);
  issue_tile_bf16(R2s, LR, r2, D, Tn, row0, BR);
  issue_tile_bf16(C1s0, LC, c1, D, Tn, 0, BC);
  issue_tile_bf16(C2s0, LC, c2, D, Tn, 0, BC);
  cp_async_commit();
  load_stats(0, KEY_ROWS ? 0 : row0);

  float acc1[DW / 8][4], acc2[KEY_ROWS ? DW / 8 : 1][4];  // dK or dQ; dV
#pragma unroll
  for (int i = 0; i < DW / 8; i++) acc1[i][0] = acc1[i][1] = acc1[i][2] = acc1[i][3] = 0.f;
#pragma unroll
  for (int i = 0; i < (KEY_ROWS ? DW / 8 : 1); i++) acc2[i][0] = acc2[i][1] = acc2[i][2] = acc2[i][3] = 0.f;

  for (int c0 = 0, st = 0; c0 < Tn; c0 += BC, st = (st + 1) % STAGES) {
    __syncthreads();  // the previous tile's Ps/dSs and the stage refilled below are consumed
    ring_step<STAGES>(c0, BC, Tn, st, [&](int ns, int t) {
      issue_tile_bf16(C1s0 + ns * D * LC, LC, c1, D, Tn, t, BC);
      issue_tile_bf16(C2s0 + ns * D * LC, LC, c2, D, Tn, t, BC);
      if (KEY_ROWS) load_stats(ns, t);
    });
    __syncthreads();  // this tile (and on the first pass the row operands) landed for every thread
    const bf16* C1s = C1s0 + st * D * LC;
    const bf16* C2s = C2s0 + st * D * LC;
    const float* lse2_s = lse2_s0 + (KEY_ROWS ? st : 0) * NQ;
    const float* delta_s = delta_s0 + (KEY_ROWS ? st : 0) * NQ;

    float s[WC / 8][4], dp[WC / 8][4];
#pragma unroll
    for (int i = 0; i < WC / 8; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = dp[i][0] = dp[i][1] = dp[i][2] = dp[i][3] = 0.f;
    scores_tile<D, WC>(s, R1s, LR, rw, C1s, LC, cw, lane);
    scores_tile<D, WC>(dp, R2s, LR, rw, C2s, LC, cw, lane);
    // s[nt][e]: row rw + g (e < 2) or + 8, column cw + nt*8 + 2t + (e & 1). In dK/dV the rows past T are keys
    // that do not exist: their zero-filled K gives P = exp(-lse) (inf if lse < -88), which reaches only their
    // own rows of dK/dV (an MMA's output row depends on its A row alone), and those are never stored. Masking
    // them here cost ptxas 7-90 registers and a spill at D = 64.
#pragma unroll
    for (int nt = 0; nt < WC / 8; nt++) {
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int row = rw + g + 8 * h, col = cw + nt * 8 + 2 * t4;
        float pr[2], ds[2];
#pragma unroll
        for (int x = 0; x < 2; x++) {
          const int qi = KEY_ROWS ? col + x : row;
          const bool key_ok = KEY_ROWS || c0 + col + x < Tn;
          pr[x] = key_ok ? exp2f(s[nt][2 * h + x] * sl2 - lse2_s[qi]) : 0.f;
          ds[x] = pr[x] * (dp[nt][2 * h + x] - delta_s[qi]);
        }
        *reinterpret_cast<uint32_t*>(&dSs[row * LC + col]) = pack_bf16x2(ds[0], ds[1]);
        if (KEY_ROWS) *reinterpret_cast<uint32_t*>(&Ps[row * LC + col]) = pack_bf16x2(pr[0], pr[1]);
      }
    }
    __syncthreads();  // phase 2 reads whole rows of the P/dS tiles, written by NW / RT warps
    accumulate_tile<BC, DW>(acc1, dSs, LC, rw, C1s, LC, dw, lane);
    if constexpr (KEY_ROWS) accumulate_tile<BC, DW>(acc2, Ps, LC, rw, C2s, LC, dw, lane);
  }

  __syncthreads();  // R1s/R2s are free: stage the outputs there
  stage_tile<DW>(R1s, LR, rw, dw, acc1, p.scale, lane);  // dK = scale dS^T Q, dQ = scale dS K
  if constexpr (KEY_ROWS) stage_tile<DW>(R2s, LR, rw, dw, acc2, 1.f, lane);
  __syncthreads();
  store_tile_bf16((bf16*)(KEY_ROWS ? p.dk : p.dq) + base, R1s, LR, D, Tn, row0, BR);
  if (KEY_ROWS) store_tile_bf16((bf16*)p.dv + base, R2s, LR, D, Tn, row0, BR);
}

// Tiles per head dim (rows BR, columns BC, warps NW, column stages) for dK/dV and for dQ, chosen so that the
// accumulators stay at 32-64 floats a thread and the shared tiles within 227 KiB; D = 512 (the GSURE paper's
// one head at 8x8 and 16x16) takes 16 keys x 64 queries (197 KiB) for dK/dV and 32 x 32 (163 KiB) for dQ, both
// with 8 warps. Two column stages wherever their shared memory leaves at least the blocks per SM that the
// registers allow (all but dK/dV at D >= 128 and dQ at D = 512). __launch_bounds__ names no minimum of blocks
// per SM: with one (even 1) ptxas took up to 255 registers here and spilled.
// Mirrored by `BwdTiles::for_head_dim` in src/ops/attention/cuda.rs.
#define BWD_MMA(D, BRK, BCK, NWK, SK, BRQ, BCQ, NWQ, SQ)                                                       \
  static_assert(bwd_smem_bytes(D, BRK, BCK, SK, true) <= 227 * 1024 &&                                       \
                    bwd_smem_bytes(D, BRQ, BCQ, SQ, false) <= 227 * 1024,                                     \
                "shared tiles");                                                                              \
  extern "C" __global__ void __launch_bounds__(NWK * 32) attention_bwd_mma_dkdv_d##D##_bf16(AttnParams p) {     \
    bwd_mma<D, BRK, BCK, NWK, SK, true>(p);                                                                    \
  }                                                                                                            \
  extern "C" __global__ void __launch_bounds__(NWQ * 32) attention_bwd_mma_dq_d##D##_bf16(AttnParams p) {       \
    bwd_mma<D, BRQ, BCQ, NWQ, SQ, false>(p);                                                                   \
  }
BWD_MMA(32, 64, 64, 4, 2, 64, 64, 4, 2)
BWD_MMA(64, 64, 64, 4, 2, 64, 64, 4, 2)
BWD_MMA(128, 32, 64, 4, 1, 64, 32, 4, 2)
BWD_MMA(256, 16, 64, 4, 1, 64, 32, 8, 2)
BWD_MMA(512, 16, 64, 8, 1, 32, 32, 8, 1)
