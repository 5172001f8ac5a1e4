#!/usr/bin/env bash
# Issue 3 on the lent GPU: the gpu-preset model trained on a mostly-arithmetic stream for ~5.5k steps
# (dlm first, then ar), scored on held-out arithmetic with each objective's own sampler.
cd "$(dirname "$0")/../.." && mkdir -p runs/logs runs/results && source scripts/gpu/env.sh
# the training corpus comes in its own call (carry .carry/train): .whl + .carry/data + it exceed 64 MiB
mv -f .carry/train/corpus/*.xz "$LAYERWISE_DATA_DIR/corpus/" 2>/dev/null
if [ ! -f "$LAYERWISE_DATA_DIR/corpus/gutenberg-train-200MB.txt.xz" ]; then
  echo "missing the training corpus: carry .carry/train in a call before this one"; echo "all done"; exit 1
fi >> runs/logs/probe_long.log
args="--preset gpu --arith-frac 0.9 --tokens ${TOKENS:-90e6} --batch-size ${BATCH:-32} --max-train-chars 4e6"
python3 scripts/gpu/arith_probe.py $args --objectives dlm --out runs/results/arith_long_dlm.json > runs/logs/probe_long.log 2>&1
python3 scripts/gpu/arith_probe.py $args --objectives ar --out runs/results/arith_long_ar.json >> runs/logs/probe_long.log 2>&1
echo "all done" >> runs/logs/probe_long.log
