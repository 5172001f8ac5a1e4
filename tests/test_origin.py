"""The provenance table names the code that ran: ``$LAYERWISE_COMMIT`` first, else git, marked when the
sources differ from the commit git names (a synced copy under a stale ``.git``), ``unknown`` without
either; and the hash of the library's sources whatever git says."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from layerwise.book import origin
from layerwise.config import library_fingerprint

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def clone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A one-commit git work tree standing in for the library's source folder."""
    repo = tmp_path / "src"
    repo.mkdir()
    _git(repo, "init", "-q")
    for f in ("a.py", "b.py"):
        (repo / f).write_text(f"# {f}\n")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    monkeypatch.setattr(origin, "_SOURCES", repo)
    monkeypatch.delenv(origin.COMMIT_ENV, raising=False)
    return repo


def test_clean_work_tree_names_its_commit(clone: Path) -> None:
    assert origin.commit_text() == _git(clone, "rev-parse", "--short", "HEAD")


def test_stale_git_under_newer_files_is_marked_not_a_commit(clone: Path) -> None:
    head = _git(clone, "rev-parse", "--short", "HEAD")
    for f in ("a.py", "b.py"):  # files synced over an old .git
        (clone / f).write_text("# newer code\n")
    text = origin.commit_text()
    assert text.startswith(f"{head} + uncommitted changes to 2 files")
    assert "not a commit" in text and origin.COMMIT_ENV in text


def test_the_variable_wins_over_a_stale_git(clone: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clone / "a.py").write_text("# newer code\n")
    monkeypatch.setenv(origin.COMMIT_ENV, "abc1234")
    assert origin.commit_text() == f"abc1234 (from ${origin.COMMIT_ENV})"


def test_no_git_and_no_variable_is_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(origin, "_SOURCES", tmp_path)  # pytest's tmp folders are outside any work tree
    monkeypatch.delenv(origin.COMMIT_ENV, raising=False)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    text = origin.commit_text()
    assert text.startswith("unknown") and origin.COMMIT_ENV in text


def test_provenance_table_carries_commit_and_source_hash(clone: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(origin.COMMIT_ENV, "def5678")
    prov = origin.provenance(profile="tiny", models=["ar"], device="cpu")
    assert prov["commit"] == f"def5678 (from ${origin.COMMIT_ENV})"
    assert prov["library sources"] == library_fingerprint()
    assert f"| commit | def5678 (from ${origin.COMMIT_ENV}) |" in prov._repr_markdown_()
