"""Paper B's claims (B1-B5): super-outlier, its ablation, alpha-Hill, compression (chapters 04-07)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np
import pandas as pd

from ..config import LayerwiseError
from ..stats import difference_interval, paired_bootstrap
from .base import (
    ACCURACY_CHANGE,
    DIFFUSION_FAMILIES,
    EARLY_ALPHA,
    EARLY_MINUS_LATE_PCT,
    EARLY_OUTLIER_RATIO,
    GPTQ3_CHANGE_PCT,
    LOOP_INCREASE,
    REPETITION_INCREASE,
    SUPER_OUTLIER_CHANNEL,
    ClaimMetric,
    _by_family,
    _fam,
    _representatives_first,
    is_early_layer,
    n_early_layers,
)

__all__ = [
    "OutlierStats", "early_log_outlier_ratio", "early_outlier_ratio", "early_outlier_ratio_difference",
    "super_outlier_channel", "super_outlier_metrics", "ABLATION_KINDS", "ablation_difference",
    "repetition_increase", "outlier_ablation_metrics", "early_alpha", "early_alpha_difference",
    "alpha_hill_metrics", "retention_change_pct", "gptq3_change_difference", "relative_change_pct",
    "early_minus_late", "compression_metrics",
]

# ---------------------------------------------------------------------------------------------
# 04 super-outlier (B1)
# ---------------------------------------------------------------------------------------------


class OutlierStats(Protocol):
    """What :func:`super_outlier_metrics` reads of :class:`layerwise.probes.SiteChannelStats`."""

    @property
    def super_outlier(self) -> int: ...
    @property
    def layers_dominated(self) -> np.ndarray: ...
    @property
    def token_share(self) -> np.ndarray: ...
    @property
    def num_layers(self) -> int: ...


def early_log_outlier_ratio(ratios: np.ndarray) -> np.ndarray:
    """Mean over the early blocks of log10(outlier ratio): ``[..., L]`` -> ``[...]``."""
    return np.log10(ratios[..., : n_early_layers(ratios.shape[-1])]).mean(-1)


def early_outlier_ratio(group_ratios: np.ndarray, *, model: str = "", n_boot: int = 1000,
                        seed: int = 0) -> ClaimMetric:
    """A model's early-block log10 outlier ratio; ``group_ratios`` ``[groups, L]``, interval over groups."""
    v, ci = paired_bootstrap(np.mean, early_log_outlier_ratio(group_ratios), n_boot=n_boot, seed=seed)
    return ClaimMetric(v, ci, model=model,
                       note="mean over early blocks of log10(max|x| dominant / median channel), attention input")


def early_outlier_ratio_difference(diffusion: np.ndarray, ar: np.ndarray, *, paired: bool, model: str = "",
                                   n_boot: int = 1000, seed: int = 0) -> ClaimMetric:
    """B1: early-block log10 outlier ratio at the attention input, diffusion minus AR (paper B: > 0).

    Both are ``[groups, L]`` outlier ratios (max |x| of the dominant channel over the median
    channel's) measured on groups of sequences; ``paired`` when the models read the same token ids.
    """
    a, b = early_log_outlier_ratio(diffusion), early_log_outlier_ratio(ar)
    v, ci = paired_bootstrap(lambda x, y: float(np.mean(x) - np.mean(y)), a, b, n_boot=n_boot, seed=seed,
                             paired=paired)
    return ClaimMetric(v, ci, model=model,
                       note="difference of mean early-block log10 outlier ratios at the attention input; "
                            f"bootstrap over {len(a)} groups of sequences")


def super_outlier_channel(stats: OutlierStats, *, model: str = "") -> ClaimMetric:
    """The super-outlier channel and in how many blocks it dominates (no interval)."""
    return ClaimMetric(stats.super_outlier, model=model,
                       note=f"dominant in {int(np.sum(stats.layers_dominated))} of {stats.num_layers} blocks",
                       extra={"layers_dominated": np.asarray(stats.layers_dominated).tolist(),
                              "max_token_share": float(np.max(stats.token_share))})


