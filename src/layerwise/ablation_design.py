"""Chapter 05's design: a test of "zeroing the super-outlier turns the outputs into loops" that can fail.

A model whose unablated continuations already loop cannot show that an ablation *makes* loops. So:

1. **Prompts the model does not loop on.** Every prompt is continued by the unmodified model; the
   prompts whose continuation scores ``measure < threshold`` (e.g. rep-2 below 0.2) form the test
   set (:func:`select_prompts`). Too few of them (``min_prompts``) and the chapter says the claim is
   *not testable* on this model, with the count.
2. **Ablation against a control, not against the model's own baseline.** Selecting prompts by a low
   baseline score makes *any* perturbation look like an increase (regression to the mean); the
   comparison is the outlier's ablation minus the mean over several random channels of similar
   magnitude rank, on the same selected prompts, with an interval over prompts and control draws.
3. **Two sites, two outlier definitions.** The channel is zeroed at the attention input (the normed
   hidden state q/k/v read: paper B) and, separately, in the residual stream (the block output the
   next block reads); the super-outlier is the channel of largest max |x| at the attention input, or
   in the residual stream. Where the two definitions pick the same channel, one is kept.

:func:`plan_ablations` builds the conditions of one model; :func:`run_screened` generates in two
passes (the unmodified model on the whole pool of prompts, the ablations on the selected prompts
only, so a large pool costs one generation per prompt); :func:`subset`, :func:`select_prompts` and
:func:`mark_loops` prepare the tables that :func:`layerwise.claims.testable_ablation_metrics` turns
into the ledger's numbers; :func:`chapter_05_findings` writes the chapter's findings paragraph from
its result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

from .ablation import Condition, Means, Mode, Where, ablation_conditions, random_control_channels, run_conditions
from .config import LayerwiseError
from .models import LoadedModel

SITES: tuple[Where, ...] = ("attn_input", "residual")


def label(site: str, definition: str) -> str:
    """``<ablated site>/<outlier definition>``, e.g. ``residual/attn_input``: the residual stream's
    channel chosen as the attention input's super-outlier."""
    return f"{site}/{definition}"


def _check_sites(names: Sequence[str], what: str) -> list[Where]:
    bad = [s for s in names if s not in SITES]
    if bad or not names:
        raise LayerwiseError(f"{what}={list(names)}: use one or more of {list(SITES)}")
    return [cast(Where, s) for s in dict.fromkeys(names)]


@dataclass
class AblationPlan:
    """One model's ablations: target channel per outlier definition, controls per (site, definition),
    the generation conditions (one baseline first)."""

    targets: dict[str, int]
    same_channel: dict[str, str]
    controls: dict[str, list[int]]
    n_early: int
    conditions: list[Condition] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"targets": self.targets, "same_channel": self.same_channel, "controls": self.controls,
                "n_early": self.n_early, "n_conditions": len(self.conditions)}


def plan_ablations(stats: Any, n_layers: int, *, sites: Sequence[str] = SITES, definitions: Sequence[str] = SITES,
                   n_draws: int = 3, rank_window: int = 8, seed: int = 0,
                   scopes: Sequence[str] = ("early", "all")) -> AblationPlan:
    """The conditions for one model from its :func:`layerwise.probes.channel_stats` (both sites).

    Definition ``d``'s target is ``stats[d].super_outlier`` (largest max |x| over blocks and channels
    at site ``d``). For each ablated site and distinct target, controls are ``n_draws`` random channels
    within ``rank_window`` magnitude ranks of the target at that site (max |x| averaged over the early
    blocks, :func:`layerwise.ablation.random_control_channels`). ``scopes``: ``early`` (the first third
    of the blocks, :func:`layerwise.claims.early_layers`) and/or ``all``.
    """
    from .claims import early_layers

    sites_, defs = _check_sites(sites, "sites"), _check_sites(definitions, "definitions")
    bad = [s for s in scopes if s not in ("early", "all")]
    if bad or not scopes:
        raise LayerwiseError(f"scopes={list(scopes)}: use 'early' and/or 'all'")
    n_early = len(early_layers(n_layers))
    layer_sets: dict[str, Sequence[int] | Literal["all"]] = {
        s: (list(range(n_early)) if s == "early" else "all") for s in scopes}
    targets: dict[str, int] = {}
    same: dict[str, str] = {}
    for d in defs:
        ch = int(stats[d].super_outlier)
        first = next((k for k, v in targets.items() if v == ch), None)
        if first is None:
            targets[d] = ch
        else:
            same[d] = first
    conditions = [Condition("none", "none")]
    controls: dict[str, list[int]] = {}
    for site in sites_:
        ranks = np.asarray(stats[site].max_abs)[:n_early]
        for dname, ch in targets.items():
            ctrl = random_control_channels(ranks, ch, n_draws=n_draws, seed=seed, rank_window=rank_window)
            controls[label(site, dname)] = ctrl
            conditions += ablation_conditions(ch, layer_sets, ctrl, site=site, definition=dname, baseline=False)
    return AblationPlan(targets, same, controls, n_early, conditions)


