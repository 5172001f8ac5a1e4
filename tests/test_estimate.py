"""The cost estimate of a profile: units follow each chapter's plan (a parameter changed changes them
accordingly), the dry run prints it per chapter with the total, models without measured costs have no
estimate, and the tiny benchmark measures unit costs end to end on CPU."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import pytest

from layerwise.book import cli
from layerwise.book import estimate as E
from layerwise.skipping import select_layers

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks" / "bench_paper_profile.py"
OPS = ("layer_similarity", "token_similarity", "channel_stats", "diffusion_step", "dream_step", "ar_prefill",
       "ar_token", "mc_batch", "ar_loglik", "alpha_hill_block", "compress_block:gptq", "compress_block:rtn",
       "compress_block:magnitude", "compress_block:wanda", "compress_block:sparsegpt")


def _bench():
    spec = importlib.util.spec_from_file_location("bench_paper_profile", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def paper():
    """The paper profile's resolved parameters per chapter."""
    return E.profile_parameters("paper", notebooks_dir=REPO / "notebooks")


def _costs(layers: int = 32) -> dict:
    """A cost file whose every operation costs one second per unit at the shape it names: the estimate's
    seconds are then its unit counts (scaled by tokens where the shape differs)."""
    shape = {"batch": 8, "seq_len": 1024, "calib_seqs": 128, "calib_len": 2048}
    ops = {op: {"seconds": 1.0, **shape} for op in OPS}
    models = {key: {"ids": m["ids"], "family": m["family"], "layers": layers, "build_s": 1.0, "ops": ops}
              for key, m in _bench().MODELS.items()}
    return {"device": "test device", "models": models}


def _units(est: E.Estimate, chapter: str, model: str, *words: str) -> int:
    return sum(r.units for r in est.rows if r.chapter == chapter and r.model == model
               and all(w in r.unit for w in words))

LLADA_BASE, LLADA_INSTRUCT = "GSAI-ML/LLaDA-8B-Base", "GSAI-ML/LLaDA-8B-Instruct"
QWEN, LLAMA_INSTRUCT = "Qwen/Qwen2.5-7B", "meta-llama/Llama-3.1-8B-Instruct"


def test_chapter_03_configurations_come_from_select_layers():
    """Distinct skip sets: one per k for a contiguous strategy, coinciding strategies counted once,
    ``redundant`` (decided by measured influences) one per k on top, random draws add sets."""
    L, k = 32, 6
    assert E.skip_configurations(["early"], k, L, random_draws=3) == list(range(1, k + 1))
    assert E.skip_configurations(["early", "early"], k, L, random_draws=3) == list(range(1, k + 1))
    both = E.skip_configurations(["early", "redundant"], k, L, random_draws=3)
    assert both == sorted([*range(1, k + 1), *range(1, k + 1)])
    one = len(E.skip_configurations(["random"], k, L, random_draws=1))
    three = len(E.skip_configurations(["random"], k, L, random_draws=3))
    distinct = {tuple(select_layers("random", j, L, seed=d)) for d in range(3) for j in range(1, k + 1)}
    assert one == k < three == len(distinct)


