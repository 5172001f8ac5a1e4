"""Remote code: the model code a checkpoint ships, which of its files ran, and which the project tested.

A checkpoint whose ``config.json`` has an ``auto_map`` brings its own Python files (LLaDA's
``modeling_llada.py``, Dream's ``modeling_dream.py``...). They run on the user's machine and they change
under them: LLaDA's hub modeling file changed in October 2025 to honour padding masks, which changes
outputs. The project therefore records the sha256 of every such file it has tested
(:data:`TESTED_FILES`), reports the files and hashes that ran (:attr:`layerwise.models.LoadedModel.remote_code`
and every chapter's provenance) and warns (:class:`UntestedRemoteCodeWarning`) when a checkpoint ships
a file whose hash is not in the table.

Adding a file to the table: run the project's tests on a checkpoint with it (``tests/test_remote_code.py``
builds tiny checkpoints from the genuine files), then :func:`add_tested_file` (at run time) or an entry in
:data:`TESTED_FILES` (in the library).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RemoteFile", "TestedFile", "TESTED_FILES", "UntestedRemoteCodeWarning", "add_tested_file",
           "checkpoint_remote_files", "describe_files", "loaded_remote_files", "sha256_of", "tested_file",
           "warn_untested"]


class UntestedRemoteCodeWarning(UserWarning):
    """A checkpoint ships a code file whose sha256 is not in :data:`TESTED_FILES`."""


@dataclass(frozen=True)
class TestedFile:
    """One remote-code file the project has tested: its hub file name, sha256, architecture and version.

    ``caveat``: a known behaviour of this version that changes results, repeated as a warning whenever
    it runs (empty when none).
    """

    name: str
    sha256: str
    architecture: str
    version: str
    caveat: str = ""


#: every remote-code file the project's tests have run, keyed by sha256 (tests/test_remote_code.py: tiny
#: random-weight checkpoints built from the genuine files, loaded by folder and by hub id from a local hub
#: cache; chapters 01, 03, 04, 05 and 07 run on the current LLaDA and Dream files; the June 2025 LLaDA file
#: is loaded and its padding behaviour checked)
TESTED_FILES: dict[str, TestedFile] = {f.sha256: f for f in (
    TestedFile("modeling_llada.py", "0581c8e67f36d27ddfce85ff654bd3e4de461a3a998969f9639d1531e72a82bd",
               "llada", "LLaDA-8B hub file of October 2025 (ML-GSAI/LLaDA@5975047): honours padding masks"),
    TestedFile("modeling_llada.py", "1eef56b9917a3283199183a1f969b149276b49bb321a806f7e20dcb52180224c",
               "llada", "LLaDA-8B hub file of June 2025 (before the padding-mask change)",
               caveat="it ignores attention masks (attn_mask=None): in a padded batch, real tokens also attend to "
                      "the padding, so padded rows differ from the same rows alone; the October 2025 hub file "
                      "fixes this (re-download the checkpoint's modeling_llada.py)"),
    TestedFile("configuration_llada.py", "c947a64d8b735affa69d5adeb416c83ce607c8925270884e4471ae11068e2bfe",
               "llada", "LLaDA-8B hub file (unchanged since February 2025)"),
    TestedFile("modeling_dream.py", "3166e789f0d69beb1f4fbdee2317953d1c1c3b9bc21479b109afc5dd059de5b3",
               "dream", "Dream-v0-7B hub file (as of May 2025)"),
    TestedFile("configuration_dream.py", "24d038962ccf16361595494461000ec0c1b043653c7494d7fc835c96f121f0b9",
               "dream", "Dream-v0-7B hub file"),
    TestedFile("generation_utils.py", "b635865a96f4a9bc842d10ee0d55e38d8ef82d7e6135f286c73f9c688729d46a",
               "dream", "Dream-v0-7B generation utilities after May 2025 (batched _sample); the hub copy may "
                        "differ from it in whitespace only"),
)}


def add_tested_file(f: TestedFile) -> TestedFile:
    """Declare a remote-code file tested (after running the project's tests on it): no warning for it."""
    TESTED_FILES[f.sha256] = f
    return f


def tested_file(sha256: str) -> TestedFile | None:
    """The tested file with this sha256, or None."""
    return TESTED_FILES.get(sha256)


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes (what ``sha256sum`` prints)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class RemoteFile:
    """One remote-code file of a checkpoint: its name, sha256 and where it was read."""

    name: str
    sha256: str
    path: str

    @property
    def tested(self) -> TestedFile | None:
        return tested_file(self.sha256)

    def describe(self) -> str:
        """``modeling_llada.py sha256:0581c8e6... (tested: <version>)`` or ``(not tested by layerwise)``."""
        t = self.tested
        return f"{self.name} sha256:{self.sha256} " + (f"(tested: {t.version})" if t else "(NOT tested by layerwise)")

    def short(self) -> str:
        """``modeling_llada.py sha256:0581c8e6... (tested)`` or ``(NOT tested by layerwise)``."""
        return f"{self.name} sha256:{self.sha256} ({'tested' if self.tested else 'NOT tested by layerwise'})"


def describe_files(files: Iterable[RemoteFile], *, short: bool = False) -> str:
    """The files in one line (``"none"`` for a native model)."""
    return ", ".join(f.short() if short else f.describe() for f in files) or "none"


def _with_relative_imports(files: Iterable[Path]) -> list[Path]:
    """The files and, recursively, the sibling modules they import relatively (as transformers resolves
    them when it runs remote code), in a stable order without repeats."""
    from transformers.dynamic_module_utils import get_relative_imports

    out: list[Path] = []
    todo = [Path(f) for f in files]
    while todo:
        f = todo.pop(0)
        if f in out or not f.is_file():
            continue
        out.append(f)
        todo.extend(f.parent / f"{m}.py" for m in get_relative_imports(str(f)))
    return out


def _remote(paths: Iterable[Path]) -> tuple[RemoteFile, ...]:
    """The files as :class:`RemoteFile`, one per (name, sha256): transformers may import one file from
    two cache folders (the config class's and the model class's)."""
    files = (RemoteFile(p.name, sha256_of(p), str(p)) for p in _with_relative_imports(paths))
    return tuple({(f.name, f.sha256): f for f in files}.values())


def loaded_remote_files(*objects: Any) -> tuple[RemoteFile, ...]:
    """The remote-code files that define ``objects`` (classes or instances: a model, its config), with the
    modules they import relatively; ``()`` for classes transformers ships (not remote code)."""
    paths = []
    for obj in objects:
        cls = obj if isinstance(obj, type) else type(obj)
        mod = sys.modules.get(cls.__module__)
        file = getattr(mod, "__file__", None)
        if file and cls.__module__.startswith("transformers_modules."):
            paths.append(Path(file))
    return _remote(paths)


def _auto_map_modules(config: Mapping[str, Any]) -> list[str]:
    from .base import auto_map_refs

    return list(dict.fromkeys(m for m, _ in auto_map_refs(dict(config.get("auto_map") or {}))))


def checkpoint_remote_files(model_id: str, config: Mapping[str, Any] | None = None) -> tuple[RemoteFile, ...] | None:
    """The code files a checkpoint's ``auto_map`` names (and their relative imports), found without
    running or downloading anything: in a local folder, or in the local hub cache for a hub id.

    ``()`` for a checkpoint without remote code; None when it cannot be told from here (a hub id whose
    files are not in the local cache, or a name that is neither).
    """
    folder = Path(model_id).expanduser()
    if folder.is_dir():
        cfg_path: Path | None = folder / "config.json"

        def locate(name: str) -> Path | None:
            return folder / name
    else:
        from huggingface_hub import try_to_load_from_cache

        def locate(name: str) -> Path | None:
            try:
                p = try_to_load_from_cache(model_id, name)
            except ValueError:  # not a valid repo id
                return None
            return Path(p) if isinstance(p, str) else None

        cfg_path = locate("config.json")
    if config is None:
        if cfg_path is None or not cfg_path.is_file():
            return None
        config = json.loads(cfg_path.read_text())
    modules = _auto_map_modules(config)
    paths = [locate(f"{m}.py") for m in modules]
    if any(p is None or not p.is_file() for p in paths):
        return None if not folder.is_dir() else _remote(p for p in paths if p is not None)
    return _remote(p for p in paths if p is not None)


def warn_untested(model_id: str, files: Iterable[RemoteFile]) -> None:
    """One :class:`UntestedRemoteCodeWarning` per file the project has not tested, and one per tested
    file with a caveat, each a line naming the file, its hash and what to do."""
    for f in files:
        t = f.tested
        if t is None:
            warnings.warn(
                f"{model_id} ships {f.name} with sha256 {f.sha256}, which layerwise has not tested: its outputs "
                f"may differ from the tested versions (layerwise.arch.remote_code.TESTED_FILES); compare the file "
                f"({f.path}) with a tested one, or use a checkpoint revision whose code is tested, and after "
                "checking it declare it with layerwise.arch.remote_code.add_tested_file(...)",
                UntestedRemoteCodeWarning, stacklevel=3)
        elif t.caveat:
            warnings.warn(f"{model_id} runs {f.name} ({t.version}, sha256 {f.sha256}): {t.caveat}",
                          UntestedRemoteCodeWarning, stacklevel=3)
