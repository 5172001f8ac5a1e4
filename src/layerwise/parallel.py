"""Data-parallel evaluation: each process scores a shard of the items, the shards merge exactly.

Under ``accelerate launch`` (as lm-eval runs over several GPUs) every process loads the model on its
own device (``PartialState().device``), calls :func:`evaluate_data_parallel`, which evaluates the
items ``[rank::world]`` of every task and writes them to a shard file; process 0 waits for the
others and merges the shards into the structure :func:`layerwise.evals.evaluate` returns. The same
pieces work without accelerate: :func:`evaluate_sharded` with explicit ``rank``/``world`` (one call
per shard, in any process or on any machine) and :func:`merge_shards` / :func:`merge_shard_files`.

Exactness: every shard builds the requests of all items up to the limit, in the single-process order,
and keeps only its own, so few-shot examples (drawn from a stateful generator, item after item) are
those of a single-process run; the merged per-item scores are in document order and the aggregates
are recomputed from them with the task's own aggregation functions. What a shard cannot reproduce is
anything that depends on which items share a batch: the likelihood/generation of one item must not
depend on its batch neighbours (true in float32 with the project's samplers; see the batch-invariance
tests for bf16) and Monte-Carlo estimates must draw per item, not from one stream across batches.
"""

from __future__ import annotations

import os
import pickle
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .config import LayerwiseError
from .evals.lm import LayerwiseLM
from .evals.run import _chance, evaluate
from .evals.tasks import TaskParams, TaskSet, load_tasks
from .models import LoadedModel

SHARD_PATTERN = "shard-{rank:05d}-of-{world:05d}.pkl"


def _shard_tasks(taskset: TaskSet, rank: int, world: int) -> Callable[[], None]:
    """Make every task of ``taskset`` evaluate only items ``[rank::world]``; return the undo."""
    undo: list[Callable[[], None]] = []
    for task in taskset.tasks.values():
        orig_iter, orig_build = task.doc_iterator, task.build_all_requests
        building = [False]

        def doc_iterator(*, _it: Any = orig_iter, _b: list[bool] = building,
                         **kw: Any) -> Iterator[tuple[int, Any]]:
            kw.update(rank=0, world_size=1)  # the evaluator's own rank/world stay 0/1: this shards instead
            for doc_id, doc in _it(**kw):
                if _b[0] or doc_id % world == rank:
                    yield doc_id, doc

        def build_all_requests(*args: Any, _task: Any = task, _build: Any = orig_build, _b: list[bool] = building,
                               **kw: Any) -> None:
            if kw.get("samples") is not None:
                raise LayerwiseError("sharded evaluation selects items itself: pass limit, not samples")
            kw["rank"], kw["world_size"] = 0, 1
            _b[0] = True
            try:
                _build(*args, **kw)
            finally:
                _b[0] = False
            _task._instances = [i for i in _task._instances if i.doc_id % world == rank]

        task.doc_iterator = doc_iterator
        task.build_all_requests = build_all_requests

        def restore(_task: Any = task) -> None:
            for attr in ("doc_iterator", "build_all_requests"):
                _task.__dict__.pop(attr, None)

        undo.append(restore)

    def undo_all() -> None:
        for u in undo:
            u()

    return undo_all


def _check_rank(rank: int, world: int) -> None:
    if world < 1 or not 0 <= rank < world:
        raise LayerwiseError(f"need 0 <= rank < world >= 1, got rank {rank} of {world}: "
                             "pass the process index and the number of processes")


def evaluate_sharded(lm: LoadedModel | LayerwiseLM, tasks: str | Sequence[str] | TaskSet, *, rank: int,
                     world: int, limit: int | float | None = None,
                     num_fewshot: int | Mapping[str, int] | None = None, batch_size: int = 8, seed: int = 0,
                     data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                     params: TaskParams = TaskParams(), allow_code_execution: bool = False,
                     out_dir: str | os.PathLike | None = None, **lm_kwargs: Any) -> dict[str, Any]:
    """:func:`layerwise.evals.evaluate` on items ``[rank::world]`` of every task (same arguments).

    Returns the shard's output (its ``n``/``metrics`` cover the shard only: merge the shards with
    :func:`merge_shards`). With ``out_dir``, also writes it to ``out_dir/shard-RANK-of-WORLD.pkl``
    (raw lm-eval results left out) for :func:`merge_shard_files`.
    """
    _check_rank(rank, world)
    taskset = tasks if isinstance(tasks, TaskSet) else load_tasks(
        tasks, data_dir=data_dir, cache_dir=cache_dir, num_fewshot=num_fewshot, seed=seed, params=params,
        allow_code_execution=allow_code_execution)
    undo = _shard_tasks(taskset, rank, world)
    try:
        out = evaluate(lm, taskset, limit=limit, batch_size=batch_size, seed=seed, **lm_kwargs)
    finally:
        undo()
    out["shard"] = {"rank": rank, "world": world}
    out["output_type"] = {name: getattr(t, "OUTPUT_TYPE", None) for name, t in taskset.tasks.items()}
    if out_dir is not None:
        path = Path(out_dir) / SHARD_PATTERN.format(rank=rank, world=world)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            pickle.dump({k: v for k, v in out.items() if k != "lm_eval"} | {"lm_eval": _plain(out["lm_eval"])}, f)
        tmp.replace(path)
    return out


def _plain(raw: dict[str, Any]) -> dict[str, Any]:
    """lm-eval's raw summary without its task configs (they can hold unpicklable callables)."""
    return {k: v for k, v in raw.items() if k != "configs"}


