"""Paper A's claims (A1-A8) and the similarity side of B6: layer and token similarity, layer skipping (chapters
01-03)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..config import LayerwiseError
from ..stats import paired_bootstrap
from .base import (
    AR2DLM_BRANCH_DOSE,
    AR2DLM_CLOSER_TO_AR,
    EARLY_BRANCH_RUN,
    EARLY_MINUS_LATE_SIMILARITY,
    EARLY_SIMILARITY,
    NATIVE_DISRUPTION,
    RECENCY,
    RETENTION_AT_TARGET,
    STAGE_RETENTION,
    WITH_BLOCK0,
    WITHOUT_BLOCK0,
    ClaimMetric,
    _fam,
    _representatives_first,
    definition,
    n_early_layers,
    representatives,
)

__all__ = [
    "early_similarity", "early_similarity_difference", "layer_spread", "ar2dlm_closer_to_ar",
    "early_minus_late_similarity", "ar2dlm_branch_dose", "layer_similarity_metrics",
    "model_recency", "recency", "recency_difference", "token_similarity_metrics", "closest_to_fraction",
    "retention_at_target", "layer_skipping_metrics", "SKIPPING_DEFINITION_STRATEGIES",
    "native_disruption_difference", "stage_retention_min", "native_skipping_metrics",
]

# ---------------------------------------------------------------------------------------------
# 01 layer similarity (A1, A4)
# ---------------------------------------------------------------------------------------------


def _early_mean(per_sequence: np.ndarray, first_block: int = 0) -> np.ndarray:
    """[n_seqs, L] -> [n_seqs]: each sequence's mean over the early blocks from ``first_block`` on."""
    return per_sequence[:, first_block: n_early_layers(per_sequence.shape[1])].mean(1)


def _late_mean(per_sequence: np.ndarray) -> np.ndarray:
    """[n_seqs, L] -> [n_seqs]: each sequence's mean over the late blocks (the last ``ceil(L / 3)``)."""
    return per_sequence[:, per_sequence.shape[1] - n_early_layers(per_sequence.shape[1]):].mean(1)


def _check_first_block(per_sequence: np.ndarray, first_block: int) -> str:
    """'' when the early blocks from ``first_block`` on are not empty, else why the definition cannot be read."""
    n = n_early_layers(per_sequence.shape[1])
    return "" if first_block < n else (f"only {n} early block(s) of {per_sequence.shape[1]}: nothing is left "
                                       f"without the first {first_block}")


def layer_spread(*per_sequence: np.ndarray, first_block: int = 0) -> float:
    """How much the similarity varies between blocks: the standard deviation over blocks (from
    ``first_block`` on) of each model's mean profile, averaged over the models given.

    The margin of the similarity claims (A1, A4, B6) is a fraction of this spread: a difference
    between models that is small against how much one model's similarity moves from block to block
    is not visible as "higher" in the papers' layer-profile figures.
    """
    return float(np.mean([p.mean(0)[first_block:].std() for p in per_sequence]))


def _definition_label(first_block: int) -> str:
    return WITH_BLOCK0 if first_block == 0 else WITHOUT_BLOCK0


def early_similarity(per_sequence: np.ndarray, *, model: str = "", n_boot: int = 1000, seed: int = 0) -> ClaimMetric:
    """Mean consecutive-layer cosine over the early blocks; interval over sequences.

    ``per_sequence`` is ``[n_seqs, L]``: ``c_s(l)`` of :func:`layerwise.probes.layer_similarity`.
    """
    v, ci = paired_bootstrap(lambda p: _early_mean(p).mean(), per_sequence, n_boot=n_boot, seed=seed)
    L = per_sequence.shape[1]
    return ClaimMetric(v, ci, model=model, note=f"mean cos over the first {n_early_layers(L)} of {L} blocks")


