#!/usr/bin/env bash
# Training steps (or sampling) on the CPU, side by side in one run: one or more sid2 binaries and
# the project's PyTorch twin (scripts/torch_reference.py, eager), alternating within each round so
# that the host's drift falls on all of them alike. For every preset and variant of BENCHMARKS.md's
# CPU tables it prints one JSON line per run (samples/s, peak RSS, sid2's resident memory at the
# end split into anonymous and file-backed, the host's steal ticks during it) and, at the end, the best of the rounds per binary with the ratio to PyTorch's best.
#
#   SID2S="/tmp/sid2-before /tmp/sid2-after" PYTHON=/tmp/torchenv/bin/python \
#     bash scripts/bench-cpu.sh [ROUNDS] > runs/bench-cpu.jsonl
#
# PYTHON: a python with torch (never installed by the project; omit to time sid2 only).
# VARIANTS: a regular expression selecting variant names (default: all).
# BENCH=sample: time one batch of 4 sampled with each config's [sample] settings (`sid2 bench
#   sample` against `torch_reference.py bench-sample`, no autodiff) instead of training steps;
#   each line also carries the network passes per sample, which must agree.
# Needs GNU time at /usr/bin/time for peak RSS (Debian: `apt install time`).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x /usr/bin/time ]] || { echo "error: /usr/bin/time (GNU time) is missing: apt install time" >&2; exit 1; }
timing=$(mktemp)
trap 'rm -f "$timing"' EXIT
rounds=${1:-3}
bench=${BENCH:-train}
# What each side runs per bench: sid2's subcommand and flags, then the PyTorch twin's.
case $bench in
  train) ours=(bench train --warmup 2 --steps 10) theirs=(bench-train --warmup 2 --steps 6) ;;
  sample) ours=(bench sample --batch 4) theirs=(bench-sample --batch 4) ;;
  *) echo "error: BENCH=$bench: expected train or sample" >&2; exit 1 ;;
esac
read -r -a sid2s <<< "${SID2S:-target/release/sid2}"
python=${PYTHON:-}
joint='model.kinds=["res","transformer","transformer"]'
# name | config | overrides (one --set each, separated by spaces; none contain spaces)
variants=(
  "tiny_video|configs/tiny_video.toml|"
  "tiny_video-no-temporal|configs/tiny_video.toml|model.temporal=[false,false,false]"
  "tiny_video-joint-l1|configs/tiny_video.toml|$joint model.temporal=[true,false,false]"
  "tiny_video-joint-l1-no-temporal|configs/tiny_video.toml|$joint model.temporal=[false,false,false]"
  "small_video|configs/small_video.toml|"
  "tiny_image|configs/tiny_image.toml|"
  "cifar10|configs/cifar10.toml|"
)

steal() { awk '/^cpu /{print $9}' /proc/stat; }
rss_mib() { awk '/Maximum resident/{printf "%.0f", $6 / 1024}' "$1"; }

# One timed run: name, who, then the command. Prints a JSON line.
run() {
  local name=$1 who=$2
  shift 2
  local before out
  before=$(steal)
  out=$(/usr/bin/time -v "$@" 2> "$timing") || { echo "error: $who on $name failed:" >&2; tail -5 "$timing" >&2; exit 1; }
  python3 -c '
import json, sys
r = json.loads(sys.argv[1])
line = {"variant": sys.argv[2], "who": sys.argv[3], "samples_per_s": round(r["samples_per_s"] if "samples_per_s" in r else 1 / r["s_per_sample"], 3)}
if "network_passes" in r:
    line["network_passes"] = r["network_passes"]
# sid2 also reports its resident memory at the end, anonymous and file-backed.
line |= {k: round(r[k], 1) for k in ("rss_anon_mib", "rss_file_mib") if k in r}
print(json.dumps(line | {"peak_rss_mib": int(sys.argv[4]), "steal_ticks": int(sys.argv[5])}))' \
    "$out" "$name" "$who" "$(rss_mib "$timing")" "$(( $(steal) - before ))"
}

lines=()
for v in "${variants[@]}"; do
  IFS='|' read -r name config overrides <<< "$v"
  [[ $name =~ ${VARIANTS:-.} ]] || continue
  sets=()
  for o in $overrides; do sets+=(--set "$o"); done
  for ((r = 0; r < rounds; r++)); do
    for bin in "${sid2s[@]}"; do
      lines+=("$(run "$name" "$bin" "$bin" -q "${ours[@]}" --config "$config" "${sets[@]}")")
      echo "${lines[-1]}"
    done
    if [[ -n $python ]]; then
      lines+=("$(run "$name" torch "$python" scripts/torch_reference.py "${theirs[@]}" "$config" "${sets[@]}")")
      echo "${lines[-1]}"
    fi
  done
done
printf '%s\n' "${lines[@]}" | python3 -c '
import collections, json, sys
best = collections.defaultdict(dict)
for line in sys.stdin:
    r = json.loads(line)
    b = best[r["variant"]]
    b[r["who"]] = max(b.get(r["who"], 0.0), r["samples_per_s"])
for variant, b in best.items():
    torch = b.get("torch")
    row = {"variant": variant, "best": b}
    if torch:
        row["ratio_to_torch"] = {who: round(s / torch, 2) for who, s in b.items() if who != "torch"}
    print(json.dumps({"summary": row}))
'
