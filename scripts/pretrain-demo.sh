#!/usr/bin/env bash
# Reproduces the demo's starting weights, examples/checkpoint/small_video.safetensors: the learning
# benchmark's run of configs/small_video.toml (40,000 samples on up to 24 clips of each of the 12
# training videos of ../shared/data, never on the held-out repositories the demo predicts), then
# its EMA weights. About 80 minutes on two CPU cores (release build).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked --bin sid2
out="${1:-runs/small-pretrain}"
CONFIG=configs/small_video.toml bash scripts/learn.sh "$out" --steps 32
samples="$(grep -m1 '^total_samples' "$out/run/config.toml" | tr -dc '0-9')"
weights="$out/run/checkpoints/samples-$(printf '%012d' "$samples")/ema-0.999.safetensors"
mkdir -p examples/checkpoint
cp "$weights" examples/checkpoint/small_video.safetensors
sha256sum examples/checkpoint/small_video.safetensors
