"""Colab notebooks of the chapters, and the "Open in Colab" link on every chapter page.

One setting names the repository: ``repository: {url: ..., branch: ...}`` in the book's
``_config.yml`` (jupyter-book's own key). Everything that links to the repository derives from it:

- :func:`write_colab` (``layerwise-book colab``) writes ``book/colab/NN_name.ipynb`` for each chapter
  ``notebooks/NN_name.py``: a title cell with the link, an install cell (``%pip install`` of the
  library from the repository, with the ``eval`` extra where the chapter runs lm-eval), then the
  chapter's own cells with its ``parameters`` cell as written (the tiny profile's defaults; no
  parameters injected by a published run). They are committed, since Colab opens a notebook from
  GitHub by its path; ``layerwise-book colab --check`` (and the tests) fail when one is out of date.
- :func:`setup` is a Sphinx extension (``sphinx: extra_extensions: [layerwise.book.colab]`` in
  ``_config.yml``): at build time it puts an "Open in Colab" link at the top of every chapter page
  (``chapters/NN_name``), pointing at that chapter's Colab notebook on the repository's branch. It
  reads jupyter-book's ``repository_url`` / ``repository_branch`` theme options, which jupyter-book
  fills from the same ``repository`` setting.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..config import LayerwiseError

__all__ = ["Repository", "COLAB_DIR", "repository", "colab_url", "colab_notebook", "write_colab", "stale_colab",
           "setup"]

#: where the Colab notebooks live, relative to the repository root
COLAB_DIR = "book/colab"
_CHAPTER = re.compile(r"^(?:.*/)?(\d\d_\w+)$")
_GITHUB = re.compile(r"^https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?$")
#: chapters that read files of the repository itself (not installed with the library)
_NEEDS_CHECKOUT = {"09_performance": "LAYERWISE_BENCHMARKS_DIR=/content/layerwise/benchmarks/results",
                   "10_robustness": "LAYERWISE_NOTEBOOKS=/content/layerwise/notebooks"}


@dataclass(frozen=True)
class Repository:
    """The public repository: ``https://github.com/<owner>/<name>`` and the branch links point at."""

    url: str
    branch: str = "main"

    @property
    def slug(self) -> str:
        m = _GITHUB.match(self.url)
        if m is None:
            raise LayerwiseError(f"repository url {self.url!r} is not https://github.com/<owner>/<name>: fix "
                                 "repository.url in _config.yml (Colab opens notebooks from GitHub)")
        return f"{m.group(1)}/{m.group(2)}"

    @property
    def name(self) -> str:
        return self.slug.split("/")[1]

    @property
    def pip_spec(self) -> str:
        """What ``pip install`` takes to install the library from the branch."""
        return f"git+{self.url.removesuffix('/').removesuffix('.git')}@{self.branch}"


def repository(config: str | os.PathLike) -> Repository:
    """The ``repository`` setting of a jupyter-book ``_config.yml``."""
    path = Path(config)
    cfg = yaml.safe_load(path.read_text()) if path.is_file() else None
    repo = (cfg or {}).get("repository") or {}
    if not repo.get("url"):
        raise LayerwiseError(f"{path} has no repository.url: add `repository: {{url: https://github.com/<owner>/"
                             "<name>, branch: main}` (the links to Colab and the install commands derive from it)")
    out = Repository(str(repo["url"]), str(repo.get("branch") or "main"))
    out.slug  # noqa: B018 (checks the form)
    return out


def colab_url(repo: Repository, chapter: str) -> str:
    """The Colab address that opens ``book/colab/<chapter>.ipynb`` of the repository's branch."""
    return f"https://colab.research.google.com/github/{repo.slug}/blob/{repo.branch}/{COLAB_DIR}/{chapter}.ipynb"


def _install_source(chapter: str, text: str, repo: Repository) -> str:
    extras = "[eval]" if re.search(r"\bevals\b", text) else ""
    lines = ["# Installs the library from its repository (Colab's runtime already has torch).",
             f'%pip install --quiet "layerwise{extras} @ {repo.pip_spec}"']
    if chapter in _NEEDS_CHECKOUT:
        lines += ["# This chapter reads files of the repository itself: a shallow clone provides them.",
                  f"!git clone --quiet --depth 1 --branch {repo.branch} {repo.url} /content/layerwise",
                  f"%env {_NEEDS_CHECKOUT[chapter]}"]
    return "\n".join(lines)


