#!/usr/bin/env python3
"""Times the same ops at the same shapes as `gsure bench ops`, in PyTorch on CUDA, and compares.

The case list comes from `gsure bench ops --list-json` (op, label, params, flops, elems); each op is built
here the natural PyTorch way (cuDNN convolutions, fused SDPA attention, ...). The forward is timed under
torch.no_grad; the backward is torch.autograd.grad of one recorded output against its trainable inputs
with a random upstream gradient (retain_graph, so the graph is reused). Timing matches gsure's: CUDA events
around each repeat, the L2 flushed by a 96 MiB memset before each, the median of many repeats.

    python3 benches/torch_ops.py --dtype bf16 --out torch_bf16.json --gsure-json bench_bf16.json

With --gsure-json (the output of `gsure bench ops --out`) it prints both side by side with the ratio
gsure time / torch time per op and direction (above 1: gsure is slower) and their geometric mean.
Unknown ops are reported as skipped. Needs torch only when it times (the comparison of two JSON files
given with --torch-json needs none).
"""

import argparse
import datetime
import json
import math
import os
import subprocess
import sys


def default_gsure():
    for p in ("target/release/gsure", "gpu-bin/gsure"):
        if os.path.exists(p):
            return p
    return "target/release/gsure"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gsure", default=default_gsure(), help="the gsure binary (for --list-json)")
    ap.add_argument("--cases", help="read the case list from this JSON file instead of running gsure")
    ap.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    ap.add_argument("--filter", help="comma-separated substrings of '<op> <label>' (as gsure's --filter)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 in f32 matmuls and convolutions")
    ap.add_argument("--out", help="write the torch results as JSON here")
    ap.add_argument("--gsure-json", help="gsure bench results to compare against (side-by-side table)")
    ap.add_argument("--torch-json", help="compare these earlier torch results instead of timing anew")
    return ap.parse_args(argv)


# ----------------------------------------------------------------------------------------------- case list


def load_cases(args):
    if args.cases:
        with open(args.cases) as f:
            cases = json.load(f)
        if isinstance(cases, dict):  # a gsure --out report also lists its cases
            cases = cases["cases"]
        return filter_cases(cases, args.filter)
    cmd = [args.gsure, "bench", "ops", "--list-json"]
    if args.filter:
        cmd += ["--filter", args.filter]
    try:
        text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        if args.gsure_json:
            print(f"could not run {' '.join(cmd)} ({e}); taking the cases from {args.gsure_json}", file=sys.stderr)
            with open(args.gsure_json) as f:
                return filter_cases(json.load(f)["cases"], args.filter)
        raise SystemExit(f"could not list the cases with {' '.join(cmd)}: {e}")
    return json.loads(text)


def filter_cases(cases, flt):
    if not flt:
        return cases
    pats = [p.strip() for p in flt.split(",") if p.strip()]
    return [c for c in cases if any(p in f"{c['op']} {c['label']}" for p in pats)]


# ------------------------------------------------------------------------------------------------ builders
# Each builder takes (params, dtype, device, torch) and returns (fn, inputs, grad_inputs): fn(*inputs) is the
# op; grad_inputs are the inputs that require grad (what autograd.grad differentiates against).


class Skip(Exception):
    pass


def p_get(p, *names, default=None):
    for n in names:
        if n in p:
            return p[n]
    if default is not None:
        return default
    raise Skip(f"params lack any of {names}: {sorted(p)}")


def nchw(p):
    if "shape" in p:
        return list(p["shape"])
    return [p_get(p, "n", "batch"), p_get(p, "c", "channels"), p_get(p, "h"), p_get(p, "w")]


