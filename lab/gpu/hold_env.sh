# Sourced by edition.sh and robustness.sh (from runs/snap, the snapshot of HEAD that call 1 unpacks, or from
# the repository root): links the root's carried and output folders into the snapshot, sets the environment
# (wheels of call 3 in /tmp/site, the snapshot's src/, offline hubs, data and cache folders) and defines
# wait_for_corpus and wait_for_packages.
SNAP=$PWD
ROOT=$(cd ../.. 2>/dev/null && pwd)
if [ "$(basename "$SNAP")" = snap ] && [ -d "$ROOT/.carry" ]; then  # in runs/snap: share the root's folders
  for d in .carry .cache _build; do mkdir -p "$ROOT/$d"; [ -e "$d" ] || ln -s "$ROOT/$d" "$d"; done
  [ -e .whl ] || ln -s "$ROOT/.whl" .whl
  mkdir -p "$ROOT/runs/logs" "$ROOT/runs/results"
  [ -e runs/logs ] || { mkdir -p runs; ln -s "$ROOT/runs/logs" runs/logs; ln -s "$ROOT/runs/results" runs/results; }
fi
mkdir -p runs/logs runs/results
export PYTHONPATH=/tmp/site:$SNAP/src PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=true LAYERWISE_NOTEBOOKS=$SNAP/notebooks
export LAYERWISE_DATA_DIR=${LAYERWISE_DATA_DIR:-$SNAP/.carry/data} LAYERWISE_CACHE_DIR=${LAYERWISE_CACHE_DIR:-$SNAP/.cache/layerwise}

wait_for_corpus() {  # the training corpus arrives in two parts (calls 1 and 2): wait until they assemble
  local sha=4c742519967853d5651b23753ea4a01ea4aae4edbb17e163dad8bdef90dee660
  local f=$LAYERWISE_DATA_DIR/corpus/gutenberg-train-200MB.txt.xz
  mkdir -p "$(dirname "$f")"
  until [ "$(sha256sum "$f" 2>/dev/null | cut -c1-64)" = "$sha" ]; do
    sleep 3; cat .carry/trainA/train_part_aa .carry/trainB/train_part_ab > "$f" 2>/dev/null
  done
  echo "=== corpus ok $(date -u +%T)"
}
wait_for_packages() {  # the chapters need the wheels of call 3 (install_wheels.sh marks /tmp/site/.installed)
  until [ -f /tmp/site/.installed ]; do sleep 3; done
  echo "=== packages ok $(date -u +%T)"
}