def merge_shards(shards: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Merge the outputs of :func:`evaluate_sharded` for ranks ``0..world-1`` into one
    :func:`layerwise.evals.evaluate` output: items in document order, aggregates recomputed."""
    if not shards:
        raise LayerwiseError("no shards to merge: run evaluate_sharded for every rank first")
    worlds = {s["shard"]["world"] for s in shards}
    ranks = sorted(s["shard"]["rank"] for s in shards)
    if len(worlds) != 1 or ranks != list(range(next(iter(worlds)))):
        raise LayerwiseError(f"shards of ranks {ranks} (worlds {sorted(worlds)}): need exactly one shard per "
                             "rank 0..world-1 of one run")
    first = min(shards, key=lambda s: s["shard"]["rank"])
    out: dict[str, Any] = {k: {} for k in ("metrics", "items", "higher_is_better", "chance", "n", "aggregation",
                                           "samples")}
    raw = dict(first["lm_eval"])
    raw["results"] = {k: dict(v) for k, v in (raw.get("results") or {}).items()}
    n_samples = dict(raw.get("n-samples") or {})
    for name in first["metrics"]:
        samples = sorted((x for s in shards for x in s["samples"][name]), key=lambda x: (x["filter"], x["doc_id"]))
        keys = list(first["metrics"][name])
        items: dict[str, list] = defaultdict(list)
        for x in samples:
            for m in x["metrics"]:
                items[f"{m},{x['filter']}"].append(x[m])
        agg = first["aggregation"][name]
        by_filter: dict[str, list] = defaultdict(list)
        for x in samples:
            by_filter[x["filter"]].append(x)
        out["items"][name] = {k: items[k] for k in keys}
        out["metrics"][name] = {k: agg[k](items[k]) for k in keys}
        out["higher_is_better"][name] = first["higher_is_better"][name]
        out["aggregation"][name] = agg
        out["chance"][name] = {k: _chance(_OutputType(first, name), k, by_filter[k.split(",", 1)[1]]) for k in keys}
        out["n"][name] = len(by_filter[next(iter(by_filter))]) if by_filter else 0
        out["samples"][name] = samples
        raw["results"].setdefault(name, {}).update(out["metrics"][name])
        if name in n_samples:
            n_samples[name] = {"original": n_samples[name].get("original"), "effective": out["n"][name]}
    raw["n-samples"] = n_samples
    out["lm_eval"] = raw
    out["output_type"] = first["output_type"]
    return out


class _OutputType:
    """Stands in for a task in :func:`_chance`, which only reads ``OUTPUT_TYPE``."""

    def __init__(self, shard: dict[str, Any], name: str) -> None:
        self.OUTPUT_TYPE = shard["output_type"][name]


def merge_shard_files(out_dir: str | os.PathLike, world: int | None = None, *, wait_s: float = 0.0) -> dict[str, Any]:
    """Merge the shard files written by :func:`evaluate_sharded` into ``out_dir`` (waiting up to
    ``wait_s`` seconds for missing ones)."""
    folder = Path(out_dir)
    if world is None:
        found = sorted(folder.glob("shard-*-of-*.pkl"))
        if not found:
            raise LayerwiseError(f"no shard files in {folder}: run evaluate_sharded(..., out_dir=...) first")
        world = int(found[0].stem.rsplit("-", 1)[1])
    paths = [folder / SHARD_PATTERN.format(rank=r, world=world) for r in range(world)]
    deadline = time.monotonic() + wait_s
    while (missing := [p for p in paths if not p.exists()]) and time.monotonic() < deadline:
        time.sleep(0.2)
    if missing:
        raise LayerwiseError(f"missing shard files {[p.name for p in missing]} in {folder}: "
                             "run evaluate_sharded for those ranks")
    shards = []
    for p in paths:
        with open(p, "rb") as f:
            shards.append(pickle.load(f))
    return merge_shards(shards)


def process_rank() -> tuple[int, int]:
    """(process index, number of processes) of this process.

    From the launcher's ``RANK``/``WORLD_SIZE`` (set by ``accelerate launch --multi_gpu`` and
    ``torchrun``; no process group is needed, the shards meet in files), else accelerate's
    ``PartialState`` (e.g. MPI-launched multi-CPU runs), else ``(0, 1)``.
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    from accelerate import PartialState

    state = PartialState()
    return state.process_index, state.num_processes


def evaluate_data_parallel(lm: LoadedModel | LayerwiseLM, tasks: str | Sequence[str] | TaskSet, *,
                           out_dir: str | os.PathLike, rank: int | None = None, world: int | None = None,
                           wait_s: float = 3600.0, **kwargs: Any) -> dict[str, Any] | None:
    """Evaluate this process's shard and, on process 0, merge all shards (waiting up to ``wait_s``).

    Rank and world default to :func:`process_rank` (launch with ``accelerate launch --multi_gpu
    --num_processes N script.py``; load the model on ``PartialState().device``). ``kwargs`` are
    :func:`layerwise.evals.evaluate`'s. Returns the merged output on process 0, None elsewhere.
    The shard files stay in ``out_dir`` (a fresh folder per run).
    """
    if rank is None or world is None:
        rank, world = process_rank()
    evaluate_sharded(lm, tasks, rank=rank, world=world, out_dir=out_dir, **kwargs)
    if rank != 0:
        return None
    return merge_shard_files(out_dir, world, wait_s=wait_s)
