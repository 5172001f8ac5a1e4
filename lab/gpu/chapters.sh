#!/usr/bin/env bash
# Run the given chapters of the gpu profile, one runner call each (see edition.sh). Usage: chapters.sh 02 03 ...
cd "$(dirname "$0")/../.." || exit 1
. lab/gpu/env.sh
for c in "$@"; do
  echo "=== $c start $(date -u +%T)"
  python3 -m layerwise.book run --profile gpu --chapters "$c" --no-progress > "runs/logs/ch_$c.log" 2>&1
  echo "=== $c rc=$? end $(date -u +%T)"
done
echo "=== all done $(date -u +%T)"
