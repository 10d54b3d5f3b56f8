#!/usr/bin/env bash
# The test suite (CPU only; CUDA is behind a cargo feature and never built here).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --workspace --all-targets --locked
