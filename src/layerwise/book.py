"""The book's runner: execute chapters with papermill, build the site with jupyter-book.

Chapters are Jupytext py:percent files ``notebooks/NN_name.py``. The runner reads one into memory
with jupytext (papermill cannot read ``.py``), resolves its parameters from a profile file
``notebooks/profiles/<profile>.yaml`` (``common`` section, then the chapter's section, then ``-p``
overrides), executes it with papermill's Python API into ``_build/<profile>/notebooks/NN_name.ipynb``
and writes a stamp beside it, so that an unchanged chapter (same source, parameters and library code)
is not run again. Each executed notebook gets a banner cell saying which profile, models and device
produced it.

The site of a profile is built by jupyter-book 1.x with execution off (it renders what papermill
executed) into ``_build/<profile>/html``. The *published* book is the ``gpu`` profile's executed
notebooks committed under ``book/chapters/``, described by ``_config.yml`` and ``_toc.yml`` at the
repository root (whose source folder is ``book/``); any other profile builds its own site from a
generated source folder ``_build/<profile>/src`` and never touches ``book/``.

Command line (also installed as ``layerwise-book``)::

    python -m layerwise.book run --profile tiny [--chapters 01_layer_similarity ...] [-p key=value ...]
                                 [--out DIR] [--build] [--force] [--publish]
    python -m layerwise.book build --profile tiny [--published]
    python -m layerwise.book refresh-reference          # tests/notebooks/*.ipynb for nbval
    python -m layerwise.book list
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import yaml

from . import __version__
from .config import CACHE_DIR_ENV, REPO_ROOT, LayerwiseError, cache_dir as resolve_cache_dir
from .config import data_dir as resolve_data_dir

#: the profile whose executed notebooks are the published book (committed under book/chapters/)
PUBLISHED_PROFILE = "gpu"
#: chapter names from CONTRIBUTING.md; a profile section must name one of these or a present chapter
KNOWN_CHAPTERS = (
    "00_pretraining", "01_layer_similarity", "02_token_similarity", "03_layer_skipping",
    "04_super_outlier", "05_outlier_ablation", "06_alpha_hill", "07_compression", "08_claims_ledger",
    "09_performance",
)
#: top-level keys of a profile file that are runner flags, not parameter sections
PROFILE_FLAGS = ("requires_data",)
#: cell tags: nbval skips these cells (banner and provenance differ on every run)
NBVAL_SKIP = "nbval-skip"
BANNER_TAG = "layerwise-banner"
PROVENANCE_TAG = "provenance"

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
BOOK_DIR = REPO_ROOT / "book"
BUILD_ROOT = REPO_ROOT / "_build"
REFERENCE_DIR = REPO_ROOT / "tests" / "notebooks"


# ---------------------------------------------------------------------------------------------
# Chapters, profiles, parameters
# ---------------------------------------------------------------------------------------------


def discover_chapters(notebooks_dir: str | os.PathLike = NOTEBOOKS_DIR) -> dict[str, Path]:
    """``{"01_layer_similarity": Path(".../01_layer_similarity.py"), ...}`` in chapter order."""
    nb_dir = Path(notebooks_dir)
    if not nb_dir.is_dir():
        raise LayerwiseError(f"notebooks directory {nb_dir} does not exist: pass --notebooks DIR "
                             "(the folder holding NN_name.py chapters)")
    return {p.stem: p for p in sorted(nb_dir.glob("[0-9][0-9]_*.py"))}


def select_chapters(known: Mapping[str, Path], wanted: Sequence[str] | None) -> list[str]:
    """The chapters to run, in book order. ``wanted`` entries may be full names or the ``NN`` prefix."""
    if not known:
        raise LayerwiseError("no chapters (NN_name.py) found: pass --notebooks DIR pointing at the chapters")
    if not wanted:
        return list(known)
    out: list[str] = []
    for w in wanted:
        match = [k for k in known if k == w or k.split("_", 1)[0] == w]
        if len(match) != 1:
            raise LayerwiseError(f"unknown chapter {w!r}: use one of {', '.join(known)}")
        if match[0] not in out:
            out.append(match[0])
    return [k for k in known if k in out]


def profiles_in(profiles_dir: str | os.PathLike) -> list[str]:
    return sorted(p.stem for p in Path(profiles_dir).glob("*.yaml"))


def load_profile(profile: str, profiles_dir: str | os.PathLike,
                 chapters: Sequence[str] = ()) -> dict[str, Any]:
    """Read ``<profiles_dir>/<profile>.yaml``: ``{"common": {...}, "<chapter>": {...}, ...}``.

    One top-level flag besides the sections: ``requires_data: true`` when the profile's chapters read
    the offline data directory (the tiny profile generates its corpus, so it needs none); the
    runner then checks that the directory exists before running anything.

    Sections that are neither ``common`` nor a chapter (present or listed in CONTRIBUTING.md) are an
    error, so that a typo in a chapter name does not silently drop its settings.
    """
    path = Path(profiles_dir) / f"{profile}.yaml"
    if not path.is_file():
        have = profiles_in(profiles_dir)
        raise LayerwiseError(f"unknown profile {profile!r}: use one of {', '.join(have) or '(none)'} "
                             f"(files in {profiles_dir})")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise LayerwiseError(f"{path} must be a mapping of sections (common:, <chapter>:)")
    out: dict[str, Any] = {}
    for section, values in raw.items():
        if section in PROFILE_FLAGS:
            if not isinstance(values, bool):
                raise LayerwiseError(f"{path}: {section} must be true or false")
            out[section] = values
            continue
        if section != "common" and section not in chapters and section not in KNOWN_CHAPTERS:
            raise LayerwiseError(f"{path}: section {section!r} is no chapter: use 'common' or one of "
                                 f"{', '.join(dict.fromkeys([*chapters, *KNOWN_CHAPTERS]))}")
        if values is not None and not isinstance(values, dict):
            raise LayerwiseError(f"{path}: section {section!r} must be a mapping of parameter: value")
        out[str(section)] = dict(values or {})
    out.setdefault("common", {})
    return out


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """``["n_seq=4", "models=[a, b]"]`` -> ``{"n_seq": 4, "models": ["a", "b"]}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise LayerwiseError(f"bad parameter {item!r}: write -p name=value (value in YAML, e.g. "
                                 "-p models='[Qwen/Qwen2.5-7B]')")
        try:
            out[key] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as e:
            raise LayerwiseError(f"-p {key}=...: value {value!r} is not valid YAML ({e.__class__.__name__}): "
                                 "quote it") from None
    return out