def build_conv2d(p, dt, dev, torch):
    F = torch.nn.functional
    n, ci, h, w = p_get(p, "n"), p_get(p, "c_in", "cin"), p_get(p, "h"), p_get(p, "w")
    co, k = p_get(p, "c_out", "cout"), p_get(p, "k", "kernel")
    stride, pad = p_get(p, "stride", default=1), p_get(p, "pad", "padding", default=0)
    x = torch.randn(n, ci, h, w, device=dev, dtype=dt, requires_grad=True)
    wt = (torch.randn(co, ci, k, k, device=dev, dtype=dt) / math.sqrt(ci * k * k)).requires_grad_(True)
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    if p.get("per_image", False) or p.get("residual", False):
        # a residual block's convolution and the adds that follow it, as PyTorch code writes them
        b = torch.zeros(co, device=dev, dtype=dt, requires_grad=True)
        if p.get("per_image", False):
            e = torch.randn(n, co, device=dev, dtype=dt, requires_grad=True)
            f = lambda x, wt, b, e: F.conv2d(x, wt, b, stride=stride, padding=pad) + e[:, :, None, None]
        else:
            e = torch.randn(n, co, ho, wo, device=dev, dtype=dt, requires_grad=True)
            f = lambda x, wt, b, e: e + F.conv2d(x, wt, b, stride=stride, padding=pad)
        return f, [x, wt, b, e], [x, wt, b, e]
    if p.get("bias", False):
        b = torch.zeros(co, device=dev, dtype=dt, requires_grad=True)
        return (lambda x, wt, b: F.conv2d(x, wt, b, stride=stride, padding=pad)), [x, wt, b], [x, wt, b]
    return (lambda x, wt: F.conv2d(x, wt, None, stride=stride, padding=pad)), [x, wt], [x, wt]


def build_norm_conv2d(p, dt, dev, torch):
    # a residual block's first layer as PyTorch code writes it: group_norm, silu, (dropout,) conv2d, + temb
    F = torch.nn.functional
    n, ci, h, w, co = p_get(p, "n"), p_get(p, "c_in"), p_get(p, "h"), p_get(p, "w"), p_get(p, "c_out")
    k, groups = p_get(p, "k", default=3), p_get(p, "groups", default=32)
    stride, pad = p_get(p, "stride", default=1), p_get(p, "pad", default=1)
    drop = p.get("dropout", 0.0)
    x = torch.randn(n, ci, h, w, device=dev, dtype=dt, requires_grad=True)
    wt = (torch.randn(co, ci, k, k, device=dev, dtype=dt) / math.sqrt(ci * k * k)).requires_grad_(True)
    b = torch.zeros(co, device=dev, dtype=dt, requires_grad=True)
    e = torch.randn(n, co, device=dev, dtype=dt, requires_grad=True)
    gamma = torch.ones(ci, device=dev, dtype=dt, requires_grad=True)
    beta = torch.zeros(ci, device=dev, dtype=dt, requires_grad=True)

    def f(x, wt, b, e, gamma, beta):
        a = F.silu(F.group_norm(x, groups, gamma, beta, 1e-6))
        if drop > 0:
            a = F.dropout(a, drop, training=True)
        return F.conv2d(a, wt, b, stride=stride, padding=pad) + e[:, :, None, None]

    args = [x, wt, b, e, gamma, beta]
    return f, args, args


