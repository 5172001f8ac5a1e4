#!/usr/bin/env bash
# Install the carried wheels (.whl/, see /work/.library/device/README.md) into /tmp/site, skipping the
# packages the GPU image already has (two versions of one package would break the image's torch stack),
# then mark /tmp/site/.installed (lab/gpu/edition.sh waits for it). Run from the repository root.
cd "$(dirname "$0")/../.." || exit 1
mkdir -p runs/logs
python3 - <<'PY' > runs/logs/install.log 2>&1
import importlib.metadata as md, pathlib, re, subprocess, sys
norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()
have = {norm(d.metadata["Name"]) for d in md.distributions() if d.metadata["Name"]}
wheels = sorted(pathlib.Path(".whl").glob("*.whl"))
todo = [str(p) for p in wheels if norm(p.name.split("-")[0]) not in have]
print("installing", len(todo), "wheels; skipped (in the image):",
      sorted(norm(p.name.split("-")[0]) for p in wheels if norm(p.name.split("-")[0]) in have))
subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                       "--no-cache-dir", "--target", "/tmp/site", *todo])
PY
rc=$?
[ $rc = 0 ] && touch /tmp/site/.installed
echo "install rc=$rc"; tail -3 runs/logs/install.log
PYTHONPATH=/tmp/site python3 -c "import lm_eval, papermill, jupytext, ipykernel, torch; print('imports ok', torch.__version__)" 2>&1 | tail -1
exit $rc
