"""``layerwise-book data fetch`` / ``data check``: downloads from a mirror (a folder, a ``file://`` URL,
an http server on 127.0.0.1) with sha256 checks, refusals, what-is-missing reports, and the manifest's
hashes against the real files where ``../shared/data`` is present.

No test reaches beyond this machine: every URL is a local path or 127.0.0.1 (an autouse fixture
fails any other request), and the manifest's public URLs are never tried (``public=False`` or
``--mirror-only``).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from layerwise.book import main
from layerwise.config import LayerwiseError, data_file
from layerwise.data import fetch as F
from layerwise.data import manifest as M

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(),
                                       reason=f"the real data files ({SHARED_DATA}) are not beside this clone")


@pytest.fixture(autouse=True)
def local_network_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any request to a host other than 127.0.0.1 fails the test; no mirror from the environment."""
    real = urllib.request.urlopen

    def guarded(url, *a, **kw):  # type: ignore[no-untyped-def]
        host = urlparse(url if isinstance(url, str) else url.full_url).hostname
        assert host == "127.0.0.1", f"a test tried to reach {url}"
        return real(url, *a, **kw)
    monkeypatch.setattr(F.urllib.request, "urlopen", guarded)
    monkeypatch.delenv("LAYERWISE_DATA_MIRROR", raising=False)


def _arc_rows(n: int) -> list[dict]:
    """Hand-made items in arc_easy.jsonl's format (query, choices, gold)."""
    return [{"query": f"Question: Which number follows {k}?", "choices": [str(k + d) for d in (3, 1, 2, 5)],
             "gold": 1} for k in range(n)]


def _mirror(root: Path) -> tuple[Path, list[M.DataFile]]:
    """A mirror folder with two small files (one flat, one laid out like a data directory) and
    their manifest entries (no public URL)."""
    arc = "".join(json.dumps(r) + "\n" for r in _arc_rows(6)).encode()
    labels = b"0\n1\n1\n0\n"
    (root / "benchmarks").mkdir(parents=True)
    (root / "benchmarks" / "arc_easy.jsonl").write_bytes(arc)  # by its path in the data directory
    (root / "labels.lst").write_bytes(labels)  # by its bare name
    entries = [M.DataFile(f"benchmarks/{name}", hashlib.sha256(b).hexdigest(), len(b), "hand-made fixture", "MIT")
               for name, b in (("arc_easy.jsonl", arc), ("labels.lst", labels))]
    return root, entries


@pytest.fixture
def http_mirror(tmp_path: Path) -> Iterator[tuple[str, list[str], Path]]:
    """An http server on 127.0.0.1 serving a mirror folder; yields (base URL, request log, folder)."""
    folder = tmp_path / "served"
    folder.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*a, directory=str(folder), **kw)

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            requests.append(self.path)

        def log_message(self, *args: object) -> None:  # quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests, folder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_fetch_from_a_mirror_folder_verifies_and_does_not_download_again(tmp_path: Path) -> None:
    mirror, entries = _mirror(tmp_path / "mirror")
    dest = tmp_path / "data"
    lines: list[str] = []
    got = F.fetch_files(dest, files=entries, mirror=str(mirror), echo=lines.append)
    assert [s.status for s in got] == ["fetched", "fetched"]
    assert got[0].detail.startswith(f"from {mirror}/benchmarks/arc_easy.jsonl")
    assert got[1].detail.startswith(f"from {mirror}/labels.lst")  # found by its bare name
    for e in entries:
        assert (dest / e.path).read_bytes() == ((mirror / e.path) if e.name == "arc_easy.jsonl"
                                                else mirror / e.name).read_bytes()
    assert len(lines) == 2 and not list(dest.rglob("*.part"))
    # present files are verified, not fetched again: the mirror is gone and they are still fine
    (mirror / "labels.lst").unlink()
    again = F.fetch_files(dest, files=entries, mirror=str(mirror))
    assert [s.status for s in again] == ["ok", "ok"]
    assert all("not downloaded again" in s.detail for s in again)
    # a file:// mirror URL works like the folder
    (dest / entries[0].path).unlink()
    (got_url,) = F.fetch_files(dest, files=entries[:1], mirror=mirror.as_uri())
    assert got_url.status == "fetched" and got_url.detail.startswith(f"from {mirror.as_uri()}/")


