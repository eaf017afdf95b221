#!/usr/bin/env bash
# Every GPU check in one call, for a GPU machine that has the driver and PyTorch but no Rust and no
# network (the device tool's H200). Build here first:
#
#   scripts/build-cuda.sh                                  # target/release/dekm with CUDA
#   cargo test --release -p dekm-tests --features cuda --test device --no-run   # + the GPU test
#
# then carry target/release/dekm, the test binary that command names, and the MNIST and
# Fashion-MNIST IDX files, and run on the GPU machine:
#
#   scripts/gpu-check.sh BIN DATA_DIR OUT [TEST_BIN]
#
# It writes every log, config.json and metrics.json under OUT: the driver and GPU, the device
# choice and its errors, the GPU test (MNIST slice on CUDA against the CPU, edge parity of the
# GPU export), and the default `dekm train` on MNIST and Fashion-MNIST on the GPU with wall times.
# With EMBEDDER=DIR and TEXTS=FILE set it also embeds the texts on the GPU (candle's BERT) and on
# the CPU (dekm-embed's own pass), timing both and comparing the vectors. all-MiniLM-L6-v2's
# 90 MB of weights exceed what the device tool carries (64 MiB): carry them as float16 and widen
# them there (the speed is the model's; the checksum is not).
# Steps that fail are logged and the next one runs.
set -uo pipefail
bin=$1
data=$2
out=$3
test_bin=${4:-}
mkdir -p "$out"
exec > >(tee "$out/gpu-check.log") 2>&1

# cuBLAS, cuRAND and NVRTC 13 from PyTorch's nvidia packages (the driver brings libcuda).
site=$(python3 -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null)
libs=$(find "$site/nvidia" -name 'libcublas.so.13' -o -name 'libcurand.so.10' -o -name 'libnvrtc.so.13' 2>/dev/null |
  xargs -r -n1 dirname | sort -u | paste -sd:)
export LD_LIBRARY_PATH=${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export DEKM_DATA=$data RUST_LOG=${RUST_LOG:-dekm_trainer=info}
echo "== machine"; date -u; nproc; nvidia-smi || true
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
ldd "$bin" | grep -E 'cuda|cublas|curand|nvrtc|not found' || true

step() {
  local name=$1
  shift
  echo "== $name: $*"
  local t0=$SECONDS
  "$@"
  echo "== $name: exit $? after $((SECONDS - t0)) s"
}

step device-cpu "$bin" --quiet train --dataset synthetic --k 3 --epochs 1 --max-iter 1 --device cpu --out "$out/syn-cpu"
step device-cuda "$bin" --quiet train --dataset synthetic --k 3 --epochs 1 --max-iter 1 --device cuda --out "$out/syn-cuda"
step device-bad "$bin" --quiet train --dataset synthetic --k 3 --epochs 1 --max-iter 1 --device cuda:7 --out "$out/syn-cuda7"
if [ -n "$test_bin" ]; then
  step gpu-test "$test_bin" --nocapture --test-threads 1
fi
for ds in mnist fashion-mnist; do
  step "default-$ds" "$bin" --quiet train --dataset "$ds" --k 10 --seed 0 --device cuda --out "$out/$ds"
done
step evaluate-cuda "$bin" --quiet evaluate --model "$out/mnist" --dataset mnist --device cuda
if [ -n "${EMBEDDER:-}" ] && [ -n "${TEXTS:-}" ]; then
  step embed-cuda "$bin" embed --input "$TEXTS" --embedder "$EMBEDDER" --out "$out/texts-cuda.npy" --device cuda --embed-batch 128
  step embed-cpu "$bin" embed --input "$TEXTS" --embedder "$EMBEDDER" --out "$out/texts-cpu.npy" --device cpu
  python3 -c "import numpy as np; a, b = (np.load('$out/texts-' + d + '.npy') for d in ('cuda', 'cpu')); print('cuda vs cpu: cosine min', (a * b).sum(1).min(), 'max |difference|', abs(a - b).max())"
fi
echo "== done"
