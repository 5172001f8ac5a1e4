#!/usr/bin/env bash
# The published (gpu) book on the lent H200: train the triplet, then every chapter, one runner call per
# chapter so that one failure does not stop the rest. Chapter 03 (the longest, mostly lm-eval bookkeeping
# on the CPU) runs in a second lane beside the others; the ledger (08) runs last, after both lanes.
# Everything it writes is git-ignored (_build/, .cache/, runs/): a device call re-syncs tracked and
# untracked files. With BENCH=1 the training benchmark runs afterwards (alone on the GPU).
# Usage: LAYERWISE_COMMIT=<short hash of HEAD> setsid nohup bash lab/gpu/book.sh > runs/logs/book.log 2>&1 < /dev/null &
#        then lab/gpu/poll.sh
cd "$(dirname "$0")/../.." || exit 1
. lab/gpu/env.sh
mkdir -p "$LAYERWISE_DATA_DIR/corpus"
# the training corpus arrives in two parts (.carry/trainA, .carry/trainB: `split -b 26M` of the .xz), each
# carried by its own device call (one call carries at most 64 MiB); wait until they assemble to the file
SHA=4c742519967853d5651b23753ea4a01ea4aae4edbb17e163dad8bdef90dee660
F=$LAYERWISE_DATA_DIR/corpus/gutenberg-train-200MB.txt.xz
until [ "$(sha256sum "$F" 2>/dev/null | cut -c1-64)" = "$SHA" ]; do
  sleep 5; cat .carry/trainA/train_part_aa .carry/trainB/train_part_ab > "$F" 2>/dev/null
done
ls -la "$LAYERWISE_DATA_DIR/corpus"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > runs/logs/gpu.txt 2>&1
start=$(date +%s); echo "=== book start $(date -u +%FT%TZ)"
echo "=== train start $(date -u +%T)"
python3 -m layerwise.training --preset gpu --objective all --no-progress > runs/logs/train.log 2>&1
echo "=== train rc=$? end $(date -u +%T)"
chapter() {
  echo "=== $1 start $(date -u +%T)"
  python3 -m layerwise.book run --profile gpu --chapters "$1" --no-progress > "runs/logs/ch_$1.log" 2>&1
  echo "=== $1 rc=$? end $(date -u +%T)"
}
lane2=${LANE2-03}
( for c in $lane2; do chapter "$c"; done ) & lane2_pid=$!
for c in ${CHAPTERS:-00 07 01 02 04 06 05 09}; do chapter "$c"; done
wait $lane2_pid
for c in ${LAST-08}; do chapter "$c"; done
echo "=== book done $(date -u +%T) total $(( $(date +%s) - start )) s"
if [ -n "${BENCH:-}" ]; then
  echo "=== bench start $(date -u +%T)"
  timeout 300 python3 benchmarks/bench_training.py --compile both --steps 80 > runs/logs/bench_training.log 2>&1
  echo "=== bench rc=$? $(date -u +%T)"
  timeout 240 python3 benchmarks/bench_training.py --compile on --steps 50 --objectives ar,dlm \
    --set d_model=1024 --set n_heads=16 --set d_mlp=2816 --out runs/results/training_wide >> runs/logs/bench_training.log 2>&1
  echo "=== bench wide rc=$? $(date -u +%T)"
  cp -r benchmarks/results/. runs/results/
fi
echo "=== all done $(date -u +%T)"