def test_fetch_from_an_http_mirror_on_localhost(tmp_path: Path, http_mirror) -> None:
    base, requests, folder = http_mirror
    _, entries = _mirror(folder)
    dest = tmp_path / "data"
    got = F.fetch_files(dest, files=entries, mirror=base, timeout=5)
    assert [s.status for s in got] == ["fetched", "fetched"]
    assert (dest / "benchmarks" / "labels.lst").read_bytes() == b"0\n1\n1\n0\n"
    # arc_easy by its path (one request); labels: its path is a 404, then its bare name
    assert requests == ["/benchmarks/arc_easy.jsonl", "/benchmarks/labels.lst", "/labels.lst"]
    requests.clear()
    assert [s.status for s in F.fetch_files(dest, files=entries, mirror=base, timeout=5)] == ["ok", "ok"]
    assert requests == []  # verified on disk, nothing asked of the server


def test_sha256_mismatch_is_refused_with_a_one_line_reason(tmp_path: Path, http_mirror) -> None:
    base, _, folder = http_mirror
    _, entries = _mirror(folder)
    arc = folder / "benchmarks" / "arc_easy.jsonl"
    arc.write_bytes(arc.read_bytes().replace(b"follows 0", b"follows 9"))  # same size, other bytes
    dest = tmp_path / "data"
    (st,) = F.fetch_files(dest, files=entries[:1], mirror=base, timeout=5)
    assert st.status == "missing" and not st.ok
    assert "\n" not in st.detail and "refused" in st.detail and entries[0].sha256 in st.detail
    assert not (dest / entries[0].path).exists() and not list(dest.rglob("*.part"))  # nothing kept
    # too many bytes are cut off and refused as well
    arc.write_bytes(arc.read_bytes() * 2)
    (st,) = F.fetch_files(dest, files=entries[:1], mirror=base, timeout=5)
    assert "refused, more than the expected" in st.detail and not (dest / entries[0].path).exists()


def test_corrupt_present_file_is_reported_and_replaced(tmp_path: Path) -> None:
    mirror, entries = _mirror(tmp_path / "mirror")
    dest = tmp_path / "data"
    bad = dest / entries[0].path
    bad.parent.mkdir(parents=True)
    bad.write_text("not the file\n")
    (checked,) = [s for s in F.check_files(dest, names=["benchmarks"]) if s.file.name == "arc_easy.jsonl"]
    assert checked.status == "corrupt" and "expected 636,665" in checked.detail  # the real manifest's size
    (st,) = F.fetch_files(dest, files=entries[:1], mirror=str(mirror))
    assert st.status == "fetched" and F.verify(bad, entries[0]) is None


def test_unreachable_mirror_and_public_url_say_what_is_missing(tmp_path: Path) -> None:
    port = _closed_port()
    entry = M.DataFile("benchmarks/arc_easy.jsonl", "0" * 64, 10, "a fixture", "MIT",
                       url=f"http://127.0.0.1:{port}/public/arc_easy.jsonl")
    (st,) = F.fetch_files(tmp_path / "data", files=[entry], mirror=f"http://127.0.0.1:{port}/m", timeout=2)
    assert st.status == "missing" and "\n" not in st.detail
    assert st.detail.count(": unreachable (") == 3  # mirror by path, by name, public URL
    assert entry.url in st.detail and "0" * 64 in st.detail and str(tmp_path / "data" / entry.path) in st.detail


def test_cli_fetch_without_sources_lists_each_missing_file_and_how_to_get_it(tmp_path: Path, capsys) -> None:
    dest = tmp_path / "data"
    rc = main(["data", "fetch", "--data-dir", str(dest), "--mirror-only", "--only", "corpus", "gsm8k_test.jsonl"])
    out, err = capsys.readouterr()
    assert rc == 1
    lines = out.strip().splitlines()
    assert len(lines) == 3 and all(ln.lstrip().startswith("missing") for ln in lines)
    corpus = [ln for ln in lines if "gutenberg" in ln]
    for f, ln in zip([M.BY_PATH[p] for p in (M.FILES[-2].path, M.FILES[-1].path)], corpus):
        assert f.name in ln and f.sha256 in ln and "--mirror" in ln and "rcdm-uga/Gutenberg_Text @a0b16d35" in ln
        assert str(dest / f.path) in ln
    gsm = next(ln for ln in lines if "gsm8k" in ln)
    assert M.BY_PATH["benchmarks/gsm8k_test.jsonl"].url in gsm and "mirror only" in gsm
    assert err.strip().startswith("3 of 3 files missing or corrupt") and len(err.strip().splitlines()) == 1
    assert not dest.joinpath("corpus").exists() or not any(dest.joinpath("corpus").iterdir())


