"""What each chapter found, in words: a Markdown paragraph built from the chapter's own result.

One function per chapter (:func:`pretraining`, :func:`layer_similarity`, :func:`token_similarity`,
:func:`layer_skipping`, :func:`super_outlier`, :func:`outlier_ablation`, :func:`alpha_hill`,
:func:`compression`, :func:`robustness`; :func:`for_chapter` picks by chapter name). Each takes the metrics the chapter
saves (``{name: ClaimMetric}`` of :mod:`layerwise.claims`, or the ``metrics`` of its result file, or
the whole result payload) and returns Markdown: the chapter's numbers with their 95% intervals, then,
for every claim of the ledger measured in the chapter, what the numbers mean for it:

- **supports** the paper's claim (the ledger says *reproduced*);
- **goes against** it (*not reproduced*);
- **inconclusive** (the interval does not decide);
- **not testable here** (the chapter flags the metric not meaningful, e.g. a baseline at chance), with
  the chapter's reason;
- **not measured** (the metric is missing from this run).

The verdict is the ledger's (:func:`layerwise.ledger.build_ledger` on this chapter's metrics alone), so a
chapter's paragraph and the ledger never disagree; pre-registered alternative definitions of a metric
(``name::label``) are judged the same way and listed, so a result that holds under one definition
only says so. :func:`results_summary` turns the ledger table into the summary the book's intro shows,
and :func:`write_intro_summary` writes it between markers into ``book/intro.md``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeGuard

import pandas as pd

from . import claims as C
from .config import LayerwiseError

__all__ = [
    "VERDICT_WORDS", "entries", "chapter_ledger", "claim_findings", "pretraining", "layer_similarity",
    "token_similarity", "layer_skipping", "super_outlier", "outlier_ablation", "alpha_hill", "compression",
    "robustness", "for_chapter", "seeds_summary", "retention_by_seed", "allocation_by_measure",
    "retrainings_summary",
    "results_summary", "write_intro_summary", "update_intro", "SUMMARY_START", "SUMMARY_END",
]

#: how a ledger verdict reads in a chapter's paragraph
VERDICT_WORDS = {
    "reproduced": "this run **supports** the paper's claim",
    "not reproduced": "this run **goes against** the paper's claim",
    "depends on definition": "this run supports or contradicts it **depending on the definition** of the metric",
    "inconclusive": "this run is **inconclusive**",
    "not testable": "**not testable here**",
    "not run": "**not measured** in this run",
}

_SEP = "::"  #: metric name :: definition label (layerwise.claims' pre-registered definitions)
#: The exact match and multiple of chance the published triplet is designed to reach, so that retention on
#: the task tests the papers' claims; the chapters flag retention as meaningless only at chance.
COMPETENCE_BAR = 0.30
COMPETENCE_X_CHANCE = 5.0


# ---------------------------------------------------------------------------------------------
# Reading metrics
# ---------------------------------------------------------------------------------------------


def entries(metrics: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{name: result-file entry}`` from a chapter's ``{name: ClaimMetric}``, its result file's
    ``metrics``, or the whole result payload (which holds ``metrics``)."""
    if "metrics" in metrics and isinstance(metrics["metrics"], Mapping):
        metrics = metrics["metrics"]
    out = {}
    for k, v in metrics.items():
        if hasattr(v, "to_metric"):
            v = v.to_metric()
        if not isinstance(v, Mapping):
            raise LayerwiseError(f"metric {k!r} is a {type(v).__name__}: pass the chapter's ClaimMetric dict or "
                                 "the metrics of its result file")
        out[str(k)] = dict(v)
    return out


def _finite(x: Any) -> TypeGuard[float]:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(float(x))


def _num(x: Any, digits: int = 3) -> str:
    if not _finite(x):
        return "n/a"
    x = float(x)
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    decimals = max(0, digits - 1 - mag)
    return f"{round(x, decimals) + 0.0:.{decimals}f}"


def _fmt(e: Mapping[str, Any] | None, *, pct: bool = False, unit: str = "") -> str:
    """``value [lo, hi]`` (``%`` after each with ``pct``), or why there is no number."""
    if e is None:
        return "not measured"
    suffix = "%" if pct else unit
    s = f"{_num(e.get('value'))}{suffix}"
    ci = e.get("ci")
    if ci and _finite(ci[0]) and _finite(ci[1]):
        s += f" [{_num(ci[0])}{suffix}, {_num(ci[1])}{suffix}]"
    return s


def _not_testable(e: Mapping[str, Any] | None) -> str | None:
    """The reason a metric cannot support a claim (flagged not meaningful, or no value), else None."""
    if e is None:
        return None
    if e.get("meaningful") is False:
        return str(e.get("reason") or e.get("note") or "the chapter flags this metric not meaningful")
    if not _finite(e.get("value")):
        return str(e.get("reason") or "no value was measured")
    return None


