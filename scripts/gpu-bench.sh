#!/usr/bin/env bash
# The whole GPU benchmark in one command, run on the device machine from the repository root
# with gpu-bin/ carried over (build it first with scripts/gpu-build.sh):
#
#   run(command="bash scripts/gpu-bench.sh", carry=["gpu-bin"])
#
# Results land in $OUT (JSON per benchmark, nvidia-smi before and after); record them in
# BENCHMARKS.md with the device, gpu-bin/COMMIT and this command.
set -euo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
xz -dc gpu-bin/sid2.xz > /tmp/sid2
chmod +x /tmp/sid2
# Where the device machine keeps libcuda and libnvrtc (stack.md); cudarc asks for libnccl.so.
mkdir -p /tmp/nccl && ln -sf "$(ls /lib/*/libnccl.so.2 /lib/libnccl.so.2 2>/dev/null | head -1)" /tmp/nccl/libnccl.so || true
export LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/cuda/lib64:/tmp/nccl:${LD_LIBRARY_PATH:-}
nvidia-smi > "$OUT/nvidia-smi-before.txt"
sid2() { /tmp/sid2 --quiet --device cuda "$@"; }
sid2 bench matmul --n 8192 --reps 20 --dtype bf16 > "$OUT/matmul-bf16.json" 2> "$OUT/matmul-bf16.log"
sid2 bench matmul --n 8192 --reps 20 --dtype f32 > "$OUT/matmul-f32.json" 2> "$OUT/matmul-f32.log"
sid2 bench train --config configs/k600_64.toml --warmup 3 --steps 10 --set train.batch_size=16 \
    > "$OUT/train-k600_64.json" 2> "$OUT/train-k600_64.log"
sid2 bench train --config configs/imagenet256.toml --warmup 3 --steps 10 --set train.batch_size=64 \
    > "$OUT/train-imagenet256.json" 2> "$OUT/train-imagenet256.log"
nvidia-smi > "$OUT/nvidia-smi-after.txt"
cat "$OUT"/*.json