def early_similarity_difference(diffusion: np.ndarray, ar: np.ndarray, *, paired: bool, model: str = "",
                                first_block: int = 0, n_boot: int = 1000, seed: int = 0) -> ClaimMetric:
    """A1: early-block similarity of the diffusion model minus the AR model's (paper A: > 0).

    Both are ``[n_seqs, L]`` per-sequence similarities; ``paired`` when the two models read the same
    sequences (one tokenizer), so one resample of sequences serves both. ``first_block=1`` leaves out
    block 0 (whose input is the embedding, not a block output). ``extra["margin_scale"]`` is the two
    models' :func:`layer_spread` over the same blocks.
    """
    why = _check_first_block(diffusion, first_block)
    label = _definition_label(first_block)
    if why:
        return ClaimMetric(None, meaningful=False, model=model, reason=why, extra={"definition": label})
    v, ci = paired_bootstrap(lambda x, y: _early_mean(x, first_block).mean() - _early_mean(y, first_block).mean(),
                             diffusion, ar, n_boot=n_boot, seed=seed, paired=paired)
    spread = layer_spread(diffusion, ar, first_block=first_block)
    return ClaimMetric(v, ci, model=model, note=f"early blocks from block {first_block}; paper A: > 0",
                       extra={"definition": label, "margin_scale": spread,
                              "margin_scale_is": "between-block SD of the mean similarity profiles"})


def _closer(first_block: int) -> Callable[[np.ndarray, np.ndarray, np.ndarray], float]:
    def closer(d_: np.ndarray, a_: np.ndarray, m_: np.ndarray) -> float:
        pd_, pa, pm = (x.mean(0)[first_block:] for x in (d_, a_, m_))
        return float(np.abs(pm - pd_).mean() - np.abs(pm - pa).mean())
    return closer


def _check_depths(*arrays: np.ndarray) -> None:
    if len({a.shape[1] for a in arrays}) != 1:
        raise LayerwiseError(f"profiles of different depths {[a.shape[1] for a in arrays]}: "
                             "compare models with the same number of blocks")


def ar2dlm_closer_to_ar(ar2dlm: np.ndarray, dlm: np.ndarray, ar: np.ndarray, *, paired: bool, model: str = "",
                        first_block: int = 0, n_boot: int = 1000, seed: int = 0) -> ClaimMetric:
    """A4: is the AR-initialised diffusion model's similarity profile closer to the AR model's?

    ``mean_l |profile(ar2dlm) - profile(dlm)| - mean_l |profile(ar2dlm) - profile(ar)|`` over the
    blocks from ``first_block`` on, where a profile is the mean over sequences of ``[n_seqs, L]``
    (paper A: > 0). The three models need the same depth. ``extra["margin_scale"]`` is the distance
    between the DLM's and the AR model's profiles, ``mean_l |profile(dlm) - profile(ar)|``: an
    ar2dlm profile a fraction ``f`` of the way from AR to DLM scores ``(1 - 2 f)`` times it.
    """
    _check_depths(dlm, ar, ar2dlm)
    v, ci = paired_bootstrap(_closer(first_block), dlm, ar, ar2dlm, n_boot=n_boot, seed=seed, paired=paired)
    dist = float(np.abs(dlm.mean(0)[first_block:] - ar.mean(0)[first_block:]).mean())
    note = ("mean |profile(ar2dlm) - profile(dlm)| - mean |profile(ar2dlm) - profile(ar)|"
            f" from block {first_block}; paper A: > 0")
    return ClaimMetric(v, ci, model=model, note=note,
                       extra={"definition": _definition_label(first_block), "margin_scale": dist,
                              "margin_scale_is": "mean |profile(dlm) - profile(ar)|"})


def ar2dlm_branch_dose(late: np.ndarray, early: np.ndarray, dlm: np.ndarray, ar: np.ndarray, *, paired: bool,
                       model: str = "", n_boot: int = 1000, seed: int = 0) -> ClaimMetric:
    """A6: AR-likeness (:func:`ar2dlm_closer_to_ar`) of the ar2dlm run branched late minus that of the
    run branched early. Paper A's initialisation-bias reading predicts > 0: more AR training before
    the switch, a more AR-like profile. ``extra["margin_scale"]``: the DLM-AR profile distance."""
    _check_depths(dlm, ar, late, early)
    closer = _closer(0)
    v, ci = paired_bootstrap(lambda d_, a_, m1, m0: closer(d_, a_, m1) - closer(d_, a_, m0), dlm, ar, late, early,
                             n_boot=n_boot, seed=seed, paired=paired)
    dist = float(np.abs(dlm.mean(0) - ar.mean(0)).mean())
    return ClaimMetric(v, ci, model=model, note="AR-likeness of the late branch minus the early branch's; > 0 = "
                       "dose-response",
                       extra={"margin_scale": dist, "margin_scale_is": "mean |profile(dlm) - profile(ar)|"})


