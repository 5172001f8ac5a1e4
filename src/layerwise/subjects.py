"""What a chapter analyses: the controlled triplet, or models named by hub id / local path.

Chapters take a ``models`` parameter: ``[]`` means the project's triplet (trained on the fly or
loaded from the cache), anything else is loaded through :func:`layerwise.models.load`. Each entry is
a hub id or a local folder, or a mapping that also says what the checkpoint does not
(:class:`ModelEntry`), e.g. in a profile or ``-p models='[...]'``::

    models:
      - GSAI-ML/LLaDA-8B-Base
      - {id: /data/llada-sft, family: dlm, mask_token_id: 126336}
      - {id: ./my-remote-model, trust_remote_code: true, family: ar, name: mine}
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from .config import LayerwiseError, resolve_device
from .diffusion import Family
from .models import LoadedModel, load
from .results import train_seed as _train_seed
from .training import Preset, ensure_triplet, get_preset, is_complete, run_dir, run_names

__all__ = ["ModelEntry", "load_subjects", "model_entry"]


@dataclass(frozen=True)
class ModelEntry:
    """One entry of a chapter's ``models``: the checkpoint and what to tell :func:`layerwise.models.load`.

    ``id``: hub id or local folder. ``name``: the subject's name in the chapter (default: ``id``).
    ``family``: ``ar`` / ``dlm`` / ``ar2dlm`` (default: from the registry or the architecture).
    ``mask_token_id``: default from the checkpoint's config, the registry or the tokenizer.
    ``trust_remote_code``: run the checkpoint's own code (default: only for recognised architectures).
    ``tokenizer``: hub id or folder of the tokenizer (default: the checkpoint's).
    """

    id: str
    name: str = ""
    family: str | None = None
    mask_token_id: int | None = None
    trust_remote_code: bool | None = None
    tokenizer: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.id

    def load_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`layerwise.models.load` this entry sets."""
        kw = {"family": self.family, "mask_token_id": self.mask_token_id,
              "trust_remote_code": self.trust_remote_code, "tokenizer": self.tokenizer}
        return {k: v for k, v in kw.items() if v is not None}


_KEYS = tuple(f.name for f in fields(ModelEntry))
_TYPES: dict[str, tuple[type, ...]] = {"id": (str,), "name": (str,), "family": (str,), "mask_token_id": (int,),
                                       "trust_remote_code": (bool,), "tokenizer": (str,)}
_TYPE_NAMES = {str: "text", int: "an integer", bool: "true or false"}


def model_entry(entry: str | os.PathLike[str] | Mapping[str, Any]) -> ModelEntry:
    """A ``models`` entry (a hub id / folder, or a mapping with the keys of :class:`ModelEntry`) as a
    :class:`ModelEntry`; :class:`LayerwiseError` naming the fix for anything else."""
    if isinstance(entry, (str, os.PathLike)):
        return ModelEntry(os.fspath(entry))
    example = "{id: GSAI-ML/LLaDA-8B-Base, family: dlm, mask_token_id: 126336}"
    if not isinstance(entry, Mapping):
        raise LayerwiseError(f"a models entry must be a hub id, a folder or a mapping like {example}, "
                             f"not {entry!r}")
    unknown = sorted(str(k) for k in entry if k not in _KEYS)
    if unknown or "id" not in entry:
        what = f"has unknown keys {unknown}" if unknown else "has no id"
        raise LayerwiseError(f"models entry {dict(entry)} {what}: use the keys {', '.join(_KEYS)} (id required), "
                             f"e.g. {example}")
    values = dict(entry)
    for k, v in values.items():
        ok = v is None and k != "id" or isinstance(v, _TYPES[k]) and not (k == "mask_token_id" and isinstance(v, bool))
        if not ok:
            raise LayerwiseError(f"models entry {dict(entry)}: {k} = {v!r} must be {_TYPE_NAMES[_TYPES[k][0]]}")
    if values.get("family") is not None:
        fams = [f.value for f in Family]
        if values["family"] not in fams:
            raise LayerwiseError(f"models entry {dict(entry)}: family {values['family']!r} is none of {fams}: "
                                 "ar (causal), dlm (position i predicts token i, LLaDA) or ar2dlm (shifted, Dream)")
    values["id"] = os.fspath(values["id"])
    return ModelEntry(**values)


def load_subjects(models: Sequence[str | Mapping[str, Any]] = (), preset: str | Preset = "tiny", *,
                  data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                  device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
                  progress: bool = True, cpu_threads: int | None = None,
                  train_seed: int | None = None, branch_runs: bool = False) -> dict[str, LoadedModel]:
    """``{name: LoadedModel}`` in a stable order.

    ``models == []``: the triplet of ``preset`` named ``"ar"``, ``"dlm"``, ``"ar2dlm"`` (trained
    first if missing, see :func:`layerwise.training.ensure_triplet`) of training seed ``train_seed``
    (None: ``$LAYERWISE_TRAIN_SEED``, else 0, the preset's own; seed ``k > 0`` lives in
    ``<cache>/triplet/<preset>-seed<k>/``, and the chapter's result file becomes a seed replicate,
    see :mod:`layerwise.results`). ``branch_runs``: with the triplet, also the preset's extra
    ``ar2dlm`` branch runs (``ar2dlm_b<percent>``, :attr:`~layerwise.training.Preset.branch_fracs`)
    that are already trained, after the triplet (they are never trained here: chapter 00 trains
    them). Otherwise each entry is a hub
    id, a local checkpoint folder or a mapping (:class:`ModelEntry`), named by its ``name`` or id. A
    chapter needs each model's tokenizer: a checkpoint without one is an error naming the fix.

    ``cpu_threads``: torch's CPU thread count when the models run on the CPU (tiny models run
    fastest on one thread when cores are shared); ignored on a GPU, None leaves torch as it is.
    """
    if cpu_threads is not None and resolve_device(device).type == "cpu":
        torch.set_num_threads(int(cpu_threads))
    if isinstance(models, str):
        raise LayerwiseError(f"models must be a list of ids, got the string {models!r}: write [{models!r}]")
    k = _train_seed(train_seed)
    if not models:
        triplet = get_preset(preset, seed=k) if k else preset
        paths = ensure_triplet(triplet, data_dir=data_dir, cache_dir=cache_dir, device=device, progress=progress)
        if branch_runs:
            p = get_preset(triplet) if isinstance(triplet, str) else triplet
            for r in [r for r in run_names(p) if r not in paths]:
                if is_complete(run_dir(p, r, cache_dir), p):
                    paths[r] = run_dir(p, r, cache_dir)
        return {o: load(str(paths[o]), device=device, dtype=dtype) for o in paths}
    if k:
        raise LayerwiseError(f"training seed {k} applies to the triplet only (models is {list(models)}): "
                             "run with models: [] or unset $LAYERWISE_TRAIN_SEED")
    out: dict[str, LoadedModel] = {}
    for m in models:
        e = model_entry(m)
        if e.label in out:
            raise LayerwiseError(f"model {e.label!r} is listed twice in models: list each once (or give one a name)")
        mid = str(Path(e.id).expanduser()) if os.path.isdir(os.path.expanduser(e.id)) else e.id
        out[e.label] = load(mid, device=device, dtype=dtype, require_tokenizer=True, **e.load_kwargs())
    return out
