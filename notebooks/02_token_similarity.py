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
# # Token-wise similarity and recency bias
#
# **Paper A's claim.** An autoregressive LM builds each token's representation mostly from its recent
# left context ("recency bias"), so representations of nearby tokens are much more alike than those of
# distant tokens. A native diffusion LM (LLaDA-8B), trained to denoise the whole sequence, has more
# global representations: similarity decays less with distance. Dream-7B, initialised from an AR model,
# keeps an AR-like pattern. **Paper B (Fig. 3)** shows the per-token cosine between consecutive layers
# as distributions: in LLaDA's early layers nearly every token has $\cos(h_l, h_{l+1})$ close to 1.
#
# **Definitions.** $h_s(i)$ is the hidden state of token $i$ at state $s$ ($s = 0$: embeddings,
# $s = l+1$: raw output of block $l$). To remove the component every token shares (massive
# activations make *all* raw cosines close to 1), each sequence's mean hidden state is subtracted:
# $\tilde h_s(i) = h_s(i) - \frac{1}{T}\sum_j h_s(j)$. For distance $d = 1..D$,
#
# $$\mathrm{sim}_s(d) = \operatorname{mean}_{\text{seq},\ i \ge d} \cos\big(\tilde h_s(i), \tilde h_s(i-d)\big).$$
#
# **Recency measure** (the number in the result file): the near-minus-far gap
#
# $$R_s = \mathrm{sim}_s(1) - \operatorname{mean}_{d = \lceil D/2 \rceil}^{D} \mathrm{sim}_s(d),$$
#
# computed per sequence and averaged. A large $R_s$ means adjacent tokens are much more alike than
# far-apart ones (recency bias); $R_s \approx 0$ means similarity does not depend on distance. A
# model's recency is the mean of $R_s$ over the block outputs $s = 1..L$; we report DLM minus AR with a
# 95% bootstrap interval over sequences (paper A: < 0).

# %% tags=["parameters"]
profile = "tiny"      # which profile file produced this run: tiny / gpu / paper
preset = "tiny"       # triplet preset trained or loaded when `models` is empty
models = []           # hub ids or local paths; [] = the controlled triplet (ar, dlm, ar2dlm)
data_dir = ""         # "" = $LAYERWISE_DATA_DIR (the runner passes its data directory)
cache_dir = ""        # "" = $LAYERWISE_CACHE_DIR (the runner passes its cache)
device = "auto"
seed = 0
n_seqs = 16           # held-out sequences per model
seq_len = 64          # tokens per sequence (> max_distance)
max_distance = 16     # D: largest token distance
batch_size = 8
mask_ratio = 0.0      # diffusion models: fraction of tokens replaced by the mask token (paper B Fig. 3 masks)
bins = 100            # histogram bins of per-token cosines over [-1, 1]
n_boot = 1000
results_dir = ""      # "" = <cache>/results/<profile>

# %% tags=["provenance"]
from layerwise.book import provenance
from layerwise.params import coerce_injected

coerce_injected(globals(), "02_token_similarity")  # values papermill injected as text get their parameters' types
provenance(profile=profile, models=models or ["ar", "dlm", "ar2dlm"], preset=preset, device=device, seed=seed,
           n_seqs=n_seqs, seq_len=seq_len, max_distance=max_distance)

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from layerwise import claims, plots
from layerwise.data import eval_sequences
from layerwise.probes import token_similarity
from layerwise.results import save_result
from layerwise.subjects import load_subjects

plots.style()
subjects = load_subjects(models, preset, data_dir=data_dir, cache_dir=cache_dir, device=device)
source = preset if not models else "gutenberg"
same_inputs = len({type(lm.tokenizer).__name__ + str(len(lm.tokenizer)) for lm in subjects.values()}) == 1

res = {}
for name, lm in subjects.items():
    ids = eval_sequences(lm.tokenizer, source, n_seqs, seq_len, data_dir=data_dir or None, seed=seed,
                         cache_dir=cache_dir or None)
    res[name] = token_similarity(lm, ids, max_distance=max_distance, batch_size=batch_size, bins=bins,
                                 mask_ratio=mask_ratio if lm.family.is_diffusion else 0.0,
                                 generator=torch.Generator().manual_seed(seed), keep_per_sequence=True)

# %% [markdown]
# ## Similarity against token distance

# %%
names = list(res)
fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False, sharey=True)
d = np.arange(1, max_distance + 1)
for ax, name in zip(axes[0], names):
    r = res[name]
    S = r.sim_centered.shape[0]
    for s in range(1, S):
        ax.plot(d, r.sim_centered[s], color=plt.cm.viridis((s - 1) / max(S - 2, 1)), lw=1.2)
    ax.set_xscale("log")
    ax.set_xlabel("token distance $d$")
    ax.set_title(name)
axes[0, 0].set_ylabel(r"$\mathrm{sim}_s(d)$ (centred cosine)")
sm = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(1, S - 1))
fig.colorbar(sm, ax=axes[0].tolist(), label="state $s$ (block output)")
plt.show()

# %% [markdown]
# *Figure 1: mean cosine between (sequence-centred) token representations $d$ tokens apart, against $d$
# (log scale), one line per block output, coloured from the first (dark) to the last block (yellow).
# Steep curves = recency bias.*

# %%
fig, ax = plt.subplots()
for name, r in res.items():
    plots.line_with_band(ax, np.arange(1, len(r.recency)), r.recency[1:], r.recency_std[1:], label=name)
plots.label_layers(ax, ylabel=r"recency $R_s = \mathrm{sim}(1) - \mathrm{mean}_{far}\,\mathrm{sim}(d)$",
                   xlabel="state $s$ (output of block $s-1$)")
