"""Progress bars stay on the terminal: no committed notebook carries progress-bar output, the stripper
removes exactly that output, and a chapter executed by papermill alone or by the runner writes none.

What counts as progress-bar output is :func:`layerwise.book.progress.is_progress_line`: a carriage-return
update, a tqdm bar ``NN%|...| n/N``, tqdm's timing bracket ``[00:01<00:02, ...]``, an ``it/s`` / ``s/it``
rate, a cursor-up escape, or a widget output.
"""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import nbformat
import pytest
from tqdm import tqdm

from layerwise.book.progress import is_progress_line, progress_lines, strip_progress, strip_progress_file

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted([*(ROOT / "book" / "chapters").glob("*.ipynb"), *(ROOT / "tests" / "notebooks").glob("*.ipynb"),
                    *(ROOT / "book" / "colab").glob("*.ipynb")])


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_notebook_has_no_progress_output(path: Path) -> None:
    found = progress_lines(nbformat.read(str(path), as_version=4))
    assert not found, (f"{path.relative_to(ROOT)} carries {len(found)} progress line(s), e.g. cell {found[0][0]}: "
                       f"{found[0][1][:80]!r}; strip them: python -m layerwise.book.progress {path.relative_to(ROOT)}")


def _tqdm_output(**kw: object) -> str:
    """What a real tqdm bar writes to a file (a terminal would overwrite it in place)."""
    buf = io.StringIO()
    for _ in tqdm(range(5), file=buf, mininterval=0, miniters=1, **kw):  # type: ignore[call-overload]
        pass
    return buf.getvalue()


@pytest.mark.parametrize("kw", [dict(desc="loglikelihood"), dict(desc="nested", leave=False),
                                dict(total=None, desc="unknown total"), dict(desc="steps", unit="step")],
                         ids=["bar", "leave-false", "no-total", "unit"])
def test_real_tqdm_output_is_recognised(kw: dict) -> None:
    text = _tqdm_output(**kw)
    lines = [line for line in text.split("\n") if line]
    assert lines and all(is_progress_line(line) for line in lines)


@pytest.mark.parametrize("line", [
    "retention 0.93 [0.88, 0.97]", "| block | 0.12 | 0.95 |", "early_similarity_dlm_minus_ar: 0.012 [0.004, 0.020]",
    "wrote 03_layer_skipping.json", "[Task: lw_gutenberg] metric word_perplexity is defined, but aggregation is not.",
    "throughput 1234 tokens/s", "50% of the blocks | kept", "", "ends with a line end\r",
])
def test_ordinary_output_is_not_progress(line: str) -> None:
    assert not is_progress_line(line)


def _notebook(outputs: list[dict]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("pass")
    cell.outputs = [nbformat.from_dict(o) for o in outputs]
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), cell]
    return nb


def test_strip_keeps_ordinary_output_in_order_and_removes_the_bars() -> None:
    bar = _tqdm_output(desc="loglikelihood")
    nb = _notebook([
        {"output_type": "stream", "name": "stdout", "text": "before\n"},
        *({"output_type": "stream", "name": "stderr", "text": chunk} for chunk in bar.split("\r") if chunk),
        {"output_type": "stream", "name": "stderr", "text": "\n"},
        {"output_type": "stream", "name": "stderr", "text": "a warning\n"},
        {"output_type": "display_data", "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "x"},
                                                 "text/plain": "HBox()"}, "metadata": {}},
        {"output_type": "execute_result", "data": {"text/plain": "42"}, "metadata": {}, "execution_count": 1},
        {"output_type": "stream", "name": "stdout", "text": "after\n"},
    ])
    assert progress_lines(nb)
    removed = strip_progress(nb)
    assert removed > 0 and not progress_lines(nb)
    outs = nb.cells[1].outputs
    assert [(o.output_type, o.get("name"), o.get("text", o.get("data", {}).get("text/plain"))) for o in outs] == [
        ("stream", "stdout", "before\n"), ("stream", "stderr", "a warning\n"), ("execute_result", None, "42"),
        ("stream", "stdout", "after\n")]
    assert strip_progress(nb) == 0  # idempotent


def test_strip_leaves_a_notebook_without_bars_untouched(tmp_path: Path) -> None:
    nb = _notebook([{"output_type": "stream", "name": "stdout", "text": "a\n\nb\n"}])
    path = tmp_path / "clean.ipynb"
    nbformat.write(nb, str(path))
    before = path.read_bytes()
    assert strip_progress_file(path) == 0 and path.read_bytes() == before


def test_strip_leaves_split_stream_outputs_of_a_cell_without_bars_as_they_are() -> None:
    # a cell printing in several stream outputs (no bars): merging them to look for bars must not
    # change the cell's own outputs (it once doubled the printed lines)
    outs = [{"output_type": "stream", "name": "stdout", "text": "first\n"},
            {"output_type": "stream", "name": "stdout", "text": "second\n"}]
    nb = _notebook([dict(o) for o in outs])
    assert strip_progress(nb) == 0
    assert [dict(o) for o in nb["cells"][1]["outputs"]] == outs