def chapter_ledger(chapter: str, metrics: Mapping[str, Any]) -> pd.DataFrame:
    """The ledger rows (:func:`layerwise.ledger.build_ledger`) of the claims whose every part is measured in
    ``chapter``, judged on these metrics alone; ``not testable`` replaces ``inconclusive`` where a part's
    metric is flagged not meaningful (or has no value) and the ledger has no such verdict of its own."""
    from .ledger import CLAIMS, build_ledger

    e = entries(metrics)
    ledger = build_ledger({chapter: {"profile": "", "metrics": e}})
    rows = ledger[ledger["chapter"] == chapter].copy()
    parts = {c.cid: [p.metric for p in c.parts] for c in CLAIMS}
    flagged = [bool(any(_not_testable(e.get(m)) for m in parts.get(cid, []))) for cid in rows["claim"]]
    rows.loc[(rows["verdict"] == "inconclusive") & pd.Series(flagged, index=rows.index), "verdict"] = "not testable"
    return rows


def claim_findings(chapter: str, metrics: Mapping[str, Any]) -> list[str]:
    """One Markdown bullet per ledger claim measured in ``chapter``: the verdict in words, then the
    ledger's own sentence for it (numbers against the paper's margin, definitions that disagree), and
    the chapter's reason where a metric is not testable."""
    from .ledger import CLAIMS

    e = entries(metrics)
    parts = {c.cid: [p.metric for p in c.parts] for c in CLAIMS}
    lines = []
    for _, r in chapter_ledger(chapter, e).iterrows():
        verdict = str(r["verdict"])
        words = VERDICT_WORDS.get(verdict, f"this run: **{verdict}**")
        text = f"- **{r['claim']}** ({str(r['statement']).rstrip('.')}): {words}."
        said = str(r.get("summary", "") or "")
        said = re.sub(rf"^{re.escape(str(r['claim']))} [a-z ]+: ", "", said)
        text += f" {said}" if said else f" Ours: {r.get('ours (95% CI)', '')}."
        reasons = list(dict.fromkeys(why for m in parts.get(str(r["claim"]), []) if (why := _not_testable(e.get(m)))))
        if verdict == "not testable" and reasons and not all(why in said for why in reasons):
            text += f" Not testable because {'; '.join(reasons)}."
        lines.append(text)
    return lines


def _per_model(e: Mapping[str, Any], stem: str, *qualifiers: str) -> dict[str, dict[str, Any]]:
    """``{model: entry}`` of the per-model metrics ``stem__model[__qualifiers]``."""
    tail = "".join("__" + q for q in qualifiers)
    out = {}
    for k, v in e.items():
        if k.startswith(stem + "__") and k.endswith(tail) and _SEP not in k:
            model = k[len(stem) + 2: len(k) - len(tail) if tail else None]
            if model and "__" not in model:
                out[model] = v
    return out


def _per_model_single(e: Mapping[str, Any], stem: str) -> dict[str, dict[str, Any]]:
    """``{model: entry}`` of per-model metrics named ``stem_<model>`` (chapters 01 and 02)."""
    out = {}
    for k, v in e.items():
        if (k.startswith(stem + "_") and _SEP not in k and not k.endswith("_minus_ar") and "_diff__" not in k
                and v.get("model") == k[len(stem) + 1:]):
            out[k[len(stem) + 1:]] = v
    return out


def _listing(per: Mapping[str, Mapping[str, Any]], **kw: Any) -> str:
    parts = []
    for model, e in per.items():
        why = _not_testable(e)
        parts.append(f"`{model}` {_fmt(e, **kw)}" + (" (not meaningful)" if why and _finite(e.get("value")) else ""))
    return ", ".join(parts) if parts else "not measured"


def _paragraph(title: str, facts: list[str], chapter: str, e: Mapping[str, Any], closing: str = "") -> str:
    verdicts = claim_findings(chapter, e)
    out = [f"**{title}**", "", *facts]
    if verdicts:
        out += ["", "For the papers' claims (the ledger's verdict rule; 95% intervals in brackets):", "", *verdicts]
    if closing:
        out += ["", closing]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# One function per chapter
# ---------------------------------------------------------------------------------------------


def pretraining(metrics: Mapping[str, Any]) -> str:
    """Chapter 00: each model's held-out loss, tokens seen and arithmetic accuracy against chance."""
    e = entries(metrics)
    facts = []
    losses = {k[len("heldout_loss_"):]: v for k, v in e.items() if k.startswith("heldout_loss_")}
    if losses:
        facts.append("Held-out loss (each model on its own objective, so not comparable across objectives): "
                     + ", ".join(f"`{m}` {_num(v.get('value'))}" for m, v in losses.items()) + ".")
    acc = {k[len("arithmetic_accuracy_"):]: v for k, v in e.items() if k.startswith("arithmetic_accuracy_")}
    for model, a in acc.items():
        chance = a.get("chance")
        lo = (a.get("ci") or [None])[0]
        above = _finite(chance) and _finite(lo) and float(lo) > float(chance)
        facts.append(f"- `{model}`: held-out arithmetic accuracy {_fmt(a)}"
                     + (f" against chance {_num(chance)}: " + ("**above chance**, so retention on this task is "
                        "meaningful in later chapters." if above else "**not above chance**, so later chapters "
                        "flag retention on this task as not meaningful for it.") if _finite(chance) else "."))
    if not facts:
        facts.append("This run saved no training metrics.")
    return _paragraph("What this chapter found.", facts, "00_pretraining", e)


