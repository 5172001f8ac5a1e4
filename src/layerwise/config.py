"""Directories, devices and the project's error type.

Every path the library reads comes from here, so that a notebook parameter and an environment
variable resolve the same way everywhere. The library never looks for a repository checkout: a path
is an explicit argument, an environment variable, or (for the cache only) the user's cache folder.
The book runner (``layerwise.book``) fills these from the folder holding the chapters.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

DATA_DIR_ENV = "LAYERWISE_DATA_DIR"
DATA_MIRROR_ENV = "LAYERWISE_DATA_MIRROR"  #: folder or URL that `layerwise-book data fetch` tries first
#: the command that downloads and verifies the data directory's files (layerwise.data.fetch)
FETCH_HINT = "`layerwise-book data fetch --data-dir DIR` downloads and verifies them"
CACHE_DIR_ENV = "LAYERWISE_CACHE_DIR"
BENCHMARKS_DIR_ENV = "LAYERWISE_BENCHMARKS_DIR"  #: folder of the benchmark result tables (CSV, markdown)
DTYPE_ENV = "LAYERWISE_DTYPE"  #: overrides what "auto" means (e.g. bfloat16 on CPU, to smoke-test bf16 paths)


class LayerwiseError(ValueError):
    """Bad input to the library. The message always says how to fix it."""


#: what ``data_dir(must_exist=False)`` returns when no directory is given; passing it back to
#: :func:`data_dir` or :func:`data_file` counts as giving none (their error says how to give one)
NO_DATA_DIR = Path("/nonexistent/layerwise-data-dir-not-given")


def data_dir(path: str | os.PathLike | None = None, *, must_exist: bool = True) -> Path:
    """Resolve the offline data directory: the ``path`` argument, else ``$LAYERWISE_DATA_DIR``.

    With neither, raises :class:`LayerwiseError` when ``must_exist``, else returns :data:`NO_DATA_DIR`.
    """
    if path is not None and str(path) != "" and Path(path) != NO_DATA_DIR:
        p, origin = Path(path), "the data_dir parameter"
    elif os.environ.get(DATA_DIR_ENV):
        p, origin = Path(os.environ[DATA_DIR_ENV]), f"${DATA_DIR_ENV}"
    elif must_exist:
        raise LayerwiseError(f"no data directory given: pass data_dir=... or set {DATA_DIR_ENV} to the folder "
                             f"holding corpus/ and benchmarks/ ({FETCH_HINT})")
    else:
        return NO_DATA_DIR
    p = p.expanduser().resolve()
    if must_exist and not p.is_dir():
        raise LayerwiseError(
            f"data directory {p} (from {origin}) does not exist: pass data_dir=... or set "
            f"{DATA_DIR_ENV} to the folder holding corpus/ and benchmarks/ ({FETCH_HINT})"
        )
    return p


def data_file(relative: str, path: str | os.PathLike | None = None) -> Path:
    """A file inside the data directory, with an error naming the file, the variable and the fetch command."""
    root = data_dir(path)
    f = root / relative
    if not f.is_file():
        raise LayerwiseError(
            f"missing data file {f}: run `layerwise-book data fetch --data-dir {root}` (it downloads and verifies "
            f"the benchmark and corpus files), or point data_dir / ${DATA_DIR_ENV} at a folder that has {relative}"
        )
    return f


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/layerwise``, else ``~/.cache/layerwise``: the cache when none is given."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "layerwise"


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The artefact cache shared by chapters (checkpoints, token arrays, result files); created if missing.

    Order: explicit argument, ``$LAYERWISE_CACHE_DIR``, :func:`default_cache_dir` (the training CLI,
    the book runner and the chapters all resolve it this way, so they share checkpoints).
    """
    if path is not None and str(path) != "":
        p = Path(path)
    elif os.environ.get(CACHE_DIR_ENV):
        p = Path(os.environ[CACHE_DIR_ENV])
    else:
        p = default_cache_dir()
    p = p.expanduser().resolve()
    p.mkdir(parents=True, exist_ok=True)
    return p