def test_units_follow_the_chapters_parameters(paper):
    costs = _costs()
    ch = "03_layer_skipping"
    p = {**paper[ch], "strategies": ["early"], "max_skip": 6, "limit": 10 * paper[ch]["batch_size"]}  # whole batches
    est = E.estimate({ch: p}, costs)
    units = _units(est, ch, LLADA_INSTRUCT, p["generation_task"])
    assert units == (1 + 6) * math.ceil(p["limit"] / p["batch_size"]) * p["diffusion_steps"]
    assert _units(E.estimate({ch: {**p, "limit": 2 * p["limit"]}}, costs), ch, LLADA_INSTRUCT,
                  p["generation_task"]) == 2 * units
    assert _units(E.estimate({ch: {**p, "max_skip": 3}}, costs), ch, LLADA_INSTRUCT,
                  p["generation_task"]) == units * (1 + 3) // (1 + 6)
    # a skip configuration runs fewer blocks: its seconds per unit are lower than the unmodified model's
    gsm = [r for r in est.rows if r.model == LLADA_INSTRUCT and p["generation_task"] in r.unit]
    prompt = E.prompt_tokens(p["generation_task"], p["num_fewshot"][p["generation_task"]])
    full = p["batch_size"] * (prompt + p["gen_length"]) / (8 * 1024)  # the cost file's 1 s at 8 x 1024 tokens
    assert 0 < gsm[0].s_per_unit < full

    # likelihood tasks: one Monte-Carlo batch of mc_samples copies per request (ARC: one request per choice)
    lik = {**p, "likelihood_tasks": ["lw_arc_easy"], "mc_target_se": 0.0}
    arc = [r for r in E.estimate({ch: lik}, costs).rows if r.model == LLADA_INSTRUCT and "lw_arc_easy" in r.unit]
    assert arc[0].units == (1 + 6) * p["limit"] * 4
    double = [r for r in E.estimate({ch: {**lik, "mc_samples": 2 * p["mc_samples"]}}, costs).rows
              if r.model == LLADA_INSTRUCT and "lw_arc_easy" in r.unit]
    assert double[0].gpu_hours == pytest.approx(2 * arc[0].gpu_hours)
    # with a target standard error: batches of 16 copies, up to mc_samples of them per request
    target = [r for r in E.estimate({ch: {**lik, "mc_target_se": 0.1}}, costs).rows
              if r.model == LLADA_INSTRUCT and "lw_arc_easy" in r.unit]
    assert target[0].units == arc[0].units * math.ceil(p["mc_samples"] / E.MC_TARGET_BATCH)

    ch = "01_layer_similarity"
    p = paper[ch]
    est = E.estimate({ch: p}, costs)
    batches = math.ceil(p["n_seqs"] / p["batch_size"])
    assert _units(est, ch, LLADA_BASE, "probe") == batches * len(p["mask_ratios"])  # diffusion: every mask ratio
    assert _units(est, ch, QWEN, "probe") == batches  # AR: clean text only

    ch = "05_outlier_ablation"
    p = paper[ch]
    n_cond, n_head = E.ablation_conditions(p, 32)
    per_target = 2 * (1 + p["n_draws"])  # the outlier and its controls, in the early blocks and in all
    assert n_cond == 1 + len(p["sites"]) * len(p["definitions"]) * per_target
    assert n_head == per_target
    more = E.estimate({ch: {**p, "n_draws": p["n_draws"] + 1}}, costs)
    base = E.estimate({ch: p}, costs)
    llama = "meta-llama/Llama-3.1-8B"
    # one more control draw: one more condition per (site, definition, scope), on every arithmetic item
    per_condition = math.ceil(p["arith_items"] / p["batch_size"]) * p["answer_tokens"]  # AR decoding steps
    assert _units(more, ch, llama, "arithmetic", "decoding") - _units(base, ch, llama, "arithmetic", "decoding") == \
        len(p["sites"]) * len(p["definitions"]) * 2 * per_condition

    ch = "07_compression"
    p = {**paper[ch], "quant_methods": ["gptq", "rtn"]}
    base = E.estimate({ch: p}, costs)
    no_rtn = E.estimate({ch: {**p, "quant_methods": ["gptq"]}}, costs)
    evals = math.ceil(p["limit"] / p["batch_size"]) * p["gen_length"]
    assert _units(base, ch, LLAMA_INSTRUCT, "decoding") - _units(no_rtn, ch, LLAMA_INSTRUCT, "decoding") == \
        len(p["bits"]) * evals
    assert not [r for r in no_rtn.rows if r.unit.startswith("rtn")]
    assert no_rtn.total_hours < base.total_hours


def test_unknown_models_have_no_estimate(paper):
    ch = "01_layer_similarity"
    est = E.estimate({ch: {**paper[ch], "models": ["someone/other-7B", LLADA_BASE]}}, _costs())
    assert {r.model for r in est.rows} == {LLADA_BASE}
    assert est.missing == [(ch, "someone/other-7B", "no measured costs for this model")]
    assert "other-7B: no estimate (no measured costs for this model)" in E.describe_estimate(est)
    assert not E.has_estimate({ch: {**paper[ch], "models": ["someone/other-7B"]}}, _costs())
    # a chapter whose units the estimate does not count says so; the ledger and tables run no model
    est = E.estimate({"99_new_chapter": {"models": [LLADA_BASE]}, "08_claims_ledger": {"models": [LLADA_BASE]}},
                     _costs())
    assert not est.rows and [(c, m) for c, m, _ in est.missing] == [("99_new_chapter", LLADA_BASE)]


