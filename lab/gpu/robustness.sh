#!/usr/bin/env bash
# The robustness hold on one H200: train training seed(s) $SEEDS (default 1) of the gpu triplet, run chapter 10
# (competence per seed; the profile's chapters, or $RERUN, re-run on each seed as seed replicates), then the
# ledger (08) again so that it combines seed 0 with every seed whose result files are present.
#
# Seed 0 is the published edition's: its result files must be in $LAYERWISE_CACHE_DIR/results/gpu/
# for the ledger to combine three seeds. Carry them as .carry/results/gpu/*.json (copied in below, never
# over a file already there) or run this script in the hold of lab/gpu/edition.sh, after it. Files of
# another preset configuration than the current gpu preset's (chapter 00's config_hash) are moved aside,
# and the ledger then combines seeds 1 and 2 only (book/results/gpu/ of 2026-11-23 is such a file set).
#
# Timeline, measured in the first robustness hold (2026-12-03, seed 1; lab/logs/robustness_2026-12-03/): data 87 s;
# ar and dlm trained at once (two lanes) took 543 s of wall clock, where alone (seed 0, the edition hold) their
# training took 282 s + 223 s = 505 s: lanes gain nothing on this GPU, so the runs now go one after the other
# (ar 282 s, ar2dlm 68 s, dlm 223 s: ~9.5 min); chapter 10 with 01, 02, 04, 06 re-run 106 s; 08 15 s. From
# the third edition hold (four lanes at once, so upper bounds): 03 248 s, 05 ~60 s, 07 401 s.
# RERUN (a YAML list) replaces the profile's chapters re-run per seed: with 03, 05 and 07 too, a seed takes
#   data ~1.5 min + training ~9.5 min + chapter 10 ~14 min (at most) + 08: ~26 min, inside one 30-minute hold.
# BRANCH=1 also trains the ar2dlm_b25 run of the seed after the ledger (~3.5 min), scores it and re-runs 01 on it
# (claim A6), then the ledger again.
# SEEDS=1 in one hold, SEEDS=2 in the next, each carrying every earlier hold's result files (seed 0's
# and seed 1's) as .carry/results/gpu/: the ledger combines every seed whose files are present, and chapter
# 10 keeps the competence rows of the seeds an earlier hold scored.
# Calls: as edition.sh's (1: .carry/snap.tgz .carry/data .carry/results, started in runs/snap; 2: .carry/trainA;
# 3: .carry/trainB; 4: .whl + bash lab/gpu/install_wheels.sh), then lab/gpu/poll.sh 540 runs/logs/robustness.log.
# Start (call 1): (cd runs/snap && LAYERWISE_COMMIT=<hash> SEEDS=1 setsid nohup bash lab/gpu/robustness.sh \
#   > ../logs/robustness.log 2>&1 < /dev/null &)
# CPU check at tiny sizes (tiny preset and profile, a few minutes): TINY=1 BUILD=/tmp/build bash lab/gpu/robustness.sh
if [ "$(basename "$PWD")" != snap ]; then cd "$(dirname "$0")/../.." || exit 1; fi
. lab/gpu/hold_env.sh
SEEDS=${SEEDS:-1}
PROFILE=gpu; [ -n "${TINY:-}" ] && PROFILE=tiny  # the profile's preset has the profile's name
[ "$PROFILE" = gpu ] && wait_for_corpus
BUILD=${BUILD:-_build/$PROFILE}                    # the runner's output folder
mkdir -p "$LAYERWISE_DATA_DIR/corpus" "$LAYERWISE_CACHE_DIR/results/$PROFILE"
cp -n .carry/results/$PROFILE/*.json "$LAYERWISE_CACHE_DIR/results/$PROFILE/" 2>/dev/null
echo "seed-0 result files: $(ls "$LAYERWISE_CACHE_DIR/results/$PROFILE" | tr '\n' ' ')"
python3 - "$PROFILE" <<'PY'  # seed 0 counts only when chapter 00 trained the preset's current configuration
import json, shutil, sys
from layerwise.config import cache_dir
from layerwise.training import get_preset
profile = sys.argv[1]
d = cache_dir() / "results" / profile
f, want = d / "00_pretraining.json", get_preset(profile).config_hash()
have = json.loads(f.read_text())["data"].get("config_hash") if f.is_file() else None
if have is None:
    print(f"seed 0: no chapter 00 result file in {d}: its preset configuration is not checked")
elif have != want:
    stale = d / "seed0-other-configuration"
    stale.mkdir(exist_ok=True)
    for p in d.glob("[0-9][0-9]_*.json"):
        if "@" not in p.name:
            shutil.move(str(p), str(stale / p.name))
    print(f"seed 0's result files are of preset configuration {have}, not {want}: moved to {stale}")
else:
    print(f"seed 0's result files: preset configuration {want}")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > runs/logs/gpu.txt 2>&1
start=$(date +%s); echo "=== robustness start $(date -u +%FT%TZ) seeds $SEEDS"
step() {  # name timeout command...
  local name=$1 t=$2; shift 2
  echo "=== $name start $(date -u +%T)"
  timeout "$t" "$@" > "runs/logs/$name.log" 2>&1; echo "=== $name rc=$? end $(date -u +%T)"
}
step data 300 python3 -c "
from layerwise import data as D, training as T
D.prepare(T.get_preset('$PROFILE').data, progress=False); print('prepared')"
train() {  # seed run...: the runs one after the other (ar2dlm reads ar's branch snapshot)
  local k=$1; shift
  for r in "$@"; do
    echo "=== train seed $k $r start $(date -u +%T)"
    python3 -m layerwise.training --preset "$PROFILE" --seed "$k" --objective "$r" --no-progress >> "runs/logs/train_s$k.log" 2>&1
    echo "=== train seed $k $r rc=$? end $(date -u +%T)"
  done
}
for k in $SEEDS; do  # one run after the other: two lanes on the one GPU were slower than the sum (see above)
  train "$k" ar ar2dlm dlm
done
echo "=== training done $(date -u +%T) ($(( $(date +%s) - start )) s)"
[ "$PROFILE" = gpu ] && wait_for_packages
# BRANCH=parallel trains the branch runs (below) while chapter 10 evaluates: its chapters leave the GPU mostly idle
# (small models, sampling loops), so the branch's ~3.5 min of training may overlap them instead of following them.
# Not yet measured on the GPU: two processes share it by time slices, which may slow chapter 10's many small kernels.
branches=$( [ -n "${BRANCH:-}" ] && python3 -c "from layerwise.training import run_names
print(' '.join(run_names('$PROFILE')[3:]))")
branches=${BRANCHES:-$branches}  # BRANCHES: other runs to train as branch runs (a CPU check of this path on tiny)
branch_pid=""
if [ "${BRANCH:-}" = parallel ] && [ -n "$branches" ]; then
  # shellcheck disable=SC2086
  (for k in $SEEDS; do train "$k" $branches; done) & branch_pid=$!
fi
seeds_yaml="[$(echo $SEEDS | tr ' ' ',')]"
keep() {  # the seed pages and the two chapters' notebooks, where poll.sh packs them
  mkdir -p runs/results/robustness
  cp -r "$LAYERWISE_CACHE_DIR/runs/$PROFILE/10_robustness/." runs/results/robustness/ 2>/dev/null
  cp "$BUILD/notebooks/10_robustness.ipynb" "$BUILD/notebooks/08_claims_ledger.ipynb" runs/results/robustness/ 2>/dev/null
}
# COMPETENCE_FIRST=1: chapter 10 first with no chapter re-run (the seeds' competence rows, ~1 min, into its result
# file), so that a hold ending during the re-runs keeps them; the full run then re-uses the stored scores
[ -n "${COMPETENCE_FIRST:-}" ] && step ch_10a 600 python3 -m layerwise.book run --profile "$PROFILE" --chapters 10 \
  --out "$BUILD" --no-progress -p "train_seeds=$seeds_yaml" -p "rerun=[]"
step ch_10 1200 python3 -m layerwise.book run --profile "$PROFILE" --chapters 10 --out "$BUILD" --no-progress \
  -p "train_seeds=$seeds_yaml" ${RERUN:+-p "rerun=$RERUN"}
# LEDGER=0 skips the ledger here (~20 s per run): it reads only the result files, and publish_robustness.sh runs
# it on the CPU when no ledger notebook came back
ledger() { [ "${LEDGER:-1}" = 0 ] || step "$1" 300 python3 -m layerwise.book run --profile "$PROFILE" --chapters 08 \
  --out "$BUILD" --force --no-progress; }
ledger ch_08
keep
# BRANCH=1: then each seed's branch runs (gpu: ar2dlm_b25, claim A6, ~3.5 min of training), chapter 10 again with
# the branch runs (it scores them; chapter 01, whose seed page is removed, re-runs with them; the other chapters
# are up to date and skipped) and the ledger again. Last, so that a hold ending during it keeps everything above.
if [ -n "${BRANCH:-}" ]; then
  echo "=== branch runs of preset $PROFILE: ${branches:-none}"
  [ -n "$branch_pid" ] && { wait "$branch_pid"; echo "=== branch runs (beside chapter 10) done $(date -u +%T)"; }
  for k in $SEEDS; do
    # shellcheck disable=SC2086
    [ -n "$branches" ] && [ -z "$branch_pid" ] && train "$k" $branches
    rm -f "$LAYERWISE_CACHE_DIR/runs/$PROFILE/10_robustness/train_seed-$k/notebooks/01_layer_similarity.ipynb"
  done
  # RERUN_BRANCH (default RERUN): the chapters re-run here; chapter 01 alone need run only here, on every run at once
  RERUN_BRANCH=${RERUN_BRANCH:-$RERUN}
  step ch_10b 600 python3 -m layerwise.book run --profile "$PROFILE" --chapters 10 --out "$BUILD" --no-progress \
    -p "train_seeds=$seeds_yaml" -p branch_runs=true ${RERUN_BRANCH:+-p "rerun=$RERUN_BRANCH"}
  ledger ch_08b
  keep
fi
# Optional, in the hold's spare minutes after the ledger: seed 0's dlm trained to EXTRA_DLM_TOKENS tokens with
# its snapshots scored (its competence curve past the preset's budget: is the dlm's competence then robust?)
if [ -n "${EXTRA_DLM_TOKENS:-}" ]; then
  step extra_dlm "${EXTRA_TIMEOUT:-480}" python3 benchmarks/bench_triplet_design.py --preset "$PROFILE" \
    --set "tokens=$EXTRA_DLM_TOKENS" --runs dlm --seeds 0 --out "runs/results/dlm_tokens_$EXTRA_DLM_TOKENS"
fi
echo "=== robustness done $(date -u +%T) total $(( $(date +%s) - start )) s"
echo "=== all done $(date -u +%T)"
