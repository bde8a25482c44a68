#!/usr/bin/env bash
# Reproduction (iii) at CPU scale: Ambient-Tweedie (consistent diffusion meets Tweedie) against the oracle.
# Data: built-in 16×16 phantoms (512 for training) with Gaussian noise σ_n ∈ {0.1, 0.2} on [-1, 1], fixed per
# image. Models (EDM, DDPM++ `tiny-edm`, no mask channels):
#   oracle:            --loss supervised on the clean images of the file;
#   tweedie σ_n, c=0:  --loss tweedie (double Tweedie above σ_n only);
#   tweedie σ_n, c=W:  --loss tweedie --consistency W (plus the consistency loss below σ_n, ~3× the cost),
#                      for every W of the comma-separated list W (a sweep of weights).
# Metrics on 256 held-out clean phantoms: denoising MSE at t ∈ {10, 50, 100, 200, …, 900} (at the equivalent
# EDM σ), and the sliced Wasserstein distance of SAMPLES samples to the held-out phantoms, for every Tweedie run
# both with truncated sampling (stop at σ_n, output D(x; σ_n)) and full sampling (down to σ_min), drawn by
# examples/tweedie_sample.rs whatever the run's own setting; the oracle's samples are EDM Heun, 18 steps.
# The SWD floor: SAMPLES clean phantoms (another phantom seed) against the same held-out phantoms.
# β_start = 1e-4 for every run: EDM training does not use the VP schedule, but the denoising evaluation maps
# t to σ through it, so all runs must share it for their curves to be compared at the same σ.
# Usage: experiments/tweedie_phantoms.sh [OUT_DIR] [STEPS] [SAMPLES] [W[,W...]] [ORACLE_RUN] [SIGMA_N[,SIGMA_N...]]
#        (about 6 minutes on 2 CPU cores at 300 steps, one W, both σ_n)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/exp-tweedie-phantoms}"
steps="${2:-300}"
samples="${3:-128}"
w="${4:-0.01}"
oracle_from="${5:-}" # an oracle run to reuse (tiny-edm, supervised, same STEPS, β_start 1e-4)
sigmas="${6:-0.1,0.2}"
IFS=, read -r -a weights <<< "$w"
IFS=, read -r -a sigma_list <<< "$sigmas"
# GSURE, TWEEDIE_SAMPLE: binaries to use (default: build target/release/gsure and the example).
gsure="${GSURE:-target/release/gsure}"
sampler="${TWEEDIE_SAMPLE:-target/release/examples/tweedie_sample}"
[ -n "${GSURE:-}" ] && [ -n "${TWEEDIE_SAMPLE:-}" ] || cargo build --release --quiet --bin gsure --example tweedie_sample
mkdir -p "$out"
"$gsure" data make --op noise --sigma0 0 --n 256 --size 16 --phantom-seed 4321 --out "$out/test.safetensors" --force
for s in 0.1 0.2; do # the oracle trains on the clean images of either file
  "$gsure" data make --op noise --sigma0 "$s" --n 512 --size 16 --seed 1 --out "$out/train-s$s.safetensors" --force
done
evalrun() { # name [extra eval args...]
  local name="$1"; shift
  "$gsure" eval --force --run "$out/$name" --data "$out/test.safetensors" --samples "$samples" "$@"
}
if [ -n "$oracle_from" ]; then # the same oracle run as experiments/ambient_phantoms.sh (same phantoms, steps, β_start)
  rm -rf "$out/oracle" && cp -r "$oracle_from" "$out/oracle" && rm -rf "$out/oracle/eval"
else
  "$gsure" train --config tiny-edm --loss supervised --data "$out/train-s0.1.safetensors" --steps "$steps" \
    --beta-start 1e-4 --out "$out/oracle" --force
fi
evalrun oracle --what denoise,swd --out "$out/oracle/eval"
"$gsure" data make --op noise --sigma0 0 --n "$samples" --size 16 --phantom-seed 999 --out "$out/floor.safetensors" --force
evalrun oracle --what swd --samples-from "$out/floor.safetensors" --out "$out/floor"
for s in "${sigma_list[@]}"; do
  for c in 0 "${weights[@]}"; do
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
python3 - "$out" "$w" "$sigmas" <<'PY'
import json, sys
out, ws, sigmas = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
runs = [f"tweedie-s{s}-c{c}" for s in sigmas for c in ["0"] + ws]
names = ["oracle"] + runs
curves = {k: {p["t"]: p["mse"] for p in json.load(open(f"{out}/{k}/eval/eval.json"))["denoise"]["points"]} for k in names}
sig = {p["t"]: p["sigma"] for p in json.load(open(f"{out}/oracle/eval/eval.json"))["denoise"]["points"]}
print("denoising MSE on held-out clean phantoms")
print(f"{'t':>4} {'sigma':>7} " + " ".join(f"{k:>17}" for k in names))
for t in sorted(curves["oracle"]):
    print(f"{t:>4} {sig[t]:>7.3f} " + " ".join(f"{curves[k][t]:>17.5f}" for k in names))
print("sliced Wasserstein distance of samples to held-out phantoms (± standard error over directions)")
s = json.load(open(f"{out}/floor/eval.json"))["swd"]
print(f"{'floor (clean phantoms)':>28} {s['swd']:.5f} ± {s['std_error']:.5f}")
s = json.load(open(f"{out}/oracle/eval/eval.json"))["swd"]
print(f"{'oracle (EDM Heun)':>28} {s['swd']:.5f} ± {s['std_error']:.5f}")
for k in runs:
    for mode in ("truncated", "full"):
        s = json.load(open(f"{out}/{k}/eval-{mode}/eval.json"))["swd"]
        print(f"{k + ' ' + mode:>28} {s['swd']:.5f} ± {s['std_error']:.5f}")
PY
