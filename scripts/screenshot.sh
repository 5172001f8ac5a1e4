#!/usr/bin/env bash
# Screenshot a page of the built book in headless Chromium (Debian package `chromium`).
#   scripts/screenshot.sh URL_OR_FILE out.png [WIDTHxHEIGHT]
# e.g. scripts/screenshot.sh _build/tiny/html/chapters/01_layer_similarity.html /tmp/ch1.png
# Install once: apt-get install -y chromium
set -euo pipefail
url=${1:?usage: screenshot.sh URL_OR_FILE out.png [WIDTHxHEIGHT]}
out=${2:?usage: screenshot.sh URL_OR_FILE out.png [WIDTHxHEIGHT]}
size=${3:-1280x2400}
[[ -e "$url" ]] && url="file://$(realpath "$url")"
command -v chromium >/dev/null || { echo "chromium not found: apt-get install -y chromium" >&2; exit 2; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# the network flags keep Chromium from calling out (refused here); the virtual time budget lets
# MathJax typeset before the shot
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size="${size/x/,}" \
  --virtual-time-budget=8000 --screenshot="$(realpath -m "$out")" "$url" 2>/dev/null
echo "$out"
