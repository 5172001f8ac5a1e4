"""Claim metrics, their names, and the one definition of early layers (see :mod:`layerwise.claims`)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from ..config import LayerwiseError
from ..results import metric as _metric_entry

__all__ = [
    "EARLY_DENOMINATOR", "n_early_layers", "early_layers", "late_layers", "is_early_layer", "ClaimMetric", "MetricName",
    "DEFINITION_SEP", "definition", "WITH_BLOCK0", "WITHOUT_BLOCK0", "SITES", "over_seeds",
    "EARLY_MINUS_LATE_SIMILARITY", "AR2DLM_BRANCH_DOSE", "EARLY_BRANCH_RUN", "OUTLIER_PERSISTENCE", "EARLY_ALPHA_TREND",
    "LAYER_SIMILARITY", "TOKEN_SIMILARITY", "LAYER_SKIPPING", "SUPER_OUTLIER", "OUTLIER_ABLATION", "ALPHA_HILL",
    "COMPRESSION", "EARLY_SIMILARITY", "AR2DLM_CLOSER_TO_AR", "RECENCY", "RETENTION_AT_TARGET",
    "EARLY_OUTLIER_RATIO", "SUPER_OUTLIER_CHANNEL", "REPETITION_INCREASE", "LOOP_INCREASE", "ACCURACY_CHANGE",
    "EARLY_ALPHA", "GPTQ3_CHANGE_PCT", "EARLY_MINUS_LATE_PCT", "DIFFUSION_FAMILIES", "PAPER_MODELS", "representatives",
    "metrics_table", "format_metrics", "to_result_metrics", "NATIVE_DISRUPTION", "STAGE_RETENTION",
]

# ---------------------------------------------------------------------------------------------
# Early layers
# ---------------------------------------------------------------------------------------------

#: "early" = the first third of the blocks, rounded up
EARLY_DENOMINATOR = 3


def n_early_layers(n_layers: int) -> int:
    """How many blocks count as early: ``ceil(n_layers / 3)`` (at least 1)."""
    if int(n_layers) < 1:
        raise LayerwiseError(f"a model needs at least one block to have early layers, got n_layers={n_layers}")
    return -(-int(n_layers) // EARLY_DENOMINATOR)


def early_layers(n_layers: int) -> range:
    """The early blocks of an ``n_layers``-block model: ``range(ceil(n_layers / 3))``.

    4 blocks -> blocks 0-1; 12 -> 0-3; 28 -> 0-9; 32 -> 0-10.
    """
    return range(n_early_layers(n_layers))


def late_layers(n_layers: int) -> range:
    """The late blocks: the last ``ceil(n_layers / 3)`` (4 blocks -> 2-3; 12 -> 8-11; 32 -> 21-31)."""
    n = n_early_layers(n_layers)
    return range(int(n_layers) - n, int(n_layers))


def is_early_layer(layer: Any, n_layers: Any) -> np.ndarray:
    """Elementwise ``layer < ceil(n_layers / 3)`` (arrays or Series of block indices and depths)."""
    depth = np.asarray(n_layers, dtype=np.int64)
    if np.any(depth < 1):
        raise LayerwiseError("every model needs at least one block: check the depth column")
    return np.asarray(layer) < -(-depth // EARLY_DENOMINATOR)


# ---------------------------------------------------------------------------------------------
# Metrics and their names
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimMetric:
    """One number for the ledger: a value, its 95% interval, and whether it means anything.

    ``meaningful`` is False when the number exists but cannot support a claim (e.g. the retention of
    a baseline that is not above chance). ``extra`` holds what the chapter shows beside it (the
    configuration, sample sizes...); it goes to the result file with the metric.
    """

    value: float | None
    ci: tuple[float, float] | None = None
    meaningful: bool = True
    model: str = ""
    note: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: why the design cannot show the effect when ``meaningful`` is False (the ledger shows it)
    reason: str = ""

    def to_metric(self) -> dict[str, Any]:
        """The result-file entry (:func:`layerwise.results.metric`)."""
        more = {"reason": self.reason} if self.reason else {}
        return _metric_entry(self.value, self.ci, model=self.model, note=self.note,  # type: ignore[arg-type]
                             meaningful=bool(self.meaningful), **dict(self.extra), **more)


@dataclass(frozen=True)
class MetricName:
    """A family of metric names sharing a stem, e.g. ``early_alpha``.

    ``of("dlm")`` -> ``early_alpha_dlm``; ``minus_ar("dlm")`` -> ``early_alpha_dlm_minus_ar``;
    ``per_model("dlm", "early")`` -> ``early_alpha__dlm__early``; ``diff("dlm", "ar")`` ->
    ``early_alpha_diff__dlm__ar``.
    """

    stem: str

    def of(self, suffix: str) -> str:
        return f"{self.stem}_{suffix}"

    def minus_ar(self, family: str) -> str:
        return f"{self.stem}_{_fam(family)}_minus_ar"

    def per_model(self, model: str, *qualifiers: str) -> str:
        return "__".join([self.stem, model, *qualifiers])

    def diff(self, diffusion: str, ar: str) -> str:
        return f"{self.stem}_diff__{diffusion}__{ar}"


# chapters (result file stems)
LAYER_SIMILARITY = "01_layer_similarity"
TOKEN_SIMILARITY = "02_token_similarity"
LAYER_SKIPPING = "03_layer_skipping"
SUPER_OUTLIER = "04_super_outlier"
OUTLIER_ABLATION = "05_outlier_ablation"
ALPHA_HILL = "06_alpha_hill"
COMPRESSION = "07_compression"

# metric names (the published result files use these: renaming one makes the ledger report "not run")
EARLY_SIMILARITY = MetricName("early_similarity")  #: 01: ``of(model)``, ``minus_ar("dlm")`` (A1)
AR2DLM_CLOSER_TO_AR = "ar2dlm_closer_to_ar"  #: 01 (A4)
RECENCY = MetricName("recency")  #: 02: ``of(model)``, ``minus_ar("dlm")`` (A2)
RETENTION_AT_TARGET = MetricName("retention_at_18.75pct")  #: 03: ``per_model``, ``of(family)`` (A3)
EARLY_OUTLIER_RATIO = MetricName("early_outlier_ratio")  #: 04: ``per_model``, ``minus_ar``, ``diff`` (B1)
SUPER_OUTLIER_CHANNEL = MetricName("super_outlier_channel")  #: 04: ``per_model``
REPETITION_INCREASE = MetricName("repetition_increase")  #: 05: ``per_model(m, scope)``, ``of(family)`` (B2)
LOOP_INCREASE = MetricName("loop_increase")  #: 05
ACCURACY_CHANGE = MetricName("accuracy_change")  #: 05
EARLY_ALPHA = MetricName("early_alpha")  #: 06: ``per_model``, ``minus_ar``, ``diff`` (B3)
GPTQ3_CHANGE_PCT = MetricName("gptq3_change_pct")  #: 07: ``per_model``, ``of(family)``, ``minus_ar`` (B4)
EARLY_MINUS_LATE_PCT = MetricName("early_minus_late_pct")  #: 07: ``per_model``, ``of(family)`` (B5)

EARLY_MINUS_LATE_SIMILARITY = MetricName("early_minus_late_similarity")  #: 01: ``per_model``, ``of(family)`` (B6)
AR2DLM_BRANCH_DOSE = "ar2dlm_branch_dose"  #: 01 (A6): AR-likeness of ``ar2dlm`` minus that of the earlier branch
OUTLIER_PERSISTENCE = MetricName("outlier_persistence")  #: 04: ``per_model``, ``of(family)`` (B7)
EARLY_ALPHA_TREND = MetricName("early_alpha_trend")  #: 06: ``per_model``, ``of(family)`` (B8)
NATIVE_DISRUPTION = MetricName("native_disruption")  #: 03: ``per_model``, ``minus_ar`` (A7)
STAGE_RETENTION = MetricName("stage_retention")  #: 03: ``per_model(m, stage)``, ``of(family)`` (A8)

#: the run name of the ar2dlm model branched at 25% of the budget (A6 compares it with ``ar2dlm`` at 75%)
EARLY_BRANCH_RUN = "ar2dlm_b25"

DIFFUSION_FAMILIES = ("dlm", "ar2dlm")

# ---------------------------------------------------------------------------------------------
# Alternative definitions
# ---------------------------------------------------------------------------------------------

#: separates a metric name from the label of one of its pre-registered definitions
DEFINITION_SEP = "::"
WITH_BLOCK0 = "with_block0"  #: similarity claims: every block, the first (embedding -> block 0) included
WITHOUT_BLOCK0 = "without_block0"  #: similarity claims: block 0 left out
SITES = ("attn_input", "residual")  #: B1: where the outlier ratio is read


def definition(name: str, label: str) -> str:
    """The metric name of one definition of ``name``: ``definition("x_dlm_minus_ar", "ks")`` -> ``x_dlm_minus_ar::ks``.

    A claim's pre-registered alternative definitions (:mod:`layerwise.ledger`) are read under these
    names; the headline (the plain ``name``) is one of them.
    """
    if DEFINITION_SEP in label or not label:
        raise LayerwiseError(f"a definition label must be non-empty and free of {DEFINITION_SEP!r}, got {label!r}")
    return f"{name}{DEFINITION_SEP}{label}"


def over_seeds(per_seed: Mapping[Any, ClaimMetric]) -> ClaimMetric:
    """One metric from the same metric measured on several training seeds (seed -> metric).

    The value and interval come from :func:`layerwise.stats.seed_item_interval` over the seeds that
    produced a value and an interval; every seed's own value and interval is kept in
    ``extra["seeds"]`` (the ledger shows the spread). Not meaningful when any seed is not.
    """
    from ..stats import seed_item_interval

    if not per_seed:
        raise LayerwiseError("no seeds to combine: pass {seed: ClaimMetric} for at least one training seed")
    items = list(per_seed.items())
    ok = [(k, m) for k, m in items if m.value is not None and np.isfinite(m.value) and m.ci
          and all(c is not None and np.isfinite(c) for c in m.ci)]
    first = items[0][1]
    seeds = [{"seed": str(k), "value": m.value, "ci": list(m.ci) if m.ci else None, "meaningful": bool(m.meaningful)}
             for k, m in items]
    meaningful = all(m.meaningful for _, m in items)
    reason = next((m.reason for _, m in items if m.reason), "")
    if not ok:
        return replace(first, meaningful=meaningful, reason=reason, extra={**dict(first.extra), "seeds": seeds})
    c = seed_item_interval([float(m.value or 0.0) for _, m in ok], [m.ci for _, m in ok if m.ci])
    note = f"{first.note}; {c.note}" if first.note else c.note
    extra = {**dict(first.extra), "seeds": seeds, "n_seeds": c.n_seeds}
    scales = [float(m.extra["margin_scale"]) for _, m in ok if m.extra.get("margin_scale") is not None]
    if scales:  # a margin relative to a measured scale uses the seeds' mean scale
        extra["margin_scale"] = float(np.mean(scales))
    return replace(first, value=c.value, ci=c.interval, meaningful=meaningful, reason=reason, note=note, extra=extra)


def _fam(family: Any) -> str:
    return family.value if isinstance(family, enum.Enum) else str(family)


#: The models each paper compares, per family: paper A (chapters 01-03) LLaDA, Dream and Qwen2.5,
#: paper B (chapters 04-07) LLaDA and Llama-3.1. A subject whose name (hub id or folder) contains the
#: entry (case-insensitive; Base or Instruct alike) is its family's representative in that paper's
#: claims; a family without such a subject (the triplet of the tiny and gpu profiles) is represented
#: by its first model.
PAPER_MODELS: dict[str, dict[str, str]] = {
    "A": {"dlm": "LLaDA-8B", "ar2dlm": "Dream-v0", "ar": "Qwen2.5-7B"},
    "B": {"dlm": "LLaDA-8B", "ar": "Llama-3.1-8B"},
}


def _matches(name: str, pattern: str) -> bool:
    return pattern.lower() in str(name).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].lower()


def representatives(families: Mapping[str, Any], paper: str | None = None,
                    pairs: Mapping[str, str] | None = None) -> dict[str, str]:
    """family -> the model that represents it in a claim.

    ``pairs`` (family -> name pattern; default :data:`PAPER_MODELS` of ``paper``) picks the paper's
    own model where a subject matches; otherwise a family's first model (in ``families``' order).
    """
    if pairs is None and paper is not None:
        if paper not in PAPER_MODELS:
            raise LayerwiseError(f"unknown paper {paper!r}: use one of {', '.join(PAPER_MODELS)}")
        pairs = PAPER_MODELS[paper]
    out: dict[str, str] = {}
    for fam, pattern in (pairs or {}).items():
        match = next((n for n, f in families.items() if _fam(f) == fam and _matches(n, pattern)), None)
        if match is not None:
            out[fam] = match
    for name, fam in families.items():
        out.setdefault(_fam(fam), name)
    return out


def _representatives_first(families: Mapping[str, Any], paper: str | None = None,
                           pairs: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``families`` reordered so that each family's representative comes first in it."""
    rep = set(representatives(families, paper, pairs).values())
    return {**{n: f for n, f in families.items() if n in rep}, **{n: f for n, f in families.items() if n not in rep}}