def test_strip_file_cleans_a_published_style_notebook(tmp_path: Path) -> None:
    nb = _notebook([{"output_type": "stream", "name": "stderr", "text": "\rLoading weights:   0%|          | 0/111 "
                                                                          "[00:00<?, ?it/s]"},
                    {"output_type": "stream", "name": "stderr", "text": "\rLoading weights: 100%|##########| 111/111 "
                                                                          "[00:00<00:00, 2375.66it/s]"},
                    {"output_type": "stream", "name": "stderr", "text": "\n"},
                    {"output_type": "stream", "name": "stdout", "text": "{'ar': 'ar, 12 layers'}\n"}])
    path = tmp_path / "pub.ipynb"
    nbformat.write(nb, str(path))
    assert strip_progress_file(path) == 1  # the two updates share one line (carriage returns)
    again = nbformat.read(str(path), as_version=4)
    assert not progress_lines(again)
    assert [o.text for o in again.cells[1].outputs] == ["{'ar': 'ar, 12 layers'}\n"]


CHAPTER = '''\
# %% tags=["parameters"]
n = 3

# %%
import layerwise.config  # a chapter's first library import switches bars off in a kernel
from tqdm.auto import tqdm
from transformers.utils import logging as hf_logging

for _ in tqdm(range(n), desc="default bar", mininterval=0):
    pass
for _ in hf_logging.tqdm(range(n), desc="transformers bar"):
    pass
for _ in tqdm(range(n), desc="library bar", disable=layerwise.config.progress_disabled()):
    pass
print("done", layerwise.config.in_notebook())
'''


@pytest.mark.slow
def test_papermill_alone_writes_no_bars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the runner's environment variables, a kernel that imports the library shows no bars."""
    import jupytext
    import papermill as pm

    for var in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS",
                "LAYERWISE_NOTEBOOK_PROGRESS"):
        monkeypatch.delenv(var, raising=False)
    nb = jupytext.reads(CHAPTER, fmt="py:percent")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    out = pm.execute_notebook(nb, str(tmp_path / "out.ipynb"), cwd=str(tmp_path), progress_bar=False)
    text = json.dumps([o for c in out.cells if c.cell_type == "code" for o in c.outputs])
    assert "done True" in text
    assert not progress_lines(out), progress_lines(out)[:3]


FORCED = textwrap.dedent('''\
    # %% [markdown]
    # # A chapter whose library forces its bar on

    # %% tags=["parameters"]
    profile = "tiny"
    preset = "tiny"
    models = []
    data_dir = ""
    cache_dir = ""
    device = "cpu"
    seed = 0
    n = 3

    # %%
    import sys

    from tqdm import tqdm

    for _ in tqdm(range(n), desc="forced", disable=False, file=sys.stderr, mininterval=0):
        pass
    print("result", n)
''')


@pytest.mark.slow
def test_runner_strips_a_bar_forced_on(tmp_path: Path) -> None:
    from layerwise import book

    chapters = tmp_path / "notebooks"
    (chapters / "profiles").mkdir(parents=True)
    (chapters / "98_forced.py").write_text(FORCED)
    (chapters / "profiles" / "tiny.yaml").write_text("requires_data: false\ncommon: {}\n")
    book.run("tiny", notebooks_dir=chapters, out=tmp_path / "out", cache=tmp_path / "cache", progress=False)
    out = nbformat.read(str(tmp_path / "out" / "notebooks" / "98_forced.ipynb"), as_version=4)
    text = json.dumps([o for c in out.cells if c.cell_type == "code" for o in c.outputs])
    assert "result 3" in text
    assert not progress_lines(out)


@pytest.mark.slow
def test_a_failed_chapter_keeps_its_traceback_without_bars(tmp_path: Path) -> None:
    from layerwise import book
    from layerwise.config import LayerwiseError

    chapters = tmp_path / "notebooks"
    (chapters / "profiles").mkdir(parents=True)
    (chapters / "98_forced.py").write_text(FORCED + '\n# %%\nraise RuntimeError("chapter broke")\n')
    (chapters / "profiles" / "tiny.yaml").write_text("requires_data: false\ncommon: {}\n")
    with pytest.raises(LayerwiseError, match="chapter broke"):
        book.run("tiny", notebooks_dir=chapters, out=tmp_path / "out", cache=tmp_path / "cache", progress=False)
    out = nbformat.read(str(tmp_path / "out" / "notebooks" / "98_forced.ipynb"), as_version=4)
    assert any(o.output_type == "error" for c in out.cells if c.cell_type == "code" for o in c.outputs)
    assert not progress_lines(out)
