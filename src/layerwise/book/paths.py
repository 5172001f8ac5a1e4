"""Where a book's files are: everything is found from the folder that holds the chapters.

The library itself knows no repository. The runner needs the chapters (``NN_name.py``) and their
profiles (``profiles/<name>.yaml``); it takes their folder from ``--notebooks`` (``notebooks_dir=`` in
Python), else ``$LAYERWISE_NOTEBOOKS``, else ``notebooks/`` in the current directory (a clone's root).
The folder above it is the book's *root*, where a clone keeps the prose pages (``book/``), the site
configuration (``_config.yml``, ``_toc.yml``), the benchmark tables (``benchmarks/results``), the
reference notebooks (``tests/notebooks``) and the build output (``_build``). The data directory is
never looked for beside the root: it is a parameter or ``$LAYERWISE_DATA_DIR``. (The cache is the
library's: ``$LAYERWISE_CACHE_DIR``, else ``~/.cache/layerwise``, so that ``python -m
layerwise.training`` and the runner share it.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..config import LayerwiseError

NOTEBOOKS_ENV = "LAYERWISE_NOTEBOOKS"


@dataclass(frozen=True)
class BookLayout:
    """The paths of one book, all derived from its chapters folder."""

    notebooks: Path

    @property
    def root(self) -> Path:
        return self.notebooks.parent

    @property
    def profiles(self) -> Path:
        return self.notebooks / "profiles"

    @property
    def book(self) -> Path:
        """Prose pages and the published chapters (``chapters/``): jupyter-book's source folder."""
        return self.root / "book"

    @property
    def config(self) -> Path:
        return self.root / "_config.yml"

    @property
    def toc(self) -> Path:
        return self.root / "_toc.yml"

    @property
    def build(self) -> Path:
        return self.root / "_build"

    @property
    def reference(self) -> Path:
        """The nbval reference notebooks."""
        return self.root / "tests" / "notebooks"

    @property
    def benchmarks(self) -> Path:
        return self.root / "benchmarks" / "results"


def find_notebooks(notebooks_dir: str | os.PathLike | None = None) -> Path:
    """The chapters folder: the argument, else ``$LAYERWISE_NOTEBOOKS``, else ``./notebooks``."""
    if notebooks_dir is not None and str(notebooks_dir) != "":
        p, origin = Path(notebooks_dir), "--notebooks"
    elif os.environ.get(NOTEBOOKS_ENV):
        p, origin = Path(os.environ[NOTEBOOKS_ENV]), f"${NOTEBOOKS_ENV}"
    else:
        p, origin = Path.cwd() / "notebooks", "the current directory"
        if not p.is_dir():
            raise LayerwiseError(f"no chapters folder: {Path.cwd()} has no notebooks/; pass --notebooks DIR (the "
                                 f"folder holding NN_name.py chapters and profiles/), set {NOTEBOOKS_ENV}, or run "
                                 "from a clone's root")
    p = p.expanduser().resolve()
    if not p.is_dir():
        raise LayerwiseError(f"notebooks directory {p} (from {origin}) does not exist: pass --notebooks DIR "
                             "(the folder holding NN_name.py chapters)")
    return p


def locate(notebooks_dir: str | os.PathLike | None = None) -> BookLayout:
    """The layout of the book whose chapters are in ``notebooks_dir`` (found as :func:`find_notebooks` says)."""
    return BookLayout(find_notebooks(notebooks_dir))
