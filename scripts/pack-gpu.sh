#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on a GPU machine without Rust or network (the device
# tool's H100/H200) into .gpu/, which git ignores, within the 64 MiB a device call may carry:
# the CUDA build of dekm and the GPU test, stripped and xz-compressed (about 38 + 26 MB down to
# 11 MB), and the MNIST and Fashion-MNIST IDX files (41 MB, already gzip). Build both first:
#
#   scripts/build-cuda.sh
#   scripts/build-cuda.sh --test-binary
#
# Usage: scripts/pack-gpu.sh DATA_DIR
# Then one device call from the repository root, carrying .gpu:
#
#   scripts/gpu-check.sh .gpu/dekm.xz .gpu/data "$OUT" .gpu/device.xz
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: scripts/pack-gpu.sh DATA_DIR}
target=${CARGO_TARGET_DIR:-target}/release
test_bin=$(ls -t "$target"/deps/device-* 2>/dev/null | grep -v '\.d$' | head -1 || true)
[ -x "$target/dekm" ] || { echo "no $target/dekm: run scripts/build-cuda.sh first" >&2; exit 1; }
[ -n "$test_bin" ] || { echo "no GPU test under $target/deps: run scripts/build-cuda.sh --test-binary" >&2; exit 1; }
# A CPU `cargo test` may have left a newer device test in the same folder: both must be CUDA builds.
for bin in "$target/dekm" "$test_bin"; do
  ldd "$bin" | grep -q libcublas || {
    echo "$bin is not a CUDA build (no libcublas): run scripts/build-cuda.sh [--test-binary]" >&2
    exit 1
  }
done
rm -rf .gpu
mkdir -p .gpu/data
for pair in "$target/dekm:dekm" "$test_bin:device"; do
  src=${pair%%:*}
  name=${pair##*:}
  strip -o ".gpu/$name" "$src"
  xz -T0 -6 ".gpu/$name"
done
for set in mnist fashion-mnist; do
  [ -d "$data/$set" ] || { echo "no $data/$set" >&2; exit 1; }
  cp -r "$data/$set" .gpu/data/
done
chmod -R u+w .gpu
du -sh .gpu .gpu/*
echo "carry .gpu; on the GPU machine: scripts/gpu-check.sh .gpu/dekm.xz .gpu/data \"\$OUT\" .gpu/device.xz"
