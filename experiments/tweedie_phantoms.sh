#!/usr/bin/env bash
# Reproduction (iii) at CPU scale: Ambient-Tweedie (consistent diffusion meets Tweedie) against the oracle.
# Data: built-in 16×16 phantoms (512 for training) with Gaussian noise σ_n ∈ {0.1, 0.2} on [-1, 1], fixed per
# image. Models (EDM, DDPM++ `tiny-edm`, no mask channels):
#   oracle:            --loss supervised on the clean images of the file;
#   tweedie σ_n, c=0:  --loss tweedie (double Tweedie above σ_n only);
#   tweedie σ_n, c=W:  --loss tweedie --consistency W (plus the consistency loss below σ_n, ~3× the cost).
# Metrics on 256 held-out clean phantoms: denoising MSE at t ∈ {10, 50, 100, 200, …, 900} (at the equivalent
# EDM σ), and the sliced Wasserstein distance of SAMPLES samples to the held-out phantoms, for every Tweedie run
# both with truncated sampling (stop at σ_n, output D(x; σ_n)) and full sampling (down to σ_min), drawn by
# examples/tweedie_sample.rs whatever the run's own setting; the oracle's samples are EDM Heun, 18 steps.
# β_start = 1e-4 for every run: EDM training does not use the VP schedule, but the denoising evaluation maps
# t to σ through it, so all runs must share it for their curves to be compared at the same σ.
# Usage: experiments/tweedie_phantoms.sh [OUT_DIR] [STEPS] [SAMPLES] [W] [ORACLE_RUN]   (about 6 minutes on 2 CPU cores at 300)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/exp-tweedie-phantoms}"
steps="${2:-300}"
samples="${3:-128}"
w="${4:-0.01}"
oracle_from="${5:-}" # an oracle run to reuse (tiny-edm, supervised, same STEPS, β_start 1e-4)
gsure=target/release/gsure
cargo build --release --quiet --bin gsure --example tweedie_sample
sampler=target/release/examples/tweedie_sample
mkdir -p "$out"
"$gsure" data make --op noise --sigma0 0 --n 256 --size 16 --phantom-seed 4321 --out "$out/test.safetensors" --force
for s in 0.1 0.2; do
  "$gsure" data make --op noise --sigma0 "$s" --n 512 --size 16 --seed 1 --out "$out/train-s$s.safetensors" --force
done
evalrun() { # name [extra eval args...]
  local name="$1"; shift
  "$gsure" eval --run "$out/$name" --data "$out/test.safetensors" --samples "$samples" "$@"
}
if [ -n "$oracle_from" ]; then # the same oracle run as experiments/ambient_phantoms.sh (same phantoms, steps, β_start)
  rm -rf "$out/oracle" && cp -r "$oracle_from" "$out/oracle" && rm -rf "$out/oracle/eval"
else
  "$gsure" train --config tiny-edm --loss supervised --data "$out/train-s0.1.safetensors" --steps "$steps" \
    --beta-start 1e-4 --out "$out/oracle" --force
fi
evalrun oracle --what denoise,swd --out "$out/oracle/eval"
for s in 0.1 0.2; do
  for c in 0 "$w"; do
    name="tweedie-s$s-c$c"
    "$gsure" train --config tiny-edm --loss tweedie --consistency "$c" --data "$out/train-s$s.safetensors" \
      --beta-start 1e-4 --steps "$steps" --out "$out/$name" --force
    evalrun "$name" --what denoise --out "$out/$name/eval"
    for mode in truncated full; do
      "$sampler" "$out/$name" "$mode" "$samples" 7 "$out/$name/samples-$mode.safetensors"
      evalrun "$name" --what swd --samples-from "$out/$name/samples-$mode.safetensors" --out "$out/$name/eval-$mode"
    done
  done
done
python3 - "$out" "$w" <<'PY'
import json, sys
out, w = sys.argv[1], sys.argv[2]
runs = ["tweedie-s0.1-c0", f"tweedie-s0.1-c{w}", "tweedie-s0.2-c0", f"tweedie-s0.2-c{w}"]
names = ["oracle"] + runs
curves = {k: {p["t"]: p["mse"] for p in json.load(open(f"{out}/{k}/eval/eval.json"))["denoise"]["points"]} for k in names}
sig = {p["t"]: p["sigma"] for p in json.load(open(f"{out}/oracle/eval/eval.json"))["denoise"]["points"]}
print("denoising MSE on held-out clean phantoms")
print(f"{'t':>4} {'sigma':>7} " + " ".join(f"{k:>17}" for k in names))
for t in sorted(curves["oracle"]):
    print(f"{t:>4} {sig[t]:>7.3f} " + " ".join(f"{curves[k][t]:>17.5f}" for k in names))
print("sliced Wasserstein distance of samples to held-out phantoms (± standard error over directions)")
s = json.load(open(f"{out}/oracle/eval/eval.json"))["swd"]
print(f"{'oracle (EDM Heun)':>28} {s['swd']:.5f} ± {s['std_error']:.5f}")
for k in runs:
    for mode in ("truncated", "full"):
        s = json.load(open(f"{out}/{k}/eval-{mode}/eval.json"))["swd"]
        print(f"{k + ' ' + mode:>28} {s['swd']:.5f} ± {s['std_error']:.5f}")
PY