def super_outlier_metrics(stats: Mapping[str, OutlierStats], group_ratios: Mapping[str, np.ndarray],
                          families: Mapping[str, Any], *, paired: bool | Callable[[str, str], bool] = True,
                          n_boot: int = 1000, seed: int = 0,
                          pairs: Mapping[str, str] | None = None) -> dict[str, ClaimMetric]:
    """Chapter 04's metrics: per model (attention-input statistics on all sequences, ``[groups, L]``
    outlier ratios), then every diffusion model minus every AR model; the family-level difference
    (``minus_ar``) is that of paper B's pair where present (``pairs`` overrides, see
    :func:`~layerwise.claims.representatives`).

    ``paired(diffusion, ar)`` (or a bool) says whether two models read the same token ids.
    """
    families = _representatives_first(families, "B", pairs)
    out: dict[str, ClaimMetric] = {}
    for name in families:
        out[EARLY_OUTLIER_RATIO.per_model(name)] = early_outlier_ratio(group_ratios[name], model=name,
                                                                        n_boot=n_boot, seed=seed)
        out[SUPER_OUTLIER_CHANNEL.per_model(name)] = super_outlier_channel(stats[name], model=name)
    for fam in DIFFUSION_FAMILIES:
        for d in _by_family(families, fam):
            for a in _by_family(families, "ar"):
                same = paired(d, a) if callable(paired) else paired
                m = early_outlier_ratio_difference(group_ratios[d], group_ratios[a], paired=same, model=f"{d} - {a}",
                                                   n_boot=n_boot, seed=seed)
                out.setdefault(EARLY_OUTLIER_RATIO.minus_ar(fam), m)
                out[EARLY_OUTLIER_RATIO.diff(d, a)] = m
    return out


# ---------------------------------------------------------------------------------------------
# 05 outlier ablation (B2)
# ---------------------------------------------------------------------------------------------

#: 05's kinds of ablation effect and their metric names
ABLATION_KINDS = {"repetition": REPETITION_INCREASE, "loop": LOOP_INCREASE, "accuracy": ACCURACY_CHANGE}


def ablation_difference(generations: pd.DataFrame, *, measure: str, scope: str, kind: str = "", model: str = "",
                        note: str = "", n_boot: int = 1000, seed: int = 0) -> ClaimMetric:
    """``measure`` with the super-outlier ablated minus with random control channels (mean over draws),
    averaged over prompts; the interval resamples prompts and control draws.

    ``generations`` is one model's :func:`layerwise.ablation.run_conditions` table.
    """
    from ..ablation import ablation_effect

    e = ablation_effect(generations, metric=measure, scope=scope, n_boot=n_boot, seed=seed)
    return ClaimMetric(e.diff, e.ci, model=model, note=note,
                       extra={"scope": scope, "kind": kind, "measure": measure, "outlier": e.outlier,
                              "control": e.control, "n_prompts": e.n_prompts, "n_draws": e.n_draws})


def repetition_increase(generations: pd.DataFrame, *, measure: str = "rep_2", scope: str = "early",
                        model: str = "", note: str = "", n_boot: int = 1000, seed: int = 0) -> ClaimMetric:
    """B2: repetition (``measure``, e.g. rep-2) with the super-outlier zeroed in the ``scope`` blocks,
    minus with random channels of similar magnitude zeroed (paper B: > 0, repetitive loops)."""
    return ablation_difference(generations, measure=measure, scope=scope, kind="repetition", model=model, note=note,
                               n_boot=n_boot, seed=seed)