def build_attention(p, dt, dev, torch):
    # gsure's q, k, v are [n, c, h*w] with c = heads * d; SDPA is timed on its natural [n, heads, t, d].
    F = torch.nn.functional
    n, c, heads = p_get(p, "n", "batch"), p_get(p, "c", "channels"), p_get(p, "heads", default=1)
    t = p["t"] if "t" in p else p_get(p, "h") * p_get(p, "w")
    if c % heads:
        raise Skip(f"{c} channels do not split into {heads} heads")
    q, k, v = (torch.randn(n, heads, t, c // heads, device=dev, dtype=dt, requires_grad=True) for _ in range(3))
    return (lambda q, k, v: F.scaled_dot_product_attention(q, k, v)), [q, k, v], [q, k, v]


def build_group_norm(p, dt, dev, torch):
    F = torch.nn.functional
    shape = nchw(p)
    groups = p_get(p, "groups", "num_groups", "g")
    eps = p_get(p, "eps", default=1e-5)
    silu = bool(p.get("silu", False))
    x = torch.randn(*shape, device=dev, dtype=dt, requires_grad=True)
    gamma = torch.ones(shape[1], device=dev, dtype=dt, requires_grad=True)
    beta = torch.zeros(shape[1], device=dev, dtype=dt, requires_grad=True)

    def fn(x, gamma, beta):
        y = F.group_norm(x, groups, gamma, beta, eps)
        return F.silu(y) if silu else y

    return fn, [x, gamma, beta], [x, gamma, beta]


def build_matmul(p, dt, dev, torch):
    m, k, n = p_get(p, "m"), p_get(p, "k"), p_get(p, "n")
    a = torch.randn(m, k, device=dev, dtype=dt, requires_grad=True)
    b = torch.randn(k, n, device=dev, dtype=dt, requires_grad=True)
    return (lambda a, b: torch.mm(a, b)), [a, b], [a, b]


def build_linear(p, dt, dev, torch):
    F = torch.nn.functional
    n, i, o = p_get(p, "n", "batch", "rows"), p_get(p, "in", "in_features"), p_get(p, "out", "out_features")
    x = torch.randn(n, i, device=dev, dtype=dt, requires_grad=True)
    w = torch.randn(o, i, device=dev, dtype=dt, requires_grad=True)
    if p.get("bias", True):
        b = torch.randn(o, device=dev, dtype=dt, requires_grad=True)
        return (lambda x, w, b: F.linear(x, w, b)), [x, w, b], [x, w, b]
    return (lambda x, w: F.linear(x, w)), [x, w], [x, w]


def build_silu(p, dt, dev, torch):
    x = torch.randn(*p_get(p, "shape"), device=dev, dtype=dt, requires_grad=True)
    return torch.nn.functional.silu, [x], [x]


def build_add(p, dt, dev, torch):
    a, b = (torch.randn(*p_get(p, "shape"), device=dev, dtype=dt, requires_grad=True) for _ in range(2))
    return (lambda a, b: a + b), [a, b], [a, b]


def build_mul_along(p, dt, dev, torch):
    shape, axis = list(p_get(p, "shape")), p_get(p, "axis")
    x = torch.randn(*shape, device=dev, dtype=dt, requires_grad=True)
    s = torch.randn(shape[axis], device=dev, dtype=dt, requires_grad=True)
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return (lambda x, s: x * s.view(view)), [x, s], [x, s]


def build_sum_all(p, dt, dev, torch):
    x = torch.randn(*p_get(p, "shape"), device=dev, dtype=dt, requires_grad=True)
    return (lambda x: x.sum()), [x], [x]


def build_concat(p, dt, dev, torch):
    n, h, w = p_get(p, "n"), p_get(p, "h"), p_get(p, "w")
    a = torch.randn(n, p_get(p, "c1"), h, w, device=dev, dtype=dt, requires_grad=True)
    b = torch.randn(n, p_get(p, "c2"), h, w, device=dev, dtype=dt, requires_grad=True)
    return (lambda a, b: torch.cat([a, b], dim=1)), [a, b], [a, b]


def build_upsample2x(p, dt, dev, torch):
    x = torch.randn(*nchw(p), device=dev, dtype=dt, requires_grad=True)
    return (lambda x: torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")), [x], [x]


def build_avg_pool2x(p, dt, dev, torch):
    x = torch.randn(*nchw(p), device=dev, dtype=dt, requires_grad=True)
    return (lambda x: torch.nn.functional.avg_pool2d(x, 2)), [x], [x]


def build_masked_mse(p, dt, dev, torch):
    shape = list(p_get(p, "shape"))
    pred = torch.randn(*shape, device=dev, dtype=dt, requires_grad=True)
    target = torch.randn(*shape, device=dev, dtype=dt)
    weight = torch.rand(*shape, device=dev, dtype=dt) * 2
    dims = tuple(range(1, len(shape)))
    # Per example: the mean over the non-batch dims of w * (p - t)^2.
    return (lambda p_, t, w: (w * (p_ - t) ** 2).mean(dim=dims)), [pred, target, weight], [pred]


def build_dropout(p, dt, dev, torch):
    x = torch.randn(*p_get(p, "shape"), device=dev, dtype=dt, requires_grad=True)
    prob = p_get(p, "p")
    return (lambda x: torch.nn.functional.dropout(x, prob, training=True)), [x], [x]


def build_where(p, dt, dev, torch):
    shape = p_get(p, "shape")
    m = torch.rand(*shape, device=dev) < 0.5
    a, b = (torch.randn(*shape, device=dev, dtype=dt, requires_grad=True) for _ in range(2))
    return (lambda a, b: torch.where(m, a, b)), [a, b], [a, b]


def build_affine(p, dt, dev, torch):
    x = torch.randn(*p_get(p, "shape"), device=dev, dtype=dt, requires_grad=True)
    return (lambda x: 0.5 * x + 0.1), [x], [x]


def build_embedding(p, dt, dev, torch):
    import math

    n, dim = p_get(p, "n"), p_get(p, "dim")
    t = (torch.rand(n, device=dev) * 1000).requires_grad_(True)
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=dev, dtype=torch.float32) / (half - 1))

    def fn(t):
        a = t[:, None] * freqs[None, :]
        return torch.cat([torch.sin(a), torch.cos(a)], dim=1)

    return fn, [t], [t]


def build_masked_fft2c(p, dt, dev, torch, inverse=False):
    # What a PyTorch user writes: complex64 from the 2-channel input, the centred orthonormal FFT (cuFFT)
    # between ifftshift and fftshift, then the mask multiply (forward: on the output; adjoint: on the input),
    # back to 2 channels. cuFFT has no bf16 transform, so the complex math is complex64 in either dtype.
    n, h, w = p_get(p, "n"), p_get(p, "h"), p_get(p, "w")
    x = torch.randn(n, 2, h, w, device=dev, dtype=dt, requires_grad=True)
    mask = torch.rand(n, 1, h, w, device=dev, dtype=dt)
    fft = torch.fft
    dims = (-2, -1)

    def fn(x, mask):
        z = torch.complex(x[:, 0].float(), x[:, 1].float())
        m = mask[:, 0].float()
        if inverse:
            out = fft.fftshift(fft.ifft2(fft.ifftshift(z * m, dim=dims), norm="ortho"), dim=dims)
        else:
            out = fft.fftshift(fft.fft2(fft.ifftshift(z, dim=dims), norm="ortho"), dim=dims) * m
        return torch.stack([out.real, out.imag], dim=1).to(dt)

    return fn, [x, mask], [x]


def build_masked_ifft2c(p, dt, dev, torch):
    return build_masked_fft2c(p, dt, dev, torch, inverse=True)


def build_gsure_loss(p, dt, dev, torch):
    shape = list(p_get(p, "shape"))
    with_nu = bool(p_get(p, "nu"))
    d = torch.randn(*shape, device=dev, dtype=dt, requires_grad=True)
    de = torch.randn(*shape, device=dev, dtype=dt, requires_grad=True)
    r = torch.randn(*shape, device=dev, dtype=dt)
    obs = torch.ones(*shape, device=dev, dtype=dt)
    w2 = torch.rand(*shape, device=dev, dtype=dt) + 1
    b = torch.randn(*shape, device=dev, dtype=dt)
    nu = torch.full(shape, 1e-4, device=dev, dtype=dt)
    c_div = torch.full([shape[0]] + [1] * (len(shape) - 1), 2.0 / 1e-2, device=dev, dtype=dt)
    dims = tuple(range(1, len(shape)))

    # The natural unfused expression: per example, the mean of O W² [(D − r)² + c_div ν b (D_ε − D)].
    def f(d_, de_, r_, o_, w_, b_, nu_):
        div = c_div * b_ * (de_ - d_)
        if with_nu:
            div = div * nu_
        return (o_ * w_ * ((d_ - r_) ** 2 + div)).mean(dim=dims)

    return f, [d, de, r, obs, w2, b, nu], [d, de]


BUILDERS = {
    "conv2d": build_conv2d,
    "norm_conv2d": build_norm_conv2d,
    "attention": build_attention,
    "group_norm": build_group_norm,
    "matmul": build_matmul,
    "linear": build_linear,
    "silu": build_silu,
    "add": build_add,
    "mul_along": build_mul_along,
    "sum_all": build_sum_all,
    "concat": build_concat,
    "upsample2x": build_upsample2x,
    "avg_pool2x": build_avg_pool2x,
    "masked_mse": build_masked_mse,
    "dropout": build_dropout,
    "where": build_where,
    "affine": build_affine,
    "embedding": build_embedding,
    "masked_fft2c": build_masked_fft2c,
    "masked_ifft2c": build_masked_ifft2c,
    "gsure_loss": build_gsure_loss,
}


# ------------------------------------------------------------------------------------------------- timing


def stats(samples):
    s = sorted(samples)
    n = len(s)
    median = s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
    p90 = s[min(n, max(1, math.ceil(0.9 * n))) - 1]
    return {"median_ms": median, "min_ms": s[0], "p90_ms": p90, "repeats": n}


def time_cuda(torch, fn, warmup, repeats, flush):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    out = []
    for _ in range(repeats):
        flush.zero_()  # evicts the L2; runs before `start` in stream order, so it is not timed
        start.record()
        fn()
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end))
    return stats(out)


