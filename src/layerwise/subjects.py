"""What a chapter analyses: the controlled triplet, or models named by hub id / local path.

Chapters take a ``models`` parameter: ``[]`` means the project's triplet (trained on the fly or
loaded from the cache), anything else is loaded through :func:`layerwise.models.load`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .config import LayerwiseError, resolve_device
from .models import LoadedModel, load
from .training import ensure_triplet


def load_subjects(models: list[str] | tuple[str, ...] = (), preset: str = "tiny", *,
                  data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                  device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
                  progress: bool = True, cpu_threads: int | None = None) -> dict[str, LoadedModel]:
    """``{name: LoadedModel}`` in a stable order.

    ``models == []``: the triplet of ``preset`` named ``"ar"``, ``"dlm"``, ``"ar2dlm"`` (trained
    first if missing, see :func:`layerwise.training.ensure_triplet`). Otherwise each entry is a hub
    id (from the registry) or a local checkpoint path, named by the entry itself.

    ``cpu_threads``: torch's CPU thread count when the models run on the CPU (tiny models run
    fastest on one thread when cores are shared); ignored on a GPU, None leaves torch as it is.
    """
    if cpu_threads is not None and resolve_device(device).type == "cpu":
        torch.set_num_threads(int(cpu_threads))
    if isinstance(models, str):
        raise LayerwiseError(f"models must be a list of ids, got the string {models!r}: write [{models!r}]")
    if not models:
        paths = ensure_triplet(preset, data_dir=data_dir, cache_dir=cache_dir, device=device, progress=progress)
        return {o: load(str(paths[o]), device=device, dtype=dtype) for o in paths}
    out: dict[str, LoadedModel] = {}
    for m in models:
        if m in out:
            raise LayerwiseError(f"model {m!r} is listed twice in models: list each once")
        out[str(m)] = load(str(Path(m)) if os.path.isdir(m) else m, device=device, dtype=dtype)
    return out
