#!/usr/bin/env bash
# Rebuild, here, what the GPU holds carry (all git-ignored, never committed):
#   .whl/            the chapters' packages for the image's Python 3.12 (lm-eval, papermill, jupytext, ipykernel
#                    and their dependencies; lab/gpu/wheels.txt; install_wheels.sh skips those the image has)
#   .carry/data      the benchmark files and the held-out corpus (from ../shared/data)
#   .carry/trainA|B  the training corpus in two parts (one device call carries at most 64 MiB)
#   .carry/snap.tgz  the committed code (git archive HEAD): edition.sh runs it while later calls re-sync
#   .carry/remote_code  the genuine LLaDA / Dream modeling code (the 8B-shaped benchmarks build from it)
#   .carry/results/gpu  the published result files (book/results/gpu), for the robustness hold's ledger
# The holds carry them in four calls (1: snap.tgz, data, results; 2: trainA; 3: trainB; 4: .whl), sized below.
# Usage: bash lab/gpu/make_carry.sh   (SHARED=<folder of the offline data> to read another copy)
set -e
cd "$(dirname "$0")/../.."
SHARED=${SHARED:-../shared/data}
for d in /.whl/ /.carry/; do grep -qx "$d" .git/info/exclude || echo "$d" >> .git/info/exclude; done
mkdir -p .whl .carry/data/corpus .carry/trainA .carry/trainB
PLAT="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_26_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
while read -r spec; do
  name=${spec%%==*}
  ls .whl | grep -qi "^${name}-" && continue
  # shellcheck disable=SC2086
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLAT \
    -d .whl "$spec" || python3 -m pip wheel -q --no-deps -w .whl "$spec"  # sdist-only, pure Python
done < lab/gpu/wheels.txt
cp -r "$SHARED/benchmarks" .carry/data/
cp "$SHARED/MANIFEST.md" .carry/data/
cp "$SHARED/corpus/gutenberg-heldout-10MB.txt.xz" .carry/data/corpus/
split -b 26M "$SHARED/corpus/gutenberg-train-200MB.txt.xz" .carry/train_part_
mv .carry/train_part_aa .carry/trainA/ && mv .carry/train_part_ab .carry/trainB/
rm -rf .carry/remote_code && cp -r "${REMOTE:-$(dirname "$SHARED")/remote_code}" .carry/remote_code
# the published result files (seed 0 and any seed replicates): the robustness hold's ledger combines them
rm -rf .carry/results && mkdir -p .carry/results/gpu && cp book/results/gpu/*.json .carry/results/gpu/
git archive --format=tar.gz HEAD -o .carry/snap.tgz
du -sh .whl .carry/data .carry/trainA .carry/trainB .carry/snap.tgz
# Each device call sends the working tree (tracked and untracked-not-ignored files) plus its carry paths, at most
# 64 MiB in all: the holds' calls, checked here so that a refused call does not cost a start.
tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
over=0
for call in "1|.carry/snap.tgz .carry/data .carry/results" "2|.carry/trainA" "3|.carry/trainB" "4|.whl"; do
  # shellcheck disable=SC2086
  carried=$(du -cb ${call#*|} | tail -1 | cut -f1)
  mib=$(( (tree + carried) / 1048576 ))
  flag=""; [ "$mib" -ge 64 ] && { flag="  OVER the 64 MiB a call may carry"; over=1; }
  echo "call ${call%%|*} (carry ${call#*|}): $mib MiB with the working tree$flag"
done
[ "$over" = 0 ] || echo "a call is over the limit: shrink the working tree or split that call's carry"
echo "snapshot of $(git rev-parse --short HEAD): start the hold with LAYERWISE_COMMIT=$(git rev-parse --short HEAD)"