def subset(df: pd.DataFrame, site: str, definition: str) -> pd.DataFrame:
    """The baseline rows and the rows of one (ablated site, outlier definition)."""
    for col in ("kind", "site", "definition"):
        if col not in df:
            raise LayerwiseError(f"the table has no {col!r} column: pass a layerwise.ablation.run_conditions table")
    return df[(df.kind == "none") | ((df.site == site) & (df.definition == definition))]


def labels_in(df: pd.DataFrame) -> list[str]:
    """The (site, definition) labels of a :func:`~layerwise.ablation.run_conditions` table, in order."""
    ab = df[df.kind != "none"]
    return list(dict.fromkeys(label(s, d) for s, d in zip(ab.site, ab.definition)))


@dataclass(frozen=True)
class Selection:
    """The prompts on which one model's unablated continuation does not loop: ``n_qualifying`` of the
    ``n_pool`` screened, of which the test uses ``prompt_ids`` (the first ones, up to a cap)."""

    prompt_ids: tuple[int, ...]
    n_pool: int
    measure: str
    threshold: float
    min_prompts: int
    n_qualifying: int = -1  # -1: as many as prompt_ids

    @property
    def n(self) -> int:
        """Prompts the test uses."""
        return len(self.prompt_ids)

    @property
    def qualifying(self) -> int:
        return self.n if self.n_qualifying < 0 else self.n_qualifying

    @property
    def testable(self) -> bool:
        return self.n >= self.min_prompts

    @property
    def reason(self) -> str:
        """Why the claim is not testable on this model ("" when it is)."""
        if self.testable:
            return ""
        return (f"only {self.qualifying} of {self.n_pool} prompts are continued without looping by the unmodified "
                f"model ({self.measure} < {self.threshold:g}); the test needs at least {self.min_prompts}")

    def to_dict(self) -> dict[str, Any]:
        return {"prompt_ids": list(self.prompt_ids), "n": self.n, "n_qualifying": self.qualifying,
                "n_pool": self.n_pool, "measure": self.measure, "threshold": self.threshold,
                "min_prompts": self.min_prompts, "testable": self.testable, "reason": self.reason}


def select_prompts(df: pd.DataFrame, *, measure: str = "rep_2", threshold: float = 0.2, min_prompts: int = 5,
                   max_prompts: int = 0) -> Selection:
    """The prompts whose *unablated* continuation has ``measure < threshold`` (NaN: left out), the
    first ``max_prompts`` of them (0 = all).

    ``df`` is one model's :func:`~layerwise.ablation.run_conditions` table (the ``none`` rows are read).
    """
    if measure not in df:
        raise LayerwiseError(f"no column {measure!r} in the generation table: use one of the text metrics, e.g. rep_2")
    if not 0 < threshold <= 1 or min_prompts < 1 or max_prompts < 0:
        raise LayerwiseError(f"threshold={threshold} must be in (0, 1], min_prompts={min_prompts} >= 1 and "
                             f"max_prompts={max_prompts} >= 0")
    base = df[df.kind == "none"].drop_duplicates("prompt_id").set_index("prompt_id")[measure].sort_index()
    if base.empty:
        raise LayerwiseError("no baseline rows (kind 'none'): generate with the unmodified model too")
    ok = [int(i) for i in base[base < threshold].index]
    return Selection(tuple(ok[:max_prompts] if max_prompts else ok), int(base.size), measure, float(threshold),
                     int(min_prompts), len(ok))