def outlier_ablation_metrics(text: pd.DataFrame, arithmetic: pd.DataFrame, families: Mapping[str, Any], *,
                             repetition_measure: str, headline_scope: str, scopes: Sequence[str] = ("early", "all"),
                             targets: Mapping[str, int] | None = None, where: str = "attn_input",
                             n_boot: int = 1000, seed: int = 0,
                             pairs: Mapping[str, str] | None = None) -> dict[str, ClaimMetric]:
    """Chapter 05's metrics: per model and scope, repetition, loop and accuracy effects of the ablation;
    a family's metric (``of(family)``) is its paper-B model's where present, else its first model's.

    ``text`` / ``arithmetic`` are the generation tables of every model (column ``model``);
    ``targets`` the super-outlier channel of each model (for the notes).
    """
    families = _representatives_first(families, "B", pairs)
    out: dict[str, ClaimMetric] = {}
    for name, fam in families.items():
        for scope in scopes:
            for kind, (df, measure) in {"repetition": (text, repetition_measure), "loop": (text, "loop_frac"),
                                        "accuracy": (arithmetic, "correct")}.items():
                g = df[df.model == name]
                if kind == "repetition":
                    m = repetition_increase(g, measure=measure, scope=scope, model=name, n_boot=n_boot, seed=seed)
                else:
                    m = ablation_difference(g, measure=measure, scope=scope, kind=kind, model=name, n_boot=n_boot,
                                            seed=seed)
                channel = f" (channel {targets[name]})" if targets and name in targets else ""
                m = replace(m, note=f"{measure} with the super-outlier{channel} zeroed at the {where} of the {scope} "
                                    f"blocks, minus the mean over {m.extra['n_draws']} random channels of similar "
                                    f"magnitude rank; {m.extra['n_prompts']} prompts")
                out[ABLATION_KINDS[kind].per_model(name, scope)] = m
                if scope == headline_scope:
                    out.setdefault(ABLATION_KINDS[kind].of(_fam(fam)), m)
    return out


# ---------------------------------------------------------------------------------------------
# 06 alpha-Hill (B3)
# ---------------------------------------------------------------------------------------------


def _early_alphas(per_matrix: pd.DataFrame) -> pd.Series:
    d = per_matrix[is_early_layer(per_matrix.layer, per_matrix.depth)]
    return d.set_index(["layer", "role"]).alpha.sort_index()


def early_alpha(per_matrix: pd.DataFrame, *, model: str = "") -> ClaimMetric:
    """Mean alpha-Hill over the modules of the early blocks (one model, one cut-off rule; no interval).

    ``per_matrix`` has one row per weight matrix: ``layer``, ``role``, ``alpha``, ``depth``.
    """
    a = _early_alphas(per_matrix)
    method = per_matrix.method.iloc[0] if "method" in per_matrix and len(per_matrix) else ""
    return ClaimMetric(float(a.mean()), model=model, note=f"mean alpha-Hill ({method}) of the early blocks")


def early_alpha_difference(diffusion: pd.DataFrame, ar: pd.DataFrame, *, model: str = "", n_boot: int = 1000,
                           seed: int = 0) -> ClaimMetric:
    """B3: mean alpha-Hill over the early blocks' modules, diffusion minus AR (paper B: < 0).

    Both are per-matrix tables of one model and one cut-off rule (``layer``, ``role``, ``alpha``,
    ``depth``, ``method``). The interval resamples modules, paired by (layer, role) when the two models
    have the same modules.
    """
    a, b = _early_alphas(diffusion), _early_alphas(ar)
    paired = a.index.equals(b.index)
    v, ci = paired_bootstrap(lambda x, y: float(np.mean(x) - np.mean(y)), a.to_numpy(), b.to_numpy(),
                             n_boot=n_boot, seed=seed, paired=paired)
    method = diffusion.method.iloc[0] if "method" in diffusion and len(diffusion) else ""
    n_early = n_early_layers(int(diffusion.depth.iloc[0]))
    note = (f"mean alpha-Hill ({method} cut-off) over the modules of the first {n_early} blocks, {model}; "
            f"bootstrap over modules ({'paired' if paired else 'unpaired'})")
    return ClaimMetric(v, ci, model=model, note=note, extra={"method": method, "n_modules": len(a), "paired": paired})


