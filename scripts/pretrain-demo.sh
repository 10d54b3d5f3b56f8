#!/usr/bin/env bash
# Reproduces the demo's starting weights, examples/checkpoint/tiny_video.safetensors: the learning
# benchmark's run of configs/tiny_video.toml (24,000 samples on the 12 training videos of
# ../shared/data, never on the held-out repositories the demo predicts), then its EMA weights.
# About 1.5 h on two CPU cores (release build).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --bin sid2
out="${1:-runs/tiny-pretrain}"
bash scripts/learn.sh "$out" --steps 32
samples="$(grep -m1 '^total_samples' "$out/run/config.toml" | tr -dc '0-9')"
weights="$out/run/checkpoints/samples-$(printf '%012d' "$samples")/ema-0.999.safetensors"
mkdir -p examples/checkpoint
cp "$weights" examples/checkpoint/tiny_video.safetensors
sha256sum examples/checkpoint/tiny_video.safetensors
