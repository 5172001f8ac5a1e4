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
# # alpha-Hill: are the diffusion model's early layers over-trained?
#
# **Paper B's claim.** Heavy-tailed self-regularisation theory reads how well trained a weight
# matrix is from the power-law exponent $\alpha$ of its eigenvalue spectrum: trained layers have
# heavy tails (small $\alpha$, about 2-4), random ones a Marchenko-Pastur bulk (large $\alpha$).
# Paper B finds **$\alpha$-Hill very low in LLaDA-8B's early layers** (Fig. 4, averaged over the
# modules of each layer), unlike Llama-3.1-8B, and **lower for its diffusion-trained 160M model than
# for the matching AR model** (Fig. 6). It concludes that the early layers of diffusion LMs are
# over-trained, which is also where the super-outlier lives (chapter 04).
#
# **What we measure.** For every Linear weight $W$ of every block (q, k, v, o, gate, up, down):
# the eigenvalues $\lambda$ of $W^\top W$ (squared singular values) and AlphaPruning's Hill
# estimator over the tail above a cut-off $x_{\min}$,
#
# $$\hat\alpha = 1 + \frac{n}{\sum_{i=1}^{n} \ln(\lambda_i / x_{\min})},$$
#
# with the cut-off chosen two ways (`layerwise.spectra.fit_power_law`): `fixed`, the median
# eigenvalue (AlphaPruning's `xmin_mid`, the tail is the top half of the spectrum), and `ks`, the
# cut-off minimising the Kolmogorov-Smirnov distance between the tail and the fitted power law
# (WeightWatcher's choice). The per-layer value is the mean over the layer's modules, as in the
# paper; the comparison DLM minus AR over the early layers (the first $\lceil L/3 \rceil$ blocks,
# `layerwise.claims.early_layers`) gets a bootstrap interval over modules
# (`layerwise.claims.early_alpha_difference`).
# For the controlled triplet we also follow $\alpha$ over training, from the snapshots the
# pretraining chapter keeps (25/50/75/100% of the budget).

# %% tags=["parameters"]
profile = "tiny"      # which profile file produced this run: tiny / gpu / paper
preset = "tiny"       # triplet preset trained or loaded when `models` is empty
models = []           # hub ids or local paths; [] = the controlled triplet (ar, dlm, ar2dlm)
data_dir = ""         # "" = $LAYERWISE_DATA_DIR (the runner passes its data directory)
cache_dir = ""        # "" = $LAYERWISE_CACHE_DIR (the runner passes its cache)
device = "auto"
seed = 0
cpu_threads = 1             # torch threads on CPU: tiny models run fastest on one, on shared cores
methods = ["fixed", "ks"]   # cut-off rules computed; the first is the headline
fraction = 0.5              # `fixed`: share of the spectrum in the tail (0.5 = median xmin, AlphaPruning)
min_tail = 10               # `ks`: fewest eigenvalues a tail may keep
over_training = True        # alpha at each training snapshot of the triplet (ignored for hub models)
n_boot = 1000               # bootstrap resamples for the intervals

# %% tags=["provenance"]
from layerwise.book import provenance
from layerwise.params import coerce_injected

coerce_injected(globals(), "06_alpha_hill")  # values papermill injected as text get their parameters' types
provenance(profile=profile, models=models or ["ar", "dlm", "ar2dlm"], preset=preset, device=device, seed=seed)

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from layerwise import claims, plots
from layerwise.results import save_result
from layerwise.spectra import checkpoint_alpha_hill, model_alpha_hill
from layerwise.subjects import load_subjects

plots.style()
subjects = load_subjects(models, preset=preset, data_dir=data_dir or None, cache_dir=cache_dir or None,
                         device=device, cpu_threads=cpu_threads)
print({name: f"{lm.family.value}, {lm.num_layers} blocks" for name, lm in subjects.items()})

# %% [markdown]
# ## alpha-Hill of every weight matrix
#
# Each matrix is moved to the device in float64 on its own; the eigenvalues come from the smaller
# Gram matrix (`layerwise.spectra.eigenvalues`).

# %%
tables = []
for name, lm in subjects.items():
    for method in methods:
        t = model_alpha_hill(lm, method=method, fraction=fraction, min_tail=min_tail, device=device)
        tables.append(t.assign(model=name, family=lm.family.value, method=method, depth=lm.num_layers))
