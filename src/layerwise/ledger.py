"""The claims ledger: each quantitative claim of the two papers against the chapters' result files.

A claim has one or more **parts**; a part names one metric in one chapter's result file (see
:mod:`layerwise.results`; the names and the functions that compute them are :mod:`layerwise.claims`),
the side the paper puts it on, and a **margin** derived from the paper's own wording and number: the
paper's side is ``metric > bound`` (or ``< bound``), where ``bound`` lies beyond the no-effect value
``null`` (0 for differences) by the margin. Each :class:`Part` documents its derivation
(``margin_why``). Some margins are relative to a measured scale (e.g. a quarter of the spread of a
similarity profile between blocks); the chapter saves that scale with the metric (``margin_scale``).

**Intervals.** A metric's interval covers the evaluation items (or sequences, modules...). Where a
result file holds the metric for several training seeds (``"seeds"`` in the entry, see
:func:`layerwise.claims.over_seeds`, or sweep jobs keyed by training seed), the seeds are combined with
:func:`layerwise.stats.seed_item_interval`; with one seed the item interval stands and the ledger says
that seed variance was not measured. A seed on which the chapter flagged its design unable to show the
effect (``meaningful`` false: e.g. a model that loops before any ablation) carries no information and
is left out of the combination, and the ledger names it; the part is not testable only when no seed is.

**Definitions.** Each part lists pre-registered alternative definitions (labels, or glob patterns
over labels, read under ``definition(metric, label)``): e.g. A1 with and without block 0. The verdict
of one definition:

- **reproduced**: the whole interval lies beyond the bound, on the paper's side;
- **not reproduced**: the whole interval lies on the other side of the bound (a result in the paper's
  direction but short of the margin counts here: the summary says so);
- **inconclusive**: the interval straddles the bound, or there is no interval or no margin scale;
- **not testable**: the chapter flagged that the design cannot show the effect (``meaningful`` false:
  a baseline at chance, a model already looping), with its reason;
- **not run**: missing.

A part's verdict comes from its headline and the definitions that ran: **reproduced** / **not
reproduced** when every testable one says so,
**depends on definition** when some say reproduced and others not reproduced, **not testable** when
none is testable, **inconclusive** otherwise; **not run** when the headline metric is missing. A
claim is **reproduced** when every part is; **not reproduced** when any part is; then **depends on
definition**, **not testable**, **inconclusive** in that order; **not run** when any part is.

**Components.** Where a claim holds for *every* member of a family (A8: every stage of the diffusion
schedule), the members are components, not alternative readings (``Part.components``): the part is
**not reproduced** when any component is, **reproduced** when every component is, **not testable**
when none is testable, and **inconclusive** otherwise.

The module is longer than most (~550 lines) because :data:`CLAIMS` (every part's margin with its
derivation, ~170 lines of data) belongs beside the rule that reads it.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from . import claims as C
from .stats import seed_item_interval

Verdict = Literal["reproduced", "not reproduced", "depends on definition", "inconclusive", "not testable",
                  "not run"]
VERDICTS: tuple[str, ...] = ("reproduced", "not reproduced", "depends on definition", "inconclusive",
                             "not testable", "not run")


@dataclass(frozen=True)
class Part:
    """One comparison: ``metric`` (in ``chapter``'s result file) is ``side`` of ``bound``.

    ``null`` is the value of no effect; the margin is ``|bound - null|``. With ``scaled``, ``bound``
    and ``null`` are multiples of the entry's ``margin_scale``. ``paper_value``: the paper's number in
    the metric's units (None when the paper gives none). ``definitions``: the pre-registered
    definitions (labels or glob patterns); with ``components``, the members of a claim that must hold for
    each of them (every one on the paper's side), not alternative readings. ``computed_by`` names the
    :mod:`layerwise.claims` function.
    """

    chapter: str
    metric: str
    side: Literal[">", "<"]
    bound: float
    null: float = 0.0
    scaled: bool = False
    margin_why: str = ""
    paper_value: float | None = None
    definitions: tuple[str, ...] = ()
    label: str = ""
    computed_by: str = ""
    components: bool = False

    def limits(self, entry: Mapping[str, Any] | None) -> tuple[float, float] | None:
        """``(bound, null)`` in the metric's units for this entry (None when its scale is missing)."""
        if not self.scaled:
            return self.bound, self.null
        s = (entry or {}).get("margin_scale")
        if s is None or not math.isfinite(float(s)) or float(s) <= 0:
            return None
        return self.bound * float(s), self.null * float(s)

    def margin_text(self, entry: Mapping[str, Any] | None = None) -> str:
        """The paper's side as text, e.g. ``> 0.9`` or ``< -0.1 x 3.2 = -0.32``."""
        if not self.scaled:
            return f"{self.side} {_num(self.bound)}"
        lim = self.limits(entry)
        if entry is None or lim is None:
            return f"{self.side} {_num(self.bound)} x (scale not saved)"
        return f"{self.side} {_num(self.bound)} x {_num(float(entry['margin_scale']))} = {_num(lim[0])}"


@dataclass(frozen=True)
class Claim:
    cid: str
    paper: str
    statement: str
    paper_number: str
    parts: tuple[Part, ...]


_BLOCK0 = (C.WITH_BLOCK0, C.WITHOUT_BLOCK0)
_SKIP = tuple(f"{s}:*" for s in C.SKIPPING_DEFINITION_STRATEGIES)
_SPREAD = ("a quarter of the between-block SD of the mean similarity profiles: a gap smaller than that is not "
           "visible as 'higher' in a layer-profile figure such as the paper's")
#: paper B: LLaDA loses 1.8% on GSM8K at 3-bit GPTQ, Llama-3.1 64.7%
B4_PAPER_GAP = 64.7 - 1.8

CLAIMS: tuple[Claim, ...] = (
    Claim("A1", "A", "Consecutive-layer cosine similarity is higher for the diffusion model in early layers",
          "LLaDA above Qwen2.5 in the first layers (Fig. 2)",
          (Part(C.LAYER_SIMILARITY, C.EARLY_SIMILARITY.minus_ar("dlm"), ">", 0.25, scaled=True,
                label="early similarity, DLM - AR", definitions=_BLOCK0, computed_by="early_similarity_difference",
                margin_why=f"'higher' with no number (Fig. 2): {_SPREAD}"),)),
    Claim("A2", "A", "Token-wise similarity shows less recency bias for the diffusion model",
          "LLaDA flatter than Qwen2.5 over token distance",
          (Part(C.TOKEN_SIMILARITY, C.RECENCY.minus_ar("dlm"), "<", -0.2, scaled=True, label="recency, DLM - AR",
                computed_by="recency_difference",
                margin_why="'less recency bias' with no number: the DLM's near-minus-far gap at least 20% smaller "
                           "than the AR model's (relative to the AR model's own recency)"),)),
    Claim("A3", "A", "Skipping ~18.75% of layers keeps > 90% for the diffusion model, and the AR model collapses",
          "93-97% kept for LLaDA at 6 of 32 layers (GSM8K, MATH-500, HumanEval); AR collapses",
          (Part(C.LAYER_SKIPPING, C.RETENTION_AT_TARGET.of("dlm"), ">", 0.90, null=0.5, paper_value=0.95,
                label="DLM retention", definitions=_SKIP, computed_by="retention_at_target",
                margin_why="'keeps 93-97%' and the abstract's 'over 90%': retention >= 0.90, 3 points under the "
                           "paper's lowest task; 0.5 (the collapse level) is the no-effect end"),
           Part(C.LAYER_SKIPPING, C.RETENTION_AT_TARGET.of("ar"), "<", 0.5, null=0.90, label="AR retention",
                definitions=_SKIP, computed_by="retention_at_target",
                margin_why="'collapses' with no number: the AR model loses more than half (retention < 0.5); "
                           "0.90 (the DLM's bound) is the no-effect end"))),
    Claim("A4", "A", "The AR-initialised diffusion model keeps AR-like layer dynamics",
          "Dream-7B's similarity profile close to Qwen2.5's",
          (Part(C.LAYER_SIMILARITY, C.AR2DLM_CLOSER_TO_AR, ">", 0.5, scaled=True, label="ar2dlm closer to AR",
                definitions=_BLOCK0, computed_by="ar2dlm_closer_to_ar",
                margin_why="'retains AR-like dynamics': a profile a fraction f of the way from AR to DLM scores "
                           "(1 - 2f) D (D: the DLM-AR profile distance); AR-like = within the AR quarter, "
                           "f <= 1/4, i.e. >= 0.5 D"),)),
    Claim("A5", "A", "The AR-initialised diffusion model is skipping-intolerant like the AR model",
          "Dream-7B keeps AR-like skipping intolerance (no number)",
          (Part(C.LAYER_SKIPPING, C.RETENTION_AT_TARGET.of("ar2dlm"), "<", 0.5, null=0.90,
                label="ar2dlm retention", definitions=_SKIP, computed_by="retention_at_target",
                margin_why="the same collapse level as A3's AR part: retention < 0.5 at 18.75% skipped"),)),
    Claim("A6", "A", "AR-likeness of the AR-initialised model grows with the AR training before the switch",
          "a prediction of paper A's initialisation-bias reading (no number): branch at 75% vs 25% of the budget",
          (Part(C.LAYER_SIMILARITY, C.AR2DLM_BRANCH_DOSE, ">", 0.25, scaled=True,
                label=f"AR-likeness, ar2dlm - {C.EARLY_BRANCH_RUN}", computed_by="ar2dlm_branch_dose",
                margin_why="moving the branch from 25% to 75% of the budget moves the profile at least an eighth "
                           "of the DLM-AR distance towards AR (2 x 1/8 x D = 0.25 D)"),)),
    Claim("A7", "A", "The same skip mask disrupts the diffusion model's representations less than the AR "
                     "model's under native inference",
          "the referees' check of A3 (no number): cosine disruption at matched points of each generation trajectory",
          (Part(C.LAYER_SKIPPING, C.NATIVE_DISRUPTION.minus_ar("dlm"), "<", -0.2, scaled=True,
                label="final-block disruption, DLM - AR", definitions=("at:*",),
                computed_by="native_disruption_difference",
                margin_why="'less disruption' with no number: the DLM's final-block 1 - cos at least 20% below the "
                           "AR model's (relative to the AR model's own disruption, the margin scale), as A2"),)),
    Claim("A8", "A", "The skipping tolerance holds at every stage of the diffusion schedule",
          "the referees' check of A3: > 90% kept with the skip mask in the early, middle or late third of the steps",
          (Part(C.LAYER_SKIPPING, C.STAGE_RETENTION.of("dlm"), ">", 0.90, null=0.5,
                label="DLM retention, lowest stage", definitions=("stage:*",), components=True,
                computed_by="stage_retention_min",
                margin_why="A3's bound at every stage: the lowest stage's retention >= 0.90; 0.5 (the collapse "
                           "level) is the no-effect end"),)),
    Claim("B1", "B", "A super-outlier channel dominates early diffusion-model layers, beyond what the AR model has",
          "one channel orders of magnitude above the rest in LLaDA-8B (Fig. 1-2)",
          (Part(C.SUPER_OUTLIER, C.EARLY_OUTLIER_RATIO.of("dlm"), ">", 1.0, label="DLM early log10 outlier ratio",
                definitions=C.SITES, computed_by="early_outlier_ratio",
                margin_why="'orders of magnitude above the rest', read at its weakest: at least one order, "
                           "log10(dominant / median) >= 1"),
           Part(C.SUPER_OUTLIER, C.EARLY_OUTLIER_RATIO.minus_ar("dlm"), ">", math.log10(2),
                label="early log10 outlier ratio, DLM - AR", definitions=C.SITES,
                computed_by="early_outlier_ratio_difference",
                margin_why="a diffusion-model property: at least twice the AR model's ratio (log10 2 = 0.30); "
                           "every model's top channel is several times its median"))),
    Claim("B2", "B", "Zeroing the super-outlier turns diffusion-model outputs into repetitive loops",
          "repetitive random token loops (LLaDA-8B)",
          (Part(C.OUTLIER_ABLATION, C.REPETITION_INCREASE.of("dlm"), ">", 0.2, label="DLM repetition increase",
                definitions=("attn_input/*", "residual/*"), computed_by="repetition_increase",
                margin_why="'loops' make most n-grams repeats: the repeated-bigram share rises by at least 0.2 "
                           "over zeroing random channels of similar magnitude"),)),
    Claim("B3", "B", "alpha-Hill is lower in the early layers of the diffusion model",
          "low alpha-Hill in LLaDA-8B's early layers (Fig. 4), DLM-160M below AR-160M (Fig. 6)",
          (Part(C.ALPHA_HILL, C.EARLY_ALPHA.minus_ar("dlm"), "<", -0.1, scaled=True,
                label="early alpha-Hill, DLM - AR", definitions=("fixed", "ks"), computed_by="early_alpha_difference",
                margin_why="'very low' / 'smaller' with no number: at least 10% below the AR model's early "
                           "alpha-Hill"),)),
    Claim("B4", "B", "3-bit GPTQ costs the diffusion model much less than the AR model",
          "GSM8K drop 1.8% (LLaDA) vs 64.7% (Llama-3.1): a gap of 62.9 points",
          (Part(C.COMPRESSION, C.GPTQ3_CHANGE_PCT.minus_ar("dlm"), ">", 0.25 * B4_PAPER_GAP,
                paper_value=B4_PAPER_GAP, label="3-bit GPTQ change, DLM - AR (points)",
                definitions=("*:exact_match", "*:bits_per_byte"), computed_by="gptq3_change_difference",
                margin_why="'much less', 1.8% vs 64.7%: the difference of the changes is at least a quarter of "
                           "the paper's 62.9-point gap (15.7 points)"),)),
    Claim("B5", "B", "At 50% average sparsity, more sparsity early helps the diffusion model and hurts AR",
          "+8.4% (LLaDA) vs -8.4% (Llama-3.1)",
          (Part(C.COMPRESSION, C.EARLY_MINUS_LATE_PCT.of("dlm"), ">", 4.2, paper_value=8.4,
                label="DLM early-minus-late (%)", computed_by="early_minus_late",
                definitions=("*:exact_match", "*:bits_per_byte"),
                margin_why="+8.4%: at least half the paper's effect, +4.2%"),
           Part(C.COMPRESSION, C.EARLY_MINUS_LATE_PCT.of("ar"), "<", -4.2, paper_value=-8.4,
                label="AR early-minus-late (%)", computed_by="early_minus_late",
                definitions=("*:exact_match", "*:bits_per_byte"),
                margin_why="-8.4%: at least half the paper's effect, -4.2%"))),
    Claim("B6", "B", "Redundancy is highest in early layers for the diffusion model and in late layers for AR",
          "redundancy most pronounced early in LLaDA, the reverse of AR models (no number)",
          (Part(C.LAYER_SIMILARITY, C.EARLY_MINUS_LATE_SIMILARITY.of("dlm"), ">", 0.25, scaled=True,
                label="DLM early - late similarity", definitions=_BLOCK0, computed_by="early_minus_late_similarity",
                margin_why=f"'most pronounced in earlier layers': {_SPREAD} (the model's own profile)"),
           Part(C.LAYER_SIMILARITY, C.EARLY_MINUS_LATE_SIMILARITY.of("ar"), "<", -0.25, scaled=True,
                label="AR early - late similarity", definitions=_BLOCK0, computed_by="early_minus_late_similarity",
                margin_why=f"'deeper layers grow redundant': {_SPREAD} (the model's own profile)"))),
    Claim("B7", "B", "The super-outlier persists over the denoising steps",
          "channel magnitudes of early-mid layers barely change over the diffusion steps (appendix B.3)",
          (Part(C.SUPER_OUTLIER, C.OUTLIER_PERSISTENCE.of("dlm"), ">", 0.9, label="DLM share of steps dominated",
                definitions=C.PERSISTENCE_STATISTICS, computed_by="outlier_persistence",
                margin_why="'barely change over the diffusion step': the super-outlier is the top channel of the "
                           "early blocks at >= 90% of the denoising steps"),)),
    Claim("B8", "B", "Early-layer collapse of the diffusion model grows with training (overtraining)",
          "paper B: layer collapse is driven by overtraining (~600 tokens per parameter at 160M)",
          (Part(C.ALPHA_HILL, C.EARLY_ALPHA_TREND.of("dlm"), "<", -0.1, scaled=True,
                label="DLM early alpha-Hill per decade of tokens/parameter", computed_by="early_alpha_trend",
                margin_why="'overtraining' lowers early alpha-Hill: it falls by at least 10% of its first-snapshot "
                           "value per tenfold increase of tokens per parameter"),)),
)


# ---------------------------------------------------------------------------------------------
# Reading entries: training seeds
# ---------------------------------------------------------------------------------------------

#: a sweep job's key part that names a training seed: ``train_seed-<k>``, or the preset of seed k
#: (``preset-<name>-seed<k>``; ``preset-<name>`` is seed 0)
_TRAIN_SEED = re.compile(r"^(?:train_seed-(?P<k>\d+)|preset-(?P<base>.+?)(?:-seed(?P<pk>\d+))?)$")


def seed_entries(metrics: Mapping[str, Any], name: str) -> list[tuple[int, dict[str, Any]]]:
    """``(training seed, entry)`` of the jobs ``name@<key>`` that differ only in their training seed
    (empty unless exactly one such group has at least two jobs), in seed order."""
    groups: dict[tuple[Any, ...], list[tuple[int, dict[str, Any]]]] = {}
    for k, v in metrics.items():
        if not k.startswith(f"{name}@"):
            continue
        parts = k.split("@", 1)[1].split("__")
        seeds = [m for p in parts if (m := _TRAIN_SEED.match(p))]
        if len(seeds) != 1:
            continue
        rest = tuple(p for p in parts if not _TRAIN_SEED.match(p))
        seed = int(seeds[0].group("k") or seeds[0].group("pk") or 0)
        groups.setdefault((rest, seeds[0].group("base")), []).append((seed, v))
    many = [g for g in groups.values() if len(g) >= 2]
    return sorted(many[0], key=lambda sv: sv[0]) if len(many) == 1 else []


def _has_number(e: Mapping[str, Any]) -> bool:
    ci = e.get("ci") or [None, None]
    return e.get("value") is not None and ci[0] is not None and ci[1] is not None


def resolve_entry(metrics: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """The metric ``name`` with its interval over training seeds where the file holds several.

    Seeds come from the entry's ``seeds`` list (:func:`layerwise.claims.over_seeds`, already combined:
    kept as is) or from sweep jobs whose keys differ only in the training seed (``train_seed-<k>``,
    or ``preset-<name>-seed<k>`` beside ``preset-<name>``), combined here with
    :func:`layerwise.stats.seed_item_interval` over the seeds whose entry is testable (the others are
    listed under ``seeds_excluded`` with ``excluded_reason``). A job key ``seed-<k>`` is the chapter's evaluation
    seed, not a training seed: it is not combined. The result carries ``n_seeds`` and ``seed_values``.
    """
    entry = metrics.get(name)
    pairs = seed_entries(metrics, name)
    if entry is not None and entry.get("seeds"):
        seeds = [s for s in entry["seeds"] if _has_number(s)]
        return {**entry, "n_seeds": len(entry["seeds"]), "seed_values": [s["value"] for s in seeds]}
    if len(pairs) >= 2:
        # a seed whose chapter flagged the design unable to show the effect (e.g. a model already
        # looping before the ablation) carries no information: the testable seeds decide, and the
        # entry names the excluded ones; with none testable the entry is not testable
        testable = [(k, j) for k, j in pairs if j.get("meaningful", True) is not False]
        excluded = [k for k, j in pairs if j.get("meaningful", True) is False]
        why_excluded = next((str(j.get("reason") or j.get("note") or "") for k, j in pairs
                             if j.get("meaningful", True) is False), "")
        jobs = [j for _, j in (testable or pairs)]
        ok = [(k, j) for k, j in (testable or pairs) if _has_number(j)]
        base = dict(testable[0][1] if testable else (entry or pairs[0][1]))
        meaningful = bool(testable)
        reason = "" if testable else next((j["reason"] for j in jobs if j.get("reason")), base.get("reason", ""))
        extra = ({"seeds_excluded": excluded, "excluded_reason": why_excluded} if testable and excluded else {})
        if not ok:
            return {**base, **extra, "meaningful": meaningful, "reason": reason, "n_seeds": len(jobs),
                    "seed_values": []}
        c = seed_item_interval([j["value"] for _, j in ok], [tuple(j["ci"]) for _, j in ok])
        scales = [j["margin_scale"] for _, j in ok if j.get("margin_scale") is not None]
        note = c.note + (f"; training seed{'s' if len(excluded) > 1 else ''} {', '.join(map(str, excluded))} "
                         f"not testable, left out" if extra else "")
        out = {**base, **extra, "value": c.value, "ci": list(c.interval), "meaningful": meaningful,
               "reason": reason, "n_seeds": c.n_seeds, "seed_values": list(c.seed_values), "seed_note": note,
               "seed_ids": [k for k, _ in ok]}
        if scales:
            out["margin_scale"] = sum(scales) / len(scales)
        return out
    if entry is None:
        return None
    return {**entry, "n_seeds": 1, "seed_values": [entry["value"]] if entry.get("value") is not None else []}


# ---------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------


def definition_verdict(part: Part, metric: Mapping[str, Any] | None) -> tuple[Verdict, str]:
    """Verdict of one metric entry (one definition) against the part's bound, and why."""
    if metric is None:
        return "not run", "missing"
    if metric.get("meaningful") is False:
        return "not testable", str(metric.get("reason") or metric.get("note") or "flagged not meaningful")
    if not _has_number(metric):
        return "inconclusive", "no value or no interval"
    lim = part.limits(metric)
    if lim is None:
        return "inconclusive", "the margin's scale was not saved: re-run the chapter"
    lo, hi = float(metric["ci"][0]), float(metric["ci"][1])
    bound = lim[0]
    if part.side == ">":
        return ("reproduced", "") if lo > bound else ("not reproduced", "") if hi < bound else ("inconclusive", "")
    return ("reproduced", "") if hi < bound else ("not reproduced", "") if lo > bound else ("inconclusive", "")


def part_verdict(part: Part, metric: Mapping[str, Any] | None) -> Verdict:
    """Verdict of one comparison from its metric entry (``{"value", "ci", ...}``) or None if missing."""
    return definition_verdict(part, metric)[0]


def normalised(part: Part, metric: Mapping[str, Any] | None) -> tuple[float, float, float] | None:
    """``(value, ci_low, ci_high)`` on the part's own scale: 0 = no effect (``null``), 1 = the bound,
    > 1 = the paper's side beyond the margin (None without a value or a scale)."""
    if metric is None or metric.get("value") is None:
        return None
    lim = part.limits(metric)
    if lim is None or lim[0] == lim[1]:
        return None
    bound, null = lim
    ci = metric.get("ci") or [metric["value"], metric["value"]]
    if ci[0] is None or ci[1] is None:
        ci = [metric["value"], metric["value"]]
    xs = sorted((float(c) - null) / (bound - null) for c in ci)
    return (float(metric["value"]) - null) / (bound - null), xs[0], xs[1]


def direction(part: Part, metric: Mapping[str, Any] | None) -> str:
    """Where the estimate lies: 'beyond the margin', 'paper's direction, within the margin', 'opposite
    direction', or '' without a value."""
    n = normalised(part, metric)
    if n is None:
        return ""
    return "beyond the margin" if n[0] >= 1 else "paper's direction, within the margin" if n[0] > 0 else \
        "opposite direction"


@dataclass
class DefinitionResult:
    label: str
    name: str
    entry: dict[str, Any] | None
    verdict: Verdict
    reason: str


@dataclass
class PartResult:
    part: Part
    entry: dict[str, Any] | None
    verdict: Verdict
    definitions: list[DefinitionResult] = field(default_factory=list)


def _vote(verdicts: Sequence[Verdict]) -> Verdict:
    testable = [v for v in verdicts if v not in ("not testable", "not run")]
    if not testable:
        return "not testable" if "not testable" in verdicts else "not run"
    if all(v == "reproduced" for v in testable):
        return "reproduced"
    if all(v == "not reproduced" for v in testable):
        return "not reproduced"
    if "reproduced" in testable and "not reproduced" in testable:
        return "depends on definition"
    return "inconclusive"


def _every(verdicts: Sequence[Verdict]) -> Verdict:
    """A part whose definitions are components: it holds only if it holds for each of them."""
    testable = [v for v in verdicts if v not in ("not testable", "not run")]
    if "not reproduced" in testable:
        return "not reproduced"
    if not testable:
        return "not testable" if "not testable" in verdicts else "not run"
    return "reproduced" if all(v == "reproduced" for v in verdicts if v != "not run") else "inconclusive"


def evaluate_part(part: Part, metrics: Mapping[str, Any]) -> PartResult:
    """The part's headline entry, each pre-registered definition's entry and verdict, and the part's verdict."""
    entry = resolve_entry(metrics, part.metric)
    prefix = part.metric + C.DEFINITION_SEP
    saved = {k[len(prefix):]: k for k in metrics if k.startswith(prefix) and "@" not in k}
    head_label = (entry or {}).get("label") or (entry or {}).get("definition")
    if head_label and str(head_label) not in saved:  # a headline saved only under the plain name
        saved[str(head_label)] = part.metric
    defs: list[DefinitionResult] = []
    for pattern in part.definitions:
        labels = [s for s in saved if fnmatch.fnmatchcase(s, pattern)]
        if not labels:
            defs.append(DefinitionResult(pattern, C.definition(part.metric, pattern), None, "not run", "missing"))
        for label in labels:
            e = resolve_entry(metrics, saved[label])
            v, why = definition_verdict(part, e)
            defs.append(DefinitionResult(label, saved[label], e, v, why))
    if entry is None:
        return PartResult(part, None, "not run", defs)
    rule = _every if part.components else _vote
    verdict = rule([definition_verdict(part, entry)[0], *(d.verdict for d in defs if d.verdict != "not run")])
    return PartResult(part, entry, verdict, defs)


def combine(verdicts: list[Verdict]) -> Verdict:
    """A claim's verdict from its parts' (see the module docstring)."""
    if any(v == "not run" for v in verdicts):
        return "not run"
    if all(v == "reproduced" for v in verdicts):
        return "reproduced"
    for v in ("not reproduced", "depends on definition", "not testable"):
        if v in verdicts:
            return v
    return "inconclusive"


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------


def _num(x: float | None) -> str:
    return "–" if x is None or not math.isfinite(float(x)) else f"{float(x):.3g}"


def _fmt(metric: Mapping[str, Any] | None) -> str:
    if metric is None or metric.get("value") is None:
        return "–"
    s = _num(metric["value"])
    ci = metric.get("ci")
    if ci and ci[0] is not None:
        s += f" [{_num(ci[0])}, {_num(ci[1])}]"
    return s


def _seeds_text(entry: Mapping[str, Any] | None) -> str:
    e = entry or {}
    n = int(e.get("n_seeds", 1))
    text = f"{n} seeds" if n > 1 else "1 seed"
    if e.get("seeds_excluded"):
        left = ", ".join(str(k) for k in e["seeds_excluded"])
        text += f" testable of {n + len(e['seeds_excluded'])}; seed {left} left out as not testable"
    return text


def _part_sentence(r: PartResult) -> str:
    p, e = r.part, r.entry
    name = p.label or p.metric
    if e is None:
        return f"{name}: not run"
    head_v, why = definition_verdict(p, e)
    s = f"{name} = {_fmt(e)} ({_seeds_text(e)}; paper's side {p.margin_text(e)})"
    if head_v == "not testable":
        return f"{s}: not testable ({why})"
    n = normalised(p, e)
    if head_v == "reproduced":
        s += ": the whole interval beyond the margin"
    elif head_v == "not reproduced":
        lim = p.limits(e)
        s += (": the whole interval in the opposite direction" if n and n[2] <= 0 else
              ": in the paper's direction but the whole interval short of the margin" if n and n[1] > 0 else
              ": the whole interval short of the margin"
              + (f", and it includes {_num(lim[1])}, this part's no-effect value" if lim else ""))
    else:
        s += f": inconclusive ({why})" if why else ": the interval straddles the bound"
    return s


def summary_sentence(cid: str, verdict: Verdict, results: list[PartResult]) -> str:
    """One sentence per claim, generated from the numbers."""
    out = [f"{cid} {verdict}: " + "; ".join(_part_sentence(r) for r in results) + "."]
    for r in results:
        ran = [d for d in r.definitions if d.verdict != "not run"]
        missing = [d.label for d in r.definitions if d.verdict == "not run"]
        if r.verdict == "depends on definition" or (ran and len({d.verdict for d in ran}) > 1):
            groups: dict[str, list[str]] = {}
            for d in ran:
                groups.setdefault(d.verdict, []).append(f"{d.label} ({_num((d.entry or {}).get('value'))})")
            out.append(f"{r.part.label or r.part.metric} by definition: "
                       + "; ".join(f"{v}: {', '.join(ls)}" for v, ls in groups.items()) + ".")
        if missing and r.entry is not None:
            out.append(f"Definitions not run for {r.part.label or r.part.metric}: {', '.join(missing)}.")
    if any(r.entry is not None and int(r.entry.get("n_seeds", 1)) == 1 for r in results):
        out.append("One training seed: seed variance not measured.")
    return " ".join(out)


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def evaluate(results: Mapping[str, Mapping[str, Any]], claims: tuple[Claim, ...] = CLAIMS
             ) -> list[tuple[Claim, Verdict, list[PartResult]]]:
    """Every claim's verdict and its parts' results from :func:`layerwise.results.load_results` output."""
    out = []
    for c in claims:
        parts = [evaluate_part(p, (results.get(p.chapter) or {}).get("metrics", {})) for p in c.parts]
        out.append((c, combine([r.verdict for r in parts]), parts))
    return out


def build_ledger(results: Mapping[str, Mapping[str, Any]], claims: tuple[Claim, ...] = CLAIMS) -> pd.DataFrame:
    """One row per claim: verdict, ours with its interval (over seeds where measured), the margin, the
    paper's number, models, profile, chapter and the generated summary sentence."""
    rows = []
    for c, verdict, parts in evaluate(results, claims):
        models, profiles, chapters = [], set(), []
        for r in parts:
            if r.entry and r.entry.get("model"):
                models.append(r.entry["model"])
            res = results.get(r.part.chapter)
            if res:
                profiles.add(res.get("profile", "?"))
            if r.part.chapter not in chapters:
                chapters.append(r.part.chapter)
        rows.append({
            "claim": c.cid, "verdict": verdict, "paper": c.paper, "statement": c.statement,
            "paper's number": c.paper_number,
            "ours (95% CI)": "; ".join(f"{r.part.label or r.part.metric} = {_fmt(r.entry)} ({_seeds_text(r.entry)})"
                                       if r.entry else f"{r.part.label or r.part.metric}: not run" for r in parts),
            "margin (paper's side)": "; ".join(r.part.margin_text(r.entry) for r in parts),
            "models": ", ".join(dict.fromkeys(models)) or "–", "profile": ", ".join(sorted(profiles)) or "–",
            "chapter": ", ".join(chapters), "summary": summary_sentence(c.cid, verdict, parts),
        })
    return pd.DataFrame(rows)


def sensitivity_table(results: Mapping[str, Mapping[str, Any]], claims: tuple[Claim, ...] = CLAIMS,
                      *, wide: bool = False) -> pd.DataFrame:
    """Every pre-registered definition of every part: value, interval, verdict and direction.

    ``wide=True``: one row per claim, one column per definition (``definition 1``, ...), each cell
    ``part / definition: value -> verdict (direction)``.
    """
    rows = []
    for c, _, parts in evaluate(results, claims):
        for r in parts:
            for d in r.definitions:
                rows.append({"claim": c.cid, "part": r.part.label or r.part.metric, "definition": d.label,
                             "ours (95% CI)": _fmt(d.entry), "seeds": _seeds_text(d.entry) if d.entry else "–",
                             "verdict": d.verdict, "direction": direction(r.part, d.entry) or d.reason})
    long = pd.DataFrame(rows, columns=["claim", "part", "definition", "ours (95% CI)", "seeds", "verdict",
                                       "direction"])
    if not wide:
        return long
    cells: dict[str, list[str]] = {}
    for _, row in long.iterrows():
        cells.setdefault(row.claim, []).append(f"{row.part} / {row.definition}: {row['ours (95% CI)']} "
                                               f"({row.seeds}) -> "
                                               f"{row.verdict}" + (f" ({row.direction})" if row.direction else ""))
    width = max((len(v) for v in cells.values()), default=0)
    return pd.DataFrame([{"claim": k, **{f"definition {i + 1}": (v[i] if i < len(v) else "") for i in range(width)}}
                         for k, v in cells.items()])


def seed_table(results: Mapping[str, Mapping[str, Any]], claims: tuple[Claim, ...] = CLAIMS) -> pd.DataFrame:
    """Per claim part: how many training seeds, their values and standard deviation."""
    rows = []
    for c, _, parts in evaluate(results, claims):
        for r in parts:
            e = r.entry or {}
            vals = [float(v) for v in e.get("seed_values", []) if v is not None]
            sd = _num(float(pd.Series(vals).std())) if len(vals) > 1 else "–"
            rows.append({"claim": c.cid, "part": r.part.label or r.part.metric, "seeds": int(e.get("n_seeds", 0)),
                         "seed values": ", ".join(_num(v) for v in vals) or "–", "seed SD": sd,
                         "note": ("not run" if not e else "seed variance not measured" if len(vals) < 2
                                  else "interval: seed t-interval widened by the item variance")
                         + (f"; seed {', '.join(map(str, e['seeds_excluded']))} left out as not testable"
                            if e.get("seeds_excluded") else "")})
    return pd.DataFrame(rows)


def seed_replicates(results: Mapping[str, Mapping[str, Any]], claims: tuple[Claim, ...] = CLAIMS) -> pd.DataFrame:
    """Every claim part's headline per training seed: one row per (claim, part, seed) with the seed's
    value and item interval, whether the chapter flagged that seed's design able to show the effect
    (``testable``; the ledger leaves the others out), and the ledger's interval over the seeds
    (:func:`resolve_entry`) beside it. A part measured on one seed has one row (its seed from the result
    file, 0 by default)."""
    rows = []
    for c in claims:
        for p in c.parts:
            res = results.get(p.chapter) or {}
            metrics = res.get("metrics", {})
            combined = resolve_entry(metrics, p.metric)
            if combined is None:
                continue
            per_seed: list[tuple[Any, Mapping[str, Any]]] = list(seed_entries(metrics, p.metric))
            if combined.get("seeds"):
                per_seed = [(s.get("seed"), s) for s in combined["seeds"]]
            elif not per_seed:
                per_seed = [(int(res.get("train_seed") or 0), combined)]
            ci = combined.get("ci") or [None, None]
            for k, e in per_seed:
                ci_k = e.get("ci") or [None, None]
                rows.append({"claim": c.cid, "part": p.label or p.metric, "chapter": p.chapter, "metric": p.metric,
                             "train_seed": k, "value": e.get("value"), "ci_low": ci_k[0], "ci_high": ci_k[1],
                             "model": e.get("model") or combined.get("model") or "",
                             "testable": e.get("meaningful", True) is not False,
                             "n_seeds": int(combined.get("n_seeds", 1)), "combined": combined.get("value"),
                             "combined_low": ci[0], "combined_high": ci[1]})
    cols = ["claim", "part", "chapter", "metric", "train_seed", "value", "ci_low", "ci_high", "model", "testable",
            "n_seeds", "combined", "combined_low", "combined_high"]
    return pd.DataFrame(rows, columns=cols)


def margins_table(claims: tuple[Claim, ...] = CLAIMS) -> pd.DataFrame:
    """Per claim part: the paper's side with its margin, how the margin follows from the paper's
    wording, the paper's value in the metric's units, and the pre-registered definitions."""
    return pd.DataFrame([{"claim": c.cid, "part": p.label or p.metric, "metric": p.metric,
                          "paper's side": p.margin_text() if not p.scaled else
                          f"{p.side} {_num(p.bound)} x scale",
                          "no effect": _num(p.null) + (" x scale" if p.scaled and p.null else ""),
                          "derived from": p.margin_why,
                          "paper's value": _num(p.paper_value) if p.paper_value is not None else "–",
                          "definitions": ", ".join(f"`{d}`" for d in p.definitions) or "headline only"}
                         for c in claims for p in c.parts])


def normalised_table(results: Mapping[str, Mapping[str, Any]], claims: tuple[Claim, ...] = CLAIMS) -> pd.DataFrame:
    """Every part's headline and definitions on the part's own scale (:func:`normalised`: 0 = no
    effect, 1 = the margin's bound, > 1 = the paper's side beyond it), with the paper's value on the
    same scale: one row per (claim, part, definition), ``definition`` "headline" for the headline."""
    rows = []
    for c, _, parts in evaluate(results, claims):
        for r in parts:
            paper = None
            if r.part.paper_value is not None:
                lim = r.part.limits(r.entry)
                if lim is not None:
                    paper = (r.part.paper_value - lim[1]) / (lim[0] - lim[1])
            items = [("headline", r.entry, definition_verdict(r.part, r.entry)[0])]
            items += [(d.label, d.entry, d.verdict) for d in r.definitions if d.entry is not None]
            for label, e, v in items:
                n = normalised(r.part, e)
                rows.append({"claim": c.cid, "part": r.part.label or r.part.metric, "definition": label,
                             "x": n[0] if n else float("nan"), "x_low": n[1] if n else float("nan"),
                             "x_high": n[2] if n else float("nan"), "verdict": v, "part_verdict": r.verdict,
                             "paper_x": paper if paper is not None else float("nan")})
    return pd.DataFrame(rows, columns=["claim", "part", "definition", "x", "x_low", "x_high", "verdict", "part_verdict",
                                       "paper_x"])
