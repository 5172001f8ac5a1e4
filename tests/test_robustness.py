"""Training-seed replicates: a chapter run on another training seed's triplet, and the ledger combining it.

``$LAYERWISE_TRAIN_SEED=k`` makes :func:`layerwise.subjects.load_subjects` load (or train) the triplet of
seed k and :func:`layerwise.results.save_result` file the result as ``<chapter>@train_seed-<k>.json``;
:func:`layerwise.results.load_results` files the chapter's own file as seed 0 beside it, and the ledger's
interval then covers the seed-to-seed spread. Uses the ``test`` preset (seconds per model).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from layerwise import claims
from layerwise.book.chapters import run_seed_replicates
from layerwise.config import LayerwiseError
from layerwise.data import eval_sequences
from layerwise.ledger import build_ledger, resolve_entry, seed_replicates, seed_table
from layerwise.probes import layer_similarity
from layerwise.results import RESULT_KEY_ENV, TRAIN_SEED_ENV, load_results, result_key, save_result, train_seed
from layerwise.stats import seed_item_interval
from layerwise.subjects import load_subjects

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # trains the test triplet twice

CHAPTER = claims.LAYER_SIMILARITY
A1 = claims.EARLY_SIMILARITY.minus_ar("dlm")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def no_seed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRAIN_SEED_ENV, raising=False)
    monkeypatch.delenv(RESULT_KEY_ENV, raising=False)


def _similarity_metrics(subjects: dict) -> dict[str, claims.ClaimMetric]:
    """Chapter 01's claim metrics on the test triplet (the same library calls, small sizes)."""
    ids = eval_sequences(subjects["ar"].tokenizer, "test", 12, 24)
    per_seq = {n: layer_similarity(lm, ids, batch_size=12, keep_per_sequence=True).per_sequence
               for n, lm in subjects.items()}
    return claims.layer_similarity_metrics(per_seq, {n: lm.family for n, lm in subjects.items()}, paired=True,
                                           n_boot=300)


def _load(cache: Path) -> dict:
    return load_subjects([], "test", cache_dir=cache, device="cpu", progress=False)


