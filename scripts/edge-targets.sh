#!/usr/bin/env bash
# The edge runtime on the targets devices have (issue 35; .ci/run calls this):
#  - microcontrollers: the no_std core builds for Cortex-M4F/M7 (thumbv7em-none-eabihf) and
#    RISC-V (riscv32imac-unknown-none-elf); the firmware in edge/mcu (a sensor model in flash,
#    a static heap, readings pushed through a StreamSession) is linked for a Cortex-M7 with
#    1 MiB of flash and 512 KiB of RAM, its footprint printed, and run under qemu-system-arm,
#    where every window must get the cluster and flag the host's dekm-edge gives it;
#  - 64-bit ARM (Raspberry Pi 4/5 class): the crate, its binary and every edge test are
#    cross-built with Debian's aarch64 toolchain and run under qemu-aarch64 (user-mode emulation;
#    the encoder's SIMD kernels dispatch to NEON there and are checked against the scalar path,
#    the int8 `sdot` kernel against the portable loops; then the int8 tests again on an emulated
#    Cortex-A72, which has no dot product and must fall back);
#  - x86 without AVX-512: on an AVX-512 machine, the edge tests again with AVX-512 hidden from
#    their CPUID (scripts/without-avx512.sh), so the encoder's AVX2 tiles are tested too.
# Installs what it needs (rustup targets; gcc-aarch64-linux-gnu, qemu-user, qemu-system-arm and
# binutils-arm-none-eabi from Debian). A
# step that cannot get its tools says so and why, and the script fails unless
# DEKM_ALLOW_MISSING_TARGETS=1 is set.
set -euo pipefail
cd "$(dirname "$0")/.."

missing() {
  echo "SKIPPED: $1" >&2
  [ "${DEKM_ALLOW_MISSING_TARGETS:-0}" = 1 ] || exit 1
}

debian() {
  local missing=()
  for tool in "$@"; do command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}"); done
  [ ${#missing[@]} = 0 ] && return 0
  command -v apt-get >/dev/null || return 0
  local sudo
  sudo=$([ "$(id -u)" = 0 ] || echo sudo)
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || true
}

for t in thumbv7em-none-eabihf riscv32imac-unknown-none-elf; do
  if rustup target add "$t" >/dev/null 2>&1; then
    echo "== no_std core for $t"
    cargo build -p dekm-edge --no-default-features --release --target "$t"
  else
    missing "rustup could not install the $t standard library"
  fi
done

if rustup target list --installed | grep -q thumbv7em-none-eabihf; then
  echo "== firmware for a Cortex-M7 (edge/mcu)"
  (cd edge/mcu && cargo build --release --locked)
  fw=edge/mcu/target/thumbv7em-none-eabihf/release/dekm-edge-mcu
  debian qemu-system-arm:qemu-system-arm arm-none-eabi-size:binutils-arm-none-eabi
  if command -v arm-none-eabi-size >/dev/null; then
    arm-none-eabi-size "$fw"
    echo "(flash = text + data, RAM = data + bss + stack; bss holds the 160 KiB heap)"
  else
    missing "no arm-none-eabi-size to report the firmware's footprint (binutils-arm-none-eabi)"
  fi
  if command -v qemu-system-arm >/dev/null; then
    cargo build -q -p dekm-edge --bin dekm-edge
    int8_bundle=$(mktemp --suffix .dekm)
    trap 'rm -f "$int8_bundle"' EXIT
    target/debug/dekm-edge pack --model edge/mcu/model.dekm --int8 --out "$int8_bundle" >/dev/null
    # The f32 bundle, then the int8 one (the firmware's `int8` feature packs the same bytes in
    # its build script): the Cortex-M7 runs the portable integer loops, the host whatever
    # kernel its CPU has (AVX-512 VNNI or the same loops), and both must agree window by window.
    for variant in f32 int8; do
      if [ "$variant" = int8 ]; then bundle=$int8_bundle features=(--features int8); else bundle=edge/mcu/model.dekm features=(); fi
      expected=$(target/debug/dekm-edge assign --model "$bundle" --stream \
        --input edge/mcu/readings.csv 2>/dev/null |
        sed -E 's/^\{"start":([0-9]+),"cluster":([0-9]+),.*"outlier":(true|false)\}$/{"start":\1,"cluster":\2,"outlier":\3}/')
      run=$(cd edge/mcu && timeout 120 cargo run -q --release --locked "${features[@]}")
      echo "$run" | grep -v '^{'
      if command -v arm-none-eabi-size >/dev/null; then
        arm-none-eabi-size "$fw" | tail -1
      fi
      if [ "$expected" = "$(echo "$run" | grep '^{')" ] && [ -n "$expected" ]; then
        echo "firmware under qemu (Cortex-M7, $variant model): $(echo "$expected" | wc -l) windows, every cluster and flag as on the host"
      else
        echo "firmware under qemu ($variant model) disagrees with the host:" >&2
        diff <(echo "$expected") <(echo "$run" | grep '^{') >&2 || true
        exit 1
      fi
    done
  else
    missing "no qemu-system-arm to run the firmware (apt-get install qemu-system-arm)"
  fi
fi

debian aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu qemu-aarch64:qemu-user
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  missing "no aarch64-linux-gnu-gcc or qemu-aarch64 (apt-get install gcc-aarch64-linux-gnu qemu-user)"
elif ! rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1; then
  missing "rustup could not install the aarch64-unknown-linux-gnu standard library"
else
  echo "== dekm-edge tests on aarch64 under qemu (linker and runner: .cargo/config.toml)"
  DEKM_EDGE_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu" \
    cargo test -p dekm-edge --target aarch64-unknown-linux-gnu
  # qemu's default CPU has the dot product, so the run above checked the `sdot` int8 kernel
  # against the portable loops; a Raspberry Pi 4's Cortex-A72 lacks it and must fall back.
  echo "== the int8 kernels on an emulated Cortex-A72 (no dot product)"
  a72=$(QEMU_CPU=cortex-a72 cargo test -q -p dekm-edge --target aarch64-unknown-linux-gnu \
    --lib int8 -- --nocapture 2>&1) || { echo "$a72" >&2; exit 1; }
  echo "$a72" | grep -E "SKIPPED|test result"
  echo "$a72" | grep -q "SKIPPED the NEON dot product" ||
    { echo "the sdot kernel claimed to run on a Cortex-A72" >&2; exit 1; }
fi

# x86 without AVX-512 (AMD Zen 3 and older Intel cores; issue 35): on an AVX-512 machine the
# suite above never runs the encoder's AVX2 tiles, so the edge tests run again with AVX-512
# hidden from their CPUID (scripts/without-avx512.sh, a cargo runner: the binaries, not cargo).
if [ "$(uname -m)" = x86_64 ]; then
  if ! grep -qw avx512f /proc/cpuinfo; then
    echo "== no AVX-512 on this CPU: the workspace's tests run the encoder's AVX2 tiles"
  elif ! grep -qw cpuid_fault /proc/cpuinfo; then
    missing "this AVX-512 CPU (or its kernel) cannot make CPUID fault: the AVX2 tiles are not tested here"
  else
    echo "== dekm-edge tests with AVX-512 hidden (the AVX2 tiles)"
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$PWD/scripts/without-avx512.sh" \
      cargo test -p dekm-edge
  fi
fi
