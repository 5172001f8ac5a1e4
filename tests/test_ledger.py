"""The ledger's verdicts follow from the numbers by the rule stated in layerwise.ledger: margins from the
papers' wording, pre-registered definitions, training seeds."""

import numpy as np
import pytest

from layerwise import claims
from layerwise.ledger import (
    CLAIMS,
    Part,
    build_ledger,
    combine,
    definition_verdict,
    direction,
    evaluate_part,
    margins_table,
    normalised,
    normalised_table,
    part_verdict,
    resolve_entry,
    seed_table,
    sensitivity_table,
)
from layerwise.results import RESULT_KEY_ENV, TRAIN_SEED_ENV, load_results, metric, save_result
from layerwise.stats import seed_item_interval


def test_the_margin_not_the_null_sets_the_verdict():
    keep = Part("c", "m", ">", 0.9, null=0.5)  # A3's DLM part: keeps > 90%
    assert part_verdict(keep, metric(0.95, (0.92, 0.98))) == "reproduced"
    assert part_verdict(keep, metric(0.87, (0.85, 0.89))) == "not reproduced"  # high, but short of the margin
    assert direction(keep, metric(0.87, (0.85, 0.89))) == "paper's direction, within the margin"
    assert part_verdict(keep, metric(0.9, (0.88, 0.95))) == "inconclusive"
    assert part_verdict(keep, metric(0.9)) == "inconclusive"  # no interval, no verdict
    assert part_verdict(keep, metric(float("nan"), (0.1, 0.2))) == "inconclusive"
    assert part_verdict(keep, None) == "not run"
    v, why = definition_verdict(keep, metric(0.95, (0.9, 1.0), meaningful=False, reason="baseline at chance"))
    assert (v, why) == ("not testable", "baseline at chance")
    collapse = Part("c", "m", "<", 0.5, null=0.9)  # A3's AR part
    assert part_verdict(collapse, metric(0.3, (0.2, 0.4))) == "reproduced"
    assert part_verdict(collapse, metric(0.6, (0.55, 0.7))) == "not reproduced"
    assert normalised(collapse, metric(0.5, (0.5, 0.9))) == pytest.approx((1.0, 0.0, 1.0))  # bound 1, null 0


def test_a_scaled_margin_reads_the_scale_saved_with_the_metric():
    higher = Part("c", "m", ">", 0.25, scaled=True)
    assert part_verdict(higher, metric(0.07, (0.05, 0.09), margin_scale=0.4)) == "not reproduced"  # > 0, < 0.1
    assert part_verdict(higher, metric(0.15, (0.11, 0.2), margin_scale=0.4)) == "reproduced"
    assert definition_verdict(higher, metric(0.15, (0.11, 0.2)))[1].startswith("the margin's scale was not saved")
    assert higher.margin_text(metric(0.15, (0.11, 0.2), margin_scale=0.4)) == "> 0.25 x 0.4 = 0.1"
    lower = Part("c", "m", "<", -0.1, scaled=True)  # B3: at least 10% below the AR model's alpha
    assert part_verdict(lower, metric(-0.5, (-0.6, -0.4), margin_scale=3.0)) == "reproduced"
    assert part_verdict(lower, metric(-0.2, (-0.25, -0.15), margin_scale=3.0)) == "not reproduced"


def _a1_block0_only(L: int = 12, n: int = 16) -> dict:
    """Chapter 01 metrics where the DLM is above AR only at block 0 and below it in the other early blocks."""
    rng = np.random.default_rng(0)
    ar = 0.8 + 0.01 * rng.standard_normal((n, L))
    dlm = ar.copy()
    dlm[:, 0] += 0.5
    dlm[:, 1:4] -= 0.05
    return claims.layer_similarity_metrics({"ar": ar, "dlm": dlm}, {"ar": "ar", "dlm": "dlm"}, paired=True,
                                           n_boot=200)