alphas = pd.concat(tables, ignore_index=True)
alphas["rel_depth"] = alphas.layer / (alphas.depth - 1).clip(lower=1)
alphas["early"] = claims.is_early_layer(alphas.layer, alphas.depth)

# %%
# NBVAL_CHECK_OUTPUT
print(alphas.pivot_table(index=["model", "method"], columns="role", values="alpha", aggfunc="mean").round(3)
      .to_string())

# %% [markdown]
# ## Across depth (paper B Fig. 4 and 6)

# %%
fig, axes = plt.subplots(1, len(methods), figsize=(5.2 * len(methods), 3.6), squeeze=False, sharey=False)
for ax, method in zip(axes[0], methods):
    for name in subjects:
        d = alphas[(alphas.model == name) & (alphas.method == method)]
        g = d.groupby("layer").alpha
        # band: the standard error of the block's mean (the spread over modules is the next figure)
        sem = (g.std() / np.sqrt(g.count())).fillna(0)
        plots.line_with_band(ax, g.mean().index, g.mean().values, sem.values, label=name)
    plots.label_layers(ax, ylabel=r"mean $\alpha$-Hill over modules (dimensionless)", title=f"cut-off: {method}",
                       xlabel="block")
axes[0, 0].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# **Figure.** alpha-Hill of each block, averaged over its seven Linear modules (line) with ± one
# standard error of that mean over the modules (band; the modules themselves are in the next figure),
# against the block index, for each model; left: the median-eigenvalue cut-off, right: the KS-chosen
# cut-off. Lower means a heavier-tailed spectrum ("more trained" in HT-SR terms).

# %%
head = methods[0]
roles = list(dict.fromkeys(alphas.role))
fig, axes = plt.subplots(1, len(subjects), figsize=(4.2 * len(subjects), 3.4), squeeze=False, sharey=True)
for ax, name in zip(axes[0], subjects):
    d = alphas[(alphas.model == name) & (alphas.method == head)]
    for role in roles:
        r = d[d.role == role].sort_values("layer")
        ax.plot(r.layer, r.alpha, marker="o", ms=3, lw=1.2, label=role)
    m = d.groupby("layer").alpha.mean()
    ax.plot(m.index, m.values, "k--", lw=2, label="mean")
    plots.label_layers(ax, ylabel=r"$\alpha$-Hill" if name == next(iter(subjects)) else "", title=name,
                       xlabel="block")
axes[0, -1].legend(fontsize=7, ncol=2)
fig.tight_layout()
plt.show()

# %% [markdown]
# **Figure.** alpha-Hill of each module (`fixed` cut-off unless `methods` says otherwise) against
# the block index, one panel per model; the dashed black line is the per-block mean of the figure
# above.

# %% [markdown]
# ## Early layers: diffusion minus autoregressive
#
# Early layers are the first $\lceil L/3 \rceil$ blocks. The interval resamples modules; for models of
# the same architecture (the triplet) the resampling is paired by (layer, role).

# %%
# NBVAL_CHECK_OUTPUT
summary = (alphas.groupby(["model", "family", "method"])
           .apply(lambda d: pd.Series({"early_layers": int(d[d.early].layer.max() + 1),
                                       "early_alpha": d[d.early].alpha.mean(),
                                       "late_alpha": d[~d.early].alpha.mean() if (~d.early).any() else np.nan,
                                       "all_alpha": d.alpha.mean()}), include_groups=False)
           .reset_index())
print(summary.round(3).to_string())

# %%
# NBVAL_CHECK_OUTPUT
per_method = {method: claims.alpha_hill_metrics(alphas, method=method, n_boot=n_boot, seed=seed) for method in methods}
ledger_metrics = per_method[head]
diffs = pd.concat([claims.metrics_table(m) for m in per_method.values()], ignore_index=True)
diffs = diffs.dropna(subset=["ci_low"]).astype({"n_modules": int, "paired": bool})  # the differences only
print(diffs.round(3).to_string())

# %% [markdown]
# ## Over training (controlled triplet)
#
# alpha-Hill of the early blocks at each snapshot the pretraining run kept. `ar2dlm` starts from an
# `ar` snapshot, so its curve begins where it branches off.