def early_minus_late_similarity(per_sequence: np.ndarray, *, model: str = "", first_block: int = 0,
                                n_boot: int = 1000, seed: int = 0) -> ClaimMetric:
    """B6: mean similarity of the early blocks (from ``first_block``) minus that of the late blocks
    (the last ``ceil(L / 3)``): > 0 = redundancy highest early (paper B's DLM), < 0 = highest late
    (paper B's AR). Interval over sequences; ``extra["margin_scale"]``: the model's :func:`layer_spread`."""
    why = _check_first_block(per_sequence, first_block)
    label = _definition_label(first_block)
    if why:
        return ClaimMetric(None, meaningful=False, model=model, reason=why, extra={"definition": label})
    v, ci = paired_bootstrap(lambda p: float((_early_mean(p, first_block) - _late_mean(p)).mean()), per_sequence,
                             n_boot=n_boot, seed=seed)
    return ClaimMetric(v, ci, model=model, note=f"early (from block {first_block}) minus late mean cos",
                       extra={"definition": label, "margin_scale": layer_spread(per_sequence, first_block=first_block),
                              "margin_scale_is": "between-block SD of the model's mean similarity profile"})


def layer_similarity_metrics(per_sequence: Mapping[str, np.ndarray], families: Mapping[str, Any], *, paired: bool,
                             n_boot: int = 1000, seed: int = 0,
                             pairs: Mapping[str, str] | None = None) -> dict[str, ClaimMetric]:
    """Chapter 01's metrics from each model's clean-text ``[n_seqs, L]`` similarities; the families'
    representatives are paper A's models where present (``pairs`` overrides, :func:`representatives`).

    Beside the headline names, every pre-registered definition is written under
    ``definition(name, label)``: A1, A4 and B6 with and without block 0. A6 is written when a
    subject is the early-branch run :data:`~layerwise.claims.EARLY_BRANCH_RUN`.
    """
    out = {EARLY_SIMILARITY.of(n): early_similarity(p, model=n, n_boot=n_boot, seed=seed)
           for n, p in per_sequence.items()}
    rep = representatives(families, "A", pairs)
    kw = {"n_boot": n_boot, "seed": seed}
    for n, fam in families.items():
        for first in (0, 1):
            m = early_minus_late_similarity(per_sequence[n], model=n, first_block=first, **kw)
            if first == 0:
                out[EARLY_MINUS_LATE_SIMILARITY.per_model(n)] = m
            if rep.get(_fam(fam)) == n:
                name = EARLY_MINUS_LATE_SIMILARITY.of(_fam(fam))
                if first == 0:
                    out[name] = m
                out[definition(name, _definition_label(first))] = m
    if "dlm" in rep and "ar" in rep:
        name = EARLY_SIMILARITY.minus_ar("dlm")
        for first in (0, 1):
            m = early_similarity_difference(per_sequence[rep["dlm"]], per_sequence[rep["ar"]], paired=paired,
                                            model=f"{rep['dlm']} - {rep['ar']}", first_block=first, **kw)
            if first == 0:
                out[name] = m
            out[definition(name, _definition_label(first))] = m
    if {"dlm", "ar", "ar2dlm"} <= set(rep):
        d, a, m_ = (per_sequence[rep[f]] for f in ("dlm", "ar", "ar2dlm"))
        if d.shape[1] == a.shape[1] == m_.shape[1]:
            for first in (0, 1):
                if first >= d.shape[1]:
                    continue
                m = ar2dlm_closer_to_ar(m_, d, a, paired=paired, model=rep["ar2dlm"], first_block=first, **kw)
                if first == 0:
                    out[AR2DLM_CLOSER_TO_AR] = m
                out[definition(AR2DLM_CLOSER_TO_AR, _definition_label(first))] = m
            early = per_sequence.get(EARLY_BRANCH_RUN)
            if (early is not None and EARLY_BRANCH_RUN != rep["ar2dlm"] and _fam(families[EARLY_BRANCH_RUN]) == "ar2dlm"
                    and early.shape[1] == d.shape[1]):
                out[AR2DLM_BRANCH_DOSE] = ar2dlm_branch_dose(m_, early, d, a, paired=paired,
                                                             model=f"{rep['ar2dlm']} - {EARLY_BRANCH_RUN}", **kw)
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

    Both are ``per_sequence_recency`` arrays ``[n_seqs, L+1]`` of :func:`layerwise.probes.token_similarity`;
    ``extra["margin_scale"]`` is the AR model's own recency (the margin is relative to it).
    """
    v, ci = paired_bootstrap(lambda x, y: model_recency(x) - model_recency(y), diffusion, ar,
                             n_boot=n_boot, seed=seed, paired=paired)
    return ClaimMetric(v, ci, model=model, note="paper A: < 0 (less recency bias in the DLM)",
                       extra={"margin_scale": abs(model_recency(ar)), "margin_scale_is": "|recency of the AR model|"})


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


def closest_to_fraction(curve: pd.DataFrame, target_fraction: float, *, by: str = "layers") -> pd.DataFrame:
    """Per (model, strategy): the row whose skipped share is closest to ``target_fraction``.

    ``by="layers"``: the share of blocks ``k / layers`` (paper A's 6 of 32); ``by="flops"``: the share
    of FLOPs removed (``flops_reduction``), which differs from the block share where the embeddings and
    the head are a large part of a small model. ``curve`` has one row per (model, strategy, k) with
    columns ``k`` and ``layers`` (and ``flops_reduction`` for ``by="flops"``); ties: smaller k.
    """
    if by not in ("layers", "flops"):
        raise LayerwiseError(f"by={by!r}: use 'layers' (share of blocks) or 'flops' (share of FLOPs removed)")
    rows = [d.iloc[((d.k / d.layers if by == "layers" else d.flops_reduction) - target_fraction).abs().argmin()]
            for _, d in curve.groupby(["model", "strategy"])]
    return pd.DataFrame(rows).reset_index(drop=True).infer_objects()


def retention_at_target(curve: pd.DataFrame, model: str, *, strategy: str, target_fraction: float,
                        what: str = "", by: str = "layers") -> ClaimMetric:
    """A3: retention of ``model`` with ``strategy`` at the configuration closest to ``target_fraction``.

    ``curve`` holds one task's retention per (model, strategy, k): columns ``retention``, ``ci_low``,
    ``ci_high``, ``meaningful``, ``k``, ``layers``, ``flops_reduction`` (paper A: > 0.9 for the
    diffusion model, < 0.9 for AR at 6 of 32 blocks). Not meaningful when the unmodified model is not
    above chance. ``what`` describes the task and items in the note; ``by``: as :func:`closest_to_fraction`.
    """
    d = curve[(curve.model == model) & (curve.strategy == strategy)]
    if d.empty:
        raise LayerwiseError(f"no retention rows for model {model!r} and strategy {strategy!r}: "
                             "evaluate that strategy or pick another headline strategy")
    row = closest_to_fraction(d, target_fraction, by=by).iloc[0]
    note = (f"{what + ', ' if what else ''}strategy {strategy}, {row.k} of {row.layers} blocks skipped "
            f"({100 * row.flops_reduction:.1f}% of FLOPs)"
            + ("" if row.meaningful else "; baseline not above chance: retention meaningless"))
    reason = "" if row.meaningful else "the unmodified model is not above chance on this task"
    return ClaimMetric(float(row.retention), (float(row.ci_low), float(row.ci_high)), meaningful=bool(row.meaningful),
                       model=model, note=note, reason=reason, extra={"k": int(row.k), "layers": int(row.layers),
                                                      "flops_reduction": float(row.flops_reduction)})


#: A3's pre-registered block-selection strategies (each on every generation task the chapter evaluates)
SKIPPING_DEFINITION_STRATEGIES = ("early", "redundant")


def layer_skipping_metrics(curve: pd.DataFrame, families: Mapping[str, Any], *, strategy: str,
                           target_fraction: float, what: str = "", pairs: Mapping[str, str] | None = None,
                           definitions: pd.DataFrame | None = None,
                           definition_strategies: tuple[str, ...] = SKIPPING_DEFINITION_STRATEGIES
                           ) -> dict[str, ClaimMetric]:
    """Chapter 03's metrics: every model's retention at the target fraction, and each family's
    representative's (paper A's models where present, else the family's first).

    Every pre-registered definition of a family's retention is written under
    ``definition(name, "<strategy>:<task>")``: each of ``definition_strategies`` on each generation
    task of ``definitions`` (rows like ``curve``'s with a ``label`` column ``"<task> <metric>"``;
    default: ``curve`` itself). Where the configuration nearest the target share of FLOPs is another
    one than the nearest share of blocks (a small model, whose embeddings and head weigh), it is
    written too, under ``"<strategy>:<task>:flops"``.
    """
    out: dict[str, ClaimMetric] = {}
    ordered = _representatives_first(families, "A", pairs)
    for name, fam in ordered.items():
        m = retention_at_target(curve, name, strategy=strategy, target_fraction=target_fraction, what=what)
        out[RETENTION_AT_TARGET.per_model(name)] = m
        out.setdefault(RETENTION_AT_TARGET.of(_fam(fam)), m)
    table = curve if definitions is None else definitions
    if "label" not in table:
        return out
    rep = representatives(families, "A", pairs)
    for fam, name in rep.items():
        for label in dict.fromkeys(table.label):
            task = str(label).split(" ", 1)[0]
            for strat in definition_strategies:
                d = table[(table.label == label) & (table.strategy == strat)]
                if (d.model == name).any():
                    m = retention_at_target(d, name, strategy=strat, target_fraction=target_fraction,
                                            what=str(label))
                    out[definition(RETENTION_AT_TARGET.of(fam), f"{strat}:{task}")] = m
                    if "flops_reduction" in d:
                        f = retention_at_target(d, name, strategy=strat, target_fraction=target_fraction,
                                                what=str(label), by="flops")
                        if f.extra["k"] != m.extra["k"]:
                            out[definition(RETENTION_AT_TARGET.of(fam), f"{strat}:{task}:flops")] = f
    return out


# ---------------------------------------------------------------------------------------------
# 03 referees' checks: disruption under native inference (A7), skipping by diffusion stage (A8)
# ---------------------------------------------------------------------------------------------


def native_disruption_difference(diffusion: np.ndarray, ar: np.ndarray, *, model: str = "", n_boot: int = 1000,
                                 seed: int = 0) -> ClaimMetric:
    """A7: the diffusion model's final-block disruption minus the AR model's, under each one's native inference.

    ``diffusion`` / ``ar``: ``[point, prompt]`` disruption ``1 - cos`` at the final block for the same skip
    mask and the same prompts at matched trajectory points (:func:`layerwise.native_skipping.native_disruption`);
    each prompt's mean over the points is the unit of a paired bootstrap (independent resampling when the
    prompt counts differ). ``margin_scale``: the AR model's mean disruption (the ledger asks the diffusion
    model's to be a fifth lower). Not meaningful when the AR model is not disrupted at all.
    """
    d, a = np.asarray(diffusion, dtype=float), np.asarray(ar, dtype=float)
    if d.ndim != 2 or a.ndim != 2 or 0 in d.shape or 0 in a.shape:
        raise LayerwiseError("pass [point, prompt] arrays of final-block disruption (NativeDisruption.final)")
    du, au = d.mean(0), a.mean(0)
    value, ci = paired_bootstrap(lambda x, y: float(x.mean() - y.mean()), du, au, n_boot=n_boot, seed=seed,
                                 paired=len(du) == len(au))
    scale = float(au.mean())
    ok = scale > 0
    return ClaimMetric(value, ci, meaningful=ok, model=model,
                       note=f"final-block 1 - cos, mean over {d.shape[0]} trajectory points and {len(du)} prompts",
                       reason="" if ok else "the skip mask does not disrupt the AR model at all",
                       extra={"margin_scale": scale, "diffusion": float(du.mean()), "ar": scale})


def stage_retention_min(stages: pd.DataFrame, model: str, *, what: str = "") -> ClaimMetric:
    """A8: the lowest retention of ``model`` over the diffusion schedule's stages, with that stage's interval.

    ``stages``: rows of :func:`layerwise.native_skipping.stage_retention` (``model``, ``stage``,
    ``retention``, ``ci_low``, ``ci_high``, ``meaningful``); the ``all`` row (static skipping) is left out.
    Not meaningful when the unmodified model is not above chance.
    """
    d = stages[(stages.model == model) & (stages.stage != "all")]
    if d.empty:
        raise LayerwiseError(f"no stage rows for model {model!r}: run native_skipping.stage_retention on it")
    row = d.loc[d.retention.fillna(np.inf).idxmin()]
    ok = bool(d.meaningful.all())
    note = (f"{what + ', ' if what else ''}lowest of {', '.join(map(str, d.stage))}: {row.stage}"
            + ("" if ok else "; baseline not above chance: retention meaningless"))
    return ClaimMetric(float(row.retention), (float(row.ci_low), float(row.ci_high)), meaningful=ok, model=model,
                       note=note, reason="" if ok else "the unmodified model is not above chance on this task",
                       extra={"stage": str(row.stage), "skipped": list(row.skipped) if "skipped" in d else []})


def native_skipping_metrics(final: Mapping[str, np.ndarray], points: Any, stages: pd.DataFrame,
                            families: Mapping[str, Any], *, what: str = "", pairs: Mapping[str, str] | None = None,
                            n_boot: int = 1000, seed: int = 0) -> dict[str, ClaimMetric]:
    """Chapter 03's referees' checks: every model's final-block disruption (mean over points and prompts) and
    each diffusion family's difference from the AR family (A7, with one definition per trajectory point,
    ``at:<point>``); every (model, stage) retention and each diffusion family's lowest stage (A8, with one
    definition per stage, ``stage:<stage>``). ``final``: model -> ``[point, prompt]``; ``points``: the
    fractions in the order of ``final``'s first axis."""
    out: dict[str, ClaimMetric] = {}
    pts = [float(p) for p in points]
    for name, arr in final.items():
        a = np.asarray(arr, dtype=float).mean(0)
        v, ci = paired_bootstrap(np.mean, a, n_boot=n_boot, seed=seed)
        out[NATIVE_DISRUPTION.per_model(name)] = ClaimMetric(v, ci, model=name, note="final-block 1 - cos")
    for _, r in stages.iterrows():
        out[STAGE_RETENTION.per_model(str(r.model), str(r.stage))] = ClaimMetric(
            float(r.retention), (float(r.ci_low), float(r.ci_high)), meaningful=bool(r.meaningful), model=str(r.model))
    rep = representatives(families, "A", pairs)
    for fam in ("dlm", "ar2dlm"):
        if fam not in rep:
            continue
        name = rep[fam]
        if "ar" in rep and name in final and rep["ar"] in final:
            pair = f"{name} - {rep['ar']}"
            d, a = np.asarray(final[name]), np.asarray(final[rep["ar"]])
            key = NATIVE_DISRUPTION.minus_ar(fam)
            out[key] = native_disruption_difference(d, a, model=pair, n_boot=n_boot, seed=seed)
            for i, p in enumerate(pts):
                out[definition(key, f"at:{p:g}")] = native_disruption_difference(d[i:i + 1], a[i:i + 1], model=pair,
                                                                                 n_boot=n_boot, seed=seed)
        if (stages.model == name).any():
            out[STAGE_RETENTION.of(fam)] = stage_retention_min(stages, name, what=what)
            for st in dict.fromkeys(stages[(stages.model == name) & (stages.stage != "all")].stage):
                out[definition(STAGE_RETENTION.of(fam), f"stage:{st}")] = stage_retention_min(
                    stages[stages.stage == st], name, what=what)
    return out
