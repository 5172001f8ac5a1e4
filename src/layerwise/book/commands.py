"""Every command the documentation prints, as data: where it is printed, its text, its arguments, its kind.

The book's readers copy commands from the README, ``CONTRIBUTING.md``, the prose pages ``book/*.md``
and each chapter's "Run it yourself" section. :func:`documented_commands` collects them all: the
lines of fenced ``bash`` / ``sh`` / ``shell`` / ``console`` blocks (continuation lines and quoted
multi-line arguments joined, comments dropped, ``&&`` chains split, a leading ``$ `` prompt removed)
and the inline code spans of the prose that start with a command (``layerwise-book``, ``python``,
``papermill``, ``make``...). ``tests/test_commands.py`` runs or checks each one, so a printed command
that stops working (an unknown parameter, a notebook that does not exist) fails the tests.
``layerwise-book commands`` prints the list.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["DocCommand", "COMMAND_WORDS", "documented_commands", "command_kind", "split_block", "doc_sources"]

#: the first words (program names) that make a line or an inline code span a command
COMMAND_WORDS = ("layerwise-book", "layerwise-train", "python", "python3", "papermill", "jupytext", "make", "pip",
                 "uv", "conda", "git", "jupyter-book", "huggingface-cli", "cd", "bash")
_FENCE = re.compile(r"^```(bash|sh|shell|console)\s*$")
_INLINE = re.compile(r"`([^`\n]+(?:\n[^`\n]+)?)`")
_RUN_IT = re.compile(r"^##\s+Run it yourself", re.I | re.M)


@dataclass(frozen=True)
class DocCommand:
    """One printed command: the file and line it is printed at, the block it belongs to (commands of
    one block run in order, e.g. a ``jupytext`` conversion then ``papermill`` on its output), its text
    and arguments, whether it is an inline span of prose, and its kind (:func:`command_kind`)."""

    source: str
    line: int
    block: int
    text: str
    argv: tuple[str, ...]
    inline: bool
    kind: str

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


def _program(argv: tuple[str, ...] | list[str]) -> str:
    """The program's name, without a ``.venv/bin/`` (or any folder) prefix."""
    return os.path.basename(argv[0]) if argv else ""


def command_kind(argv: tuple[str, ...] | list[str]) -> str:
    """``book`` (layerwise-book / python -m layerwise.book), ``papermill``, ``jupytext``, ``make``,
    ``module`` (python -m other), ``script`` (python path.py), ``lint`` (ruff, mypy, pytest), ``setup``
    (venv, pip, uv, conda, git clone, cd), ``external`` (other programs), or ``unknown``."""
    prog = _program(argv)
    if prog in ("python", "python3") and len(argv) >= 3 and argv[1] == "-m":
        mod = argv[2]
        if mod in ("layerwise.book", "layerwise.book.cli"):
            return "book"
        if mod in ("pytest", "mypy", "ruff"):
            return "lint"
        if mod in ("venv", "pip", "uv"):
            return "setup"
        return "module"
    if prog in ("python", "python3") and len(argv) >= 2 and argv[1].endswith(".py"):
        return "script"
    if prog == "layerwise-book":
        return "book"
    if prog in ("papermill", "jupytext", "make"):
        return prog
    if prog in ("ruff", "mypy", "pytest"):
        return "lint"
    if prog in ("pip", "uv", "conda", "git", "cd", ".", "source"):
        return "setup"
    if prog in ("layerwise-train", "jupyter-book", "huggingface-cli", "bash"):
        return "external"
    return "unknown"


def _strip_prompt(line: str) -> str:
    s = line.strip()
    return s[2:] if s.startswith("$ ") else s