def rates(st, flops, elems, dtype_bytes):
    secs = st["median_ms"] * 1e-3
    st = dict(st)
    st["tflops"] = flops / secs / 1e12 if flops > 0 and secs > 0 else None
    st["gbps"] = elems * dtype_bytes / secs / 1e9 if elems > 0 and secs > 0 else None
    return st


def run_torch(args, cases):
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("torch_ops.py: CUDA is not available to torch")
    dev = torch.device("cuda")
    dt = {"bf16": torch.bfloat16, "f32": torch.float32}[args.dtype]
    torch.backends.cudnn.benchmark = True  # PyTorch at its best: cuDNN picks its fastest algorithm
    warmup = args.warmup if args.warmup is not None else (2 if args.quick else 5)
    repeats = args.repeats if args.repeats is not None else (10 if args.quick else 50)
    flush = torch.empty(96 << 20, dtype=torch.uint8, device=dev)
    torch.manual_seed(0)
    results = []
    for i, c in enumerate(cases):
        r = {"op": c["op"], "label": c["label"], "params": c["params"], "forward": None, "backward": None}
        builder = BUILDERS.get(c["op"])
        # a case gsure runs on TF32 (`[tf32]`) is compared with PyTorch allowed TF32 too, whatever --tf32 says
        tf32 = args.tf32 or bool(c["params"].get("tf32"))
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        try:
            if builder is None:
                raise Skip(f"unknown op {c['op']!r}")
            fn, inputs, grad_inputs = builder(c["params"], dt, dev, torch)

            def fwd():
                with torch.no_grad():
                    fn(*inputs)

            r["forward"] = rates(time_cuda(torch, fwd, warmup, repeats, flush), c["flops_fwd"], c["elems_fwd"],
                                 dt.itemsize)
            out = fn(*inputs)
            g = torch.randn_like(out)

            def bwd():
                torch.autograd.grad(out, grad_inputs, g, retain_graph=True)

            r["backward"] = rates(time_cuda(torch, bwd, warmup, repeats, flush), c["flops_bwd"], c["elems_bwd"],
                                  dt.itemsize)
            del out, g, fn, inputs, grad_inputs
        except Skip as e:
            r["skipped"] = str(e)
        except Exception as e:  # noqa: BLE001 - one case failing must not stop the others
            r["error"] = f"{type(e).__name__}: {e}"
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        fmt = lambda d: f"{d['median_ms']:.4f} ms" if d else "-"  # noqa: E731
        status = r.get("skipped") or r.get("error") or f"fwd {fmt(r['forward'])} bwd {fmt(r['backward'])}"
        print(f"[{i + 1}/{len(cases)}] torch {c['op']} {c['label']}: {status}", file=sys.stderr, flush=True)
        results.append(r)
    return {
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "device": torch.cuda.get_device_name(0),
        "dtype": args.dtype,
        "tf32": args.tf32,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "warmup": warmup,
        "repeats": repeats,
        "cases": results,
    }


