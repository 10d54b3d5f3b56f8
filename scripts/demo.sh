#!/usr/bin/env bash
# The main job: prepare the bundled real clips, train a tiny SiD2 video model on the CPU,
# predict 11 frames from 5 and write comparison MP4s under demo-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo run --release --bin sid2 -- demo --out "${1:-demo-out}"