def alpha_hill_metrics(per_matrix: pd.DataFrame, *, method: str, n_boot: int = 1000,
                       seed: int = 0, pairs: Mapping[str, str] | None = None) -> dict[str, ClaimMetric]:
    """Chapter 06's metrics for one cut-off rule: every diffusion model minus every AR model (the
    family-level ``minus_ar`` is paper B's pair where present), then each model's early mean.
    ``per_matrix``: columns ``model``, ``family``, ``method``, ``layer``, ``role``, ``alpha``, ``depth``
    (all models, in the chapter's order)."""
    d = per_matrix[per_matrix.method == method]
    if d.empty:
        raise LayerwiseError(f"no alpha-Hill rows for method {method!r}: compute it or pick one of "
                             f"{sorted(set(per_matrix.method))}")
    in_order = dict(zip(d.model, d.family))
    families = _representatives_first(in_order, "B", pairs)
    frames = {n: d[d.model == n] for n in families}
    out: dict[str, ClaimMetric] = {}
    for fam in DIFFUSION_FAMILIES:
        for dn in _by_family(families, fam):
            for an in _by_family(families, "ar"):
                m = early_alpha_difference(frames[dn], frames[an], model=f"{dn} - {an}", n_boot=n_boot, seed=seed)
                out.setdefault(EARLY_ALPHA.minus_ar(fam), m)
                out[EARLY_ALPHA.diff(dn, an)] = m
    for n in in_order:
        out[EARLY_ALPHA.per_model(n)] = early_alpha(frames[n], model=n)
    return out


# ---------------------------------------------------------------------------------------------
# 07 compression (B4, B5)
# ---------------------------------------------------------------------------------------------


def retention_change_pct(retention: float, ci: tuple[float, float], *, meaningful: bool = True, model: str = "",
                         note: str = "") -> ClaimMetric:
    """A retention (fraction of the unmodified model's metric) as a change in percent: ``100 (r - 1)``."""
    return ClaimMetric(100 * (retention - 1), (100 * (ci[0] - 1), 100 * (ci[1] - 1)), meaningful=meaningful,
                       model=model, note=note)


def gptq3_change_difference(diffusion: ClaimMetric, ar: ClaimMetric) -> ClaimMetric | None:
    """B4: 3-bit GPTQ change (percent) of the diffusion model minus the AR model's (paper B: > 0, the
    diffusion model loses less). The interval combines the two intervals' half-widths in quadrature
    (:func:`layerwise.stats.difference_interval`: the two models' errors are independent). None when
    either side has no value or interval."""
    vals = (diffusion.value, ar.value)
    if any(v is None or not np.isfinite(v) for v in vals) or not diffusion.ci or not ar.ci:
        return None
    diff, ci = difference_interval(float(diffusion.value), diffusion.ci, float(ar.value), ar.ci)  # type: ignore[arg-type]
    return ClaimMetric(diff, ci, meaningful=diffusion.meaningful and ar.meaningful,
                       model=f"{diffusion.model} - {ar.model}",
                       note="3-bit GPTQ change (percentage points): positive = the diffusion model loses less")


def relative_change_pct(base_run: Mapping[str, Any], run: Mapping[str, Any], *, task: str, measure: str,
                        model: str = "", note: str = "", n_boot: int = 1000, seed: int = 0) -> ClaimMetric:
    """``run``'s ``measure`` on ``task`` relative to ``base_run``'s (outputs of :func:`layerwise.evals.evaluate`
    on the same items), minus 1, in percent, with a paired bootstrap interval over items. Where the
    task has several answer filters, the last one counts."""
    from ..evals import retention_table

    t = retention_table(dict(base_run), {"run": dict(run)}, n_boot=n_boot, seed=seed)
    t = t[(t.task == task) & (t.metric == measure)]
    if t.empty:
        raise LayerwiseError(f"no {measure!r} for task {task!r} in these runs: evaluate that task")
    r = t.iloc[-1]
    m = retention_change_pct(r.retention, (r.ci_low, r.ci_high), meaningful=bool(r.meaningful), model=model, note=note)
    return ClaimMetric(m.value, m.ci, meaningful=m.meaningful, model=model, note=note,
                       extra={"task": task, "measure": measure, "n": int(r.n)})


