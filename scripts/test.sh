#!/usr/bin/env bash
# The test suite. CUDA is behind a cargo feature and never built here; the GPU code path runs on
# burn's wgpu backend instead, on Mesa's software Vulkan driver (lavapipe) where there is no GPU
# (tests/wgpu.rs, docs/wgpu.md): once with autotuning at its cheapest level, sid2's default, as
# part of the whole suite, then once more without autotuning, each op's first-choice kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --workspace --all-targets --locked --features wgpu
cargo test --locked --features wgpu-untuned --test wgpu
