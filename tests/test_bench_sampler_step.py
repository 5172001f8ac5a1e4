"""The sampler-step benchmark end to end on a small random model: both unmasking choices give the same
tokens, and the batched one issues fewer operations per step once a batch has several rows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def test_bench_sampler_step_same_tokens_fewer_operations(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_sampler_step", REPO / "benchmarks" / "bench_sampler_step.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "step"
    df = mod.main(["--d", "64", "--layers", "2", "--vocab", "512", "--prompt", "8", "--gen", "16", "--block", "8",
                   "--batches", "1", "16", "--repeats", "3", "--out", str(out)])
    assert df.same_tokens.all()
    one, many = df.set_index("batch").loc[1], df.set_index("batch").loc[16]
    assert one.batched_ops_per_step <= one.row_by_row_ops_per_step + 2  # one row: the same few operations
    assert many.batched_ops_per_step < many.row_by_row_ops_per_step - 15 * 2  # a few operations per extra row
    md = Path(f"{out}.md").read_text()
    assert pd.read_csv(f"{out}.csv").shape[0] == 2 and "same_tokens" in md and "median of 3 timed run(s)" in md
