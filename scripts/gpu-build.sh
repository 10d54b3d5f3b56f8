#!/usr/bin/env bash
# Builds the CUDA binary of `sid2` on this (GPU-less) machine and packs it for the device tool:
# gpu-bin/sid2.xz, git-ignored. Nothing CUDA is needed here: with CUDARC_CUDA_VERSION=13000
# (.cargo/config.toml) the binary opens libcuda and libnvrtc at run time, and kernels compile as
# CUDA C++ through NVRTC. FFmpeg is left out (--no-default-features): the GPU machine has none,
# so it trains and samples from shards prepared here and MP4s are encoded back here.
# About 17 minutes on 2 cores from clean; the build lives in target/gpu, apart from the CPU one.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=target/gpu
cargo build --release --locked --no-default-features --features cuda --bin sid2
mkdir -p gpu-bin
strip -o gpu-bin/sid2 target/gpu/release/sid2
xz -T0 -6 -f gpu-bin/sid2
git rev-parse --short HEAD > gpu-bin/COMMIT
ls -l gpu-bin
