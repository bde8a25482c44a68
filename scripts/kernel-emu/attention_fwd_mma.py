# Lane-level emulation of fwd_mma in kernels/attention.cu (the tensor-core attention forward) on the CPU:
# ldmatrix(.trans) and mma.m16n8k16 follow the PTX ISA fragment layouts (see kernels/mma.cuh), the kernel's
# shared-memory address math, masking and online softmax are copied line for line, and the result is compared
# with a float64 softmax(Q^T K / sqrt(D)) V over shapes with partial and tiny tiles. Unwritten shared memory is
# NaN, and -inf - -inf in the softmax raises, so a wrong index or a fully masked tile shows up as a failure.
# Run: python3 scripts/kernel-emu/attention_fwd_mma.py  (numpy; a few seconds). Keep it in step with the kernel.
import numpy as np, sys

def bf16(x):
    x = np.asarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)

LANES = np.arange(32)
G, T4 = LANES >> 2, LANES & 3

def ldmatrix_x4(smem, addr, trans):
    # addr[lane] = element index of the row start given by that lane; matrix i rows from lanes 8i..8i+7.
    for a in addr: assert a % 8 == 0, "16-byte alignment"
    r = np.zeros((32, 4, 2), np.float32)
    for i in range(4):
        M = np.stack([smem[addr[8 * i + rr]: addr[8 * i + rr] + 8] for rr in range(8)])  # [8][8]
        assert M.shape == (8, 8)
        if trans:
            r[:, i, 0] = M[2 * T4, G]; r[:, i, 1] = M[2 * T4 + 1, G]
        else:
            r[:, i, 0] = M[G, 2 * T4]; r[:, i, 1] = M[G, 2 * T4 + 1]
    return r

def mma(d, a, b):
    # d [32][4] f32, a [32][4][2] bf16 values, b [32][2][2].
    A = np.zeros((16, 16)); B = np.zeros((16, 8))
    for L in range(32):
        g, t = L >> 2, L & 3
        for h in range(2):
            A[g, 2 * t + h] = a[L, 0, h]; A[g + 8, 2 * t + h] = a[L, 1, h]
            A[g, 2 * t + 8 + h] = a[L, 2, h]; A[g + 8, 2 * t + 8 + h] = a[L, 3, h]
            B[2 * t + h, g] = b[L, 0, h]; B[2 * t + 8 + h, g] = b[L, 1, h]
    C = np.zeros((16, 8))
    for L in range(32):
        g, t = L >> 2, L & 3
        C[g, 2 * t], C[g, 2 * t + 1], C[g + 8, 2 * t], C[g + 8, 2 * t + 1] = d[L]
    C = C + A @ B
    out = np.zeros((32, 4), np.float32)
    for L in range(32):
        g, t = L >> 2, L & 3
        out[L] = C[g, 2 * t], C[g, 2 * t + 1], C[g + 8, 2 * t], C[g + 8, 2 * t + 1]
    return out

