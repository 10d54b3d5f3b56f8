#!/usr/bin/env bash
# One device call that answers the open GPU questions. Every stage runs under its own timeout and
# the whole call under one time budget, so a hang costs one stage, not the lease; stages run in
# order of what the lease must answer first, and the ones the budget cannot reach are reported as
# skipped. Prepare on the CPU machine first:
#
#   bash scripts/gpu-build.sh        # gpu-bin/sid2.xz, gpu-bin/sid2-notma.xz, gpu-data/
#
# then, on the lent device (15 minutes in all, a machine's start included):
#
#   run(command="bash scripts/gpu-check.sh", carry=["gpu-bin", "gpu-data", "gpu-cache"], timeout_s=580)
#
# (the default budget, 540 s, leaves a lease about 4.5 minutes for a second call).
#
# `GPU_CHECK_ONLY` (a regular expression over stage names) runs a subset, for a second call.
# Stages write their output and log to a work folder (`/tmp/gpu-check` on the device) and a JSON
# line each to results.jsonl. $OUT gets back few files (the device tool returns at most 8):
#   summary.md          the table (scripts/gpu_summary.py)
#   results.jsonl       one line per stage: exit status, seconds, limit, peak GPU memory
#   gpu-check.tar.xz    every stage's output and log, the real run's metrics, predictions.bin
#   gpu-cache.tar.xz    the autotune and kernel cache: put it in gpu-cache/ for the next lease of
#                       the same binary, and keep its autotune decisions in the repository with
#                       `scripts/gpu_cache.py autotune-only` (gpu-cache/<GPU>-autotune.db.xz)
# `sid2 encode --input predictions.bin --real ...` here makes the MP4s of the real bf16 run.
#
# The same stages at toy sizes on the CPU, so the script cannot rot between leases (a test runs
# this; the work folder is OUT itself):
#   bash scripts/gpu-check.sh --cpu-dry-run OUT     (SID2 = the sid2 binary to use)
set -uo pipefail
cd "$(dirname "$0")/.."

mode=gpu
if [ "${1:-}" = "--cpu-dry-run" ]; then
    mode=cpu
    OUT=${2:?usage: gpu-check.sh --cpu-dry-run OUT}
    W=$OUT
else
    OUT=${OUT:-gpu-out}
    W=/tmp/gpu-check
    rm -rf "$W"
fi
mkdir -p "$OUT" "$W"
results="$W/results.jsonl"
: > "$results"
budget=${GPU_CHECK_BUDGET:-$([ $mode = gpu ] && echo 540 || echo 900)}
deadline=$(( $(date +%s) + budget ))
reserve=15 # seconds kept for the summary and the archives
only=${GPU_CHECK_ONLY:-.}

# Peak GPU memory of the running stage, sampled by nvidia-smi (device memory in use, the CUDA
# context and the allocator's pools included: the counterpart of PyTorch's reserved memory).
gpu_memory_sampler() {
    while :; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1; sleep 0.5; done
}

# stage NAME SECONDS COMMAND...: runs COMMAND with stdout to NAME.out and stderr to NAME.log, under
# the smaller of SECONDS and what is left of the budget; a stage the budget cannot fit is skipped.
stage() {
    local name=$1 limit=$2 start rc sampler= peak=null
    shift 2
    [[ $name =~ $only ]] || return 1
    local left=$(( deadline - $(date +%s) - reserve ))
    if [ $left -lt 20 ]; then skip "$name" "out of time (budget ${budget} s)"; return 1; fi
    [ $limit -gt $left ] && limit=$left
    if [ $mode = gpu ]; then gpu_memory_sampler > "$W/$name.mem" & sampler=$!; fi
    start=$(date +%s%N)
    timeout --kill-after=5 "$limit" "$@" > "$W/$name.out" 2> "$W/$name.log"
    rc=$?
    local ms=$(( ($(date +%s%N) - start) / 1000000 ))
    if [ -n "$sampler" ]; then
        kill $sampler 2>/dev/null; wait $sampler 2>/dev/null
        peak=$(sort -n "$W/$name.mem" | tail -1); peak=${peak:-null}
    fi
    printf '{"stage":"%s","rc":%d,"timed_out":%s,"seconds":%d.%03d,"limit":%d,"peak_gpu_mib":%s}\n' \
        "$name" "$rc" "$([ $rc -eq 124 ] || [ $rc -eq 137 ] && echo true || echo false)" \
        $((ms / 1000)) $((ms % 1000)) "$limit" "$peak" >> "$results"
    return $rc
}
skip() { printf '{"stage":"%s","rc":null,"skipped":"%s"}\n' "$1" "$2" >> "$results"; }

