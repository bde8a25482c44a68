"""Emulates kernels/conv.cu (loaders, both GEMM bodies, store_c) and the run_gemm/wgrad launch math.

Run from anywhere: python3 scripts/kernel-emu/conv_emu.py
"""
import itertools
import numpy as np
from mma_emu import lds32, mma


class P:
    pass


def mkp(n, c, h, w, co, k, s, pad):
    p = P()
    p.n, p.c, p.h, p.w, p.co, p.k, p.stride, p.pad = n, c, h, w, co, k, s, pad
    p.ho = (h + 2 * pad - k) // s + 1
    p.wo = (w + 2 * pad - k) // s + 1
    return p


def cdiv(a, b):  # C integer division (truncates toward zero)
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def rd(arr, idx):
    assert 0 <= idx < len(arr), f"OOB read {idx} of {len(arr)}"
    return arr[idx]


def u32lt(a, b):
    return (a & 0xFFFFFFFF) < b


class LoadXByPixel:
    def init(s, p, x, m):
        s.valid = m < p.gm
        q = p.ho * p.wo
        img = m // q if s.valid else 0
        pix = m - img * q if s.valid else 0
        oh = pix // p.wo; ow = pix - oh * p.wo
        s.ih0 = oh * p.stride - p.pad; s.iw0 = ow * p.stride - p.pad
        s.x = x; s.base = img * p.c * p.h * p.w

    def load8(s, p, k0):
        kk = p.k * p.k
        c = k0 // kk; r = k0 - c * kk
        kh = r // p.k; kw = r - kh * p.k
        v = []
        for i in range(8):
            ih, iw = s.ih0 + kh, s.iw0 + kw
            inn = s.valid and k0 + i < p.gk and u32lt(ih, p.h) and u32lt(iw, p.w)
            v.append(rd(s.x, s.base + (c * p.h + ih) * p.w + iw) if inn else 0.0)
            kw += 1
            if kw == p.k:
                kw = 0; kh += 1
                if kh == p.k:
                    kh = 0; c += 1
        return v


class LoadWByOut:
    def init(s, p, w, co):
        s.valid = co < p.gn
        s.w = w; s.row = (co if s.valid else 0) * p.gk

    def load8(s, p, k0):
        return [rd(s.w, s.row + k0 + i) if (s.valid and k0 + i < p.gk) else 0.0 for i in range(8)]


class LoadDyByInputPixel:
    def init(s, p, dy, m):
        s.valid = m < p.gm
        hw = p.h * p.w
        img = m // hw if s.valid else 0
        pix = m - img * hw if s.valid else 0
        ih = pix // p.w; iw = pix - ih * p.w
        s.th0 = ih + p.pad; s.tw0 = iw + p.pad
        s.dy = dy; s.base = img * p.co * p.ho * p.wo

    def load8(s, p, k0):
        kk = p.k * p.k
        co = k0 // kk; r = k0 - co * kk
        kh = r // p.k; kw = r - kh * p.k
        v = []
        for i in range(8):
            th, tw = s.th0 - kh, s.tw0 - kw
            inn = s.valid and k0 + i < p.gk and th >= 0 and tw >= 0
            oh, ow = th, tw
            if p.stride != 1:
                oh = cdiv(th, p.stride); ow = cdiv(tw, p.stride)
                inn = inn and oh * p.stride == th and ow * p.stride == tw
            inn = inn and oh < p.ho and ow < p.wo
            v.append(rd(s.dy, s.base + (co * p.ho + oh) * p.wo + ow) if inn else 0.0)
            kw += 1
            if kw == p.k:
                kw = 0; kh += 1
                if kh == p.k:
                    kh = 0; co += 1
        return v


class LoadWByIn:
    def init(s, p, w, c):
        s.valid = c < p.gn
        s.c = c if s.valid else 0
        s.w = w

    def load8(s, p, k0):
        kk = p.k * p.k
        co = k0 // kk; r = k0 - co * kk
        v = []
        for i in range(8):
            v.append(rd(s.w, (co * p.c + s.c) * kk + r) if (s.valid and k0 + i < p.gk) else 0.0)
            r += 1
            if r == kk:
                r = 0; co += 1
        return v