def test_a_claim_that_rests_on_block_0_depends_on_the_definition():
    ms = claims.to_result_metrics(_a1_block0_only())
    part = CLAIMS[0].parts[0]
    r = evaluate_part(part, ms)
    by_label = {d.label: d.verdict for d in r.definitions}
    assert by_label == {claims.WITH_BLOCK0: "reproduced", claims.WITHOUT_BLOCK0: "not reproduced"}
    assert r.verdict == "depends on definition"
    results = {claims.LAYER_SIMILARITY: {"profile": "t", "metrics": ms}}
    row = build_ledger(results).set_index("claim").loc["A1"]
    assert row["verdict"] == "depends on definition"
    assert "reproduced: with_block0" in row["summary"] and "not reproduced: without_block0" in row["summary"]
    assert "seed variance not measured" in row["summary"]
    wide = sensitivity_table(results, wide=True).set_index("claim")
    assert wide.loc["A1", "definition 1"].startswith("early similarity, DLM - AR / with_block0")
    assert "opposite direction" in wide.loc["A1", "definition 2"]


def test_definitions_not_testable_are_left_out_and_missing_ones_listed():
    part = Part("c", "m", ">", 0.9, null=0.5, definitions=("early:*", "redundant:*"))
    ms = {"m": metric(0.95, (0.92, 0.98)),
          claims.definition("m", "early:gsm8k"): metric(0.95, (0.92, 0.98)),
          claims.definition("m", "early:math"): metric(0.5, (0.2, 0.9), meaningful=False, reason="at chance")}
    r = evaluate_part(part, ms)
    assert [(d.label, d.verdict) for d in r.definitions] == [
        ("early:gsm8k", "reproduced"), ("early:math", "not testable"), ("redundant:*", "not run")]
    assert r.verdict == "reproduced"
    assert evaluate_part(part, {"m": metric(0.95, (0.92, 0.98))}).verdict == "reproduced"  # headline alone
    assert evaluate_part(part, {claims.definition("m", "early:x"): metric(0.95, (0.92, 0.98))}).verdict == "not run"


def test_a_headline_saved_only_under_its_plain_name_counts_as_its_definition():
    part = Part("c", "m", ">", 0.2, definitions=("attn_input/*", "residual/*"))  # B2's ablation sites
    ms = {"m": metric(0.5, (0.4, 0.6), label="attn_input/attn_input"),
          claims.definition("m", "residual/residual"): metric(0.0, (-0.1, 0.1))}
    r = evaluate_part(part, ms)
    assert [(d.label, d.name, d.verdict) for d in r.definitions] == [
        ("attn_input/attn_input", "m", "reproduced"), ("residual/residual", "m::residual/residual", "not reproduced")]
    assert r.verdict == "depends on definition"
    looping = {"m": metric(0.5, (0.4, 0.6), meaningful=False, reason="only 2 prompts do not loop")}
    assert evaluate_part(part, looping).verdict == "not testable"


def test_a_claim_about_every_stage_fails_on_one_stage():
    """A8 reads its stages as components: the late stage alone on the other side decides, while the same
    numbers read as alternative definitions would leave the part inconclusive."""
    stages = {"m": metric(0.19, (0.06, 0.36)),  # the headline: the lowest stage
              claims.definition("m", "stage:early"): metric(0.86, (0.75, 0.97)),
              claims.definition("m", "stage:middle"): metric(0.97, (0.80, 1.17)),
              claims.definition("m", "stage:late"): metric(0.19, (0.06, 0.36))}
    every = Part("c", "m", ">", 0.9, null=0.5, definitions=("stage:*",), components=True)
    assert evaluate_part(every, stages).verdict == "not reproduced"
    assert evaluate_part(Part("c", "m", ">", 0.9, null=0.5, definitions=("stage:*",)), stages).verdict == \
        "inconclusive"
    held = {k: metric(0.97, (0.93, 0.99)) for k in stages}
    assert evaluate_part(every, held).verdict == "reproduced"
    held[claims.definition("m", "stage:middle")] = metric(0.92, (0.85, 0.99))
    assert evaluate_part(every, held).verdict == "inconclusive"
    a8 = next(c for c in CLAIMS if c.cid == "A8").parts[0]
    assert a8.components and a8.definitions == ("stage:*",)


def test_combine_parts():
    assert combine(["reproduced", "reproduced"]) == "reproduced"
    assert combine(["reproduced", "not reproduced"]) == "not reproduced"
    assert combine(["depends on definition", "not reproduced"]) == "not reproduced"
    assert combine(["reproduced", "depends on definition"]) == "depends on definition"
    assert combine(["reproduced", "not testable"]) == "not testable"
    assert combine(["reproduced", "inconclusive"]) == "inconclusive"
    assert combine(["reproduced", "not run"]) == "not run"


