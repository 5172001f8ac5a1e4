"""Result files with provenance: what every chapter writes for the claims ledger.

A result file is ``<results_dir>/<chapter>.json``::

    {"chapter": "...", "profile": "...", "models": {...}, "created": "...", "device": "...",
     "metrics": {name: {"value": v, "ci": [lo, hi] | null, "model": "...", "note": "..."}},
     "data": {...free-form tables...}}

``metrics`` holds the numbers the ledger reads; ``data`` holds whatever the chapter wants to keep.

Jobs of a sweep that run one chapter several times (one model or one configuration each, see
:mod:`layerwise.sweep`) set ``$LAYERWISE_RESULT_KEY``: their files are ``<chapter>@<key>.json``, so
they never overwrite each other, and :func:`load_results` merges them into the chapter's entry.

**Training seeds.** A chapter run on the triplet of training seed ``k > 0`` (``$LAYERWISE_TRAIN_SEED``,
read by :func:`layerwise.subjects.load_subjects`) records ``"train_seed": k`` and writes
``<chapter>@train_seed-<k>.json`` (the key joined to a sweep job's key by ``__``), so seed replicates
sit beside the chapter's own file; :func:`load_results` files the chapter's own file (seed 0) as
``train_seed-0`` beside them, and the ledger combines the seeds
(:func:`layerwise.ledger.resolve_entry`).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch

from .config import LayerwiseError, cache_dir

#: Set by a sweep job: its result files are ``<chapter>@<key>.json`` (merged by :func:`load_results`).
RESULT_KEY_ENV = "LAYERWISE_RESULT_KEY"
#: The training seed of the triplet a chapter analyses (0, the default: the preset's own).
TRAIN_SEED_ENV = "LAYERWISE_TRAIN_SEED"
#: the result-key part of a training seed replicate
TRAIN_SEED_KEY = "train_seed-{}"


def train_seed(value: int | str | None = None) -> int:
    """The training seed: ``value``, else ``$LAYERWISE_TRAIN_SEED``, else 0."""
    raw = os.environ.get(TRAIN_SEED_ENV, "") if value is None else value
    if isinstance(raw, str):
        raw = raw.strip() or "0"
    try:
        k = int(raw)
    except (TypeError, ValueError):
        k = -1
    if k < 0 or isinstance(raw, bool):
        where = f"${TRAIN_SEED_ENV}" if value is None else "train_seed"
        raise LayerwiseError(f"{where} = {raw!r} is no training seed: give a non-negative integer "
                             "(0 = the preset's own)")
    return k


@contextmanager
def training_seed(seed: int) -> Iterator[None]:
    """Within the block, ``$LAYERWISE_TRAIN_SEED`` is ``seed`` (the kernels papermill starts inherit
    it: their chapters load that seed's triplet and write seed-replicate result files)."""
    k = train_seed(seed)
    old = os.environ.get(TRAIN_SEED_ENV)
    os.environ[TRAIN_SEED_ENV] = str(k)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(TRAIN_SEED_ENV, None)
        else:
            os.environ[TRAIN_SEED_ENV] = old


def result_key(seed: int | None = None) -> str:
    """The result-file key of this run: the sweep job's ``$LAYERWISE_RESULT_KEY`` joined (by ``__``)
    with ``train_seed-<k>`` for a training seed ``k > 0`` ("" for a plain seed-0 run)."""
    key = os.environ.get(RESULT_KEY_ENV, "")
    k = train_seed(seed)
    part = TRAIN_SEED_KEY.format(k)
    if k == 0 or part in key.split("__"):
        return key
    return f"{key}__{part}" if key else part


def results_dir(profile: str, path: str | os.PathLike | None = None, cache: str | os.PathLike | None = None) -> Path:
    """``<cache>/results/<profile>`` unless ``path`` is given."""
    p = Path(path) if path else cache_dir(cache) / "results" / profile
    p.mkdir(parents=True, exist_ok=True)
    return p


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def metric(value: float, ci: tuple[float, float] | None = None, *, model: str = "", note: str = "",
           **extra: Any) -> dict[str, Any]:
    """One ledger metric: a value with an optional confidence interval."""
    out: dict[str, Any] = {"value": _clean(value), "ci": [_clean(ci[0]), _clean(ci[1])] if ci else None,
                           "model": model, "note": note}
    out.update({k: _clean(v) for k, v in extra.items()})
    return out


def _clean(x: Any) -> Any:
    """JSON-safe: tensors/numpy to Python, NaN to None."""
    if isinstance(x, torch.Tensor):
        x = x.tolist()
    if hasattr(x, "item") and not isinstance(x, (list, dict)):
        try:
            x = x.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


class SupportsMetric(Protocol):
    """Anything that turns itself into a metric entry (e.g. :class:`layerwise.claims.ClaimMetric`)."""

    def to_metric(self) -> dict[str, Any]: ...


def save_result(chapter: str, *, profile: str, metrics: Mapping[str, dict[str, Any] | SupportsMetric],
                models: dict[str, str] | None = None, data: dict[str, Any] | None = None,
                results_dir: str | os.PathLike | None = None, cache: str | os.PathLike | None = None) -> Path:
    """Write ``<results_dir>/<chapter>.json`` (``<chapter>@<key>.json``, see :func:`result_key`) and
    return its path.

    ``metrics`` maps a name to a :func:`metric` entry or to an object with ``to_metric()`` (the claim
    metrics of :mod:`layerwise.claims`, whose names the ledger reads). The payload records the
    training seed (:func:`train_seed`).
    """
    metrics = {k: v.to_metric() if hasattr(v, "to_metric") else v for k, v in metrics.items()}
    for k, v in metrics.items():
        if not isinstance(v, dict) or "value" not in v:
            raise LayerwiseError(f"metric {k!r} must be made with layerwise.results.metric(value, ci)")
    payload = {
        "chapter": chapter, "profile": profile, "models": models or {},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(), "train_seed": train_seed(), "metrics": _clean(metrics), "data": _clean(data or {}),
    }
    key = result_key()
    if key:
        payload["job"] = key
    out = globals()["results_dir"](profile, results_dir, cache)
    path = out / (f"{chapter}@{key}.json" if key else f"{chapter}.json")
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=False))
    tmp.replace(path)
    return path


