"""CPU re-enactment of kernels/fft.cu's index math (fused, rows, cols) against numpy's centred FFT.
Every butterfly (thread, i) of a stage reads before any writes (the barrier); each shared write is checked
in bounds and unique per stage; each global store is checked unique. Arithmetic in complex128 (index math is
what is being checked; the f32 accuracy is the GPU parity tests' job)."""
import numpy as np, sys

T, PTS, POINTS, TARGET = 512, 8, 4096, 264

def bfly(a, P, s):
    msi = lambda z: s * 1j * z
    if P == 2: return [a[0] + a[1], a[0] - a[1]]
    if P == 3:
        t, d = a[1] + a[2], a[1] - a[2]; m = a[0] - 0.5 * t; rot = msi(d) * 0.86602540378443865
        return [a[0] + t, m + rot, m - rot]
    if P == 4:
        s02, d02, s13, d13 = a[0] + a[2], a[0] - a[2], a[1] + a[3], msi(a[1] - a[3])
        return [s02 + s13, d02 + d13, s02 - s13, d02 - d13]
    c1, c2, s1, s2 = 0.30901699437494742, -0.80901699437494742, 0.95105651629515357, 0.58778525229247313
    t1, t2, d1, d2 = a[1] + a[4], a[2] + a[3], a[1] - a[4], a[2] - a[3]
    m1 = a[0] + c1 * t1 + c2 * t2; m2 = a[0] + c2 * t1 + c1 * t2
    r1 = msi(s1 * d1 + s2 * d2); r2 = msi(s2 * d1 - s1 * d2)
    b = [0] * 5; b[0] = a[0] + t1 + t2; b[1] = m1 + r1; b[4] = m1 - r1; b[2] = m2 + r2; b[3] = m2 - r2
    return b

def stage(buf, limit, tw, n, nseq, ss, es, sf, lp, P, s):
    MAXB = -(-PTS // P); r = n // (lp * P); per = n // P; nbf = nseq * per; wstep = r * lp * es
    assert nbf <= MAXB * T, (nbf, MAXB, T)
    outs = []
    for bf in range(nbf):
        seq = bf % nseq if sf else bf // per
        loc = bf // nseq if sf else bf % per
        j, k1 = loc % r, loc // r
        base = seq * ss + (j + r * P * k1) * es
        a = []
        for q in range(P):
            idx = base + q * r * es; assert 0 <= idx < limit
            v = buf[idx]
            if q > 0: assert q * k1 * r < n; v = v * tw[q * k1 * r]
            a.append(v)
        outs.append((seq * ss + (j + r * k1) * es, bfly(a, P, s)))
    seen = set()
    for w0, b in outs:
        for q in range(P):
            idx = w0 + q * wstep; assert 0 <= idx < limit and idx not in seen; seen.add(idx); buf[idx] = b[q]
    assert len(seen) == nseq * n

def fft_seqs(buf, limit, tw, n, nseq, ss, es, sf, s):
    rem, lp = n, 1
    while rem > 1:
        p = 4 if rem % 4 == 0 else 2 if rem % 2 == 0 else 3 if rem % 3 == 0 else 5
        assert rem % p == 0
        stage(buf, limit, tw, n, nseq, ss, es, sf, lp, p, s); rem //= p; lp *= p

def twiddles(n, s): return np.exp(s * 2j * np.pi * np.arange(n) / n)

def load_rows(x, mask, H, W, i0, nrows, inv):
    buf = np.zeros(nrows * W, complex); ch, cw = H // 2, W // 2
    for idx in range(nrows * W):
        i, j = i0 + idx // W, idx % W; src = ((i + ch) % H) * W + (j + cw) % W
        m = mask[src] if (inv and mask is not None) else 1.0
        buf[idx] = (x[0].flat[src] + 1j * x[1].flat[src]) * m
    return buf

def store(y, written, mask, H, W, u, v, val, scale, inv):
    dst = ((u + H // 2) % H) * W + (v + W // 2) % W
    sc = scale * (mask[dst] if (not inv and mask is not None) else 1.0)
    assert dst not in written; written.add(dst); y.flat[dst] = val * sc

def tile(length, count, batch):
    fit = max(POINTS // length, 1); spread = max(-(-batch * count // TARGET), 1)
    return min(fit, max(spread, 8), count)

def kernel(x, mask, inv, batch, two_pass):
    H, W = x.shape[1:]; s = 1.0 if inv else -1.0; scale = 1 / np.sqrt(H * W)
    y = np.zeros((H, W), complex); written = set(); m = None if mask is None else mask.ravel()
    if H * W <= POINTS and not two_pass:
        buf = load_rows(x, m, H, W, 0, H, inv)
        fft_seqs(buf, H * W, twiddles(W, s), W, H, W, 1, False, s)
        fft_seqs(buf, H * W, twiddles(H, s), H, W, 1, W, True, s)
        for idx in range(H * W):
            ou, ov = idx // W, idx % W; u, v = (ou + H - H // 2) % H, (ov + W - W // 2) % W
            store(y, written, m, H, W, u, v, buf[u * W + v], scale, inv)
    else:
        scratch = np.full(H * W, np.nan, complex); R = tile(W, H, batch)
        for bx in range(-(-H // R)):
            i0 = bx * R
            if i0 >= H: continue
            nr = min(R, H - i0); buf = load_rows(x, m, H, W, i0, nr, inv)
            fft_seqs(buf, nr * W, twiddles(W, s), W, nr, W, 1, False, s)
            scratch[i0 * W: i0 * W + nr * W] = buf
        C = tile(H, W, batch)
        for bx in range(-(-W // C)):
            v0 = bx * C
            if v0 >= W: continue
            nc = min(C, W - v0); total = H * nc
            buf = np.array([scratch[(idx // nc) * W + v0 + idx % nc] for idx in range(total)])
            fft_seqs(buf, total, twiddles(H, s), H, nc, 1, nc, True, s)
            for idx in range(total):
                store(y, written, m, H, W, idx // nc, v0 + idx % nc, buf[idx], scale, inv)
    assert len(written) == H * W
    return y

def reference(x, mask, inv):
    z = x[0] + 1j * x[1]; d = (-2, -1)
    if inv:
        return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(z * (1 if mask is None else mask), axes=d), norm="ortho"), axes=d)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(z, axes=d), norm="ortho"), axes=d) * (1 if mask is None else mask)

rng = np.random.default_rng(0)
cases = [(1, 1, 2, False), (6, 10, 2, False), (12, 20, 2, False), (15, 15, 2, False), (64, 64, 32, False),
         (45, 80, 2, False), (64, 64, 2, True), (12, 20, 2, True), (15, 15, 2, True), (30, 8, 3, True),
         (320, 5, 1, False), (2, 4096, 1, False), (128, 128, 32, False), (320, 320, 32, False), (320, 320, 2, False),
         (256, 256, 2, False)]
for H, W, batch, tp in cases:
    x = rng.standard_normal((2, H, W)); mask = rng.random((H, W)) * (rng.random((H, W)) < 0.6)
    for inv in (False, True):
        for mk in (mask, None):
            err = np.abs(kernel(x, mk, inv, batch, tp) - reference(x, mk, inv)).max()
            ok = err < 1e-10
            print(f"{H}x{W} batch {batch} {'two-pass' if tp or H*W > POINTS else 'fused'} inv={inv} mask={mk is not None}: {err:.1e}", "ok" if ok else "FAIL", flush=True)
            if not ok: sys.exit(1)
print("all ok")