# -------------------------------------------------------------------------------------------- comparison


def compare(gsure, torch_res):
    """The side-by-side table: per case and direction gsure ms, torch ms and gsure / torch."""
    by_key = {(c["op"], c["label"]): c for c in torch_res["cases"]}
    lines = [
        f"gsure {gsure.get('gsure_version')} ({gsure.get('commit')}) vs torch {torch_res.get('torch_version')} "
        f"on {torch_res.get('device')}, {torch_res.get('dtype')}; ratio = gsure time / torch time (>1: gsure slower)",
        f"{'op':<12} {'case':<44} {'dir':<3} {'gsure ms':>10} {'torch ms':>10} {'ratio':>7}",
    ]
    ratios = {"fwd": [], "bwd": []}
    per_op = {}
    for gc in gsure["cases"]:
        tc = by_key.get((gc["op"], gc["label"]))
        label = gc["label"] if len(gc["label"]) <= 44 else gc["label"][:43] + "~"
        for d, key in (("fwd", "forward"), ("bwd", "backward")):
            g = gc.get(key)
            t = tc.get(key) if tc else None
            gms = f"{g['median_ms']:.4f}" if g else ("FAILED" if gc.get("error") else "n/a")
            if t:
                tms = f"{t['median_ms']:.4f}"
            elif tc is None:
                tms = "absent"
            else:
                tms = "skipped" if tc.get("skipped") else ("FAILED" if tc.get("error") else "n/a")
            ratio = "-"
            if g and t and t["median_ms"] > 0 and g["median_ms"] > 0:
                q = g["median_ms"] / t["median_ms"]
                ratios[d].append(q)
                per_op.setdefault((gc["op"], d), []).append(q)
                ratio = f"{q:.2f}"
            lines.append(f"{gc['op']:<12} {label:<44} {d:<3} {gms:>10} {tms:>10} {ratio:>7}")

    def gmean(xs):
        return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")

    lines.append("geometric mean of gsure / torch per op and direction:")
    for (op, d), qs in sorted(per_op.items()):
        lines.append(f"  {op:<12} {d}: {gmean(qs):.2f} ({len(qs)} cases)")
    allq = ratios["fwd"] + ratios["bwd"]
    lines.append(
        f"geometric mean: fwd {gmean(ratios['fwd']):.2f} ({len(ratios['fwd'])}), bwd {gmean(ratios['bwd']):.2f} "
        f"({len(ratios['bwd'])}), all {gmean(allq):.2f} ({len(allq)})"
    )
    summary = {
        "geomean_fwd": gmean(ratios["fwd"]) if ratios["fwd"] else None,
        "geomean_bwd": gmean(ratios["bwd"]) if ratios["bwd"] else None,
        "geomean_all": gmean(allq) if allq else None,
        "per_op": {f"{op} {d}": gmean(qs) for (op, d), qs in sorted(per_op.items())},
    }
    return "\n".join(lines), summary


def main(argv=None):
    args = parse_args(argv)
    if args.torch_json:
        with open(args.torch_json) as f:
            res = json.load(f)
    else:
        cases = load_cases(args)
        res = run_torch(args, cases)
    if args.gsure_json:
        with open(args.gsure_json) as f:
            gsure = json.load(f)
        table, summary = compare(gsure, res)
        res["comparison"] = summary
        print(table)
    else:
        for c in res["cases"]:
            for d, key in (("fwd", "forward"), ("bwd", "backward")):
                x = c.get(key)
                status = f"{x['median_ms']:.4f} ms" if x else (c.get("skipped") or c.get("error") or "n/a")
                print(f"{c['op']:<12} {c['label']:<44} {d:<3} {status}")
    if args.out and not args.torch_json:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
