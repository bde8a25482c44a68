#!/usr/bin/env bash
# Reproduction (ii) at CPU scale: Ambient Diffusion against the oracle and the naive baseline.
# Data: built-in 16×16 phantoms (512 for training), pixels dropped with p ∈ {0.6, 0.9}, no noise; the
# Ambient further corruption δ = 0.1 is the objective's default. Models (EDM, DDPM++ `tiny`):
#   oracle:        --loss supervised --config tiny-edm on the clean images of the file (no mask channels);
#   ambient p:     --loss ambient --config tiny-ambient (mask channels) on the masked images;
#   naive p:       --loss naive --config tiny-edm: the zero-filled masked images treated as clean images
#                  (plain EDM loss, the same network as the oracle).
# Metrics on 256 held-out clean phantoms: denoising MSE at t ∈ {10, 50, 100, 200, …, 900} (EDM models at
# the equivalent σ = √((1−ᾱ_t)/ᾱ_t); the ambient model is given an all-ones mask), and the sliced
# Wasserstein distance of SAMPLES samples to the held-out phantoms (ambient runs draw them with the
# fixed-mask sampler at the run's p, the others with EDM Heun 18 steps). Each Ambient run is also evaluated
# with masks like its training ones (`--mask-keep`): keeping (1−p)(1−δ) of the pixels (Ã, what it trained on)
# and (1−p) (A alone, the observations' masks), still scored on every pixel. SWD floor: SAMPLES clean
# phantoms (another phantom seed) against the same held-out phantoms.
# Usage: experiments/ambient_phantoms.sh [OUT_DIR] [STEPS] [SAMPLES]   (about 5 minutes on 2 CPU cores at 400)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/exp-ambient-phantoms}"
steps="${2:-400}"
samples="${3:-128}"
# GSURE: a gsure binary to use (default: build target/release/gsure).
gsure="${GSURE:-target/release/gsure}"
[ -n "${GSURE:-}" ] || cargo build --release --quiet
mkdir -p "$out"
"$gsure" data make --op noise --sigma0 0 --n 256 --size 16 --phantom-seed 4321 --out "$out/test.safetensors" --force
for p in 0.6 0.9; do
  "$gsure" data make --op pixel --p "$p" --n 512 --size 16 --seed 1 --out "$out/train-p$p.safetensors" --force \
    --preview "$out/train-p${p}_preview.png"
done
run() { # name config loss data
  "$gsure" train --config "$2" --loss "$3" --data "$4" --steps "$steps" --out "$out/$1" --force
  "$gsure" eval --force --run "$out/$1" --data "$out/test.safetensors" --what denoise,swd --samples "$samples" \
    --out "$out/$1/eval"
}
run oracle tiny-edm supervised "$out/train-p0.6.safetensors"
"$gsure" data make --op noise --sigma0 0 --n "$samples" --size 16 --phantom-seed 999 --out "$out/floor.safetensors" --force
"$gsure" eval --force --run "$out/oracle" --data "$out/test.safetensors" --what swd --samples "$samples" \
  --samples-from "$out/floor.safetensors" --out "$out/floor"
delta=0.1 # the objective's default further corruption
for p in 0.6 0.9; do
  run "ambient-p$p" tiny-ambient ambient "$out/train-p$p.safetensors"
  for keep in "$(python3 -c "print(round((1-$p)*(1-$delta), 6))")" "$(python3 -c "print(round(1-$p, 6))")"; do
    "$gsure" eval --force --run "$out/ambient-p$p" --data "$out/test.safetensors" --what denoise --mask-keep "$keep" \
      --out "$out/ambient-p$p/eval-keep$keep"
  done
  run "naive-p$p" tiny-edm naive "$out/train-p$p.safetensors"
done
python3 - "$out" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
names = ["oracle", "ambient-p0.6", "naive-p0.6", "ambient-p0.9", "naive-p0.9"]
ev = {k: json.load(open(f"{out}/{k}/eval/eval.json")) for k in names}
curves = {k: {p["t"]: p["mse"] for p in ev[k]["denoise"]["points"]} for k in names}
for p in ("0.6", "0.9"):
    for f in sorted(glob.glob(f"{out}/ambient-p{p}/eval-keep*/eval.json")):
        d = json.load(open(f))["denoise"]
        curves[f"ambient-p{p} keep {d['mask_keep']}"] = {q["t"]: q["mse"] for q in d["points"]}
cols = list(curves)
print("denoising MSE on held-out clean phantoms (ambient: all-ones mask unless 'keep q': random masks keeping q)")
print(f"{'t':>4} " + " ".join(f"{k:>22}" for k in cols))
for t in sorted(curves["oracle"]):
    print(f"{t:>4} " + " ".join(f"{curves[k][t]:>22.5f}" for k in cols))
print("sliced Wasserstein distance of samples to held-out phantoms")
print(f"{'floor':>13} {json.dumps(json.load(open(f'{out}/floor/eval.json'))['swd'])}")
for k in names:
    print(f"{k:>13} {json.dumps(ev[k]['swd'])}")
PY
