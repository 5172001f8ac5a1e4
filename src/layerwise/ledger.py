"""The claims ledger: each quantitative claim of the two papers against the chapters' result files.

A claim names one metric in one chapter's result file (see :mod:`layerwise.results`) and the side of a
threshold the paper says it lies on. The metric names and the functions that compute them are
:mod:`layerwise.claims`. The verdict follows from the metric's confidence interval alone:

- **reproduced**: the whole interval lies on the paper's side of the threshold;
- **not reproduced**: the whole interval lies on the other side;
- **inconclusive**: the interval straddles the threshold, or the metric has no value or no interval
  or is flagged not meaningful (e.g. the retention of a baseline that is not above chance);
- **not run**: the chapter's result file or the metric is missing.

A claim with several parts (e.g. "DLM keeps > 90% *and* AR does not") is reproduced only when every
part is, not reproduced when any part is, and inconclusive otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from . import claims as C

Verdict = Literal["reproduced", "not reproduced", "inconclusive", "not run"]


@dataclass(frozen=True)
class Part:
    """One comparison: ``metric`` (in ``chapter``'s result file) is ``side`` of ``threshold``.

    ``computed_by`` names the :mod:`layerwise.claims` function that computes the metric.
    """

    chapter: str
    metric: str
    side: Literal[">", "<"]
    threshold: float
    computed_by: str = ""


@dataclass(frozen=True)
class Claim:
    cid: str
    paper: str
    statement: str
    paper_number: str
    parts: tuple[Part, ...]


CLAIMS: tuple[Claim, ...] = (
    Claim("A1", "A", "Consecutive-layer cosine similarity is higher for the diffusion model in early layers",
          "LLaDA above Qwen2.5 in the first layers (Fig. 2)",
          (Part(C.LAYER_SIMILARITY, C.EARLY_SIMILARITY.minus_ar("dlm"), ">", 0.0, "early_similarity_difference"),)),
    Claim("A2", "A", "Token-wise similarity shows less recency bias for the diffusion model",
          "LLaDA flatter than Qwen2.5 over token distance",
          (Part(C.TOKEN_SIMILARITY, C.RECENCY.minus_ar("dlm"), "<", 0.0, "recency_difference"),)),
    Claim("A3", "A", "Skipping ~18.75% of layers keeps > 90% for the diffusion model, and not for AR",
          "93-97% kept for LLaDA (GSM8K, MATH-500, HumanEval); AR collapses",
          (Part(C.LAYER_SKIPPING, C.RETENTION_AT_TARGET.of("dlm"), ">", 0.9, "retention_at_target"),
           Part(C.LAYER_SKIPPING, C.RETENTION_AT_TARGET.of("ar"), "<", 0.9, "retention_at_target"))),
    Claim("A4", "A", "The AR-initialised diffusion model keeps AR-like layer dynamics",
          "Dream-7B's similarity profile close to Qwen2.5's",
          (Part(C.LAYER_SIMILARITY, C.AR2DLM_CLOSER_TO_AR, ">", 0.0, "ar2dlm_closer_to_ar"),)),
    Claim("B1", "B", "A super-outlier channel dominates the attention input of early diffusion-model layers",
          "one channel orders of magnitude above the rest in LLaDA-8B (Fig. 1-2)",
          (Part(C.SUPER_OUTLIER, C.EARLY_OUTLIER_RATIO.minus_ar("dlm"), ">", 0.0,  # log10 ratios
                "early_outlier_ratio_difference"),)),
    Claim("B2", "B", "Zeroing the super-outlier turns diffusion-model outputs into repetitive loops",
          "repetitive random token loops (LLaDA-8B)",
          (Part(C.OUTLIER_ABLATION, C.REPETITION_INCREASE.of("dlm"), ">", 0.0, "repetition_increase"),)),
    Claim("B3", "B", "alpha-Hill is lower in the early layers of the diffusion model",
          "low alpha-Hill in LLaDA-8B's early layers (Fig. 4), DLM-160M below AR-160M (Fig. 6)",
          (Part(C.ALPHA_HILL, C.EARLY_ALPHA.minus_ar("dlm"), "<", 0.0, "early_alpha_difference"),)),
    Claim("B4", "B", "3-bit GPTQ costs the diffusion model much less than the AR model",
          "GSM8K drop 1.8% (LLaDA) vs 64.7% (Llama-3.1)",
          (Part(C.COMPRESSION, C.GPTQ3_CHANGE_PCT.minus_ar("dlm"), ">", 0.0, "gptq3_change_difference"),)),
    Claim("B5", "B", "At 50% average sparsity, more sparsity early helps the diffusion model and hurts AR",
          "+8.4% (LLaDA) vs -8.4% (Llama-3.1)",
          (Part(C.COMPRESSION, C.EARLY_MINUS_LATE_PCT.of("dlm"), ">", 0.0, "early_minus_late"),
           Part(C.COMPRESSION, C.EARLY_MINUS_LATE_PCT.of("ar"), "<", 0.0, "early_minus_late"))),
)


def part_verdict(part: Part, metric: dict[str, Any] | None) -> Verdict:
    """Verdict of one comparison from its metric entry (``{"value", "ci"}``) or None if missing."""
    if metric is None:
        return "not run"
    ci = metric.get("ci")  # a metric written with no value (e.g. retention of a chance-level baseline) is inconclusive
    if metric.get("value") is None or not ci or ci[0] is None or ci[1] is None:
        return "inconclusive"
    if metric.get("meaningful") is False:  # e.g. retention of a baseline that is not above chance
        return "inconclusive"
    lo, hi = float(ci[0]), float(ci[1])
    if part.side == ">":
        return "reproduced" if lo > part.threshold else "not reproduced" if hi < part.threshold else "inconclusive"
    return "reproduced" if hi < part.threshold else "not reproduced" if lo > part.threshold else "inconclusive"


def combine(verdicts: list[Verdict]) -> Verdict:
    if any(v == "not run" for v in verdicts):
        return "not run"
    if all(v == "reproduced" for v in verdicts):
        return "reproduced"
    if any(v == "not reproduced" for v in verdicts):
        return "not reproduced"
    return "inconclusive"


def _fmt(metric: dict[str, Any] | None) -> str:
    if metric is None or metric.get("value") is None:
        return "–"
    v, ci = metric["value"], metric.get("ci")
    s = f"{v:.3g}"
    if ci and ci[0] is not None:
        s += f" [{ci[0]:.3g}, {ci[1]:.3g}]"
    return s


def build_ledger(results: dict[str, dict[str, Any]], claims: tuple[Claim, ...] = CLAIMS) -> pd.DataFrame:
    """One row per claim: the paper's number, ours with its interval, models, profile, verdict, chapter.

    ``results`` is :func:`layerwise.results.load_results` output (chapter -> result payload).
    """
    rows = []
    for c in claims:
        verdicts, ours, models, profiles, chapters = [], [], [], set(), []
        for p in c.parts:
            res = results.get(p.chapter)
            m = (res or {}).get("metrics", {}).get(p.metric)
            verdicts.append(part_verdict(p, m))
            ours.append(f"{p.metric} = {_fmt(m)} (claim: {p.side} {p.threshold:g})")
            if m and m.get("model"):
                models.append(m["model"])
            if res:
                profiles.add(res.get("profile", "?"))
            if p.chapter not in chapters:
                chapters.append(p.chapter)
        rows.append({
            "claim": c.cid, "verdict": combine(verdicts), "paper": c.paper, "statement": c.statement,
            "paper's number": c.paper_number, "ours (95% CI)": "; ".join(ours),
            "models": ", ".join(dict.fromkeys(models)) or "–", "profile": ", ".join(sorted(profiles)) or "–",
            "chapter": ", ".join(chapters),
        })
    return pd.DataFrame(rows)