def layer_similarity(metrics: Mapping[str, Any]) -> str:
    """Chapter 01 (claims A1, A4): early-layer similarity per model, DLM minus AR, ar2dlm's closeness."""
    e = entries(metrics)
    per = _per_model_single(e, C.EARLY_SIMILARITY.stem)
    facts = [f"Early-layer similarity (mean cosine between a block's input and output over the first third of "
             f"the blocks, higher = more redundant): {_listing(per)}."]
    d = e.get(C.EARLY_SIMILARITY.minus_ar("dlm"))
    if d is not None and _finite(d.get("value")):
        facts.append(f"DLM minus AR (`{d.get('model', '')}`): {_fmt(d)}, i.e. the diffusion model's early blocks are "
                     f"{'more' if d['value'] > 0 else 'less'} alike than the AR model's.")
    closer = e.get(C.AR2DLM_CLOSER_TO_AR)
    if closer is not None and _finite(closer.get("value")):
        side = "AR" if closer["value"] > 0 else "DLM"
        facts.append(f"The AR-initialised model's profile is closer to the {side} profile (distance to DLM minus "
                     f"distance to AR: {_fmt(closer)}).")
    return _paragraph("What this chapter found.", facts, C.LAYER_SIMILARITY, e)


def token_similarity(metrics: Mapping[str, Any]) -> str:
    """Chapter 02 (claim A2): recency per model and DLM minus AR."""
    e = entries(metrics)
    per = _per_model_single(e, C.RECENCY.stem)
    facts = [f"Recency (how much more alike nearby tokens' hidden states are than distant ones', mean over block "
             f"outputs; higher = stronger recency bias): {_listing(per)}."]
    d = e.get(C.RECENCY.minus_ar("dlm"))
    if d is not None and _finite(d.get("value")):
        facts.append(f"DLM minus AR (`{d.get('model', '')}`): {_fmt(d)}, i.e. the diffusion model shows "
                     f"{'less' if d['value'] < 0 else 'more'} recency bias than the AR model.")
    return _paragraph("What this chapter found.", facts, C.TOKEN_SIMILARITY, e)


def layer_skipping(metrics: Mapping[str, Any]) -> str:
    """Chapter 03 (claim A3): retention with about 18.75% of the blocks skipped, per model."""
    e = entries(metrics)
    per = _per_model(e, C.RETENTION_AT_TARGET.stem)
    facts = []
    for model, r in per.items():
        where = f" ({r['k']} of {r['layers']} blocks skipped)" if "k" in r and "layers" in r else ""
        why = _not_testable(r)
        kept = f"keeps {_fmt(r)} of its unmodified score" if _finite(r.get("value")) else "has no retention number"
        facts.append(f"- `{model}` {kept}{where}" + (f"; not meaningful: {why}." if why else "."))
    if not facts:
        facts.append("No retention was measured in this run.")
    return _paragraph("What this chapter found.", ["Retention at the configuration closest to 18.75% of the blocks "
                                                  "skipped (1 = the unmodified model's score):", *facts],
                      C.LAYER_SKIPPING, e)


def super_outlier(metrics: Mapping[str, Any]) -> str:
    """Chapter 04 (claim B1): the super-outlier channel and early-block outlier ratios per model."""
    e = entries(metrics)
    facts = []
    ratios = _per_model(e, C.EARLY_OUTLIER_RATIO.stem)
    for model, r in ratios.items():
        v = r.get("value")
        times = f" (about {10 ** float(v):.3g} times the median channel)" if _finite(v) else ""
        ch = e.get(C.SUPER_OUTLIER_CHANNEL.per_model(model))
        chan = (f"; channel {int(ch['value'])} is the dominant one, {ch.get('note', '')}"
                if ch and _finite(ch.get("value")) else "")
        facts.append(f"- `{model}`: early-block log10 outlier ratio {_fmt(r)}{times}{chan}.")
    d = e.get(C.EARLY_OUTLIER_RATIO.minus_ar("dlm"))
    if d is not None and _finite(d.get("value")):
        facts.append(f"Diffusion minus AR: {_fmt(d)} in log10 units, i.e. the diffusion model's early outlier is "
                     f"{10 ** abs(float(d['value'])):.3g} times {'stronger' if d['value'] > 0 else 'weaker'} "
                     "relative to its median channel.")
    return _paragraph("What this chapter found.", ["Outlier ratio at the attention input (the dominant channel's "
                                                  "max |x| over the median channel's), early blocks:", *facts],
                      C.SUPER_OUTLIER, e)


def outlier_ablation(metrics: Mapping[str, Any], scope: str = "early") -> str:
    """Chapter 05 (claim B2): repetition, loops and accuracy with the super-outlier zeroed in ``scope``
    blocks, minus random control channels, per model."""
    e = entries(metrics)
    facts = []
    for kind, name in (("repetition", C.REPETITION_INCREASE), ("loop share", C.LOOP_INCREASE),
                       ("arithmetic accuracy", C.ACCURACY_CHANGE)):
        per = _per_model(e, name.stem, scope)
        if per:
            facts.append(f"- change in {kind} ({scope} blocks; super-outlier zeroed minus random channels): "
                         f"{_listing(per)}.")
    if not facts:
        facts.append(f"No ablation effect was measured for the {scope} blocks in this run.")
    return _paragraph("What this chapter found.", facts, C.OUTLIER_ABLATION, e)


