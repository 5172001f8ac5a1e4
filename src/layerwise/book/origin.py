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
from ..config import LayerwiseError, library_fingerprint, quiet_notebook_progress

COMMIT_ENV = "LAYERWISE_COMMIT"  #: the code's commit where the source folder has no current .git (a synced copy)

#: the folder of the installed library's sources; git is asked about it (a clone when installed editable)
_SOURCES = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    """``git -C <sources> ARGS`` output, or None where git or a work tree is missing."""
    try:
        out = subprocess.run(["git", "-C", str(_SOURCES), *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _git_commit() -> str:
    """``$LAYERWISE_COMMIT`` if set, else ``git describe --always --dirty`` of the library's sources.

    The variable is for copies of a working tree whose ``.git`` is stale or absent: a machine that
    receives synced files but keeps the ``.git`` of its first sync, where ``git describe``
    names an old commit (pass the real one: ``LAYERWISE_COMMIT=$(git rev-parse --short HEAD)``).
    An installed (not editable) library outside any git work tree gives ``unknown``."""
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV]
    return _git("describe", "--always", "--dirty") or "unknown"


def commit_text() -> str:
    """The commit a chapter ran, as the provenance table shows it, saying where the name comes from.

    - ``$LAYERWISE_COMMIT`` set: ``<value> (from $LAYERWISE_COMMIT)``; it wins over git, since a synced
      copy's ``.git`` may name an old commit;
    - a clean git work tree: its short commit;
    - uncommitted changes: ``<commit> + uncommitted changes to N files (not a commit: ...)``, so that a
      stale ``.git`` under newer files (N large) cannot pass for the code that ran;
    - neither: ``unknown (...)`` with the variable to set.

    The ``library sources`` row of :func:`provenance` identifies the code whatever this says.
    """
    if os.environ.get(COMMIT_ENV):
        return f"{os.environ[COMMIT_ENV]} (from ${COMMIT_ENV})"
    head = _git("rev-parse", "--short", "HEAD")
    if not head:
        return f"unknown (no git work tree: set {COMMIT_ENV} to the commit the sources came from)"
    changed = _git("status", "--porcelain", "--untracked-files=no")
    if changed is None:
        return f"{head} (git status failed: the sources may differ from it)"
    n = len([line for line in changed.splitlines() if line.strip()])
    if not n:
        return head
    return (f"{head} + uncommitted changes to {n} file{'s' if n != 1 else ''} (not a commit: commit, or set "
            f"{COMMIT_ENV} where this .git is older than the files)")


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

    The commit row is :func:`commit_text` (``$LAYERWISE_COMMIT`` first, else git, marked when the
    sources differ from it); the ``library sources`` row is the hash of the library's Python sources
    (:func:`layerwise.config.library_fingerprint`), which names the code that ran even without git.

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
    quiet_notebook_progress()  # again, now that tqdm.auto has picked its bar class

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
        "layerwise": __version__, "commit": commit_text(), "library sources": library_fingerprint(),
        "python": platform.python_version(),
        "torch": torch.__version__, "transformers": tf_version,
        "run at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    })
