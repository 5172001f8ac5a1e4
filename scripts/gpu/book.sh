#!/usr/bin/env bash
# The published (gpu) book on the lent H100: train the triplet, then every chapter, one runner call per
# chapter so that one failure does not stop the rest. Everything it writes is git-ignored (_build/, .cache/,
# runs/): a device call re-syncs tracked and untracked files.
# Usage: setsid nohup bash scripts/gpu/book.sh > runs/logs/book.log 2>&1 < /dev/null &   then scripts/gpu/poll.sh
cd "$(dirname "$0")/../.." || exit 1
. scripts/gpu/env.sh
mkdir -p "$LAYERWISE_DATA_DIR/corpus"
mv -f .carry/train/corpus/*.xz "$LAYERWISE_DATA_DIR/corpus/" 2>/dev/null
ls -la "$LAYERWISE_DATA_DIR/corpus"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > runs/logs/gpu.txt 2>&1
start=$(date +%s); echo "=== book start $(date -u +%FT%TZ)"
echo "=== train start $(date -u +%T)"
python3 -m layerwise.training --preset gpu --objective all --no-progress > runs/logs/train.log 2>&1
echo "=== train rc=$? end $(date -u +%T)"
for c in ${CHAPTERS:-00 01 02 04 06 05 09 03 07 08}; do
  echo "=== $c start $(date -u +%T)"
  python3 -m layerwise.book run --profile gpu --chapters "$c" --no-progress > "runs/logs/ch_$c.log" 2>&1
  echo "=== $c rc=$? end $(date -u +%T)"
done
echo "=== all done $(date -u +%T) total $(( $(date +%s) - start )) s"
