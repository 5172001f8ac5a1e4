#!/usr/bin/env bash
# One lease: the paper-profile cost benchmark, the LLaDA sampler against generate.py, then the triplet
# design run (training + competence) and the Monte-Carlo standard-error benchmark on its models.
# The training corpus arrives in two parts over the next device calls (.carry/trainA, .carry/trainB).
# Usage: LAYERWISE_COMMIT=<hash> setsid nohup bash lab/gpu/hold.sh > runs/logs/hold.log 2>&1 < /dev/null &
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD
mkdir -p runs/logs runs/results
# run the committed code of the first sync (git HEAD there), not files that later calls re-sync
rm -rf runs/snap && mkdir -p runs/snap && tar xf .carry/snap.tar -C runs/snap \
  || cp -r src benchmarks tests notebooks lab pyproject.toml runs/snap/
echo "snapshot of $(git rev-parse --short HEAD)"
python3 - <<'PY' > runs/logs/install.log 2>&1
import importlib.metadata as md, pathlib, re, subprocess, sys
norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()
have = {norm(d.metadata["Name"]) for d in md.distributions() if d.metadata["Name"]}
whl = sorted(str(p) for p in pathlib.Path(".whl").glob("*.whl") if norm(p.name.split("-")[0]) not in have)
print("installing", len(whl), "wheels; skipped (in the image):",
      sorted(norm(p.name.split("-")[0]) for p in pathlib.Path(".whl").glob("*.whl") if norm(p.name.split("-")[0]) in have))
subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                       "--no-cache-dir", "--target", "/tmp/site", *whl])
PY
echo "install rc=$?"
export PYTHONPATH=/tmp/site:$PWD/src PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export LAYERWISE_DATA_DIR=$PWD/.carry/data LAYERWISE_CACHE_DIR=$PWD/.cache/layerwise TOKENIZERS_PARALLELISM=true
python3 -c "import lm_eval, layerwise, torch; print('imports ok', torch.__version__)" 2>&1 | tail -2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > runs/logs/gpu.txt 2>&1
pip list 2>/dev/null > runs/logs/piplist.txt
step() {  # name timeout command...
  local name=$1 t=$2; shift 2
  echo "=== $name start $(date -u +%T)"
  timeout "$t" "$@" > "runs/logs/$name.log" 2>&1; echo "=== $name rc=$? end $(date -u +%T)"
}
start=$(date +%s)
cd runs/snap && ln -s $ROOT/.carry .carry && ln -s $ROOT/.cache .cache && ln -s $ROOT/runs runs || exit 1
export PYTHONPATH=/tmp/site:$PWD/src
. lab/gpu/hold_steps.sh
echo "=== total $(( $(date +%s) - start )) s"
echo "=== all done $(date -u +%T)"