def alpha_hill(metrics: Mapping[str, Any]) -> str:
    """Chapter 06 (claim B3): early-block alpha-Hill per model and diffusion minus AR."""
    e = entries(metrics)
    per = _per_model(e, C.EARLY_ALPHA.stem)
    facts = [f"Mean alpha-Hill of the early blocks' weight matrices (lower = heavier-tailed spectrum, read by paper "
             f"B as more strongly trained): {_listing(per)}."]
    d = e.get(C.EARLY_ALPHA.minus_ar("dlm"))
    if d is not None and _finite(d.get("value")):
        facts.append(f"DLM minus AR (`{d.get('model', '')}`): {_fmt(d)}, i.e. the diffusion model's early spectra "
                     f"are {'heavier' if d['value'] < 0 else 'lighter'}-tailed.")
    return _paragraph("What this chapter found.", facts, C.ALPHA_HILL, e)


def compression(metrics: Mapping[str, Any]) -> str:
    """Chapter 07 (claims B4, B5): 3-bit GPTQ change and early-vs-late sparsity allocation, per model."""
    e = entries(metrics)
    facts = []
    g = _per_model(e, C.GPTQ3_CHANGE_PCT.stem)
    if g:
        facts.append(f"- 3-bit GPTQ changes the score by {_listing(g, pct=True)} (relative to the unmodified model).")
    d = e.get(C.GPTQ3_CHANGE_PCT.minus_ar("dlm"))
    if d is not None and _finite(d.get("value")):
        facts.append(f"- The diffusion model loses {'less' if d['value'] > 0 else 'more'} than the AR model: "
                     f"difference {_fmt(d, unit=' pp')}.")
    a = _per_model(e, C.EARLY_MINUS_LATE_PCT.stem)
    if a:
        facts.append(f"- At the same average sparsity, pruning the early blocks harder instead of the late ones "
                     f"changes the score by {_listing(a, pct=True)}.")
    if not facts:
        facts.append("No compression effect was measured in this run.")
    return _paragraph("What this chapter found.", facts, C.COMPRESSION, e)


def robustness(payload: Mapping[str, Any], *, min_exact_match: float = COMPETENCE_BAR,
               min_x_chance: float = COMPETENCE_X_CHANCE) -> str:
    """Chapter 10: competence per training seed, and per claim part how far the seeds spread against the
    one-seed item interval and whether they agree on the effect's sign. ``payload`` is the chapter's result
    file (its ``data`` holds ``competence`` and ``replicates``) or that ``data`` itself."""
    data = payload.get("data", payload)
    comp = [r for r in data.get("competence", []) if r.get("final", True)]
    reps = list(data.get("replicates", []))
    facts = []
    bar = f"exact match >= {min_exact_match:.0%} and >= {min_x_chance:g}x chance"
    for run in dict.fromkeys(r.get("run") for r in comp):
        rows = sorted((r for r in comp if r.get("run") == run), key=lambda r: int(r.get("seed") or 0))
        ems = ", ".join(f"seed {int(r.get('seed') or 0)} {_num(100 * r['exact_match'])}% "
                        f"[{_num(100 * r['em_ci_low'])}, {_num(100 * r['em_ci_high'])}]" for r in rows
                        if all(_finite(r.get(k)) for k in ("exact_match", "em_ci_low", "em_ci_high")))
        ok = [_finite(r.get("exact_match")) and r["exact_match"] >= min_exact_match
              and _finite(r.get("x_chance")) and r["x_chance"] >= min_x_chance for r in rows]
        bpb = [r["bits_per_byte"] for r in rows if _finite(r.get("bits_per_byte"))]
        facts.append(f"- `{run}`: held-out exact match {ems or 'not measured'}; "
                     + (f"every seed meets the competence bar ({bar})" if all(ok) else
                        f"{len(ok) - sum(ok)} of {len(ok)} seeds below the competence bar ({bar})")
                     + (f"; bits per byte {_num(min(bpb))}-{_num(max(bpb))} over the seeds." if len(bpb) > 1 else "."))
    from .ledger import CLAIMS

    # each part's no-effect value (a scaled part's null is a multiple of a per-run scale: only 0 is known here)
    nulls = {(c.cid, p.label or p.metric): (p.null if not p.scaled or p.null == 0 else None)
             for c in CLAIMS for p in c.parts}
    wide, flips = [], []
    parts: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in reps:
        parts.setdefault((str(r.get("claim")), str(r.get("part"))), []).append(r)
    untestable = []
    for (cid, part), all_rows in parts.items():
        rows = [r for r in all_rows if r.get("testable", True) is not False]  # as the ledger: left out
        if len(rows) < len(all_rows):
            untestable.append(f"{cid} {part} (seed " + ", ".join(str(int(r.get("train_seed") or 0)) for r in all_rows
                                                            if r.get("testable", True) is False) + ")")
        vals = [float(r["value"]) for r in rows if _finite(r.get("value"))]
        halves = [(float(r["ci_high"]) - float(r["ci_low"])) / 2 for r in rows
                  if _finite(r.get("ci_low")) and _finite(r.get("ci_high"))]
        if len(vals) < 2:
            continue
        sd = float(pd.Series(vals).std())
        item = float(sum(halves) / len(halves)) if halves else float("nan")
        if _finite(item) and item > 0 and sd > item:
            wide.append((sd / item, f"{cid} {part} (seed SD {_num(sd)}, {_num(sd / item, 2)}x the one-seed "
                                    f"half-width {_num(item)})"))
        null = nulls.get((cid, part), 0.0)
        if null is not None and min(vals) < null < max(vals):
            flips.append(f"{cid} {part} ({', '.join(_num(v) for v in vals)} about {_num(null)})")
    n_multi = sum(1 for rows in parts.values()
                  if sum(_finite(r.get("value")) and r.get("testable", True) is not False for r in rows) > 1)
    if untestable:
        facts.append("- Left out as not testable on a seed (the chapter flagged its design unable to show the effect "
                     "there; the ledger leaves these seeds out too): " + "; ".join(untestable) + ".")
    if n_multi:
        wide.sort(reverse=True)
        facts.append(f"- Of the {n_multi} claim parts measured on more than one training seed, "
                     + (f"{len(wide)} spread between seeds by more than one seed's 95% item interval: "
                        + "; ".join(w for _, w in wide) + ". For these the item interval of one trained model "
                        "understates the uncertainty, and the ledger's interval over the seeds is the one to read."
                        if wide else "none spreads between seeds by more than one seed's 95% item interval."))
        facts.append("- " + (f"The seeds fall on both sides of the no-effect value for {len(flips)}: "
                             + "; ".join(flips) + "." if flips
                             else "For every part the seeds fall on the same side of its no-effect value."))
    else:
        facts.append("- No claim part has been measured on more than one training seed yet.")
    return "\n".join(["**What this chapter found.**", "", *facts]) + "\n"


