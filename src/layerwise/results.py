"""Result files with provenance: what every chapter writes for the claims ledger.

A result file is ``<results_dir>/<chapter>.json``::

    {"chapter": "...", "profile": "...", "models": {...}, "created": "...", "device": "...",
     "metrics": {name: {"value": v, "ci": [lo, hi] | null, "model": "...", "note": "..."}},
     "data": {...free-form tables...}}

``metrics`` holds the numbers the ledger reads; ``data`` holds whatever the chapter wants to keep.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch

from .config import LayerwiseError, cache_dir


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
    """Write ``<results_dir>/<chapter>.json`` and return its path.

    ``metrics`` maps a name to a :func:`metric` entry or to an object with ``to_metric()`` (the claim
    metrics of :mod:`layerwise.claims`, whose names the ledger reads).
    """
    metrics = {k: v.to_metric() if hasattr(v, "to_metric") else v for k, v in metrics.items()}
    for k, v in metrics.items():
        if not isinstance(v, dict) or "value" not in v:
            raise LayerwiseError(f"metric {k!r} must be made with layerwise.results.metric(value, ci)")
    payload = {
        "chapter": chapter, "profile": profile, "models": models or {},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(), "metrics": _clean(metrics), "data": _clean(data or {}),
    }
    out = globals()["results_dir"](profile, results_dir, cache)
    path = out / f"{chapter}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=False))
    tmp.replace(path)
    return path


def load_results(profile: str, results_dir: str | os.PathLike | None = None,
                 cache: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """All result files of a profile, keyed by chapter."""
    out = globals()["results_dir"](profile, results_dir, cache)
    return {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}
