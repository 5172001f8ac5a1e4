"""layerwise.perf: the targets table reads the committed benchmark CSVs, cell for cell."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from layerwise import perf
from layerwise.config import LayerwiseError

RESULTS = perf.default_results_dir()
NEEDED = ["training.csv", "probes.csv", "sampling.csv", "bench_skipping.csv", "bench_skipping_evals.csv",
          "bench_gptq.csv"]
committed = pytest.mark.skipif(not all((RESULTS / f).is_file() for f in NEEDED),
                               reason="committed benchmark results missing from benchmarks/results")


def _by_id(table: pd.DataFrame) -> dict[str, pd.Series]:
    return {r["target_id"]: r for _, r in table.iterrows()}


@committed
def test_targets_table_equals_csv_cells() -> None:
    table = perf.targets_table(RESULTS)
    rows = _by_id(table)
    training = pd.read_csv(RESULTS / "training.csv")
    probes = pd.read_csv(RESULTS / "probes.csv")
    sampling = pd.read_csv(RESULTS / "sampling.csv")
    skipping = pd.read_csv(RESULTS / "bench_skipping.csv")
    evals = pd.read_csv(RESULTS / "bench_skipping_evals.csv")
    gptq = pd.read_csv(RESULTS / "bench_gptq.csv")

    assert rows["training"]["measured"] == training["mfu"].max()
    assert rows["training"]["device"] == training["device"].iloc[0]
    probe = probes[probes["pass"].str.startswith("probe pass")]["mfu_vs_measured_peak"].iloc[0]
    assert rows["probe"]["measured"] == probe
    assert rows["sampler"]["measured"] == sampling["fast_samples_per_s"].max() / sampling["ref_samples_per_s"].max()
    for shape, g in skipping[skipping["k"] > 0].groupby("shape"):
        assert rows[f"skipping_{shape}"]["measured"] == g["vs_ideal"].min()
    for _, e in evals.iterrows():
        r = rows[f"evals_{e['family']}"]
        assert r["measured"] == e["evaluations_per_minute"] and r["status"] == "reported" and pd.isna(r["met"])
    assert rows["gptq_time"]["measured"] == gptq["total_s_extrapolated"].iloc[0] / 60
    assert rows["gptq_memory"]["measured"] == gptq["peak_GB"].iloc[0]
    mem = probes[probes["part"] == "memory"].sort_values("tokens")
    assert rows["channel_memory"]["measured"] == mem["peak_gib"].iloc[-1] / mem["peak_gib"].iloc[0]

    # one row per target (per shape / family where there are several), met follows from the numbers
    assert set(table["key"]) == {t.key for t in perf.TARGETS}
    assert len(rows) == len(perf.TARGETS) - 2 + skipping["shape"].nunique() + len(evals)
    for _, r in table.iterrows():
        if r["comparison"] == ">=":
            assert bool(r["met"]) == (r["measured"] >= r["target"] * (1 - perf.TARGETS_BY_KEY[r["key"]].rtol))
        if r["comparison"] == "<=":
            assert bool(r["met"]) == (r["measured"] <= r["target"] * (1 + perf.TARGETS_BY_KEY[r["key"]].rtol))
        if r["comparison"] != "report":
            assert r["status"] == ("met" if r["met"] else "not met")
        assert r["device"], f"{r['target_id']} has no device"
        assert r["source"].endswith(".csv") or ".csv," in r["source"]
        assert r["measured_over_target"] == pytest.approx(r["measured"] / r["target"]) or r["comparison"] == "report"


def test_empty_dir_marks_everything_not_run(tmp_path: Path) -> None:
    table = perf.targets_table(tmp_path)
    assert len(table) >= len(perf.TARGETS)
    assert (table["status"] == "not run").all()
    assert table["measured"].isna().all() and table["met"].isna().all()
    assert set(table["key"]) == {t.key for t in perf.TARGETS}
    assert perf.load_benchmarks(tmp_path) == {}
    assert not perf.benchmark_info(tmp_path)["ran"].any()


@committed
def test_one_missing_file_only_affects_its_rows(tmp_path: Path) -> None:
    for f in RESULTS.glob("*"):
        if f.is_file() and f.name != "sampling.csv":
            shutil.copy2(f, tmp_path / f.name)
    full, part = _by_id(perf.targets_table(RESULTS)), _by_id(perf.targets_table(tmp_path))
    assert part["sampler"]["status"] == "not run" and math.isnan(part["sampler"]["measured"])
    for k in full:
        if k != "sampler":
            assert part[k]["measured"] == full[k]["measured"] or (
                math.isnan(part[k]["measured"]) and math.isnan(full[k]["measured"]))


def test_rules_on_crafted_results(tmp_path: Path) -> None:
    """Tokens that differ void the sampler's speed-up; GPTQ over its budget is 'not met'."""
    pd.DataFrame({"device": ["X"] * 2, "batch": [1, 8], "prompt": [9, 9], "gen_length": [4, 4], "steps": [4, 4],
                  "block_length": [2, 2], "fast_samples_per_s": [3.0, 4.0], "fast_s_per_sample": [1 / 3, 1 / 4],
                  "ref_samples_per_s": [1.0, 2.0], "ref_s_per_sample": [1.0, 0.5],
                  "identical_tokens": [True, False], "speedup": [3.0, 2.0]}).to_csv(tmp_path / "sampling.csv",
                                                                                    index=False)
    pd.DataFrame({"device": ["X"], "params_B": [8.0], "bits": [4], "calib_tokens": ["128x2048"],
                  "layers_measured": [32], "layers_total": [32], "mean_block_s": [40.0],
                  "total_s_extrapolated": [1280.0], "total_is_extrapolated": [False], "weights_GB": [15.0],
                  "peak_GB": [41.0]}).to_csv(tmp_path / "bench_gptq.csv", index=False)
    rows = _by_id(perf.targets_table(tmp_path))
    assert rows["sampler"]["status"] == "no value" and "TOKENS DIFFER" in rows["sampler"]["note"]
    assert rows["gptq_time"]["measured"] == 1280.0 / 60 and rows["gptq_time"]["status"] == "not met"
    assert rows["gptq_memory"]["measured"] == 41.0 and not rows["gptq_memory"]["met"]
    assert rows["gptq_time"]["device"] == "X"
    assert rows["training"]["status"] == "not run"