def test_two_training_seeds_widen_the_ledger_interval(cache: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    seed0 = _load(cache)
    m0 = _similarity_metrics(seed0)
    save_result(CHAPTER, profile="t", results_dir=tmp_path, metrics=m0)
    one = load_results("t", results_dir=tmp_path)
    assert resolve_entry(one[CHAPTER]["metrics"], A1)["n_seeds"] == 1
    assert "seed variance not measured" in build_ledger(one).set_index("claim").loc["A1", "summary"]

    monkeypatch.setenv(TRAIN_SEED_ENV, "1")
    seed1 = _load(cache)
    assert Path(seed1["ar"].model.name_or_path).parent.name == "test-seed1"
    w0, w1 = (next(s["ar"].model.parameters()).detach() for s in (seed0, seed1))
    assert not torch.equal(w0, w1)  # another initialisation and data order: another model
    m1 = _similarity_metrics(seed1)
    path = save_result(CHAPTER, profile="t", results_dir=tmp_path, metrics=m1)
    assert path.name == f"{CHAPTER}@train_seed-1.json" and json.loads(path.read_text())["train_seed"] == 1
    assert json.loads((tmp_path / f"{CHAPTER}.json").read_text())["train_seed"] == 0  # seed 0's file untouched

    results = load_results("t", results_dir=tmp_path)
    e = resolve_entry(results[CHAPTER]["metrics"], A1)
    values = [m0[A1].value, m1[A1].value]
    expected = seed_item_interval(values, [m0[A1].ci, m1[A1].ci])
    assert e["n_seeds"] == 2 and e["seed_values"] == pytest.approx(values)
    assert e["ci"] == pytest.approx(list(expected.interval))
    lo, hi = e["ci"]
    assert lo <= min(values) and max(values) <= hi  # covers both seeds...
    assert hi - lo > max(m[A1].ci[1] - m[A1].ci[0] for m in (m0, m1))  # ...and is wider than either item interval
    assert "seed variance not measured" not in build_ledger(results).set_index("claim").loc["A1", "summary"]
    row = seed_table(results).set_index(["claim", "part"]).loc[("A1", "early similarity, DLM - AR")]
    assert row["seeds"] == 2 and float(row["seed SD"]) == pytest.approx(np.std(values, ddof=1), rel=1e-2)
    reps = seed_replicates(results)
    a1 = reps[reps.metric == A1]
    assert list(a1.train_seed) == [0, 1] and list(a1.value) == pytest.approx(values)
    assert list(a1.combined) == pytest.approx([e["value"]] * 2)


def test_run_seed_replicates_runs_a_chapter_on_another_seed(cache: Path, tmp_path: Path) -> None:
    nb = tmp_path / "notebooks"
    (nb / "profiles").mkdir(parents=True)
    (nb / "profiles" / "tiny.yaml").write_text("common: {}\n")
    (nb / "98_seeded.py").write_text(
        '# %% tags=["parameters"]\nprofile = "tiny"\npreset = "test"\nmodels = []\ndata_dir = ""\ncache_dir = ""\n'
        'device = "cpu"\nseed = 0\n\n'
        "# %%\nfrom layerwise.results import metric, save_result\nfrom layerwise.subjects import load_subjects\n"
        "subjects = load_subjects(models, preset, cache_dir=cache_dir, device=device, progress=False)\n"
        "w = float(next(subjects['ar'].model.parameters()).detach().abs().mean())\n"
        "save_result('98_seeded', profile=profile, cache=cache_dir, metrics={'weight': metric(w)},\n"
        "            models={n: lm.model.name_or_path for n, lm in subjects.items()})\n")
    with pytest.raises(LayerwiseError, match="seeds >= 1"):
        run_seed_replicates("tiny", ["98_seeded"], [0], out=tmp_path / "out", notebooks_dir=nb, cache=cache)
    status = run_seed_replicates("tiny", ["98_seeded"], [1], out=tmp_path / "out", notebooks_dir=nb, cache=cache)
    assert status == {1: {"98_seeded": "ran"}}
    assert (tmp_path / "out" / "train_seed-1" / "notebooks" / "98_seeded.ipynb").is_file()
    payload = json.loads((cache / "results" / "tiny" / "98_seeded@train_seed-1.json").read_text())
    assert payload["train_seed"] == 1 and Path(payload["models"]["ar"]).parent.name == "test-seed1"
    assert not (cache / "results" / "tiny" / "98_seeded.json").exists()  # seed 0's own file is not written
    again = run_seed_replicates("tiny", ["98_seeded"], [1], out=tmp_path / "out", notebooks_dir=nb, cache=cache)
    assert again == {1: {"98_seeded": "skipped"}}


def test_training_seed_values_and_result_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    assert train_seed() == 0 and result_key() == ""
    monkeypatch.setenv(TRAIN_SEED_ENV, "2")
    assert train_seed() == 2 and result_key() == "train_seed-2"
    monkeypatch.setenv(RESULT_KEY_ENV, "Qwen2.5-7B")  # a sweep job's key gets the seed as one more part
    assert result_key() == "Qwen2.5-7B__train_seed-2"
    monkeypatch.setenv(RESULT_KEY_ENV, "train_seed-2")  # a sweep already keyed by the seed keeps its key
    assert result_key() == "train_seed-2"
    for bad in ("-1", "one", "1.5"):
        monkeypatch.setenv(TRAIN_SEED_ENV, bad)
        with pytest.raises(LayerwiseError, match="non-negative integer"):
            train_seed()
    monkeypatch.setenv(TRAIN_SEED_ENV, "1")
    with pytest.raises(LayerwiseError, match="triplet only"):  # before anything is downloaded or loaded
        load_subjects(["Qwen/Qwen2.5-7B"])


def test_own_file_is_seed_zero_only_beside_seed_replicates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = claims.ClaimMetric(0.5, (0.4, 0.6))
    save_result(CHAPTER, profile="t", results_dir=tmp_path, metrics={A1: m})
    monkeypatch.setenv(RESULT_KEY_ENV, "model-x")  # a sweep job over models: not a training seed
    save_result(CHAPTER, profile="t", results_dir=tmp_path, metrics={A1: m})
    metrics = load_results("t", results_dir=tmp_path)[CHAPTER]["metrics"]
    assert f"{A1}@train_seed-0" not in metrics and resolve_entry(metrics, A1)["n_seeds"] == 1
    monkeypatch.setenv(TRAIN_SEED_ENV, "3")  # a seed replicate of the same sweep job stays apart from seed 0
    save_result(CHAPTER, profile="t", results_dir=tmp_path, metrics={A1: m})
    assert (tmp_path / f"{CHAPTER}@model-x__train_seed-3.json").is_file()
    metrics = load_results("t", results_dir=tmp_path)[CHAPTER]["metrics"]
    assert f"{A1}@train_seed-0" not in metrics


def test_a_metric_only_a_later_seed_measured_is_not_filed_as_seed_zero(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 0's file lacks a definition that seed 2's file holds (e.g. an ablation site added since):
    the definition rests on seed 2 alone, not on seed 2 counted twice."""
    only_later = claims.definition(A1, "new_definition")
    save_result(CHAPTER, profile="t", results_dir=tmp_path, metrics={A1: claims.ClaimMetric(0.5, (0.4, 0.6))})
    monkeypatch.setenv(TRAIN_SEED_ENV, "2")
    save_result(CHAPTER, profile="t", results_dir=tmp_path, metrics={
        A1: claims.ClaimMetric(0.7, (0.6, 0.8)), only_later: claims.ClaimMetric(0.3, (0.2, 0.4))})
    metrics = load_results("t", results_dir=tmp_path)[CHAPTER]["metrics"]
    assert f"{only_later}@train_seed-0" not in metrics and f"{A1}@train_seed-0" in metrics
    e = resolve_entry(metrics, only_later)
    assert e["n_seeds"] == 1 and e["value"] == pytest.approx(0.3) and e["ci"] == pytest.approx([0.2, 0.4])
    assert resolve_entry(metrics, A1)["n_seeds"] == 2
    merged = load_results("t", results_dir=tmp_path)[CHAPTER]
    assert set(merged["data"]["jobs"]) == {"train_seed-0", "train_seed-2"}
    assert "jobs" not in merged["data"]["jobs"]["train_seed-0"]  # seed 0's data as its file holds it
    json.dumps(merged)  # no circular reference


def test_chapter_10_gathers_the_seeds_result_files_without_training(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`train_seeds: []`: the chapter trains and re-runs nothing; it draws its page from the seeds' result
    files and the competence rows of chapter 00 and of its own earlier run (seeds scored elsewhere)."""
    from layerwise import book
    from layerwise.training import get_preset

    cache = tmp_path / "cache"
    res = cache / "results" / "tiny"
    for k, v in ((0, -0.05), (2, -0.01)):
        monkeypatch.setenv(TRAIN_SEED_ENV, str(k))
        save_result(CHAPTER, profile="tiny", results_dir=res, metrics={A1: claims.ClaimMetric(v, (v - 0.01, v + 0.01))})
    monkeypatch.delenv(TRAIN_SEED_ENV)

    def row(run: str, k: int, em: float) -> dict:
        return {"run": run, "seed": k, "final": True, "exact_match": em, "em_ci_low": em - 0.05,
                "em_ci_high": min(em + 0.05, 1.0), "chance": 0.03, "x_chance": em / 0.03, "bits_per_byte": 2.0,
                "text_task": "lw_gutenberg"}

    runs = ["ar", "dlm", "ar2dlm"]
    h = get_preset("tiny").config_hash()
    save_result("00_pretraining", profile="tiny", results_dir=res, metrics={},
                data={"config_hash": h, "competence": [row(r, 0, 0.9) for r in runs]})
    # seed 2's rows, with a branch run this run does not score (the tiny preset has none): kept, not dropped
    save_result("10_robustness", profile="tiny", results_dir=res, metrics={},
                data={"config_hash": h, "competence": [row(r, 2, 0.6) for r in [*runs, "ar2dlm_b25"]]})
    status = book.run("tiny", chapters=["10_robustness"], out=tmp_path / "out", cache=cache, progress=False,
                      overrides={"train_seeds": [], "rerun": [CHAPTER], "device": "cpu"})
    assert status == {"10_robustness": "ran"}
    data = json.loads((res / "10_robustness.json").read_text())["data"]
    assert sorted((r["seed"], r["run"]) for r in data["competence"]) == sorted(
        [(k, r) for k in (0, 2) for r in runs] + [(2, "ar2dlm_b25")])
    a1 = [r for r in data["replicates"] if r["metric"] == A1]
    assert [r["train_seed"] for r in a1] == [0, 2] and [r["value"] for r in a1] == pytest.approx([-0.05, -0.01])
    assert not (cache / "triplet").exists()  # nothing was trained
    assert not (cache / "runs" / "tiny" / "10_robustness").exists()  # no chapter re-ran on a seed


def test_nested_kernels_stderr_goes_to_a_log_inside_a_notebook(tmp_path: Path) -> None:
    # inside a kernel sys.stderr has no descriptor while a child process inherits descriptor 2: the
    # child's launch log must land in the log file, not on descriptor 2 (which the kernel shows in the page)
    import subprocess
    import sys

    script = (
        "import io, subprocess, sys\n"
        "from pathlib import Path\n"
        "from layerwise.book.chapters import _stderr_to\n"
        "sys.stderr = io.StringIO()\n"  # a kernel's stream: no fileno()
        f"with _stderr_to(Path({str(tmp_path / 'kernels.log')!r})):\n"
        "    subprocess.run([sys.executable, '-c', \"import sys; sys.stderr.write('child notice')\"], check=True)\n"
        "subprocess.run([sys.executable, '-c', \"import sys; sys.stderr.write('after')\"], check=True)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert (tmp_path / "kernels.log").read_text() == "child notice"
    assert done.stderr == "after"  # descriptor 2 is restored afterwards
    # on a terminal (sys.stderr is descriptor 2) nothing is redirected: progress and errors stay visible
    plain = script.replace("sys.stderr = io.StringIO()\n", "")
    done = subprocess.run([sys.executable, "-c", plain], capture_output=True, text=True, check=True)
    assert done.stderr == "child noticeafter"