def _by_family(families: Mapping[str, Any], family: str) -> list[str]:
    return [n for n, f in families.items() if _fam(f) == family]


def metrics_table(metrics: Mapping[str, ClaimMetric], *, unique: bool = True) -> pd.DataFrame:
    """One row per metric: name, model, value, ci_low, ci_high, meaningful, then the extras.

    With ``unique=True`` a metric stored under several names (a family's representative is also
    stored per model) appears once, under its first name.
    """
    rows, seen = [], set()
    for key, m in metrics.items():
        if unique and id(m) in seen:
            continue
        seen.add(id(m))
        lo, hi = m.ci if m.ci else (np.nan, np.nan)
        rows.append({"metric": key, "model": m.model, "value": m.value, "ci_low": lo, "ci_high": hi,
                     "meaningful": m.meaningful, **dict(m.extra)})
    return pd.DataFrame(rows)


def format_metrics(metrics: Mapping[str, ClaimMetric], digits: int = 3) -> str:
    """The metrics as text lines ``name: value [lo, hi]`` (rounded: stable under re-runs)."""
    def num(x: Any) -> str:
        return "nan" if x is None or not np.isfinite(x) else f"{round(float(x), digits) + 0.0:.{digits}f}"  # no -0.000

    lines = []
    for key, m in metrics.items():
        s = f"{key}: {num(m.value)}"
        if m.ci:
            s += f" [{num(m.ci[0])}, {num(m.ci[1])}]"
        lines.append(s + ("" if m.meaningful else " (not meaningful)"))
    return "\n".join(lines)


def to_result_metrics(metrics: Mapping[str, ClaimMetric]) -> dict[str, dict[str, Any]]:
    """``{name: result-file entry}`` for :func:`layerwise.results.save_result`."""
    return {k: m.to_metric() for k, m in metrics.items()}
