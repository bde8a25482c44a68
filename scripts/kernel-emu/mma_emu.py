"""Warp-level emulation of ldmatrix / mma.m16n8k16 (PTX ISA fragment layouts) over a flat shared array."""
import numpy as np


def ldmatrix_x4(smem, addrs, trans):
    """addrs[lane] = element index of the row start given by that lane. Returns regs[lane][i] = (lo, hi)."""
    for a in addrs:
        assert (a * 2) % 16 == 0, f"ldmatrix row address not 16-byte aligned: elem {a}"
        assert 0 <= a and a + 8 <= len(smem), "ldmatrix out of smem"
    regs = [[None] * 4 for _ in range(32)]
    for i in range(4):
        rows = [smem[addrs[8 * i + j]: addrs[8 * i + j] + 8] for j in range(8)]  # 8x8 matrix, rows[j][c]
        for lane in range(32):
            g, t = lane // 4, lane % 4
            if not trans:
                regs[lane][i] = (rows[g][2 * t], rows[g][2 * t + 1])
            else:
                regs[lane][i] = (rows[2 * t][g], rows[2 * t + 1][g])
    return regs


def lds32(smem, idx):
    assert idx % 2 == 0, "32-bit smem load of bf16 pair at odd element index"
    assert 0 <= idx and idx + 2 <= len(smem)
    return (smem[idx], smem[idx + 1])


def mma(acc, a, b):
    """acc[lane][4], a[lane][4] pairs, b[lane][2] pairs: D = A*B + C per PTX m16n8k16 layouts."""
    A = np.zeros((16, 16))
    B = np.zeros((16, 8))
    for lane in range(32):
        g, t = lane // 4, lane % 4
        for r, (row, col) in enumerate([(g, 2 * t), (g + 8, 2 * t), (g, 2 * t + 8), (g + 8, 2 * t + 8)]):
            A[row, col], A[row, col + 1] = a[lane][r]
        for r, k in enumerate([2 * t, 2 * t + 8]):
            B[k, g], B[k + 1, g] = b[lane][r]
    D = A @ B
    for lane in range(32):
        g, t = lane // 4, lane % 4
        acc[lane][0] += D[g, 2 * t]
        acc[lane][1] += D[g, 2 * t + 1]
        acc[lane][2] += D[g + 8, 2 * t]
        acc[lane][3] += D[g + 8, 2 * t + 1]
