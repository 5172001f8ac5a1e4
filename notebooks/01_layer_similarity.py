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
# # Layer-wise similarity
#
# **Paper A's claim.** In a native diffusion LM (LLaDA-8B) consecutive layers change the hidden state
# less than in an autoregressive LM (Qwen2.5-7B): the cosine similarity between the hidden states
# before and after a block is higher, especially in the **early** layers. The AR-initialised diffusion
# model (Dream-7B) keeps an AR-like profile. Paper A uses this redundancy to skip 6 of 32 layers
# (18.75% of the FLOPs) with > 90% of the benchmark scores kept (chapter 3).
#
# **What we measure.** For a model with $L$ blocks, $h_0$ is the input of block 0 (the embeddings) and
# $h_{l+1}$ the raw output of block $l$ (taken by hooks on the blocks themselves:
# `output_hidden_states` would give the *normed* last state instead). For each held-out sequence $s$
# and block $l$,
#
# $$c_s(l) = \frac{1}{T}\sum_{t=1}^{T} \cos\big(h_l(s,t),\, h_{l+1}(s,t)\big),$$
#
# and the figure shows the mean of $c_s(l)$ over sequences with a band of $\pm$ one standard deviation
# over sequences. $1 - c(l)$ is ShortGPT's *block influence*. Diffusion models are also measured on
# inputs where a fraction of the tokens is replaced by the mask token (as they see them while
# generating; paper B does the same).
#
# **Summary numbers** (result file): the *early-layer similarity* of a model is the mean of $c_s(l)$
# over the first third of the blocks, $l < \lceil L/3 \rceil$ (`layerwise.claims.early_layers`, the
# book's one definition of early layers); we report DLM minus AR with a 95% bootstrap interval over
# sequences, and whether the AR-initialised model's profile is closer to the AR model's than to the
# DLM's (mean absolute difference over layers). The claims are computed by `layerwise.claims`
# (`early_similarity_difference`, `ar2dlm_closer_to_ar`).

# %% tags=["parameters"]
profile = "tiny"      # which profile file produced this run: tiny / gpu / paper
preset = "tiny"       # triplet preset trained or loaded when `models` is empty
models = []           # hub ids or local paths; [] = the controlled triplet (ar, dlm, ar2dlm)
data_dir = ""         # "" = $LAYERWISE_DATA_DIR (the runner passes its data directory)
cache_dir = ""        # "" = $LAYERWISE_CACHE_DIR (the runner passes its cache)
device = "auto"
seed = 0
n_seqs = 16           # held-out sequences per model
seq_len = 64          # tokens per sequence
batch_size = 8
mask_ratios = [0.0, 0.25, 0.5]   # diffusion models only; 0.0 = clean text
n_boot = 1000         # bootstrap resamples for the intervals
branch_runs = True    # with the triplet: also its trained extra ar2dlm branch runs (gpu: ar2dlm_b25), for A6
results_dir = ""      # "" = <cache>/results/<profile>

# %% tags=["provenance"]
from layerwise.book import provenance
from layerwise.params import coerce_injected

coerce_injected(globals(), "01_layer_similarity")  # values papermill injected as text get their parameters' types
provenance(profile=profile, models=models or ["ar", "dlm", "ar2dlm"], preset=preset, device=device, seed=seed,
           n_seqs=n_seqs, seq_len=seq_len)

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from layerwise import claims, plots
from layerwise.data import eval_sequences
from layerwise.probes import layer_similarity
from layerwise.results import save_result
from layerwise.subjects import load_subjects

plots.style()
subjects = load_subjects(models, preset, data_dir=data_dir, cache_dir=cache_dir, device=device, branch_runs=branch_runs)
source = preset if not models else "gutenberg"
# models with one tokenizer (the triplet) see the very same sequences: intervals are then paired
same_inputs = len({type(lm.tokenizer).__name__ + str(len(lm.tokenizer)) for lm in subjects.values()}) == 1
print({name: f"{lm.family.value}, {lm.num_layers} layers" for name, lm in subjects.items()})

# %% [markdown]
# ## Clean held-out text

# %%
sims = {}
for name, lm in subjects.items():
    ids = eval_sequences(lm.tokenizer, source, n_seqs, seq_len, data_dir=data_dir or None, seed=seed,
                         cache_dir=cache_dir or None)
    for ratio in (mask_ratios if lm.family.is_diffusion else [0.0]):
        sims[name, ratio] = layer_similarity(lm, ids, mask_ratio=ratio, batch_size=batch_size,
                                             generator=torch.Generator().manual_seed(seed), keep_per_sequence=True)

# block 0 turns embeddings into hidden states (cosine near 0): it gets its own panel and scale, so that
# the differences between models in blocks 1..L-1 are not flattened by it
fig, (ax0, ax) = plt.subplots(1, 2, figsize=(8.4, 3.6), gridspec_kw={"width_ratios": [1, 4]})
for k, name in enumerate(subjects):
    r = sims[name, 0.0]
    ax0.errorbar([k], r.mean[:1], yerr=r.std[:1], fmt="o", color=plots.model_color(name), capsize=3)
    plots.line_with_band(ax, np.arange(1, len(r.mean)), r.mean[1:], r.std[1:], label=name)
