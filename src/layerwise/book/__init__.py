"""The book's runner: execute chapters with papermill, build the site with jupyter-book.

Chapters are Jupytext py:percent files ``NN_name.py`` in a notebooks folder (``--notebooks``,
``$LAYERWISE_NOTEBOOKS``, or ``notebooks/`` of the current directory: :mod:`.paths`). The runner reads
one into memory with jupytext (papermill cannot read ``.py``), resolves and type-checks its parameters
from a profile file ``profiles/<profile>.yaml`` (``common`` section, then the chapter's section, then
``-p`` overrides: :mod:`.chapters`, :mod:`layerwise.params`), executes it with papermill into
``_build/<profile>/notebooks/NN_name.ipynb`` with a banner cell, and skips it next time if nothing
changed (:mod:`.runner`). :mod:`.site` builds a profile's site or the published book with
jupyter-book; :mod:`.origin` is the provenance table every chapter shows.

Command line (also installed as ``layerwise-book``)::

    python -m layerwise.book run --profile tiny [--chapters 01_layer_similarity ...] [-p key=value ...]
                                 [--notebooks DIR] [--out DIR] [--build] [--force] [--publish]
    python -m layerwise.book build --profile tiny [--published]
    python -m layerwise.book refresh-reference          # tests/notebooks/*.ipynb for nbval
    python -m layerwise.book list
"""

from __future__ import annotations

from . import chapters, cli, origin, paths, runner, site
from .chapters import (
    KNOWN_CHAPTERS,
    PROFILE_FLAGS,
    declared_parameters,
    discover_chapters,
    load_profile,
    parse_overrides,
    profiles_in,
    read_chapter,
    resolve_parameters,
    select_chapters,
)
from .cli import main
from .origin import COMMIT_ENV, Provenance, provenance
from .paths import NOTEBOOKS_ENV, BookLayout, find_notebooks, locate
from .runner import (
    BANNER_TAG,
    NBVAL_SKIP,
    PROVENANCE_TAG,
    Plan,
    banner_cell,
    describe_plans,
    execute,
    fingerprint,
    is_up_to_date,
    library_fingerprint,
    out_dir_for,
    plan_run,
    refresh_reference,
    run,
)
from .site import PUBLISHED_PROFILE, assemble_source, build_site, make_toc, publish, write_toc

__all__ = [
    "BANNER_TAG", "COMMIT_ENV", "KNOWN_CHAPTERS", "NBVAL_SKIP", "NOTEBOOKS_ENV", "PROFILE_FLAGS", "PROVENANCE_TAG",
    "PUBLISHED_PROFILE", "BookLayout", "Plan", "Provenance", "assemble_source", "banner_cell", "build_site",
    "chapters", "cli", "declared_parameters", "describe_plans", "discover_chapters", "execute", "find_notebooks",
    "fingerprint", "is_up_to_date", "library_fingerprint", "load_profile", "locate", "main", "make_toc", "origin",
    "out_dir_for",
    "parse_overrides", "paths", "plan_run", "profiles_in", "provenance", "publish", "read_chapter",
    "refresh_reference", "resolve_parameters", "run", "runner", "select_chapters", "site", "write_toc",
]
