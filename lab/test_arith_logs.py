"""Tests of the lab's arithmetic-log readers (moved from tests/test_perf.py with the readers).

Not part of the product's test suite (``tests/``): run with ``pytest lab/test_arith_logs.py``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # lab/ is a folder of scripts, not a package
import arith_logs  # noqa: E402


def test_arithmetic_learning_reads_sweep_logs(tmp_path: Path) -> None:
    """Curves from arith_sweep logs: tokens = step * batch * seq_len (batch from the line, or from the
    tag for old logs), non-JSON lines ignored; the summary finds the first evaluation at >= 50%."""
    assert arith_logs.arithmetic_learning(tmp_path).empty
    logs = tmp_path / "arith_long"
    logs.mkdir(parents=True)
    base = {"first_digit": 0.5, "last_digit": 0.5, "distinct_answers": 9, "seconds": 1}
    (logs / "sweep_dlm-b128.log").write_text("warning: something\n" + "\n".join(
        json.dumps({"tag": "dlm-b128", "step": s, "exact": e, **base}) for s, e in [(1000, 0.0), (2000, 0.6), (3000, 0.9)]))
    (logs / "sweep_ar.log").write_text(json.dumps(
        {"tag": "ar", "objective": "ar", "batch": 16, "seq_len": 64, "step": 10, "exact": 0.2, **base}))
    curves = arith_logs.arithmetic_learning(tmp_path)
    assert len(curves) == 4
    d = curves[curves["tag"] == "dlm-b128"].set_index("step")
    assert d.loc[2000, "arith_tokens"] == 2000 * 128 * 128 and d.loc[2000, "objective"] == "dlm"
    a = curves[curves["tag"] == "ar"].iloc[0]
    assert (a["batch"], a["seq_len"], a["arith_tokens"]) == (16, 64, 10 * 16 * 64)
    summ = arith_logs.arithmetic_learning_summary(curves).set_index("run")
    assert summ.loc["arith_long/dlm-b128", "tokens_to_50%"] == 2000 * 128 * 128
    assert summ.loc["arith_long/dlm-b128", "best_exact"] == 0.9
    assert math.isnan(summ.loc["arith_long/ar", "tokens_to_50%"])


def test_committed_arithmetic_sweep_shows_ar_learning_first() -> None:
    """The committed H100 logs: ar reaches 50% held-out exact match on fewer arithmetic tokens than any
    diffusion run that reaches it."""
    curves = arith_logs.arithmetic_learning()
    if curves.empty:
        pytest.skip("no committed arith_sweep logs")
    summ = arith_logs.arithmetic_learning_summary(curves)
    ar = summ.loc[summ["objective"] == "ar", "tokens_to_50%"].min()
    dlm = summ.loc[summ["objective"] != "ar", "tokens_to_50%"]
    assert ar < dlm.min()


def test_arithmetic_probe_reads_probe_rows(tmp_path: Path) -> None:
    """arith_probe.py rows: the run from the file name, tokens_seen from the row (or the budget for
    rows written before the field), arithmetic tokens = tokens_seen * arith_frac, and the binomial
    p-value recomputed where absent (4/4 at chance 0.5 -> 1/16)."""
    assert arith_logs.arithmetic_probe(tmp_path).empty
    d = tmp_path / "arith_gpu"
    d.mkdir(parents=True)
    row = {"objective": "dlm", "exact_match": 1.0, "answer_by_likelihood": 0.5, "chance": 0.5, "items": 4,
           "arith_frac": 0.5, "tokens": 1000, "batch_size": 8}
    (d / "arith_gpu_old.json").write_text(json.dumps([row]))
    (d / "arith_gpu_new.json").write_text(json.dumps([{**row, "tokens_seen": 600, "p_above_chance": 0.01},
                                                      {**row, "tokens_seen": 300, "exact_match": 0.25}]))
    t = arith_logs.arithmetic_probe(tmp_path)
    assert list(zip(t["run"], t["tokens_seen"])) == [("new", 300), ("new", 600), ("old", 1000)]
    old = t[t["run"] == "old"].iloc[0]
    assert old["arith_tokens"] == 500 and old["p_above_chance"] == pytest.approx(1 / 16)
    assert t[t["run"] == "new"]["p_above_chance"].iloc[1] == 0.01
    # a file with several objectives (ar, then ar2dlm branched from it): one run per objective;
    # snapshots (model step_<n>) are not final
    (d / "arith_gpu_branch.json").write_text(json.dumps([{**row, "objective": "ar", "model": "step_5"},
                                                         {**row, "objective": "ar", "model": "ar"},
                                                         {**row, "objective": "ar2dlm", "model": "ar2dlm"}]))
    b = arith_logs.arithmetic_probe(tmp_path)
    b = b[b["run"].str.startswith("branch")]
    assert sorted(b["run"]) == ["branch/ar", "branch/ar", "branch/ar2dlm"]
    assert list(b.sort_values("final")["final"]) == [False, True, True]


def test_committed_gpu_probe_dlm_learns_arithmetic_by_diffusion_sampling() -> None:
    """On the H100: the gpu-preset dlm, scored with the diffusion sampler, ends clearly above chance on
    held-out arithmetic (and above its earlier snapshots), as does ar by greedy decoding."""
    t = arith_logs.arithmetic_probe()
    if t.empty:
        pytest.skip("no committed arith_gpu results")
    for o in ("ar", "dlm"):
        best = t[t["objective"] == o].sort_values("exact_match").iloc[-1]
        assert best["exact_match"] > 5 * best["chance"] and best["p_above_chance"] < 1e-6, o
    long = t[t["run"] == "dlm_long"].sort_values("tokens_seen")
    if len(long) > 1:
        assert long["exact_match"].iloc[-1] > long["exact_match"].iloc[0]