# The summary and the archives, also when a stage fails or the script is interrupted.
finish() {
    trap - EXIT INT TERM
    python3 scripts/gpu_summary.py "$W" > "$W/summary.md" 2> "$W/summary.log"
    cat "$W/summary.md"
    if [ $mode = gpu ]; then
        cp target/environment/"$CUBECL_ENVIRONMENT".db* "$W/" 2>/dev/null
        tar -C "$W" -cJf "$OUT/gpu-check.tar.xz" --exclude='*.db*' .
        (cd "$W" && ls *.db* > /dev/null 2>&1 && tar -cJf "$OUT/gpu-cache.tar.xz" *.db*)
        cp "$W/summary.md" "$W/results.jsonl" "$OUT/"
    else
        tar -C "$W" -cJf "$W.tar.xz" --exclude='*.tar.xz' . && mv "$W.tar.xz" "$OUT/gpu-check.tar.xz"
    fi
}
trap finish EXIT
trap 'exit 143' INT TERM

if [ "$mode" = gpu ]; then
    device=(--device cuda)
    shrink=1
    # Where the device machine keeps libcuda and libnvrtc; cudarc asks for libnccl.so.
    nccl=$(ls /lib/libnccl.so.2 /lib/*/libnccl.so.2 2>/dev/null | head -1 || true)
    mkdir -p /tmp/nccl && [ -n "$nccl" ] && ln -sf "$nccl" /tmp/nccl/libnccl.so
    export LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/cuda/lib64:/tmp/nccl:${LD_LIBRARY_PATH:-}
    export CUBECL_ENVIRONMENT=${CUBECL_ENVIRONMENT:-$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr -c 'A-Za-z0-9\n' '-')}
    mkdir -p target/environment
    # The cache of an earlier lease: the whole environment as it came back (gpu-cache.tar.xz,
    # git-ignored; its compiled kernels serve only the binary that compiled them), else the
    # autotune decisions kept in the repository (scripts/gpu_cache.py). Either serves a GPU of
    # another name too: the decisions are keyed by shapes, not by the device model.
    db=target/environment/$CUBECL_ENVIRONMENT.db
    [ -f gpu-cache/gpu-cache.tar.xz ] && tar -C target/environment -xJf gpu-cache/gpu-cache.tar.xz
    if [ ! -f "$db" ]; then
        other=$(ls target/environment/*.db 2>/dev/null | head -1)
        kept=$(ls gpu-cache/*-autotune.db.xz 2>/dev/null | head -1)
        if [ -n "$other" ]; then for f in "$other"*; do mv "$f" "$db${f#"$other"}"; done; elif [ -n "$kept" ]; then xz -dc "$kept" > "$db"; fi
    fi
    # The binaries gpu-build.sh made: `untuned` (no autotuning: a cold start compiles one kernel
    # per op), `notma` (autotuned, cubecl-cuda patched not to advertise TMA), `stock` (autotuned).
    variants=()
    for v in untuned notma stock; do
        file=gpu-bin/sid2-$v.xz; [ $v = stock ] && file=gpu-bin/sid2.xz
        [ -f "$file" ] && xz -dc "$file" > /tmp/sid2-$v && chmod +x /tmp/sid2-$v && variants+=("$v")
    done
    data=gpu-data
    # Full sizes.
    k600=(--config configs/k600_64.toml)
    image=(--config configs/imagenet256.toml --set train.batch_size=64)
    # Ten steps, each logged; the sampler then runs the training batch's shapes (16 clips), whose
    # kernels are already compiled and tuned.
    real=(--set train.total_samples=160 --set train.checkpoint_every=160 --set train.log_every=16 --set train.warmup_samples=64)
    real_sample=(--count 16 --batch 16 --set sample.steps=16)
    matmul_n=8192 probe_limit=90 train_limit=150 real_limit=330 steps=5
    stage env 20 sh -c 'nvidia-smi; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; ls -l /usr/local/cuda/lib64/libnvrtc* /usr/local/nvidia/lib64/libcuda* 2>&1; python3 -c "import torch; print(torch.__version__, torch.version.cuda)"; ls -l target/environment'
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
    real_sample=(--count 2 --set sample.steps=32)
    matmul_n=128 probe_limit=120 train_limit=120 real_limit=240 steps=2
    data="$W/data"
    stage env 30 sh -c 'lscpu | head -20'
    stage prepare-data 120 /tmp/sid2-stock --quiet prepare --config configs/k600_64.toml --videos examples/clips --out "$data" "${real[@]}"
fi
# The real run takes the binary most likely to finish within the lease (the untuned one, with its
# 3x3 convolutions as matmuls, since its first-choice convolution is the direct one); the tuned
# stages take the no-TMA build where it was carried.
run_v=${variants[0]}
R=/tmp/sid2-$run_v
run_flags=()
[ "$run_v" = untuned ] && run_flags=(--set model.conv=matmul)
best=stock
for v in "${variants[@]}"; do [ "$v" = notma ] && best=notma; done
B=/tmp/sid2-$best

probe() { # probe VARIANT CASE DTYPE: a kernel family against its f32 CPU reference
    stage "probe-$1-$2-$3" $probe_limit /tmp/sid2-$1 --quiet "${device[@]}" bench probe --case "$2" --dtype "$3" --shrink $shrink
}

# 1. A real bf16 run of the k600_64 preset on shards prepared on the CPU machine, first: a cold
#    start spends minutes compiling and tuning kernels (the H200 lease of 2026-11-26 measured more
#    than 8 minutes without finishing the first step), and this run is what the lease must show:
#    the loss falls, and a prediction comes back to be encoded here. Verbose, so the log shows how
#    far a stage got when its timeout ends it.
rm -rf "$W/run"
if stage real-train $real_limit $R --verbose "${device[@]}" train --config configs/k600_64.toml --data "$data" --run "$W/run" "${real[@]}" "${run_flags[@]}"; then
    stage real-sample 120 $R --verbose "${device[@]}" sample --run "$W/run" --data "$data" --out "$W/samples" "${real_sample[@]}"
else
    skip real-sample "real-train did not finish"
fi

# 2. The bf16 peak MFU is quoted against, the training speed of k600_64 with the real run's
#    binary and kernels, then the project's PyTorch twin of the same shapes in the same call.
stage peak-bf16 45 $B --quiet "${device[@]}" bench matmul --n $matmul_n --reps 10 --dtype bf16
stage "train-$run_v-k600_64${run_flags:+-matmul-conv}" $train_limit $R --quiet "${device[@]}" bench train "${k600[@]}" "${run_flags[@]}" --warmup 2 --steps $steps
if python3 -c "import torch" 2>/dev/null; then
    if [ "$mode" = gpu ]; then torch_device=(--device cuda --bf16); twin=(configs/k600_64.toml); else torch_device=(--threads 2); twin=(configs/k600_64.toml "${k600[@]:2}"); fi
    [ "$mode" = gpu ] && stage torch-k600_64-compile 200 python3 scripts/torch_reference.py bench-train "${twin[@]}" --warmup 3 --steps $steps "${torch_device[@]}" --compile
    stage torch-k600_64-eager 120 python3 scripts/torch_reference.py bench-train "${twin[@]}" --warmup 2 --steps $steps "${torch_device[@]}"
else
    skip torch "python3 has no torch here"
fi

# 3. The autotuned build (with the cache carried): burn's kernels, the kernels in bf16 against
#    their f32 CPU reference, and every matmul kept at m < 4n (3x3 convolutions as matmuls with a
#    row-chunked weight gradient, token-major linears as chunked matmuls).
[ "$run_v" = "$best" ] && [ ${#run_flags[@]} -eq 0 ] || stage "train-$best-k600_64" $train_limit $B --quiet "${device[@]}" bench train "${k600[@]}" --warmup 2 --steps $steps
probe $best conv3x3 bf16
probe $best attention bf16
stage "train-$best-k600_64-m-below-4n" $train_limit $B --quiet "${device[@]}" bench train "${k600[@]}" --set model.conv=matmul --set model.linear=chunked --warmup 2 --steps $steps

# 4. The suspected cause of the bf16 failure: the stock build (TMA advertised) on the skewed shapes.
for v in "${variants[@]}"; do
    [ $v = stock ] && [ $best != stock ] || continue
    probe $v conv3x3 bf16
    probe $v matmul-skewed bf16
done

# 5. The rest, as the budget allows: a cold start's kernels, tuned shapes and warm-up seconds per
#    autotune level (sid2's default, minimal, against cubecl's, balanced; no cache read), the image
#    preset, the stock build's training, every probe.
for level in minimal balanced; do
    stage "tune-$level-$best-k600_64" $train_limit bash scripts/kernel-counts.sh $B "${device[1]:-cpu}" "${k600[@]}" --autotune $level
done
stage "train-$best-imagenet256" $train_limit $B --quiet "${device[@]}" bench train "${image[@]}" --warmup 2 --steps $steps
stage peak-f32 45 $B --quiet "${device[@]}" bench matmul --n $matmul_n --reps 10 --dtype f32
for v in "${variants[@]}"; do
    [ $v = "$best" ] || [ $v = untuned ] || stage "train-$v-k600_64" $train_limit /tmp/sid2-$v --quiet "${device[@]}" bench train "${k600[@]}" --warmup 2 --steps $steps
    for p in "matmul-square bf16" "matmul-skewed bf16" "matmul-skewed f32" "conv3x3 bf16" "conv3x3 f32" "conv3x3-matmul bf16" "conv3x3-matmul f32" "attention bf16"; do
        set -- $p
        [ -f "$W/probe-$v-$1-$2.out" ] || probe $v $1 $2
    done
done