def split_block(lines: list[str]) -> Iterator[tuple[int, str, list[str]]]:
    """``(offset of the first line, text, argv)`` of each command in a block of shell lines.

    Lines ending in ``\\`` and arguments quoted over several lines are joined; comments are dropped
    (``shlex`` with comments); ``cmd1 && cmd2`` gives two commands.
    """
    i = 0
    while i < len(lines):
        start, acc = i, _strip_prompt(lines[i])
        i += 1
        while True:
            if acc.endswith("\\"):
                acc = acc[:-1].rstrip() + " "
                if i < len(lines):
                    acc += lines[i].strip()
                    i += 1
                    continue
            try:
                argv = shlex.split(acc, comments=True)
                break
            except ValueError:  # an open quote: the argument goes on on the next line
                if i >= len(lines):
                    raise ValueError(f"unterminated quote in the command starting {acc[:60]!r}") from None
                acc += "\n" + lines[i].rstrip()
                i += 1
        parts: list[list[str]] = [[]]
        for tok in argv:
            if tok in ("&&", ";"):
                parts.append([])
            else:
                parts[-1].append(tok)
        texts = [t.strip() for t in re.split(r"\s(?:&&|;)\s", _drop_comment(acc))]
        for n, part in enumerate(p for p in parts if p):
            yield start, texts[n] if n < len(texts) else shlex.join(part), part


def _drop_comment(text: str) -> str:
    """The text of a command line without its trailing ``# comment`` (outside quotes)."""
    quote = ""
    for j, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (j == 0 or text[j - 1].isspace()):
            return text[:j].rstrip()
    return text.strip()


def _markdown_commands(text: str, source: str, first_line: int = 1, block0: int = 0) -> list[DocCommand]:
    out: list[DocCommand] = []
    lines = text.splitlines()
    block, i = block0, 0
    prose: list[tuple[int, str]] = []
    while i < len(lines):
        if _FENCE.match(lines[i].strip()):
            j = i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            body = lines[i + 1: j]
            for off, cmd_text, argv in split_block(body):
                out.append(DocCommand(source, first_line + i + 1 + off, block, cmd_text, tuple(argv), False,
                                      command_kind(argv)))
            block += 1
            i = j + 1
            continue
        if lines[i].strip().startswith("```"):  # another language's fence: skip its body
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            i = j + 1
            continue
        prose.append((i, lines[i]))
        i += 1
    # inline code spans of the prose (a span may wrap onto the next line)
    text_prose = "\n".join(line for _, line in prose)
    line_of = [n for n, _ in prose]
    for m in _INLINE.finditer(text_prose):
        span = " ".join(m.group(1).split())
        try:
            argv = shlex.split(span)
        except ValueError:
            continue
        if not argv or _program(argv) not in COMMAND_WORDS or len(argv) < 2:
            continue
        row = text_prose.count("\n", 0, m.start())
        out.append(DocCommand(source, first_line + line_of[row], block, span, tuple(argv), True, command_kind(argv)))
        block += 1
    return out


def _run_it_yourself(path: Path) -> tuple[str, int]:
    """The "Run it yourself" section of a py:percent chapter (markdown, ``# `` prefixes removed) and
    the file line it starts at."""
    lines = path.read_text().splitlines()
    start = next((n for n, line in enumerate(lines) if _RUN_IT.match(line.removeprefix("# "))), None)
    if start is None:
        return "", 0
    body = []
    for line in lines[start:]:
        if line.startswith("# %%") or not (line.startswith("#") or not line.strip()):
            break
        body.append(line[2:] if line.startswith("# ") else line.lstrip("#"))
    return "\n".join(body), start + 1


def doc_sources(root: str | os.PathLike) -> list[Path]:
    """The files whose commands are collected: README.md, CONTRIBUTING.md, book/*.md, notebooks/NN_*.py."""
    r = Path(root)
    files = [r / "README.md", r / "CONTRIBUTING.md", *sorted((r / "book").glob("*.md")),
             *sorted((r / "notebooks").glob("[0-9][0-9]_*.py"))]
    return [f for f in files if f.is_file()]


def documented_commands(root: str | os.PathLike) -> list[DocCommand]:
    """Every command printed in the docs of the clone at ``root`` (see the module docstring)."""
    r = Path(root)
    out: list[DocCommand] = []
    for f in doc_sources(r):
        rel = f.relative_to(r).as_posix()
        if f.suffix == ".py":
            text, first = _run_it_yourself(f)
            out += _markdown_commands(text, rel, first) if text else []
        else:
            out += _markdown_commands(f.read_text(), rel)
    return out


def as_json(commands: list[DocCommand]) -> str:
    """The list as JSON (one object per command)."""
    return json.dumps([{**asdict(c), "argv": list(c.argv)} for c in commands], indent=1)
