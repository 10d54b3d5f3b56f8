#!/usr/bin/env bash
# The learning benchmark on the real videos in ../shared/data, split by source repository:
# trains on 12 videos, validates on and predicts 6 videos from three other repositories that it
# never sees. Extra arguments go to `sid2 bench learn` (e.g. --set train.total_samples=4800).
#
#   bash scripts/learn.sh OUT [--set key=value ...] [--steps 32 --steps 128]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: scripts/learn.sh OUT [sid2 bench learn arguments]}"
shift
shared="${SHARED_DATA:-../shared/data}"
heldout=(sttn_dogs_jump_orig.mp4 sttn_schoolgirls_orig.mp4 trackanything_test-sample2.mp4
         trackanything_test-sample4.mp4 depthanything_davis_dolphins.mp4 depthanything_davis_rollercoaster.mp4)
mkdir -p "$out/videos/train" "$out/videos/heldout"
for f in "$shared"/clips/*.* "$shared"/mmaction2/videos/*.*; do
  name="$(basename "$f")"
  case "$name" in *.md) continue ;; esac
  split=train
  for h in "${heldout[@]}"; do [ "$name" = "$h" ] && split=heldout; done
  ln -sf "$(realpath "$f")" "$out/videos/$split/$name"
done
exec "${SID2:-target/release/sid2}" bench learn --config "${CONFIG:-configs/tiny_video.toml}" \
  --train-videos "$out/videos/train" --heldout-videos "$out/videos/heldout" --out "$out" "$@"
