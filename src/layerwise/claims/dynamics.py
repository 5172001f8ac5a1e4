"""Claims about how a measured quantity changes: over the denoising steps of a generation (B7,
chapter 04: the super-outlier's persistence) and over training (B8, chapter 06: the overtraining
trend of early alpha-Hill)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..config import LayerwiseError
from ..stats import paired_bootstrap
from .base import (
    EARLY_ALPHA_TREND,
    OUTLIER_PERSISTENCE,
    ClaimMetric,
    definition,
    n_early_layers,
    representatives,
)

__all__ = ["PERSISTENCE_STATISTICS", "outlier_persistence", "outlier_persistence_metrics", "early_alpha_trend",
           "overtraining_metrics"]

# ---------------------------------------------------------------------------------------------
# 04 over denoising steps (B7)
# ---------------------------------------------------------------------------------------------

#: B7's pre-registered definitions: which per-step statistic decides the dominant channel
PERSISTENCE_STATISTICS = ("max_abs", "mean_abs")


def outlier_persistence(magnitudes: np.ndarray, channel: int, *, statistic: str = "max_abs", model: str = "",
                        n_boot: int = 1000, seed: int = 0) -> ClaimMetric:
    """B7 (paper B appendix B.3): the share of (denoising step, early block) pairs at which ``channel``
    is the largest channel at the attention input (1 = it dominates at every step).

    ``magnitudes`` is ``[steps, L, d]``: each step's per-channel ``statistic`` (``max_abs``, as the
    super-outlier is found, or ``mean_abs``, as paper B's B.3 figure plots), e.g. from
    :func:`layerwise.probes.record_channels`. The interval resamples denoising steps; consecutive
    steps are not independent, so it is narrower than the truth. ``extra`` keeps the spread of the
    channel's magnitude over steps (max / min, median over early blocks).
    """
    arr = np.asarray(magnitudes, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[0] < 1:
        raise LayerwiseError(f"magnitudes must be [steps, L, d] with at least one step, got {arr.shape}: "
                             "record a generation with layerwise.probes.record_channels")
    early = arr[:, : n_early_layers(arr.shape[1])]
    hit = (early.argmax(-1) == int(channel)).astype(np.float64)  # [steps, early]
    v, ci = paired_bootstrap(lambda h: float(h.mean()), hit, n_boot=n_boot, seed=seed)
    mags = early[:, :, int(channel)]
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = float(np.median(mags.max(0) / mags.min(0)))
    return ClaimMetric(v, ci, model=model, note=f"share of {arr.shape[0]} denoising steps x {early.shape[1]} early "
                       f"blocks where channel {channel} has the largest {statistic}; interval over steps",
                       extra={"channel": int(channel), "steps": int(arr.shape[0]), "definition": statistic,
                              "magnitude_max_over_min": spread})


def outlier_persistence_metrics(traces: Mapping[str, Mapping[str, np.ndarray]], channels: Mapping[str, int],
                                families: Mapping[str, Any], *, n_boot: int = 1000, seed: int = 0,
                                pairs: Mapping[str, str] | None = None) -> dict[str, ClaimMetric]:
    """Chapter 04's B7 metrics: per diffusion model (``traces``: name -> {statistic: ``[steps, L, d]``}
    for the statistics of :data:`PERSISTENCE_STATISTICS` recorded; ``channels``: name -> its
    super-outlier) and per family (paper B's model where present). The headline is ``max_abs``; every
    statistic is written as a definition."""
    out: dict[str, ClaimMetric] = {}
    rep = representatives({n: f for n, f in families.items() if n in traces}, "B", pairs)
    for name, per_stat in traces.items():
        for stat in PERSISTENCE_STATISTICS:
            if stat not in per_stat:
                continue
            m = outlier_persistence(per_stat[stat], channels[name], statistic=stat, model=name, n_boot=n_boot,
                                    seed=seed)
            fam = next((f for f, n in rep.items() if n == name), None)
            if stat == PERSISTENCE_STATISTICS[0]:
                out[OUTLIER_PERSISTENCE.per_model(name)] = m
                if fam:
                    out[OUTLIER_PERSISTENCE.of(fam)] = m
            if fam:
                out[definition(OUTLIER_PERSISTENCE.of(fam), stat)] = m
    return out


# ---------------------------------------------------------------------------------------------
# 06 over training (B8)
# ---------------------------------------------------------------------------------------------


def early_alpha_trend(over: pd.DataFrame, *, tokens_per_step: int, n_params: int, model: str = "",
                      n_boot: int = 1000, seed: int = 0) -> ClaimMetric:
    """B8: slope of the early blocks' mean alpha-Hill against log10(tokens per parameter) over a run's
    training snapshots (paper B's overtraining reading: < 0 for the DLM, alpha falling as training
    goes on).

    ``over``: one model's rows of :func:`layerwise.spectra.checkpoint_alpha_hill` (``step``,
    ``layer``, ``role``, ``alpha``, ``early``); tokens per parameter at a snapshot is
    ``step * tokens_per_step / n_params``. The interval resamples the early modules (the same modules
    at every snapshot). ``extra["margin_scale"]`` is the early mean at the first snapshot.
    """
    d = over[over.early.astype(bool)]
    table = d.pivot_table(index=["layer", "role"], columns="step", values="alpha")  # [modules, snapshots]
    if table.shape[1] < 2:
        raise LayerwiseError(f"{model or 'this model'} has {table.shape[1]} training snapshot(s): a trend needs at "
                             "least two (keep more snapshot_fracs in the preset)")
    table = table.dropna()
    x = np.log10(np.asarray(table.columns, dtype=np.float64) * tokens_per_step / n_params)

    def slope(a: np.ndarray) -> float:
        return float(np.polyfit(x, a.mean(0), 1)[0])

    v, ci = paired_bootstrap(slope, table.to_numpy(), n_boot=n_boot, seed=seed)
    first = float(table.iloc[:, 0].mean())
    return ClaimMetric(v, ci, model=model, note=f"slope of early alpha-Hill per decade of tokens per parameter over "
                       f"{table.shape[1]} snapshots; interval over {len(table)} early modules",
                       extra={"tokens_per_param": [float(t) for t in 10 ** x], "margin_scale": abs(first),
                              "margin_scale_is": "early alpha-Hill at the first snapshot"})


def overtraining_metrics(over: pd.DataFrame, families: Mapping[str, Any], *, tokens_per_step: int,
                         n_params: Mapping[str, int], n_boot: int = 1000, seed: int = 0,
                         pairs: Mapping[str, str] | None = None) -> dict[str, ClaimMetric]:
    """Chapter 06's B8 metrics from the over-training table (column ``model``): each model's
    :func:`early_alpha_trend` and each family's (paper B's model where present). Models with fewer
    than two snapshots are left out."""
    out: dict[str, ClaimMetric] = {}
    for name in dict.fromkeys(over.model):
        g = over[over.model == name]
        if g.step.nunique() >= 2 and name in n_params:
            out[EARLY_ALPHA_TREND.per_model(name)] = early_alpha_trend(
                g, tokens_per_step=tokens_per_step, n_params=n_params[name], model=name, n_boot=n_boot, seed=seed)
    have = {n: f for n, f in families.items() if EARLY_ALPHA_TREND.per_model(n) in out}
    for fam, name in representatives(have, "B", pairs).items():
        out[EARLY_ALPHA_TREND.of(fam)] = out[EARLY_ALPHA_TREND.per_model(name)]
    return out