def benchmarks_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder of benchmark result tables: explicit argument, else ``$LAYERWISE_BENCHMARKS_DIR``.

    The book runner sets the variable to ``benchmarks/results`` of the clone it runs from.
    """
    if path is not None and str(path) != "":
        p, origin = Path(path), "the argument"
    elif os.environ.get(BENCHMARKS_DIR_ENV):
        p, origin = Path(os.environ[BENCHMARKS_DIR_ENV]), f"${BENCHMARKS_DIR_ENV}"
    else:
        raise LayerwiseError(f"no benchmark results folder given: pass it (results_dir=...) or set "
                             f"{BENCHMARKS_DIR_ENV} (benchmarks/results in a clone of the repository)")
    p = p.expanduser().resolve()
    if not p.is_dir():
        raise LayerwiseError(f"benchmark results folder {p} (from {origin}) does not exist: pass the folder "
                             f"holding the benchmark CSVs or set {BENCHMARKS_DIR_ENV}")
    return p


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU; asking for CUDA without a GPU is an error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LayerwiseError(
            f"device={str(device)!r} asked for a GPU but none is visible to torch: "
            "use device='cpu' (or 'auto'), or run on a machine with CUDA"
        )
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``"auto"`` gives ``$LAYERWISE_DTYPE`` if set, else bfloat16 on CUDA and float32 on CPU."""
    if (dtype is None or dtype == "auto") and os.environ.get(DTYPE_ENV):
        dtype = os.environ[DTYPE_ENV]
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise LayerwiseError(f"unknown dtype {dtype!r}: use one of {sorted(table)} or 'auto'")
    return table[dtype]


#: set to 1 to see progress bars inside a notebook kernel anyway (an interactive session)
NOTEBOOK_PROGRESS_ENV = "LAYERWISE_NOTEBOOK_PROGRESS"

#: the variables that switch progress bars off in tqdm, huggingface_hub / transformers and datasets
PROGRESS_OFF_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}


def in_notebook() -> bool:
    """True inside a Jupyter kernel (papermill, nbval, JupyterLab): stream output lands in the notebook."""
    import sys

    if "ipykernel" not in sys.modules or "IPython" not in sys.modules:
        return False
    shell = sys.modules["IPython"].get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _notebook_progress_wanted() -> bool:
    return os.environ.get(NOTEBOOK_PROGRESS_ENV, "").lower() in ("1", "true", "yes")


def progress_disabled(disable: bool = False) -> bool:
    """True when a progress bar should stay off: asked by the caller, ``TQDM_DISABLE`` is set, or the code
    runs in a notebook kernel (bars belong on a terminal; ``$LAYERWISE_NOTEBOOK_PROGRESS=1`` shows them
    there anyway). tqdm itself honours ``TQDM_DISABLE`` only where a caller passes no ``disable``."""
    return (disable or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")
            or (in_notebook() and not _notebook_progress_wanted()))


def quiet_notebook_progress() -> bool:
    """In a notebook kernel, switch off every progress bar of the process; returns whether it did.

    Sets :data:`PROGRESS_OFF_ENV` (read by libraries imported later), calls the switches of
    huggingface_hub, transformers and datasets where they are already imported, and makes ``disable=True``
    the default of tqdm bars created from now on (what ``TQDM_DISABLE=1`` does when set before tqdm is
    imported; a caller that passes ``disable`` explicitly is not overridden, so the library's own bars
    ask :func:`progress_disabled`). Outside a kernel, or with ``$LAYERWISE_NOTEBOOK_PROGRESS=1``, does
    nothing. Called when this module is imported, so a chapter executed by papermill alone, without
    the runner's environment, still writes no bars into its notebook.
    """
    import sys

    if not in_notebook() or _notebook_progress_wanted():
        return False
    for k, v in PROGRESS_OFF_ENV.items():
        os.environ.setdefault(k, v)
    switches = (("huggingface_hub.utils", "disable_progress_bars"),
                ("transformers.utils.logging", "disable_progress_bar"), ("datasets", "disable_progress_bars"))
    for module, name in switches:
        if module in sys.modules:
            getattr(sys.modules[module], name, lambda: None)()
    from functools import partialmethod

    for module, name in (("tqdm.std", "tqdm"), ("tqdm.notebook", "tqdm_notebook")):
        cls = getattr(sys.modules.get(module), name, None)
        init = getattr(cls, "__dict__", {}).get("__init__")
        if isinstance(init, partialmethod):  # tqdm wraps __init__ with its TQDM_* variables read at import
            cls.__init__ = partialmethod(init.func, *init.args, **{**init.keywords, "disable": True})  # type: ignore[misc]
        elif callable(init):
            cls.__init__ = partialmethod(init, disable=True)  # type: ignore[misc]
    return True


def library_fingerprint() -> str:
    """Hash of the installed library's Python sources: a library change re-runs the chapters (the book's
    runner) and misses the stored evaluations of a resumed run (:mod:`layerwise.evals.cache`)."""
    import hashlib

    from . import __version__

    package = Path(__file__).resolve().parent
    h = hashlib.sha256(__version__.encode())
    for p in sorted(package.rglob("*.py")):
        h.update(p.relative_to(package).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


quiet_notebook_progress()