_BY_CHAPTER: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "00_pretraining": pretraining, C.LAYER_SIMILARITY: layer_similarity, C.TOKEN_SIMILARITY: token_similarity,
    C.LAYER_SKIPPING: layer_skipping, C.SUPER_OUTLIER: super_outlier, C.OUTLIER_ABLATION: outlier_ablation,
    C.ALPHA_HILL: alpha_hill, C.COMPRESSION: compression, "10_robustness": robustness,
}


def for_chapter(chapter: str, metrics: Mapping[str, Any]) -> str:
    """The findings paragraph of ``chapter`` (e.g. ``"01_layer_similarity"``)."""
    if chapter not in _BY_CHAPTER:
        raise LayerwiseError(f"no findings for chapter {chapter!r}: use one of {', '.join(_BY_CHAPTER)}")
    return _BY_CHAPTER[chapter](metrics)


# ---------------------------------------------------------------------------------------------
# The intro's summary of results
# ---------------------------------------------------------------------------------------------

SUMMARY_START = "<!-- results-summary:start -->"
SUMMARY_END = "<!-- results-summary:end -->"


def results_summary(ledger: pd.DataFrame) -> str:
    """Markdown summary of the claims ledger (:func:`layerwise.ledger.build_ledger`): how many claims
    each verdict got, then one line per claim with its verdict, our number and the paper's."""
    need = {"claim", "verdict", "statement"}
    if not need <= set(ledger.columns):
        raise LayerwiseError(f"the ledger table lacks {sorted(need - set(ledger.columns))}: pass "
                             "layerwise.ledger.build_ledger(load_results(profile))")
    counts = ledger.verdict.value_counts()
    order = ["reproduced", "not reproduced", "depends on definition", "inconclusive", "not testable", "not run"]
    tally = ", ".join(f"{int(counts[v])} {v}" for v in [*order, *(v for v in counts.index if v not in order)]
                      if v in counts)
    profiles = sorted({p for p in ledger.get("profile", pd.Series(dtype=str)) if p and p != "–"})
    head = (f"Of the {len(ledger)} claims of the two papers, this edition's run"
            + (f" (profile {', '.join(f'`{p}`' for p in profiles)})" if profiles else "") + f": {tally}.")
    lines = [head, ""]
    for _, r in ledger.iterrows():
        ours = r.get("ours (95% CI)", "")
        paper = r.get("paper's number", "")
        lines.append(f"- **{r['claim']}** *{r['verdict']}*: {str(r['statement']).rstrip('.')}."
                     + (f" Ours: {ours}." if ours else "") + (f" Paper: {paper}." if paper else ""))
    lines += ["", "The *Claims ledger* chapter gives each claim's rule, intervals and chapter."]
    return "\n".join(lines) + "\n"


def write_intro_summary(intro: str | os.PathLike, summary: str) -> bool:
    """Put ``summary`` between :data:`SUMMARY_START` and :data:`SUMMARY_END` in the ``intro`` file
    (replacing what was there); returns whether the file changed."""
    return _write_block(Path(intro), SUMMARY_START, SUMMARY_END, summary)


def update_intro(intro: str | os.PathLike, results_dir: str | os.PathLike,
                 benchmarks: str | os.PathLike | None = None) -> bool:
    """Rebuild the ledger from the result files in ``results_dir`` (e.g. ``book/results/gpu``) and write
    its summary into ``intro`` between the markers; returns whether the file changed. ``benchmarks``: the
    folder of benchmark tables the edition block reads other trainings from (default: ``benchmarks/results``
    of the repository that holds ``results_dir`` as ``book/results/<profile>``, where it exists)."""
    from .ledger import build_ledger
    from .results import load_results

    folder = Path(results_dir)
    if not folder.is_dir():
        raise LayerwiseError(f"no result folder {folder}: pass the folder of a profile's result files "
                             "(e.g. book/results/gpu)")
    results = load_results(folder.name, results_dir=folder)
    summary = results_summary(build_ledger(results))
    note = edition_note(results)
    changed = write_intro_summary(intro, summary + (f"\n{note}\n" if note else ""))
    text = Path(intro).read_text()
    if EDITION_START in text:  # the generated "This edition" block, where the intro has one
        if benchmarks is None:
            up = folder.resolve().parents  # <root>/book/results/<profile> -> <root>/benchmarks/results
            beside = up[2] / "benchmarks" / "results" if len(up) > 2 else None
            benchmarks = beside if beside is not None and beside.is_dir() else None
        changed = _write_block(Path(intro), EDITION_START, EDITION_END, edition_summary(results, benchmarks)) or changed
    return changed


