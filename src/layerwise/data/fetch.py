"""Download and verify the data directory's files (``layerwise-book data fetch`` / ``data check``).

Each file of :data:`layerwise.data.manifest.FILES` goes to ``<data dir>/<path>``. A file already there
is verified (size and sha256) and never downloaded again. A missing or corrupt one is fetched from,
in order: the mirror (``mirror=`` / ``--mirror`` / ``$LAYERWISE_DATA_MIRROR``: a folder, a
``file://`` URL or an ``http(s)://`` base, holding the file under its path in the data directory or
under its bare name), then its public URL at a pinned commit (benchmarks only: the Gutenberg corpus
is built by a recipe and has no download). A download is streamed to ``<file>.part``, hashed on the
way, and renamed into place only when size and sha256 match; anything else is refused and removed.
Whatever could not be obtained is reported one line per file, with how to get it.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal
from urllib.parse import unquote, urlparse

from ..config import DATA_DIR_ENV, DATA_MIRROR_ENV, LayerwiseError
from ..config import data_dir as _data_dir
from .corpora import file_sha256
from .manifest import DataFile, select

Status = Literal["ok", "fetched", "missing", "corrupt"]
FETCH_COMMAND = "layerwise-book data fetch"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileStatus:
    """Where one file of the data directory stands after a check or a fetch."""

    file: DataFile
    path: Path  #: where it is, or should be
    status: Status
    detail: str  #: one line: where it came from, or what is wrong and what was tried

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "fetched")

    def line(self) -> str:
        return f"{self.status:>7}  {self.file.path}: {self.detail}"


class _Refused(Exception):
    """A source answered, but with the wrong bytes."""


def resolve_data_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder the files go into: ``path``, else ``$LAYERWISE_DATA_DIR`` (need not exist yet)."""
    root = _data_dir(path, must_exist=False)
    if not os.environ.get(DATA_DIR_ENV) and (path is None or str(path) == ""):
        raise LayerwiseError(f"no data directory given: pass --data-dir DIR (data_dir=) or set {DATA_DIR_ENV} to "
                             "the folder the benchmark and corpus files go into (it is created)")
    return root


def verify(path: Path, entry: DataFile) -> str | None:
    """None when ``path`` is ``entry``'s file (size and sha256), else a one-line reason."""
    if not path.is_file():
        return "not present"
    size = path.stat().st_size
    if size != entry.size:
        return f"present but {size:,} bytes, expected {entry.size:,} (sha256 {entry.sha256})"
    sha = file_sha256(path)
    if sha != entry.sha256:
        return f"present but sha256 {sha}, expected {entry.sha256}"
    return None


def how_to_get(entry: DataFile, dest: Path) -> str:
    """One sentence: where ``entry`` comes from and where it goes."""
    if entry.url:
        return (f"run `{FETCH_COMMAND}` online, or download {entry.url} ({entry.source}, {entry.license}) "
                f"to {dest}; sha256 {entry.sha256}")
    return (f"no public download: pass --mirror DIR_OR_URL (or set {DATA_MIRROR_ENV}) to a folder or URL that "
            f"holds {entry.name}, or build it ({entry.recipe}) and put it at {dest}; sha256 {entry.sha256}")


def _sources(entry: DataFile, mirror: str | None, public: bool) -> list[str]:
    out = []
    if mirror:
        base = mirror.rstrip("/")
        out += [f"{base}/{entry.path}", f"{base}/{entry.name}"]
    if public and entry.url:
        out.append(entry.url)
    return out


def _open(source: str, timeout: float) -> BinaryIO:
    """A readable stream of ``source`` (a path, ``file://`` or ``http(s)://`` URL); FileNotFoundError
    when the source says it has no such file, OSError when it cannot be reached."""
    scheme = urlparse(source).scheme
    if scheme in ("http", "https"):
        try:
            return urllib.request.urlopen(source, timeout=timeout)
        except urllib.error.HTTPError as e:
            if e.code in (403, 404, 410):
                raise FileNotFoundError(f"HTTP {e.code}") from None
            raise OSError(f"HTTP {e.code} {e.reason}") from None
        except urllib.error.URLError as e:
            raise OSError(f"unreachable ({e.reason})") from None
    path = Path(unquote(urlparse(source).path)) if scheme == "file" else Path(source)
    if not path.is_file():
        raise FileNotFoundError("no such file")
    return path.open("rb")