def run_screened(lm: LoadedModel, plan: AblationPlan, prompts: Sequence[str], generate_fn: Callable[..., list[str]],
                 *, measure: str = "rep_2", threshold: float = 0.2, min_prompts: int = 5, max_prompts: int = 0,
                 compare_prompts: int = 0, headline: str = "attn_input/attn_input", mode: Mode = "zero",
                 means: Means = None, progress: bool = False, **gen_kwargs: Any) -> tuple[pd.DataFrame, Selection]:
    """Generate in two passes: the unmodified model continues every prompt (the pool); the ablations
    run on the prompts :func:`select_prompts` keeps only, and the ``headline`` label's conditions also
    on the first ``compare_prompts`` prompts, looping or not (to compare with a design that does not
    select). Returns the :func:`~layerwise.ablation.run_conditions` table (``prompt_id`` indexes
    ``prompts``) and the selection."""
    base_conds = [c for c in plan.conditions if c.kind == "none"]
    ablations = [c for c in plan.conditions if c.kind != "none"]
    kw = dict(mode=mode, means=means, progress=progress, **gen_kwargs)
    parts = [run_conditions(lm, base_conds, prompts, generate_fn, **kw)]
    sel = select_prompts(parts[0], measure=measure, threshold=threshold, min_prompts=min_prompts,
                         max_prompts=max_prompts)

    def run_on(conds: list[Condition], ids: list[int]) -> None:
        if conds and ids:
            t = run_conditions(lm, conds, [prompts[i] for i in ids], generate_fn, **kw)
            parts.append(t.assign(prompt_id=[ids[p] for p in t.prompt_id]))

    run_on(ablations, list(sel.prompt_ids))
    site, definition = headline.split("/", 1)
    chosen = set(sel.prompt_ids)
    run_on([c for c in ablations if c.site == site and c.definition == definition],
           [i for i in range(min(compare_prompts, len(prompts))) if i not in chosen])
    return pd.concat(parts, ignore_index=True), sel


def mark_loops(df: pd.DataFrame, *, measure: str = "rep_2", threshold: float = 0.2) -> pd.DataFrame:
    """Adds ``looping``: 1.0 when a continuation's ``measure`` reaches ``threshold`` (NaN stays NaN)."""
    v = df[measure].astype(float)
    return df.assign(looping=np.where(v.isna(), np.nan, (v >= threshold).astype(float)))


def with_groups(df: pd.DataFrame) -> pd.DataFrame:
    """Adds ``label`` (``site/definition``, ``-`` for the unmodified model) and ``group`` (``kind`` or
    ``kind/scope``) to a table of ablation rows."""
    # Row by row: pandas 3 with Arrow-backed strings refuses to add a string column to an object array.
    lab = ["-" if k == "none" else f"{s}/{d}" for k, s, d in zip(df.kind, df.site, df.definition)]
    grp = [str(k) if sc == "" else f"{k}/{sc}" for k, sc in zip(df.kind, df.scope)]
    return df.assign(label=pd.Series(lab, index=df.index, dtype=object),
                     group=pd.Series(grp, index=df.index, dtype=object))


def condition_means(df: pd.DataFrame, selections: Mapping[str, Selection], columns: Sequence[str]) -> pd.DataFrame:
    """Mean of ``columns`` per model, ablation label and condition group on each model's selected
    prompts (the only prompts every condition ran on). ``df`` has a ``model`` column."""
    rows = []
    for model, g in df.groupby("model", sort=False):
        g = g[g.prompt_id.isin(selections[str(model)].prompt_ids)]
        if g.empty:
            continue
        g = with_groups(g)
        m = g.groupby(["label", "group"], sort=False)[list(columns)].mean().reset_index()
        rows.append(m.assign(model=model, n_prompts=g.prompt_id.nunique()))
    if not rows:
        return pd.DataFrame(columns=["model", "n_prompts", "label", "group", *columns])
    out = pd.concat(rows, ignore_index=True)
    return out[["model", "n_prompts", "label", "group", *columns]]


# ---------------------------------------------------------------------------------------------
# Findings
# ---------------------------------------------------------------------------------------------


_SITE_WORDS = {"attn_input": "attention input", "residual": "residual stream"}


def _num(x: Any) -> str:
    return "n/a" if x is None or not math.isfinite(float(x)) else f"{float(x):+.3f}"


def _entry(e: Mapping[str, Any] | None) -> str:
    if e is None:
        return "not measured"
    ci = e.get("ci")
    s = _num(e.get("value"))
    if ci and all(c is not None and math.isfinite(float(c)) for c in ci):
        s += f" [{_num(ci[0])}, {_num(ci[1])}]"
    return s


def _as_entry(row: Mapping[str, Any]) -> dict[str, Any]:
    """A :func:`layerwise.claims.metrics_table` row as a result-file entry (value, ci)."""
    return {"value": row.get("value"), "ci": [row.get("ci_low"), row.get("ci_high")]}


