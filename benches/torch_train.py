#!/usr/bin/env python3
"""Times gsure's training step in PyTorch on CUDA: the same DDIM U-Net, the same step, and compares.

The model is written here from the DDIM reference architecture exactly as gsure builds it
(src/nn/ddim_unet.rs, src/nn/layers.rs): a time embedding MLP (sinusoid, Linear, SiLU, Linear) whose SiLU
feeds every ResnetBlock's temb_proj; ResnetBlocks GroupNorm(eps 1e-6)-SiLU-conv3x3, + temb_proj, GN-SiLU-
dropout-conv3x3, + a 1x1 nin_shortcut when the channels change; AttnBlocks GN, 1x1 q/k/v, softmax(qk/sqrt(d))v,
1x1 proj_out, residual; stride-2 3x3 convolutions (padding 1) down, nearest 2x + 3x3 convolution up;
GN-SiLU-conv_out. The parameter count is checked against gsure's (78,696,193 for gsure-celeba32).

The step is `Trainer::train_step`: a batch gathered on the host from a fixed image set and uploaded, t
uniform in [0, 1000) per example, x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (linear betas 1e-4..0.02),
the model's target (x0 for gsure-celeba32) under MSE, backward, clip_grad_norm 1.0, Adam (fused; lr,
betas, eps from gsure's settings), EMA with torch._foreach_lerp_. Three modes: eager f32 (no TF32 unless
--tf32), eager with bf16 autocast, torch.compile with bf16 autocast. Each step is timed with CUDA events
and synchronised at its end (as gsure synchronises); the median of the timed steps after warm-up.

    python3 benches/torch_train.py --gsure gpu-bin/gsure --out torch_train.json \
        --gsure-json gsure_train_f32.json --gsure-json gsure_train_bf16.json

Settings come from `gsure bench train --list-json` (the --gsure binary; default gpu-bin/gsure, then
target/release/gsure), else from the --gsure-json reports, else built in. With --gsure-json (the output of
`gsure bench train --out`, once per dtype) it prints a side-by-side table with ratio = gsure step time /
torch step time (above 1: gsure is slower), f32 against eager f32 and bf16 against both bf16 modes, and
torch then uses the batch gsure used. Differences from gsure, none of which changes the work per step:
constant learning rate (gsure warms it up), no host read of the loss inside the step (gsure reads it to
stop on a non-finite loss), random data instead of phantoms.
"""

import argparse
import datetime
import json
import math
import os
import subprocess
import sys
import time

MODES = ("eager-f32", "eager-bf16", "compile-bf16")

