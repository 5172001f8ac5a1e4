#!/usr/bin/env bash
# Issue 3 on the lent GPU, one lease: (1) the gpu-preset model trained on a mostly-arithmetic stream
# (dlm at 200M tokens, ar at 100M, batch 128 as the preset), scored on held-out arithmetic with each
# objective's own sampler (dlm: masked-diffusion sampling; ar: greedy); (2) the training benchmark at
# d_model 1024 after the SDPA mask fix (how MFU depends on width); (3) dlm at batch 32 (more steps).
cd "$(dirname "$0")/../.." && mkdir -p runs/logs runs/results && source lab/gpu/env.sh
log=runs/logs/issue3.log
# the training corpus comes in its own call (carry .carry/train): .whl + .carry/data + it exceed 64 MiB
mv -f .carry/train/corpus/*.xz "$LAYERWISE_DATA_DIR/corpus/" 2>/dev/null
if [ ! -f "$LAYERWISE_DATA_DIR/corpus/gutenberg-train-200MB.txt.xz" ]; then
  echo "missing the training corpus: carry .carry/train in a call before this one" >> $log; echo "all done" >> $log; exit 1
fi
common="--preset gpu --arith-frac 0.9 --max-train-chars 4e6 --items 200"
probe() {  # tag objective tokens batch
  echo "== $1: $2, $3 tokens, batch $4 ($(date -u +%T))" >> $log
  python3 lab/gpu/arith_probe.py $common --objectives $2 --tokens $3 --batch-size $4 \
    --out runs/results/arith_gpu_$1.json > runs/logs/arith_gpu_$1.log 2>&1
  echo "   rc=$? ($(date -u +%T))" >> $log; grep -E "exact match|trained" runs/logs/arith_gpu_$1.log >> $log
}
probe dlm dlm 200e6 128
probe ar ar 100e6 128
echo "== bench wide ($(date -u +%T))" >> $log
timeout 400 python3 benchmarks/bench_training.py --compile on --steps 50 --set d_model=1024 --set n_heads=16 \
  --set d_mlp=2816 --out runs/results/training_wide > runs/logs/bench_training_wide.log 2>&1
echo "   rc=$? ($(date -u +%T))" >> $log; tail -8 runs/logs/bench_training_wide.log >> $log
probe dlm-b32 dlm 100e6 32
echo "all done" >> $log
