"""Shared test setup.

The library takes its directories from arguments and environment variables only; the tests run from
a clone, so the variables default here to the clone's folders (set them to override): the offline
data ``../shared/data`` (when it exists), the benchmark tables ``benchmarks/results`` and the chapters
``notebooks/``. The cache is the library's default (``$LAYERWISE_CACHE_DIR``, else ``~/.cache/layerwise``).

nbval: the reference notebooks in tests/notebooks/ (written by `python -m layerwise.book
refresh-reference`) are collected when pytest runs with `--nbval-lax` (see the README's test
command); they run in file order, so chapter 00 (which trains or loads the tiny triplet) runs
before the chapters that read it from the cache. Their kernels inherit the variables set here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent
#: the clone the tests run from
REPO = TESTS.parent
#: the dummy chapter and its profiles, used to test the book runner
DUMMY_NOTEBOOKS = TESTS / "data"

os.environ.setdefault("LAYERWISE_BENCHMARKS_DIR", str(REPO / "benchmarks" / "results"))
os.environ.setdefault("LAYERWISE_NOTEBOOKS", str(REPO / "notebooks"))
if (REPO.parent / "shared" / "data").is_dir():
    os.environ.setdefault("LAYERWISE_DATA_DIR", str(REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def dummy_notebooks() -> Path:
    """Folder holding 99_dummy.py and profiles/{tiny,gpu,broken}.yaml."""
    return DUMMY_NOTEBOOKS


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and leave the other core to the rest of the suite); a module
    opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
