#!/usr/bin/env bash
# Re-run the claims ledger (chapter 08) here on the CPU from the committed gpu result files, after a change
# to the verdict rule: the ledger is a pure function of the result files, so no GPU hold is needed. Publishes
# page 08 (its banner names this machine and commit), regenerates the intro's blocks and builds the site.
# Usage: bash lab/republish_ledger.sh   (data from $LAYERWISE_DATA_DIR, else ../shared/data)
set -eo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
dir=$(mktemp -d /tmp/republish_ledger.XXXX)
mkdir -p "$dir/led/results/gpu" && cp book/results/gpu/*.json "$dir/led/results/gpu/"
LAYERWISE_DATA_DIR=${LAYERWISE_DATA_DIR:-$(cd .. && pwd)/shared/data} LAYERWISE_CACHE_DIR=$dir/led \
  $py -m layerwise.book run --profile gpu --chapters 08 --out "$dir/_build/gpu" --force --no-progress -p device=cpu
cp "$dir"/led/results/gpu/08_claims_ledger.json book/results/gpu/
$py -c "from layerwise.book.site import publish; print(*publish('gpu', out='$dir/_build/gpu'), sep='\n')"
$py -m layerwise.findings --intro book/intro.md --results book/results/gpu
.venv/bin/layerwise-book build --published
echo "ledger re-run in $dir: review git diff, then commit"
