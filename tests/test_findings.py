"""Each chapter's findings paragraph on constructed results: the verdict it states for every claim is the
ledger's, in words (supports / goes against / inconclusive / not testable), with the chapter's numbers
and, where a metric is flagged not meaningful, the chapter's reason; the intro's summary of results is
the ledger's table, written between markers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from layerwise import claims as C
from layerwise import findings as F
from layerwise.claims import ClaimMetric
from layerwise.config import LayerwiseError
from layerwise.ledger import build_ledger

REPO = Path(__file__).resolve().parents[1]
CASES = ("supports", "against", "inconclusive", "not testable")
EXPECTED = {"supports": "reproduced", "against": "not reproduced", "inconclusive": "inconclusive",
            "not testable": "not testable"}
WHY = "the unmodified model is not above chance on this task"


def _m(case: str, good: float, bad: float, *, scale: float = 0.01, model: str = "dlm - ar") -> ClaimMetric:
    """A metric far on the paper's side (``good``), far on the other (``bad``), straddling everything, or
    flagged not meaningful; ``scale`` is the saved margin scale (small: the margin is not what is tested)."""
    extra = {"margin_scale": scale}
    if case == "supports":
        return ClaimMetric(good, (good - abs(good) / 100, good + abs(good) / 100), model=model, extra=extra)
    if case == "against":
        return ClaimMetric(bad, (bad - abs(bad) / 100, bad + abs(bad) / 100), model=model, extra=extra)
    if case == "inconclusive":
        return ClaimMetric((good + bad) / 2, (-1000.0, 1000.0), model=model, extra=extra)
    return ClaimMetric(None, meaningful=False, model=model, reason=WHY, extra=extra)


def _layer_similarity(case: str) -> dict:
    per = {C.EARLY_SIMILARITY.of(n): ClaimMetric(v, (v - 0.01, v + 0.01), model=n)
           for n, v in (("ar", 0.7), ("dlm", 0.8), ("ar2dlm", 0.72))}
    return {**per, C.EARLY_SIMILARITY.minus_ar("dlm"): _m(case, 0.5, -0.5),
            C.AR2DLM_CLOSER_TO_AR: _m(case, 0.5, -0.5, model="ar2dlm")}


def _token_similarity(case: str) -> dict:
    per = {C.RECENCY.of(n): ClaimMetric(v, (v - 0.01, v + 0.01), model=n) for n, v in (("ar", 0.2), ("dlm", 0.05))}
    return {**per, C.RECENCY.minus_ar("dlm"): _m(case, -0.5, 0.5)}


def _layer_skipping(case: str) -> dict:
    dlm = _m(case, 0.99, 0.1, model="dlm")
    ar = _m(case, 0.1, 0.99, model="ar")
    extra = {"k": 2, "layers": 12}
    dlm, ar = (ClaimMetric(m.value, m.ci, m.meaningful, m.model, reason=m.reason, extra=extra) for m in (dlm, ar))
    return {C.RETENTION_AT_TARGET.per_model("dlm"): dlm, C.RETENTION_AT_TARGET.per_model("ar"): ar,
            C.RETENTION_AT_TARGET.of("dlm"): dlm, C.RETENTION_AT_TARGET.of("ar"): ar}


def _super_outlier(case: str) -> dict:
    dlm = _m(case, 3.0, -1.0, model="dlm")
    return {C.EARLY_OUTLIER_RATIO.per_model("dlm"): dlm, C.EARLY_OUTLIER_RATIO.of("dlm"): dlm,
            C.EARLY_OUTLIER_RATIO.per_model("ar"): ClaimMetric(0.5, (0.45, 0.55), model="ar"),
            C.SUPER_OUTLIER_CHANNEL.per_model("dlm"): ClaimMetric(347, model="dlm", note="dominant in 4 of 4 blocks"),
            C.EARLY_OUTLIER_RATIO.minus_ar("dlm"): _m(case, 2.0, -2.0)}


def _outlier_ablation(case: str) -> dict:
    m = _m(case, 0.6, -0.3, model="dlm")
    return {C.REPETITION_INCREASE.per_model("dlm", "early"): m, C.REPETITION_INCREASE.of("dlm"): m}


def _alpha_hill(case: str) -> dict:
    return {C.EARLY_ALPHA.per_model("ar"): ClaimMetric(3.0, model="ar"),
            C.EARLY_ALPHA.per_model("dlm"): ClaimMetric(1.0, model="dlm"),
            C.EARLY_ALPHA.minus_ar("dlm"): _m(case, -2.0, 2.0, scale=2.0)}


def _compression(case: str) -> dict:
    return {C.GPTQ3_CHANGE_PCT.per_model("dlm"): ClaimMetric(-1.0, (-2.0, 0.0), model="dlm"),
            C.GPTQ3_CHANGE_PCT.per_model("ar"): ClaimMetric(-60.0, (-65.0, -55.0), model="ar"),
            C.GPTQ3_CHANGE_PCT.minus_ar("dlm"): _m(case, 60.0, -60.0)}


CHAPTERS: list[tuple[Callable, str, Callable[[str], dict], str]] = [
    (F.layer_similarity, C.LAYER_SIMILARITY, _layer_similarity, "A1"),
    (F.layer_similarity, C.LAYER_SIMILARITY, _layer_similarity, "A4"),
    (F.token_similarity, C.TOKEN_SIMILARITY, _token_similarity, "A2"),
    (F.layer_skipping, C.LAYER_SKIPPING, _layer_skipping, "A3"),
    (F.super_outlier, C.SUPER_OUTLIER, _super_outlier, "B1"),
    (F.outlier_ablation, C.OUTLIER_ABLATION, _outlier_ablation, "B2"),
    (F.alpha_hill, C.ALPHA_HILL, _alpha_hill, "B3"),
    (F.compression, C.COMPRESSION, _compression, "B4"),
]


def _bullet(text: str, cid: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith(f"- **{cid}**")]
    assert len(lines) == 1, f"no single line for claim {cid} in:\n{text}"
    return lines[0]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("fn,chapter,build,cid", CHAPTERS, ids=[f"{c[1]}-{c[3]}" for c in CHAPTERS])
def test_each_chapter_states_the_ledger_verdict_in_words(fn, chapter, build, cid, case) -> None:
    metrics = build(case)
    text = fn(metrics)
    assert F.for_chapter(chapter, metrics) == text
    line = _bullet(text, cid)
    assert F.VERDICT_WORDS[EXPECTED[case]] in line
    others = [w for v, w in F.VERDICT_WORDS.items() if v != EXPECTED[case]]
    assert not any(w in line for w in others)
    if case == "not testable":
        assert WHY in line
    # the verdict is the ledger's own on the same metrics (before "not testable" replaces an inconclusive)
    ledger = build_ledger({chapter: {"profile": "t", "metrics": F.entries(metrics)}})
    verdict = ledger.set_index("claim").loc[cid, "verdict"]
    assert verdict == EXPECTED[case] or (case == "not testable" and verdict == "inconclusive")


@pytest.mark.parametrize("fn,build,models", [
    (F.layer_similarity, _layer_similarity, ("ar", "dlm", "ar2dlm")),
    (F.token_similarity, _token_similarity, ("ar", "dlm")),
    (F.layer_skipping, _layer_skipping, ("ar", "dlm")), (F.super_outlier, _super_outlier, ("ar", "dlm")),
    (F.alpha_hill, _alpha_hill, ("ar", "dlm")), (F.compression, _compression, ("ar", "dlm")),
    (F.outlier_ablation, _outlier_ablation, ("dlm",)),
], ids=lambda x: getattr(x, "__name__", ""))
def test_numbers_per_model_with_intervals(fn, build, models) -> None:
    metrics = build("supports")
    text = fn(metrics)
    for m in models:
        assert f"`{m}`" in text
    for name, m in metrics.items():
        if m.ci and m.model in models and name.count("_minus_ar") == 0:
            pct = name.startswith((C.GPTQ3_CHANGE_PCT.stem, C.EARLY_MINUS_LATE_PCT.stem))
            assert F._fmt(m.to_metric(), pct=pct) in text  # value [lo, hi], as the paragraph prints it


def test_a_flagged_retention_says_why_and_shows_no_number() -> None:
    text = F.layer_skipping(_layer_skipping("not testable"))
    assert "has no retention number (2 of 12 blocks skipped); not meaningful: " + WHY in text


def test_result_file_payload_is_accepted_and_a_missing_claim_is_not_measured() -> None:
    saved = {k: v.to_metric() for k, v in _layer_similarity("supports").items()}
    payload = {"chapter": C.LAYER_SIMILARITY, "metrics": saved}
    assert F.layer_similarity(payload) == F.layer_similarity(_layer_similarity("supports"))
    only_models = {k: v for k, v in _layer_similarity("supports").items() if "minus" not in k and "closer" not in k}
    assert F.VERDICT_WORDS["not run"] in _bullet(F.layer_similarity(only_models), "A1")


def test_pretraining_reads_accuracy_against_chance() -> None:
    from layerwise.results import metric

    text = F.pretraining({"heldout_loss_ar": metric(3.9, model="ar"),
                          "arithmetic_accuracy_ar": metric(0.5, (0.4, 0.6), model="ar", chance=0.05),
                          "arithmetic_accuracy_dlm": metric(0.02, (0.0, 0.08), model="dlm", chance=0.05)})
    ar, dlm = (next(line for line in text.splitlines() if line.startswith(f"- `{m}`")) for m in ("ar", "dlm"))
    assert "**above chance**" in ar and "**not above chance**" in dlm


def test_bad_input_names_the_fix() -> None:
    with pytest.raises(LayerwiseError, match="ClaimMetric dict or the metrics of its result file"):
        F.layer_similarity({"x": 1.0})
    with pytest.raises(LayerwiseError, match="use one of"):
        F.for_chapter("99_nope", {})


# ---------------------------------------------------------------------------------------------
# the intro's summary of results
# ---------------------------------------------------------------------------------------------


def _results() -> dict:
    return {C.LAYER_SIMILARITY: {"profile": "gpu", "metrics": F.entries(_layer_similarity("supports"))},
            C.COMPRESSION: {"profile": "gpu", "metrics": F.entries(_compression("against"))}}


def test_summary_counts_the_ledger_verdicts_and_lists_every_claim() -> None:
    ledger = build_ledger(_results())
    text = F.results_summary(ledger)
    counts = ledger.verdict.value_counts()
    head = text.splitlines()[0]
    assert f"Of the {len(ledger)} claims" in head and "`gpu`" in head
    for verdict, n in counts.items():
        assert f"{n} {verdict}" in head
    for _, r in ledger.iterrows():
        assert f"- **{r['claim']}** *{r['verdict']}*" in text


def test_summary_rejects_a_table_that_is_not_the_ledger() -> None:
    import pandas as pd

    with pytest.raises(LayerwiseError, match="build_ledger"):
        F.results_summary(pd.DataFrame({"x": [1]}))


def test_summary_is_written_between_the_markers(tmp_path: Path) -> None:
    intro = tmp_path / "intro.md"
    intro.write_text(f"# Book\n\nbefore\n\n{F.SUMMARY_START}\nold text\n{F.SUMMARY_END}\n\nafter\n")
    summary = F.results_summary(build_ledger(_results()))
    assert F.write_intro_summary(intro, summary)
    text = intro.read_text()
    assert "old text" not in text and summary.strip() in text
    assert text.startswith("# Book\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert not F.write_intro_summary(intro, summary)  # unchanged the second time
    intro.write_text("# no markers\n")
    with pytest.raises(LayerwiseError, match="markers"):
        F.write_intro_summary(intro, summary)


def test_the_book_intro_has_the_markers() -> None:
    text = (REPO / "book" / "intro.md").read_text()
    assert text.count(F.SUMMARY_START) == 1 and text.count(F.SUMMARY_END) == 1
    assert text.index(F.SUMMARY_START) < text.index(F.SUMMARY_END)


def test_edition_note_names_a_stale_preset_configuration():
    from layerwise.training import get_preset

    current = get_preset("tiny").config_hash()
    res = {"00_pretraining": {"created": "2026-11-23T06:02:33+00:00",
                              "data": {"preset": "tiny", "config_hash": current}}}
    assert F.edition_note(res) == "" and F.edition_note({}) == ""
    res["00_pretraining"]["data"]["config_hash"] = "0123456789abcdef"
    note = F.edition_note(res)
    assert "config 01234567, trained 2026-11-23" in note and f"now config {current[:8]}" in note
    res["00_pretraining"]["data"]["preset"] = "no-such-preset"  # a triplet the library does not know: no claim
    assert F.edition_note(res) == ""


def _competence_row(run: str, em: float, lo: float, hi: float, branch: float | None = None) -> dict:
    return {"run": run, "final": True, "branch_frac": branch,
            "sampler": "greedy" if run == "ar" else "masked diffusion",
            "exact_match": em, "em_ci_low": lo, "em_ci_high": hi, "chance": 0.03, "x_chance": em / 0.03,
            "arith_items": 200, "bits_per_byte": 1.5, "bpb_kind": "exact", "tokens_seen": 600_000_000,
            "params": 14_815_488, "params_nonembedding": 10_621_184, "tokens_per_param": 56.49}


def test_edition_summary_states_each_models_competence_against_the_bar():
    from layerwise.training import get_preset

    rows = [_competence_row("ar", 1.0, 0.98, 1.0), _competence_row("dlm", 0.35, 0.287, 0.418),
            _competence_row("ar2dlm", 0.10, 0.06, 0.15, branch=0.75),
            {**_competence_row("dlm", 0.9, 0.8, 0.95), "final": False}]  # a snapshot: not the edition's model
    res = {"00_pretraining": {"profile": "gpu", "device": "NVIDIA H200", "created": "2026-12-02T22:44:22+00:00",
                              "data": {"preset": "gpu", "config_hash": get_preset("gpu").config_hash(),
                                       "competence": rows}}}
    text = F.edition_summary(res)
    assert "one NVIDIA H200 (2026-12-02)" in text and f"$d={get_preset('gpu').d_model}$" in text
    assert "14.8M parameters (10.6M outside the embeddings)" in text and "56.5 tokens per non-embedding" in text
    assert "`ar2dlm` continue `ar` with the diffusion objective from 75%" in text
    assert "| `dlm` | masked diffusion | 35.0% [28.7%, 41.8%] | 11.7 |" in text and "90.0%" not in text
    assert "`dlm` clears it (35.0%) but its interval reaches down to 28.7%" in text
    assert "`ar2dlm` is below the bar (10.0%)" in text
    res["00_pretraining"]["data"]["config_hash"] = "0123456789abcdef"  # an older configuration: named, not described
    assert "the `gpu` preset of config 01234567" in F.edition_summary(res)
    assert F.edition_summary({}) == ""


def test_edition_summary_adds_the_further_training_seeds_from_the_robustness_chapter():
    from layerwise.training import get_preset

    seed0 = [_competence_row("ar", 1.0, 0.98, 1.0), _competence_row("dlm", 0.35, 0.287, 0.418)]
    res = {"00_pretraining": {"profile": "gpu", "device": "NVIDIA H200", "created": "2026-12-02T22:44:22+00:00",
                              "data": {"preset": "gpu", "config_hash": get_preset("gpu").config_hash(),
                                       "competence": seed0}}}
    assert "Further training seeds" not in F.edition_summary(res)
    later = [{**r, "seed": 0} for r in seed0] + [{**_competence_row("dlm", 0.47, 0.402, 0.539), "seed": 1},
                                                  {**_competence_row("dlm", 0.2, 0.15, 0.26), "seed": 2}]
    res["10_robustness"] = {"created": "2026-12-03T04:18:20+00:00", "data": {"competence": later}}
    text = F.edition_summary(res)
    assert "(the robustness chapter; last run 2026-12-03)" in text
    assert "seed 1: `dlm` 47.0% [40.2%, 53.9%]; seed 2: `dlm` 20.0% [15.0%, 26.0%]" in text
    assert "Below the bar: `dlm` (seed 2)." in text and "seed 0:" not in text  # seed 0 is the table above


def test_retention_per_seed_is_set_beside_the_same_seeds_competence(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from layerwise.results import TRAIN_SEED_ENV, load_results, save_result

    name = C.RETENTION_AT_TARGET.of("dlm")
    for k, v in ((0, 0.16), (2, 0.91)):
        monkeypatch.setenv(TRAIN_SEED_ENV, str(k))
        save_result(C.LAYER_SKIPPING, profile="t", results_dir=tmp_path,
                    metrics={name: ClaimMetric(v, (v - 0.1, v + 0.1), model="dlm")})
    monkeypatch.delenv(TRAIN_SEED_ENV)
    results = load_results("t", results_dir=tmp_path)
    assert F.retention_by_seed(results) == ""  # no competence rows: nothing to set beside
    results["00_pretraining"] = {"data": {"competence": [{**_competence_row("dlm", 0.35, 0.29, 0.42), "seed": 0}]}}
    results["10_robustness"] = {"data": {"competence": [{**_competence_row("dlm", 0.985, 0.96, 1.0), "seed": 2}]}}
    text = F.retention_by_seed(results)
    assert "A3 DLM retention: seed 0 0.160 (`dlm` 35.0%), seed 2 0.910 (`dlm` 98.5%)." in text
    assert "AR retention" not in text  # not measured


def test_allocation_by_measure_lists_every_measure_per_seed_and_names_a_sign_that_differs() -> None:
    def row(model: str, measure: str, v: float, ok: bool = True) -> dict:
        return {"model": model, "measure": measure, "early_minus_late_pct": v, "ci_low": v - 1, "ci_high": v + 1,
                "meaningful": ok}

    seed0 = [row("dlm", "exact_match", 200.0, ok=False), row("dlm", "bits_per_byte", -0.6),
             row("ar", "exact_match", -86.7), row("ar", "bits_per_byte", -3.0)]
    seed2 = [row("dlm", "exact_match", 61.9), row("dlm", "bits_per_byte", -0.8),
             row("ar", "exact_match", -96.6), row("ar", "bits_per_byte", -1.8)]
    res = {C.COMPRESSION: {"data": {"jobs": {"train_seed-0": {"early_minus_late": seed0},
                                             "train_seed-2": {"early_minus_late": seed2}}}}}
    text = F.allocation_by_measure(res)
    assert "`dlm` bits_per_byte: seed 0 -0.600% [-1.60, 0.400], seed 2 -0.800% [-1.80, 0.200]" in text
    assert "`dlm` exact_match: seed 0 200% [199, 201] (not testable), seed 2 61.9% [60.9, 62.9]" in text
    assert text.endswith("The sign differs between the measures for `dlm`.")  # ar: negative on both
    one = {C.COMPRESSION: {"train_seed": 0, "data": {"early_minus_late": seed2[2:]}}}  # no seed jobs: the file's own
    assert "`ar` exact_match: seed 0 -96.6%" in F.allocation_by_measure(one)
    assert F.allocation_by_measure(one).endswith("Every measure agrees on the sign.")
    assert F.allocation_by_measure({}) == ""


def test_edition_summary_sets_other_trainings_of_the_same_configuration_beside_the_editions(tmp_path: Path) -> None:
    """A benchmark table's final models of the edition's configuration hash and seed are compared with the
    edition's; snapshots, other configurations, other seeds and tables without the columns are left out."""
    import pandas as pd

    from layerwise.training import get_preset

    want = get_preset("gpu").config_hash()
    seed0 = [{**_competence_row("ar", 1.0, 0.98, 1.0), "seed": 0},
             {**_competence_row("dlm", 0.35, 0.287, 0.418), "seed": 0}]
    res = {"00_pretraining": {"profile": "gpu", "device": "NVIDIA H200", "created": "2026-12-02T22:44:22+00:00",
                              "data": {"preset": "gpu", "config_hash": want, "competence": seed0}},
           "10_robustness": {"created": "2026-12-03T04:18:20+00:00",
                             "data": {"competence": seed0 + [{**_competence_row("dlm", 0.47, 0.40, 0.54), "seed": 1}]}}}
    row = {"config_hash": want, "seed": 0, "final": True, "em_ci_low": 0.9, "em_ci_high": 1.0}
    pd.DataFrame([{**row, "run": "dlm", "exact_match": 0.99}, {**row, "run": "ar", "exact_match": 0.97},
                  {**row, "run": "dlm", "exact_match": 0.10, "final": False},          # a snapshot
                  {**row, "run": "dlm", "exact_match": 0.20, "config_hash": "0" * 16},  # another configuration
                  {**row, "run": "dlm", "exact_match": 0.30, "seed": 5}]                # a seed the book lacks
                 ).to_csv(tmp_path / "design.csv", index=False)
    pd.DataFrame([{"run": "dlm", "exact_match": 0.5}]).to_csv(tmp_path / "other.csv", index=False)
    text = F.retrainings_summary(res, tmp_path)
    assert "`design.csv`, seed 0: `dlm` 99.0% [90.0%, 100.0%] (this edition: 35.0%), `ar` 97.0%" in text
    assert "10.0%" not in text and "20.0%" not in text and "30.0%" not in text and "other.csv" not in text
    assert "The largest gap between two trainings of one seed is `dlm`'s, 64.0 points (seed 0)" in text
    assert "`dlm` spans 12.0 points (2 seeds): retraining one seed moved it further" in text
    # a third seed as far from the others as the retraining: no longer "further", within the item noise
    res["10_robustness"]["data"]["competence"].append({**_competence_row("dlm", 0.985, 0.957, 0.995), "seed": 2})
    text = F.retrainings_summary(res, tmp_path)
    assert "`dlm` spans 63.5 points (3 seeds): retraining one seed moved it about as far as changing the seed" in text
    assert text in F.edition_summary(res, tmp_path) and "Other trainings" not in F.edition_summary(res)
    assert F.retrainings_summary(res, tmp_path / "missing") == ""
    (tmp_path / "design.csv").unlink()
    assert F.retrainings_summary(res, tmp_path) == ""


