# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A dummy chapter
#
# Exercises the runner and the site build: parameters, a provenance cell, an artefact written to the
# cache directory, a figure, a table and an equation, $\cos(h_\ell, h_{\ell+1}) = \frac{h_\ell \cdot
# h_{\ell+1}}{\lVert h_\ell \rVert \lVert h_{\ell+1} \rVert}$.

# %% tags=["parameters"]
profile = "tiny"      # which profile file produced this run
preset = "tiny"
models = []
data_dir = ""
cache_dir = ""
device = "auto"
seed = 0
n_points = 5          # points on the dummy curve

# %% tags=["provenance"]
from layerwise.book import provenance
from layerwise.params import coerce_injected

coerce_injected(globals(), "99_dummy")  # values papermill injected as text get their parameters' types
provenance(profile=profile, models=models or ["ar", "dlm", "ar2dlm"], preset=preset, device=device)

# %%
import json

import matplotlib.pyplot as plt
import numpy as np

from layerwise import plots
from layerwise.config import cache_dir as resolve_cache_dir

plots.style()
rng = np.random.default_rng(seed)
x = np.arange(n_points)

# %% [markdown]
# The curve, with a band of one standard deviation.

# %%
fig, ax = plt.subplots()
for name in ["ar", "dlm", "ar2dlm"]:
    plots.line_with_band(ax, x, np.linspace(0.5, 1.0, n_points), np.full(n_points, 0.05), label=name)
plots.label_layers(ax, ylabel="cosine similarity", title="dummy curve")
ax.legend()
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
artefact = resolve_cache_dir(cache_dir) / "dummy" / f"{profile}.json"
artefact.parent.mkdir(parents=True, exist_ok=True)
artefact.write_text(json.dumps({"n_points": n_points, "sum": float(x.sum())}))
print(f"n_points = {n_points}, sum = {float(x.sum()):.3f}, mean = {x.mean() / 3:.6f}")
