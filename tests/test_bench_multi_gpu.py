"""The multi-GPU benchmark end to end on the CPU: ``bench_multi_gpu.py --tiny --processes 2``.

Two real processes under ``accelerate launch`` evaluate the generation task on a tiny model of LLaDA's
genuine code and must reproduce the one-process run item by item; the local submitit sweep must run
its four jobs and leave every result file where the ledger reads it; the CSV and the Markdown table
are written and read back by :func:`layerwise.perf.multi_gpu_summary`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from layerwise import perf
from layerwise.results import load_results

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench_multi_gpu.py"
REMOTE = REPO.parent / "shared" / "remote_code"
DATA = Path(os.environ.get("LAYERWISE_DATA_DIR") or REPO.parent / "shared" / "data")

pytestmark = [
    pytest.mark.skipif(not (REMOTE / "llada" / "modeling_llada.py").is_file(),
                       reason=f"genuine LLaDA remote code not found at {REMOTE}"),
    pytest.mark.skipif(not (DATA / "corpus" / "gutenberg-heldout-10MB.txt.xz").is_file(),
                       reason=f"held-out corpus not found in {DATA} (layerwise-book data fetch)"),
    pytest.mark.skipif(importlib.util.find_spec("submitit") is None or importlib.util.find_spec("accelerate") is None,
                       reason="needs submitit and accelerate"),
]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("multi_gpu")
    stem, work = tmp / "results" / "multi_gpu_tiny", tmp / "work"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--processes", "2", "--remote-code", str(REMOTE),
                           "--data-dir", str(DATA), "--out", str(stem), "--work", str(work)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {"stem": stem, "work": work, "csv": pd.read_csv(stem.with_suffix(".csv"))}


def _value(df: pd.DataFrame, part: str, measure: str) -> float:
    (v,) = df[(df["part"] == part) & (df["measure"] == measure)]["value"]
    return float(v)


def test_data_parallel_run_equals_the_one_process_run(run):
    df, work = run["csv"], run["work"]
    assert not (df["measure"] == "error").any()
    single = json.loads((work / "items-single.json").read_text())
    merged = json.loads((work / "items-parallel.json").read_text())
    # the merged shards cover every item once, in document order, with the one-process run's answers
    assert [x["doc_id"] for x in merged] == [x["doc_id"] for x in single] == list(range(len(single)))
    assert merged == single
    assert _value(df, "data_parallel", "equal_items") == _value(df, "data_parallel", "total_items") == len(single)
    # the answers are the model's generations, not one constant string
    assert _value(df, "data_parallel", "answered_items") == len(single)
    assert len({json.dumps(x["resps"]) for x in single}) > 1
    # both processes scored their own shard
    assert sorted(p.name for p in (work / "shards").iterdir()) == ["shard-00000-of-00002.pkl",
                                                                   "shard-00001-of-00002.pkl"]
    for m in ("eval_s_1", "eval_s_n", "speedup", "efficiency"):
        assert _value(df, "data_parallel", m) > 0
    assert _value(df, "data_parallel", "efficiency") == pytest.approx(_value(df, "data_parallel", "speedup") / 2,
                                                                      rel=1e-4)


def test_sweep_results_are_where_the_ledger_reads_them(run):
    df, work = run["csv"], run["work"]
    assert _value(df, "sweep", "jobs") == _value(df, "sweep", "results_found") == 4
    merged = load_results("paper", cache=work / "sweep_cache")
    for chapter in ("01_layer_similarity", "02_token_similarity"):
        assert merged[chapter]["jobs"] == ["LLaDA-8B", "Llama-3.1-8B"]
    job_s = df[df["measure"].str.startswith("job_s:")]["value"].astype(float)
    assert len(job_s) == 4 and _value(df, "sweep", "sum_job_s") == pytest.approx(job_s.sum(), rel=1e-3)


def test_files_are_written_and_read_back(run):
    stem, df = run["stem"], run["csv"]
    md = stem.with_suffix(".md").read_text()
    assert "Processes (N): 2" in md and "## Data-parallel evaluation" in md and "## Sweep" in md
    assert set(df["device"]) == {"cpu"} and set(df["n_processes"]) == {2} and df["commit"].notna().all()
    frames = perf.load_benchmarks(stem.parent, tiny=True)
    summary = perf.multi_gpu_summary(frames)
    assert len(summary) == 1 and summary.loc[0, "n_processes"] == 2
    assert summary.loc[0, "equal_items"] == summary.loc[0, "total_items"] == _value(df, "data_parallel", "total_items")
    assert summary.loc[0, "sweep_results_found"] == 4
    assert perf.multi_gpu_summary({}).empty
