"""layerwise.perf: the targets table reads the committed benchmark CSVs, cell for cell.

The committed results are read from the checkout (``benchmarks/results``): the library takes the folder as
an argument.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from layerwise import perf
from layerwise.config import LayerwiseError

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
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
    wide = pd.read_csv(RESULTS / "training_wide.csv")
    assert rows["training_wide"]["measured"] == wide["mfu"].max()
    design = pd.read_csv(RESULTS / "triplet_design.csv")
    assert rows["training_triplet_design"]["measured"] == design[design["final"]]["mfu"].max()
    assert rows["training_triplet_design"]["device"] == design["device"].iloc[0]
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
    n_training = len(perf.TARGETS_BY_KEY["training"].labels)
    assert len(rows) == len(perf.TARGETS) - 3 + n_training + skipping["shape"].nunique() + len(evals)
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


def test_targets_state_their_requirement(tmp_path: Path) -> None:
    """Every target says in words what it asks for, and its bound appears in that sentence."""
    table = perf.targets_table(tmp_path)
    assert "requirement" in table and "issue" not in table
    for t in perf.TARGETS:
        assert t.requirement and len(t.requirement) > 30, t.key
        if t.comparison != "report":
            bound = f"{t.target:.0%}" if t.unit.startswith("fraction") else f"{t.target:g}"
            assert bound in t.requirement, (t.key, bound)
    assert set(table["requirement"]) == {t.requirement for t in perf.TARGETS}


def test_results_dir_is_required() -> None:
    """No default folder: an empty path names the fix."""
    with pytest.raises(LayerwiseError, match="benchmarks/results"):
        perf.load_benchmarks("")


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


def _copy_results(tmp_path: Path, leave_out: tuple[str, ...] = ()) -> Path:
    for f in RESULTS.iterdir():
        if f.is_file() and f.name not in leave_out:
            shutil.copy(f, tmp_path / f.name)
    return tmp_path


def _generate_py_candidates() -> pd.DataFrame:
    """Every (file, batch, sampler option) of the two committed generate.py comparisons, straight from the CSVs."""
    rows = []
    for stem in ("llada_reference", "llada_reference_options"):
        df = pd.read_csv(RESULTS / f"{stem}.csv")
        for _, r in df.iterrows():
            for col in df.columns:
                if not col.endswith("_s_per_sample") or col == "ref_s_per_sample" or pd.isna(r[col]):
                    continue
                prefix = col[: -len("_s_per_sample")]
                eq = r["tokens_equal"] if prefix == "lw" else r[f"{prefix}_tokens_equal"]
                rows.append({"stem": stem, "batch": r["batch"], "prefix": prefix, "s": r[col],
                             "ratio": r[col] / r["ref_s_per_sample"], "identical": eq == r["tokens_total"]})
    return pd.DataFrame(rows)


@committed
def test_generate_py_target_reads_the_genuine_comparison(tmp_path: Path) -> None:
    """The sampler-vs-generate.py row is the best token-identical time ratio at equal batch over both
    committed comparisons; an option whose tokens differ is never chosen, and with none left the row has
    no value."""
    cand = _generate_py_candidates()
    best = cand[cand["identical"]]["ratio"].min()
    row = perf.targets_table(RESULTS).set_index("target_id").loc["sampler_generate_py"]
    assert row["measured"] == pytest.approx(best)
    assert "llada_reference.csv, llada_reference_options.csv" == row["source"]
    # the batch-1 reading: the fastest run over generate.py's batch-1 time, with the token counts of the CSV
    ref = pd.read_csv(RESULTS / "llada_reference.csv")
    opts = pd.read_csv(RESULTS / "llada_reference_options.csv")
    ref1 = ref.loc[ref["batch"] == 1, "ref_s_per_sample"].iloc[0]
    fastest = cand.loc[cand["s"].idxmin()]
    assert f"takes {fastest['s'] / ref1:.2f}x its time" in row["note"]
    o = opts.iloc[0]
    if fastest["stem"] == "llada_reference_options":
        eq = f"{int(o[fastest['prefix'] + '_vs_ref_b1_tokens_equal'])}/{int(o['batch1_tokens_total'])} equal"
        assert eq in row["note"]
        assert f"own batch-{int(o['batch'])} output: {int(o['ref_vs_ref_b1_tokens_equal'])}/" in row["note"]

    # tokens of the best option differ -> the next best token-identical one is read
    winner = cand[cand["identical"]].loc[cand[cand["identical"]]["ratio"].idxmin()]
    _copy_results(tmp_path)
    df = pd.read_csv(RESULTS / f"{winner['stem']}.csv")
    col = "tokens_equal" if winner["prefix"] == "lw" else f"{winner['prefix']}_tokens_equal"
    df.loc[df["batch"] == winner["batch"], col] -= 1
    df.to_csv(tmp_path / f"{winner['stem']}.csv", index=False)
    rest = cand[cand["identical"] & ~((cand["stem"] == winner["stem"]) & (cand["batch"] == winner["batch"])
                                       & (cand["prefix"] == winner["prefix"]))]
    row = perf.targets_table(tmp_path).set_index("target_id").loc["sampler_generate_py"]
    assert row["measured"] == pytest.approx(rest["ratio"].min()) and row["measured"] > best

    # no token-identical option at all -> no value
    for stem in ("llada_reference", "llada_reference_options"):
        df = pd.read_csv(RESULTS / f"{stem}.csv")
        for c in [c for c in df.columns if c == "tokens_equal" or (c.endswith("_tokens_equal") and "_vs_" not in c)]:
            df[c] = df["tokens_total"] - 1
        df.to_csv(tmp_path / f"{stem}.csv", index=False)
    row = perf.targets_table(tmp_path).set_index("target_id").loc["sampler_generate_py"]
    assert row["status"] == "no value" and row["note"].startswith("TOKENS DIFFER")


@committed
def test_training_target_per_width_and_why_narrow_falls_short(tmp_path: Path) -> None:
    """The training target has a row per measured width; the gpu preset's design run, below the bound,
    says why with the wider shapes' MFU; a missing file only marks its own row not run."""
    rows = _by_id(perf.targets_table(RESULTS))
    design = rows["training_triplet_design"]
    d_model = json.loads(re.search(r"Preset fields: `(\{.*?\})`",
                                   (RESULTS / "triplet_design.md").read_text()).group(1))["d_model"]
    assert f"d_model {d_model}" in design["note"]
    wide = pd.read_csv(RESULTS / "training_wide.csv")
    if design["status"] == "not met":
        assert "not reachable at this width" in design["note"]
        assert f"{wide['mfu'].max():.1%} at d_model {int(wide['d_model'].iloc[0])}" in design["note"]
    tbw = perf.training_by_width(perf.load_benchmarks(RESULTS))
    assert set(tbw["source"]) == {"training", "training_wide", "triplet_design"}
    assert (tbw[tbw["source"] == "triplet_design"]["d_model"] == d_model).all()

    part = _by_id(perf.targets_table(_copy_results(tmp_path, leave_out=("training_wide.csv",))))
    assert part["training_wide"]["status"] == "not run"
    assert part["training"]["measured"] == rows["training"]["measured"]
    assert part["training_triplet_design"]["measured"] == design["measured"]


