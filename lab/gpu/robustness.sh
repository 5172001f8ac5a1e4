#!/usr/bin/env bash
# The robustness hold on one H200: train training seeds 1 and 2 of the gpu triplet, run chapter 10
# (competence per seed; chapters 01, 02, 04 and 06 re-run on each seed as seed replicates), then the
# ledger (08) again so that it combines seeds 0, 1 and 2.
#
# Seed 0 is the published edition's: its result files must be in $LAYERWISE_CACHE_DIR/results/gpu/
# for the ledger to combine three seeds. Carry them as .carry/results/gpu/*.json (copied in below, never
# over a file already there) or run this script in the hold of lab/gpu/edition.sh, after it. Files of
# another preset configuration than the current gpu preset's (chapter 00's config_hash) are moved aside,
# and the ledger then combines seeds 1 and 2 only (book/results/gpu/ of 2026-11-23 is such a file set).
#
# Expected timeline (single-run times from benchmarks/results/triplet_design.md: ar 300 s, dlm 235 s,
# ar2dlm 70 s, ar2dlm_b25 200 s, each at 17-22% MFU, so four runs share the GPU well):
#   0:00  data: the gpu preset's Gutenberg rows (tokenizer + 193,776 rows of 512), ~1.5 min on a fresh machine
#   0:02  training, four processes on the one GPU: per seed, one lane ar then ar2dlm and one lane dlm;
#         ~1.5-2x slower each than alone: ~9-12 min (BRANCH=1 adds ar2dlm_b25 to the ar lanes: +5-6 min)
#   0:14  chapter 10 (gpu profile): competence of the 6 final models (~1 min; seed 0's rows come from
#         chapter 00's result file), chapters 01, 02, 04, 06 on seeds 1 and 2 (~40 s each: ~5.5 min)
#   0:21  chapter 08 (the ledger), forced: ~20 s
#   0:22  done (budget 25 min). The chapters' own seed-replicate notebooks are copied to
#         runs/results/robustness/ (poll.sh packs runs/results and .cache/layerwise/results).
# Everything it writes is git-ignored (runs/, _build/, .cache/).
# Usage: LAYERWISE_COMMIT=<short hash of HEAD> setsid nohup bash lab/gpu/robustness.sh > runs/logs/robustness.log 2>&1 < /dev/null &
#        then lab/gpu/poll.sh 590 runs/logs/robustness.log
# CPU check at tiny sizes (tiny preset and profile, a few minutes): TINY=1 BUILD=/tmp/build bash lab/gpu/robustness.sh
cd "$(dirname "$0")/../.." || exit 1
. lab/gpu/env.sh
export LAYERWISE_NOTEBOOKS=$PWD/notebooks
SEEDS=${SEEDS:-1 2}
PROFILE=gpu; [ -n "${TINY:-}" ] && PROFILE=tiny  # the profile's preset has the profile's name
BUILD=${BUILD:-_build/$PROFILE}                    # the runner's output folder
mkdir -p "$LAYERWISE_DATA_DIR/corpus" "$LAYERWISE_CACHE_DIR/results/$PROFILE"
mv -f .carry/train/corpus/*.xz "$LAYERWISE_DATA_DIR/corpus/" 2>/dev/null
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
for k in $SEEDS; do
  train "$k" ar ar2dlm ${BRANCH:+ar2dlm_b25} &
  train "$k" dlm &
done
wait
echo "=== training done $(date -u +%T) ($(( $(date +%s) - start )) s)"
branch=${BRANCH:+-p branch_runs=true}
seeds_yaml="[$(echo $SEEDS | tr ' ' ',')]"
step ch_10 900 python3 -m layerwise.book run --profile "$PROFILE" --chapters 10 --out "$BUILD" --no-progress -p "train_seeds=$seeds_yaml" $branch
step ch_08 300 python3 -m layerwise.book run --profile "$PROFILE" --chapters 08 --out "$BUILD" --force --no-progress
mkdir -p runs/results/robustness
cp -r "$LAYERWISE_CACHE_DIR/runs/$PROFILE/10_robustness/." runs/results/robustness/ 2>/dev/null
cp "$BUILD/notebooks/10_robustness.ipynb" "$BUILD/notebooks/08_claims_ledger.ipynb" runs/results/robustness/ 2>/dev/null
echo "=== robustness done $(date -u +%T) total $(( $(date +%s) - start )) s"
echo "=== all done $(date -u +%T)"
