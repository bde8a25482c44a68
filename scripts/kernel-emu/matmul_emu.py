"""Emulates kernels/matmul.cu bf16gemm::gemm thread by thread (index math, smem layout, fragments).

Run from anywhere: python3 scripts/kernel-emu/matmul_emu.py
"""
import itertools
import numpy as np
from mma_emu import ldmatrix_x4, mma

BK, PAD = 32, 8


def tile_elems(outer, k_contig):
    return outer * (BK + PAD) if k_contig else BK * (outer + PAD)


def load_tile(smem, dst, src, rows, cols, r0, c0, TR, TC, THREADS, VEC):
    cpr = TC // 8
    chunks = TR * cpr
    assert chunks % THREADS == 0
    for tid in range(THREADS):
        for it in range(chunks // THREADS):
            ch = tid + it * THREADS
            tr, tc = ch // cpr, (ch % cpr) * 8
            r, col = r0 + tr, c0 + tc
            d = dst + tr * (TC + PAD) + tc
            assert (d * 2) % 16 == 0
            valid = min(8, cols - col) if r < rows else 0
            valid = max(valid, 0)
            if VEC:
                s = r * cols + col if valid > 0 else 0
                assert (s * 2) % 16 == 0, "cp.async src misaligned"
                assert valid in (0, 8)
            else:
                s = r * cols + col
            for e in range(8):
                if e < valid:
                    assert 0 <= s + e < len(src)
                    smem[d + e] = src[s + e]
                else:
                    smem[d + e] = 0.0


def gemm(a, b, M, N, K, BM, BN, WMS, WNS, TA, TB, VEC):
    THREADS = WMS * WNS * 32
    WM, WN = BM // WMS, BN // WNS
    MT, NT = WM // 16, WN // 8
    A_E, B_E = tile_elems(BM, not TA), tile_elems(BN, TB)
    c = np.full(M * N, np.nan)
    for bx, by in itertools.product(range(-(-M // BM)), range(-(-N // BN))):
        m0, n0 = bx * BM, by * BN
        smem = np.full(2 * (A_E + B_E), np.nan)
        acc = [[[[0.0] * 4 for _ in range(32)] for _ in range(MT * NT)] for _ in range(WMS * WNS)]
        ktiles = -(-K // BK)
        for kt in range(ktiles):
            s = kt & 1
            sa, sb = s * (A_E + B_E), s * (A_E + B_E) + A_E
            k0 = kt * BK
            if not TA:
                load_tile(smem, sa, a, M, K, m0, k0, BM, BK, THREADS, VEC)
            else:
                load_tile(smem, sa, a, K, M, k0, m0, BK, BM, THREADS, VEC)
            if not TB:
                load_tile(smem, sb, b, K, N, k0, n0, BK, BN, THREADS, VEC)
            else:
                load_tile(smem, sb, b, N, K, n0, k0, BN, BK, THREADS, VEC)
            for warp in range(WMS * WNS):
                wm, wn = warp // WNS, warp % WNS
                for ks in range(0, BK, 16):
                    fa = []
                    for i in range(MT):
                        mb = wm * WM + i * 16
                        addrs = []
                        for lane in range(32):
                            li, r = lane // 8, lane % 8
                            if not TA:
                                addrs.append(sa + (mb + lane % 16) * (BK + PAD) + ks + (lane // 16) * 8)
                            else:
                                addrs.append(sa + (ks + r + (li // 2) * 8) * (BM + PAD) + mb + (li % 2) * 8)
                        fa.append(ldmatrix_x4(smem, addrs, TA))
                    fb = []
                    for j in range(NT // 2):
                        nb = wn * WN + j * 16
                        addrs = []
                        for lane in range(32):
                            li, r = lane // 8, lane % 8
                            if TB:
                                addrs.append(sb + (nb + r + (li // 2) * 8) * (BK + PAD) + ks + (li % 2) * 8)
                            else:
                                addrs.append(sb + (ks + r + (li % 2) * 8) * (BN + PAD) + nb + (li // 2) * 8)
                        fb.append(ldmatrix_x4(smem, addrs, not TB))
                    for i in range(MT):
                        for j in range(NT):
                            bj = [fb[j // 2][lane][(j % 2) * 2:(j % 2) * 2 + 2] for lane in range(32)]
                            mma(acc[warp][i * NT + j], fa[i], bj)
        for warp in range(WMS * WNS):
            wm, wn = warp // WNS, warp % WNS
            for lane in range(32):
                g, t = lane // 4, lane % 4
                for i in range(MT):
                    for h in range(2):
                        row = m0 + wm * WM + i * 16 + g + h * 8
                        if row >= M:
                            continue
                        for j in range(NT):
                            col = n0 + wn * WN + j * 8 + 2 * t
                            v = acc[warp][i * NT + j][lane]
                            if col + 1 < N and N % 2 == 0:
                                assert (row * N + col) % 2 == 0
                                c[row * N + col] = v[2 * h]
                                c[row * N + col + 1] = v[2 * h + 1]
                            else:
                                if col < N:
                                    c[row * N + col] = v[2 * h]
                                if col + 1 < N:
                                    c[row * N + col + 1] = v[2 * h + 1]
    return c


def main():
    rng = np.random.default_rng(0)
    shapes = [(1, 1, 1), (17, 33, 65), (70, 40, 24), (130, 9, 72), (64, 64, 64), (3, 48, 136)]
    n = 0
    for (M, K, N) in shapes:
        A = rng.standard_normal((M, K))
        B = rng.standard_normal((K, N))
        want = A @ B
        for TA, TB in itertools.product([False, True], repeat=2):
            a = (A.T if TA else A).copy().ravel()
            b = (B.T if TB else B).copy().ravel()
            a_cols, b_cols = (M if TA else K), (K if TB else N)
            vecs = [False] + ([True] if a_cols % 8 == 0 and b_cols % 8 == 0 else [])
            for (BM, BN, WMS, WNS) in [(64, 64, 2, 2), (128, 128, 2, 4)]:
                for VEC in vecs:
                    got = gemm(a, b, M, N, K, BM, BN, WMS, WNS, TA, TB, VEC).reshape(M, N)
                    err = np.abs(got - want).max()
                    assert err < 1e-9, (M, K, N, TA, TB, BM, VEC, err)
                    n += 1
        print("ok", (M, K, N), flush=True)
    print(f"matmul emulation: {n} configurations match A @ B")


if __name__ == "__main__":
    main()