# Fallback settings (what `gsure bench train --list-json` prints), used when no gsure binary can be run.
_TRAINER = {
    "lr_warmup": 1000,
    "adam": {"lr": 5e-5, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
    "grad_clip": 1.0,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "timesteps": 1000,
    "objective": "supervised",
}
BUILTIN = {
    "tiny": dict(
        _TRAINER,
        name="tiny",
        batch=16,
        lr=1e-3,
        lr_warmup=50,
        adam=dict(_TRAINER["adam"], lr=1e-3),
        ema_decay=0.99,
        params=701_345,
        flops_fwd_per_image=132_169_728.0,
        flops_train_per_image=3 * 132_169_728.0,
        model={
            "in_channels": 1, "out_channels": 1, "resolution": 16, "ch": 32, "ch_mult": [1, 2],
            "num_res_blocks": 1, "attn_resolutions": [8], "heads": 1, "dropout": 0.0, "groups": 8,
            "prediction": "x0",
        },
    ),
    "gsure-celeba32": dict(
        _TRAINER,
        name="gsure-celeba32",
        batch=128,
        lr=5e-5,
        ema_decay=0.9999,
        params=78_696_193,
        flops_fwd_per_image=12.77e9,
        flops_train_per_image=3 * 12.77e9,
        model={
            "in_channels": 1, "out_channels": 1, "resolution": 32, "ch": 128, "ch_mult": [1, 2, 2, 2, 4],
            "num_res_blocks": 2, "attn_resolutions": [16], "heads": 1, "dropout": 0.1, "groups": 32,
            "prediction": "x0",
        },
    ),
}
CELEBA32_PARAMS = 78_696_193


def default_gsure():
    for p in ("gpu-bin/gsure", "target/release/gsure"):
        if os.path.exists(p):
            return p
    return "gpu-bin/gsure"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gsure", default=default_gsure(), help="the gsure binary (for --list-json)")
    ap.add_argument("--settings", help="read the settings from this file (the output of --list-json)")
    ap.add_argument("--config", help="comma-separated configurations (default: those of --gsure-json, else "
                    "tiny,gsure-celeba32)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    ap.add_argument("--batch", type=int, help="batch size (default: gsure's, from its report or settings)")
    ap.add_argument("--steps", type=int, help="timed steps per configuration and mode (default 30, quick 10)")
    ap.add_argument("--warmup", type=int, help="untimed steps first (default 5, quick 3; compile: after compiling)")
    ap.add_argument("--max-seconds", type=float, default=60.0,
                    help="stop the timed steps of one configuration and mode after this long (at least one)")
    ap.add_argument("--quick", action="store_true", help="fewer steps")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 in eager f32 matmuls and convolutions")
    ap.add_argument("--out", help="write the torch results as JSON here")
    ap.add_argument("--gsure-json", action="append", default=[],
                    help="a `gsure bench train --out` report to compare against (repeatable: f32 and bf16)")
    ap.add_argument("--torch-json", help="compare these earlier torch results instead of timing anew")
    return ap.parse_args(argv)


# ---------------------------------------------------------------------------------------------- settings


def load_gsure_reports(paths):
    reports = []
    for p in paths:
        try:
            with open(p) as f:
                reports.append(json.load(f))
        except (OSError, ValueError) as e:
            print(f"could not read gsure report {p}: {e}", file=sys.stderr)
    return reports


def load_settings(args, reports):
    """The settings of the configurations to time, as `gsure bench train --list-json` prints them."""
    from_reports = {}
    for rep in reports:
        for r in rep.get("results", []):
            if r.get("setting"):
                from_reports.setdefault(r["config"], r["setting"])
    if args.config:
        names = [n.strip() for n in args.config.split(",") if n.strip()]
    elif from_reports:
        names = list(from_reports)
    else:
        names = ["tiny", "gsure-celeba32"]

    settings = None
    if args.settings:
        with open(args.settings) as f:
            settings = {s["name"]: s for s in json.load(f)}
    else:
        cmd = [args.gsure, "bench", "train", "--list-json", "--config", ",".join(names)]
        try:
            text = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60).stdout
            settings = {s["name"]: s for s in json.loads(text)}
        except (OSError, subprocess.SubprocessError, ValueError) as e:
            print(f"could not run {' '.join(cmd)} ({e}); using the gsure reports' or the built-in settings",
                  file=sys.stderr)
            settings = {}
    out = []
    for n in names:
        s = settings.get(n) or from_reports.get(n) or BUILTIN.get(n)
        if s is None:
            raise SystemExit(f"torch_train.py: no settings for configuration {n!r}")
        s = dict(s)
        # Time what gsure timed: its batch, unless --batch says otherwise.
        if args.batch:
            s["batch"] = args.batch
        elif n in from_reports:
            s["batch"] = from_reports[n]["batch"]
        out.append(s)
    return out


# ------------------------------------------------------------------------------------------------- model


def define_model(torch):
    nn = torch.nn
    F = torch.nn.functional

    def group_norm(groups, c):
        return nn.GroupNorm(groups, c, eps=1e-6, affine=True)

    class ResnetBlock(nn.Module):
        def __init__(self, c_in, c_out, temb, groups, dropout):
            super().__init__()
            self.norm1 = group_norm(groups, c_in)
            self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
            self.temb_proj = nn.Linear(temb, c_out)
            self.norm2 = group_norm(groups, c_out)
            self.dropout = nn.Dropout(dropout)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
            self.nin_shortcut = nn.Conv2d(c_in, c_out, 1, 1, 0) if c_in != c_out else None

        def forward(self, x, temb_act):
            h = self.conv1(F.silu(self.norm1(x)))
            h = h + self.temb_proj(temb_act)[:, :, None, None]
            h = self.conv2(self.dropout(F.silu(self.norm2(h))))
            skip = self.nin_shortcut(x) if self.nin_shortcut is not None else x
            return skip + h

    class AttnBlock(nn.Module):
        def __init__(self, c, groups, heads):
            super().__init__()
            self.norm = group_norm(groups, c)
            self.q = nn.Conv2d(c, c, 1)
            self.k = nn.Conv2d(c, c, 1)
            self.v = nn.Conv2d(c, c, 1)
            self.proj_out = nn.Conv2d(c, c, 1)
            self.heads = heads

        def forward(self, x):
            n, c, hh, ww = x.shape
            h = self.norm(x)
            d = c // self.heads

            # gsure's tokens are [n, c, h*w] with channel = head * d + i; SDPA wants [n, heads, t, d].
            def tokens(conv):
                return conv(h).reshape(n, self.heads, d, hh * ww).transpose(2, 3)

            a = F.scaled_dot_product_attention(tokens(self.q), tokens(self.k), tokens(self.v))
            a = a.transpose(2, 3).reshape(n, c, hh, ww)
            return x + self.proj_out(a)

    class Level(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.ModuleList()
            self.attn = nn.ModuleList()

    class DdimUnet(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            ch, mult, nrb = cfg["ch"], cfg["ch_mult"], cfg["num_res_blocks"]
            groups, heads, drop, attn_res = cfg["groups"], cfg["heads"], cfg["dropout"], cfg["attn_resolutions"]
            self.ch = ch
            temb = 4 * ch
            self.temb_dense = nn.ModuleList([nn.Linear(ch, temb), nn.Linear(temb, temb)])
            self.conv_in = nn.Conv2d(cfg["in_channels"], ch, 3, 1, 1)
            in_mult = [1] + list(mult)
            levels = len(mult)
            res = cfg["resolution"]
            self.down = nn.ModuleList()
            block_in = ch
            for lvl in range(levels):
                level = Level()
                block_in, block_out = ch * in_mult[lvl], ch * mult[lvl]
                for _ in range(nrb):
                    level.block.append(ResnetBlock(block_in, block_out, temb, groups, drop))
                    block_in = block_out
                    if res in attn_res:
                        level.attn.append(AttnBlock(block_in, groups, heads))
                if lvl + 1 != levels:
                    level.downsample = nn.Conv2d(block_in, block_in, 3, 2, 1)
                    res //= 2
                self.down.append(level)
            self.mid_block_1 = ResnetBlock(block_in, block_in, temb, groups, drop)
            self.mid_attn_1 = AttnBlock(block_in, groups, heads)
            self.mid_block_2 = ResnetBlock(block_in, block_in, temb, groups, drop)
            up = [None] * levels
            for lvl in reversed(range(levels)):
                level = Level()
                block_out = ch * mult[lvl]
                skip_in = ch * mult[lvl]
                for b in range(nrb + 1):
                    if b == nrb:
                        skip_in = ch * in_mult[lvl]
                    level.block.append(ResnetBlock(block_in + skip_in, block_out, temb, groups, drop))
                    block_in = block_out
                    if res in attn_res:
                        level.attn.append(AttnBlock(block_in, groups, heads))
                if lvl != 0:
                    level.upsample = nn.Conv2d(block_in, block_in, 3, 1, 1)
                    res *= 2
                up[lvl] = level
            self.up = nn.ModuleList(up)
            self.norm_out = group_norm(groups, block_in)
            self.conv_out = nn.Conv2d(block_in, cfg["out_channels"], 3, 1, 1)

        def embed(self, t):
            # DDIM's get_timestep_embedding: freq_k = exp(-ln(10000) k / (half - 1)), [sin, cos].
            half = self.ch // 2
            freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32)
                              / (half - 1))
            arg = t.float()[:, None] * freqs[None, :]
            emb = torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)
            if self.ch % 2:
                emb = F.pad(emb, (0, 1))
            return emb

        def forward(self, x, t):
            temb = self.temb_dense[1](F.silu(self.temb_dense[0](self.embed(t))))
            temb_act = F.silu(temb)
            hs = [self.conv_in(x)]
            for level in self.down:
                for b, block in enumerate(level.block):
                    h = block(hs[-1], temb_act)
                    if len(level.attn) > 0:
                        h = level.attn[b](h)
                    hs.append(h)
                if hasattr(level, "downsample"):
                    hs.append(level.downsample(hs[-1]))
            h = hs[-1]
            h = self.mid_block_2(self.mid_attn_1(self.mid_block_1(h, temb_act)), temb_act)
            for level in reversed(self.up):
                for b, block in enumerate(level.block):
                    h = block(torch.cat([h, hs.pop()], dim=1), temb_act)
                    if len(level.attn) > 0:
                        h = level.attn[b](h)
                if hasattr(level, "upsample"):
                    h = level.upsample(F.interpolate(h, scale_factor=2.0, mode="nearest"))
            return self.conv_out(F.silu(self.norm_out(h)))

    return DdimUnet


# ------------------------------------------------------------------------------------------------ timing


def stats(samples):
    s = sorted(samples)
    n = len(s)
    median = s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
    p90 = s[max(1, min(n, math.ceil(0.9 * n))) - 1]
    return {"median_ms": median, "min_ms": s[0], "p90_ms": p90, "repeats": n}


def make_step(torch, setting, mode, dev):
    """gsure's training step for one configuration in torch on `dev`: returns (step, n_params), where
    step() runs one whole step and returns (loss, grad norm) as tensors (not synchronised)."""
    F = torch.nn.functional
    cfg = setting["model"]
    batch = setting["batch"]
    torch.manual_seed(0)
    model = define_model(torch)(cfg).to(dev).train()
    params = [p for p in model.parameters()]
    n_params = sum(p.numel() for p in params)
    if setting.get("params") is not None and n_params != setting["params"]:
        raise RuntimeError(f"the torch model has {n_params} parameters, gsure's {setting['params']}")
    if setting["name"] == "gsure-celeba32" and n_params != CELEBA32_PARAMS:
        raise RuntimeError(f"gsure-celeba32 has {n_params} parameters here, not {CELEBA32_PARAMS}")

    adam = setting.get("adam", {})
    opt = torch.optim.Adam(params, lr=setting["lr"], betas=(adam.get("beta1", 0.9), adam.get("beta2", 0.999)),
                           eps=adam.get("eps", 1e-8), weight_decay=adam.get("weight_decay", 0.0), fused=True)
    ema = [p.detach().clone() for p in params]
    decay = setting["ema_decay"]
    clip = setting["grad_clip"]
    betas = torch.linspace(setting["beta_start"], setting["beta_end"], setting["timesteps"], dtype=torch.float64)
    abar = torch.cumprod(1.0 - betas, 0)
    sqrt_ab = abar.sqrt().float().to(dev)
    sqrt_1m = (1.0 - abar).sqrt().float().to(dev)
    c, res = cfg["in_channels"], cfg["resolution"]
    n_data = min(max(batch, 64), 512)
    data = torch.rand(n_data, c, res, res) * 2 - 1  # host memory, like gsure's image set
    predict_x0 = cfg.get("prediction", "x0") == "x0"
    bf16 = mode.endswith("bf16")

    def fwd_loss(x_t, t, target):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x_t, t)
        return F.mse_loss(out.float(), target)

    if mode.startswith("compile"):
        fwd_loss = torch.compile(fwd_loss)

    def step():
        idx = torch.randint(0, n_data, (batch,))
        x0 = data[idx].to(dev)
        t = torch.randint(0, setting["timesteps"], (batch,), device=dev)
        eps = torch.randn_like(x0)
        x_t = sqrt_ab[t].view(-1, 1, 1, 1) * x0 + sqrt_1m[t].view(-1, 1, 1, 1) * eps
        loss = fwd_loss(x_t, t.float(), x0 if predict_x0 else eps)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_lerp_(ema, params, 1.0 - decay)
        return loss, norm

    return step, n_params