def load_results(profile: str, results_dir: str | os.PathLike | None = None,
                 cache: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """All result files of a profile, keyed by chapter.

    A chapter's per-job files (``<chapter>@<key>.json``, written by sweep jobs) are merged into its
    entry: every job's metrics under ``name@key``, and under ``name`` unless the chapter's own file
    or an earlier job (in key order) already has it; models merged; each job's ``data`` under
    ``data["jobs"][key]``. Where jobs are training seed replicates keyed ``train_seed-<k>`` alone,
    the chapter's own file (training seed 0) is also filed under ``name@train_seed-0``.
    """
    out = globals()["results_dir"](profile, results_dir, cache)
    merged: dict[str, dict[str, Any]] = {}
    keyed: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    own_files: dict[str, dict[str, Any]] = {}
    for p in sorted(out.glob("*.json")):
        chapter, _, key = p.stem.partition("@")
        payload = json.loads(p.read_text())
        if key:
            keyed.setdefault(chapter, []).append((key, payload))
        else:
            merged[chapter] = payload
            # as read, before the jobs merge into the chapter's entry
            own_files[chapter] = {**payload, "metrics": dict(payload.get("metrics", {})),
                                  "data": dict(payload.get("data", {}))}
    for chapter, jobs in keyed.items():
        entry = merged.setdefault(chapter, {**jobs[0][1], "metrics": {}, "models": {}, "data": {}})
        entry["jobs"] = [key for key, _ in jobs]
        for key, payload in jobs:
            for name, m in payload.get("metrics", {}).items():
                entry["metrics"].setdefault(name, m)
                entry["metrics"][f"{name}@{key}"] = m
            entry["models"] = {**payload.get("models", {}), **entry.get("models", {})}
            entry.setdefault("data", {}).setdefault("jobs", {})[key] = payload.get("data", {})
        own = own_files.get(chapter)
        seed_jobs = [key for key, _ in jobs if _SEED_KEY.match(key)]
        if own is not None and seed_jobs and int(own.get("train_seed") or 0) == 0:
            zero = TRAIN_SEED_KEY.format(0)
            for name, m in list(own.get("metrics", {}).items()):
                if "@" not in name:
                    entry["metrics"].setdefault(f"{name}@{zero}", m)
            entry["data"]["jobs"].setdefault(zero, own.get("data", {}))
            entry["jobs"] = sorted({*entry["jobs"], zero})
    return merged


_SEED_KEY = re.compile(r"^train_seed-\d+$")
