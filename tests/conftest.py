"""Shared test setup.

nbval: the reference notebooks in tests/notebooks/ (written by `python -m layerwise.book
refresh-reference`) are collected when pytest runs with `--nbval-lax` (see the README's test
command); they run in file order, so chapter 00 (which trains or loads the tiny triplet) runs
before the chapters that read it from the cache.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
#: the dummy chapter and its profiles, used to test the book runner
DUMMY_NOTEBOOKS = TESTS / "data"


@pytest.fixture(scope="session")
def dummy_notebooks() -> Path:
    """Folder holding 99_dummy.py and profiles/{tiny,gpu,broken}.yaml."""
    return DUMMY_NOTEBOOKS
