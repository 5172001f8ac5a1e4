"""Evaluation through lm-eval and retention under interventions (paired bootstrap, chance flags)."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import LayerwiseError
from ..models import LoadedModel
from ..stats import above_chance_pvalue, bootstrap_indices, paired_retention, retention_ratio
from .cache import RunCache
from .lm import LayerwiseLM
from .tasks import TaskParams, TaskSet, _code_execution, load_tasks

log = logging.getLogger(__name__)


#: A zero-argument callable returning a context manager that modifies the model in place and
#: restores it on exit, e.g. ``lambda: skip_layers(lm, [3, 4])``.
ContextManagerFactory = Callable[[], contextlib.AbstractContextManager[Any]]



# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _answer_key(target: Any) -> str:
    """The final answer in a target (GSM8K solutions end with ``#### N``)."""
    s = str(target)
    return s.rsplit("#### ", 1)[-1].strip() if "#### " in s else s.strip()


def _chance(task: Any, metric: str, samples: list[dict]) -> float | None:
    """Score of a model with no information, per metric.

    - accuracy over choices (``multiple_choice``): mean of 1 / number of choices;
    - other accuracies and exact matches: the best constant answer, i.e. the frequency of the most
      common gold answer among the evaluated items (> 0, so "above chance" is testable);
    - likelihood metrics (perplexity, bits per byte): None, no chance level.
    """
    base = metric.split(",")[0]
    if not samples or not (base.startswith("acc") or base.startswith("exact_match")):
        return None
    if getattr(task, "OUTPUT_TYPE", None) == "multiple_choice":
        return float(np.mean([1.0 / max(len(s["arguments"]), 1) for s in samples]))
    counts = Counter(_answer_key(s["target"]) for s in samples)
    return counts.most_common(1)[0][1] / len(samples)


def evaluate(lm: LoadedModel | LayerwiseLM, tasks: str | Sequence[str] | TaskSet, *, limit: int | float | None = None,
             num_fewshot: int | Mapping[str, int] | None = None, batch_size: int = 8, seed: int = 0,
             data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
             params: TaskParams = TaskParams(), allow_code_execution: bool = False,
             **lm_kwargs: Any) -> dict[str, Any]:
    """Run lm-eval on an in-memory model; return metric values and per-item scores.

    Args:
        lm: a LoadedModel (wrapped with ``LayerwiseLM(lm, batch_size=..., **lm_kwargs)``) or an
            existing :class:`LayerwiseLM` (re-used, with its tokenisation cache).
        tasks: task names (local ``lw_*`` or lm-eval's) or a :class:`TaskSet` from :func:`load_tasks`.
        limit: first ``limit`` items per task (an int), or a fraction (a float < 1) as in lm-eval.
        allow_code_execution: let tasks that execute model-written code run (see :func:`load_tasks`;
            a :class:`TaskSet` carries its own permission).

    Returns a dict with, per task name:
        ``metrics[task][key]`` the aggregate (key ``"metric,filter"`` as lm-eval names it),
        ``items[task][key]`` the per-item values in document order (what lm-eval aggregates:
        floats, or ``(loglikelihood, weight)`` pairs for weighted perplexities),
        ``higher_is_better[task][key]``, ``chance[task][key]`` (see :func:`_chance`), ``n[task]``,
        ``aggregation[task][key]`` (lm-eval's aggregation callables, for bootstrapping),
        ``samples[task]`` lm-eval's logged samples, and ``lm_eval`` its raw results.
    """
    from lm_eval.evaluator import evaluate as lm_eval_evaluate

    wrapper = lm if isinstance(lm, LayerwiseLM) else LayerwiseLM(lm, batch_size=batch_size, **lm_kwargs)
    taskset = tasks if isinstance(tasks, TaskSet) else load_tasks(
        tasks, data_dir=data_dir, cache_dir=cache_dir, num_fewshot=num_fewshot, seed=seed, params=params,
        allow_code_execution=allow_code_execution)
    if limit is not None and (limit <= 0):
        raise LayerwiseError(f"limit must be positive (items per task, or a fraction < 1), got {limit}")
    _seed_everything(seed)
    for t in taskset.tasks.values():
        t.set_fewshot_seed(seed=seed)
    wrapper.greedy_tasks = {n for n, t in taskset.tasks.items() if getattr(t, "OUTPUT_TYPE", None) != "multiple_choice"}
    was_training = wrapper.lm.model.training
    wrapper.lm.model.eval()
    wrapper.seconds.clear()
    start = time.perf_counter()
    try:
        with torch.no_grad(), _code_execution(taskset.allow_code_execution):
            raw = lm_eval_evaluate(wrapper, {"tasks": taskset.tasks}, limit=limit, bootstrap_iters=0,
                                   log_samples=True, confirm_run_unsafe_code=taskset.allow_code_execution)
    finally:
        wrapper.lm.model.train(was_training)
    out: dict[str, Any] = {k: {} for k in ("metrics", "items", "higher_is_better", "chance", "n", "aggregation",
                                           "samples")}
    out["seconds"] = {"total": time.perf_counter() - start, **wrapper.seconds}
    for name, task in taskset.tasks.items():
        samples = sorted(raw["samples"][name], key=lambda s: (s["filter"], s["doc_id"]))
        res = {k: v for k, v in raw["results"][name].items() if "," in k and "_stderr" not in k}
        agg, hib = task.aggregation(), task.higher_is_better()
        items: dict[str, list] = defaultdict(list)
        for s in samples:
            for m in s["metrics"]:
                items[f"{m},{s['filter']}"].append(s[m])
        out["metrics"][name] = res
        out["items"][name] = {k: items[k] for k in res}
        out["higher_is_better"][name] = {k: bool(hib.get(k.split(",")[0], True)) for k in res}
        out["aggregation"][name] = {k: agg[k.split(",")[0]] for k in res}
        by_filter = defaultdict(list)
        for s in samples:
            by_filter[s["filter"]].append(s)
        out["chance"][name] = {k: _chance(task, k, by_filter[k.split(",", 1)[1]]) for k in res}
        out["n"][name] = len(by_filter[next(iter(by_filter))]) if by_filter else 0
        out["samples"][name] = samples
    out["lm_eval"] = {k: raw.get(k) for k in ("results", "configs", "versions", "n-shot", "n-samples")}
    return out


# ---------------------------------------------------------------------------------------------
# Retention
# ---------------------------------------------------------------------------------------------


def retention_table(base: dict[str, Any], runs: Mapping[str, dict[str, Any]], *, n_boot: int = 1000, seed: int = 0,
                    alpha: float = 0.05) -> Any:
    """Retention of each run relative to ``base`` (outputs of :func:`evaluate` on the same items).

    Paired bootstrap: the same resampled item indices for the baseline and the run, so the interval
    reflects how item-level changes add up, not the spread of item difficulty. One row per
    (intervention, task, metric) with columns ``baseline``, ``value``, ``retention``, ``ci_low``,
    ``ci_high``, ``chance``, ``baseline_p`` (binomial test of the baseline against chance),
    ``meaningful`` (False when the baseline is not significantly above chance at level ``alpha``).
    """
    import pandas as pd

    rows = []
    for task, metrics in base["metrics"].items():
        n = base["n"][task]
        idx = bootstrap_indices(n, n_boot, seed)
        for key, bval in metrics.items():
            hib = base["higher_is_better"][task][key]
            chance = base["chance"][task][key]
            p = above_chance_pvalue(base["items"][task][key], chance)
            meaningful = bool(chance is None or (p == p and p < alpha))
            agg = base["aggregation"][task][key]
            for name, run in runs.items():
                if run["n"][task] != n:
                    raise LayerwiseError(f"{name!r} evaluated {run['n'][task]} items of {task}, the baseline {n}: "
                                         "use the same limit for every run")
                val = run["metrics"][task][key]
                lo, hi = paired_retention(agg, base["items"][task][key], run["items"][task][key], idx,
                                          higher_is_better=hib, level=1 - alpha)
                metric, _, filt = key.partition(",")
                rows.append({"intervention": name, "task": task, "metric": metric, "filter": filt,
                             "n": n, "baseline": bval, "value": val,
                             "retention": float(retention_ratio(val, bval, hib)), "ci_low": lo, "ci_high": hi,
                             "higher_is_better": hib, "chance": chance, "baseline_p": p,
                             "meaningful": meaningful})
    return pd.DataFrame(rows)


def retention(lm: LoadedModel | LayerwiseLM, interventions: Mapping[str, ContextManagerFactory],
              tasks: str | Sequence[str] | TaskSet, *, limit: int | float | None = None,
              num_fewshot: int | Mapping[str, int] | None = None, batch_size: int = 8, seed: int = 0,
              n_boot: int = 1000, alpha: float = 0.05, data_dir: str | os.PathLike | None = None,
              cache_dir: str | os.PathLike | None = None, params: TaskParams = TaskParams(),
              return_runs: bool = False, allow_code_execution: bool = False,
              cache: str | os.PathLike | None = None, cache_key: str | Mapping[str, str] = "",
              yielded: dict[str, Any] | None = None, **lm_kwargs: Any) -> Any:
    """Evaluate the unmodified model and each intervention; report retention with intervals.

    ``interventions`` maps a name to a zero-argument factory of a context manager that modifies
    the model in place and restores it on exit (``lambda: skip_layers(lm, [3, 4])``). The model,
    the lm-eval tasks and the tokenisation cache are built once and re-used for every run; the
    seed is reset before each run so that stochastic estimates (diffusion Monte-Carlo) use the same
    draws. Returns :func:`retention_table`'s DataFrame, with an ``"unmodified"`` row block (the
    baseline against itself: retention 1, interval [1, 1]); with ``return_runs=True`` also the
    dict of :func:`evaluate` outputs keyed by run name.

    Resuming: with ``cache`` (a folder), each configuration's :func:`evaluate` output is stored as
    soon as it is finished (:class:`~layerwise.evals.cache.RunCache`), keyed by the model's weights,
    the tasks, ``limit``, ``seed``, the sampler settings, the library versions, the configuration's
    name and ``cache_key``: what the intervention is, beyond its name (one salt for all, or a
    mapping name -> salt), e.g. the compression settings. A call that finds a configuration stored
    loads it instead of evaluating it, so a run killed half-way and started again recomputes
    nothing finished, with the same results. ``yielded``, a dict, receives what each intervention's
    context manager yielded (None for the baseline; stored with the result, and loaded from the
    cache for stored configurations, only when ``yielded`` is passed).
    """
    if "unmodified" in interventions:
        raise LayerwiseError("'unmodified' is the baseline's name: call your intervention something else")
    wrapper = lm if isinstance(lm, LayerwiseLM) else LayerwiseLM(lm, batch_size=batch_size, **lm_kwargs)
    taskset = tasks if isinstance(tasks, TaskSet) else load_tasks(
        tasks, data_dir=data_dir, cache_dir=cache_dir, num_fewshot=num_fewshot, seed=seed, params=params,
        allow_code_execution=allow_code_execution)
    store = RunCache.for_retention(cache, wrapper, taskset, limit=limit, seed=seed) if cache is not None else None
    configurations: list[tuple[str, ContextManagerFactory]] = [("unmodified", contextlib.nullcontext),
                                                               *interventions.items()]
    salts = {name: "" if name == "unmodified" else
             (cache_key.get(name, "") if isinstance(cache_key, Mapping) else cache_key) for name, _ in configurations}
    runs: dict[str, dict[str, Any]] = {}
    entered: dict[str, Any] = {}
    if store is not None:
        for name, _ in configurations:
            record = store.load(name, salts[name])
            if record is not None:
                runs[name], entered[name] = record["run"], record.get("yielded")
        log.info("cached: %d of %d configurations", len(runs), len(configurations))
    for name, factory in tqdm([c for c in configurations if c[0] not in runs], desc="interventions", leave=False):
        t0 = time.perf_counter()
        with factory() as value:
            t1 = time.perf_counter()
            runs[name] = evaluate(wrapper, taskset, limit=limit, seed=seed)
        runs[name]["seconds"]["intervention"] = t1 - t0  # applying it (e.g. quantising); evaluate's own beside
        log.info("%s: %.1f s (%s)", name, time.perf_counter() - t0,
                 ", ".join(f"{k} {v:.1f} s" for k, v in runs[name]["seconds"].items()))
        entered[name] = None if name == "unmodified" or yielded is None else value
        if store is not None:
            store.save(name, {"run": runs[name], "yielded": entered[name]}, salts[name])
    runs = {name: runs[name] for name, _ in configurations}
    if yielded is not None:
        yielded.update({name: entered[name] for name, _ in configurations})
    table = retention_table(runs["unmodified"], runs, n_boot=n_boot, seed=seed, alpha=alpha)
    return (table, runs) if return_runs else table
