#!/usr/bin/env bash
# What a cold start of training asks of burn-cubecl's JIT and autotuner (CUDA or wgpu): one
# warm-up step and one timed step of `sid2 bench train`, counting the kernels compiled, the
# distinct kernels among them, and the shapes tuned by kind. On lavapipe (wgpu without a GPU) the
# counts, unlike the seconds, carry over to a GPU of the same build.
#
#   bash scripts/kernel-counts.sh SID2 DEVICE --config CONFIG [--autotune LEVEL] [--set KEY=VALUE ...]
#
# SID2: a sid2 built with `--features wgpu` or `cuda` (the `-untuned` builds tune nothing);
# DEVICE: wgpu or cuda. Prints one JSON object. It runs in a scratch folder with its own
# cubecl.toml (compilation log, autotune decisions), so no cache on disk is read: a cold start.
#
# KERNEL_COUNTS_SAMPLES=1: time every tuning candidate once instead of cubecl's 3 to 10 samples,
# and run the first step only (no warm-up step). The counts stay exact (a shape is tuned once,
# whatever its samples); the seconds are then no warm-up to quote. For shapes too large to tune
# in full on a software driver (k600_64 on lavapipe).
set -euo pipefail
usage="usage: kernel-counts.sh SID2 DEVICE --config CONFIG [--autotune LEVEL] [--set KEY=VALUE ...]"
sid2=$(realpath "${1:?$usage}")
device=${2:?$usage}
shift 2
args=()
while (($#)); do
    case $1 in --config) args+=(--config "$(realpath "$2")"); shift 2;; *) args+=("$1"); shift;; esac
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/cubecl.toml" <<'EOF'
[compilation.logger]
level = "basic"
file = "compile.log"
[autotune.decisions]
file = "decisions.jsonl"
EOF
warmup=1
if [[ ${KERNEL_COUNTS_SAMPLES:-} == 1 ]]; then
    printf '[autotune.bench]\nmin_samples = 1\nmax_samples = 1\n' >> "$work/cubecl.toml"
    warmup=0
fi
(cd "$work" && "$sid2" --device "$device" -q bench train --warmup "$warmup" --steps 1 "${args[@]}" > bench.json 2> bench.log) || {
    echo "error: sid2 bench train failed:" >&2; tail -5 "$work/bench.log" >&2; exit 1
}
touch "$work/compile.log" "$work/decisions.jsonl"
python3 - "$work" "$device" "${args[*]}" <<'EOF'
import collections, json, os, sys
work, device, args = sys.argv[1:]
names = [l.split("] ", 1)[1].strip() for l in open(f"{work}/compile.log") if l.startswith("[Compiling kernel] ")]
decisions = [json.loads(l) for l in open(f"{work}/decisions.jsonl") if l.strip()]

def kind(key):
    d = key.get("definition", key)
    if "elem_lhs" in d: return "matmul"
    if "reduce" in d: return "reduce"
    return next(iter(d), "other")

bench = json.load(open(f"{work}/bench.json"))
print(json.dumps({
    "device": device, "args": args, "batch": bench["batch"],
    "kernels_compiled": len(names), "distinct_kernels": len(set(names)),
    "shapes_tuned": len(decisions), "samples_per_candidate": os.environ.get("KERNEL_COUNTS_SAMPLES", "default"), "tuned_by_kind": dict(collections.Counter(kind(d["key"]) for d in decisions).most_common()),
    "warmup_s": round(bench["warmup_s"], 1), "step_s": round(bench["step_s"], 2),
}))
EOF