def colab_notebook(source: str | os.PathLike, repo: Repository) -> Any:
    """The Colab notebook of one chapter (``notebooks/NN_name.py``), as an nbformat notebook."""
    import jupytext
    import nbformat

    path = Path(source)
    chapter = path.stem
    text = path.read_text()
    chapter_nb = jupytext.read(str(path))
    if not any("parameters" in c.metadata.get("tags", []) for c in chapter_nb.cells):
        raise LayerwiseError(f"{path} has no cell tagged 'parameters': tag one (# %% tags=[\"parameters\"])")
    intro = nbformat.v4.new_markdown_cell(
        f"[Open in Colab]({colab_url(repo, chapter)}) · generated by `layerwise-book colab` from "
        f"`notebooks/{path.name}` of [{repo.slug}]({repo.url}); edit that file, not this one.\n\n"
        "Run the install cell, then *Runtime > Run all*. The parameters cell holds the tiny profile's "
        "defaults (a CPU runtime is enough). For the papers' models pick a GPU runtime and set `profile`, "
        "`models` and `device` there (the `paper` profile's values are in `notebooks/profiles/paper.yaml`); "
        "the gpu and paper settings read their data from `$LAYERWISE_DATA_DIR` (`layerwise-book data fetch` "
        "downloads it).")
    install = nbformat.v4.new_code_cell(_install_source(chapter, text, repo))
    install.metadata["tags"] = ["colab-install"]
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}, "colab": {"provenance": []}}
    cells = [intro, install]
    for c in chapter_nb.cells:
        cell = (nbformat.v4.new_code_cell(c.source) if c.cell_type == "code"
                else nbformat.v4.new_markdown_cell(c.source))
        tags = list(c.metadata.get("tags", []))
        if tags:
            cell.metadata["tags"] = tags
        cells.append(cell)
    for i, c in enumerate(cells):  # stable ids: regenerating an unchanged chapter gives the same bytes
        c["id"] = f"{chapter[:2]}-{i:03d}"
    nb.cells = cells
    return nb


def _render(nb: Any) -> str:
    import nbformat

    return nbformat.writes(nb) + "\n"


def _chapter_sources(notebooks_dir: str | os.PathLike) -> list[Path]:
    return sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.py"))


def stale_colab(notebooks_dir: str | os.PathLike, dest: str | os.PathLike, repo: Repository) -> list[Path]:
    """The Colab notebooks in ``dest`` that are missing or differ from what their chapter gives,
    and those whose chapter no longer exists."""
    dest = Path(dest)
    stale = []
    names = set()
    for src in _chapter_sources(notebooks_dir):
        target = dest / f"{src.stem}.ipynb"
        names.add(target.name)
        if not target.is_file() or target.read_text() != _render(colab_notebook(src, repo)):
            stale.append(target)
    stale += [p for p in sorted(dest.glob("*.ipynb")) if p.name not in names]
    return stale


def write_colab(notebooks_dir: str | os.PathLike, dest: str | os.PathLike, repo: Repository) -> list[Path]:
    """(Re)write ``dest/NN_name.ipynb`` for every chapter in ``notebooks_dir``; remove those of
    chapters that no longer exist. Returns the files written."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    keep = set()
    for src in _chapter_sources(notebooks_dir):
        target = dest / f"{src.stem}.ipynb"
        keep.add(target.name)
        text = _render(colab_notebook(src, repo))
        if not target.is_file() or target.read_text() != text:
            target.write_text(text)
            written.append(target)
    for p in dest.glob("*.ipynb"):
        if p.name not in keep:
            p.unlink()
    return written


# ---------------------------------------------------------------------------------------------
# Sphinx extension: the link on every chapter page
# ---------------------------------------------------------------------------------------------


def _add_link(app: Any, doctree: Any) -> None:
    from docutils import nodes

    m = _CHAPTER.match(app.env.docname)
    options = app.config.html_theme_options or {}
    if m is None or not app.env.docname.startswith("chapters/") or not options.get("repository_url"):
        return
    repo = Repository(str(options["repository_url"]), str(options.get("repository_branch") or "main"))
    url = colab_url(repo, m.group(1))
    para = nodes.paragraph(classes=["layerwise-colab"])
    para += nodes.reference("", "Open in Colab", refuri=url, classes=["layerwise-colab-link"])
    para += nodes.Text(": this chapter with an install cell and its parameters cell, ready to run.")
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is None:
        doctree.insert(0, para)
        return
    title = next((i for i, n in enumerate(section.children) if isinstance(n, nodes.title)), -1)
    section.insert(title + 1, para)


def setup(app: Any) -> dict[str, Any]:
    """Sphinx entry point: an "Open in Colab" link at the top of each chapter page."""
    app.connect("doctree-read", _add_link)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
