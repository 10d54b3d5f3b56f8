#!/usr/bin/env bash
# What `sid2 demo` does, from any weights and for each of the six held-out videos of the learning
# benchmark: fine-tune 480 samples at lr 1e-4 on the two bundled clips, then predict the first 4
# clips of each held-out video, 4 samples each, and print per video: whole-frame PSNR / SSIM (mean
# over samples, best of 4) | repeating the last context frame, then the same on the moving pixels
# (docs/evaluation.md). CONFIG names the weights' preset (default the demo's, small_video).
#
#   [CONFIG=configs/tiny_video.toml] bash scripts/heldout-videos.sh WEIGHTS.safetensors OUT [sid2 sample arguments]
#
# Arguments after OUT go to every `sid2 sample`, e.g. `--set sample.steps=128`.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: scripts/heldout-videos.sh WEIGHTS.safetensors OUT [sid2 sample arguments]"
weights="$(realpath "${1:?$usage}")"; out="${2:?$usage}"
shift 2
sid2="${SID2:-target/release/sid2}"
shared="$(realpath "${SHARED_DATA:-../shared/data}/clips")"
config="${CONFIG:-configs/small_video.toml}"
fine_tune=(--set train.total_samples=480 --set train.checkpoint_every=480 --set train.val_every=480
           --set train.warmup_samples=0 --set train.lr=1e-4 --set train.keep_checkpoints=1)
mkdir -p "$out/clips/train"
ln -sf "$PWD/examples/clips/kinetics400_demo.mp4" "$PWD/examples/clips/short_part_0.mp4" "$out/clips/train/"
"$sid2" -q prepare --config "$config" --out "$out/data" --videos "$out/clips/train"
for name in sttn_dogs_jump_orig sttn_schoolgirls_orig trackanything_test-sample2 trackanything_test-sample4 \
            depthanything_davis_dolphins depthanything_davis_rollercoaster; do
  mkdir -p "$out/clips/$name"
  ln -sf "$shared/$name.mp4" "$out/clips/$name/"
  "$sid2" -q prepare --config "$config" --out "$out/heldout-$name" --videos "$out/clips/$name"
done
"$sid2" -q train --run "$out/run" --data "$out/data" --val "$out/heldout-sttn_dogs_jump_orig" \
  --config "$config" --init "$weights" "${fine_tune[@]}"
for shards in "$out"/heldout-*; do
  name="${shards#"$out"/heldout-}"
  "$sid2" -q sample --run "$out/run" --out "$out/samples-$name" --data "$shards" --count 4 --samples-per-clip 4 "$@" > /dev/null
  "$sid2" -q eval --pred "$out/samples-$name/predictions.bin" --real "$out/samples-$name/real.bin" \
    --context 5 --out "$out/samples-$name/eval.json" > /dev/null
  python3 scripts/heldout_row.py "$name" "$out/samples-$name/eval.json"
done