def test_training_seeds_widen_the_interval(tmp_path, monkeypatch):
    per_seed = {0: claims.ClaimMetric(0.95, (0.91, 0.99)), 1: claims.ClaimMetric(0.80, (0.75, 0.85))}
    combined = claims.over_seeds(per_seed)
    expected = seed_item_interval([0.95, 0.80], [(0.91, 0.99), (0.75, 0.85)])
    assert combined.value == pytest.approx(0.875) and combined.ci == pytest.approx(expected.interval)
    assert [s["value"] for s in combined.extra["seeds"]] == [0.95, 0.80]
    # the same two seeds as sweep jobs keyed by training seed: the ledger combines them itself
    name = claims.RETENTION_AT_TARGET.of("dlm")
    for key, m in zip(["preset-gpu", "preset-gpu-seed1"], per_seed.values()):
        monkeypatch.setenv(RESULT_KEY_ENV, key)
        save_result(claims.LAYER_SKIPPING, profile="t", results_dir=tmp_path, metrics={name: m})
    for key in ("seed-0", "seed-1"):  # the chapter's evaluation seed is not a training seed
        monkeypatch.setenv(RESULT_KEY_ENV, key)
        save_result(claims.LAYER_SKIPPING, profile="t", results_dir=tmp_path, metrics={name: per_seed[0]})
    monkeypatch.delenv(RESULT_KEY_ENV)
    results = load_results("t", results_dir=tmp_path)
    e = resolve_entry(results[claims.LAYER_SKIPPING]["metrics"], name)
    assert e["n_seeds"] == 2 and e["ci"] == pytest.approx(list(expected.interval))
    assert e["seed_values"] == pytest.approx([0.95, 0.80])
    seeds = seed_table(results).set_index(["claim", "part"]).loc[("A3", "DLM retention")]
    assert seeds["seeds"] == 2 and float(seeds["seed SD"]) == pytest.approx(np.std([0.95, 0.8], ddof=1), abs=1e-3)
    # one seed alone would pass the margin; over both seeds the interval straddles it
    assert part_verdict(CLAIMS[2].parts[0], per_seed[0].to_metric()) == "reproduced"
    assert part_verdict(CLAIMS[2].parts[0], e) == "inconclusive" and e["ci"][0] < 0.9 < e["ci"][1]


def test_a_seed_the_design_cannot_test_is_left_out_of_the_seed_combination(tmp_path, monkeypatch):
    """B2 on three seeds, the first of which loops before any ablation: the two testable seeds decide;
    with no testable seed the part is not testable."""
    name = claims.REPETITION_INCREASE.of("dlm")
    looping = claims.ClaimMetric(-0.05, (-0.2, 0.1), meaningful=False, reason="only 1 of 128 prompts do not loop")
    testable = {1: claims.ClaimMetric(0.55, (0.45, 0.65)), 2: claims.ClaimMetric(0.60, (0.50, 0.70))}
    save_result(claims.OUTLIER_ABLATION, profile="t", results_dir=tmp_path, metrics={name: looping})
    for k, m in testable.items():
        monkeypatch.setenv(TRAIN_SEED_ENV, str(k))
        save_result(claims.OUTLIER_ABLATION, profile="t", results_dir=tmp_path, metrics={name: m})
    monkeypatch.delenv(TRAIN_SEED_ENV)
    results = load_results("t", results_dir=tmp_path)
    e = resolve_entry(results[claims.OUTLIER_ABLATION]["metrics"], name)
    expected = seed_item_interval([0.55, 0.60], [(0.45, 0.65), (0.50, 0.70)])
    assert e["meaningful"] and e["n_seeds"] == 2 and e["seeds_excluded"] == [0] and e["seed_ids"] == [1, 2]
    assert e["value"] == pytest.approx(0.575) and e["ci"] == pytest.approx(list(expected.interval))
    row = build_ledger(results).set_index("claim").loc["B2"]
    assert "2 seeds testable of 3; seed 0 left out as not testable" in row["summary"]
    assert "left out as not testable" in seed_table(results).set_index("claim").loc["B2", "note"]
    # one testable seed: its own item interval, no seed variance
    (tmp_path / f"{claims.OUTLIER_ABLATION}@train_seed-2.json").unlink()
    e = resolve_entry(load_results("t", results_dir=tmp_path)[claims.OUTLIER_ABLATION]["metrics"], name)
    assert e["n_seeds"] == 1 and e["ci"] == pytest.approx([0.45, 0.65]) and e["seeds_excluded"] == [0]
    # no testable seed: not testable, with the chapter's reason
    monkeypatch.setenv(TRAIN_SEED_ENV, "1")
    save_result(claims.OUTLIER_ABLATION, profile="t", results_dir=tmp_path, metrics={name: looping})
    monkeypatch.delenv(TRAIN_SEED_ENV)
    e = resolve_entry(load_results("t", results_dir=tmp_path)[claims.OUTLIER_ABLATION]["metrics"], name)
    assert e["meaningful"] is False and "do not loop" in e["reason"] and "seeds_excluded" not in e
    assert part_verdict(next(c for c in CLAIMS if c.cid == "B2").parts[0], e) == "not testable"


