"""Planning and running chapters with papermill.

:func:`plan_run` checks every input and resolves and type-checks every selected chapter's parameters
before anything runs; :func:`run` executes the plans in book order with papermill's Python API into
``<out>/notebooks/NN_name.ipynb`` (default ``out``: ``<root>/_build/<profile>``) and writes a stamp
beside each, so that an unchanged chapter (same source, parameters and library code) is not run
again. Each executed notebook gets a banner cell saying which profile, models and device produced it.

Directories a chapter reads are passed in, never guessed by the library: the cache (``--cache-dir``,
``$LAYERWISE_CACHE_DIR``, else ``~/.cache/layerwise``), the data directory (``-p data_dir=``,
``$LAYERWISE_DATA_DIR``; ``layerwise-book data fetch`` fills it) and the benchmark
tables (``$LAYERWISE_BENCHMARKS_DIR``, else ``<root>/benchmarks/results``), as parameters and as the
kernels' environment.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import BENCHMARKS_DIR_ENV, CACHE_DIR_ENV, DATA_DIR_ENV, LayerwiseError, library_fingerprint
from ..config import cache_dir as resolve_cache_dir
from ..config import data_dir as resolve_data_dir
from ..params import validate
from .chapters import discover_chapters, load_profile, read_chapter, resolve_parameters, schema, select_chapters
from .estimate import describe_estimate, one_line, plans_estimate
from .origin import device_text
from .paths import NOTEBOOKS_ENV, BookLayout, locate
from .progress import strip_progress, strip_progress_file

#: cell tags: nbval skips these cells (banner and provenance differ on every run)
NBVAL_SKIP = "nbval-skip"
BANNER_TAG = "layerwise-banner"
PROVENANCE_TAG = "provenance"

#: the installed library's sources (their hash is part of every chapter's fingerprint)
_PACKAGE = Path(__file__).resolve().parents[1]


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
    env: dict[str, str] = field(default_factory=dict)  #: environment of the chapter's kernel


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
        return bool(json.loads(plan.stamp.read_text()).get("fingerprint") == plan.fingerprint)
    except (json.JSONDecodeError, OSError):
        return False


# ---------------------------------------------------------------------------------------------
# Planning: every check before anything runs
# ---------------------------------------------------------------------------------------------


def out_dir_for(profile: str, out: str | os.PathLike | None = None,
                notebooks_dir: str | os.PathLike | None = None) -> Path:
    """``<root>/_build/<profile>`` unless ``out`` is given."""
    return Path(out).resolve() if out else locate(notebooks_dir).build / profile


def _data_dir(chapter: str, given: Any, layout: BookLayout, required: bool) -> str:
    """The data directory a chapter gets: ``given``, else ``$LAYERWISE_DATA_DIR``; "" when none is
    given and the profile does not require one (never a folder guessed beside ``layout``'s root)."""
    try:
        if given:
            return str(resolve_data_dir(given))
        if os.environ.get(DATA_DIR_ENV):
            try:
                return str(resolve_data_dir(None))
            except LayerwiseError:
                if required:
                    raise
                return ""
        if required:
            raise LayerwiseError(f"no data directory: pass -p data_dir=DIR or set {DATA_DIR_ENV} to the folder "
                                 "holding corpus/ and benchmarks/ (`layerwise-book data fetch --data-dir DIR` "
                                 "downloads them)")
        return ""
    except LayerwiseError as e:
        raise LayerwiseError(f"chapter {chapter}: {e}") from None


def _benchmarks_dir(layout: BookLayout) -> str:
    if os.environ.get(BENCHMARKS_DIR_ENV):
        return os.environ[BENCHMARKS_DIR_ENV]
    return str(layout.benchmarks) if layout.benchmarks.is_dir() else ""


def plan_run(profile: str, *, chapters: Sequence[str] | None = None, overrides: Mapping[str, Any] | None = None,
             out: str | os.PathLike | None = None, notebooks_dir: str | os.PathLike | None = None,
             profiles_dir: str | os.PathLike | None = None, cache: str | os.PathLike | None = None) -> list[Plan]:
    """Validate every input and resolve every chapter's parameters, without running anything.

    Raises :class:`LayerwiseError` (one line, naming the fix) for a missing chapters folder, an
    unknown chapter or profile, a ``-p`` parameter that no selected chapter declares, a value of the
    wrong type for its parameter, or a data directory that does not exist.
    """
    layout = locate(notebooks_dir)
    known = discover_chapters(layout.notebooks)
    profiles_dir = Path(profiles_dir) if profiles_dir else layout.profiles
    sections = load_profile(profile, profiles_dir, list(known))
    selected = select_chapters(known, chapters)
    overrides = dict(overrides or {})
    library = library_fingerprint()
    outdir = out_dir_for(profile, out, layout.notebooks) / "notebooks"

    nbs = {ch: read_chapter(known[ch]) for ch in selected}
    declared = {ch: schema(nbs[ch], ch) for ch in selected}
    for key in overrides:
        if not any(key in d for d in declared.values()):
            where = "; ".join(f"{ch}: {', '.join(d)}" for ch, d in declared.items())
            raise LayerwiseError(f"-p {key}: no selected chapter declares a parameter {key!r} "
                                 f"(declared: {where})")

    cache_dir = str(resolve_cache_dir(cache))
    benchmarks = _benchmarks_dir(layout)
    plans = []
    for ch in selected:
        d = declared[ch]
        params, dropped = resolve_parameters(profile, sections, ch, d,
                                             {k: v for k, v in overrides.items() if k in d})
        params = validate(ch, d, params)
        # the kernel finds this book's chapters (chapter 10 runs others) wherever --out puts the notebooks
        env = {CACHE_DIR_ENV: cache_dir, NOTEBOOKS_ENV: str(layout.notebooks)}
        # artefacts are shared through the cache only: every chapter gets the same absolute cache dir
        if "cache_dir" in d:
            params["cache_dir"] = str(resolve_cache_dir(params.get("cache_dir") or cache_dir))
            env[CACHE_DIR_ENV] = params["cache_dir"]
        if "data_dir" in d:
            params["data_dir"] = _data_dir(ch, params.get("data_dir"), layout, bool(sections.get("requires_data")))
            if params["data_dir"]:
                env[DATA_DIR_ENV] = params["data_dir"]
        if benchmarks:
            env[BENCHMARKS_DIR_ENV] = benchmarks
        text = known[ch].read_text()
        plans.append(Plan(ch, known[ch], nbs[ch], params, fingerprint(text, params, library),
                          outdir / f"{ch}.ipynb", outdir / f"{ch}.stamp.json", dropped, env))
    return plans


def describe_plans(plans: Sequence[Plan], profile: str, *, force: bool = False, publish: bool = False,
                   build: bool = False) -> str:
    """What ``layerwise-book run --dry-run`` prints: each planned chapter, whether it would run or be
    skipped as unchanged, its resolved parameters and its output, then the steps that would follow."""
    lines = [f"dry run of profile {profile!r}: {len(plans)} chapter(s); nothing is executed"]
    for plan in plans:
        action = "run" if force or not is_up_to_date(plan) else "skip (unchanged since its last run)"
        lines.append(f"{plan.chapter}: would {action} -> {plan.output}")
        lines.append("  parameters: " + ", ".join(f"{k}={json.dumps(v, default=str)}"
                                                  for k, v in plan.parameters.items()))
        if plan.skipped_common:
            lines.append(f"  profile's common keys it does not declare (dropped): {', '.join(plan.skipped_common)}")
    est = plans_estimate(plans)
    if est is not None:
        lines.append(describe_estimate(est))
    if publish:
        lines.append("then: copy the notebooks to book/chapters/ and rewrite _toc.yml")
    if build:
        lines.append("then: build the site with jupyter-book")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


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


def banner_cell(profile: str, params: Mapping[str, Any], seconds: float, chapter: str) -> Any:
    """The markdown cell put at the top of every executed notebook (tagged so nbval skips it)."""
    import nbformat

    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = (f"> **Produced by the `{profile}` profile** with {_models_text(params)}, on "
            f"{device_text(params.get('device', 'auto'))}, {when} ({seconds:.0f} s), layerwise {__version__}. "
            f"Re-run: `python -m layerwise.book run --profile {profile} --chapters {chapter}`.")
    cell = nbformat.v4.new_markdown_cell(text)
    cell.metadata["tags"] = [BANNER_TAG, NBVAL_SKIP]
    return cell


def _prepare(nb: Any) -> Any:
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
    """Run one planned chapter with papermill; strip progress-bar output from the executed notebook
    (:func:`~layerwise.book.progress.strip_progress`), write the banner and the stamp. Returns seconds."""
    import nbformat
    import papermill as pm

    plan.output.parent.mkdir(parents=True, exist_ok=True)
    plan.stamp.unlink(missing_ok=True)  # a failed run must not look up to date
    kernel = kernel or plan.nb.metadata.get("kernelspec", {}).get("name", "python3")
    # figures inline even when the caller's environment sets a non-interactive backend (MPLBACKEND=Agg)
    # progress bars belong on the terminal (the runner's own), not in the executed notebook: tqdm reads
    # TQDM_DISABLE, transformers and huggingface_hub read HF_HUB_DISABLE_PROGRESS_BARS
    env = {"MPLBACKEND": "module://matplotlib_inline.backend_inline", "TQDM_DISABLE": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", **plan.env}
    t0 = time.perf_counter()
    with _env(**env):
        try:
            nb = pm.execute_notebook(_prepare(plan.nb), str(plan.output), parameters=plan.parameters,
                                     kernel_name=kernel, progress_bar=progress, cwd=str(plan.output.parent),
                                     log_output=False)
        except pm.PapermillExecutionError as e:
            strip_progress_file(plan.output)  # the traceback stays; bars go
            raise LayerwiseError(_failure_line(plan.chapter, e, plan.output)) from None
    seconds = time.perf_counter() - t0
    strip_progress(nb)  # a bar a library forced on despite the variables above
    nb.cells.insert(0, banner_cell(profile, plan.parameters, seconds, plan.chapter))
    nbformat.write(nb, str(plan.output))
    plan.stamp.write_text(json.dumps({
        "chapter": plan.chapter, "profile": profile, "fingerprint": plan.fingerprint,
        "parameters": plan.parameters, "seconds": round(seconds, 1),
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }, indent=1, default=str))
    return seconds


def run(profile: str, *, chapters: Sequence[str] | None = None, overrides: Mapping[str, Any] | None = None,
        out: str | os.PathLike | None = None, notebooks_dir: str | os.PathLike | None = None,
        profiles_dir: str | os.PathLike | None = None, cache: str | os.PathLike | None = None,
        force: bool = False, kernel: str | None = None, progress: bool = True) -> dict[str, str]:
    """Run the selected chapters of a profile in book order; returns ``{chapter: "ran"|"skipped"}``.

    Stops at the first failing chapter (later chapters read its artefacts from the cache).
    """
    from tqdm.auto import tqdm

    plans = plan_run(profile, chapters=chapters, overrides=overrides, out=out, notebooks_dir=notebooks_dir,
                     profiles_dir=profiles_dir, cache=cache)
    status: dict[str, str] = {}
    est = plans_estimate([p for p in plans if force or not is_up_to_date(p)])
    if est is not None:
        tqdm.write(one_line(est))
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
# nbval reference notebooks
# ---------------------------------------------------------------------------------------------

_PATH_PARAM = re.compile(r'^(cache_dir|data_dir) = .*$', re.M)


def refresh_reference(*, chapters: Sequence[str] | None = None, dest: str | os.PathLike | None = None,
                      notebooks_dir: str | os.PathLike | None = None, profiles_dir: str | os.PathLike | None = None,
                      out: str | os.PathLike | None = None, progress: bool = True,
                      run_first: bool = True) -> list[Path]:
    """Run the tiny profile (skipping unchanged chapters) and copy its notebooks to ``dest`` for nbval.

    ``dest`` defaults to ``<root>/tests/notebooks``. The injected ``cache_dir`` / ``data_dir`` are reset
    to ``""`` so that the reference notebooks re-execute on any machine (they resolve through
    ``$LAYERWISE_CACHE_DIR`` / ``$LAYERWISE_DATA_DIR``, which the tests' conftest sets).
    """
    import nbformat

    layout = locate(notebooks_dir)
    if run_first:
        run("tiny", chapters=chapters, notebooks_dir=layout.notebooks, profiles_dir=profiles_dir, out=out,
            progress=progress)
    selected = select_chapters(discover_chapters(layout.notebooks), chapters)
    target = Path(dest) if dest else layout.reference
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for ch in selected:
        nb = nbformat.read(str(out_dir_for("tiny", out, layout.notebooks) / "notebooks" / f"{ch}.ipynb"),
                           as_version=4)
        for c in nb.cells:
            if "injected-parameters" in c.metadata.get("tags", []):
                c.source = _PATH_PARAM.sub(lambda m: f'{m.group(1)} = ""', c.source)
        recorded = nb.metadata.get("papermill", {}).get("parameters", {})
        for key in ("cache_dir", "data_dir"):
            if key in recorded:
                recorded[key] = ""
        path = target / f"{ch}.ipynb"
        nbformat.write(nb, str(path))
        written.append(path)
    return written
