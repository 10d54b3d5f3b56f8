#!/usr/bin/env bash
# Installs the system packages sid2 builds against, when missing (Debian/Ubuntu):
# FFmpeg development libraries, clang/libclang (bindgen), pkg-config, and the ffmpeg/ffprobe
# command-line tools the tests compare against, Chromium, in which a test opens a run report, and
# the Vulkan loader with Mesa's software driver (lavapipe), on which the wgpu tests run the GPU
# code path without a GPU.
set -euo pipefail
packages=(libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev
          libavfilter-dev libavdevice-dev pkg-config clang libclang-dev ffmpeg chromium
          libvulkan1 mesa-vulkan-drivers)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found. Install Rust 1.95 or newer (https://rustup.rs), then run this again." >&2
  exit 1
fi
