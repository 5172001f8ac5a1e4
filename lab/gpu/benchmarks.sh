#!/usr/bin/env bash
# Runs every GPU benchmark in sequence (each under its own time limit), logs to runs/logs/bench_*.log.
# Everything it writes lives in git-ignored runs/: a device call re-syncs tracked and untracked files.
# Usage on the GPU machine: setsid nohup bash lab/gpu/benchmarks.sh > runs/logs/bench.log 2>&1 < /dev/null &
# Then poll: bash lab/gpu/poll.sh
cd "$(dirname "$0")/../.." || exit 1
. lab/gpu/env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > runs/logs/gpu.txt 2>&1
run() {  # name timeout command...
  local name=$1 t=$2; shift 2
  echo "=== $name start $(date -u +%T)"
  timeout "$t" "$@" > "runs/logs/bench_$name.log" 2>&1; echo "=== $name rc=$? end $(date -u +%T)"
  cp -r benchmarks/results/. runs/results/  # the tracked folder is overwritten by the next call's sync
}
for b in ${BENCHES:-training probes sampling skipping gptq memory}; do
  case $b in
    training) run training 420 python3 benchmarks/bench_training.py --steps 120 ;;
    probes)   run probes 300 python3 benchmarks/bench_probes.py ;;
    sampling) run sampling 600 python3 benchmarks/bench_sampling.py --time-blocks 2 --batches 1,8,32 --prefix-cache ;;
    skipping) run skipping 420 python3 benchmarks/bench_skipping.py --shapes gpu,8b ;;
    gptq)     run gptq 600 python3 benchmarks/bench_gptq.py ${GPTQ_ARGS:---layers 8} ;;
    memory)   run memory 300 python3 benchmarks/bench_8b_memory.py ;;
  esac
done
echo "=== all done $(date -u +%T)"
