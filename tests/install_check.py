"""Non-editable install check: the library works installed, away from any checkout.

Creates a fresh virtual environment, installs torch and then this project with ``pip install .``
semantics (not editable, core dependencies only, through uv with ``constraints.txt``), and from a
directory outside the clone runs ``python -c`` code that builds a tiny random-weight model, runs a
probe (layer similarity) and a sampler (diffusion generation), and checks the package data. Then
``layerwise-book list`` must fail with a one-line error naming ``--notebooks`` in that directory and
find the chapters when given ``--notebooks``.

    python tests/install_check.py [--venv DIR] [--keep]

``$TORCH_INSTALL`` (default ``torch==2.13.0``) is what pip installs first. Prints each step with
its duration; exits non-zero on the first failure. ``tests/test_install.py`` runs it when
``LAYERWISE_INSTALL_CHECK=1``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLONE = Path(__file__).resolve().parents[1]

#: runs in the fresh environment, from a directory outside the clone
SMOKE = r"""
import sys, time
from importlib import resources
from pathlib import Path

import torch

import layerwise
from layerwise.diffusion import mask_token_id
from layerwise.probes import layer_similarity
from layerwise.sampling import diffusion_generate
from layerwise.testing import random_model

clone = Path(sys.argv[1])
where = Path(layerwise.__file__).resolve()
assert clone not in where.parents, f"layerwise imported from the clone: {where}"
tasks = resources.files("layerwise") / "tasks"
assert (tasks / "lw_gutenberg.yaml").is_file() and (resources.files("layerwise") / "py.typed").is_file()
t0 = time.perf_counter()
torch.set_num_threads(1)
lm = random_model(layers=4, d_model=64, heads=4, mlp=128, vocab=256, family="dlm", device="cpu")
ids = torch.randint(0, 255, (4, 32), generator=torch.Generator().manual_seed(0))
sim = layer_similarity(lm, ids, mask_ratio=0.25, generator=torch.Generator().manual_seed(0))
out = diffusion_generate(lm, ids[:2, :8], gen_length=8, steps=8, block_length=8)
assert out.shape == (2, 8) and bool((out != mask_token_id(lm)).all()), out
print(f"layerwise {layerwise.__version__} from {where.parent}")
print(f"layer similarity (4 blocks): {[round(float(x), 3) for x in sim.mean]}")
print(f"diffusion_generate: {tuple(out.shape)}, no mask left; model + probe + sampler {time.perf_counter() - t0:.1f} s")
"""


def _step(name: str, cmd: list[str], cwd: Path, env: dict[str, str] | None = None, ok: int = 0) -> str:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    print(f"[{time.perf_counter() - t0:6.1f} s] {name}", flush=True)
    if res.returncode != ok:
        print(res.stdout[-4000:], res.stderr[-4000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"install check failed at: {name} (exit {res.returncode}, expected {ok})")
    return res.stdout + res.stderr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--venv", default=None, help="where to create the environment (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the environment afterwards")
    args = ap.parse_args(argv)
    t_all = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="layerwise-install-"))
    venv = Path(args.venv) if args.venv else tmp / "venv"
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    py, bin_ = venv / "bin" / "python", venv / "bin"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERWISE_")}
    env["LAYERWISE_CACHE_DIR"] = str(tmp / "cache")
    try:
        if venv.exists():
            shutil.rmtree(venv)
        _step(f"python -m venv {venv}", [sys.executable, "-m", "venv", str(venv)], elsewhere)
        torch_spec = os.environ.get("TORCH_INSTALL", "torch==2.13.0").split()
        _step(f"pip install {' '.join(torch_spec)} uv", [str(py), "-m", "pip", "install", "--quiet", *torch_spec, "uv"],
              elsewhere)
        # built from a copy of what a source distribution holds (setuptools writes build/ beside the sources)
        project = tmp / "project"
        project.mkdir()
        for name in ("pyproject.toml", "README.md", "constraints.txt"):
            shutil.copy2(CLONE / name, project / name)
        shutil.copytree(CLONE / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        _step("uv pip install -c constraints.txt . (not editable)",
              [str(bin_ / "uv"), "pip", "install", "--quiet", "--python", str(py), "-c", "constraints.txt", "."],
              project)
        print(_step("python -c: random model, layer similarity, diffusion_generate",
                    [str(py), "-c", SMOKE, str(CLONE)], elsewhere, env).strip())
        err = _step("layerwise-book list (no notebooks here): one-line error",
                    [str(bin_ / "layerwise-book"), "list"], elsewhere, env, ok=2).strip()
        assert len(err.splitlines()) == 1 and "--notebooks" in err, err
        print(err)
        out = _step("layerwise-book list --notebooks <clone>/notebooks",
                    [str(bin_ / "layerwise-book"), "list", "--notebooks", str(CLONE / "notebooks")], elsewhere, env)
        print(out.strip())
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
            if args.venv:
                shutil.rmtree(venv, ignore_errors=True)
    print(f"install check passed in {time.perf_counter() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
