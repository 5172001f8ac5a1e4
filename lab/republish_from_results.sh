#!/usr/bin/env bash
# Re-run the chapters that read only result files here on the CPU, from the committed gpu result files: chapter
# 10 gathering the training seeds (train_seeds: [], so it trains and re-runs nothing; every seed's result files
# and the competence rows of its earlier runs are read) and the claims ledger (08). For a change to the verdict
# rule or to how seeds combine: no GPU hold is needed. Publishes both pages (their banners name this machine and
# commit: commit first), regenerates the intro's blocks and builds the site.
# Usage: bash lab/republish_from_results.sh   (data from $LAYERWISE_DATA_DIR, else ../shared/data)
set -eo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
dir=$(mktemp -d /tmp/republish.XXXX)
mkdir -p "$dir/led/results/gpu" && cp book/results/gpu/*.json "$dir/led/results/gpu/"
# the chapters with seed replicates, as chapter 10's `rerun` (which chapters' metrics it shows)
rerun="[$(ls book/results/gpu/*@train_seed-*.json | sed 's|.*/||; s|@.*||' | sort -u | paste -sd, | sed 's/,/, /g')]"
run() { LAYERWISE_DATA_DIR=${LAYERWISE_DATA_DIR:-$(cd .. && pwd)/shared/data} LAYERWISE_CACHE_DIR=$dir/led \
  $py -m layerwise.book run --profile gpu --out "$dir/_build/gpu" --force --no-progress -p device=cpu "$@"; }
run --chapters 10 -p 'train_seeds=[]' -p branch_runs=true -p "rerun=$rerun"
run --chapters 08
cp "$dir"/led/results/gpu/{08_claims_ledger,10_robustness}.json book/results/gpu/
$py -c "from layerwise.book.site import publish; print(*publish('gpu', out='$dir/_build/gpu'), sep='\n')"
$py -m layerwise.findings --intro book/intro.md --results book/results/gpu
.venv/bin/layerwise-book build --published
echo "re-run in $dir: review git diff, then commit"