def early_minus_late(early_run: Mapping[str, Any], late_run: Mapping[str, Any], *, task: str, measure: str,
                     model: str = "", note: str = "", n_boot: int = 1000, seed: int = 0) -> ClaimMetric:
    """B5: the model pruned "earlier is sparser" relative to "deeper is sparser" at the same average
    sparsity, minus 1, in percent (paper B: > 0 for the diffusion model, < 0 for AR)."""
    return relative_change_pct(late_run, early_run, task=task, measure=measure, model=model, note=note,
                               n_boot=n_boot, seed=seed)


def compression_metrics(retentions: pd.DataFrame, runs: Mapping[str, Mapping[str, Any]], families: Mapping[str, Any], *,
                        task: str, measure: str, allocation: str = "", n_boot: int = 1000,
                        seed: int = 0, pairs: Mapping[str, str] | None = None) -> dict[str, ClaimMetric]:
    """Chapter 07's metrics. A family's metric (``of(family)``, and the ``minus_ar`` difference) is
    its paper-B model's where present (``pairs`` overrides), else its first model's.

    ``retentions``: one row per (model, configuration) on ``task`` with ``kind``, ``method``,
    ``bits``, ``retention``, ``ci_low``, ``ci_high``, ``meaningful``, ``label``, ``n``; ``runs``: per
    model, the :func:`layerwise.evals.evaluate` outputs keyed by configuration (``alloc-earlier_sparser``,
    ``alloc-deeper_sparser``); ``allocation`` describes the pruning setting in the note.
    """
    families = _representatives_first(families, "B", pairs)
    out: dict[str, ClaimMetric] = {}
    gptq3 = retentions[(retentions.kind == "quant") & (retentions.method == "gptq") & (retentions.bits == 3)]
    for name, fam in families.items():
        for _, r in gptq3[gptq3.model == name].iterrows():
            m = retention_change_pct(r.retention, (r.ci_low, r.ci_high), meaningful=bool(r.meaningful), model=name,
                                     note=f"3-bit GPTQ, change in {r.label} retention (%), {r.n} items"
                                     + ("" if r.meaningful else "; baseline not above chance: meaningless"))
            out[GPTQ3_CHANGE_PCT.per_model(name)] = m
            out.setdefault(GPTQ3_CHANGE_PCT.of(_fam(fam)), m)
    for name, fam in families.items():
        r = runs.get(name, {})
        if "alloc-earlier_sparser" in r and "alloc-deeper_sparser" in r:
            m = early_minus_late(r["alloc-earlier_sparser"], r["alloc-deeper_sparser"], task=task, measure=measure,
                                 model=name, n_boot=n_boot, seed=seed,
                                 note=f"{allocation}: earlier-is-sparser relative to deeper-is-sparser, {measure} (%)")
            out[EARLY_MINUS_LATE_PCT.per_model(name)] = m
            out.setdefault(EARLY_MINUS_LATE_PCT.of(_fam(fam)), m)
    ar = out.get(GPTQ3_CHANGE_PCT.of("ar"))
    for fam in DIFFUSION_FAMILIES:
        d = out.get(GPTQ3_CHANGE_PCT.of(fam))
        diff = gptq3_change_difference(d, ar) if d and ar else None
        if diff is not None:
            out[GPTQ3_CHANGE_PCT.minus_ar(fam)] = diff
    return out
