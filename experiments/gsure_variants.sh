#!/usr/bin/env bash
# Issue 15's estimator variants beside reproduction (i): on the data of an `experiments/gsure_vs_oracle.sh`
# run in OUT_DIR (its train/test files, oracle, default GSURE and naive runs), GSURE again with each variant
# `gsure train` offers, same steps, seed and data, then the denoising MSE of each on the held-out images.
#   gaussian:  --gsure-probe gaussian (the default is Rademacher)
#   xt:        --gsure-mode xt (the paper's equation: target x̄_t/√ᾱ_t, a divergence on every step)
#   div4:      --gsure-div-every 4 (the divergence for 1 example in 4: a B + B/4-image pass, not 2B)
#   div4-long: div4 for 1.5× the steps: the compute of the default at STEPS (measured on the CPU, tiny at
#              batch 16: 92 ms a step for the default, 62 for div4, 52 for the oracle)
# gaussian and xt cost what the default costs per step (the same 2B-image forward and backward).
# VARIANTS (default all four) picks which to run.
# Usage: [GSURE=BIN] experiments/gsure_variants.sh [OUT_DIR] [STEPS] [CONFIG]   (OUT_DIR from gsure_vs_oracle.sh
#        with the same STEPS; CONFIG tiny for phantoms, tiny32 for fashion-mnist; about 1.5 minutes a variant
#        on 2 CPU cores at 600 steps on phantoms)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/exp-gsure-phantoms}"
steps="${2:-600}"
gsure="${GSURE:-target/release/gsure}"
[ -n "${GSURE:-}" ] || cargo build --release --quiet
for f in train.safetensors test.safetensors supervised/eval/eval.json gsure/eval/eval.json naive/eval/eval.json; do
  [ -f "$out/$f" ] || { echo "$out/$f is missing: run experiments/gsure_vs_oracle.sh $out $steps first" >&2; exit 2; }
done
config="${3:-tiny}"
declare -A flags=([gaussian]="--gsure-probe gaussian" [xt]="--gsure-mode xt" [div4]="--gsure-div-every 4"
  [div4-long]="--gsure-div-every 4")
variants="${VARIANTS:-gaussian xt div4 div4-long}"
for v in $variants; do
  t0=$SECONDS
  n="$steps"
  [ "$v" = div4-long ] && n=$((steps * 3 / 2))
  # shellcheck disable=SC2086
  "$gsure" train --config "$config" --loss gsure ${flags[$v]} --data "$out/train.safetensors" --beta-start 4e-4 \
    --steps "$n" --out "$out/gsure-$v" --force
  echo "$((SECONDS - t0))" >"$out/gsure-$v/wall_s"
  "$gsure" eval --force --run "$out/gsure-$v" --data "$out/test.safetensors" --what denoise --out "$out/gsure-$v/eval"
done
python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
runs = [k for k in ("supervised", "gsure", "gsure-gaussian", "gsure-xt", "gsure-div4", "gsure-div4-long", "naive")
        if os.path.exists(f"{out}/{k}/eval/eval.json")]
curves = {k: {p["t"]: p["mse"] for p in json.load(open(f"{out}/{k}/eval/eval.json"))["denoise"]["points"]} for k in runs}
gs = [k for k in runs if k.startswith("gsure")]
print(f"{'t':>4} " + " ".join(f"{k:>15}" for k in runs) + "   (" + ", ".join(gs) + ") / oracle")
for t in sorted(curves["supervised"]):
    o = curves["supervised"][t]
    ratios = " ".join(f"{curves[k][t] / o:.3f}" for k in gs)
    print(f"{t:>4} " + " ".join(f"{curves[k][t]:>15.5f}" for k in runs) + f"   {ratios}")
PY