def test_cli_errors_are_one_line(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAYERWISE_DATA_DIR", raising=False)
    assert main(["data", "check"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--data-dir" in err and "LAYERWISE_DATA_DIR" in err
    assert main(["data", "fetch", "--data-dir", str(tmp_path), "--only", "hellaswag.jsonl", "--mirror-only"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'hellaswag.jsonl'" in err and "arc_easy.jsonl" in err


def test_missing_data_file_error_names_file_variable_and_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(LayerwiseError) as e:
        data_file("benchmarks/arc_easy.jsonl", tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "benchmarks" / "arc_easy.jsonl") in msg and "$LAYERWISE_DATA_DIR" in msg
    assert f"layerwise-book data fetch --data-dir {tmp_path}" in msg and "\n" not in msg


def test_a_fetched_benchmark_file_loads_as_its_task(tmp_path: Path) -> None:
    """The hand-made arc_easy.jsonl, fetched into a data directory, is what lw_arc_easy reads."""
    from layerwise.evals import load_tasks

    mirror, entries = _mirror(tmp_path / "mirror")
    dest = tmp_path / "data"
    F.fetch_files(dest, files=entries[:1], mirror=str(mirror))
    task = load_tasks(["lw_arc_easy"], data_dir=dest, cache_dir=tmp_path / "cache").tasks["lw_arc_easy"]
    docs = list(task.test_docs())
    assert [{k: d[k] for k in ("query", "choices", "gold")} for d in docs] == _arc_rows(6)
    assert task.doc_to_text(docs[2]) == "Question: Which number follows 2?\nAnswer:"
    assert task.doc_to_choice(docs[2])[task.doc_to_target(docs[2])] == "3"


def test_runner_never_takes_a_data_dir_from_beside_the_clone(tmp_path: Path, dummy_notebooks: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from layerwise import book

    notebooks = tmp_path / "clone" / "notebooks"
    shutil.copytree(dummy_notebooks, notebooks)
    (tmp_path / "shared" / "data").mkdir(parents=True)  # the folder a checkout on the project's machines has
    monkeypatch.delenv("LAYERWISE_DATA_DIR", raising=False)
    with pytest.raises(LayerwiseError, match=r"no data directory: .*LAYERWISE_DATA_DIR.*layerwise-book data fetch"):
        book.plan_run("gpu", notebooks_dir=notebooks, out=tmp_path / "out")
    (plan,) = book.plan_run("tiny", notebooks_dir=notebooks, out=tmp_path / "out")
    assert plan.parameters.get("data_dir", "") == ""


@needs_shared_data
def test_manifest_hashes_match_the_real_files_and_a_folder_mirror_copies_them(tmp_path: Path) -> None:
    statuses = F.check_files(SHARED_DATA)
    assert [s.status for s in statuses] == ["ok"] * len(M.FILES), [s.line() for s in statuses if not s.ok]
    got = F.fetch_files(tmp_path / "data", names=["benchmarks"], mirror=str(SHARED_DATA), public=False)
    assert {s.status for s in got} == {"fetched"} and len(got) == 11
    assert F.summary(F.check_files(tmp_path / "data", names=["benchmarks"])).startswith("all 11 files present")


def test_manifest_sources_are_pinned() -> None:
    for f in M.FILES:
        assert len(f.sha256) == 64 and f.size > 0 and f.group in ("benchmarks", "corpus")
        if f.group == "benchmarks":
            commit = f.source.split("@")[1].split()[0]
            assert f.url and f.url.startswith(M.RAW + "/") and f"/{commit}/" in f.url and f.recipe is None
        else:
            assert f.url is None and f.recipe and "rcdm-uga/Gutenberg_Text @a0b16d35" in f.recipe
    assert [f.name for f in M.select(["corpus", "gutenberg-train-200MB.txt.xz"])] == \
        ["gutenberg-train-200MB.txt.xz", "gutenberg-heldout-10MB.txt.xz"]
