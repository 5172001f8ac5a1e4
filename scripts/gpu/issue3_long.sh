#!/usr/bin/env bash
# Issue 3, second lease: does the LLaDA objective at the gpu-preset model keep improving on held-out
# arithmetic with more tokens? dlm at ${TOKENS:-600e6} tokens (90% arithmetic, batch 128), its 25/50/75/100%
# snapshots scored with the diffusion sampler (a learning curve). Carry .carry/train in an earlier call.
cd "$(dirname "$0")/../.." && mkdir -p runs/logs runs/results && source scripts/gpu/env.sh
log=runs/logs/issue3_long.log
mv -f .carry/train/corpus/*.xz "$LAYERWISE_DATA_DIR/corpus/" 2>/dev/null
if [ ! -f "$LAYERWISE_DATA_DIR/corpus/gutenberg-train-200MB.txt.xz" ]; then
  echo "missing the training corpus: carry .carry/train in a call before this one" >> $log; echo "all done" >> $log; exit 1
fi
echo "== dlm ${TOKENS:-600e6} tokens, batch 128, commit ${LAYERWISE_COMMIT:-?} ($(date -u +%T))" >> $log
python3 scripts/gpu/arith_probe.py --preset gpu --arith-frac 0.9 --max-train-chars 4e6 --items 200 --snapshots \
  --objectives dlm --tokens ${TOKENS:-600e6} --batch-size 128 --out runs/results/arith_gpu_dlm_long.json \
  > runs/logs/arith_gpu_dlm_long.log 2>&1
echo "   rc=$? ($(date -u +%T))" >> $log; grep -aoE "(trained|dlm step_|dlm dlm).*" runs/logs/arith_gpu_dlm_long.log >> $log
echo "all done" >> $log