def test_smoke_runs_and_errors(tmp_path: Path) -> None:
    if not (RESULTS / "training_tiny.csv").is_file():
        pytest.skip("no CPU smoke results committed")
    rows = _by_id(perf.targets_table(RESULTS, tiny=True))
    tiny = pd.read_csv(RESULTS / "training_tiny.csv")
    assert tiny["mfu"].isna().all() and rows["training"]["status"] == "no value"
    assert rows["gptq_time"]["measured"] == pd.read_csv(RESULTS / "bench_gptq_tiny.csv")["total_s_extrapolated"][0] / 60
    with pytest.raises(LayerwiseError, match="does not exist"):
        perf.targets_table(tmp_path / "nowhere")


@committed
def test_sampler_flop_count_matches_the_probe_benchmark() -> None:
    """The FLOP count behind the sampler analysis (block_flops on the .md's shape, meta device) is the one
    bench_probes.py used: FLOPs of its timed pass = tflop_per_s x seconds."""
    probes = pd.read_csv(RESULTS / "probes.csv")
    fwd = probes[probes["part"] == "throughput"].iloc[0]
    blocks, _head = perf._shape_flops((RESULTS / "probes.md").read_text(), int(fwd["seq_len"]))
    n_seqs = fwd["tokens"] / fwd["seq_len"]
    assert blocks * n_seqs == pytest.approx(fwd["tflop_per_s"] * 1e12 * fwd["seconds"], rel=1e-9)
    frames = perf.load_benchmarks(RESULTS)
    sf = perf.sampler_flops(frames, RESULTS)
    s = pd.read_csv(RESULTS / "sampling.csv")
    assert list(sf["batch"]) == list(s["batch"])
    # the reference computes at least what the fast sampler does; both below the measured peak
    ok = sf.dropna(subset=["ref_tflop_per_s"])
    assert (ok["ref_mfu_vs_measured"] < 1).all() and (sf["fast_mfu_vs_measured"] < 1).all()
    assert (sf["floor_s_per_sample"] < sf["fast_s_per_sample"]).all()


def test_results_markdown_demotes_headings(tmp_path: Path) -> None:
    (tmp_path / "probes.md").write_text("# Title\n\n## (a) part\n\n| a |\n|---|\n| 1 |\n")
    md = perf.results_markdown("probes", tmp_path)
    assert "**Title**" in md and "**(a) part**" in md and not any(line.startswith("#") for line in md.splitlines())
    assert perf.results_markdown("sampling", tmp_path) == ""


def test_arithmetic_learning_reads_sweep_logs(tmp_path: Path) -> None:
    """Curves from arith_sweep logs: tokens = step * batch * seq_len (batch from the line, or from the
    tag for old logs), non-JSON lines ignored; the summary finds the first evaluation at >= 50%."""
    import json

    assert perf.arithmetic_learning(tmp_path).empty
    logs = tmp_path / "logs" / "arith_long"
    logs.mkdir(parents=True)
    base = {"first_digit": 0.5, "last_digit": 0.5, "distinct_answers": 9, "seconds": 1}
    (logs / "sweep_dlm-b128.log").write_text("warning: something\n" + "\n".join(
        json.dumps({"tag": "dlm-b128", "step": s, "exact": e, **base}) for s, e in [(1000, 0.0), (2000, 0.6), (3000, 0.9)]))
    (logs / "sweep_ar.log").write_text(json.dumps(
        {"tag": "ar", "objective": "ar", "batch": 16, "seq_len": 64, "step": 10, "exact": 0.2, **base}))
    curves = perf.arithmetic_learning(tmp_path)
    assert len(curves) == 4
    d = curves[curves["tag"] == "dlm-b128"].set_index("step")
    assert d.loc[2000, "arith_tokens"] == 2000 * 128 * 128 and d.loc[2000, "objective"] == "dlm"
    a = curves[curves["tag"] == "ar"].iloc[0]
    assert (a["batch"], a["seq_len"], a["arith_tokens"]) == (16, 64, 10 * 16 * 64)
    summ = perf.arithmetic_learning_summary(curves).set_index("run")
    assert summ.loc["arith_long/dlm-b128", "tokens_to_50%"] == 2000 * 128 * 128
    assert summ.loc["arith_long/dlm-b128", "best_exact"] == 0.9
    assert math.isnan(summ.loc["arith_long/ar", "tokens_to_50%"])