def _download(source: str, dest: Path, entry: DataFile, timeout: float) -> None:
    """Stream ``source`` to ``dest`` through ``dest.part``; keep it only if size and sha256 match."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    h, n = hashlib.sha256(), 0
    try:
        with _open(source, timeout) as src, part.open("wb") as out:
            while chunk := src.read(_CHUNK):
                n += len(chunk)
                if n > entry.size:
                    raise _Refused(f"more than the expected {entry.size:,} bytes")
                h.update(chunk)
                out.write(chunk)
        if n != entry.size or h.hexdigest() != entry.sha256:
            raise _Refused(f"{n:,} bytes with sha256 {h.hexdigest()}, expected {entry.size:,} bytes with sha256 "
                           f"{entry.sha256}")
        part.replace(dest)
    finally:
        part.unlink(missing_ok=True)


def fetch_files(data_dir: str | os.PathLike | None = None, *, names: Sequence[str] | None = None,
                files: Sequence[DataFile] | None = None, mirror: str | None = None, public: bool = True,
                timeout: float = 60.0, echo: Callable[[str], None] | None = None) -> list[FileStatus]:
    """Make ``data_dir`` (else ``$LAYERWISE_DATA_DIR``) hold the manifest's files, verified.

    Args:
        names: file names, paths or groups (``benchmarks``, ``corpus``); default every file.
        files: explicit entries instead of ``names`` (tests use entries with local URLs).
        mirror: a folder or URL holding the files (by path or bare name); None = ``$LAYERWISE_DATA_MIRROR``,
            "" = no mirror.
        public: also try each file's public URL (False: the mirror only).
        echo: called with one line per file as it is settled (the CLI prints them).
    """
    root = resolve_data_dir(data_dir)
    entries = list(files) if files is not None else select(list(names or []))
    if mirror is None:
        mirror = os.environ.get(DATA_MIRROR_ENV, "")
    if mirror and "://" not in mirror:
        mirror = str(Path(mirror).expanduser().resolve())
    out = []
    for entry in entries:
        dest = root / entry.path
        problem = verify(dest, entry)
        if problem is None:
            st = FileStatus(entry, dest, "ok", "present, sha256 verified (not downloaded again)")
        else:
            tried: list[str] = []
            st = FileStatus(entry, dest, "missing" if problem == "not present" else "corrupt", "")
            for source in _sources(entry, mirror, public):
                try:
                    _download(source, dest, entry, timeout)
                except _Refused as e:
                    tried.append(f"{source}: refused, {e}")
                except FileNotFoundError as e:
                    tried.append(f"{source}: {e}")
                except OSError as e:
                    tried.append(f"{source}: {e}")
                else:
                    st = FileStatus(entry, dest, "fetched", f"from {source}, sha256 verified")
                    break
            if not st.ok:
                if tried:
                    what = "tried " + "; ".join(tried)
                else:
                    why = ", public URL not tried (mirror only)" if entry.url else ", and it has no public download"
                    what = "no mirror given" + why
                st = FileStatus(entry, dest, st.status, f"{problem}; {what}. {how_to_get(entry, dest)}")
        out.append(st)
        if echo:
            echo(st.line())
    return out


def check_files(data_dir: str | os.PathLike | None = None, *,
                names: Sequence[str] | None = None) -> list[FileStatus]:
    """Verify the data directory's files without downloading anything."""
    root = resolve_data_dir(data_dir)
    out = []
    for entry in select(list(names or [])):
        dest = root / entry.path
        problem = verify(dest, entry)
        if problem is None:
            out.append(FileStatus(entry, dest, "ok", "present, sha256 verified"))
        else:
            out.append(FileStatus(entry, dest, "missing" if problem == "not present" else "corrupt",
                                  f"{problem}. {how_to_get(entry, dest)}"))
    return out


def summary(statuses: Sequence[FileStatus]) -> str:
    """The closing line: how many files are in place, and what to do about the others."""
    bad = [s for s in statuses if not s.ok]
    root = statuses[0].path.parents[len(Path(statuses[0].file.path).parts) - 1] if statuses else Path(".")
    if not bad:
        return f"all {len(statuses)} files present and verified in {root}"
    names = ", ".join(s.file.name for s in bad)
    return (f"{len(bad)} of {len(statuses)} files missing or corrupt in {root}: {names} (each line above says how "
            f"to get it; then run `{FETCH_COMMAND}` again to verify)")

