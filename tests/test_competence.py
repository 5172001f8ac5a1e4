"""The competence report on the ``test`` triplet (with an extra branch point at 25%): exact match with
Wilson intervals and chance, bits per byte by each model's own likelihood, tokens per parameter,
training speed from the logs, stored rows re-used, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from layerwise import stats
from layerwise import training as T
from layerwise.config import LayerwiseError
from layerwise.models import META_FILE, load
from layerwise.training import competence as C

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
PRESET = T.get_preset("test", branch_fracs=(0.25,))
SETTINGS = C.CompetenceSettings(arith_items=8, text_passages=2, text_chars=200, mc_samples=2, batch_size=8)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def runs(cache: Path) -> dict[str, Path]:
    return T.ensure_triplet(PRESET, cache_dir=cache, device="cpu", progress=False, objectives=T.run_names(PRESET))


@pytest.fixture(scope="module")
def report(runs: dict[str, Path], cache: Path):
    folders = C.model_folders(runs["ar"]) + [runs["dlm"], runs["ar2dlm_b25"]]
    return C.competence_report(folders, SETTINGS, device="cpu", cache_dir=cache)


def _meta(p: Path) -> dict:
    return json.loads((p / META_FILE).read_text())


def test_model_folders_are_the_snapshots_then_the_final_model(runs: dict[str, Path]) -> None:
    got = C.model_folders(runs["ar"])
    steps = [s for s in PRESET.snapshot_steps() if s != PRESET.total_steps]
    assert got == [runs["ar"] / "snapshots" / f"step_{s}" for s in steps] + [runs["ar"]]
    assert C.model_folders(runs["ar2dlm_b25"], snapshots=False) == [runs["ar2dlm_b25"]]
    # a save interrupted by a kill leaves step_<n>.tmp behind: not a model
    (runs["ar"] / "snapshots" / f"step_{steps[0]}.tmp").mkdir()
    try:
        assert C.model_folders(runs["ar"]) == got
    finally:
        (runs["ar"] / "snapshots" / f"step_{steps[0]}.tmp").rmdir()
    assert all(C.run_of(f) == runs["ar"] for f in got)


def test_rows_hold_the_measurements(report, runs: dict[str, Path]) -> None:
    assert list(report["model"]) == [f"ar@{s}" for s in PRESET.snapshot_steps()] + \
        [f"dlm@{PRESET.total_steps}", f"ar2dlm_b25@{PRESET.total_steps}"]
    assert list(report["final"]) == [False] * (len(PRESET.snapshot_steps()) - 1) + [True] * 3
    lm = load(str(runs["ar"]), device="cpu")
    nonemb = T.n_params(lm.model)
    for r in report.itertuples():
        # tokens per non-embedding parameter (input embedding out, LM head in)
        assert r.params_nonembedding == nonemb and r.tokens_per_param == pytest.approx(r.tokens_seen / nonemb)
        # exact match with its Wilson interval, chance and multiple of chance
        k = round(r.exact_match * r.arith_items)
        assert r.arith_items == SETTINGS.arith_items
        assert (r.em_ci_low, r.em_ci_high) == pytest.approx(stats.wilson_interval(k, r.arith_items))
        assert 0 < r.chance <= 1 and r.x_chance == pytest.approx(r.exact_match / r.chance)
        assert np.isfinite(r.bits_per_byte) and r.bits_per_byte > 0 and r.text_task == "lw_stories"
    ar, diff = report[report.objective == "ar"], report[report.objective != "ar"]
    assert set(ar.bpb_kind) == {"exact"} and set(ar.sampler) == {"greedy"}
    assert set(diff.bpb_kind) == {"ELBO bound (2 MC samples)"} and set(diff.sampler) == {"masked diffusion"}
    # training lowers the ar model's held-out bits per byte from its first snapshot to the end
    assert ar.bits_per_byte.iloc[-1] < ar.bits_per_byte.iloc[0] - 0.1
    b25 = report[report.run == "ar2dlm_b25"].iloc[0]
    assert b25.branch_frac == 0.25 and b25.own_tokens < b25.tokens_seen


def test_training_speed_comes_from_the_log_up_to_the_model(runs: dict[str, Path]) -> None:
    log = T.read_log(runs["ar"])
    full = C.training_speed(runs["ar"])
    assert full["tokens_per_s"] == pytest.approx(float(np.median([r["tokens_per_s"] for r in log[1:]])))
    per_step = PRESET.batch_size * PRESET.seq_len
    steps = [r["step"] for r in log]
    secs = [(b - a) * per_step / r["tokens_per_s"] for a, b, r in zip([0] + steps[:-1], steps, log, strict=True)]
    assert full["train_s"] == pytest.approx(sum(secs))
    assert full["mfu"] is None  # trained on the CPU: no MFU
    early = C.training_speed(runs["ar"] / "snapshots" / f"step_{PRESET.snapshot_steps()[0]}")
    assert 0 < early["train_s"] < full["train_s"]


def test_stored_rows_are_reused_for_the_same_settings_only(report, runs: dict[str, Path], cache: Path) -> None:
    again = C.score_model(runs["dlm"], SETTINGS, device="cpu", cache_dir=cache)
    first = report[report.run == "dlm"].iloc[0].to_dict()
    assert again.pop("reused") is True and first.pop("reused") is False
    keys = ["model", "exact_match", "em_ci_low", "chance", "bits_per_byte", "tokens_per_s", "train_s"]
    assert {k: again[k] for k in keys} == {k: first[k] for k in keys}
    other = C.score_model(runs["dlm"], C.CompetenceSettings(**{**SETTINGS.__dict__, "arith_items": 4}),
                          device="cpu", cache_dir=cache)
    assert other["reused"] is False and other["arith_items"] == 4


def test_targets_table_checks_final_models(report) -> None:
    t = C.meets_targets(report, min_exact_match=0.0, min_x_chance=0.0, min_tokens_per_param=1.0)
    assert list(t.run) == ["ar", "dlm", "ar2dlm_b25"] and t.em_ok.all() and t.x_chance_ok.all()
    assert list(t.tokens_ok) == list(t.tokens_per_param >= 1.0)
    strict = C.meets_targets(report, min_exact_match=1.01)
    assert not strict.em_ok.any()


def test_errors_name_the_fix(tmp_path: Path, runs: dict[str, Path]) -> None:
    with pytest.raises(LayerwiseError, match="not a triplet model folder"):
        C.score_model(tmp_path, SETTINGS, device="cpu")
    with pytest.raises(LayerwiseError, match="list of model folders"):
        C.competence_report(str(runs["ar"]), SETTINGS)
    with pytest.raises(LayerwiseError, match="arith_items"):
        C.score_model(runs["ar"], C.CompetenceSettings(arith_items=0), device="cpu")


def _bench():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_triplet_design.py"
    spec = importlib.util.spec_from_file_location("bench_triplet_design", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_design_run_writes_its_tables_and_resumes(tmp_path: Path) -> None:
    import pandas as pd

    bench = _bench()
    out = tmp_path / "out" / "design"
    argv = ["--preset", "test", "--runs", "ar,ar2dlm_b25", "--arith-items", "4", "--text-passages", "1",
            "--text-chars", "200", "--mc-samples", "2", "--eval-batch", "4", "--device", "cpu",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    first = bench.main(argv)
    p = T.get_preset("test", branch_fracs=(0.25,))
    b25 = [s for s in p.snapshot_steps() if s > p.step_at(0.25)]
    assert list(first["model"]) == [f"ar@{s}" for s in p.snapshot_steps()] + [f"ar2dlm_b25@{s}" for s in b25]
    tl = pd.read_csv(out.with_name("design_timeline.csv"))
    assert list(tl.phase) == ["data"] + ["train"] * 2 + ["eval"] * len(first)
    assert not tl.cached.any()
    csv = pd.read_csv(out.with_suffix(".csv"))
    assert list(csv.model) == list(first.model) and "## Targets (final models)" in out.with_suffix(".md").read_text()
    # run again: nothing is trained or scored twice, and the numbers are the stored ones
    second = bench.main(argv)
    tl2 = pd.read_csv(out.with_name("design_timeline.csv"))
    assert tl2[tl2.phase != "data"].cached.all()
    pd.testing.assert_series_equal(second.exact_match, first.exact_match)
    pd.testing.assert_series_equal(second.bits_per_byte, first.bits_per_byte)


def test_earlier_seed_rows_only_from_the_same_preset_configuration() -> None:
    from layerwise.training.competence import earlier_seed_rows

    rows = [{"run": r, "seed": k, "final": True, "exact_match": 0.5} for k in (1, 2) for r in ("ar", "dlm")]
    rows.append({"run": "dlm", "seed": 1, "final": False, "exact_match": 0.1})  # a snapshot: not a final model
    results = {"10_robustness": {"data": {"config_hash": "abc", "competence": rows}}}
    got = earlier_seed_rows(results, config_hash="abc", runs=["ar", "dlm"], skip_seeds=[0, 2])
    assert sorted(zip(got.run, got.seed)) == [("ar", 1), ("dlm", 1)]  # seed 2 is scored by this run
    assert earlier_seed_rows(results, config_hash="other", runs=["ar"], skip_seeds=[0]).empty
    assert earlier_seed_rows({}, config_hash="abc", runs=["ar"], skip_seeds=[0]).empty
    # a file that recorded no configuration counts when chapter 00's result in the same folder is of this one
    legacy = {"10_robustness": {"data": {"competence": rows}}, "00_pretraining": {"data": {"config_hash": "abc"}}}
    assert len(earlier_seed_rows(legacy, config_hash="abc", runs=["dlm"], skip_seeds=[0])) == 2
    assert earlier_seed_rows(legacy, config_hash="new", runs=["dlm"], skip_seeds=[0]).empty