def test_dry_run_prints_the_estimate_per_chapter_and_total(tmp_path, monkeypatch, capsys, paper):
    costs = tmp_path / "costs.json"
    costs.write_text(json.dumps(_costs()))
    monkeypatch.setattr(E, "cost_path", lambda tiny=False: costs)
    args = ["run", "--dry-run", "--cache-dir", str(tmp_path / "cache"), "-p", f"data_dir={tmp_path}"]
    assert cli.main([*args, "--profile", "paper"]) == 0
    out = capsys.readouterr().out
    est = E.estimate(paper, _costs())
    assert "estimated GPU time on test device" in out
    for chapter, hours in est.by_chapter().items():
        assert f"  {chapter}: {hours:.2f} GPU-h (" in out
    assert f"  total: {est.total_hours:.2f} GPU-h" in out
    assert cli.main([*args, "--profile", "tiny"]) == 0  # the triplet: no model with measured costs
    assert "estimated GPU time" not in capsys.readouterr().out


def test_a_real_run_starts_with_the_estimate(tmp_path, monkeypatch, capsys, paper):
    from layerwise.book import runner

    costs = tmp_path / "costs.json"
    costs.write_text(json.dumps(_costs()))
    monkeypatch.setattr(E, "cost_path", lambda tiny=False: costs)
    monkeypatch.setattr(runner, "execute", lambda plan, profile, **kw: 0.0)  # nothing is executed
    ch = "01_layer_similarity"
    runner.run("paper", chapters=[ch], overrides={"data_dir": str(tmp_path)}, out=tmp_path / "out",
               notebooks_dir=REPO / "notebooks", cache=tmp_path / "cache", progress=False)
    first = capsys.readouterr().out.splitlines()[0]
    assert first == E.one_line(E.estimate({ch: paper[ch]}, _costs()))
    assert first.startswith("estimated ") and "GPU-hours on test device" in first


@pytest.mark.slow
def test_tiny_benchmark_end_to_end(tmp_path, paper):
    """--tiny builds the four models' tiny versions on CPU, times every operation the paper profile's
    chapters need, and writes the cost file and a table whose rows are the estimate's."""
    from oracles.remote_code import REMOTE_CODE

    if not REMOTE_CODE.is_dir():
        pytest.skip(f"genuine LLaDA/Dream remote code not found at {REMOTE_CODE}")
    costs_file, stem = tmp_path / "costs.json", tmp_path / "paper_profile_tiny"
    costs = _bench().main(["--tiny", "--remote-code", str(REMOTE_CODE), "--costs", str(costs_file),
                           "--out", str(stem)])
    assert json.loads(costs_file.read_text()) == costs
    assert set(costs["models"]) == set(_bench().MODELS)
    for m in costs["models"].values():
        assert m["ops"] and all(op["seconds"] > 0 for op in m["ops"].values())
    est = E.estimate(paper, costs)
    assert not est.missing
    with open(stem.with_suffix(".csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(est.rows)
    assert sum(float(r["gpu_hours"]) for r in rows) == pytest.approx(est.total_hours, rel=1e-4)
    assert "upper bound" in stem.with_suffix(".md").read_text()


def test_book_page_shows_the_estimate_of_the_committed_costs(paper):
    """book/run_on_gpu.md's table is the estimate of the paper profile from the package's cost file, and
    the profile's plan fits 24 GPU-hours on the measured GPU."""
    if not E.cost_path().is_file():
        pytest.skip(f"no measured cost file at {E.cost_path()}: run benchmarks/bench_paper_profile.py on a GPU")
    costs = E.load_costs()
    est = E.estimate(paper, costs)
    page = (REPO / "book" / "run_on_gpu.md").read_text()
    assert E.page_section(est, costs) in page, "refresh it: python benchmarks/bench_paper_profile.py --render"
    assert not est.missing
    assert est.total_hours <= 24
