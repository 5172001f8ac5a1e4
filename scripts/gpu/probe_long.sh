#!/usr/bin/env bash
# Issue 3 on the lent GPU: the gpu-preset model trained on a mostly-arithmetic stream for ~5.5k steps
# (dlm first, then ar), scored on held-out arithmetic with each objective's own sampler.
cd "$(dirname "$0")/../.." && mkdir -p runs/logs runs/results && source scripts/gpu/env.sh
args="--preset gpu --arith-frac 0.9 --tokens ${TOKENS:-90e6} --batch-size ${BATCH:-32} --max-train-chars 4e6"
python3 scripts/gpu/arith_probe.py $args --objectives dlm --out runs/results/arith_long_dlm.json > runs/logs/probe_long.log 2>&1
python3 scripts/gpu/arith_probe.py $args --objectives ar --out runs/results/arith_long_ar.json >> runs/logs/probe_long.log 2>&1
echo "all done" >> runs/logs/probe_long.log