def test_new_benchmarks_are_listed_and_missing_gpu_results_are_not_run(tmp_path: Path) -> None:
    """The design run, Monte-Carlo SE, sampler options and paper-profile results are read when present;
    an absent GPU file (the paper profile before its run) is a 'not run' row, not an error."""
    for name in ("triplet_design", "mc_se", "llada_reference_options", "paper_profile"):
        assert name in perf.RESULT_FILES
    for tiny in (False, True):
        info = perf.benchmark_info(RESULTS, tiny=tiny).set_index("benchmark")
        frames = perf.load_benchmarks(RESULTS, tiny=tiny)
        for name in ("triplet_design", "mc_se", "llada_reference_options", "paper_profile"):
            csv = RESULTS / info.loc[name, "csv"]
            assert bool(info.loc[name, "ran"]) == csv.is_file() == (name in frames)
            if csv.is_file():
                assert info.loc[name, "rows"] == len(pd.read_csv(csv))
                assert info.loc[name, "device"] != "unknown", name
                assert info.loc[name, "command"].startswith("python benchmarks/"), name
    _copy_results(tmp_path, leave_out=("paper_profile.csv", "paper_profile.md"))
    info = perf.benchmark_info(tmp_path).set_index("benchmark")
    assert not info.loc["paper_profile", "ran"] and info.loc["paper_profile", "rows"] == 0
    assert perf.results_markdown("paper_profile", tmp_path) == ""
