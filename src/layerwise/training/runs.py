"""Where a triplet run lives on disk and what it writes there.

Layout under ``<cache>/triplet/<preset>/<objective>/``: the final checkpoint (``save_pretrained`` +
tokenizer + ``layerwise_meta.json``), ``train_log.jsonl``, ``ckpt/`` and ``snapshots/step_<n>/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config import LayerwiseError
from ..config import cache_dir as _cache_dir
from ..diffusion import Objective
from ..models import META_FILE
from .losses import check_objective
from .presets import PRESETS, Preset


def triplet_dir(preset: str | Preset, cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache>/triplet/<preset name>``; a registered preset changed by overrides that alter its
    config hash gets ``<name>-<hash8>``, so it never clobbers (or is mistaken for) the registered one."""
    if isinstance(preset, Preset):
        name = preset.name
        if name in PRESETS and preset.config_hash() != PRESETS[name].config_hash():
            name = f"{name}-{preset.config_hash()[:8]}"
    else:
        name = preset
    return _cache_dir(cache_dir) / "triplet" / name


def run_dir(preset: str | Preset, objective: Objective | str, cache_dir: str | os.PathLike | None = None) -> Path:
    """``<triplet_dir>/<objective>``: one objective's run (log, checkpoints, snapshots, final model)."""
    return triplet_dir(preset, cache_dir) / check_objective(objective).value


def is_complete(path: Path, preset: Preset | None = None) -> bool:
    """Whether ``path`` holds a finished run (of ``preset``'s config, else an error)."""
    meta = path / META_FILE
    if not meta.is_file():
        return False
    m = json.loads(meta.read_text())
    if preset is not None and m.get("config_hash") != preset.config_hash():
        raise LayerwiseError(
            f"{path} holds a {m.get('preset')!r} checkpoint trained with config {m.get('config_hash')}, "
            f"but this preset's config hash is {preset.config_hash()}: delete that folder or use another cache_dir"
        )
    return bool(m.get("complete"))


def read_log(path: Path) -> list[dict[str, Any]]:
    """The run's ``train_log.jsonl`` (``path`` is the run dir or the file)."""
    f = path / "train_log.jsonl" if path.is_dir() else path
    return [json.loads(x) for x in f.read_text().splitlines() if x.strip()] if f.is_file() else []


@contextlib.contextmanager
def _quiet_hf() -> Iterator[None]:
    """Hide transformers' per-shard progress bars while saving/loading small checkpoints."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _save_model(model: Any, tokenizer: Any, out: Path, meta: dict[str, Any]) -> None:
    """``save_pretrained`` + tokenizer + metadata, written to a temp dir then moved in place."""
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    with _quiet_hf():
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)


def _finalise(run: Path, src: Path) -> None:
    """Copy a model folder's files into the run dir (meta last, so 'complete' implies the weights)."""
    for f in sorted(src.iterdir(), key=lambda p: p.name == META_FILE):
        if f.is_file():
            shutil.copy2(f, run / f.name)
