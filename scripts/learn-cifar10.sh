#!/usr/bin/env bash
# The image learning benchmark on CIFAR-10 (../shared/data/cifar10, never shipped with the
# project): unpacks the archive into OUT/cifar10 once, then `sid2 bench learn` trains the preset
# (default configs/cifar10.toml) on the 50,000 training images with the 10,000 test images as
# validation data, trains the judge into OUT/judge.safetensors (unless --judge is given), samples
# --per-class images of every class at each checkpoint and scores them. Running it again resumes.
#
#   bash scripts/learn-cifar10.sh OUT [--per-class 20] [--set key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: scripts/learn-cifar10.sh OUT [sid2 bench learn arguments]}"
shift
archive="${SHARED_DATA:-../shared/data}/cifar10/cifar10-jpg.tar.xz"
images="$out/cifar10/cifar10-jpg-YoongiKim"
if [ ! -d "$images/test" ]; then
  mkdir -p "$out/cifar10"
  tar -xJf "$archive" -C "$out/cifar10"
fi
exec "${SID2:-target/release/sid2}" bench learn --config "${CONFIG:-configs/cifar10.toml}" \
  --train-images "$images/train" --heldout-images "$images/test" --out "$out" "$@"
