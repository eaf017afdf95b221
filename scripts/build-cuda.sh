#!/usr/bin/env bash
# Builds target/release/dekm with CUDA (cargo's `cuda` feature) on a machine without a system CUDA
# toolkit or GPU: the CUDA 13.0 toolkit pieces come from PyPI wheels, unpacked under .whl/ (ignored
# by git), and libcuda, which only a GPU machine's driver provides, is replaced at link time by a
# stub with the driver's SONAME (what a toolkit's lib/stubs holds). The binary then runs where the
# driver is (CUDA 13.0 or newer; a newer nvcc would emit PTX that a 13.0 driver refuses), with
# cuBLAS, cuRAND and NVRTC 13 on LD_LIBRARY_PATH.
#
#   scripts/build-cuda.sh            # fetch (once), then build target/release/dekm
#   scripts/build-cuda.sh --test-binary   # the GPU test (tests/tests/device.rs) instead
#   CUDA_HOME=/usr/local/cuda scripts/build-cuda.sh   # use an installed CUDA 12.x/13.x toolkit
#
# Environment: CUDA_COMPUTE_CAP (default 90, the H100/H200) is the GPU generation candle's
# kernels are compiled for (no nvidia-smi is needed at build time); CARGO_ARGS adds to the cargo
# command (e.g. "--tests -p dekm-tests" to build the GPU tests too).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD/.whl
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}

if [ -z "${CUDA_HOME:-}" ]; then
  wheels=(
    nvidia-cuda-nvcc==13.0.88   # nvcc, ptxas
    nvidia-nvvm==13.0.88        # cicc
    nvidia-cuda-crt==13.0.88    # crt headers
    nvidia-cuda-cccl==13.0.85   # nv/target and the CCCL headers
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-nvrtc==13.0.88
    nvidia-curand==10.4.0.35
    nvidia-cublas==13.0.2.14
  )
  if [ ! -f "$root/site/.complete" ]; then
    mkdir -p "$root/wheels" "$root/site"
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$root/wheels" "${wheels[@]%%#*}"
    for w in "$root"/wheels/*.whl; do
      python3 -m zipfile -e "$w" "$root/site"
    done
    touch "$root/site/.complete"
  fi
  export CUDA_HOME=$root/site/nvidia/cu13
  chmod +x "$CUDA_HOME"/bin/* "$CUDA_HOME"/nvvm/bin/* 2>/dev/null || true
fi
lib=$CUDA_HOME/lib
[ -d "$lib" ] || lib=$CUDA_HOME/lib64
export PATH=$CUDA_HOME/bin:$PATH

# The wheels ship only versioned libraries (libcublas.so.13); the linker looks for libcublas.so.
for so in "$lib"/lib*.so.*; do
  base=${so%%.so.*}.so
  [ -e "$base" ] || ln -s "$(basename "$so")" "$base"
done

# libcuda stub: every driver function cudarc declares, each answering CUDA_ERROR_STUB_LIBRARY (34)
# as the toolkit's own stub does, in a library named libcuda.so.1 like the driver. The linker
# needs it; at run time the driver's own loads (with this stub on LD_LIBRARY_PATH instead, on a
# machine without a driver, `--device auto` falls back to the CPU and `--device cuda` says why).
stubs=$root/stubs
if ! grep -q 'return 34' "$stubs/cuda_stub.c" 2>/dev/null; then
  mkdir -p "$stubs"
  src=$(find "${CARGO_HOME:-$HOME/.cargo}"/registry/src -path '*cudarc-0.19*/src/driver/sys/mod.rs' | head -1)
  if [ -z "$src" ]; then
    cargo fetch --quiet
    src=$(find "${CARGO_HOME:-$HOME/.cargo}"/registry/src -path '*cudarc-0.19*/src/driver/sys/mod.rs' | head -1)
  fi
  grep -o 'pub unsafe fn cu[A-Za-z0-9_]*(' "$src" | sed 's/pub unsafe fn \(.*\)(/int \1(void) { return 34; }/' | sort -u > "$stubs/cuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so" "$stubs/cuda_stub.c"
  ln -sf libcuda.so "$stubs/libcuda.so.1"
fi

nvcc --version | tail -2
export LIBRARY_PATH=$lib:$stubs${LIBRARY_PATH:+:$LIBRARY_PATH}
if [ "${1:-}" = --test-binary ]; then
  # shellcheck disable=SC2086
  cargo test --release -p dekm-tests --features cuda --test device --no-run ${CARGO_ARGS:-}
  exit
fi
# shellcheck disable=SC2086
cargo build --release -p dekm-cli --features cuda ${CARGO_ARGS:-}
echo "built ${CARGO_TARGET_DIR:-target}/release/dekm with CUDA 13.0 for compute capability $CUDA_COMPUTE_CAP."
echo "At run time it needs the driver (libcuda.so.1) and libcublas.so.13, libcublasLt.so.13,"
echo "libcurand.so.10 and libnvrtc.so.13 on LD_LIBRARY_PATH: a CUDA 13 toolkit's lib64, PyTorch's"
echo "nvidia packages (scripts/gpu-check.sh finds them), or $lib."
