#!/usr/bin/env bash
# Screenshots of the published site's pages in headless Chromium (Debian's chromium; `apt-get install -y
# chromium` where missing). Usage: bash lab/screenshot.sh OUTDIR [PAGE ...]
# PAGE: a page of _build/gpu/html without .html (default: chapters/08_claims_ledger chapters/03_layer_skipping).
# Build the site first: layerwise-book build --published
cd "$(dirname "$0")/.." || exit 1
out=${1:?usage: lab/screenshot.sh OUTDIR [PAGE ...]}; shift
mkdir -p "$out"
pages=${*:-chapters/08_claims_ledger chapters/03_layer_skipping}
for p in $pages; do
  f=$PWD/_build/gpu/html/$p.html
  [ -f "$f" ] || { echo "no page $f: run layerwise-book build --published first"; exit 1; }
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,4000 \
    --screenshot="$out/$(basename "$p").png" "file://$f" 2>/dev/null
  echo "$out/$(basename "$p").png"
done