def test_committed_arithmetic_sweep_shows_ar_learning_first() -> None:
    """The committed H100 logs: ar reaches 50% held-out exact match on fewer arithmetic tokens than any
    diffusion run that reaches it (the result chapter 09 reports)."""
    curves = perf.arithmetic_learning()
    if curves.empty:
        pytest.skip("no committed arith_sweep logs")
    summ = perf.arithmetic_learning_summary(curves)
    ar = summ.loc[summ["objective"] == "ar", "tokens_to_50%"].min()
    dlm = summ.loc[summ["objective"] != "ar", "tokens_to_50%"]
    assert ar < dlm.min()


def test_arithmetic_probe_reads_probe_rows(tmp_path: Path) -> None:
    """arith_probe.py rows: the run from the file name, tokens_seen from the row (or the budget for
    rows written before the field), arithmetic tokens = tokens_seen * arith_frac, and the binomial
    p-value recomputed where absent (4/4 at chance 0.5 -> 1/16)."""
    import json

    assert perf.arithmetic_probe(tmp_path).empty
    d = tmp_path / "logs" / "arith_gpu"
    d.mkdir(parents=True)
    row = {"objective": "dlm", "exact_match": 1.0, "answer_by_likelihood": 0.5, "chance": 0.5, "items": 4,
           "arith_frac": 0.5, "tokens": 1000, "batch_size": 8}
    (d / "arith_gpu_old.json").write_text(json.dumps([row]))
    (d / "arith_gpu_new.json").write_text(json.dumps([{**row, "tokens_seen": 600, "p_above_chance": 0.01},
                                                      {**row, "tokens_seen": 300, "exact_match": 0.25}]))
    t = perf.arithmetic_probe(tmp_path)
    assert list(zip(t["run"], t["tokens_seen"])) == [("new", 300), ("new", 600), ("old", 1000)]
    old = t[t["run"] == "old"].iloc[0]
    assert old["arith_tokens"] == 500 and old["p_above_chance"] == pytest.approx(1 / 16)
    assert t[t["run"] == "new"]["p_above_chance"].iloc[1] == 0.01
    # a file with several objectives (ar, then ar2dlm branched from it): one run per objective;
    # snapshots (model step_<n>) are not final
    (d / "arith_gpu_branch.json").write_text(json.dumps([{**row, "objective": "ar", "model": "step_5"},
                                                         {**row, "objective": "ar", "model": "ar"},
                                                         {**row, "objective": "ar2dlm", "model": "ar2dlm"}]))
    b = perf.arithmetic_probe(tmp_path)
    b = b[b["run"].str.startswith("branch")]
    assert sorted(b["run"]) == ["branch/ar", "branch/ar", "branch/ar2dlm"]
    assert list(b.sort_values("final")["final"]) == [False, True, True]


def test_committed_gpu_probe_dlm_learns_arithmetic_by_diffusion_sampling() -> None:
    """Issue 3 on the H100: the gpu-preset dlm, scored with the diffusion sampler, ends clearly above
    chance on held-out arithmetic (and above its earlier snapshots), as does ar by greedy decoding."""
    t = perf.arithmetic_probe()
    if t.empty:
        pytest.skip("no committed arith_gpu results")
    for o in ("ar", "dlm"):
        best = t[t["objective"] == o].sort_values("exact_match").iloc[-1]
        assert best["exact_match"] > 5 * best["chance"] and best["p_above_chance"] < 1e-6, o
    long = t[t["run"] == "dlm_long"].sort_values("tokens_seen")
    if len(long) > 1:
        assert long["exact_match"].iloc[-1] > long["exact_match"].iloc[0]


def test_training_mfu_leaves_out_plain_compile_rows(tmp_path: Path) -> None:
    """`bench_training.py --compile all` adds plain-torch.compile rows (the before of the SDPA mask fix):
    the MFU table and the target use only the configurations training runs."""
    pd.DataFrame({"device": ["X"] * 3, "objective": ["dlm"] * 3, "compile": [False, True, True],
                  "sdpa_mask_skip": [False, False, True], "gflops_per_token": [0.3] * 3,
                  "tokens_per_s": [1e5, 9e5, 6e5], "mfu": [0.1, 0.9, 0.2], "step_s": [1.0] * 3,
                  "peak_mem_gib": [1.0] * 3}).to_csv(tmp_path / "training.csv", index=False)
    tm = perf.training_mfu(perf.load_benchmarks(tmp_path))
    assert list(zip(tm["compile"], tm["mfu"])) == [(False, 0.1), (True, 0.2)]
    assert _by_id(perf.targets_table(tmp_path))["training"]["measured"] == 0.2
