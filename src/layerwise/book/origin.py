"""What produced a notebook: the provenance table every chapter shows, and the device text the
runner's banner uses."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import LayerwiseError

COMMIT_ENV = "LAYERWISE_COMMIT"  #: the code's commit where the source folder has no current .git (a synced copy)

#: the folder of the installed library's sources; git is asked about it (a clone when installed editable)
_SOURCES = Path(__file__).resolve().parents[1]


def _git_commit() -> str:
    """``$LAYERWISE_COMMIT`` if set, else ``git describe --always --dirty`` of the library's sources.

    The variable is for copies of a working tree whose ``.git`` is stale or absent: a machine that
    receives synced files but keeps the ``.git`` of its first sync, where ``git describe``
    names an old commit (pass the real one: ``LAYERWISE_COMMIT=$(git rev-parse --short HEAD)``).
    An installed (not editable) library outside any git work tree gives ``unknown``."""
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV]
    try:
        out = subprocess.run(["git", "-C", str(_SOURCES), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_text(device: Any) -> str:
    """The device a chapter ran on, named as the result files name it (e.g. the GPU model)."""
    from ..config import resolve_device
    from ..results import device_name

    try:
        dev = resolve_device(device if device not in (None, "") else "auto")
    except LayerwiseError:
        return str(device)
    return device_name() if dev.type in ("cuda", "cpu") else str(dev)


def _looks_like_checkpoint(model_id: str) -> bool:
    """A folder or a hub id (ORG/NAME); triplet names (``ar``, ``dlm``) are neither."""
    return os.path.isdir(os.path.expanduser(model_id)) or "/" in model_id


def remote_code_text(models: Mapping[str, Any]) -> str:
    """Which remote-code files (name, sha256, tested or not) each model runs, in one line.

    ``models`` maps a name to a :class:`~layerwise.models.LoadedModel` (its :attr:`remote_code`) or to a
    hub id / folder, whose ``auto_map`` files are hashed without running or downloading anything (a
    hub id not yet in the local hub cache says so). ``""`` when no model names a checkpoint.
    """
    from ..arch.remote_code import checkpoint_remote_files, describe_files

    parts = []
    for name, m in models.items():
        if hasattr(m, "remote_code"):
            parts.append(f"{name}: {describe_files(m.remote_code, short=True)}")
            continue
        if not _looks_like_checkpoint(str(m)):
            continue
        files = checkpoint_remote_files(str(m))
        text = (describe_files(files, short=True) if files is not None
                else "not in the local hub cache yet (hashed when it loads: LoadedModel.remote_code)")
        parts.append(f"{name}: {text}")
    return "; ".join(parts)


class Provenance(dict):
    """What produced a notebook; shown as a markdown table when it is a cell's last expression."""

    def _repr_markdown_(self) -> str:
        rows = "\n".join(f"| {k} | {str(v).replace('|', '/')} |" for k, v in self.items())
        return f"| provenance | |\n|---|---|\n{rows}\n"


def provenance(profile: str = "", models: Any = None, **params: Any) -> Provenance:
    """Record what produced this notebook: profile, models, device, versions, commit, time.

    Call it as the last expression of the cell tagged ``provenance`` (the runner tags that cell
    ``nbval-skip``); the notebook shows a table. ``models`` may be a chapter's ``models`` list (hub ids,
    folders, triplet names or ``{id: ..., name: ...}`` entries), a ``{name: id}`` mapping, or a
    ``{name: LoadedModel}`` mapping; a "remote code" row names every remote-code file each checkpoint
    runs, with its sha256 and whether the project has tested it (:func:`remote_code_text`). Extra
    keyword arguments (e.g. ``preset=``, ``device=``, ``seed=``) are recorded as given.
    """
    import warnings

    import torch
    from tqdm import TqdmWarning

    with warnings.catch_warnings():
        # without ipywidgets tqdm.auto falls back to text bars, which is what the book wants; its
        # warning would otherwise land in the first cell that imports it (transformers does)
        warnings.simplefilter("ignore", TqdmWarning)
        import tqdm.auto  # noqa: F401

    if isinstance(models, Mapping):
        models_d = {str(k): str(getattr(getattr(v, "spec", None), "model_id", v)) for k, v in models.items()}
    elif models:
        models_d = {}
        for m in models:
            mid = str(m.get("id", m)) if isinstance(m, Mapping) else str(m)
            models_d[str(m.get("name") or mid) if isinstance(m, Mapping) else mid] = mid
    else:
        models_d = {}
    code = remote_code_text(models if isinstance(models, Mapping) else models_d)
    try:
        import transformers

        tf_version = transformers.__version__
    except ImportError:
        tf_version = "not installed"
    return Provenance({
        "profile": profile or "?",
        "models": ", ".join(f"{k} ({v})" if k != v else k for k, v in models_d.items()) or "(none given)",
        **params,
        **({"remote code": code} if code else {}),
        "device": device_text(params.get("device", "auto")),
        "layerwise": __version__, "commit": _git_commit(), "python": platform.python_version(),
        "torch": torch.__version__, "transformers": tf_version,
        "run at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    })
