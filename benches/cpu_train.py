#!/usr/bin/env python3
"""gsure's CPU training step beside PyTorch eager on the CPU: the same model, step and threads, in one run.

The torch step is benches/torch_train.py's (the same DDIM U-Net, parameter count checked against gsure's,
supervised x0 target under MSE, backward, clip_grad_norm, Adam, EMA), built once on the CPU. The run
alternates rounds: `gsure bench train --device cpu --steps S` in a subprocess (its own warm-up step
first), then S timed torch steps, then the other order, so both see the same machine state (thermal,
other load). Every timed step of either side is kept; the report gives each side's median and spread
(min, p90), the ratio of the medians (gsure / torch, above 1: gsure slower) and the range of the
per-round ratios, which says how much the machine moved during the run.

    scripts/bench-cpu                       # installs torch into ~/.cache/gsure/torch-cpu, then runs this
    python3 benches/cpu_train.py --gsure target/release/gsure --config tiny --rounds 6 --out cpu.json
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_train  # noqa: E402  (the model and the step)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gsure", default="target/release/gsure", help="the gsure binary")
    ap.add_argument("--config", default="tiny", help="comma-separated configurations (default tiny)")
    ap.add_argument("--batch", type=int, help="batch size (default: each configuration's)")
    ap.add_argument("--rounds", type=int, default=6, help="alternating rounds (default 6)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per side and round (default 5)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="threads for both sides (gsure: RAYON_NUM_THREADS; torch: set_num_threads)")
    ap.add_argument("--out", help="write the results as JSON here")
    return ap.parse_args(argv)


def settings_of(args):
    cmd = [args.gsure, "bench", "train", "--list-json", "--config", args.config]
    try:
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise SystemExit(f"cpu_train.py: could not run {' '.join(cmd)}: {e} (build it: cargo build --release)")
    settings = json.loads(out)
    for s in settings:
        if args.batch:
            s["batch"] = args.batch
    return settings


def gsure_round(args, setting, env):
    """One gsure process: its warm-up step, then args.steps timed steps. Returns (step times in ms, report)."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "gsure.json")
        cmd = [args.gsure, "bench", "train", "--device", "cpu", "--config", setting["name"], "--batch",
               str(setting["batch"]), "--steps", str(args.steps), "--warmup", "1", "--out", out]
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if p.returncode != 0:
            raise SystemExit(f"cpu_train.py: {' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
        with open(out) as f:
            report = json.load(f)
    r = report["results"][0]
    if r.get("error"):
        raise SystemExit(f"cpu_train.py: gsure {setting['name']}: {r['error']}")
    return r["step_ms"], report


def torch_round(torch, step, steps):
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss, norm = step()
        float(loss.detach())  # the step is synchronous on the CPU; reading the loss is what gsure does too
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def main(argv=None):
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    results = []
    gsure_report = None
    for setting in settings_of(args):
        step, n_params = torch_train.make_step(torch, setting, "eager-f32", torch.device("cpu"))
        for _ in range(2):  # warm-up: Adam's state, allocator caches
            step()
        g_all, t_all, ratios = [], [], []
        for rnd in range(args.rounds):
            order = ("gsure", "torch") if rnd % 2 == 0 else ("torch", "gsure")
            got = {}
            for side in order:
                if side == "gsure":
                    got["gsure"], gsure_report = gsure_round(args, setting, env)
                else:
                    got["torch"] = torch_round(torch, step, args.steps)
            g, t = torch_train.stats(got["gsure"]), torch_train.stats(got["torch"])
            ratios.append(g["median_ms"] / t["median_ms"])
            print(f"round {rnd + 1}/{args.rounds} {setting['name']} batch {setting['batch']}: gsure "
                  f"{g['median_ms']:.1f} ms, torch {t['median_ms']:.1f} ms, ratio {ratios[-1]:.2f}",
                  file=sys.stderr, flush=True)
            g_all += got["gsure"]
            t_all += got["torch"]
        g, t = torch_train.stats(g_all), torch_train.stats(t_all)
        results.append({
            "config": setting["name"], "batch": setting["batch"], "params": n_params,
            "gsure": g, "torch": t, "ratio": g["median_ms"] / t["median_ms"],
            "round_ratio_min": min(ratios), "round_ratio_max": max(ratios),
            "gsure_step_ms": g_all, "torch_step_ms": t_all,
        })
    res = {
        "kind": "cpu_train.py",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": gsure_report.get("commit") if gsure_report else None,
        "device": (gsure_report.get("device") or {}).get("name") if gsure_report else None,
        "torch_version": torch.__version__,
        "threads": args.threads,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "timing": "wall clock per whole training step (batch, noising, forward, loss, backward, clip, Adam, EMA); "
                  "rounds alternate gsure and torch; ratio = gsure median / torch median (>1: gsure slower)",
        "results": results,
    }
    print(f"gsure ({res['commit']}) vs torch {res['torch_version']} eager f32 on {res['device']}, "
          f"{args.threads} threads, {args.rounds} alternating rounds of {args.steps} steps")
    print(f"{'config':<10} {'batch':>5} {'gsure ms':>9} {'(min-p90)':>15} {'torch ms':>9} {'(min-p90)':>15} "
          f"{'ratio':>6} {'rounds':>11}")
    for r in results:
        g, t = r["gsure"], r["torch"]
        print(f"{r['config']:<10} {r['batch']:>5} {g['median_ms']:>9.1f} {g['min_ms']:>7.1f}-{g['p90_ms']:<7.1f} "
              f"{t['median_ms']:>9.1f} {t['min_ms']:>7.1f}-{t['p90_ms']:<7.1f} {r['ratio']:>6.2f} "
              f"{r['round_ratio_min']:>5.2f}-{r['round_ratio_max']:<5.2f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
