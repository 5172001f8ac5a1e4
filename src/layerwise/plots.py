"""The book's figure style and model colours.

Figures are displayed inline by the notebooks (never saved from here): the executed notebook is the
artefact that jupyter-book renders. Colours are consistent across chapters: autoregressive models
share a blue hue family, diffusion models a red/orange one, so a reader can tell the objective of a
line before reading its legend.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.rcsetup import cycler

#: Autoregressive models: blues. Diffusion models: reds / oranges (ar2dlm is AR-initialised diffusion,
#: so it sits between, in orange).
MODEL_COLORS: dict[str, str] = {
    # the controlled triplet
    "ar": "#1f4e99",
    "dlm": "#c0392b",
    "ar2dlm": "#e67e22",
    # the papers' 7-8B models
    "Qwen/Qwen2.5-7B": "#2e86c1",
    "meta-llama/Llama-3.1-8B": "#154360",
    "GSAI-ML/LLaDA-8B-Base": "#a93226",
    "GSAI-ML/LLaDA-8B-Instruct": "#d35454",
    "Dream-org/Dream-v0-Base-7B": "#d68910",
    "Dream-org/Dream-v0-Instruct-7B": "#f0b27a",
}

#: Fallbacks for models not in :data:`MODEL_COLORS`, per family.
_AR_CYCLE = ["#5dade2", "#21618c", "#85c1e9", "#1b2631"]
_DIFF_CYCLE = ["#922b21", "#f1948a", "#ba4a00", "#f5b041"]
_OTHER_CYCLE = ["#117a65", "#7d3c98", "#566573", "#b7950b"]

_DIFFUSION_HINTS = ("dlm", "llada", "dream", "diffu", "mdlm", "masked")
_AR_HINTS = ("qwen", "llama", "gpt", "pythia", "mistral", "olmo", "smollm")


def _family_of(name: str) -> str:
    """``"diffusion"``, ``"ar"`` or ``"other"``, guessed from the model name (ids or triplet names)."""
    n = name.lower().rsplit("/", 1)[-1]
    if any(h in n for h in _DIFFUSION_HINTS):
        return "diffusion"
    if n == "ar" or n.startswith("ar-") or any(h in n for h in _AR_HINTS):
        return "ar"
    return "other"


def model_color(name: str) -> str:
    """The colour of a model in every figure of the book.

    Known names (the triplet ``ar`` / ``dlm`` / ``ar2dlm`` and the papers' hub ids, also by their
    last path component, e.g. ``"LLaDA-8B-Base"``) have fixed colours; other names get a stable colour
    from their family's palette (hash of the name), so a line keeps its colour across chapters.
    """
    if name in MODEL_COLORS:
        return MODEL_COLORS[name]
    short = {k.rsplit("/", 1)[-1].lower(): v for k, v in MODEL_COLORS.items()}
    base = name.rstrip("/").rsplit("/", 1)[-1].lower()
    if base in short:
        return short[base]
    cycle = {"ar": _AR_CYCLE, "diffusion": _DIFF_CYCLE}.get(_family_of(name), _OTHER_CYCLE)
    # a stable hash (Python's hash() is salted per process)
    h = sum((i + 1) * ord(c) for i, c in enumerate(base))
    return cycle[h % len(cycle)]


def model_linestyle(name: str) -> str:
    """Solid for AR models, dashed for diffusion models (readable in greyscale too)."""
    return "--" if _family_of(name) == "diffusion" else "-"


def style() -> None:
    """Apply the book's matplotlib style (call once per notebook, after imports).

    Inline figures at a readable size, no top/right spines, light grid, colour-blind-safe default
    cycle for anything that is not a model line.
    """
    mpl.rcParams.update({
        "figure.figsize": (6.4, 3.8),
        "figure.dpi": 110,
        "savefig.dpi": 150,
        "savefig.bbox": "tight",
        "font.size": 10,
        "axes.titlesize": 11,
        "axes.labelsize": 10,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "grid.linestyle": "-",
        "legend.frameon": False,
        "legend.fontsize": 9,
        "lines.linewidth": 1.8,
        "axes.prop_cycle": cycler(color=["#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                         "#E69F00", "#56B4E9", "#F0E442", "#000000"]),
    })


def line_with_band(ax: Axes, x: Sequence[float] | np.ndarray, mean: Sequence[float] | np.ndarray,
                   std: Sequence[float] | np.ndarray | None, label: str, color: str | None = None,
                   *, alpha: float = 0.2, linestyle: str | None = None, marker: str | None = "o",
                   **kwargs) -> Line2D:
    """Plot ``mean`` against ``x`` with a shaded band ``mean ± std`` (all 1-D, same length).

    ``color`` and ``linestyle`` default to the model's (see :func:`model_color`) when ``label`` is
    a model name. Returns the line, for legends.
    """
    x_a, m_a = np.asarray(x, dtype=float), np.asarray(mean, dtype=float)
    if x_a.shape != m_a.shape or x_a.ndim != 1:
        raise ValueError(f"x and mean must be 1-D of the same length, got {x_a.shape} and {m_a.shape}")
    color = color or model_color(label)
    linestyle = linestyle or model_linestyle(label)
    (line,) = ax.plot(x_a, m_a, label=label, color=color, linestyle=linestyle, marker=marker,
                      markersize=3, **kwargs)
    if std is not None:
        s_a = np.asarray(std, dtype=float)
        if s_a.shape != m_a.shape:
            raise ValueError(f"std must have the shape of mean {m_a.shape}, got {s_a.shape}")
        ax.fill_between(x_a, m_a - s_a, m_a + s_a, color=color, alpha=alpha, linewidth=0)
    return line


def label_layers(ax: Axes, *, ylabel: str, title: str | None = None, xlabel: str = "layer") -> None:
    """Axis labels for the book's many per-layer plots (integer layer ticks)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
    if title:
        ax.set_title(title)
