"""Paper A's claims (A1-A4): layer and token similarity, layer skipping (chapters 01-03)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..config import LayerwiseError
from ..stats import paired_bootstrap
from .base import (
    AR2DLM_CLOSER_TO_AR,
    EARLY_SIMILARITY,
    RECENCY,
    RETENTION_AT_TARGET,
    ClaimMetric,
    _fam,
    _representatives_first,
    n_early_layers,
    representatives,
)

__all__ = [
    "early_similarity", "early_similarity_difference", "ar2dlm_closer_to_ar", "layer_similarity_metrics",
    "model_recency", "recency", "recency_difference", "token_similarity_metrics", "closest_to_fraction",
    "retention_at_target", "layer_skipping_metrics",
]

# ---------------------------------------------------------------------------------------------
# 01 layer similarity (A1, A4)
# ---------------------------------------------------------------------------------------------


def _early_mean(per_sequence: np.ndarray) -> np.ndarray:
    """[n_seqs, L] -> [n_seqs]: each sequence's mean over the early blocks."""
    return per_sequence[:, : n_early_layers(per_sequence.shape[1])].mean(1)


def early_similarity(per_sequence: np.ndarray, *, model: str = "", n_boot: int = 1000, seed: int = 0) -> ClaimMetric:
    """Mean consecutive-layer cosine over the early blocks; interval over sequences.

    ``per_sequence`` is ``[n_seqs, L]``: ``c_s(l)`` of :func:`layerwise.probes.layer_similarity`.
    """
    v, ci = paired_bootstrap(lambda p: _early_mean(p).mean(), per_sequence, n_boot=n_boot, seed=seed)
    L = per_sequence.shape[1]
    return ClaimMetric(v, ci, model=model, note=f"mean cos over the first {n_early_layers(L)} of {L} blocks")


def early_similarity_difference(diffusion: np.ndarray, ar: np.ndarray, *, paired: bool, model: str = "",
                                n_boot: int = 1000, seed: int = 0) -> ClaimMetric:
    """A1: early-block similarity of the diffusion model minus the AR model's (paper A: > 0).

    Both are ``[n_seqs, L]`` per-sequence similarities; ``paired`` when the two models read the same
    sequences (one tokenizer), so one resample of sequences serves both.
    """
    v, ci = paired_bootstrap(lambda x, y: _early_mean(x).mean() - _early_mean(y).mean(), diffusion, ar,
                             n_boot=n_boot, seed=seed, paired=paired)
    return ClaimMetric(v, ci, model=model, note="paper A: > 0")


def ar2dlm_closer_to_ar(ar2dlm: np.ndarray, dlm: np.ndarray, ar: np.ndarray, *, paired: bool, model: str = "",
                        n_boot: int = 1000, seed: int = 0) -> ClaimMetric:
    """A4: is the AR-initialised diffusion model's similarity profile closer to the AR model's?

    ``mean_l |profile(ar2dlm) - profile(dlm)| - mean_l |profile(ar2dlm) - profile(ar)|`` over all
    blocks, where a profile is the mean over sequences of ``[n_seqs, L]`` (paper A: > 0). The three
    models need the same depth.
    """
    if not dlm.shape[1] == ar.shape[1] == ar2dlm.shape[1]:
        raise LayerwiseError(f"profiles of different depths {dlm.shape[1]}, {ar.shape[1]}, {ar2dlm.shape[1]}: "
                             "compare models with the same number of blocks")

    def closer(d_: np.ndarray, a_: np.ndarray, m_: np.ndarray) -> float:
        return float(np.abs(m_.mean(0) - d_.mean(0)).mean() - np.abs(m_.mean(0) - a_.mean(0)).mean())

    v, ci = paired_bootstrap(closer, dlm, ar, ar2dlm, n_boot=n_boot, seed=seed, paired=paired)
    note = "mean |profile(ar2dlm) - profile(dlm)| - mean |profile(ar2dlm) - profile(ar)|; paper A: > 0"
    return ClaimMetric(v, ci, model=model, note=note)


def layer_similarity_metrics(per_sequence: Mapping[str, np.ndarray], families: Mapping[str, Any], *, paired: bool,
                             n_boot: int = 1000, seed: int = 0,
                             pairs: Mapping[str, str] | None = None) -> dict[str, ClaimMetric]:
    """Chapter 01's metrics from each model's clean-text ``[n_seqs, L]`` similarities; the families'
    representatives are paper A's models where present (``pairs`` overrides, :func:`representatives`)."""
    out = {EARLY_SIMILARITY.of(n): early_similarity(p, model=n, n_boot=n_boot, seed=seed)
           for n, p in per_sequence.items()}
    rep = representatives(families, "A", pairs)
    if "dlm" in rep and "ar" in rep:
        out[EARLY_SIMILARITY.minus_ar("dlm")] = early_similarity_difference(
            per_sequence[rep["dlm"]], per_sequence[rep["ar"]], paired=paired, model=f"{rep['dlm']} - {rep['ar']}",
            n_boot=n_boot, seed=seed)
    if {"dlm", "ar", "ar2dlm"} <= set(rep):
        d, a, m = (per_sequence[rep[f]] for f in ("dlm", "ar", "ar2dlm"))
        if d.shape[1] == a.shape[1] == m.shape[1]:
            out[AR2DLM_CLOSER_TO_AR] = ar2dlm_closer_to_ar(m, d, a, paired=paired, model=rep["ar2dlm"],
                                                            n_boot=n_boot, seed=seed)
    return out


