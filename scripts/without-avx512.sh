#!/usr/bin/env bash
# Runs a command with AVX-512 (and AVX-VNNI, AMX) hidden from its CPUID, so that run-time
# dispatch in it takes the AVX2 + FMA path (scripts/without-avx512.c says how). For measuring
# and testing on an AVX-512 machine what an AVX2-only CPU runs:
#
#   CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=scripts/without-avx512.sh cargo test -p dekm-edge
#   CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=scripts/without-avx512.sh \
#       cargo bench -p dekm-cli --bench edge -- --model DIR     # dekm-edge and onnxruntime on AVX2
#
# Wrap programs (cargo's runner does), not cargo: rustc replaces the fault handler and crashes.
# Exits 3 with a message where the CPU or kernel cannot make CPUID fault (no `cpuid_fault` in
# /proc/cpuinfo), rather than run with AVX-512 visible.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
lib="${CARGO_TARGET_DIR:-$here/../target}/without-avx512/libwithout-avx512.so"
if [ ! -e "$lib" ] || [ "$here/without-avx512.c" -nt "$lib" ]; then
  mkdir -p "$(dirname "$lib")"
  "${CC:-cc}" -O2 -shared -fPIC -o "$lib" "$here/without-avx512.c"
fi
if ! grep -qw cpuid_fault /proc/cpuinfo; then
  echo "without-avx512: no cpuid_fault in /proc/cpuinfo: this CPU or kernel cannot hide AVX-512" >&2
  exit 3
fi
export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
exec "$@"
