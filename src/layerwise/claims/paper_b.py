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
    DEFINITION_SEP,
    DIFFUSION_FAMILIES,
    EARLY_ALPHA,
    EARLY_MINUS_LATE_PCT,
    EARLY_OUTLIER_RATIO,
    GPTQ3_CHANGE_PCT,
    LOOP_INCREASE,
    REPETITION_INCREASE,
    SITES,
    SUPER_OUTLIER_CHANNEL,
    ClaimMetric,
    _by_family,
    _fam,
    _representatives_first,
    definition,
    is_early_layer,
    n_early_layers,
    representatives,
)

__all__ = [
    "OutlierStats", "early_log_outlier_ratio", "early_outlier_ratio", "early_outlier_ratio_difference",
    "super_outlier_channel", "super_outlier_metrics",
    "ABLATION_KINDS", "ablation_difference",
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


def early_outlier_ratio(group_ratios: np.ndarray, *, model: str = "", site: str = "attn_input", n_boot: int = 1000,
                        seed: int = 0) -> ClaimMetric:
    """A model's early-block log10 outlier ratio; ``group_ratios`` ``[groups, L]``, interval over groups."""
    v, ci = paired_bootstrap(np.mean, early_log_outlier_ratio(group_ratios), n_boot=n_boot, seed=seed)
    return ClaimMetric(v, ci, model=model, extra={"definition": site},
                       note=f"mean over early blocks of log10(max|x| dominant / median channel), {site}")


def early_outlier_ratio_difference(diffusion: np.ndarray, ar: np.ndarray, *, paired: bool, model: str = "",
                                   site: str = "attn_input", n_boot: int = 1000, seed: int = 0) -> ClaimMetric:
    """B1: early-block log10 outlier ratio at ``site`` (the attention input, or the residual stream),
    diffusion minus AR (paper B: > 0).

    Both are ``[groups, L]`` outlier ratios (max |x| of the dominant channel over the median
    channel's) measured on groups of sequences; ``paired`` when the models read the same token ids.
    """
    a, b = early_log_outlier_ratio(diffusion), early_log_outlier_ratio(ar)
    v, ci = paired_bootstrap(lambda x, y: float(np.mean(x) - np.mean(y)), a, b, n_boot=n_boot, seed=seed,
                             paired=paired)
    return ClaimMetric(v, ci, model=model, extra={"definition": site},
                       note=f"difference of mean early-block log10 outlier ratios at the {site}; "
                            f"bootstrap over {len(a)} groups of sequences")


def super_outlier_channel(stats: OutlierStats, *, model: str = "") -> ClaimMetric:
    """The super-outlier channel and in how many blocks it dominates (no interval)."""
    return ClaimMetric(stats.super_outlier, model=model,
                       note=f"dominant in {int(np.sum(stats.layers_dominated))} of {stats.num_layers} blocks",
                       extra={"layers_dominated": np.asarray(stats.layers_dominated).tolist(),
                              "max_token_share": float(np.max(stats.token_share))})


def super_outlier_metrics(stats: Mapping[str, OutlierStats], group_ratios: Mapping[str, np.ndarray],
                          families: Mapping[str, Any], *, paired: bool | Callable[[str, str], bool] = True,
                          n_boot: int = 1000, seed: int = 0, pairs: Mapping[str, str] | None = None,
                          residual_ratios: Mapping[str, np.ndarray] | None = None) -> dict[str, ClaimMetric]:
    """Chapter 04's metrics: per model (attention-input statistics on all sequences, ``[groups, L]``
    outlier ratios), then every diffusion model minus every AR model; the family-level metrics
    (``of(family)``, ``minus_ar``) are those of paper B's pair where present (``pairs`` overrides, see
    :func:`~layerwise.claims.representatives`).

    ``paired(diffusion, ar)`` (or a bool) says whether two models read the same token ids. B1's
    pre-registered definitions are written under ``definition(name, site)``: the attention input
    (``group_ratios``) and, when ``residual_ratios`` (``[groups, L]`` per model, read on the residual
    stream) are given, the residual stream.
    """
    families = _representatives_first(families, "B", pairs)
    out: dict[str, ClaimMetric] = {}
    for name in families:
        out[EARLY_OUTLIER_RATIO.per_model(name)] = early_outlier_ratio(group_ratios[name], model=name,
                                                                        n_boot=n_boot, seed=seed)
        out[SUPER_OUTLIER_CHANNEL.per_model(name)] = super_outlier_channel(stats[name], model=name)
    per_site = {SITES[0]: group_ratios, **({SITES[1]: residual_ratios} if residual_ratios is not None else {})}
    rep = representatives(families)
    for site, ratios in per_site.items():
        for fam, name in rep.items():
            m = early_outlier_ratio(ratios[name], model=name, site=site, n_boot=n_boot, seed=seed)
            if site == SITES[0]:
                out[EARLY_OUTLIER_RATIO.of(fam)] = m
            out[definition(EARLY_OUTLIER_RATIO.of(fam), site)] = m
    for fam in DIFFUSION_FAMILIES:
        for d in _by_family(families, fam):
            for a in _by_family(families, "ar"):
                same = paired(d, a) if callable(paired) else paired
                for site, ratios in per_site.items():
                    m = early_outlier_ratio_difference(ratios[d], ratios[a], paired=same, model=f"{d} - {a}",
                                                       site=site, n_boot=n_boot, seed=seed)
                    if site == SITES[0]:
                        out.setdefault(EARLY_OUTLIER_RATIO.minus_ar(fam), m)
                        out[EARLY_OUTLIER_RATIO.diff(d, a)] = m
                    out.setdefault(definition(EARLY_OUTLIER_RATIO.minus_ar(fam), site), m)
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
    have the same modules. ``extra["margin_scale"]`` is the AR model's early mean (the margin is relative).
    """
    a, b = _early_alphas(diffusion), _early_alphas(ar)
    paired = a.index.equals(b.index)
    v, ci = paired_bootstrap(lambda x, y: float(np.mean(x) - np.mean(y)), a.to_numpy(), b.to_numpy(),
                             n_boot=n_boot, seed=seed, paired=paired)
    method = diffusion.method.iloc[0] if "method" in diffusion and len(diffusion) else ""
    n_early = n_early_layers(int(diffusion.depth.iloc[0]))
    note = (f"mean alpha-Hill ({method} cut-off) over the modules of the first {n_early} blocks, {model}; "
            f"bootstrap over modules ({'paired' if paired else 'unpaired'})")
    return ClaimMetric(v, ci, model=model, note=note,
                       extra={"method": method, "n_modules": len(a), "paired": paired, "definition": method,
                              "margin_scale": float(b.mean()), "margin_scale_is": "the AR model's early alpha-Hill"})


def alpha_hill_metrics(per_matrix: pd.DataFrame, *, method: str, n_boot: int = 1000,
                       seed: int = 0, pairs: Mapping[str, str] | None = None) -> dict[str, ClaimMetric]:
    """Chapter 06's metrics for one cut-off rule: every diffusion model minus every AR model (the
    family-level ``minus_ar`` is paper B's pair where present), then each model's early mean.
    ``per_matrix``: columns ``model``, ``family``, ``method``, ``layer``, ``role``, ``alpha``, ``depth``
    (all models, in the chapter's order). B3's pre-registered definitions, one per cut-off rule present
    in ``per_matrix`` (``fixed``, ``ks``), are written under ``definition(minus_ar(family), rule)``."""
    d = per_matrix[per_matrix.method == method]
    if d.empty:
        raise LayerwiseError(f"no alpha-Hill rows for method {method!r}: compute it or pick one of "
                             f"{sorted(set(per_matrix.method))}")
    in_order = dict(zip(d.model, d.family))
    families = _representatives_first(in_order, "B", pairs)
    out: dict[str, ClaimMetric] = {}
    for rule in dict.fromkeys([method, *per_matrix.method]):
        dm = per_matrix[per_matrix.method == rule]
        frames = {n: dm[dm.model == n] for n in families}
        for fam in DIFFUSION_FAMILIES:
            for dn in _by_family(families, fam):
                for an in _by_family(families, "ar"):
                    if frames[dn].empty or frames[an].empty:
                        continue
                    m = early_alpha_difference(frames[dn], frames[an], model=f"{dn} - {an}", n_boot=n_boot, seed=seed)
                    if rule == method:
                        out.setdefault(EARLY_ALPHA.minus_ar(fam), m)
                        out[EARLY_ALPHA.diff(dn, an)] = m
                    out.setdefault(definition(EARLY_ALPHA.minus_ar(fam), str(rule)), m)
    for n in in_order:
        out[EARLY_ALPHA.per_model(n)] = early_alpha(d[d.model == n], model=n)
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
    reason = diffusion.reason or ar.reason or ("" if diffusion.meaningful and ar.meaningful else
                                                "a baseline is not above chance on this task")
    return ClaimMetric(diff, ci, meaningful=diffusion.meaningful and ar.meaningful,
                       model=f"{diffusion.model} - {ar.model}", reason=reason,
                       note="3-bit GPTQ change (percentage points): positive = the diffusion model loses less",
                       extra={k: v for k, v in diffusion.extra.items() if k == "definition"})


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
    m = relative_change_pct(late_run, early_run, task=task, measure=measure, model=model, note=note,
                            n_boot=n_boot, seed=seed)
    return replace(m, extra={**m.extra, "definition": f"{task}:{measure}"})


def compression_metrics(retentions: pd.DataFrame, runs: Mapping[str, Mapping[str, Any]], families: Mapping[str, Any], *,
                        task: str, measure: str, allocation: str = "", n_boot: int = 1000,
                        seed: int = 0, pairs: Mapping[str, str] | None = None,
                        definitions: pd.DataFrame | None = None,
                        measures: Mapping[str, str] | None = None) -> dict[str, ClaimMetric]:
    """Chapter 07's metrics. A family's metric (``of(family)``, and the ``minus_ar`` difference) is
    its paper-B model's where present (``pairs`` overrides), else its first model's.

    ``retentions``: one row per (model, configuration) on ``task`` with ``kind``, ``method``,
    ``bits``, ``retention``, ``ci_low``, ``ci_high``, ``meaningful``, ``label``, ``n``; ``runs``: per
    model, the :func:`layerwise.evals.evaluate` outputs keyed by configuration (``alloc-earlier_sparser``,
    ``alloc-deeper_sparser``); ``allocation`` describes the pruning setting in the note.
    B4's pre-registered definitions, one per task and metric of ``definitions`` (rows like
    ``retentions`` for every task; default ``retentions``), are written under
    ``definition(minus_ar(family), "<task>:<metric>")`` (e.g. ``...::lw_gsm8k:exact_match``). B5's, one
    per task of ``measures`` (task -> its metric; default ``{task: measure}``), likewise under
    ``definition(EARLY_MINUS_LATE_PCT.of(family), "<task>:<metric>")``.
    """
    families = _representatives_first(families, "B", pairs)
    out: dict[str, ClaimMetric] = {}

    def gptq3_changes(table: pd.DataFrame) -> dict[str, ClaimMetric]:
        """model -> its 3-bit GPTQ change on the (one) task of ``table``."""
        g3 = table[(table.kind == "quant") & (table.method == "gptq") & (table.bits == 3)]
        found = {}
        for name in families:
            for _, r in g3[g3.model == name].iterrows():
                found[name] = retention_change_pct(
                    r.retention, (r.ci_low, r.ci_high), meaningful=bool(r.meaningful), model=name,
                    note=f"3-bit GPTQ, change in {r.label} retention (%), {r.n} items"
                    + ("" if r.meaningful else "; baseline not above chance: meaningless"))
                found[name] = replace(found[name], extra={"definition": str(r.label).replace(" ", ":", 1)},
                                      reason="" if r.meaningful else "the unmodified model is not above chance")
        return found

    for name, m in gptq3_changes(retentions).items():
        out[GPTQ3_CHANGE_PCT.per_model(name)] = m
        out.setdefault(GPTQ3_CHANGE_PCT.of(_fam(families[name])), m)
    table = retentions if definitions is None else definitions
    if "label" in table:  # B4's definitions: every task and metric evaluated
        for label in dict.fromkeys(table.label):
            per = gptq3_changes(table[table.label == label])
            rep = representatives({n: f for n, f in families.items() if n in per})
            for fam in DIFFUSION_FAMILIES:
                if fam in rep and "ar" in rep:
                    diff = gptq3_change_difference(per[rep[fam]], per[rep["ar"]])
                    if diff is not None:
                        out[definition(GPTQ3_CHANGE_PCT.minus_ar(fam), str(label).replace(" ", ":", 1))] = diff
    for name, fam in families.items():
        r = runs.get(name, {})
        if "alloc-earlier_sparser" in r and "alloc-deeper_sparser" in r:
            m = early_minus_late(r["alloc-earlier_sparser"], r["alloc-deeper_sparser"], task=task, measure=measure,
                                 model=name, n_boot=n_boot, seed=seed,
                                 note=f"{allocation}: earlier-is-sparser relative to deeper-is-sparser, {measure} (%)")
            out[EARLY_MINUS_LATE_PCT.per_model(name)] = m
            out.setdefault(EARLY_MINUS_LATE_PCT.of(_fam(fam)), m)
            for t, meas in (measures or {task: measure}).items():  # B5's definitions: every task evaluated
                alt = m if (t, meas) == (task, measure) else early_minus_late(
                    r["alloc-earlier_sparser"], r["alloc-deeper_sparser"], task=t, measure=meas, model=name,
                    n_boot=n_boot, seed=seed, note=f"{allocation}: earlier-is-sparser relative to deeper-is-sparser, "
                                                   f"{meas} (%)")
                out.setdefault(definition(EARLY_MINUS_LATE_PCT.of(_fam(fam)), f"{t}:{meas}"), alt)
    ar = out.get(GPTQ3_CHANGE_PCT.of("ar"))
    for fam in DIFFUSION_FAMILIES:
        d = out.get(GPTQ3_CHANGE_PCT.of(fam))
        diff = gptq3_change_difference(d, ar) if d and ar else None
        if diff is not None:
            out[GPTQ3_CHANGE_PCT.minus_ar(fam)] = diff
    return out


def early_minus_late_definitions(metrics: Mapping[str, Mapping[str, Any]],
                                 effects: Sequence[Mapping[str, Any]]) -> dict[str, ClaimMetric]:
    """B5's definitions (``<task>:<metric>``) read from chapter 07's own ``early_minus_late`` table,
    for a result file the chapter wrote before it wrote them (:func:`compression_metrics` now does).

    ``metrics``: the file's metrics (each family's headline ``early_minus_late_pct_<family>`` names its
    model); ``effects``: its ``data["early_minus_late"]`` rows (model, task, measure,
    ``early_minus_late_pct``, ``ci_low``, ``ci_high``, ``meaningful``, ``n``). Those rows are the same
    :func:`early_minus_late` calls (same items, bootstrap size and seed) as the definitions, so the
    numbers are the ones the chapter writes; a headline whose own row differs is an error.
    """
    out: dict[str, ClaimMetric] = {}
    prefix = EARLY_MINUS_LATE_PCT.of("")
    for name, head in metrics.items():
        if not name.startswith(prefix) or name.startswith(prefix + "_") or DEFINITION_SEP in name:
            continue  # only the family headlines ``early_minus_late_pct_<family>``
        rows = [r for r in effects if r.get("model") == head.get("model")]
        own = [r for r in rows if (r.get("task"), r.get("measure")) == (head.get("task"), head.get("measure"))]
        if not own or not np.isclose(own[0]["early_minus_late_pct"], head["value"], equal_nan=True):
            raise LayerwiseError(f"{name}: the early_minus_late table has no row equal to the headline "
                                 f"({head.get('model')}, {head.get('task')}, {head.get('measure')}): "
                                 "re-run chapter 07 to write B5's definitions")
        allocation = str(head.get("note", "")).split(": earlier-is-sparser")[0]
        for r in rows:
            label = f"{r['task']}:{r['measure']}"
            out[definition(name, label)] = ClaimMetric(
                float(r["early_minus_late_pct"]), (float(r["ci_low"]), float(r["ci_high"])),
                meaningful=bool(r["meaningful"]), model=str(r["model"]),
                note=f"{allocation}: earlier-is-sparser relative to deeper-is-sparser, {r['measure']} (%)",
                extra={"task": r["task"], "measure": r["measure"], "n": int(r["n"]), "definition": label})
    return out


__all__ += ["early_minus_late_definitions"]


# ---------------------------------------------------------------------------------------------
# 05 outlier ablation (B2), testable design: prompts the unmodified model does not loop on
# ---------------------------------------------------------------------------------------------

from .base import MetricName  # noqa: E402  (this section's own names)

#: 05: share of continuations that loop (``measure >= threshold``), outlier minus control, on the
#: prompts the unmodified model does not loop on: ``per_model(model, scope)``, ``of(family)``
LOOP_ONSET = MetricName("loop_onset_increase")
#: 05: how many prompts the unmodified model continues without looping: ``per_model(model)``
NONLOOPING_PROMPTS = MetricName("nonlooping_prompts")
#: 05's kinds of ablation effect in the testable design and their metric names
TESTABLE_ABLATION_KINDS = {**ABLATION_KINDS, "onset": LOOP_ONSET}

__all__ += ["LOOP_ONSET", "NONLOOPING_PROMPTS", "TESTABLE_ABLATION_KINDS", "testable_ablation_metrics"]


def testable_ablation_metrics(text: pd.DataFrame, arithmetic: pd.DataFrame, families: Mapping[str, Any], *,
                              selections: Mapping[str, Any], repetition_measure: str = "rep_2",
                              headline_scope: str = "early", scopes: Sequence[str] = ("early", "all"),
                              headline: str = "attn_input/attn_input",
                              targets: Mapping[str, Mapping[str, int]] | None = None,
                              same_channel: Mapping[str, Mapping[str, str]] | None = None, n_boot: int = 1000,
                              seed: int = 0, pairs: Mapping[str, str] | None = None) -> dict[str, ClaimMetric]:
    """B2 as a test that can fail: the ablation's effects on the prompts each model does NOT loop on.

    ``text`` / ``arithmetic``: :func:`layerwise.ablation.run_conditions` tables of every model (columns
    ``model``, ``site``, ``definition``); ``selections``: per model, a
    :class:`layerwise.ablation_design.Selection` (the prompts whose unablated continuation has
    ``measure < threshold``, and whether there are enough of them). Per model, ablation label
    ``<site>/<definition>`` and scope: repetition (``repetition_measure``), loop share, loop onset
    (the share of continuations reaching the threshold) on the selected prompts, and arithmetic
    accuracy on every item, each outlier minus the mean over control draws with an interval over
    prompts and draws (:func:`ablation_difference`). The ``headline`` label is written under the
    metric names of :func:`outlier_ablation_metrics` (the ledger's), every other label under
    ``definition(name, label)``. Text metrics of a model with fewer selected prompts than its
    selection's ``min_prompts`` are not meaningful, with the selection's reason. ``same_channel``: per
    model, the outlier definitions whose channel another definition already picked (``{"residual":
    "attn_input"}``, :class:`layerwise.ablation_design.AblationPlan`): their labels are written too,
    with the other definition's entry (whose ``label`` names the ablation that ran), so that every
    seed's file holds every definition.
    """
    families = _representatives_first(families, "B", pairs)
    out: dict[str, ClaimMetric] = {}
    for name, fam in families.items():
        sel = selections[name]
        out[NONLOOPING_PROMPTS.per_model(name)] = ClaimMetric(
            float(sel.n), meaningful=bool(sel.testable), model=name,
            note=f"prompts continued without looping ({sel.measure} < {sel.threshold:g}) of {sel.n_pool}",
            extra={"n_pool": sel.n_pool, "threshold": sel.threshold, "measure": sel.measure,
                   "min_prompts": sel.min_prompts, "reason": sel.reason})
        t = text[text.model == name]
        if "looping" not in t:
            t = t.assign(looping=(t[sel.measure] >= sel.threshold).astype(float).where(t[sel.measure].notna()))
        t = t[t.prompt_id.isin(list(sel.prompt_ids))]
        a = arithmetic[arithmetic.model == name]
        ab = text[(text.model == name) & (text.kind != "none")]
        for lab in dict.fromkeys(f"{s}/{d}" for s, d in zip(ab.site, ab.definition)):
            site, d = lab.split("/", 1)
            tt = t[(t.kind == "none") | ((t.site == site) & (t.definition == d))]
            aa = a[(a.kind == "none") | ((a.site == site) & (a.definition == d))]
            channel = f" (channel {targets[name][d]})" if targets and d in targets.get(name, {}) else ""
            for scope in scopes:
                for kind, (df, measure) in {"repetition": (tt, repetition_measure), "loop": (tt, "loop_frac"),
                                            "onset": (tt, "looping"), "accuracy": (aa, "correct")}.items():
                    text_kind = kind != "accuracy"
                    note = (f"{measure} with the {d} super-outlier{channel} zeroed at the {site} of the {scope} "
                            f"blocks, minus the mean over random channels of similar magnitude rank"
                            + (f"; the {sel.n} of {sel.n_pool} prompts continued without looping" if text_kind
                               else ""))
                    if text_kind and sel.n == 0:
                        m = ClaimMetric(None, meaningful=False, model=name, note=note,
                                        extra={"scope": scope, "kind": kind, "measure": measure, "n_prompts": 0})
                    else:
                        m = ablation_difference(df, measure=measure, scope=scope, kind=kind, model=name, note=note,
                                                n_boot=n_boot, seed=seed)
                    m = replace(m, extra={**m.extra, "site": site, "definition": d, "label": lab})
                    if text_kind and not sel.testable:
                        m = replace(m, meaningful=False, extra={**m.extra, "reason": sel.reason})
                    names = [TESTABLE_ABLATION_KINDS[kind].per_model(name, scope)]
                    if scope == headline_scope:
                        names.append(TESTABLE_ABLATION_KINDS[kind].of(_fam(fam)))
                    aliases = [f"{site}/{a}" for a, t in (same_channel or {}).get(name, {}).items() if t == d]
                    for write in (lab, *aliases):
                        for i, n in enumerate(names):
                            key = n if write == headline else definition(n, write)
                            if i == 0:
                                out[key] = m
                            else:
                                out.setdefault(key, m)
    return out
