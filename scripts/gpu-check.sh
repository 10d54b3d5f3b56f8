#!/usr/bin/env bash
# One device call that answers the open GPU questions, every stage under its own timeout so a
# hang costs one stage, not the lease. Prepare on the CPU machine first:
#
#   bash scripts/gpu-build.sh        # gpu-bin/sid2.xz, gpu-bin/sid2-notma.xz, gpu-data/
#
# then, on the lent device (15 minutes in all; this script fits in about 9):
#
#   run(command="bash scripts/gpu-check.sh", carry=["gpu-bin", "gpu-data", "gpu-cache"], timeout_s=570)
#
# Every stage appends a JSON line to $OUT/results.jsonl and keeps its output and log in $OUT;
# the run ends with $OUT/summary.md. What comes back: the numbers for BENCHMARKS.md, the grown
# autotune cache ($OUT/gpu-cache/, copy into gpu-cache/), and $OUT/samples/predictions.bin of a
# real bf16 run (`sid2 encode --input ... --real ...` here makes the MP4s).
#
# The same stages at toy sizes on the CPU, so the script cannot rot between leases (a test runs
# this):   bash scripts/gpu-check.sh --cpu-dry-run OUT     (SID2 = the sid2 binary to use)
set -uo pipefail
cd "$(dirname "$0")/.."

mode=gpu
if [ "${1:-}" = "--cpu-dry-run" ]; then
    mode=cpu
    OUT=${2:?usage: gpu-check.sh --cpu-dry-run OUT}
fi
OUT=${OUT:-gpu-out}
mkdir -p "$OUT/gpu-cache"
results="$OUT/results.jsonl"
: > "$results"

# stage NAME SECONDS COMMAND...: runs COMMAND with stdout to $OUT/NAME.out, stderr to NAME.log.
stage() {
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s%N)
    timeout --kill-after=5 "$limit" "$@" > "$OUT/$name.out" 2> "$OUT/$name.log"
    rc=$?
    local ms=$(( ($(date +%s%N) - start) / 1000000 ))
    printf '{"stage":"%s","rc":%d,"timed_out":%s,"seconds":%d.%03d,"limit":%d}\n' \
        "$name" "$rc" "$([ $rc -eq 124 ] || [ $rc -eq 137 ] && echo true || echo false)" \
        $((ms / 1000)) $((ms % 1000)) "$limit" >> "$results"
    return $rc
}
skip() { printf '{"stage":"%s","rc":null,"skipped":"%s"}\n' "$1" "$2" >> "$results"; }