def _reading(e: Mapping[str, Any] | None) -> str:
    """What one outlier-minus-control difference says (the interval against 0)."""
    if e is None:
        return "not measured"
    if e.get("meaningful") is False:
        return "not testable: " + str(e.get("reason") or e.get("note") or "flagged not meaningful")
    ci = e.get("ci")
    if not ci or ci[0] is None or not math.isfinite(float(ci[0])):
        return "no interval"
    if float(ci[0]) > 0:
        return "more loops than the control"
    if float(ci[1]) < 0:
        return "fewer loops than the control"
    return "no difference from the control resolved"


def chapter_05_findings(result: Mapping[str, Any]) -> str:
    """The findings paragraph of chapter 05 (Markdown) from its result payload (``metrics`` and
    ``data`` of :func:`layerwise.results.save_result`: ``data["selection"]`` per model,
    ``data["plans"]``, ``data["params"]``, optionally ``data["all_prompts_effects"]``: the
    :func:`layerwise.claims.metrics_table` rows of the same difference without the selection)."""
    from .claims import DEFINITION_SEP, LOOP_ONSET, REPETITION_INCREASE

    metrics = result.get("metrics", {})
    data = result.get("data", {})
    params = data.get("params", {})
    measure, scope = params.get("headline_metric", "rep_2"), params.get("headline_scope", "early")
    head = params.get("headline_label", label("attn_input", "attn_input"))
    lines = ["**What this chapter found.**", ""]
    for model, sel in data.get("selection", {}).items():
        plan = data.get("plans", {}).get(model, {})
        targets = ", ".join(f"{d}: channel {c}" for d, c in plan.get("targets", {}).items())
        same = "; the definitions agree" if plan.get("same_channel") else ""
        rep = metrics.get(REPETITION_INCREASE.per_model(model, scope))
        onset = metrics.get(LOOP_ONSET.per_model(model, scope))
        used = f", the first {sel['n']} of them tested" if sel.get("n_qualifying", sel["n"]) > sel["n"] else ""
        text = (f"- `{model}` (super-outlier by {targets}{same}): {sel.get('n_qualifying', sel['n'])} of "
                f"{sel['n_pool']} prompts are continued without looping ({measure} < {sel['threshold']:g}){used}.")
        if not sel["testable"]:
            text += f" **Not testable** on this model: {sel['reason']}."
        else:
            site, definition = head.split("/", 1)
            text += (f" Zeroing its super-outlier ({definition} definition) at the {_SITE_WORDS.get(site, site)} of "
                     f"the {scope} blocks changes {measure} by {_entry(rep)} relative to random channels of similar "
                     f"magnitude, and the share of continuations that start to loop by {_entry(onset)}: "
                     f"{_reading(rep)}.")
            others = []
            for name, e in metrics.items():
                base, _, lab = name.partition(DEFINITION_SEP)
                if lab and base == REPETITION_INCREASE.per_model(model, scope):
                    s_, d_ = lab.split("/", 1)
                    others.append(f"at the {_SITE_WORDS.get(s_, s_)} with the {d_} definition {_entry(e)} "
                                  f"({_reading(e)})")
            if others:
                text += " Other sites and definitions: " + "; ".join(others) + "."
        unselected = next((r for r in data.get("all_prompts_effects", []) if r.get("model") == model
                           and r.get("kind") == "repetition" and r.get("scope", scope) == scope), None)
        if unselected is not None:
            text += (f" Without the selection (the first {int(unselected.get('n_prompts', 0))} prompts, looping or "
                     f"not: paper B's design) the difference is {_entry(_as_entry(unselected))}.")
        lines.append(text)
    if len(lines) == 2:
        lines.append("No model was ablated in this run.")
    from .findings import claim_findings  # the ledger's verdict, so the chapter and the ledger agree

    verdicts = claim_findings("05_outlier_ablation", metrics) if metrics else []
    if verdicts:
        lines += ["", "For the papers' claims (the ledger's verdict rule; 95% intervals in brackets):", "", *verdicts]
    lines += ["", f"Differences are the outlier ablation minus the mean over random control channels on the same "
                  f"prompts, with 95% intervals over prompts and control draws; comparing with the unmodified "
                  f"model instead would be biased upward, since the prompts were chosen for its low {measure}."]
    return "\n".join(lines) + "\n"
