"""Executed notebooks the repository commits carry no progress-bar output: bars belong on the terminal
(the runner disables them in chapter kernels through ``TQDM_DISABLE``; see
:func:`layerwise.config.progress_disabled`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from layerwise.config import progress_disabled

ROOT = Path(__file__).resolve().parents[1]
#: what tqdm prints: "  40%|████      | 4/10 [00:01<00:02, 3.2it/s]"
BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+|\d+(\.\d+)?(it|s)/s\]")


def _outputs(path: Path) -> list[str]:
    nb = json.loads(path.read_text())
    texts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            text = out.get("text") or out.get("data", {}).get("text/plain") or ""
            texts.append(text if isinstance(text, str) else "".join(text))
    return texts


@pytest.mark.parametrize("path", sorted((ROOT / "tests" / "notebooks").glob("*.ipynb"))
                         + sorted((ROOT / "book" / "colab").glob("*.ipynb")), ids=lambda p: p.name)
def test_committed_notebook_has_no_progress_bar(path: Path) -> None:
    bars = [t.strip().splitlines()[0] for t in _outputs(path) if BAR.search(t)]
    assert not bars, f"{path.relative_to(ROOT)} carries progress-bar output, e.g. {bars[0]!r}"


def test_progress_disabled_reads_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert not progress_disabled() and progress_disabled(True)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert progress_disabled() and progress_disabled(False)


def test_the_pattern_finds_a_tqdm_line() -> None:
    assert BAR.search("loglikelihood:  67%|██████▋   | 2/3 [00:00<00:00, 13.41it/s]")
    assert not BAR.search("retention 0.93 [0.88, 0.97]")