if [ "$mode" = gpu ]; then
    device=(--device cuda)
    shrink=1
    # Where the device machine keeps libcuda and libnvrtc; cudarc asks for libnccl.so.
    nccl=$(ls /lib/libnccl.so.2 /lib/*/libnccl.so.2 2>/dev/null | head -1 || true)
    mkdir -p /tmp/nccl && [ -n "$nccl" ] && ln -sf "$nccl" /tmp/nccl/libnccl.so
    export LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/cuda/lib64:/tmp/nccl:${LD_LIBRARY_PATH:-}
    export CUBECL_ENVIRONMENT=${CUBECL_ENVIRONMENT:-$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr -c 'A-Za-z0-9\n' '-')}
    mkdir -p target/environment
    cp gpu-cache/"$CUBECL_ENVIRONMENT".db* target/environment/ 2>/dev/null || true
    variants=()
    for v in stock notma; do
        file=gpu-bin/sid2.xz; [ $v = notma ] && file=gpu-bin/sid2-notma.xz
        [ -f "$file" ] && xz -dc "$file" > /tmp/sid2-$v && chmod +x /tmp/sid2-$v && variants+=("$v")
    done
    data=gpu-data
    # Full sizes.
    k600=(--config configs/k600_64.toml)
    image=(--config configs/imagenet256.toml --set train.batch_size=64)
    real=(--set train.total_samples=640 --set train.checkpoint_every=640 --set train.log_every=32 --set train.warmup_samples=64)
    matmul_n=8192 probe_limit=120 train_limit=240 real_limit=300 steps=10
    stage env 30 sh -c 'nvidia-smi; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; ls -l /usr/local/cuda/lib64/libnvrtc* /usr/local/nvidia/lib64/libcuda* 2>&1'
else
    device=()
    shrink=16
    variants=(stock)
    cp "${SID2:-target/release/sid2}" /tmp/sid2-stock.$$ && mv /tmp/sid2-stock.$$ /tmp/sid2-stock
    # Toy sizes: the presets' shapes, shrunk until each stage takes seconds on two CPU cores.
    tiny=(--set 'model.channels=[16,16,32,32]' --set model.emb_channels=32 --set model.fourier_features=16
          --set model.norm_groups=8 --set model.heads=2 --set 'model.blocks=[1,1,1]' --set model.mid_blocks=1)
    k600=(--config configs/k600_64.toml "${tiny[@]}" --set data.size=16 --set data.frames=8 --set diffusion.context_frames=3 --set train.batch_size=2)
    image=(--config configs/imagenet256.toml "${tiny[@]}" --set data.size=32 --set train.batch_size=2 --set model.num_classes=4)
    real=("${tiny[@]}" --set data.size=16 --set train.total_samples=16 --set train.checkpoint_every=16 --set train.log_every=4 --set train.warmup_samples=4 --set train.batch_size=2 --set data.clips_per_video=1)
    matmul_n=128 probe_limit=120 train_limit=120 real_limit=300 steps=2
    data="$OUT/data"
    stage env 30 sh -c 'lscpu | head -20'
    stage prepare-data 120 /tmp/sid2-stock --quiet prepare --config configs/k600_64.toml --videos examples/clips --out "$data" "${real[@]}"
fi
S=/tmp/sid2-stock

# 1. Peaks: the matmul throughput MFU is quoted against.
stage peak-bf16 60 $S --quiet "${device[@]}" bench matmul --n $matmul_n --reps 10 --dtype bf16
stage peak-f32 60 $S --quiet "${device[@]}" bench matmul --n $matmul_n --reps 10 --dtype f32

# 2. Kernel probes, each variant, each against an f32 CPU reference.
passing=()
for v in "${variants[@]}"; do
    ok=1
    for probe in "matmul-square bf16" "matmul-skewed bf16" "matmul-skewed f32" "conv3x3 bf16" "conv3x3 f32" "conv3x3-matmul bf16" "conv3x3-matmul f32" "attention bf16"; do
        set -- $probe
        stage "probe-$v-$1-$2" $probe_limit /tmp/sid2-$v --quiet "${device[@]}" bench probe --case "$1" --dtype "$2" --shrink $shrink || ok=0
        grep -q '"ok":true' "$OUT/probe-$v-$1-$2.out" 2>/dev/null || ok=0
    done
    [ $ok = 1 ] && passing+=("$v")
done

# 3. Training speed of the presets with every variant whose probes passed; the second run of a
#    preset meets a warm autotune cache.
for v in "${passing[@]}"; do
    stage "train-$v-k600_64-cold" $train_limit /tmp/sid2-$v --quiet "${device[@]}" bench train "${k600[@]}" --warmup 3 --steps $steps
    stage "train-$v-k600_64-warm" $train_limit /tmp/sid2-$v --quiet "${device[@]}" bench train "${k600[@]}" --warmup 3 --steps $steps
    stage "train-$v-imagenet256" $train_limit /tmp/sid2-$v --quiet "${device[@]}" bench train "${image[@]}" --warmup 3 --steps $steps
    # 3x3 convolutions as matmuls with a row-chunked (split-K) weight gradient.
    stage "train-$v-k600_64-matmul-conv" $train_limit /tmp/sid2-$v --quiet "${device[@]}" bench train "${k600[@]}" --set model.conv=matmul --warmup 3 --steps $steps
    # ... and the token-major linears as chunked matmuls too: every bf16 matmul with m < 4n.
    stage "train-$v-k600_64-m-below-4n" $train_limit /tmp/sid2-$v --quiet "${device[@]}" bench train "${k600[@]}" --set model.conv=matmul --set model.linear=chunked --warmup 3 --steps $steps
done
[ ${#passing[@]} -eq 0 ] && skip train "no variant passed its probes"

# 4. A real bf16 run on shards prepared on the CPU machine: the loss falls, and a prediction
#    comes back to be encoded there.
best=${passing[0]:-stock}
rm -rf "$OUT/run"
stage real-train $real_limit /tmp/sid2-$best --quiet "${device[@]}" train --config configs/k600_64.toml --data "$data" --run "$OUT/run" "${real[@]}"
stage real-sample 120 /tmp/sid2-$best --quiet "${device[@]}" sample --run "$OUT/run" --data "$data" --count 2 --out "$OUT/samples" --set sample.steps=32

# 5. The project's PyTorch twin of the same shapes, eager and compiled, in the same call.
if python3 -c "import torch" 2>/dev/null; then
    if [ "$mode" = gpu ]; then torch_device=(--device cuda --bf16); twin=(configs/k600_64.toml); else torch_device=(--threads 2); twin=(configs/k600_64.toml "${k600[@]:2}"); fi
    stage torch-k600_64-eager 240 python3 scripts/torch_reference.py bench-train "${twin[@]}" --warmup 3 --steps $steps "${torch_device[@]}"
    [ "$mode" = gpu ] && stage torch-k600_64-compile 300 python3 scripts/torch_reference.py bench-train "${twin[@]}" --warmup 3 --steps $steps "${torch_device[@]}" --compile
else
    skip torch "python3 has no torch here"
fi

[ "$mode" = gpu ] && cp target/environment/"$CUBECL_ENVIRONMENT".db* "$OUT/gpu-cache/" 2>/dev/null
python3 scripts/gpu_summary.py "$OUT" | tee "$OUT/summary.md"