def test_build_ledger_from_result_files(tmp_path):
    save_result("03_layer_skipping", profile="test", results_dir=tmp_path, metrics={
        "retention_at_18.75pct_dlm": metric(0.95, (0.92, 0.98), model="dlm"),
        "retention_at_18.75pct_ar": metric(0.30, (0.20, 0.40), model="ar"),
    })
    df = build_ledger(load_results("test", results_dir=tmp_path))
    assert list(df["claim"]) == [c.cid for c in CLAIMS]
    row = df.set_index("claim").loc["A3"]
    assert row["verdict"] == "reproduced"
    assert row["models"] == "dlm, ar" and row["profile"] == "test"
    assert row["margin (paper's side)"] == "> 0.9; < 0.5"
    assert "DLM retention = 0.95 [0.92, 0.98]" in row["summary"] and "beyond the margin" in row["summary"]
    assert "Definitions not run for DLM retention: early:*, redundant:*" in row["summary"]
    assert df.set_index("claim").loc["B3", "verdict"] == "not run"
    # the figure's shared scale: 0 = no effect, 1 = the bound, the paper's value on the same scale
    norm = normalised_table(load_results("test", results_dir=tmp_path)).set_index(["claim", "part", "definition"])
    dlm = norm.loc[("A3", "DLM retention", "headline")]
    assert (dlm.x, dlm.x_low, dlm.x_high) == pytest.approx(((0.95 - 0.5) / 0.4, (0.92 - 0.5) / 0.4, (0.98 - 0.5) / 0.4))
    assert dlm.paper_x == pytest.approx((0.95 - 0.5) / 0.4) and dlm.verdict == dlm.part_verdict == "reproduced"
    assert norm.loc[("A3", "AR retention", "headline")].x == pytest.approx((0.30 - 0.9) / (0.5 - 0.9))
    assert np.isnan(norm.loc[("B3", "early alpha-Hill, DLM - AR", "headline")].x)  # not run: no marker
    margins = margins_table().set_index(["claim", "part"])
    assert margins.loc[("B4", "3-bit GPTQ change, DLM - AR (points)"), "paper's value"] == "62.9"
    assert margins.loc[("A1", "early similarity, DLM - AR"), "paper's side"] == "> 0.25 x scale"
    # glob patterns as code, so that markdown does not read their stars as emphasis
    assert margins.loc[("A3", "DLM retention"), "definitions"] == "`early:*`, `redundant:*`"


def test_every_part_documents_its_margin():
    for c in CLAIMS:
        for p in c.parts:
            assert p.margin_why and p.label, (c.cid, p.metric)
            assert (p.bound > p.null) == (p.side == ">"), (c.cid, p.metric)  # the bound lies on the paper's side
            if p.paper_value is not None:  # the paper's own number passes its own margin
                assert part_verdict(p, metric(p.paper_value, (p.paper_value, p.paper_value))) == "reproduced"


def test_part_sentence_names_the_no_effect_value_an_interval_reaches():
    from layerwise.ledger import PartResult, _part_sentence

    keep = Part("c", "m", ">", 0.9, null=0.5, label="DLM retention")
    e = metric(0.32, (0.16, 0.55))
    r = PartResult(keep, e, part_verdict(keep, e), [])
    assert _part_sentence(r).endswith("the whole interval short of the margin, and it includes 0.5, "
                                      "this part's no-effect value")
    e = metric(0.7, (0.6, 0.8))  # in the paper's direction from 0.5, short of 0.9
    assert _part_sentence(PartResult(keep, e, part_verdict(keep, e), [])).endswith(
        "in the paper's direction but the whole interval short of the margin")
