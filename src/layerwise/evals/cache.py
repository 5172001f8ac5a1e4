"""A per-configuration result cache for :func:`layerwise.evals.retention`: resumable evaluations.

Each finished configuration's :func:`~layerwise.evals.evaluate` output is written atomically (a
temporary file, then ``os.replace``) as a pickle under a key that fingerprints everything that
determines it: the model (id, family, class, dtype, tokenizer vocabulary and a strided sample of
every parameter tensor), the task set (each task's configuration and documents), the limit and seed,
the LM wrapper's sampler settings, the configuration's name and the caller's salt for what the
intervention is, the versions of the libraries that compute it and a hash of this library's sources
(:func:`layerwise.config.library_fingerprint`, the runner's rule too). A run killed half-way and started
again loads what it finished and evaluates only the rest; a changed key is a miss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from ..config import LayerwiseError, library_fingerprint
from ..models import LoadedModel
from .lm import LayerwiseLM
from .tasks import TaskSet

log = logging.getLogger(__name__)

#: parameter elements sampled (evenly spaced) from every tensor for the weight fingerprint
SAMPLES_PER_TENSOR = 256
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _stable(obj: Any) -> str:
    """A process-independent text for what JSON cannot encode (functions by qualified name)."""
    if callable(obj) and hasattr(obj, "__qualname__"):
        return f"{getattr(obj, '__module__', '')}.{obj.__qualname__}"
    return _ADDRESS.sub("", str(obj))


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, default=_stable)
    return hashlib.sha256(text.encode()).hexdigest()


def model_fingerprint(lm: LoadedModel) -> str:
    """sha256 of the model's identity and a strided sample of every parameter tensor's values.

    Cheap at any size (``SAMPLES_PER_TENSOR`` elements per tensor are read, on their device): new
    weights (another checkpoint, another seed, a fine-tune) change it; an edit of a few isolated
    elements may not.
    """
    h = hashlib.sha256()
    tok = lm.tokenizer
    vocab = getattr(tok, "get_vocab", None)
    head = {"id": lm.spec.model_id, "family": lm.family.value, "class": type(lm.model).__name__,
            "tokenizer": str(getattr(tok, "name_or_path", "")),
            "vocab": _digest(sorted(vocab().items())) if callable(vocab) else len(tok) if tok is not None else 0}
    h.update(json.dumps(head, sort_keys=True).encode())
    with torch.no_grad():
        for name, p in lm.model.named_parameters():
            h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
            if p.device.type == "meta" or p.numel() == 0:
                continue
            flat = p.detach().reshape(-1)
            k = min(SAMPLES_PER_TENSOR, flat.numel())  # evenly spaced, in integers (exact at any size)
            idx = torch.arange(k, device=flat.device, dtype=torch.long) * (flat.numel() - 1) // max(k - 1, 1)
            h.update(flat[idx].float().cpu().numpy().tobytes())
    return h.hexdigest()


def taskset_fingerprint(taskset: TaskSet) -> str:
    """sha256 of each task's configuration, evaluation documents and few-shot documents."""
    parts = {}
    for name, task in taskset.tasks.items():
        fewshot = task.fewshot_docs() if hasattr(task, "fewshot_docs") else None
        parts[name] = {"config": task.dump_config() if hasattr(task, "dump_config") else _stable(task),
                       "docs": _digest(list(task.eval_docs)),
                       "fewshot": _digest(list(fewshot)) if fewshot is not None else None}
    return _digest({"tasks": parts, "code": taskset.allow_code_execution})


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("layerwise", "lm_eval", "torch", "transformers"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = ""
    return out


def wrapper_settings(wrapper: LayerwiseLM) -> dict[str, Any]:
    """The LM wrapper's settings that determine its scores (batch size included: bf16 sums differ)."""
    return {"batch_size": wrapper.batch_size, "max_length": wrapper.max_length, "max_gen_toks": wrapper.max_gen_toks,
            "sampler_kwargs": wrapper.sampler_kwargs, "loglikelihood_kwargs": wrapper.loglikelihood_kwargs,
            "backend": _stable(getattr(wrapper.backend, "__name__", type(wrapper.backend)))}


class RunCache:
    """Pickled evaluation records in ``folder``, one file per configuration, keyed by fingerprint.

    ``base`` is the part of the key every configuration shares (see :meth:`for_retention`); a
    configuration adds its name and its ``salt`` (what the intervention is, as the caller states it).
    """

    def __init__(self, folder: str | os.PathLike, base: Mapping[str, Any]) -> None:
        self.folder = Path(folder)
        self.base = _digest(dict(base))
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LayerwiseError(f"cannot create the result cache folder {self.folder} ({e}): "
                                 "pass a writable cache folder or cache=None") from e

    @classmethod
    def for_retention(cls, folder: str | os.PathLike, wrapper: LayerwiseLM, taskset: TaskSet, *,
                      limit: int | float | None, seed: int) -> RunCache:
        """The cache of one :func:`retention` call: model, tasks, limit, seed, sampler, versions."""
        return cls(folder, {"model": model_fingerprint(wrapper.lm), "tasks": taskset_fingerprint(taskset),
                            "limit": limit, "seed": seed, "wrapper": wrapper_settings(wrapper),
                            "versions": _versions(), "library": library_fingerprint()})

    def path(self, name: str, salt: str = "") -> Path:
        key = _digest({"base": self.base, "name": name, "salt": salt})[:24]
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:60] or "run"
        return self.folder / f"{readable}-{key}.pkl"

    def load(self, name: str, salt: str = "") -> dict[str, Any] | None:
        """The stored record of a configuration, or None (not finished, or unreadable: recomputed)."""
        path = self.path(name, salt)
        if not path.exists():
            return None
        try:
            with path.open("rb") as f:
                record = pickle.load(f)
        except Exception as e:  # a truncated or foreign file: evaluate again and overwrite it
            log.warning("ignoring unreadable cached result %s (%s)", path, e)
            return None
        return record if isinstance(record, dict) and "run" in record else None

    def save(self, name: str, record: Mapping[str, Any], salt: str = "") -> Path:
        """Write ``record`` atomically: a reader sees the previous file or the whole new one."""
        path = self.path(name, salt)
        try:
            data = pickle.dumps(dict(record), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:
            if "yielded" not in record or record["yielded"] is None:
                raise LayerwiseError(f"configuration {name!r}: its result cannot be pickled ({e}): "
                                     "run it with cache=None") from e
            log.warning("configuration %r: what its intervention yielded is not picklable (%s); cached without it",
                        name, e)
            data = pickle.dumps({**record, "yielded": None}, protocol=pickle.HIGHEST_PROTOCOL)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
