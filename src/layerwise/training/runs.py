"""Where a triplet run lives on disk and what it writes there.

Layout under ``<cache>/triplet/<preset>/<run>/``: the final checkpoint (``save_pretrained`` +
tokenizer + ``layerwise_meta.json``), ``train_log.jsonl``, ``ckpt/`` and ``snapshots/step_<n>/``.
A run is an objective (``ar``, ``dlm``, ``ar2dlm``) or an extra branch point of ``ar2dlm``
(``ar2dlm_b25``: branched off ``ar`` at 25% of the budget). Training seeds other than 0 live in
their own triplet folder ``<preset>-seed<k>``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
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
    config hash (the training seed aside) gets ``<name>-<hash8>``, so it never clobbers (or is mistaken
    for) the registered one; a training seed other than 0 appends ``-seed<k>``."""
    if isinstance(preset, Preset):
        name = preset.name
        base = dataclasses.replace(preset, seed=0)
        if name in PRESETS and base.config_hash() != PRESETS[name].config_hash():
            name = f"{name}-{base.config_hash()[:8]}"
        if preset.seed:
            name = f"{name}-seed{preset.seed}"
    else:
        name = preset
    return _cache_dir(cache_dir) / "triplet" / name


_BRANCH_RUN = re.compile(r"^ar2dlm_b(\d{1,2})$")


def run_name(objective: Objective | str, branch_frac: float | None = None, preset: Preset | None = None) -> str:
    """The run's folder name: the objective, or ``ar2dlm_b<percent>`` for an ``ar2dlm`` branch point
    other than ``preset.branch_frac`` (the canonical ``ar2dlm``)."""
    o = check_objective(objective)
    if branch_frac is None or o is not Objective.AR2DLM or (preset is not None and branch_frac == preset.branch_frac):
        return o.value
    return f"ar2dlm_b{round(branch_frac * 100)}"


def parse_run(run: Objective | str, preset: Preset | None = None) -> tuple[Objective, float | None]:
    """``(objective, branch fraction)`` of a run name: ``"ar2dlm_b25"`` -> ``(AR2DLM, 0.25)``; an
    objective -> ``(objective, preset.branch_frac for ar2dlm, else None)``."""
    m = _BRANCH_RUN.match(run) if isinstance(run, str) else None
    if m:
        return Objective.AR2DLM, int(m.group(1)) / 100
    o = check_objective(run)
    return o, (preset.branch_frac if preset is not None and o is Objective.AR2DLM else None)


def run_names(preset: str | Preset) -> list[str]:
    """Every run of the preset: ``ar``, ``dlm``, ``ar2dlm``, then one ``ar2dlm_b<percent>`` per extra
    branch point (``Preset.branch_fracs``)."""
    p = PRESETS[preset] if isinstance(preset, str) and preset in PRESETS else preset
    if not isinstance(p, Preset):
        raise LayerwiseError(f"unknown preset {preset!r}: use one of {sorted(PRESETS)} or pass a Preset")
    extra = [run_name(Objective.AR2DLM, f, p) for f in p.branch_points()[1:]]
    return [o.value for o in Objective] + extra


def run_dir(preset: str | Preset, objective: Objective | str, cache_dir: str | os.PathLike | None = None) -> Path:
    """``<triplet_dir>/<run>``: one run (log, checkpoints, snapshots, final model); ``objective`` is an
    objective or a run name such as ``ar2dlm_b25``."""
    o, frac = parse_run(objective)
    return triplet_dir(preset, cache_dir) / run_name(o, frac, preset if isinstance(preset, Preset) else None)


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