def edition_note(results: Mapping[str, Any]) -> str:
    """A sentence when the triplet behind these results (chapter 00's ``preset`` and ``config_hash``) is
    not the registered preset's current configuration ("" when it is, or when there is no triplet)."""
    from .training import PRESETS

    pre = results.get("00_pretraining")
    if not isinstance(pre, Mapping):
        return ""
    data = pre.get("data", {})
    name, have = data.get("preset"), data.get("config_hash")
    if not name or not have or name not in PRESETS:
        return ""
    want = PRESETS[name].config_hash()
    if have == want:
        return ""
    when = str(pre.get("created", ""))[:10]
    return (f"*These results come from an earlier configuration of the `{name}` preset (config {have[:8]}"
            + (f", trained {when}" if when else "") + f"); the registered preset is now config {want[:8]}, "
            "which a re-run of the profile trains: its numbers will differ from these.*")


EDITION_START = "<!-- edition:start -->"
EDITION_END = "<!-- edition:end -->"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def edition_summary(results: Mapping[str, Any], benchmarks: str | os.PathLike | None = None) -> str:
    """Markdown paragraph on the triplet behind ``results`` (chapter 00's result file): device and date,
    architecture, tokens per non-embedding parameter, and each model's held-out exact match (own sampler,
    Wilson 95%) against chance and the competence bar, with its bits per byte ("" without chapter 00);
    then the further seeds (:func:`seeds_summary`) and, with ``benchmarks`` (a folder of benchmark
    tables), other trainings of the same configuration (:func:`retrainings_summary`)."""
    from .training import PRESETS

    pre = results.get("00_pretraining")
    if not isinstance(pre, Mapping):
        return ""
    data = pre.get("data", {})
    final = [r for r in data.get("competence", []) if r.get("final")]
    if not final:
        return ""
    name = data.get("preset")
    preset = PRESETS.get(name) if isinstance(name, str) else None
    current = preset is not None and preset.config_hash() == data.get("config_hash")
    first = final[0]
    arch = (f"{preset.n_layers} layers, $d={preset.d_model}$, a {preset.data.vocab_size:,}-token vocabulary, "
            f"{preset.data.arith_frac:.0%} of the training rows given to the synthetic arithmetic task"
            if current and preset is not None else f"the `{name}` preset of config {str(data.get('config_hash'))[:8]}")
    branched = [r for r in final if r.get("branch_frac") is not None]
    tokens = max(int(r.get("tokens_seen") or 0) for r in final)
    head = (f"The chapters here ran on the `{pre.get('profile', name)}` profile on one {pre.get('device', 'GPU')} "
            f"({str(pre.get('created', ''))[:10]}), with the triplet trained from scratch in the same GPU session: "
            f"{arch}; {int(first['params']) / 1e6:.1f}M parameters ({int(first['params_nonembedding']) / 1e6:.1f}M "
            f"outside the embeddings). Each model saw {tokens / 1e6:,.0f}M tokens of Project Gutenberg text and "
            f"arithmetic, {float(first['tokens_per_param']):.1f} tokens per non-embedding parameter; "
            + (" and ".join(f"`{r['run']}`" for r in branched) + " continue `ar` with the diffusion objective from "
               + " and ".join(f"{float(r['branch_frac']):.0%}" for r in branched)
               + " of the budget" if branched else "all three trained from scratch") + ".")
    lines = [head, "", f"Held-out arithmetic ({int(first['arith_items'])} items; exact match, each model "
             "decoded with its own sampler, Wilson 95%) and bits per byte on held-out Gutenberg text:", "",
             "| model | sampler | exact match | × chance | bits per byte | bits per byte from |",
             "|---|---|---|---|---|---|"]
    weak = []
    for r in final:
        em, lo, hi = float(r["exact_match"]), float(r["em_ci_low"]), float(r["em_ci_high"])
        lines.append(f"| `{r['run']}` | {r['sampler']} | {_pct(em)} [{_pct(lo)}, {_pct(hi)}] | "
                     f"{float(r['x_chance']):.1f} | {_num(r['bits_per_byte'])} | {r['bpb_kind']} |")
        if em < COMPETENCE_BAR or float(r["x_chance"]) < COMPETENCE_X_CHANCE:
            weak.append(f"`{r['run']}` is below the bar ({_pct(em)})")
        elif lo < COMPETENCE_BAR:
            weak.append(f"`{r['run']}` clears it ({_pct(em)}) but its interval reaches down to {_pct(lo)}")
    lines += ["", f"Chance is {_pct(float(first['chance']))}. The triplet is designed so that every model "
              f"reaches {COMPETENCE_BAR:.0%} exact match and {COMPETENCE_X_CHANCE:g}x chance, enough for retention "
              "to test the papers' "
              "claims (the chapters flag retention as meaningless only for a model at chance): "
              + ("; ".join(weak) + "." if weak else "every model clears that bar.")]
    extra = [t for t in (seeds_summary(results), retention_by_seed(results), allocation_by_measure(results),
                         retrainings_summary(results, benchmarks)) if t]
    return "\n".join(lines + [x for t in extra for x in ("", t)])


