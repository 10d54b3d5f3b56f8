#!/usr/bin/env bash
# The whole GPU benchmark in one command, run on the device machine from the repository root
# with gpu-bin/ (scripts/gpu-build.sh) and, when there is one, gpu-cache/ carried over:
#
#   run(command="bash scripts/gpu-bench.sh", carry=["gpu-bin", "gpu-cache"])
#
# Results land in $OUT: one JSON per benchmark with its log (ending with the peak GPU memory)
# and memory trace, nvidia-smi before and after, and
# $OUT/gpu-cache/, the autotune and kernel cache to copy back into gpu-cache/ here so the next
# machine of the same kind starts warm. Record the numbers in BENCHMARKS.md with the device,
# gpu-bin/COMMIT and this command.
set -euo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT/gpu-cache"
xz -dc gpu-bin/sid2.xz > /tmp/sid2
chmod +x /tmp/sid2
# Where the device machine keeps libcuda and libnvrtc (stack.md); cudarc asks for libnccl.so.
nccl=$(ls /lib/libnccl.so.2 /lib/*/libnccl.so.2 2>/dev/null | head -1 || true)
mkdir -p /tmp/nccl && [ -n "$nccl" ] && ln -sf "$nccl" /tmp/nccl/libnccl.so
export LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/cuda/lib64:/tmp/nccl:${LD_LIBRARY_PATH:-}
# CubeCL keeps autotune results and compiled kernels (cubecl.toml) in
# target/environment/$CUBECL_ENVIRONMENT.db; the cache is only valid for one kind of GPU.
export CUBECL_ENVIRONMENT=${CUBECL_ENVIRONMENT:-$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr -c 'A-Za-z0-9\n' '-')}
mkdir -p target/environment
cp gpu-cache/"$CUBECL_ENVIRONMENT".db* target/environment/ 2>/dev/null || true
nvidia-smi > "$OUT/nvidia-smi-before.txt"
# Each benchmark with nvidia-smi sampling the GPU's memory every 200 ms beside it: the peak
# includes what CubeCL's allocator holds in reserve, as PyTorch's max_memory_reserved would.
bench() {
    local name=$1 rc=0
    shift
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$OUT/$name.gpu-mem-mib.csv" &
    local sampler=$!
    /tmp/sid2 --quiet --device cuda bench "$@" > "$OUT/$name.json" 2> "$OUT/$name.log" || rc=$?
    kill "$sampler"
    echo "peak GPU memory: $(sort -n "$OUT/$name.gpu-mem-mib.csv" | tail -1) MiB" >> "$OUT/$name.log"
    return "$rc"
}
bench matmul-bf16 matmul --n 8192 --reps 20 --dtype bf16
bench matmul-f32 matmul --n 8192 --reps 20 --dtype f32
bench train-k600_64 train --config configs/k600_64.toml --warmup 3 --steps 10
bench train-imagenet256 train --config configs/imagenet256.toml --warmup 3 --steps 10 --set train.batch_size=64
# 11 predicted frames and guided images, 256 steps each (imagenet256's guidance interval is on).
bench sample-k600_64 sample --config configs/k600_64.toml --batch 16 --set sample.steps=256
bench sample-imagenet256 sample --config configs/imagenet256.toml --batch 16 --set sample.steps=256
# A second process on the now-filled cache: its warm-up is what later runs pay.
bench train-k600_64-warm-cache train --config configs/k600_64.toml --warmup 3 --steps 3
nvidia-smi > "$OUT/nvidia-smi-after.txt"
cp target/environment/"$CUBECL_ENVIRONMENT".db* "$OUT/gpu-cache/" 2>/dev/null || true
cat "$OUT"/*.json