def read_chapter(path: str | os.PathLike):
    """The chapter as an nbformat notebook, read with jupytext in memory."""
    import jupytext  # heavy import, only when running

    nb = jupytext.read(str(path))
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    for cell in nb.cells:  # papermill expects every cell to carry a tags list (its own loader adds them)
        cell.metadata.setdefault("tags", [])
    return nb


def declared_parameters(nb, chapter: str = "") -> dict[str, str]:
    """Names (and default source text) assigned at top level in the cell tagged ``parameters``."""
    import ast

    cell = next((c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        raise LayerwiseError(f"chapter {chapter or '?'} has no cell tagged 'parameters': tag one "
                             '(# %% tags=["parameters"])')
    # ast, not papermill's inspection: its line regex drops e.g. `x = ""  # "" = default`
    try:
        tree = ast.parse(cell.source)
    except SyntaxError as e:
        raise LayerwiseError(f"chapter {chapter or '?'}: its parameters cell is not valid Python "
                             f"(line {e.lineno}: {e.msg}): fix it") from None
    out: dict[str, str] = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for t in targets:
            if isinstance(t, ast.Name):
                out[t.id] = ast.get_source_segment(cell.source, node.value) if node.value is not None else ""
    return out


@dataclass
class Plan:
    """One chapter ready to run: its notebook, resolved parameters and fingerprint."""

    chapter: str
    source: Path
    nb: Any
    parameters: dict[str, Any]
    fingerprint: str
    output: Path
    stamp: Path
    skipped_common: list[str] = field(default_factory=list)


def resolve_parameters(profile: str, sections: Mapping[str, Mapping[str, Any]], chapter: str,
                       declared: Mapping[str, str], overrides: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``common`` < chapter section < ``-p`` overrides, restricted to what the notebook declares.

    ``profile`` is always set to the profile's name (when declared). A ``common`` key the notebook
    does not declare is dropped (returned in the second value); a chapter-section key it does not
    declare is an error. ``overrides`` must already be filtered to the declared names.
    """
    common = dict(sections.get("common", {}))
    own = dict(sections.get(chapter, {}))
    unknown = sorted(k for k in own if k not in declared)
    if unknown:
        raise LayerwiseError(f"profile {profile!r}, section {chapter}: {', '.join(unknown)} not declared by the "
                             f"chapter's parameters cell (declared: {', '.join(declared)}): fix the profile file")
    dropped = sorted(k for k in common if k not in declared)
    params = {k: v for k, v in common.items() if k in declared}
    params.update(own)
    params.update(overrides)
    if "profile" in declared:
        params["profile"] = profile
    return params, dropped


def library_fingerprint() -> str:
    """Hash of the installed library's Python sources: a library change re-runs the chapters."""
    h = hashlib.sha256(__version__.encode())
    for p in sorted(Path(__file__).parent.rglob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def fingerprint(source_text: str, parameters: Mapping[str, Any], library: str | None = None) -> str:
    """What decides whether a chapter must run again: source, resolved parameters, library code."""
    h = hashlib.sha256()
    h.update(source_text.encode())
    h.update(json.dumps(parameters, sort_keys=True, default=str).encode())
    h.update((library if library is not None else library_fingerprint()).encode())
    return h.hexdigest()


def is_up_to_date(plan: Plan) -> bool:
    """True when the last successful run had the same fingerprint and its output still exists."""
    if not (plan.stamp.is_file() and plan.output.is_file()):
        return False
    try:
        return json.loads(plan.stamp.read_text()).get("fingerprint") == plan.fingerprint
    except (json.JSONDecodeError, OSError):
        return False


# ---------------------------------------------------------------------------------------------
# Planning (every check before anything runs) and running
# ---------------------------------------------------------------------------------------------


def out_dir_for(profile: str, out: str | os.PathLike | None = None) -> Path:
    """``_build/<profile>`` unless ``out`` is given."""
    return Path(out).resolve() if out else BUILD_ROOT / profile


def plan_run(profile: str, *, chapters: Sequence[str] | None = None, overrides: Mapping[str, Any] | None = None,
             out: str | os.PathLike | None = None, notebooks_dir: str | os.PathLike = NOTEBOOKS_DIR,
             profiles_dir: str | os.PathLike | None = None, cache: str | os.PathLike | None = None) -> list[Plan]:
    """Validate every input and resolve every chapter's parameters, without running anything.

    Raises :class:`LayerwiseError` (one line, naming the fix) for an unknown chapter or profile, a
    ``-p`` parameter that no selected chapter declares, or a data directory that does not exist.
    """
    known = discover_chapters(notebooks_dir)
    profiles_dir = Path(profiles_dir) if profiles_dir else Path(notebooks_dir) / "profiles"
    sections = load_profile(profile, profiles_dir, list(known))
    selected = select_chapters(known, chapters)
    overrides = dict(overrides or {})
    library = library_fingerprint()
    outdir = out_dir_for(profile, out) / "notebooks"

    nbs = {ch: read_chapter(known[ch]) for ch in selected}
    declared = {ch: declared_parameters(nbs[ch], ch) for ch in selected}
    for key in overrides:
        if not any(key in d for d in declared.values()):
            where = "; ".join(f"{ch}: {', '.join(d)}" for ch, d in declared.items())
            raise LayerwiseError(f"-p {key}: no selected chapter declares a parameter {key!r} "
                                 f"(declared: {where})")

    plans = []
    for ch in selected:
        d = declared[ch]
        params, dropped = resolve_parameters(profile, sections, ch, d,
                                             {k: v for k, v in overrides.items() if k in d})
        # artefacts are shared through the cache only: every chapter gets the same absolute cache dir
        if "cache_dir" in d:
            params["cache_dir"] = str(resolve_cache_dir(params.get("cache_dir") or cache or None))
        if "data_dir" in d and (sections.get("requires_data") or params.get("data_dir")):
            try:
                params["data_dir"] = str(resolve_data_dir(params.get("data_dir") or None))
            except LayerwiseError as e:
                raise LayerwiseError(f"chapter {ch}: {e}") from None
        text = known[ch].read_text()
        plans.append(Plan(ch, known[ch], nbs[ch], params, fingerprint(text, params, library),
                          outdir / f"{ch}.ipynb", outdir / f"{ch}.stamp.json", dropped))
    return plans


class _QuietPapermill(logging.Filter):
    """Drop papermill's parameter warnings: the runner checks parameters itself (with ast), and
    papermill's line parser misreads lines like ``x = ""  # "" = default``, warning wrongly."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith("Passed unknown parameter") or msg.startswith("Unable to parse line"))


for _name in ("papermill", "papermill.translators"):
    logging.getLogger(_name).addFilter(_QuietPapermill())


@contextmanager
def _env(**values: str) -> Iterator[None]:
    """Set environment variables for the kernels papermill starts; restore them afterwards."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _models_text(params: Mapping[str, Any]) -> str:
    models = params.get("models")
    if not models:
        return f"the controlled triplet `ar`, `dlm`, `ar2dlm` (preset `{params.get('preset', '?')}`)"
    if isinstance(models, Mapping):
        return ", ".join(f"`{k}`: `{v}`" for k, v in models.items())
    if isinstance(models, (list, tuple)):
        return ", ".join(f"`{m}`" for m in models)
    return f"`{models}`"


def _device_text(device: Any) -> str:
    from .config import resolve_device
    from .results import device_name

    try:
        dev = resolve_device(device if device not in (None, "") else "auto")
    except LayerwiseError:
        return str(device)
    return device_name() if dev.type in ("cuda", "cpu") else str(dev)


def banner_cell(profile: str, params: Mapping[str, Any], seconds: float, chapter: str):
    """The markdown cell put at the top of every executed notebook (tagged so nbval skips it)."""
    import nbformat

    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = (f"> **Produced by the `{profile}` profile** with {_models_text(params)}, on "
            f"{_device_text(params.get('device', 'auto'))}, {when} ({seconds:.0f} s), layerwise {__version__}. "
            f"Re-run: `python -m layerwise.book run --profile {profile} --chapters {chapter}`.")
    cell = nbformat.v4.new_markdown_cell(text)
    cell.metadata["tags"] = [BANNER_TAG, NBVAL_SKIP]
    return cell


def _prepare(nb) -> Any:
    """Tag provenance cells ``nbval-skip`` (their output is run-specific) before execution."""
    for c in nb.cells:
        tags = c.setdefault("metadata", {}).setdefault("tags", [])
        if PROVENANCE_TAG in tags and NBVAL_SKIP not in tags:
            tags.append(NBVAL_SKIP)
    return nb


def _failure_line(chapter: str, exc: BaseException, output: Path) -> str:
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = str(getattr(exc, "evalue", exc)).strip().splitlines()
    cell = getattr(exc, "exec_count", None)
    at = f" at cell [{cell}]" if cell else ""
    return (f"chapter {chapter} failed{at}: {ename}: {evalue[0] if evalue else ''} "
            f"(the executed notebook with the traceback is {output})")


def execute(plan: Plan, profile: str, *, kernel: str | None = None, progress: bool = True) -> float:
    """Run one planned chapter with papermill; write the banner and the stamp. Returns seconds."""
    import nbformat
    import papermill as pm

    plan.output.parent.mkdir(parents=True, exist_ok=True)
    plan.stamp.unlink(missing_ok=True)  # a failed run must not look up to date
    kernel = kernel or plan.nb.metadata.get("kernelspec", {}).get("name", "python3")
    # figures inline even when the caller's environment sets a non-interactive backend (MPLBACKEND=Agg)
    env = {"MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    if plan.parameters.get("cache_dir"):
        env[CACHE_DIR_ENV] = plan.parameters["cache_dir"]
    t0 = time.perf_counter()
    with _env(**env):
        try:
            nb = pm.execute_notebook(_prepare(plan.nb), str(plan.output), parameters=plan.parameters,
                                     kernel_name=kernel, progress_bar=progress, cwd=str(plan.output.parent),
                                     log_output=False)
        except pm.PapermillExecutionError as e:
            raise LayerwiseError(_failure_line(plan.chapter, e, plan.output)) from None
    seconds = time.perf_counter() - t0
    nb.cells.insert(0, banner_cell(profile, plan.parameters, seconds, plan.chapter))
    nbformat.write(nb, str(plan.output))
    plan.stamp.write_text(json.dumps({
        "chapter": plan.chapter, "profile": profile, "fingerprint": plan.fingerprint,
        "parameters": plan.parameters, "seconds": round(seconds, 1),
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }, indent=1, default=str))
    return seconds


def run(profile: str, *, chapters: Sequence[str] | None = None, overrides: Mapping[str, Any] | None = None,
        out: str | os.PathLike | None = None, notebooks_dir: str | os.PathLike = NOTEBOOKS_DIR,
        profiles_dir: str | os.PathLike | None = None, cache: str | os.PathLike | None = None,
        force: bool = False, kernel: str | None = None, progress: bool = True) -> dict[str, str]:
    """Run the selected chapters of a profile in book order; returns ``{chapter: "ran"|"skipped"}``.

    Stops at the first failing chapter (later chapters read its artefacts from the cache).
    """
    from tqdm.auto import tqdm

    plans = plan_run(profile, chapters=chapters, overrides=overrides, out=out, notebooks_dir=notebooks_dir,
                     profiles_dir=profiles_dir, cache=cache)
    status: dict[str, str] = {}
    bar = tqdm(plans, desc=f"book [{profile}]", unit="chapter", disable=not progress, position=0)
    for plan in bar:
        bar.set_postfix_str(plan.chapter)
        if not force and is_up_to_date(plan):
            tqdm.write(f"skip {plan.chapter}: unchanged since its last run ({plan.output})")
            status[plan.chapter] = "skipped"
            continue
        seconds = execute(plan, profile, kernel=kernel, progress=progress)
        tqdm.write(f"ran  {plan.chapter} in {seconds:.0f} s -> {plan.output}")
        status[plan.chapter] = "ran"
    bar.close()
    return status


# ---------------------------------------------------------------------------------------------
# The site
# ---------------------------------------------------------------------------------------------


def make_toc(source_dir: str | os.PathLike) -> dict[str, Any]:
    """The jupyter-book toc of a book folder: ``intro``, the chapters in ``chapters/``, other pages.

    Paths are relative to ``source_dir`` (the folder jupyter-book builds from).
    """
    src = Path(source_dir)
    if not (src / "intro.md").is_file():
        raise LayerwiseError(f"{src} has no intro.md: the book's root page must be intro.md")
    chapters = sorted(p for p in (src / "chapters").glob("[0-9][0-9]_*.ipynb")) if (src / "chapters").is_dir() else []
    pages = sorted(p for p in src.glob("*.md") if p.name not in ("intro.md", "README.md"))
    parts = []
    if chapters:
        parts.append({"caption": "Chapters", "chapters": [{"file": f"chapters/{p.stem}"} for p in chapters]})
    if pages:
        parts.append({"caption": "Running the book", "chapters": [{"file": p.stem} for p in pages]})
    toc: dict[str, Any] = {"format": "jb-book", "root": "intro"}
    if parts:
        toc["parts"] = parts
    return toc


def write_toc(toc: Mapping[str, Any], path: str | os.PathLike, comment: str) -> Path:
    p = Path(path)
    p.write_text(f"# {comment}\n" + yaml.safe_dump(dict(toc), sort_keys=False))
    return p


def assemble_source(profile: str, out: str | os.PathLike | None = None, *, book_dir: Path = BOOK_DIR,
                    config: Path = REPO_ROOT / "_config.yml") -> Path:
    """``_build/<profile>/src``: the book's prose pages + this profile's executed notebooks,
    with a generated ``_config.yml`` / ``_toc.yml`` (the root ones describe the published book)."""
    base = out_dir_for(profile, out)
    notebooks = sorted((base / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise LayerwiseError(f"no executed notebooks in {base / 'notebooks'}: run "
                             f"`python -m layerwise.book run --profile {profile}` first")
    src = base / "src"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(book_dir, src, ignore=shutil.ignore_patterns("chapters", "_build", ".ipynb_checkpoints"))
    (src / "chapters").mkdir()
    # prose pages include committed benchmark tables as ../benchmarks/results/*.md: keep that path valid
    bench = base / "benchmarks" / "results"
    shutil.rmtree(bench, ignore_errors=True)
    shutil.copytree(REPO_ROOT / "benchmarks" / "results", bench, ignore=shutil.ignore_patterns("*.csv", "logs"))
    for nb in notebooks:
        shutil.copy2(nb, src / "chapters" / nb.name)
    cfg = yaml.safe_load(config.read_text()) or {}
    cfg["title"] = f"{cfg.get('title', 'Book')} ({profile} profile)"
    html = cfg.setdefault("html", {})
    html["announcement"] = (f"This site was built from the <b>{profile}</b> profile's notebooks, "
                            f"not the published (gpu) book. Each page says which models produced it.")
    (src / "_config.yml").write_text(f"# generated by layerwise.book from {config.name} for profile {profile}\n"
                                     + yaml.safe_dump(cfg, sort_keys=False))
    write_toc(make_toc(src), src / "_toc.yml", f"generated by layerwise.book for profile {profile}")
    return src


def build_site(profile: str, *, out: str | os.PathLike | None = None, published: bool = False,
               book_dir: Path = BOOK_DIR, quiet: bool = True) -> Path:
    """Build the html site with jupyter-book (warnings are errors); returns ``.../html/index.html``.

    ``published=True`` builds ``book/`` with the root ``_config.yml`` / ``_toc.yml`` (the gpu profile's
    committed notebooks); otherwise the profile's executed notebooks in ``_build/<profile>/notebooks``.
    """
    from jupyter_book.sphinx import build_sphinx

    if published:
        src, config, toc = book_dir, REPO_ROOT / "_config.yml", REPO_ROOT / "_toc.yml"
    else:
        src = assemble_source(profile, out, book_dir=book_dir)
        config, toc = src / "_config.yml", src / "_toc.yml"
    html = out_dir_for(profile, out) / "html"
    # the same call `jupyter-book build SRC --config C --toc T -W --keep-going` makes, but with the
    # output folder chosen here (the CLI always appends _build/html to --path-output)
    result = build_sphinx(src, html, noconfig=True, path_config=str(config),
                          confoverrides={"external_toc_path": toc.as_posix(), "latex_individualpages": False},
                          builder="html", warningiserror=True, keep_going=True, freshenv=True,
                          quiet=quiet)
    if result != 0:
        raise LayerwiseError(f"jupyter-book build of {src} failed (warnings are errors): see the messages "
                             "above, fix the page or notebook they name, and build again")
    return html / "index.html"


def publish(profile: str, *, out: str | os.PathLike | None = None, book_dir: Path = BOOK_DIR) -> list[Path]:
    """Copy the gpu profile's executed notebooks to ``book/chapters/`` and regenerate ``_toc.yml``."""
    if profile != PUBLISHED_PROFILE:
        raise LayerwiseError(f"only the {PUBLISHED_PROFILE!r} profile is published to book/chapters/: "
                             f"drop --publish (profile {profile!r} builds its own site)")
    notebooks = sorted((out_dir_for(profile, out) / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    (book_dir / "chapters").mkdir(parents=True, exist_ok=True)
    copied = [Path(shutil.copy2(nb, book_dir / "chapters" / nb.name)) for nb in notebooks]
    write_toc(make_toc(book_dir), REPO_ROOT / "_toc.yml",
              "the published book (source folder: book/); regenerated by `layerwise-book run --publish`")
    return copied


# ---------------------------------------------------------------------------------------------
# nbval reference notebooks
# ---------------------------------------------------------------------------------------------

_PATH_PARAM = re.compile(r'^(cache_dir|data_dir) = .*$', re.M)


def refresh_reference(*, chapters: Sequence[str] | None = None, dest: str | os.PathLike = REFERENCE_DIR,
                      notebooks_dir: str | os.PathLike = NOTEBOOKS_DIR, profiles_dir: str | os.PathLike | None = None,
                      out: str | os.PathLike | None = None, progress: bool = True,
                      run_first: bool = True) -> list[Path]:
    """Run the tiny profile (skipping unchanged chapters) and copy its notebooks to ``dest`` for nbval.

    The injected ``cache_dir`` / ``data_dir`` are reset to ``""`` so that the reference notebooks
    re-execute on any checkout (they resolve through the environment and ``../shared/data``).
    """
    import nbformat

    if run_first:
        run("tiny", chapters=chapters, notebooks_dir=notebooks_dir, profiles_dir=profiles_dir, out=out,
            progress=progress)
    selected = select_chapters(discover_chapters(notebooks_dir), chapters)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for ch in selected:
        nb = nbformat.read(str(out_dir_for("tiny", out) / "notebooks" / f"{ch}.ipynb"), as_version=4)
        for c in nb.cells:
            if "injected-parameters" in c.metadata.get("tags", []):
                c.source = _PATH_PARAM.sub(lambda m: f'{m.group(1)} = ""', c.source)
        recorded = nb.metadata.get("papermill", {}).get("parameters", {})
        for key in ("cache_dir", "data_dir"):
            if key in recorded:
                recorded[key] = ""
        path = dest / f"{ch}.ipynb"
        nbformat.write(nb, str(path))
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------
# Provenance (called by every chapter, in a cell tagged `provenance`)
# ---------------------------------------------------------------------------------------------


COMMIT_ENV = "LAYERWISE_COMMIT"  #: the code's commit where the checkout has no current .git (a synced copy)


def _git_commit() -> str:
    """``$LAYERWISE_COMMIT`` if set, else ``git describe --always --dirty`` of the checkout.

    The variable is for copies of a working tree whose ``.git`` is stale or absent: the lent GPU
    machine receives tracked files but keeps the ``.git`` of its first sync, so ``git describe``
    there names an old commit (pass the real one: ``LAYERWISE_COMMIT=$(git rev-parse --short HEAD)``)."""
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV]
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Provenance(dict):
    """What produced a notebook; shown as a markdown table when it is a cell's last expression."""

    def _repr_markdown_(self) -> str:
        rows = "\n".join(f"| {k} | {str(v).replace('|', '/')} |" for k, v in self.items())
        return f"| provenance | |\n|---|---|\n{rows}\n"


def provenance(profile: str = "", models: Any = None, **params: Any) -> Provenance:
    """Record what produced this notebook: profile, models, device, versions, commit, time.

    Call it as the last expression of the cell tagged ``provenance`` (the runner tags that cell
    ``nbval-skip``); the notebook shows a table. ``models`` may be hub ids / triplet names (list), a
    ``{name: id}`` mapping, or a ``{name: LoadedModel}`` mapping. Extra keyword arguments (e.g.
    ``preset=``, ``device=``, ``seed=``) are recorded as given.
    """
    import warnings

    import torch
    from tqdm import TqdmWarning

    with warnings.catch_warnings():
        # without ipywidgets tqdm.auto falls back to text bars, which is what the book wants; its
        # warning would otherwise land in the first cell that imports it (transformers does)
        warnings.simplefilter("ignore", TqdmWarning)
        import tqdm.auto  # noqa: F401

    if isinstance(models, Mapping):
        models_d = {str(k): str(getattr(getattr(v, "spec", None), "model_id", v)) for k, v in models.items()}
    elif models:
        models_d = {str(m): str(m) for m in models}
    else:
        models_d = {}
    try:
        import transformers

        tf_version = transformers.__version__
    except ImportError:
        tf_version = "not installed"
    return Provenance({
        "profile": profile or "?",
        "models": ", ".join(f"{k} ({v})" if k != v else k for k, v in models_d.items()) or "(none given)",
        **params,
        "device": _device_text(params.get("device", "auto")),
        "layerwise": __version__, "commit": _git_commit(), "python": platform.python_version(),
        "torch": torch.__version__, "transformers": tf_version,
        "run at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    })


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="layerwise-book", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--notebooks", default=str(NOTEBOOKS_DIR), help="folder of NN_name.py chapters")
        sp.add_argument("--profiles-dir", default=None, help="folder of <profile>.yaml (default: NOTEBOOKS/profiles)")
        sp.add_argument("--out", default=None, help="output folder of the profile (default: _build/<profile>)")
        sp.add_argument("--no-progress", action="store_true", help="no progress bars")

    r = sub.add_parser("run", help="execute chapters with papermill (skips unchanged ones)")
    r.add_argument("--profile", default="tiny", help="tiny (default), gpu or paper")
    r.add_argument("--chapters", nargs="+", default=None, help="names or NN prefixes; default: all")
    r.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="override a parameter (value parsed as YAML); repeatable")
    r.add_argument("--cache-dir", default=None, help="artefact cache (default: $LAYERWISE_CACHE_DIR or .cache/layerwise)")
    r.add_argument("--force", action="store_true", help="run even unchanged chapters")
    r.add_argument("--build", action="store_true", help="then build the profile's site")
    r.add_argument("--publish", action="store_true", help="gpu profile only: copy the notebooks to book/chapters/")
    r.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebook's, python3)")
    common(r)

    b = sub.add_parser("build", help="build a profile's site with jupyter-book (execution off, -W)")
    b.add_argument("--profile", default="tiny")
    b.add_argument("--published", action="store_true",
                   help="build the published book (book/ with the root _config.yml/_toc.yml) into _build/gpu/html")
    common(b)

    f = sub.add_parser("refresh-reference", help="run the tiny profile and copy its notebooks to tests/notebooks/")
    f.add_argument("--chapters", nargs="+", default=None)
    f.add_argument("--dest", default=str(REFERENCE_DIR))
    common(f)

    ls = sub.add_parser("list", help="list chapters and profiles")
    common(ls)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    progress = not args.no_progress
    try:
        if args.command == "run":
            if args.publish and args.profile != PUBLISHED_PROFILE:  # say so before hours of running
                publish(args.profile, out=args.out)
            run(args.profile, chapters=args.chapters, overrides=parse_overrides(args.param), out=args.out,
                notebooks_dir=args.notebooks, profiles_dir=args.profiles_dir, cache=args.cache_dir,
                force=args.force, kernel=args.kernel, progress=progress)
            if args.publish:
                for p in publish(args.profile, out=args.out):
                    print(f"published {p}")
            if args.build:
                print(f"site: {build_site(args.profile, out=args.out, published=args.publish)}")
        elif args.command == "build":
            profile = PUBLISHED_PROFILE if args.published else args.profile
            print(f"site: {build_site(profile, out=args.out, published=args.published)}")
        elif args.command == "refresh-reference":
            for p in refresh_reference(chapters=args.chapters, dest=args.dest, notebooks_dir=args.notebooks,
                                       profiles_dir=args.profiles_dir, out=args.out, progress=progress):
                print(f"reference {p}")
        elif args.command == "list":
            nb_dir = Path(args.notebooks)
            print("chapters:", ", ".join(discover_chapters(nb_dir)) or "(none)")
            print("profiles:", ", ".join(profiles_in(Path(args.profiles_dir or nb_dir / "profiles"))) or "(none)")
    except LayerwiseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
