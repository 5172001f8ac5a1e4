#!/usr/bin/env bash
# Issue-3 follow-up on the lent GPU: the committed training benchmark with the SDPA mask skip, then long
# diffusion runs of the arithmetic sweep (do more steps teach the diffusion objective the task?).
cd "$(dirname "$0")/../.." && mkdir -p runs/logs runs/results && source lab/gpu/env.sh
timeout 330 python3 benchmarks/bench_training.py --compile both --steps 60 --out runs/results/training > runs/logs/bench_training.log 2>&1
echo "bench rc=$?" >> runs/logs/bench_training.log
timeout ${LONG_S:-1200} python3 lab/gpu/arith_sweep.py --launch --only ${TAGS:-dlm,dlm-b128,dlm-sft} --steps 30000 \
  --eval-every 1000 --log-dir runs/logs > runs/logs/sweep.log 2>&1
echo "all done" >> runs/logs/sweep.log
