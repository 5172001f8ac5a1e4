"""Progress-bar output in executed notebooks: how to recognise it and how to strip it.

Progress bars belong on the terminal. In a notebook kernel the library switches them off
(:func:`layerwise.config.quiet_notebook_progress`); this module is the safety net for bars that still
reach a notebook (a third-party library that forces its bar on) and the cleaner for notebooks executed
before. The runner strips every notebook it executes; ``python -m layerwise.book.progress FILE.ipynb ...``
strips committed notebooks in place without re-executing them.

What counts as progress-bar output (:func:`is_progress_line`), in a ``stream`` output:

- a carriage-return update: text followed by ``\\r`` that is not part of a ``\\r\\n`` line end (a terminal
  overwrites it; a notebook keeps every update);
- a tqdm bar: ``NN%|<bar>| n/N`` (e.g. ``40%|####      | 4/10``);
- tqdm's timing bracket: ``[MM:SS<MM:SS, ...]`` or ``[MM:SS, 3.2it/s]``;
- a tqdm rate: a number or ``?`` followed by ``it/s`` or ``s/it``;
- cursor-up escapes (``ESC[A``) that nested tqdm bars write.

A ``display_data`` output that is a Jupyter widget (tqdm's notebook bar, ``application/vnd.jupyter.widget-view+json``)
counts too. Other stream text (warnings, printed tables) is kept, in order.
"""

from __future__ import annotations

import copy
import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["is_progress_line", "progress_lines", "strip_progress", "strip_progress_file", "main"]

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

_BAR = re.compile(r"\d+%\|[^|\n]*\|\s*\d+(?:\.\d+)?[kMGT]?/\d+")
_TIMING = re.compile(r"\[\d+:\d\d(?::\d\d)?(?:<[\d:?]+)?,\s*[^\]\n]*\]|\[\d+:\d\d(?::\d\d)?<[\d:?]+\]")
_RATE = re.compile(r"(?:\d|\?)\s*(?:it/s|s/it)\b")
_CURSOR_UP = "\x1b[A"


def is_progress_line(line: str) -> bool:
    """True for one line (no ``\\n``) of progress-bar output; see the module docstring for the rules."""
    body = line[:-1] if line.endswith("\r") else line  # a "\r\n" line end is not an update
    if "\r" in body or _CURSOR_UP in line:
        return True
    return bool(_BAR.search(line) or _TIMING.search(line) or _RATE.search(line))


def _text(out: Any) -> str:
    text = out.get("text", "")
    return text if isinstance(text, str) else "".join(text)


def _is_widget(out: Any) -> bool:
    return out.get("output_type") in ("display_data", "execute_result") and WIDGET_MIME in out.get("data", {})


def _coalesce(outputs: list[Any]) -> list[Any]:
    """Consecutive ``stream`` outputs of one name merged into one (as a notebook displays them): a bar's
    updates and line ends often arrive as separate outputs."""
    merged: list[Any] = []
    for out in outputs:
        prev = merged[-1] if merged else None
        if (out.get("output_type") == "stream" and prev is not None and prev.get("output_type") == "stream"
                and prev.get("name") == out.get("name")):
            prev["text"] = _text(prev) + _text(out)
        else:
            merged.append(copy.copy(out))  # a copy: merging must not change the cell's own outputs
    return merged


def progress_lines(nb: Any) -> list[tuple[int, str]]:
    """``(cell index, line)`` for every progress-bar line (or widget) in a notebook's outputs."""

    found = []
    for i, cell in enumerate(nb["cells"]):
        for out in _coalesce(copy.deepcopy(list(cell.get("outputs", [])))):
            if _is_widget(out):
                found.append((i, f"<widget {out['data'][WIDGET_MIME].get('model_id', '')}>"))
            elif out.get("output_type") == "stream":
                found += [(i, line) for line in _text(out).split("\n") if is_progress_line(line)]
    return found


def _clean(text: str) -> str:
    """The stream text without its progress lines, and without the blank lines the bars left."""
    kept = []
    for line in text.split("\n"):
        if is_progress_line(line):
            # what a terminal would show last on this line, if it is real text (e.g. a message printed
            # over a bar that was cleared)
            line = line.replace(_CURSOR_UP, "").rstrip("\r").rsplit("\r", 1)[-1]
            if is_progress_line(line):
                continue
        if line.strip():
            kept.append(line)
    return "\n".join(kept) + "\n" if kept else ""


def strip_progress(nb: Any) -> int:
    """Remove progress-bar output from a notebook (an nbformat node or its JSON dict), in place.

    In a cell with progress output, consecutive ``stream`` outputs of one name are merged, progress
    lines and blank lines are dropped from them (a stream left empty is removed), and widget outputs
    are removed. Returns how many lines or widgets were removed; other cells are left as they are.
    """
    removed = 0
    for cell in nb["cells"]:
        if not cell.get("outputs"):
            continue
        outputs = _coalesce(list(cell["outputs"]))
        n = sum(_is_widget(o) for o in outputs) + sum(
            is_progress_line(line) for o in outputs if o.get("output_type") == "stream"
            for line in _text(o).split("\n"))
        if not n:
            continue
        removed += n
        kept = []
        for out in outputs:
            if _is_widget(out):
                continue
            if out.get("output_type") == "stream":
                out["text"] = _clean(_text(out))
                if not out["text"]:
                    continue
            kept.append(out)
        cell["outputs"] = kept
    return removed


def strip_progress_file(path: str | os.PathLike) -> int:
    """Strip progress-bar output from an ``.ipynb`` file in place (rewritten only when something was
    removed, keeping its nbformat version); returns the count of :func:`strip_progress`."""
    import nbformat

    nb = nbformat.read(str(path), as_version=nbformat.NO_CONVERT)
    removed = strip_progress(nb)
    if removed:
        nbformat.write(nb, str(path))
    return removed


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m layerwise.book.progress NB.ipynb ...``: strip each notebook, print what was removed."""
    paths: Iterable[str] = sys.argv[1:] if argv is None else argv
    for p in paths:
        print(f"{p}: removed {strip_progress_file(p)} progress line(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