class LoadDyByOut:
    def init(s, p, dy, co):
        s.valid = co < p.gm
        s.co = co if s.valid else 0
        s.dy = dy

    def load8(s, p, k0):
        q = p.ho * p.wo
        img = k0 // q; pix = k0 - img * q
        v = []
        for i in range(8):
            v.append(rd(s.dy, (img * p.co + s.co) * q + pix) if (s.valid and k0 + i < p.gk) else 0.0)
            pix += 1
            if pix == q:
                pix = 0; img += 1
        return v


class LoadXByTap:
    def init(s, p, x, j):
        s.valid = j < p.gn
        kk = p.k * p.k
        jj = j if s.valid else 0
        s.c = jj // kk; r = jj - s.c * kk
        s.kh = r // p.k; s.kw = r - s.kh * p.k
        s.x = x

    def load8(s, p, k0):
        q = p.ho * p.wo
        img = k0 // q; pix = k0 - img * q
        oh = pix // p.wo; ow = pix - oh * p.wo
        v = []
        for i in range(8):
            ih = oh * p.stride - p.pad + s.kh; iw = ow * p.stride - p.pad + s.kw
            inn = s.valid and k0 + i < p.gk and u32lt(ih, p.h) and u32lt(iw, p.w)
            v.append(rd(s.x, ((img * p.c + s.c) * p.h + ih) * p.w + iw) if inn else 0.0)
            ow += 1
            if ow == p.wo:
                ow = 0; oh += 1
                if oh == p.ho:
                    oh = 0; img += 1
        return v


FWD, DGRAD, WGRAD = 0, 1, 2


def store_c(mode, p, out, bias, m, col, v):
    if m >= p.gm or col >= p.gn:
        return
    if mode == FWD:
        q = p.ho * p.wo; img = m // q; pix = m - img * q
        if bias is not None:
            v += bias[col]
        idx = (img * p.co + col) * q + pix
        assert 0 <= idx < len(out)
        assert np.isnan(out[idx]), "fwd element written twice"
        out[idx] = v
    elif mode == DGRAD:
        hw = p.h * p.w; img = m // hw; pix = m - img * hw
        idx = (img * p.c + col) * hw + pix
        assert 0 <= idx < len(out)
        assert np.isnan(out[idx]), "dgrad element written twice"
        out[idx] = v
    else:
        idx = m * p.gn + col
        assert 0 <= idx < len(out)
        out[idx] += v