def run_one(torch, setting, mode, args, steps, warmup):
    """Builds the model and step for one configuration and mode; times it. Returns the result dict."""
    dev = torch.device("cuda")
    batch = setting["batch"]
    r = {"config": setting["name"], "mode": mode, "batch": batch, "setting": setting}
    step, r["params"] = make_step(torch, setting, mode, dev)

    t0 = time.time()
    step()  # the first step compiles (compile mode) and initialises the optimiser state
    torch.cuda.synchronize()
    r["first_step_seconds"] = time.time() - t0
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    t_timed = time.time()
    loss = norm = None
    for i in range(steps):
        start.record()
        loss, norm = step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
        if i + 1 < steps and time.time() - t_timed > args.max_seconds:
            break
    r["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    r["step"] = stats(times)
    r["step_ms"] = times
    secs = r["step"]["median_ms"] * 1e-3
    r["images_per_s"] = batch / secs
    fl = setting.get("flops_train_per_image")
    r["model_tflops"] = fl * batch / secs / 1e12 if fl else None
    r["last_loss"] = float(loss)
    r["last_grad_norm"] = float(norm)
    r["warmup"] = warmup
    return r


def run_torch(args, settings):
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("torch_train.py: CUDA is not available to torch")
    torch.backends.cudnn.benchmark = True  # PyTorch at its best: cuDNN picks its fastest algorithms
    # Strict f32 unless --tf32 (as benches/torch_ops.py); bf16 modes are unaffected.
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    steps = max(1, args.steps if args.steps is not None else (10 if args.quick else 30))
    warmup = args.warmup if args.warmup is not None else (3 if args.quick else 5)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            raise SystemExit(f"torch_train.py: unknown mode {m!r}; known: {', '.join(MODES)}")
    results = []
    for s in settings:
        for mode in modes:
            t0 = time.time()
            try:
                r = run_one(torch, s, mode, args, steps, warmup)
            except Exception as e:  # noqa: BLE001 - one mode failing must not stop the others
                r = {"config": s["name"], "mode": mode, "batch": s["batch"], "setting": s,
                     "error": f"{type(e).__name__}: {e}"}
            r["seconds"] = time.time() - t0
            torch.cuda.synchronize()
            if mode.startswith("compile"):
                torch._dynamo.reset()
            torch.cuda.empty_cache()
            if "error" in r:
                status = f"FAILED ({r['error']})"
            else:
                status = (f"median {r['step']['median_ms']:.3f} ms over {r['step']['repeats']} steps, "
                          f"{r['images_per_s']:.1f} images/s, peak {r['peak_memory_bytes'] / 2**20:.0f} MiB, "
                          f"first step {r['first_step_seconds']:.1f} s")
            print(f"torch {s['name']} batch {s['batch']} {mode}: {status} ({r['seconds']:.1f} s)",
                  file=sys.stderr, flush=True)
            results.append(r)
    return {
        "kind": "torch_train.py",
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "device": torch.cuda.get_device_name(0),
        "tf32": args.tf32,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "steps": steps,
        "warmup": warmup,
        "max_seconds": args.max_seconds,
        "timing": "CUDA events around each whole step (batch upload, noising, forward, loss, backward, clip, "
                  "Adam, EMA), synchronised at its end; median over the timed steps",
        "results": results,
    }


# -------------------------------------------------------------------------------------------- comparison


def fmt(x, spec):
    return format(x, spec) if isinstance(x, (int, float)) and x == x else "-"


def table(res):
    lines = [f"{'config':<16} {'batch':>5} {'mode':<13} {'median ms':>10} {'p90 ms':>10} {'images/s':>10} "
             f"{'TFLOP/s':>8} {'peak MiB':>9}"]
    for r in res["results"]:
        if "error" in r:
            lines.append(f"{r['config']:<16} {r['batch']:>5} {r['mode']:<13} FAILED: {r['error']}")
            continue
        lines.append(f"{r['config']:<16} {r['batch']:>5} {r['mode']:<13} {r['step']['median_ms']:>10.3f} "
                     f"{r['step']['p90_ms']:>10.3f} {r['images_per_s']:>10.1f} {fmt(r.get('model_tflops'), '8.2f')} "
                     f"{r['peak_memory_bytes'] / 2**20:>9.0f}")
    return "\n".join(lines)


# gsure's dtype -> the torch modes it is compared with.
PAIRS = {"f32": ("eager-f32",), "bf16": ("eager-bf16", "compile-bf16")}


def compare(reports, torch_res):
    """The side-by-side table: per configuration gsure's step against torch's, ratio gsure / torch."""
    by_key = {(r["config"], r["mode"]): r for r in torch_res["results"]}
    first = reports[0] if reports else {}
    lines = [
        f"gsure {first.get('gsure_version')} ({first.get('commit')}) vs torch {torch_res.get('torch_version')} on "
        f"{torch_res.get('device')}: training step time; ratio = gsure / torch (>1: gsure slower)",
        f"{'config':<16} {'batch':>5} {'gsure':<5} {'gsure ms':>10} {'gsure MiB':>9} {'torch mode':<13} "
        f"{'torch ms':>10} {'torch MiB':>9} {'ratio':>6}",
    ]
    summary = []
    for rep in reports:
        for g in rep.get("results", []):
            dtype = g.get("dtype", rep.get("dtype"))
            gms = g["step"]["median_ms"] if g.get("step") else None
            gmem = g.get("peak_memory_bytes")
            for mode in PAIRS.get(dtype, ()):
                t = by_key.get((g["config"], mode))
                tms = t["step"]["median_ms"] if t and t.get("step") else None
                tmem = t.get("peak_memory_bytes") if t else None
                ratio = gms / tms if gms and tms else None
                note = ""
                if t and t.get("batch") != g["setting"]["batch"]:
                    note = f" (torch batch {t.get('batch')})"
                lines.append(
                    f"{g['config']:<16} {g['setting']['batch']:>5} {dtype:<5} "
                    f"{fmt(gms, '10.3f') if gms else ('FAILED' if g.get('error') else '-'):>10} "
                    f"{fmt(gmem / 2**20 if gmem else None, '9.0f'):>9} {mode:<13} "
                    f"{fmt(tms, '10.3f') if tms else ('absent' if t is None else 'FAILED'):>10} "
                    f"{fmt(tmem / 2**20 if tmem else None, '9.0f'):>9} {fmt(ratio, '6.2f'):>6}{note}")
                summary.append({"config": g["config"], "batch": g["setting"]["batch"], "gsure_dtype": dtype,
                                "torch_mode": mode, "gsure_ms": gms, "torch_ms": tms, "ratio": ratio})
    return "\n".join(lines), summary


def main(argv=None):
    args = parse_args(argv)
    reports = load_gsure_reports(args.gsure_json)
    if args.torch_json:
        with open(args.torch_json) as f:
            res = json.load(f)
    else:
        res = run_torch(args, load_settings(args, reports))
    print(f"torch {res.get('torch_version')} (CUDA {res.get('cuda_version')}) on {res.get('device')}, "
          f"tf32 {res.get('tf32')}, {res.get('steps')} timed steps after {res.get('warmup')} warm-up")
    print(table(res))
    if reports:
        text, summary = compare(reports, res)
        res["comparison"] = summary
        print(text)
    if args.out and not args.torch_json:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)
        print(f"wrote {args.out}", file=sys.stderr)
    failed = [r for r in res["results"] if "error" in r]
    if failed and not args.torch_json:
        raise SystemExit(f"torch_train.py: {len(failed)} of {len(res['results'])} runs failed")


if __name__ == "__main__":
    main()
