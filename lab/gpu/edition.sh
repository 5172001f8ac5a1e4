#!/usr/bin/env bash
# The published (gpu) edition in one hold on the lent H200: data, the triplet's training, every chapter,
# the ledger. Started in the background by the first device call; the other calls bring what it waits for:
#   call 1 (carry .carry/snap.tgz .carry/data):
#     mkdir -p runs/snap && tar xzf .carry/snap.tgz -C runs/snap && cd runs/snap &&
#     LAYERWISE_COMMIT=<hash> setsid nohup bash lab/gpu/edition.sh > ../logs/edition.log 2>&1 < /dev/null &
#   calls 2 and 3 (carry .carry/trainA, then .carry/trainB): the training corpus (`split -b 26M` of the .xz)
#   call 4 (carry .whl): the chapters' packages (lm-eval, papermill, ...): bash lab/gpu/install_wheels.sh
#   (make_carry.sh prints each call's size: a call carries at most 64 MiB with the working tree)
#   then: bash lab/gpu/poll.sh 590 runs/logs/edition.log   (packs logs, results and notebooks into $OUT)
# It runs from the snapshot of HEAD (runs/snap: later calls re-sync the working tree, the snapshot stays).
#
# Schedule (single-run times from benchmarks/results/triplet_design.md):
#   data (tokenizer + the preset's rows, ~1.5 min) -> ar, dlm, ar2dlm one after another (~10 min) ->
#   five lanes at once: ar2dlm_b25 training | 03 | 07 | 05 | 02 04 06 09, then (after b25) 00 01 ->
#   08, the ledger, once every lane is done.
# Chapters 03, 05 and 07 (the longest) start as soon as the triplet is trained; 00 and 01 read ar2dlm_b25.
# The 2026-12-02 hold (the first run of this schedule, with 4 lanes and a 24-minute deadline): data 105 s,
# ar 324 s, dlm 272 s, ar2dlm 89 s, ar2dlm_b25 367 s beside the chapters (203 s alone); 02 37 s, 04 36 s,
# 06 49 s, 09 32 s, 01 38 s; 03, 05 and 07 did not finish by the deadline (07's evaluations alone took
# 480 s), so the gpu profile was cut (notebooks/profiles/gpu.yaml says what and why).
# The second (MINUTES=26): data 86 s, ar 309 s, dlm 255 s, ar2dlm 88 s, b25 401 s; 02 33 s, 04 36 s, 06 56 s,
# 09 27 s, 03 403 s; 05 still generating at 6.7 min (now batched across conditions); lost before its end.
# The third (MINUTES=26, commit 3a2496c): data 68 s, ar 297 s, dlm 242 s, ar2dlm 85 s (triplet at 11:47), b25
# 389 s; 02 30 s, 04 32 s, 06 54 s, 09 21 s, 03 248 s, 07 401 s, 00 56 s, 01 25 s, 08 15 s: all done at
# 19:55. 05 stopped at its figure cell after 54 s (pandas 3.0) and was re-run after the fix (33 s, cached
# generations). bench_sampler hit its 120 s timeout under the four lanes (now 300 s), so it wrote nothing.
# Every chapter's timeout ends it by the deadline in runs/logs/deadline (epoch seconds, 26 min after the start
# unless a later call writes another) less 90 s kept for the ledger.
# Everything it writes is git-ignored (runs/, _build/, .cache/).
# CPU check of the control flow (tiny preset and profile): PROFILE=tiny bash lab/gpu/edition.sh
. "$(dirname "$0")/hold_env.sh"
PROFILE=${PROFILE:-gpu}
start=$(date +%s)
[ -f runs/logs/deadline ] || echo $((start + ${MINUTES:-26} * 60)) > runs/logs/deadline
echo "=== edition start $(date -u +%FT%TZ) profile $PROFILE commit ${LAYERWISE_COMMIT:-?} deadline $(date -u -d @"$(cat runs/logs/deadline)" +%T)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > runs/logs/gpu.txt 2>&1
left() { echo $(( $(cat runs/logs/deadline) - $(date +%s) )); }
step() {  # name timeout command...: one logged step
  local name=$1 t=$2; shift 2
  if [ "$t" -le 0 ]; then echo "=== $name skipped: past the deadline $(date -u +%T)"; return 1; fi
  echo "=== $name start $(date -u +%T)"
  timeout "$t" "$@" > "runs/logs/$name.log" 2>&1; local rc=$?
  echo "=== $name rc=$rc end $(date -u +%T)"; return $rc
}
chapter() {  # one runner call per chapter: a failure or timeout stops no other chapter
  step "ch_$1" $(( $(left) - 90 )) env OMP_NUM_THREADS=4 python3 -m layerwise.book run --profile "$PROFILE" \
    --chapters "$1" --no-progress
}
train() { step "train_$1" 1500 python3 -m layerwise.training --preset "$PROFILE" --objective "$1" --no-progress; }

[ "$PROFILE" = gpu ] && wait_for_corpus
step data 600 python3 -c "
from layerwise import data as D, training as T
D.prepare(T.get_preset('$PROFILE').data, progress=False); print('prepared')"
for r in ar dlm ar2dlm; do train $r; done
BRANCHES=${BRANCHES-ar2dlm_b25}
( for r in $BRANCHES; do train "$r"; done ) & branch_pid=$!
[ "$PROFILE" = gpu ] && wait_for_packages
( chapter 03 ) & lane_a=$!
( chapter 07 ) & lane_b=$!
( chapter 05 ) & lane_d=$!
( for c in ${LANE_C:-02 04 06 09}; do chapter "$c"; done
  # the batched unmasking choice on CUDA: same tokens as row by row (ties included), and its time per step
  [ "$PROFILE" = gpu ] && step bench_sampler 300 python3 benchmarks/bench_sampler_step.py --device cuda \
    --batches 8 64 256 --repeats 5 --out runs/results/sampler_step
  while kill -0 $branch_pid 2>/dev/null; do sleep 3; done  # 00 and 01 read ar2dlm_b25
  for c in ${AFTER_BRANCH:-00 01}; do chapter "$c"; done ) & lane_c=$!
wait $lane_a $lane_b $lane_c $lane_d $branch_pid
t=$(( $(left) + 90 )); [ $t -lt 60 ] && t=60
step ch_08 $t python3 -m layerwise.book run --profile "$PROFILE" --chapters 08 --force --no-progress
echo "=== edition done $(date -u +%T) total $(( $(date +%s) - start )) s"
echo "=== all done $(date -u +%T)"