def seeds_summary(results: Mapping[str, Any]) -> str:
    """A paragraph on the training seeds beyond seed 0 that the robustness chapter's result file scored
    (each run's held-out exact match per seed), or "" when there are none."""
    rob = results.get("10_robustness")
    if not isinstance(rob, Mapping):
        return ""
    rows = [r for (k, _), r in _final_competence(results).items() if k > 0]
    if not rows:
        return ""
    per_seed = []
    for k in sorted({int(r["seed"]) for r in rows}):
        got = ", ".join(f"`{r['run']}` {_pct(float(r['exact_match']))} [{_pct(float(r['em_ci_low']))}, "
                        f"{_pct(float(r['em_ci_high']))}]" for r in rows if int(r["seed"]) == k)
        per_seed.append(f"seed {k}: {got}")
    below = sorted({f"`{r['run']}` (seed {int(r['seed'])})" for r in rows
                    if float(r["exact_match"]) < COMPETENCE_BAR
                    or float(r.get("x_chance") or 0) < COMPETENCE_X_CHANCE})
    return (f"Further training seeds of the same configuration, trained and scored in GPU sessions of their own "
            f"(the robustness chapter; last run {str(rob.get('created', ''))[:10]}), on the same held-out "
            f"arithmetic: {'; '.join(per_seed)}. "
            + (f"Below the bar: {', '.join(below)}. " if below else "Every one of them clears the bar. ")
            + "The claims ledger combines the seeds of every claim part whose chapter ran on them; the summary "
            "below says how many seeds each part rests on.")


def retention_by_seed(results: Mapping[str, Any]) -> str:
    """A sentence setting each retention claim part's value per training seed (A3, A5, A8: the ledger's
    :func:`layerwise.ledger.seed_replicates`) beside the same seed's final model's held-out exact match,
    the score a retention divides; "" unless some part has two seeds with both numbers."""
    from .ledger import seed_replicates

    reps = seed_replicates(results)
    comp = _final_competence(results)
    reps = reps[reps.metric.str.contains("retention")]
    items = []
    for (cid, part), g in reps.groupby(["claim", "part"], sort=False):
        per_seed = []
        for r in g.sort_values("train_seed").itertuples():
            c = comp.get((int(r.train_seed), str(r.model)))
            if c is not None and _finite(r.value) and _finite(c.get("exact_match")):
                em = _pct(float(c["exact_match"]))
                per_seed.append(f"seed {int(r.train_seed)} {_num(r.value)} (`{r.model}` {em})")
        if len(per_seed) >= 2:
            items.append(f"{cid} {part}: " + ", ".join(per_seed))
    if not items:
        return ""
    return ("A retention divides the skipped model's score by the unmodified model's, so it moves with that "
            "model's competence; each retention claim part per training seed, beside the same seed's final "
            "model's held-out exact match above: " + "; ".join(items) + ".")


def allocation_by_measure(results: Mapping[str, Any]) -> str:
    """A sentence with B5's allocation effect (early sparser relative to deeper sparser, %) on every
    measure chapter 07 evaluated, per model and training seed, from its result files' ``early_minus_late``
    tables (the ledger reads the same numbers as B5's definitions, combined over the seeds). "" without
    such a table."""
    payload = results.get(C.COMPRESSION)
    if not isinstance(payload, Mapping):
        return ""
    data = payload.get("data", {})
    tables = {int(k.rsplit("-", 1)[1]): d.get("early_minus_late", [])
              for k, d in data.get("jobs", {}).items() if re.fullmatch(r"train_seed-\d+", k)}
    tables = tables or {int(payload.get("train_seed") or 0): data.get("early_minus_late", [])}
    cells: dict[tuple[str, str], list[str]] = {}
    signs: dict[str, set[bool]] = {}  # per model: the sides of 0 its testable values fall on, over measures
    for k in sorted(tables):
        for r in tables[k]:
            if not all(_finite(r.get(c)) for c in ("early_minus_late_pct", "ci_low", "ci_high")):
                continue
            if r.get("meaningful", True):
                signs.setdefault(str(r["model"]), set()).add(float(r["early_minus_late_pct"]) > 0)
            cells.setdefault((str(r["model"]), str(r["measure"])), []).append(
                f"seed {k} {_num(r['early_minus_late_pct'])}% [{_num(r['ci_low'])}, {_num(r['ci_high'])}]"
                + ("" if r.get("meaningful", True) else " (not testable)"))
    if not cells:
        return ""
    return ("Claim B5 on every measure chapter 07 evaluated (the model pruned harder early relative to pruned harder "
            "late at the same average sparsity, %; positive = early-sparser better; the ledger reads each as one of "
            "B5's definitions): " + "; ".join(f"`{m}` {meas}: {', '.join(v)}" for (m, meas), v in cells.items()) + ". "
            + (f"The sign differs between the measures for {', '.join(f'`{m}`' for m in mixed)}."
               if (mixed := [m for m, v in signs.items() if len(v) > 1]) else "Every measure agrees on the sign."))


