#!/usr/bin/env bash
# Quality benchmark: trains DEKM on full MNIST and Fashion-MNIST (train+test, 70,000 images each)
# and appends ACC/NMI/ARI, wall time and settings to docs/RESULTS.md.
#
# Environment overrides (defaults are the trainer's defaults):
#   DATASETS="mnist fashion-mnist"  SEEDS="0 1 2"  EPOCHS=30  MAX_ITER=50  EXTRA_ARGS=""
#   DEKM_DATA=../shared/data
set -euo pipefail
cd "$(dirname "$0")/.."
DATASETS=${DATASETS:-"mnist fashion-mnist"}
SEEDS=${SEEDS:-"0 1 2"}
EPOCHS=${EPOCHS:-30}
MAX_ITER=${MAX_ITER:-50}
EXTRA_ARGS=${EXTRA_ARGS:-}
export DEKM_DATA=${DEKM_DATA:-../shared/data}

cargo build --release -p dekm-cli
machine="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
{
  echo
  echo "### Quality run $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Machine: $machine. Command: \`DATASETS=\"$DATASETS\" SEEDS=\"$SEEDS\" EPOCHS=$EPOCHS MAX_ITER=$MAX_ITER EXTRA_ARGS=\"$EXTRA_ARGS\" scripts/bench-quality.sh\`"
  echo
  echo "| data set | seed | AE+k-means ACC | DEKM ACC | NMI | ARI | DEKM iterations | pretrain s | DEKM s |"
  echo "|---|---|---|---|---|---|---|---|---|"
} >> docs/RESULTS.md
for ds in $DATASETS; do
  for seed in $SEEDS; do
    out=target/bench/$ds-seed$seed
    rm -rf "$out"
    # shellcheck disable=SC2086
    ./target/release/dekm --quiet train --dataset "$ds" --k 10 --seed "$seed" \
      --epochs "$EPOCHS" --max-iter "$MAX_ITER" --out "$out" $EXTRA_ARGS
    python3 - "$out/metrics.json" "$ds" "$seed" >> docs/RESULTS.md <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
b, d, h = m["baseline"], m["dekm"], m["history"]
print(f"| {sys.argv[2]} | {sys.argv[3]} | {b['acc']:.4f} | {d['acc']:.4f} | {d['nmi']:.4f} | {d['ari']:.4f} "
      f"| {len(h['iterations'])} | {h['pretrain_seconds']:.0f} | {h.get('stage_seconds', h.get('dekm_seconds', 0)):.0f} |")
PY
  done
done
python3 - docs/RESULTS.md <<'PY'
# Mean and spread per data set over the rows just written.
import re, statistics, sys
lines = open(sys.argv[1]).read().split("### Quality run")[-1].splitlines()
rows = [l.split("|")[1:-1] for l in lines if l.startswith("| ") and not l.startswith("| data set")]
out = []
for ds in dict.fromkeys(r[0].strip() for r in rows):
    acc = [float(r[3]) for r in rows if r[0].strip() == ds]
    sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
    out.append(f"- {ds}: DEKM ACC mean {statistics.mean(acc):.4f}, std {sd:.4f} over {len(acc)} seed(s)")
open(sys.argv[1], "a").write("\n" + "\n".join(out) + "\n")
PY
tail -n 20 docs/RESULTS.md
