"""The book's figure style and model colours."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from layerwise import plots  # noqa: E402


def _hue(color: str) -> float:
    return mcolors.rgb_to_hsv(mcolors.to_rgb(color))[0]


def _is_blue(color: str) -> bool:
    return 0.5 < _hue(color) < 0.72


def _is_warm(color: str) -> bool:
    h = _hue(color)
    return h < 0.12 or h > 0.95


@pytest.mark.parametrize("name", ["ar", "Qwen/Qwen2.5-7B", "meta-llama/Llama-3.1-8B", "Qwen2.5-7B",
                                  "some-org/pythia-160m", "my-gpt-model"])
def test_autoregressive_models_are_blue(name):
    assert _is_blue(plots.model_color(name)), (name, plots.model_color(name))
    assert plots.model_linestyle(name) == "-"


@pytest.mark.parametrize("name", ["dlm", "ar2dlm", "GSAI-ML/LLaDA-8B-Base", "Dream-org/Dream-v0-Base-7B",
                                  "LLaDA-8B-Instruct", "someone/my-mdlm"])
def test_diffusion_models_are_warm(name):
    assert _is_warm(plots.model_color(name)), (name, plots.model_color(name))
    assert plots.model_linestyle(name) == "--"


def test_colours_are_distinct_and_stable():
    known = list(plots.MODEL_COLORS.values())
    assert len(set(known)) == len(known)
    assert plots.model_color("GSAI-ML/LLaDA-8B-Base") == plots.model_color("LLaDA-8B-Base")
    assert plots.model_color("org/unknown-llama-x") == plots.model_color("org/unknown-llama-x")


def test_line_with_band_draws_mean_and_band():
    plots.style()
    fig, ax = plt.subplots()
    x, mean, std = np.arange(4), np.array([0.5, 0.6, 0.7, 0.8]), np.full(4, 0.1)
    line = plots.line_with_band(ax, x, mean, std, label="dlm")
    np.testing.assert_allclose(line.get_ydata(), mean)
    assert line.get_color() == plots.model_color("dlm") and line.get_linestyle() == "--"
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    np.testing.assert_allclose([band.min(), band.max()], [0.4, 0.9])
    with pytest.raises(ValueError, match="std must have the shape"):
        plots.line_with_band(ax, x, mean, std[:3], label="ar")
    plt.close(fig)