def gemm_f32(mode, p, LA, LB, a_src, b_src, bias, out, grid):
    BM, BN, BK, T, LD = 64, 64, 32, 256, 68
    for bx, by, bz in itertools.product(*map(range, grid)):
        As = np.full((2, BK, LD), np.nan); Bs = np.full((2, BK, LD), np.nan)
        bm, bn = bx * BM, by * BN
        k_begin = bz * p.k_split
        k_end = min(p.gk, k_begin + p.k_split)
        tiles = (k_end - k_begin + BK - 1) // BK if k_end > k_begin else 0
        la = [LA() for _ in range(T)]; lb = [LB() for _ in range(T)]
        for tid in range(T):
            la[tid].init(p, a_src, bm + tid % BM); lb[tid].init(p, b_src, bn + tid % BM)
        acc = np.zeros((T, 4, 4))
        for t in range(tiles):
            cur = t & 1
            for tid in range(T):
                lrow, lk = tid % BM, (tid // BM) * 8
                ra = la[tid].load8(p, k_begin + t * BK + lk)
                rb = lb[tid].load8(p, k_begin + t * BK + lk)
                for i in range(8):
                    As[cur][lk + i][lrow] = ra[i]; Bs[cur][lk + i][lrow] = rb[i]
            for tid in range(T):
                tx, ty = tid % 16, tid // 16
                for kk in range(BK):
                    assert ((kk * LD + tx * 4) * 4) % 16 == 0
                    av = As[cur][kk][tx * 4: tx * 4 + 4]; bv = Bs[cur][kk][ty * 4: ty * 4 + 4]
                    acc[tid] += np.outer(av, bv)
        for tid in range(T):
            tx, ty = tid % 16, tid // 16
            for i, j in itertools.product(range(4), range(4)):
                store_c(mode, p, out, bias, bm + tx * 4 + i, bn + ty * 4 + j, acc[tid][i][j])


def gemm_bf16(mode, p, LA, LB, a_src, b_src, bias, out, grid):
    BM, BN, BK, T, LD = 128, 128, 32, 256, 40
    for bx, by, bz in itertools.product(*map(range, grid)):
        As = np.full(2 * BM * LD, np.nan); Bs = np.full(2 * BN * LD, np.nan)
        bm, bn = bx * BM, by * BN
        k_begin = bz * p.k_split
        k_end = min(p.gk, k_begin + p.k_split)
        tiles = (k_end - k_begin + BK - 1) // BK if k_end > k_begin else 0
        la = [LA() for _ in range(T)]; lb = [LB() for _ in range(T)]
        for tid in range(T):
            la[tid].init(p, a_src, bm + tid % BM); lb[tid].init(p, b_src, bn + tid % BM)
        acc = [[[[0.0] * 4 for _ in range(32)] for _ in range(16)] for _ in range(8)]
        for t in range(tiles):
            cur = t & 1
            kt = k_begin + t * BK
            for tid in range(T):
                lrow, lk0 = tid % BM, (tid // BM) * 8
                for lk in (lk0, lk0 + 16):
                    ra = la[tid].load8(p, kt + lk); rb = lb[tid].load8(p, kt + lk)
                    off = (cur * BM + lrow) * LD + lk
                    assert (off * 2) % 16 == 0
                    As[off: off + 8] = ra; Bs[off: off + 8] = rb
            for warp in range(8):
                wm, wn = (warp // 4) * 64, (warp % 4) * 32
                for kk in range(0, BK, 16):
                    af = [[None] * 32 for _ in range(4)]; bfr = [[None] * 32 for _ in range(4)]
                    for lane in range(32):
                        g, t4 = lane // 4, lane % 4
                        for i in range(4):
                            r0 = (cur * BM + wm + i * 16 + g) * LD + kk + 2 * t4
                            r8 = r0 + 8 * LD
                            af[i][lane] = [lds32(As, r0), lds32(As, r8), lds32(As, r0 + 8), lds32(As, r8 + 8)]
                        for j in range(4):
                            c0 = (cur * BN + wn + j * 8 + g) * LD + kk + 2 * t4
                            bfr[j][lane] = [lds32(Bs, c0), lds32(Bs, c0 + 8)]
                    for i, j in itertools.product(range(4), range(4)):
                        mma(acc[warp][i * 4 + j], af[i], bfr[j])
        for warp in range(8):
            wm, wn = (warp // 4) * 64, (warp % 4) * 32
            for lane in range(32):
                g, t4 = lane // 4, lane % 4
                for i, j in itertools.product(range(4), range(4)):
                    m = bm + wm + i * 16 + g; col = bn + wn + j * 8 + 2 * t4
                    a = acc[warp][i * 4 + j][lane]
                    store_c(mode, p, out, bias, m, col, a[0])
                    store_c(mode, p, out, bias, m, col + 1, a[1])
                    store_c(mode, p, out, bias, m + 8, col, a[2])
                    store_c(mode, p, out, bias, m + 8, col + 1, a[3])


def run_gemm(dtype, p, gm, gn, gk, splits):
    """Mirror of src/ops/conv/cuda.rs run_gemm: fills p.gm/gn/gk/k_split and returns the grid."""
    bm, bn, bk = (128, 128, 32) if dtype == "bf16" else (64, 64, 32)
    k_tiles = -(-gk // bk)
    per_split = -(-k_tiles // max(splits, 1)) * bk
    splits = -(-gk // per_split)
    p.gm, p.gn, p.gk, p.k_split = gm, gn, gk, per_split
    return (-(-gm // bm), -(-gn // bn), splits)


def wgrad_splits(dtype, gm, gn, gk):
    bm, bn, bk = (128, 128, 32) if dtype == "bf16" else (64, 64, 32)
    tiles = -(-gm // bm) * -(-gn // bn)
    return max(min(-(-264 // tiles), -(-gk // (bk * 8))), 1)


def reference(x, w, b, dy, p):
    n, c, h, wd, co, k, s, pad = p.n, p.c, p.h, p.w, p.co, p.k, p.stride, p.pad
    xp = np.zeros((n, c, h + 2 * pad, wd + 2 * pad)); xp[:, :, pad:pad + h, pad:pad + wd] = x
    y = np.zeros((n, co, p.ho, p.wo)); dxp = np.zeros_like(xp); dw = np.zeros_like(w)
    for kh, kw in itertools.product(range(k), range(k)):
        patch = xp[:, :, kh:kh + s * (p.ho - 1) + 1:s, kw:kw + s * (p.wo - 1) + 1:s]  # n c ho wo
        y += np.einsum("nchw,oc->nohw", patch, w[:, :, kh, kw])
        dxp[:, :, kh:kh + s * (p.ho - 1) + 1:s, kw:kw + s * (p.wo - 1) + 1:s] += np.einsum("nohw,oc->nchw", dy, w[:, :, kh, kw])
        dw[:, :, kh, kw] = np.einsum("nohw,nchw->oc", dy, patch)
    y += b[None, :, None, None]
    return y, dxp[:, :, pad:pad + h, pad:pad + wd], dw


def check(case, dtype, rng):
    n, c, h, wd, co, k, s, pad = case
    p = mkp(*case)
    x = rng.standard_normal((n, c, h, wd)); w = rng.standard_normal((co, c, k, k)); b = rng.standard_normal(co)
    dy = rng.standard_normal((n, co, p.ho, p.wo))
    y_ref, dx_ref, dw_ref = reference(x, w, b, dy, p)
    gemm = gemm_bf16 if dtype == "bf16" else gemm_f32
    # fwd
    grid = run_gemm(dtype, p, n * p.ho * p.wo, co, c * k * k, 1)
    y = np.full(y_ref.size, np.nan)
    gemm(FWD, p, LoadXByPixel, LoadWByOut, x.ravel(), w.ravel(), b, y, grid)
    assert not np.isnan(y).any(), "fwd left elements unwritten"
    assert np.abs(y - y_ref.ravel()).max() < 1e-9, ("fwd", case, dtype)
    # dgrad
    grid = run_gemm(dtype, p, n * h * wd, c, co * k * k, 1)
    dx = np.full(dx_ref.size, np.nan)
    gemm(DGRAD, p, LoadDyByInputPixel, LoadWByIn, dy.ravel(), w.ravel(), None, dx, grid)
    assert not np.isnan(dx).any(), "dgrad left elements unwritten"
    assert np.abs(dx - dx_ref.ravel()).max() < 1e-9, ("dgrad", case, dtype)
    # wgrad (split-K, zeroed accumulator)
    gm, gn, gk = co, c * k * k, n * p.ho * p.wo
    splits = wgrad_splits(dtype, gm, gn, gk)
    grid = run_gemm(dtype, p, gm, gn, gk, splits)
    dw = np.zeros(dw_ref.size)
    gemm(WGRAD, p, LoadDyByOut, LoadXByTap, dy.ravel(), x.ravel(), None, dw, grid)
    assert np.abs(dw - dw_ref.ravel()).max() < 1e-9, ("wgrad", case, dtype)
    return grid[2]


def main():
    rng = np.random.default_rng(1)
    cases = [
        (1, 1, 1, 1, 1, 1, 1, 0),
        (3, 5, 13, 11, 7, 3, 1, 1),
        (3, 5, 13, 11, 7, 3, 2, 1),
        (2, 3, 9, 7, 3, 3, 2, 0),
        (1, 3, 4, 5, 2, 5, 1, 2),
        (2, 3, 5, 4, 2, 3, 1, 3),
        (1, 2, 6, 6, 3, 3, 3, 1),
        (2, 3, 8, 8, 5, 2, 2, 0),
        (8, 3, 16, 16, 4, 3, 1, 1),  # wgrad split over z
        (1, 9, 12, 12, 130, 1, 1, 0),  # N > 128: two column blocks (bf16), three (f32)
    ]
    for case in cases:
        for dtype in ("f32", "bf16"):
            sp = check(case, dtype, rng)
            print("ok", case, dtype, "wgrad splits", sp, flush=True)
    print("conv emulation: fwd, dgrad, wgrad match the reference")


if __name__ == "__main__":
    main()
