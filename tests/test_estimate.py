"""The paper profile's cost estimate: units follow each chapter's plan; the dry run prints it; the tiny
benchmark measures unit costs end to end."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

from layerwise.book import estimate as E

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks" / "bench_paper_profile.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_paper_profile", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_tiny_benchmark_end_to_end(tmp_path):
    """--tiny builds the four models' tiny versions on CPU, times every operation the paper profile's
    chapters need, writes the cost file and a table whose rows are the estimate's."""
    from oracles.remote_code import REMOTE_CODE, needs_remote_code  # noqa: F401

    if not REMOTE_CODE.is_dir():
        pytest.skip(f"genuine LLaDA/Dream remote code not found at {REMOTE_CODE}")
    costs_file, stem = tmp_path / "costs.json", tmp_path / "paper_profile_tiny"
    costs = _bench().main(["--tiny", "--remote-code", str(REMOTE_CODE), "--costs", str(costs_file),
                           "--out", str(stem)])
    assert json.loads(costs_file.read_text()) == costs
    assert set(costs["models"]) == {"LLaDA-8B", "Dream-v0-7B", "Qwen2.5-7B", "Llama-3.1-8B"}
    for m in costs["models"].values():
        assert m["ops"] and all(op["seconds"] > 0 for op in m["ops"].values())
    est = E.estimate(E.profile_parameters("paper", notebooks_dir=REPO / "notebooks"), costs)
    assert not est.missing
    with open(stem.with_suffix(".csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(est.rows)
    assert sum(float(r["gpu_hours"]) for r in rows) == pytest.approx(est.total_hours, rel=1e-4)
    assert "upper bound" in stem.with_suffix(".md").read_text()
