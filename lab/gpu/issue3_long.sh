#!/usr/bin/env bash
# Issue 3, later leases: the gpu-preset model on a 90%-arithmetic stream, batch 128, with its 25/50/75/100%
# snapshots scored on held-out arithmetic by each objective's own sampler (a learning curve).
#   default: dlm at 600M tokens (does the LLaDA objective learn the task given enough of it?)
#   OBJ=ar,ar2dlm TOKENS=100e6 TAG=ar2dlm: ar, and ar2dlm branched from ar's 75% snapshot (Dream's recipe)
# Carry .carry/train in an earlier call.
cd "$(dirname "$0")/../.." && mkdir -p runs/logs runs/results && source lab/gpu/env.sh
obj=${OBJ:-dlm}; tag=${TAG:-dlm_long}; log=runs/logs/issue3_$tag.log
mv -f .carry/train/corpus/*.xz "$LAYERWISE_DATA_DIR/corpus/" 2>/dev/null
if [ ! -f "$LAYERWISE_DATA_DIR/corpus/gutenberg-train-200MB.txt.xz" ]; then
  echo "missing the training corpus: carry .carry/train in a call before this one" >> $log; echo "all done" >> $log; exit 1
fi
echo "== $obj ${TOKENS:-600e6} tokens, batch 128, commit ${LAYERWISE_COMMIT:-?} ($(date -u +%T))" >> $log
python3 lab/gpu/arith_probe.py --preset gpu --arith-frac 0.9 --max-train-chars 4e6 --items 200 --snapshots \
  --objectives $obj --tokens ${TOKENS:-600e6} --batch-size 128 --out runs/results/arith_gpu_$tag.json \
  > runs/logs/arith_gpu_$tag.log 2>&1
echo "   rc=$? ($(date -u +%T))" >> $log; grep -aoE "(trained|(ar|dlm|ar2dlm) (step_|ar|dlm)).*" runs/logs/arith_gpu_$tag.log >> $log
echo "all done" >> $log
