"""Sweeps: chapters x models x parameter configurations as papermill jobs through submitit.

Each job runs one chapter through the book's runner (:func:`layerwise.book.runner.run`, papermill)
with its own overrides. :func:`plan_sweep` builds and type-checks the jobs (every job is planned by
the runner before anything is submitted); :func:`run_sweep` submits them with
``submitit.AutoExecutor``: on a SLURM cluster as one job array (``--slurm-partition``,
``--gpus-per-job``, ``--timeout-min``, at most ``max_parallel`` at a time), with ``cluster="local"``
on this machine as ``max_parallel`` lanes (default: one per visible GPU, else one) that run their
jobs one after the other, each lane on its own GPU (submitit sets ``CUDA_VISIBLE_DEVICES``).

Where the outputs go:

- A chapter with a single job (no ``models`` or grid axis) writes ``<out>/notebooks/NN_name.ipynb``
  and its result file ``<cache>/results/<profile>/NN_name.json``, exactly as ``layerwise-book run
  --out <out>`` does, so ``layerwise-book build --out <out>`` and the ledger pick them up.
- A chapter with several jobs writes each job's notebook to ``<out>/sweep/<job>/notebooks/`` and
  its result file to ``<cache>/results/<profile>/NN_name@<job>.json`` (``$LAYERWISE_RESULT_KEY``):
  jobs never overwrite each other and :func:`layerwise.results.load_results` merges them.

Jobs run concurrently and share the cache: a chapter that reads another chapter's artefacts needs
them there first (sweep that chapter before, or run it with ``layerwise-book run``).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import LayerwiseError
from .results import RESULT_KEY_ENV

CLUSTERS = ("auto", "local", "slurm", "debug")


@dataclass(frozen=True)
class SweepJob:
    """One chapter run: its overrides, output folder and result-file key (empty: the chapter's own)."""

    name: str
    chapter: str
    overrides: dict[str, Any] = field(default_factory=dict)
    out: str = ""
    key: str = ""

    def describe(self) -> str:
        params = " ".join(f"-p {k}={json.dumps(v)}" for k, v in self.overrides.items())
        result = f"{self.chapter}@{self.key}.json" if self.key else f"{self.chapter}.json"
        return f"{self.name}: {self.chapter} {params} -> {self.out}/notebooks/{self.chapter}.ipynb, results/{result}"


@dataclass(frozen=True)
class SweepSettings:
    """What every job shares: the profile and the runner's folders."""

    profile: str = "tiny"
    notebooks_dir: str | None = None
    profiles_dir: str | None = None
    cache: str | None = None
    force: bool = False
    kernel: str | None = None


def _slug(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text.rsplit("/", 1)[-1] if isinstance(value, str) else text).strip("-")


def plan_sweep(settings: SweepSettings, chapters: Sequence[str], *, models: Sequence[str] = (),
               grid: Mapping[str, Sequence[Any]] | None = None, overrides: Mapping[str, Any] | None = None,
               out: str | os.PathLike | None = None) -> list[SweepJob]:
    """The jobs of chapters x models (one job each, ``models=[m]``) x the grid's cartesian product.

    Every job is planned by the runner (parameters resolved and type-checked) before returning, so
    a typo fails here rather than in a queued job.
    """
    from .book.chapters import discover_chapters
    from .book.runner import out_dir_for, plan_run

    if not chapters:
        raise LayerwiseError("no chapters to sweep: pass --chapters NN_name ...")
    grid = dict(grid or {})
    for name, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise LayerwiseError(f"grid parameter {name} needs a non-empty list of values, e.g. -g {name}=[1, 2]")
    fixed = dict(overrides or {})
    if models and "models" in fixed:
        raise LayerwiseError("give models either as --models (one job per model) or as -p models=..., not both")
    base = out_dir_for(settings.profile, out, settings.notebooks_dir)
    known = list(discover_chapters(settings.notebooks_dir))
    configs = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    jobs: list[SweepJob] = []
    for chapter in chapters:
        matches = [c for c in known if c == chapter or c.startswith(f"{chapter}_")]
        if len(matches) != 1:
            raise LayerwiseError(f"chapter {chapter!r} matches {matches or 'nothing'}: give one of {', '.join(known)}")
        full = matches[0]
        variants = [([m], cfg) for m in models for cfg in configs] if models else [(None, cfg) for cfg in configs]
        for model_list, cfg in variants:
            job_over = {**fixed, **cfg, **({"models": model_list} if model_list is not None else {})}
            parts = ([_slug(model_list[0])] if model_list else []) + [f"{k}-{_slug(v)}" for k, v in cfg.items()]
            single = len(variants) == 1
            name = "__".join([full, *parts])
            job_out = base if single else base / "sweep" / name
            jobs.append(SweepJob(name=name, chapter=full, overrides=job_over, out=str(job_out),
                                 key="" if single else "__".join(parts)))
    for job in jobs:
        plan_run(settings.profile, chapters=[job.chapter], overrides=job.overrides, out=job.out,
                 notebooks_dir=settings.notebooks_dir, profiles_dir=settings.profiles_dir, cache=settings.cache)
    return jobs


def run_job(job: SweepJob, settings: SweepSettings) -> dict[str, Any]:
    """Run one job in this process (what each submitit job calls). Returns where its outputs are."""
    from .book.runner import run

    previous = os.environ.get(RESULT_KEY_ENV)
    if job.key:
        os.environ[RESULT_KEY_ENV] = job.key
    else:
        os.environ.pop(RESULT_KEY_ENV, None)
    t0 = time.perf_counter()
    try:
        status = run(settings.profile, chapters=[job.chapter], overrides=job.overrides, out=job.out,
                     notebooks_dir=settings.notebooks_dir, profiles_dir=settings.profiles_dir, cache=settings.cache,
                     force=settings.force, kernel=settings.kernel, progress=False)
    finally:
        if previous is None:
            os.environ.pop(RESULT_KEY_ENV, None)
        else:
            os.environ[RESULT_KEY_ENV] = previous
    return {"job": job.name, "status": status[job.chapter], "seconds": round(time.perf_counter() - t0, 1),
            "notebook": str(Path(job.out) / "notebooks" / f"{job.chapter}.ipynb"),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def run_lane(jobs: Sequence[SweepJob], settings: SweepSettings) -> list[dict[str, Any]]:
    """Run jobs one after the other (one local lane, i.e. one GPU)."""
    return [run_job(job, settings) for job in jobs]


def _visible_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # pragma: no cover - torch is a dependency; no CUDA means no GPUs
        return 0


def run_sweep(jobs: Sequence[SweepJob], settings: SweepSettings, *, folder: str | os.PathLike,
              cluster: str = "auto", slurm_partition: str | None = None, gpus_per_job: int | None = None,
              timeout_min: int = 240, max_parallel: int | None = None, wait: bool = True) -> list[Any]:
    """Submit the jobs with submitit (logs and pickles in ``folder``); return the submitit jobs.

    ``cluster``: "auto" (SLURM where ``sbatch`` exists, else this machine), "slurm", "local" or
    "debug" (in this process, for debugging). With ``wait``, block until every job ends and raise on
    the first failure (its log folder named).
    """
    try:
        import submitit
    except ImportError:  # pragma: no cover - the cluster extra is in `all`
        raise LayerwiseError("sweeps need submitit: pip install 'layerwise[cluster]'") from None
    if cluster not in CLUSTERS:
        raise LayerwiseError(f"unknown cluster {cluster!r}: use one of {', '.join(CLUSTERS)}")
    if not jobs:
        raise LayerwiseError("no jobs to run: check --chapters, --models and the grid")
    executor: Any = submitit.AutoExecutor(folder=str(folder), cluster=None if cluster == "auto" else cluster)
    n_gpus = _visible_gpus()
    gpus = n_gpus and 1 if gpus_per_job is None else gpus_per_job
    params: dict[str, Any] = {"timeout_min": timeout_min, "name": f"layerwise-{settings.profile}"}
    if executor.cluster == "slurm":
        params.update(gpus_per_node=gpus, tasks_per_node=1, slurm_array_parallelism=max_parallel or len(jobs))
        if slurm_partition:
            params["slurm_partition"] = slurm_partition
        executor.update_parameters(**params)
        submitted = executor.map_array(run_job, list(jobs), [settings] * len(jobs))
    else:
        lanes = max(1, min(len(jobs), max_parallel or n_gpus or 1))
        submitted = []
        for lane in range(lanes):
            lane_params = dict(params, timeout_min=timeout_min * len(jobs[lane::lanes]))  # per job, as on SLURM
            if gpus and n_gpus:
                lane_params.update(gpus_per_node=gpus, visible_gpus=[(lane * gpus + g) % n_gpus for g in range(gpus)])
            executor.update_parameters(**lane_params)
            submitted.append(executor.submit(run_lane, list(jobs[lane::lanes]), settings))
    if wait:
        for job in submitted:
            try:
                job.result()
            except Exception as e:  # submitit re-raises the job's error with its traceback
                last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                raise LayerwiseError(f"sweep job {job.job_id} failed (logs in {folder}): {last}") from None
    return submitted
