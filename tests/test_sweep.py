"""Sweeps through submitit: the local executor runs a small tiny-profile sweep end to end.

The chapter is the runner's dummy chapter (tests/data/99_dummy.py) plus a cell that writes a result
file, swept over two values of a parameter: every job's executed notebook must be where the build
reads a run's notebooks (``<out>/notebooks`` of its folder), every job's result file must exist under
its own key, and the ledger's loader must merge them into the chapter's entry.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from layerwise import book
from layerwise.config import LayerwiseError
from layerwise.results import load_results
from layerwise.sweep import SweepSettings, plan_sweep, run_sweep

pytest.importorskip("submitit")

RESULT_CELL = '''
# %%
from layerwise.results import metric, save_result

save_result("99_dummy", profile=profile, metrics={"dummy_sum": metric(float(x.sum()))},
            data={"n_points": n_points}, cache=cache_dir or None)
'''


@pytest.fixture
def notebooks(dummy_notebooks: Path, tmp_path: Path) -> Path:
    """A copy of the dummy chapter (with a result cell) and its profiles."""
    nb = tmp_path / "notebooks"
    shutil.copytree(dummy_notebooks / "profiles", nb / "profiles")
    (nb / "99_dummy.py").write_text((dummy_notebooks / "99_dummy.py").read_text() + RESULT_CELL)
    return nb


def test_local_executor_runs_a_sweep_end_to_end(notebooks, tmp_path):
    settings = SweepSettings(profile="tiny", notebooks_dir=str(notebooks), cache=str(tmp_path / "cache"))
    out = tmp_path / "out"
    jobs = plan_sweep(settings, ["99"], grid={"n_points": [3, 6]}, overrides={"data_dir": str(tmp_path)}, out=out)
    assert [j.name for j in jobs] == ["99_dummy__n_points-3", "99_dummy__n_points-6"]
    submitted = run_sweep(jobs, settings, folder=tmp_path / "logs", cluster="local", max_parallel=2, timeout_min=5)
    assert len(submitted) == 2  # two lanes of the local executor, one job each
    reports = [r for job in submitted for r in job.result()]
    assert sorted(r["status"] for r in reports) == ["ran", "ran"]
    for n in (3, 6):
        nb_path = out / "sweep" / f"99_dummy__n_points-{n}" / "notebooks" / "99_dummy.ipynb"
        assert str(nb_path) in {r["notebook"] for r in reports}
        nb = nbformat.read(str(nb_path), as_version=4)
        text = "\n".join(c.get("text", "") for cell in nb.cells if cell.cell_type == "code" for c in cell.outputs)
        assert f"n_points = {n}, sum = {float(sum(range(n))):.3f}" in text
        result = tmp_path / "cache" / "results" / "tiny" / f"99_dummy@n_points-{n}.json"
        payload = json.loads(result.read_text())
        assert payload["metrics"]["dummy_sum"]["value"] == float(sum(range(n))) and payload["job"] == f"n_points-{n}"
    # the ledger's loader: one entry for the chapter, every job's metric under its key
    merged = load_results("tiny", cache=tmp_path / "cache")["99_dummy"]
    assert merged["jobs"] == ["n_points-3", "n_points-6"]
    assert merged["metrics"]["dummy_sum@n_points-3"]["value"] == 3.0
    assert merged["metrics"]["dummy_sum@n_points-6"]["value"] == 15.0
    assert merged["metrics"]["dummy_sum"]["value"] == 3.0
    assert merged["data"]["jobs"]["n_points-6"] == {"n_points": 6}


def test_dry_run_lists_jobs_and_runs_nothing(notebooks, tmp_path, capsys):
    rc = book.main(["sweep", "--notebooks", str(notebooks), "--out", str(tmp_path / "out"), "--chapters", "99_dummy",
                    "--models", "a/m1", "b/m2", "-g", "n_points=[2, 3]", "-p", f"data_dir={tmp_path}",
                    "--cache-dir", str(tmp_path / "cache"), "--dry-run"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "4 job(s), profile tiny:" in printed
    for name in ("99_dummy__m1__n_points-2", "99_dummy__m1__n_points-3", "99_dummy__m2__n_points-2",
                 "99_dummy__m2__n_points-3"):
        assert f"  {name}: 99_dummy" in printed
    assert '-p models=["b/m2"]' in printed
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache" / "results").exists()


def test_single_job_chapters_write_where_a_plain_run_does(notebooks, tmp_path):
    settings = SweepSettings(profile="tiny", notebooks_dir=str(notebooks), cache=str(tmp_path / "cache"))
    (job,) = plan_sweep(settings, ["99_dummy"], overrides={"data_dir": str(tmp_path)}, out=tmp_path / "out")
    assert Path(job.out) == (tmp_path / "out").resolve() and job.key == ""
    with pytest.raises(LayerwiseError, match="non-empty list"):
        plan_sweep(settings, ["99_dummy"], grid={"n_points": 3}, out=tmp_path / "out")
    with pytest.raises(LayerwiseError, match="is not an integer"):
        plan_sweep(settings, ["99_dummy"], grid={"n_points": ["many"]}, overrides={"data_dir": str(tmp_path)},
                   out=tmp_path / "out")
    with pytest.raises(LayerwiseError, match="matches nothing"):
        plan_sweep(settings, ["42"], out=tmp_path / "out")