ax.legend()
plt.show()

# %% [markdown]
# *Figure 2: the recency measure per block output; line = mean over sequences, band = ± one standard
# deviation over sequences. Higher = stronger recency bias.*

# %% [markdown]
# ## Per-token cosine between consecutive layers (paper B Fig. 3)

# %%
from matplotlib.colors import LogNorm


def lowest_edge(r, share=0.005):
    """The lowest bin edge above which every block from 1 on keeps all but ``share`` of its tokens."""
    h = r.cos_hist[1:]
    if not len(h):
        return r.bin_edges[0]
    cdf = np.cumsum(h, 1) / np.maximum(h.sum(1, keepdims=True), 1)
    return r.bin_edges[int((cdf > share).argmax(1).min())]


# the mass sits near cos = 1: the axis starts where the blocks from 1 on have all but 0.5% of their
# tokens, and the colour scale is logarithmic so that the tails show
y_low = min(lowest_edge(r) for r in res.values())
y_low = max(r.bin_edges[0], y_low - 0.1 * (1 - y_low))
fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False, sharey=True)
for ax, name in zip(axes[0], names):
    r = res[name]
    dens = r.cos_hist / np.maximum(r.cos_hist.sum(1, keepdims=True), 1)
    im = ax.imshow(np.ma.masked_less_equal(dens.T, 0), origin="lower", aspect="auto", cmap="magma",
                   norm=LogNorm(vmin=1e-4, vmax=1), interpolation="nearest",
                   extent=[-0.5, dens.shape[0] - 0.5, r.bin_edges[0], r.bin_edges[-1]])
    ax.set_facecolor("black")
    ax.set_ylim(y_low, r.bin_edges[-1])
    block0 = r.cos_quantiles((0.5,))[0, 0]
    if block0 < y_low:
        ax.annotate(f"block 0: median {block0:.2f}\n(below the axis)", (0, y_low), xytext=(2, 4),
                    textcoords="offset points", color="white", fontsize=7, va="bottom")
    ax.set_xlabel("block $l$")
    ax.set_title(name)
axes[0, 0].set_ylabel(r"per-token $\cos(h_l, h_{l+1})$")
fig.colorbar(im, ax=axes[0].tolist(), label="share of the block's tokens per bin (log)")
plt.show()

# %% [markdown]
# *Figure 3: distribution over tokens of the cosine between a token's hidden state before and after
# each block (columns = blocks, colour = share of the block's tokens in each cosine bin, on a log
# scale from $10^{-4}$; black = no token). The vertical axis starts just below where the blocks from 1
# on keep all but 0.5% of their tokens, since nearly all the mass lies close to 1; block 0 (whose input
# is the embedding, cosine near 0) is then below the axis, and Table 1 gives its median.*

# %%
# NBVAL_CHECK_OUTPUT
q = pd.concat([pd.DataFrame(r.cos_quantiles((0.1, 0.5, 0.9)), columns=["q10", "median", "q90"])
               .assign(model=n, block=np.arange(r.cos_hist.shape[0])) for n, r in res.items()])
display(Markdown(q.pivot_table(index="block", columns="model", values="median").round(4).to_markdown()))

# %% [markdown]
# *Table 1: median per-token cosine between consecutive layers, per block and model.*
#
# ## Recency per model

# %%
# NBVAL_CHECK_OUTPUT
metrics = claims.token_similarity_metrics({name: r.per_sequence_recency for name, r in res.items()},
                                          {name: lm.family for name, lm in subjects.items()},
                                          paired=same_inputs, n_boot=n_boot, seed=seed)
print(claims.format_metrics(metrics))

# %% [markdown]
# *The recency measure per model (`recency_<model>`: the mean over block outputs of the per-sequence
# near-minus-far gap, `layerwise.claims.model_recency`) and the DLM-minus-AR difference the claims
# ledger reads (`recency_dlm_minus_ar`, `layerwise.claims.recency_difference`), with 95%
# percentile-bootstrap intervals over sequences.*

# %%
path = save_result(
    "02_token_similarity", profile=profile, results_dir=results_dir or None, cache=cache_dir or None,
    models={n: lm.spec.model_id for n, lm in subjects.items()}, metrics=metrics,
    data={"similarity": pd.concat([r.to_frame() for r in res.values()]).to_dict(orient="records"),
          "recency": pd.concat([r.recency_frame() for r in res.values()]).to_dict(orient="records"),
          "cos_quantiles": q.to_dict(orient="records"), "max_distance": max_distance, "mask_ratio": mask_ratio})
print(f"wrote {path.name}")

# %% [markdown]
# ## What this chapter found
#
# Generated from the metrics above (`layerwise.findings.token_similarity`); the verdicts are the claims
# ledger's.

# %%
from layerwise import findings

display(Markdown(findings.token_similarity(metrics)))

# %% [markdown]
# ## Run it yourself
#
# On a GPU node with hub access (settings in `notebooks/profiles/paper.yaml`):
#
# ```bash
# python -m layerwise.book run --profile paper --chapters 02_token_similarity
# # or with papermill directly:
# jupytext --to ipynb notebooks/02_token_similarity.py -o /tmp/02.ipynb
# papermill /tmp/02.ipynb 02_out.ipynb -p profile paper \
#   -p models '["GSAI-ML/LLaDA-8B-Base", "Dream-org/Dream-v0-Base-7B", "Qwen/Qwen2.5-7B"]' \
#   -p n_seqs 128 -p seq_len 1024 -p max_distance 256 -p device cuda
# ```
#
# On Colab: the *Open in Colab* link at the top of this chapter's page opens `book/colab/02_token_similarity.ipynb`
# (this chapter with an install cell; set the parameters cell, then run all).