def fwd_mma(q, k, v, D, BK):
    # q, k, v: [D, Tn] bf16-valued float32 arrays of one (b, h).
    Tn = q.shape[1]; BQ = 64; LDQ = BQ + 8; LDK = BK + 8
    out = np.zeros((D, Tn), np.float32); lse = np.zeros(Tn, np.float32)
    sl2 = np.float32(1 / np.sqrt(D)) * np.float32(1.4426950408889634)
    for q0 in range(0, Tn, BQ):
        smem = np.full(D * LDQ + 2 * D * LDK, np.nan, np.float32)  # NaN = never written
        Qs, Ks, Vs = 0, D * LDQ, D * LDQ + D * LDK
        def load(dst, ld, src, t0, cols):
            if Tn % 8 == 0:  # the cp.async path: 16-byte chunks, both addresses 16-byte aligned, all in or all out
                for d in range(D):
                    for j in range(0, cols, 8):
                        assert (dst + d * ld + j) % 8 == 0 and (d * Tn + t0 + j) % 8 == 0
                        assert (t0 + j < Tn) == (t0 + j + 7 < Tn)
            for d in range(D):
                for j in range(cols):
                    smem[dst + d * ld + j] = src[d, t0 + j] if t0 + j < Tn else 0.0
        load(Qs, LDQ, q, q0, BQ)
        st = []
        for warp in range(4):
            st.append(dict(acc=np.zeros((D // 8, 32, 4), np.float32), m=np.full((2, 32), -np.inf, np.float32),
                           l=np.zeros((2, 32), np.float32)))
        for k0 in range(0, Tn, BK):
            load(Ks, LDK, k, k0, BK); load(Vs, LDK, v, k0, BK)
            for warp in range(4):
                S = st[warp]; lane = LANES
                s = np.zeros((BK // 8, 32, 4), np.float32)
                for kk in range(D // 16):
                    a = ldmatrix_x4(smem, Qs + (kk * 16 + (lane & 7) + ((lane >> 4) & 1) * 8) * LDQ + warp * 16 +
                                    ((lane >> 3) & 1) * 8, True)
                    for np_ in range(BK // 16):
                        b = ldmatrix_x4(smem, Ks + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LDK + np_ * 16 +
                                        ((lane >> 4) & 1) * 8, True)
                        s[2 * np_] = mma(s[2 * np_], a, b[:, 0:2]); s[2 * np_ + 1] = mma(s[2 * np_ + 1], a, b[:, 2:4])
                mx = S['m'].copy()
                for nt in range(BK // 8):
                    for e in range(4):
                        j = k0 + nt * 8 + 2 * T4 + (e & 1)
                        s[nt, :, e] = np.where(j < Tn, s[nt, :, e] * sl2, -np.inf)
                        mx[e >> 1] = np.fmax(mx[e >> 1], s[nt, :, e])
                def quad(x, f):
                    x = f(x, x[LANES ^ 1]); return f(x, x[LANES ^ 2])
                alpha = np.zeros((2, 32), np.float32)
                for x in range(2):
                    mx[x] = quad(mx[x], np.fmax)
                    with np.errstate(invalid='raise'):
                        alpha[x] = np.exp2(S['m'][x] - mx[x])
                    S['m'][x] = mx[x]
                rs = np.zeros((2, 32), np.float32)
                for nt in range(BK // 8):
                    for e in range(4):
                        s[nt, :, e] = np.exp2(s[nt, :, e] - mx[e >> 1]); rs[e >> 1] += s[nt, :, e]
                for x in range(2):
                    rs[x] = quad(rs[x], np.add); S['l'][x] = S['l'][x] * alpha[x] + rs[x]
                S['acc'][:, :, 0:2] *= alpha[0][None, :, None]; S['acc'][:, :, 2:4] *= alpha[1][None, :, None]
                for kc in range(BK // 16):
                    a = np.zeros((32, 4, 2), np.float32)
                    a[:, 0] = bf16(s[2 * kc][:, 0:2]); a[:, 1] = bf16(s[2 * kc][:, 2:4])
                    a[:, 2] = bf16(s[2 * kc + 1][:, 0:2]); a[:, 3] = bf16(s[2 * kc + 1][:, 2:4])
                    for dp in range(D // 16):
                        b = ldmatrix_x4(smem, Vs + (dp * 16 + (lane & 7) + ((lane >> 4) & 1) * 8) * LDK + kc * 16 +
                                        ((lane >> 3) & 1) * 8, False)
                        S['acc'][2 * dp] = mma(S['acc'][2 * dp], a, b[:, 0:2])
                        S['acc'][2 * dp + 1] = mma(S['acc'][2 * dp + 1], a, b[:, 2:4])
        for warp in range(4):
            S = st[warp]; row = warp * 16 + G
            for x, rr in ((0, row), (1, row + 8)):
                for L in range(32):
                    if T4[L] == 0 and q0 + rr[L] < Tn:
                        lse[q0 + rr[L]] = (S['m'][x][L] + np.log2(S['l'][x][L])) * 0.6931471805599453
            inv = 1 / S['l']
            for dt in range(D // 8):
                d = dt * 8 + 2 * T4
                smem[Qs + d * LDQ + row] = bf16(S['acc'][dt, :, 0] * inv[0])
                smem[Qs + (d + 1) * LDQ + row] = bf16(S['acc'][dt, :, 1] * inv[0])
                smem[Qs + d * LDQ + row + 8] = bf16(S['acc'][dt, :, 2] * inv[1])
                smem[Qs + (d + 1) * LDQ + row + 8] = bf16(S['acc'][dt, :, 3] * inv[1])
        for d in range(D):
            for j in range(BQ):
                if q0 + j < Tn: out[d, q0 + j] = smem[Qs + d * LDQ + j]
    return out, lse

def naive(q, k, v, D):
    s = (q.T.astype(np.float64) @ k.astype(np.float64)) / np.sqrt(D)
    m = s.max(1, keepdims=True); p = np.exp(s - m); l = p.sum(1, keepdims=True)
    return (v.astype(np.float64) @ (p / l).T), (m + np.log(l))[:, 0]

rng = np.random.default_rng(0)
fails = 0
for D, BK, Tn in [(32, 64, 1), (32, 64, 17), (32, 64, 64), (32, 64, 130), (32, 64, 136), (64, 64, 8), (64, 64, 5), (64, 64, 100),
                  (128, 32, 33), (128, 32, 72), (256, 32, 40)]:
    q, k, v = (bf16(rng.standard_normal((D, Tn)) * 1.5) for _ in range(3))
    o, lse = fwd_mma(q, k, v, D, BK)
    ro, rl = naive(q, k, v, D)
    eo = np.abs(o - ro).max() / (np.abs(ro).max()); el = np.abs(lse - rl).max()
    ok = eo < 2e-2 and el < 2e-2
    fails += not ok
    print(f"D {D} BK {BK} T {Tn}: out rel err {eo:.2e}, lse abs err {el:.2e}", "OK" if ok else "FAIL", flush=True)
sys.exit(1 if fails else 0)
