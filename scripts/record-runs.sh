#!/usr/bin/env bash
# Records small runs of a `dekm` binary, for comparing two builds that should compute the same
# thing (a refactor): `scripts/record-runs.sh BIN OUT`, then `scripts/compare-runs.py A B`.
# Needs MNIST under DEKM_DATA (default ../shared/data). Two rayon threads, so both builds sum in
# the same order.
set -euo pipefail
bin=$1
out=$2
mkdir -p "$out"
export RAYON_NUM_THREADS=2 DEKM_DATA=${DEKM_DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
"$bin" --quiet train --dataset synthetic --k 4 --epochs 3 --max-iter 5 --out "$out/syn" > "$out/syn.log" 2>&1
"$bin" --quiet train --dataset mnist --limit 2000 --k 10 --epochs 2 --max-iter 3 --out "$out/mnist" > "$out/mnist.log" 2>&1
"$bin" --quiet train --dataset synthetic --k 4 --epochs 2 --max-iter 3 --method idec --out "$out/idec" > "$out/idec.log" 2>&1
"$bin" --quiet evaluate --model "$out/mnist" --dataset mnist --limit 3000 > "$out/mnist-eval.log" 2>&1
"$bin" --quiet demo --out "$out/demo" > "$out/demo.log" 2>&1
