#!/usr/bin/env bash
# Reproduction (i) at CPU scale: GSURE against the oracle and the naive baseline, denoising MSE across t.
# Data: built-in 16×16 phantoms, 4×4 patches dropped with p = 0.4, σ0 = 0.02 (the GSURE paper's CelebA
# setting, scaled down); model: the `tiny` DDIM U-Net; β_start = σ0² = 4e-4 for all three runs.
#   oracle:  --loss supervised on the clean images of the same file (what the corrupted-data model is
#            compared to);
#   gsure:   --loss gsure on the observations only;
#   naive:   --loss naive, the observations (zero-filled) treated as clean images.
# Then the denoising MSE of each on 256 held-out clean phantoms at t ∈ {10, 50, 100, 200, …, 900}.
# Usage: experiments/gsure_vs_oracle_phantoms.sh [OUT_DIR] [STEPS]   (about 10 minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/exp-gsure-phantoms}"
steps="${2:-600}"
# GSURE: a gsure binary to use (default: build target/release/gsure).
gsure="${GSURE:-target/release/gsure}"
[ -n "${GSURE:-}" ] || cargo build --release --quiet
mkdir -p "$out"
"$gsure" data make --op patch --p 0.4 --patch 4 --sigma0 0.02 --n 512 --size 16 --seed 1 \
  --out "$out/train.safetensors" --force --preview "$out/train_preview.png"
"$gsure" data make --op noise --sigma0 0 --n 256 --size 16 --phantom-seed 4321 --out "$out/test.safetensors" --force
for loss in supervised gsure naive; do
  "$gsure" train --config tiny --loss "$loss" --data "$out/train.safetensors" --beta-start 4e-4 \
    --steps "$steps" --out "$out/$loss" --force
  "$gsure" eval --run "$out/$loss" --data "$out/test.safetensors" --what denoise --out "$out/$loss/eval"
done
"$gsure" eval --run "$out/gsure" --data "$out/test.safetensors" --what denoise --out "$out/compare" \
  --compare-with "$out/supervised/eval/eval.json,$out/naive/eval/eval.json"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
curves = {k: {p["t"]: p["mse"] for p in json.load(open(f"{out}/{k}/eval/eval.json"))["denoise"]["points"]} for k in ("supervised", "gsure", "naive")}
print(f"{'t':>4} {'oracle':>10} {'gsure':>10} {'naive':>10}")
for t in sorted(curves["supervised"]):
    print(f"{t:>4} {curves['supervised'][t]:>10.5f} {curves['gsure'][t]:>10.5f} {curves['naive'][t]:>10.5f}")
PY