def _final_competence(results: Mapping[str, Any]) -> dict[tuple[int, str], Mapping[str, Any]]:
    """``{(training seed, run): row}`` of the final models' competence rows: seed 0 from chapter 00's
    result file, the further seeds from the robustness chapter's."""
    out: dict[tuple[int, str], Mapping[str, Any]] = {}
    for chapter in ("10_robustness", "00_pretraining"):  # chapter 00's rows win for seed 0
        payload = results.get(chapter)
        if isinstance(payload, Mapping):
            for r in payload.get("data", {}).get("competence", []):
                if r.get("final") and r.get("run"):
                    out[(int(r.get("seed") or 0), str(r["run"]))] = r
    return out


def retrainings_summary(results: Mapping[str, Any], benchmarks: str | os.PathLike | None) -> str:
    """A paragraph on other trainings of the edition's preset configuration and seeds that a committed
    benchmark table holds (``<benchmarks>/*.csv`` rows with chapter 00's ``config_hash``, e.g. the design
    run of ``bench_triplet_design.py``): each final model's exact match beside the edition's, and the
    largest gap between two trainings of one seed against the largest gap between seeds. GPU training is
    not bit-reproducible, so a second training of one seed is another model. "" when there is none."""
    pre = results.get("00_pretraining")
    want = pre.get("data", {}).get("config_hash") if isinstance(pre, Mapping) else None
    folder = Path(benchmarks) if benchmarks else None
    if not want or folder is None or not folder.is_dir():
        return ""
    ours = _final_competence(results)
    need = {"config_hash", "run", "seed", "final", "exact_match", "em_ci_low", "em_ci_high"}
    found: list[tuple[str, Mapping[str, Any]]] = []
    for csv in sorted(folder.glob("*.csv")):
        try:
            table = pd.read_csv(csv)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            continue
        if not need <= set(table.columns):
            continue
        final = table["final"].astype(str).str.lower() == "true"
        for r in table[final & (table["config_hash"].astype(str) == str(want))].to_dict("records"):
            if (int(r["seed"]), str(r["run"])) in ours:
                found.append((csv.name, r))
    if not found:
        return ""
    parts, gaps = [], []
    for name in dict.fromkeys(n for n, _ in found):
        rows = [r for n, r in found if n == name]
        for k in sorted({int(r["seed"]) for r in rows}):
            got = []
            for r in (r for r in rows if int(r["seed"]) == k):
                here = float(ours[(k, str(r["run"]))]["exact_match"])
                em = float(r["exact_match"])
                lo, hi = _pct(float(r["em_ci_low"])), _pct(float(r["em_ci_high"]))
                got.append(f"`{r['run']}` {_pct(em)} [{lo}, {hi}] (this edition: {_pct(here)})")
                mine = ours[(k, str(r["run"]))]
                noise = (float(r["em_ci_high"]) - float(r["em_ci_low"])  # the two scores' interval half-widths
                         + float(mine["em_ci_high"]) - float(mine["em_ci_low"])) / 2
                gaps.append((abs(em - here), str(r["run"]), k, noise))
            parts.append(f"`{name}`, seed {k}: " + ", ".join(got))
    gap, run, k, noise = max(gaps)
    seeds = [float(r["exact_match"]) for (_, name), r in ours.items() if name == run]
    text = (f"Other trainings of this preset configuration (the same configuration hash) and seed in the committed "
            f"benchmark tables (`benchmarks/results/`): {'; '.join(parts)}. A second training of one seed is "
            f"another model: GPU training is not bit-reproducible, and a benchmark may have run an earlier commit "
            f"of the training code. The largest gap between two trainings of one seed is `{run}`'s, "
            f"{100 * gap:.1f} points (seed {k})")
    if len(seeds) > 1:
        span = max(seeds) - min(seeds)
        # compared with a margin: the two scores' interval half-widths, so that a few points of item noise
        # do not decide which moved further
        text += (f"; between the training seeds of this edition `{run}` spans {100 * span:.1f} points "
                 f"({len(seeds)} seeds): retraining one seed moved it "
                 + ("further than changing the seed did" if gap - span > noise else
                    "less far than changing the seed did" if span - gap > noise else
                    f"about as far as changing the seed did (the difference, {100 * abs(gap - span):.1f} points, is "
                    f"within the two scores' interval half-widths, {100 * noise:.1f} points)"))
    return text + "."


def _write_block(path: Path, start: str, end: str, body: str) -> bool:
    text = path.read_text()
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise LayerwiseError(f"{path} has no {start} ... {end} markers: add both lines where the block goes")
    new = pattern.sub(lambda _: f"{start}\n{body.strip()}\n{end}", text, count=1)
    if new == text:
        return False
    path.write_text(new)
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m layerwise.findings --intro book/intro.md --results book/results/gpu``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m layerwise.findings",
                                 description="write the claims ledger's summary into the book's intro")
    ap.add_argument("--intro", default="book/intro.md")
    ap.add_argument("--results", default="book/results/gpu", help="folder of a profile's result files")
    ap.add_argument("--benchmarks", default=None,
                    help="folder of benchmark tables with other trainings of the edition's configuration "
                    "(default: benchmarks/results beside book/)")
    a = ap.parse_args(argv)
    changed = update_intro(a.intro, a.results, a.benchmarks)
    print(f"{a.intro}: {'summary updated' if changed else 'unchanged'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