ax0.set_xticks(range(len(subjects)), list(subjects), rotation=45, ha="right")
ax0.set_xlim(-0.6, len(subjects) - 0.4)
ax0.set_ylabel(r"$\cos(h_0, h_1)$, mean over sequences")
ax0.set_title("block 0")
plots.label_layers(ax, ylabel=r"$\cos(h_l, h_{l+1})$, mean over sequences", xlabel="block $l$",
                   title="blocks 1 to L-1")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# *Figure 1: cosine similarity between the input and the raw output of each block, on clean held-out
# text, per model; line (right) or point (left) = mean over sequences, band or bar = ± one standard
# deviation over sequences. Higher = the block changes the hidden state less (more redundant). Block 0
# (left), whose input is the token embedding, has its own axis: on a shared axis its near-zero cosine
# would stretch the scale over the differences between models in the later blocks (right).*

# %% [markdown]
# ## Diffusion models on partly masked input

# %%
diff = [n for n, lm in subjects.items() if lm.family.is_diffusion]
fig, axes = plt.subplots(1, max(len(diff), 1), figsize=(4.2 * max(len(diff), 1), 3.6), squeeze=False, sharey=True)
for ax, name in zip(axes[0], diff):
    for k, ratio in enumerate(mask_ratios):
        r = sims[name, ratio]  # from block 1 on, as in Figure 1 (block 0 is in Table 1)
        plots.line_with_band(ax, np.arange(1, len(r.mean)), r.mean[1:], r.std[1:], label=f"{ratio:.0%} masked",
                             color=plt.cm.viridis(k / max(len(mask_ratios) - 1, 1)), linestyle="-")
    plots.label_layers(ax, ylabel=r"$\cos(h_l, h_{l+1})$", xlabel="block $l$", title=name)
    ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# *Figure 2: the same similarity for the diffusion models when a fraction of each sequence's tokens
# (uniformly chosen, seeded) is replaced by the mask token, blocks 1 to L-1 (block 0 is in Table 1);
# band = ± one standard deviation over sequences.*

# %%
# NBVAL_CHECK_OUTPUT
table = pd.concat([r.to_frame() for r in sims.values()], ignore_index=True)
display(Markdown(table.pivot_table(index="layer", columns=["model", "mask_ratio"], values="cos_mean")
                 .round(4).to_markdown()))

# %% [markdown]
# *Table 1: mean similarity per block (rows), model and mask ratio (columns).*
#
# ## Early layers: diffusion minus autoregressive

# %%
# NBVAL_CHECK_OUTPUT
metrics = claims.layer_similarity_metrics({name: sims[name, 0.0].per_sequence for name in subjects},
                                          {name: lm.family for name, lm in subjects.items()},
                                          paired=same_inputs, n_boot=n_boot, seed=seed)
print(claims.format_metrics(metrics))

# %% [markdown]
# *Early-layer similarity per model (`early_similarity_<model>`) and the differences the claims ledger
# reads (`early_similarity_dlm_minus_ar`; `ar2dlm_closer_to_ar`: the AR-initialised model's mean
# distance to the DLM profile minus its distance to the AR profile), with 95% percentile-bootstrap
# intervals over sequences (paired when the models read the same sequences). Each is also given
# without block 0 (`::without_block0`): block 0's input is the embedding, whose similarity to the
# first block's output can carry a difference alone. `early_minus_late_similarity_*`: each model's
# early-block minus late-block similarity (paper B: highest early for the DLM, late for AR); with an
# `ar2dlm_b25` run (branched at 25% of the budget), `ar2dlm_branch_dose`: how much more AR-like the
# 75% branch is.*

# %%
path = save_result(
    "01_layer_similarity", profile=profile, results_dir=results_dir or None, cache=cache_dir or None,
    models={n: lm.spec.model_id for n, lm in subjects.items()}, metrics=metrics,
    data={"profiles": table.to_dict(orient="records"), "n_seqs": n_seqs, "seq_len": seq_len})
print(f"wrote {path.name}")

# %% [markdown]
# ## What this chapter found
#
# Generated from the metrics above (`layerwise.findings.layer_similarity`); the verdicts are the claims
# ledger's.

# %%
from layerwise import findings

display(Markdown(findings.layer_similarity(metrics)))

# %% [markdown]
# ## Run it yourself
#
# On a GPU node with hub access, the paper's models (LLaDA-8B-Base, Dream-v0-Base-7B, Qwen2.5-7B,
# Llama-3.1-8B; settings in `notebooks/profiles/paper.yaml`):
#
# ```bash
# python -m layerwise.book run --profile paper --chapters 01_layer_similarity
# # or directly with papermill, after converting the py:percent source:
# jupytext --to ipynb notebooks/01_layer_similarity.py -o /tmp/01.ipynb
# papermill /tmp/01.ipynb 01_out.ipynb -p profile paper \
#   -p models '["GSAI-ML/LLaDA-8B-Base", "Dream-org/Dream-v0-Base-7B", "Qwen/Qwen2.5-7B"]' \
#   -p n_seqs 128 -p seq_len 1024 -p batch_size 8 -p device cuda
# ```
#
# On Colab: the *Open in Colab* link at the top of this chapter's page opens `book/colab/01_layer_similarity.ipynb`
# (this chapter with an install cell; set the parameters cell, then run all).
