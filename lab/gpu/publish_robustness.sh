#!/usr/bin/env bash
# Publish what a robustness hold brought back (the last poll's results.tgz and notebooks.tgz in FILES, the
# device tool's files_at folder): the seed replicates' result files, chapters 08 and 10, the intro's generated
# blocks, the hold's logs under lab/logs/NAME/, then the site (layerwise-book build --published).
# When the hold ended before the ledger (no 08 notebook came back), the ledger runs here on the CPU from the
# result files first (the data from $LAYERWISE_DATA_DIR, else ../shared/data). Usage: bash lab/gpu/publish_robustness.sh FILES NAME   (e.g. /work/.device/9 robustness_2026-12-04)
set -eo pipefail
cd "$(dirname "$0")/../.."
files=${1:?usage: publish_robustness.sh FILES NAME}; name=${2:?usage: publish_robustness.sh FILES NAME}
py=.venv/bin/python
dir=$(mktemp -d /tmp/publish_robustness.XXXX)
tar xzf "$files/results.tgz" -C "$dir"
[ -f "$files/notebooks.tgz" ] && tar xzf "$files/notebooks.tgz" -C "$dir"
echo "unpacked in $dir"
res=$dir/.cache/layerwise/results/gpu
ls "$res"/*@train_seed-*.json > /dev/null || { echo "no seed replicate came back in $files/results.tgz"; exit 1; }
mkdir -p "lab/logs/$name"
cp "$dir"/runs/logs/*.log "$dir"/runs/logs/*.txt "lab/logs/$name/" 2>/dev/null || true
cp "$res"/*.json book/results/gpu/
if [ ! -f "$dir/_build/gpu/notebooks/08_claims_ledger.ipynb" ]; then
  echo "no ledger came back: running chapter 08 here on the CPU"
  mkdir -p "$dir/led/results/gpu" && cp book/results/gpu/*.json "$dir/led/results/gpu/"
  LAYERWISE_DATA_DIR=${LAYERWISE_DATA_DIR:-$(cd .. && pwd)/shared/data} LAYERWISE_CACHE_DIR=$dir/led \
    $py -m layerwise.book run --profile gpu --chapters 08 --out "$dir/_build/gpu" --force --no-progress -p device=cpu
  cp "$dir"/led/results/gpu/08_claims_ledger.json book/results/gpu/
fi
$py -c "from layerwise.book.site import publish; print(*publish('gpu', out='$dir/_build/gpu'), sep='\n')"
$py -m layerwise.findings --intro book/intro.md --results book/results/gpu
.venv/bin/layerwise-book build --published
echo "published from $dir; logs in lab/logs/$name: review git diff, then commit"
