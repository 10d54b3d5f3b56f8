#!/usr/bin/env bash
# Prepares everything a lent GPU needs, on this (GPU-less) machine, for scripts/gpu-check.sh:
#   gpu-bin/sid2.xz        the CUDA binary (stock burn-cuda / cubecl-cuda 0.11.3, autotuned)
#   gpu-bin/sid2-untuned.xz the same without autotuning (`--features cuda-untuned`): a cold start
#                          compiles one kernel per op instead of timing every candidate
#   gpu-bin/sid2-notma.xz  the same with cubecl-cuda patched not to advertise TMA
#                          (patches/cubecl-cuda-0.11.3-no-tma.patch), so the autotuner never
#                          picks a TMA matmul: one of the suspected causes of the bf16 failure
#   gpu-data/              k600_64 shards of the bundled clips, for the real bf16 training run
# All git-ignored. Nothing CUDA is needed here: with CUDARC_CUDA_VERSION=13000
# (.cargo/config.toml) the binary opens libcuda and libnvrtc at run time, and kernels compile as
# CUDA C++ through NVRTC. FFmpeg is left out (--no-default-features): the GPU machine has none.
# About 17 minutes for the first binary on 2 cores from clean; each build keeps its own target folder.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p gpu-bin
build() { # build TARGET_DIR OUTPUT [cargo arguments...]
    local dir=$1 out=$2
    shift 2
    CARGO_TARGET_DIR=$dir cargo build --release --no-default-features --bin sid2 "$@"
    strip -o "gpu-bin/$out" "$dir/release/sid2"
    xz -T0 -6 -f "gpu-bin/$out"
}
build target/gpu sid2 --features cuda --locked
# Cargo keeps both feature sets' artifacts side by side in one target folder.
build target/gpu sid2-untuned --features cuda-untuned --locked

# The no-TMA variant: cubecl-cuda copied out of cargo's registry, patched, and patched in. Its
# target folder starts as a copy of the stock one, so only cubecl-cuda and what depends on it
# (burn-cuda, burn, the project's crates) compile again.
[ -d target/gpu-notma ] || cp -a target/gpu target/gpu-notma
cargo fetch --locked
src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cubecl-cuda-0.11.3 | head -1)
patched=target/patched/cubecl-cuda-0.11.3
rm -rf "$patched" && mkdir -p target/patched && cp -r "$src" "$patched"
patch -d "$patched" -p1 < patches/cubecl-cuda-0.11.3-no-tma.patch
# Cargo records the patch in Cargo.lock; the repository's lock file stays as it was.
cp Cargo.lock target/patched/Cargo.lock.orig
build target/gpu-notma sid2-notma --features cuda --config "patch.crates-io.cubecl-cuda.path=\"$patched\""
cp target/patched/Cargo.lock.orig Cargo.lock

# Shards for the real training run on the device.
cargo build --release --bin sid2
target/release/sid2 --quiet prepare --config configs/k600_64.toml --videos examples/clips --out gpu-data --set data.clips_per_video=16
git rev-parse --short HEAD > gpu-bin/COMMIT
ls -l gpu-bin
du -sh gpu-bin gpu-data