def test_the_book_intro_is_generated_from_the_committed_results(tmp_path: Path) -> None:
    """Regenerating the intro's summary and edition blocks from book/results/gpu changes nothing."""
    intro = tmp_path / "intro.md"
    intro.write_text((REPO / "book" / "intro.md").read_text())
    assert F.EDITION_START in intro.read_text()
    assert not F.update_intro(intro, REPO / "book" / "results" / "gpu"), "run python -m layerwise.findings"


def test_robustness_names_the_seed_spread_against_the_item_interval_and_the_competence_bar() -> None:
    def rep(cid: str, part: str, k: int, v: float, half: float) -> dict:
        return {"claim": cid, "part": part, "train_seed": k, "value": v, "ci_low": v - half, "ci_high": v + half}

    comp = [{"run": "dlm", "seed": k, "final": True, "exact_match": em, "em_ci_low": em - 0.05,
             "em_ci_high": em + 0.05, "x_chance": em / 0.03, "bits_per_byte": 1.9 + k / 100}
            for k, em in ((0, 0.35), (1, 0.25))]
    reps = [rep("A2", "recency, DLM - AR", 0, 0.035, 0.002), rep("A2", "recency, DLM - AR", 1, -0.007, 0.002),
            rep("B3", "early alpha-Hill, DLM - AR", 0, -0.47, 0.1),
            rep("B3", "early alpha-Hill, DLM - AR", 1, -0.46, 0.1),
            rep("A3", "DLM retention", 0, 0.2, 0.1)]  # one seed only: not counted
    text = F.robustness({"data": {"competence": comp, "replicates": reps}})
    assert "seed 0 35.0% [30.0, 40.0], seed 1 25.0% [20.0, 30.0]" in text
    assert "1 of 2 seeds below the competence bar (exact match >= 30% and >= 5x chance)" in text
    assert "Of the 2 claim parts measured on more than one training seed, 1 spread" in text
    assert "A2 recency, DLM - AR (seed SD 0.0297, 15x the one-seed half-width 0.00200)" in text
    assert "B3" not in text.split("spread between seeds")[1].split("For these")[0]  # within its item interval
    assert "both sides of the no-effect value for 1: A2 recency, DLM - AR (0.0350, -0.00700 about 0)" in text
    assert F.for_chapter("10_robustness", {"data": {"competence": comp, "replicates": reps[:1]}}).count(
        "No claim part has been measured on more than one training seed") == 1
    # a seed the chapter flagged not testable is left out of the spread and the sign count, and named
    looped = [{**rep("B2", "DLM repetition increase", 0, -0.05, 0.1), "testable": False},
              rep("B2", "DLM repetition increase", 2, 0.16, 0.15), rep("B2", "DLM repetition increase", 3, 0.30, 0.1)]
    text = F.robustness({"data": {"competence": comp, "replicates": reps + looped}})
    assert "Left out as not testable on a seed" in text and "B2 DLM repetition increase (seed 0)" in text
    assert "Of the 3 claim parts measured on more than one training seed" in text
    assert "B2 DLM repetition increase (-0.05" not in text  # seed 0's value is not among the signs
    two = F.robustness({"data": {"competence": comp, "replicates": reps + looped[:2]}})
    assert "Of the 2 claim parts measured on more than one training seed" in two
