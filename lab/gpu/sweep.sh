#!/usr/bin/env bash
# Issue-3 diagnostics on the lent GPU: the training-MFU check (compile off / plain / with the SDPA mask skip),
# then the arithmetic sweep (lab/gpu/arith_sweep.py --launch). Logs in runs/logs/, tables in runs/results/.
cd "$(dirname "$0")/../.." && source lab/gpu/env.sh
timeout 420 python3 benchmarks/bench_training.py --compile all --steps 40 --objectives ar,dlm \
  --out runs/results/training_maskskip > runs/logs/bench_maskskip.log 2>&1
python3 lab/gpu/arith_sweep.py --launch --steps ${STEPS:-8000} --eval-every 500 > runs/logs/sweep.log 2>&1
echo "all done" >> runs/logs/sweep.log
