#!/usr/bin/env bash
# Reproduction (i) at CPU scale: GSURE against the oracle and the naive baseline, denoising MSE across t.
# Data (DATA): `phantoms` (default): built-in 16×16 phantoms, 512 for training, 256 held out, model `tiny`;
# `fashion-mnist`: the paper's dataset at 32×32 (scripts/get-data: 28×28 padded), the first N_TRAIN (default
# 2048) training images and 256 test images, model `tiny32`; for phantoms N_TRAIN sets the training count
# (default 512). Corruption: 4×4 patches dropped with p = 0.4, σ0 = SIGMA0 (default 0.02, the GSURE paper's
# setting; 0 removes the divergence term); β_start = 0.02² = 4e-4 for all three runs.
#   oracle:  --loss supervised on the clean images of the same file (what the corrupted-data model is
#            compared to);
#   gsure:   --loss gsure on the observations only;
#   naive:   --loss naive, the observations (zero-filled) treated as clean images.
# Then the denoising MSE of each on the held-out clean images at t ∈ {10, 50, 100, 200, …, 900}.
# Usage: [GSURE=BIN] [SIGMA0=S] experiments/gsure_vs_oracle.sh [OUT_DIR] [STEPS] [DATA] [N_TRAIN]
#        (phantoms: about 5 minutes on 2 CPU cores at 600 steps; fashion-mnist: about 4× that)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/exp-gsure-phantoms}"
steps="${2:-600}"
data="${3:-phantoms}"
n_train="${4:-}"
sigma0="${SIGMA0:-0.02}"
# GSURE: a gsure binary to use (default: build target/release/gsure).
gsure="${GSURE:-target/release/gsure}"
[ -n "${GSURE:-}" ] || cargo build --release --quiet
mkdir -p "$out"
case "$data" in
  phantoms)
    config=tiny
    source_args=(--n "${n_train:-512}" --size 16)
    "$gsure" data make --op noise --sigma0 0 --n 256 --size 16 --phantom-seed 4321 --out "$out/test.safetensors" --force
    ;;
  fashion-mnist)
    config=tiny32
    GSURE="$gsure" scripts/get-data data >/dev/null
    source_args=(--source data/fashion-mnist-train.safetensors --n "${n_train:-2048}")
    "$gsure" data make --source data/fashion-mnist-test.safetensors --op noise --sigma0 0 --n 256 \
      --out "$out/test.safetensors" --force
    ;;
  *) echo "DATA must be phantoms or fashion-mnist, not $data" >&2; exit 2 ;;
esac
"$gsure" data make "${source_args[@]}" --op patch --p 0.4 --patch 4 --sigma0 "$sigma0" --seed 1 \
  --out "$out/train.safetensors" --force --preview "$out/train_preview.png"
for loss in supervised gsure naive; do
  "$gsure" train --config "$config" --loss "$loss" --data "$out/train.safetensors" --beta-start 4e-4 \
    --steps "$steps" --out "$out/$loss" --force
  "$gsure" eval --force --run "$out/$loss" --data "$out/test.safetensors" --what denoise --out "$out/$loss/eval"
done
"$gsure" eval --force --run "$out/gsure" --data "$out/test.safetensors" --what denoise --out "$out/compare" \
  --compare-with "$out/supervised/eval/eval.json,$out/naive/eval/eval.json"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
curves = {k: {p["t"]: p["mse"] for p in json.load(open(f"{out}/{k}/eval/eval.json"))["denoise"]["points"]} for k in ("supervised", "gsure", "naive")}
print(f"{'t':>4} {'oracle':>10} {'gsure':>10} {'naive':>10}")
for t in sorted(curves["supervised"]):
    print(f"{t:>4} {curves['supervised'][t]:>10.5f} {curves['gsure'][t]:>10.5f} {curves['naive'][t]:>10.5f}")
PY
