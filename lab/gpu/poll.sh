#!/usr/bin/env bash
# Poll a background GPU job: wait up to $1 seconds (default 240) for "all done" in $2 (default logs/bench.log),
# print progress, and pack logs + results into $OUT for the trip back.
cd "$(dirname "$0")/../.." || exit 1
log=${2:-runs/logs/bench.log}; end=$((SECONDS + ${1:-240}))
while [ $SECONDS -lt $end ] && ! grep -q "all done" "$log" 2>/dev/null; do sleep 15; done
cat "$log"; for f in runs/logs/*.log; do echo "--- $f"; tail -n 4 "$f" | cut -c1-300; done
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
PYTHONPATH=/tmp/site:runs/snap/src timeout 60 python3 lab/gpu/run_times.py .cache/layerwise/runs > runs/logs/run_times.txt 2>&1
tail -n 40 runs/logs/run_times.txt
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/results.tgz" runs/logs runs/results $(ls -d .cache/layerwise/results 2>/dev/null) \
    $(find .cache/layerwise/triplet \( -name train_log.jsonl -o -name layerwise_meta.json \) 2>/dev/null) 2>/dev/null
  [ -d _build/gpu/notebooks ] && tar czf "$OUT/notebooks.tgz" _build/gpu/notebooks
  ls -la "$OUT"
fi
