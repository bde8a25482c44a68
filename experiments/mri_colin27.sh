#!/usr/bin/env bash
# Reproduction (iv) at CPU scale: GSURE on undersampled single-coil k-space of brain slices, then posterior
# sampling for MRI reconstruction at R ∈ {4, 6, 8, 10, 12}.
# Data: the Colin27 T1 volume's axial slices at 64×64 (scripts/get-data: 130 training and 15 held-out
# slices, real images in [-1, 1]); training observations y = M (F x + σ0 z) with a k-space column mask at
# R = 4 (8 % centre lines + random outer lines), σ0 = 0.01. Model: `tiny-mri64` (the `tiny` DDIM U-Net's
# blocks, 2 channels = the complex image, 64×64), β_start = 1e-4 = σ0² for every run.
#   oracle:  --loss supervised on the clean slices (as complex images with imaginary part 0);
#   gsure:   --loss gsure on the k-space observations only (the network runs as F ∘ U-Net ∘ F⁻¹);
#   naive:   --loss naive, the zero-filled reconstructions F⁻¹ y (aliased complex images) treated as clean.
# Metrics on the 15 held-out slices: denoising MSE at t ∈ {10, 50, …, 900}; then `gsure reconstruct` with
# each run's prior at R ∈ {4, 6, 8, 10, 12} (σ0 = 0.01, DDIM 50 steps, η = 0.85, new masks), PSNR/SSIM of the
# real part against the clean slice, beside the zero-filled baseline.
# Usage: [GSURE=BIN] experiments/mri_colin27.sh [OUT_DIR] [STEPS] [BATCH]   (about 50 min on 2 CPU cores at 400, 8)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/exp-mri-colin27}"
steps="${2:-400}"
batch="${3:-8}"
# GSURE: a gsure binary to use (default: build target/release/gsure).
gsure="${GSURE:-target/release/gsure}"
[ -n "${GSURE:-}" ] || cargo build --release --quiet
GSURE="$gsure" scripts/get-data data >/dev/null
mkdir -p "$out"
"$gsure" data make --source data/brain-t1-64.safetensors --op mri --R 4 --sigma0 0.01 --seed 1 \
  --out "$out/train.safetensors" --force --preview "$out/train_preview.png"
test=data/brain-t1-64-test.safetensors
for loss in supervised gsure naive; do
  "$gsure" train --config tiny-mri64 --loss "$loss" --data "$out/train.safetensors" --beta-start 1e-4 \
    --steps "$steps" --batch "$batch" --out "$out/$loss" --force
  "$gsure" eval --force --run "$out/$loss" --data "$test" --what denoise --out "$out/$loss/eval"
done
"$gsure" reconstruct --force --run "$out/gsure" --compare-run "$out/supervised" --data "$test" --op mri \
  --R 4,6,8,10,12 --sigma0 0.01 --n 15 --out "$out/gsure/reconstruct"
"$gsure" reconstruct --force --run "$out/naive" --data "$test" --op mri --R 4,6,8,10,12 --sigma0 0.01 --n 15 \
  --out "$out/naive/reconstruct"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
names = ("supervised", "gsure", "naive")
curves = {k: {p["t"]: p["mse"] for p in json.load(open(f"{out}/{k}/eval/eval.json"))["denoise"]["points"]} for k in names}
print("denoising MSE on 15 held-out slices (complex images, per value)")
print(f"{'t':>4} {'oracle':>10} {'gsure':>10} {'naive':>10}")
for t in sorted(curves["supervised"]):
    print(f"{t:>4} " + " ".join(f"{curves[k][t]:>10.5f}" for k in names))
g = json.load(open(f"{out}/gsure/reconstruct/reconstruct.json"))["results"]
n = json.load(open(f"{out}/naive/reconstruct/reconstruct.json"))["results"]
f = lambda s: f"{s['psnr']['mean']:.2f} ± {s['psnr']['std_error']:.2f} / {s['ssim']['mean']:.3f}"
print("reconstruction PSNR (dB) ± s.e. / SSIM on 15 held-out slices")
print(f"{'setting':>8} | {'zero-filled':>22} | {'gsure prior':>22} | {'oracle prior':>22} | {'naive prior':>22}")
for a, b in zip(g, n):
    print(f"{a['label']:>8} | {f(a['zero_filled']):>22} | {f(a['reconstruction']):>22} | {f(a['oracle']):>22} | {f(b['reconstruction']):>22}")
PY
