"""Chapters, profiles and the resolution of a chapter's parameters.

A chapter is a Jupytext py:percent file ``NN_name.py`` whose cell tagged ``parameters`` declares its
parameters (typed by :mod:`layerwise.params`). A profile ``profiles/<profile>.yaml`` holds a
``common`` section and one section per chapter; a chapter's value is its parameters cell's default,
then ``common`` (keys the chapter does not declare are dropped), then its own section (keys it does
not declare are an error), then ``-p NAME=VALUE``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..config import LayerwiseError
from ..params import Param, chapter_schema, parameter_sources
from .paths import find_notebooks

#: chapter names from CONTRIBUTING.md; a profile section must name one of these or a present chapter
KNOWN_CHAPTERS = (
    "00_pretraining", "01_layer_similarity", "02_token_similarity", "03_layer_skipping",
    "04_super_outlier", "05_outlier_ablation", "06_alpha_hill", "07_compression", "08_claims_ledger",
    "09_performance", "10_robustness",
)
#: top-level keys of a profile file that are runner flags, not parameter sections
PROFILE_FLAGS = ("requires_data",)


def discover_chapters(notebooks_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """``{"01_layer_similarity": Path(".../01_layer_similarity.py"), ...}`` in chapter order."""
    nb_dir = find_notebooks(notebooks_dir)
    return {p.stem: p for p in sorted(nb_dir.glob("[0-9][0-9]_*.py"))}


def select_chapters(known: Mapping[str, Path], wanted: Sequence[str] | None) -> list[str]:
    """The chapters to run, in book order except that the claims ledger runs last (it reads the others' results).
    ``wanted`` entries may be full names or the ``NN`` prefix."""
    if not known:
        raise LayerwiseError("no chapters (NN_name.py) found: pass --notebooks DIR pointing at the chapters")
    if not wanted:
        return _ledger_last(list(known))
    out: list[str] = []
    for w in wanted:
        match = [k for k in known if k == w or k.split("_", 1)[0] == w]
        if len(match) != 1:
            raise LayerwiseError(f"unknown chapter {w!r}: use one of {', '.join(known)}")
        if match[0] not in out:
            out.append(match[0])
    return _ledger_last([k for k in known if k in out])


#: chapters that read the other chapters' result files, so they run after them (the ledger combines
#: the robustness chapter's training-seed replicates, which come later in book order)
RUNS_LAST = ("08_claims_ledger",)


def _ledger_last(chapters: list[str]) -> list[str]:
    return [c for c in chapters if c not in RUNS_LAST] + [c for c in chapters if c in RUNS_LAST]


def profiles_in(profiles_dir: str | os.PathLike) -> list[str]:
    return sorted(p.stem for p in Path(profiles_dir).glob("*.yaml"))


def load_profile(profile: str, profiles_dir: str | os.PathLike,
                 chapters: Sequence[str] = ()) -> dict[str, Any]:
    """Read ``<profiles_dir>/<profile>.yaml``: ``{"common": {...}, "<chapter>": {...}, ...}``.

    One top-level flag besides the sections: ``requires_data: true`` when the profile's chapters read
    the offline data directory (the tiny profile generates its corpus, so it needs none); the
    runner then checks that the directory exists before running anything.

    Sections that are neither ``common`` nor a chapter (present or listed in CONTRIBUTING.md) are an
    error, so that a typo in a chapter name does not silently drop its settings.
    """
    path = Path(profiles_dir) / f"{profile}.yaml"
    if not path.is_file():
        have = profiles_in(profiles_dir)
        raise LayerwiseError(f"unknown profile {profile!r}: use one of {', '.join(have) or '(none)'} "
                             f"(files in {profiles_dir})")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise LayerwiseError(f"{path} must be a mapping of sections (common:, <chapter>:)")
    out: dict[str, Any] = {}
    for section, values in raw.items():
        if section in PROFILE_FLAGS:
            if not isinstance(values, bool):
                raise LayerwiseError(f"{path}: {section} must be true or false")
            out[section] = values
            continue
        if section != "common" and section not in chapters and section not in KNOWN_CHAPTERS:
            raise LayerwiseError(f"{path}: section {section!r} is no chapter: use 'common' or one of "
                                 f"{', '.join(dict.fromkeys([*chapters, *KNOWN_CHAPTERS]))}")
        if values is not None and not isinstance(values, dict):
            raise LayerwiseError(f"{path}: section {section!r} must be a mapping of parameter: value")
        out[str(section)] = dict(values or {})
    out.setdefault("common", {})
    return out


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """``["n_seq=4", "models=[a, b]"]`` -> ``{"n_seq": 4, "models": ["a", "b"]}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise LayerwiseError(f"bad parameter {item!r}: write -p name=value (value in YAML, e.g. "
                                 "-p models='[Qwen/Qwen2.5-7B]')")
        try:
            out[key] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as e:
            raise LayerwiseError(f"-p {key}=...: value {value!r} is not valid YAML ({e.__class__.__name__}): "
                                 "quote it") from None
    return out


def read_chapter(path: str | os.PathLike) -> Any:
    """The chapter as an nbformat notebook, read with jupytext in memory."""
    import jupytext  # heavy import, only when running

    nb = jupytext.read(str(path))
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    for cell in nb.cells:  # papermill expects every cell to carry a tags list (its own loader adds them)
        cell.metadata.setdefault("tags", [])
    return nb


def parameters_cell_source(nb: Any, chapter: str = "") -> str:
    """The source of the cell tagged ``parameters``."""
    cell = next((c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        raise LayerwiseError(f"chapter {chapter or '?'} has no cell tagged 'parameters': tag one "
                             '(# %% tags=["parameters"])')
    return str(cell.source)


def declared_parameters(nb: Any, chapter: str = "") -> dict[str, str]:
    """Names (and default source text) assigned at top level in the cell tagged ``parameters``."""
    return parameter_sources(parameters_cell_source(nb, chapter), chapter)


def schema(nb: Any, chapter: str = "") -> dict[str, Param]:
    """The chapter's typed parameter schema (:func:`layerwise.params.chapter_schema`)."""
    return chapter_schema(parameters_cell_source(nb, chapter), chapter)


def resolve_parameters(profile: str, sections: Mapping[str, Mapping[str, Any]], chapter: str,
                       declared: Mapping[str, Any], overrides: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``common`` < chapter section < ``-p`` overrides, restricted to what the notebook declares.

    ``profile`` is always set to the profile's name (when declared). A ``common`` key the notebook
    does not declare is dropped (returned in the second value); a chapter-section key it does not
    declare is an error. ``overrides`` must already be filtered to the declared names.
    """
    common = dict(sections.get("common", {}))
    own = dict(sections.get(chapter, {}))
    unknown = sorted(k for k in own if k not in declared)
    if unknown:
        raise LayerwiseError(f"profile {profile!r}, section {chapter}: {', '.join(unknown)} not declared by the "
                             f"chapter's parameters cell (declared: {', '.join(declared)}): fix the profile file")
    dropped = sorted(k for k in common if k not in declared)
    params = {k: v for k, v in common.items() if k in declared}
    params.update(own)
    params.update(overrides)
    if "profile" in declared:
        params["profile"] = profile
    return params, dropped


def run_seed_replicates(profile: str, chapters: Sequence[str], seeds: Sequence[int], *, out: str | os.PathLike,
                        notebooks_dir: str | os.PathLike | None = None, profiles_dir: str | os.PathLike | None = None,
                        cache: str | os.PathLike | None = None, force: bool = False,
                        progress: bool = False) -> dict[int, dict[str, str]]:
    """Run ``chapters`` of ``profile`` on the triplet of each training seed ``k`` in ``seeds`` (the
    runner, under ``$LAYERWISE_TRAIN_SEED=k``): notebooks in ``<out>/train_seed-<k>/notebooks/``,
    result files ``<chapter>@train_seed-<k>.json`` beside the chapter's own (seed 0), which the ledger
    combines with it. Returns ``{seed: {chapter: "ran" | "skipped"}}``; a seed's run trains its
    triplet first when it is missing."""
    from ..results import TRAIN_SEED_KEY, train_seed, training_seed
    from .runner import run

    bad = [k for k in seeds if train_seed(k) == 0]
    if bad:
        raise LayerwiseError("training seed 0 is the profile's own run (layerwise-book run): give seeds >= 1")
    status = {}
    for k in seeds:
        seed_out = Path(out) / TRAIN_SEED_KEY.format(k)
        seed_out.mkdir(parents=True, exist_ok=True)
        with training_seed(k), _stderr_to(seed_out / "kernels.log"):
            status[k] = run(profile, chapters=list(chapters), out=seed_out, notebooks_dir=notebooks_dir,
                            profiles_dir=profiles_dir, cache=cache, force=force, progress=progress)
    return status


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Send file descriptor 2 to ``path`` while the nested runs start their kernels: a kernel inherits the
    descriptor, and inside a notebook (whose kernel captures descriptor-level output) its launch log
    would otherwise land in the page. Python's own ``sys.stderr`` is left alone; on a terminal (where
    ``sys.stderr`` is descriptor 2 itself) nothing is redirected."""
    try:
        on_terminal = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a kernel's stream has no descriptor
        on_terminal = False
    if on_terminal:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