# %%
over = pd.DataFrame()
if over_training and not models:
    from layerwise.results import train_seed
    from layerwise.training import get_preset, run_dir

    seeded = get_preset(preset, seed=train_seed())  # the snapshots of the training seed this run analyses
    snaps = {}
    for name in subjects:
        d = run_dir(seeded, name, cache_dir or None) / "snapshots"
        found = {int(p.name.split("_")[1]): p for p in sorted(d.glob("step_*")) if p.is_dir()} if d.is_dir() else {}
        if found:
            snaps[name] = found
    frames = [checkpoint_alpha_hill(paths, method=head, fraction=fraction, min_tail=min_tail, device=device)
              .assign(model=name) for name, paths in snaps.items()]
    if frames:
        over = pd.concat(frames, ignore_index=True)
        depth = over.groupby("model").layer.transform("max") + 1
        over["early"] = claims.is_early_layer(over.layer, depth)
        curve = over.groupby(["model", "step", "early"]).alpha.mean().unstack("early")
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for name in snaps:
            c = curve.loc[name]
            ax.plot(c.index, c[True], marker="o", color=plots.model_color(name),
                    ls=plots.model_linestyle(name), label=f"{name}, early blocks")
            if False in c:
                ax.plot(c.index, c[False], marker=".", color=plots.model_color(name), ls=":", alpha=0.7,
                        label=f"{name}, later blocks")
        ax.set_xlabel("training step")
        ax.set_ylabel(rf"mean $\alpha$-Hill ({head})")
        ax.legend(fontsize=7)
        plt.show()
        display(Markdown("**Figure.** Mean alpha-Hill of the early blocks (solid/dashed) and of the "
                         "later blocks (dotted) at each training snapshot, per objective."))
    else:
        print("no training snapshots under the cache: train the triplet with the pretraining chapter first")

# %% [markdown]
# ## Result file
#
# Beside the headline cut-off rule, the ledger reads B3 under every rule computed (its pre-registered
# definitions: fixed and KS), and the over-training trend: the slope of each run's early alpha-Hill
# against log10(tokens per parameter) over its snapshots (paper B reads early collapse as
# overtraining), with an interval over the early modules.

# %%
# NBVAL_CHECK_OUTPUT
if len(over):
    from layerwise.training import get_preset

    tokens_per_step = get_preset(preset).batch_size * get_preset(preset).seq_len
    ledger_metrics = {**ledger_metrics, **claims.overtraining_metrics(
        over, {n: lm.family for n, lm in subjects.items()}, tokens_per_step=tokens_per_step,
        n_params={n: sum(p.numel() for p in lm.model.parameters()) for n, lm in subjects.items()},
        n_boot=n_boot, seed=seed)}
path = save_result(
    "06_alpha_hill", profile=profile, metrics=ledger_metrics,
    models={n: lm.spec.model_id for n, lm in subjects.items()},
    data={"per_matrix": alphas.drop(columns=["shape"]).to_dict(orient="records"),
          "summary": summary.to_dict(orient="records"), "differences": diffs.to_dict(orient="records"),
          "over_training": over.drop(columns=["shape"], errors="ignore").to_dict(orient="records"),
          "params": {"methods": methods, "fraction": fraction, "min_tail": min_tail, "n_boot": n_boot}},
    cache=cache_dir or None)
print(claims.format_metrics(ledger_metrics))

# %% [markdown]
# ## What this chapter found
#
# Generated from the metrics above (`layerwise.findings.alpha_hill`); the verdicts are the claims
# ledger's.

# %%
from layerwise import findings

display(Markdown(findings.alpha_hill(ledger_metrics)))

# %% [markdown]
# **Reading the numbers.** alpha-Hill is a property of the weights alone (no data), and for small
# matrices (the tiny triplet's are 64 wide) the estimate rests on a few dozen eigenvalues: the
# interval covers the spread over modules, not the estimator's own error, which for $n$ tail
# eigenvalues is about $(\alpha - 1)/\sqrt{n}$. The `ks` cut-off adapts to each spectrum and can
# pick a short tail: compare both rows before reading a difference as real.
#
# ## Run it yourself
#
# The tiny profile runs on a CPU in seconds once the tiny triplet is trained. The paper's models
# (about a minute on one GPU: 224 matrices, each one eigendecomposition of at most 4096 x 4096):
#
# ```bash
# python -m layerwise.book run --profile paper --chapters 06_alpha_hill
# # or directly:
# jupytext --to ipynb notebooks/06_alpha_hill.py -o /tmp/06.ipynb
# papermill /tmp/06.ipynb /tmp/06.out.ipynb -p profile paper -p device cuda \
#   -y '{"models": ["GSAI-ML/LLaDA-8B-Base", "meta-llama/Llama-3.1-8B"]}'
# ```