# ---------------------------------------------------------------------------------------------
# 02 token similarity (A2)
# ---------------------------------------------------------------------------------------------


def model_recency(per_sequence_recency: np.ndarray) -> float:
    """Mean over block outputs (states 1..L) and sequences of the recency gap: ``[n, L+1]`` -> float."""
    return float(per_sequence_recency[:, 1:].mean())


def recency(per_sequence_recency: np.ndarray, *, model: str = "", n_boot: int = 1000, seed: int = 0) -> ClaimMetric:
    """A model's recency (near-minus-far similarity gap, mean over block outputs); interval over sequences."""
    v, ci = paired_bootstrap(model_recency, per_sequence_recency, n_boot=n_boot, seed=seed)
    return ClaimMetric(v, ci, model=model, note="mean near-minus-far gap over block outputs")


def recency_difference(diffusion: np.ndarray, ar: np.ndarray, *, paired: bool, model: str = "",
                       n_boot: int = 1000, seed: int = 0) -> ClaimMetric:
    """A2: recency of the diffusion model minus the AR model's (paper A: < 0, less recency bias).

    Both are ``per_sequence_recency`` arrays ``[n_seqs, L+1]`` of :func:`layerwise.probes.token_similarity`.
    """
    v, ci = paired_bootstrap(lambda x, y: model_recency(x) - model_recency(y), diffusion, ar,
                             n_boot=n_boot, seed=seed, paired=paired)
    return ClaimMetric(v, ci, model=model, note="paper A: < 0 (less recency bias in the DLM)")


def token_similarity_metrics(per_sequence_recency: Mapping[str, np.ndarray], families: Mapping[str, Any], *,
                             paired: bool, n_boot: int = 1000, seed: int = 0,
                             pairs: Mapping[str, str] | None = None) -> dict[str, ClaimMetric]:
    """Chapter 02's metrics from each model's ``[n_seqs, L+1]`` per-sequence recency (representatives:
    paper A's models where present)."""
    out = {RECENCY.of(n): recency(p, model=n, n_boot=n_boot, seed=seed) for n, p in per_sequence_recency.items()}
    rep = representatives(families, "A", pairs)
    if "dlm" in rep and "ar" in rep:
        out[RECENCY.minus_ar("dlm")] = recency_difference(
            per_sequence_recency[rep["dlm"]], per_sequence_recency[rep["ar"]], paired=paired,
            model=f"{rep['dlm']} - {rep['ar']}", n_boot=n_boot, seed=seed)
    return out


# ---------------------------------------------------------------------------------------------
# 03 layer skipping (A3)
# ---------------------------------------------------------------------------------------------


def closest_to_fraction(curve: pd.DataFrame, target_fraction: float) -> pd.DataFrame:
    """Per (model, strategy): the row whose skipped share ``k / layers`` is closest to ``target_fraction``.

    ``curve`` has one row per (model, strategy, k) with columns ``k`` and ``layers`` (ties: smaller k).
    """
    rows = [d.iloc[(d.k / d.layers - target_fraction).abs().argmin()]
            for _, d in curve.groupby(["model", "strategy"])]
    return pd.DataFrame(rows).reset_index(drop=True).infer_objects()


def retention_at_target(curve: pd.DataFrame, model: str, *, strategy: str, target_fraction: float,
                        what: str = "") -> ClaimMetric:
    """A3: retention of ``model`` with ``strategy`` at the configuration closest to ``target_fraction``.

    ``curve`` holds one task's retention per (model, strategy, k): columns ``retention``, ``ci_low``,
    ``ci_high``, ``meaningful``, ``k``, ``layers``, ``flops_reduction`` (paper A: > 0.9 for the
    diffusion model, < 0.9 for AR at 6 of 32 blocks). Not meaningful when the unmodified model is not
    above chance. ``what`` describes the task and items in the note.
    """
    d = curve[(curve.model == model) & (curve.strategy == strategy)]
    if d.empty:
        raise LayerwiseError(f"no retention rows for model {model!r} and strategy {strategy!r}: "
                             "evaluate that strategy or pick another headline strategy")
    row = closest_to_fraction(d, target_fraction).iloc[0]
    note = (f"{what + ', ' if what else ''}strategy {strategy}, {row.k} of {row.layers} blocks skipped "
            f"({100 * row.flops_reduction:.1f}% of FLOPs)"
            + ("" if row.meaningful else "; baseline not above chance: retention meaningless"))
    return ClaimMetric(float(row.retention), (float(row.ci_low), float(row.ci_high)), meaningful=bool(row.meaningful),
                       model=model, note=note, extra={"k": int(row.k), "layers": int(row.layers),
                                                      "flops_reduction": float(row.flops_reduction)})


def layer_skipping_metrics(curve: pd.DataFrame, families: Mapping[str, Any], *, strategy: str,
                           target_fraction: float, what: str = "",
                           pairs: Mapping[str, str] | None = None) -> dict[str, ClaimMetric]:
    """Chapter 03's metrics: every model's retention at the target fraction, and each family's
    representative's (paper A's models where present, else the family's first)."""
    out: dict[str, ClaimMetric] = {}
    for name, fam in _representatives_first(families, "A", pairs).items():
        m = retention_at_target(curve, name, strategy=strategy, target_fraction=target_fraction, what=what)
        out[RETENTION_AT_TARGET.per_model(name)] = m
        out.setdefault(RETENTION_AT_TARGET.of(_fam(fam)), m)
    return out
