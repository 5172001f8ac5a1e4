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
# # The super-outlier
#
# **Paper B's claim.** In LLaDA-8B the attention input of the early blocks (the normed hidden state
# that enters q/k/v, "QKV input") is dominated by **one channel**, orders of magnitude larger than
# the rest, the same channel in every early block and at every token position (Fig. 1-2); it stays
# there at every denoising step of a diffusion generation (appendix B.3). Llama-3.1-8B has massive
# activations too, but not this collapse of the early layers around a single channel.
#
# **What we measure.** On held-out text, per block and per channel, the mean $|x|$ and max $|x|$ over
# all tokens at the attention input and in the residual stream (`layerwise.probes.channel_stats`,
# streamed on the device: memory is layers x channels, not tokens). From these:
#
# - the **top-5 channels** of each block and the **dominant channel** (largest max $|x|$);
# - the **super-outlier**: the dominant channel overall, and in how many blocks it is the dominant one;
# - the **outlier ratio** of a block: max $|x|$ of its dominant channel over that of its median
#   channel; its $\log_{10}$, averaged over the early blocks (the first $\lceil L/3 \rceil$,
#   `layerwise.claims.early_layers`), is the number the claims ledger compares (diffusion minus AR, with
#   a bootstrap interval over groups of sequences: `layerwise.claims.early_outlier_ratio_difference`);
# - the **token share**: the fraction of tokens whose largest channel is the super-outlier (is it the
#   same channel at every position?);
# - for the diffusion models, the same statistics at **every denoising step** of a generation
#   (`layerwise.probes.record_channels` around `layerwise.sampling.diffusion_generate`).

# %% tags=["parameters"]
profile = "tiny"      # which profile file produced this run: tiny / gpu / paper
preset = "tiny"       # triplet preset trained or loaded when `models` is empty
models = []           # hub ids or local paths; [] = the controlled triplet (ar, dlm, ar2dlm)
data_dir = ""         # "" = $LAYERWISE_DATA_DIR (the runner passes its data directory)
cache_dir = ""        # "" = $LAYERWISE_CACHE_DIR (the runner passes its cache)
device = "auto"
seed = 0
cpu_threads = 1             # torch threads on CPU: tiny models run fastest on one, on shared cores
n_seqs = 16                 # held-out sequences for the channel statistics
seq_len = 128
batch_size = 8
n_groups = 8                # sequences are split into this many groups for the intervals
top_k = 5                   # channels shown per block (paper B Fig. 1-2: top 5)
gen_prompts = 2             # diffusion generations recorded step by step (appendix B.3)
prompt_len = 32             # prompt tokens taken from held-out text
gen_length = 32             # tokens generated (the sampler's gen_length)
diffusion_steps = 32        # denoising steps (one token per step at gen_length = steps)
block_length = 32           # the sampler's block length (a divisor of gen_length)
n_boot = 1000               # bootstrap resamples for the intervals

# %% tags=["provenance"]
from layerwise.book import provenance
from layerwise.params import coerce_injected

coerce_injected(globals(), "04_super_outlier")  # values papermill injected as text get their parameters' types
provenance(profile=profile, models=models or ["ar", "dlm", "ar2dlm"], preset=preset, device=device, seed=seed)

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from layerwise import claims, plots
from layerwise.data import eval_sequences
from layerwise.probes import channel_stats, record_channels
from layerwise.results import save_result
from layerwise.sampling import diffusion_generate
from layerwise.subjects import load_subjects

plots.style()
subjects = load_subjects(models, preset=preset, data_dir=data_dir or None, cache_dir=cache_dir or None,
                         device=device, cpu_threads=cpu_threads)
print({name: f"{lm.family.value}, {lm.num_layers} blocks" for name, lm in subjects.items()})

# %% [markdown]
# ## Channel statistics on held-out text
#
# One streamed pass per model over all sequences (for the figures), and one per group of sequences
# (for the intervals).

# %%
stats, groups, inputs = {}, {}, {}
for name, lm in subjects.items():
    ids = eval_sequences(lm.tokenizer, preset, n_seqs, seq_len, data_dir=data_dir or None,
                         cache_dir=cache_dir or None, seed=seed)
    inputs[name] = ids
    stats[name] = channel_stats(lm, ids, where=("attn_input", "residual"), batch_size=batch_size)
    groups[name] = [channel_stats(lm, ids[g::n_groups], where="attn_input", batch_size=batch_size)["attn_input"]
                    for g in range(min(n_groups, n_seqs))]
summary = pd.DataFrame([{"model": name, "family": subjects[name].family.value, **st[w].summary()}
                        for name, st in stats.items() for w in ("attn_input", "residual")])
display(summary.drop(columns=["layers_dominated"]).round(3))

# %% [markdown]
# ## Top channels across depth (paper B Fig. 1-2)

# %%
fig, axes = plt.subplots(1, len(subjects), figsize=(4.3 * len(subjects), 3.6), squeeze=False, sharey=True)
for ax, name in zip(axes[0], subjects):
    s = stats[name]["attn_input"]
    L = s.num_layers
    top = np.argsort(-s.max_abs, axis=1)[:, :top_k]  # [L, k] channels by max |x|
    for r in range(top_k):
        ax.plot(np.arange(L), s.max_abs[np.arange(L), top[:, r]], marker="o", ms=4, lw=1,
                alpha=1.0 if r == 0 else 0.6, label=f"rank {r + 1}")
    ax.plot(np.arange(L), np.median(s.max_abs, 1), "k:", label="median channel")
    for layer in range(L):
        ax.annotate(str(top[layer, 0]), (layer, s.max_abs[layer, top[layer, 0]]), textcoords="offset points",
                    xytext=(0, 5), ha="center", fontsize=7)
    ax.set_yscale("log")
    plots.label_layers(ax, ylabel="max |x| at the attention input" if ax is axes[0, 0] else "",
                       title=f"{name} (super-outlier: channel {s.super_outlier})")
axes[0, -1].legend(fontsize=7)
fig.tight_layout()
plt.show()

# %% [markdown]
# **Figure.** The largest max $|x|$ over held-out tokens at the attention input of each block (rank 1
# to 5 by magnitude; log scale) and the median channel's (dotted), per model. The number above each
# block is the index of its dominant channel: one index repeated across blocks is the super-outlier.

# %%
fig, axes = plt.subplots(1, len(subjects), figsize=(4.3 * len(subjects), 3.4), squeeze=False, sharey=True)
for ax, name in zip(axes[0], subjects):
    s = stats[name]["attn_input"]
    L, d = s.mean_abs.shape
    for layer in range(L):
        ax.scatter(np.full(d, layer), s.mean_abs[layer], s=7, facecolors="none", edgecolors="black",
                   linewidths=0.3, alpha=0.6, rasterized=True)
    ax.plot(np.arange(L), s.mean_abs[:, s.super_outlier], "o", color=plots.model_color(name),
            label=f"channel {s.super_outlier}")
    ax.plot(np.arange(L), np.median(s.mean_abs, 1), "_", color="red", ms=14, mew=2, label="median")
    ax.set_yscale("log")
    plots.label_layers(ax, ylabel="mean |x| at the attention input" if ax is axes[0, 0] else "", title=name)
    ax.legend(fontsize=7)
fig.tight_layout()
plt.show()

# %% [markdown]
# **Figure.** Every channel's mean $|x|$ at the attention input of each block (open circles; log
# scale), the super-outlier channel highlighted, and the median channel (red bar).

# %% [markdown]
# ## How dominant, and at how many positions

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
for name in subjects:
    s = stats[name]["attn_input"]
    L = s.num_layers
    x = np.arange(L)
    per_group = np.stack([g.outlier_ratio for g in groups[name]])  # [groups, L]
    lo, hi = np.quantile(per_group, [0.1, 0.9], axis=0)
    c, ls = plots.model_color(name), plots.model_linestyle(name)
    ax1.plot(x, s.outlier_ratio, marker="o", color=c, ls=ls, label=name)
    ax1.fill_between(x, lo, hi, color=c, alpha=0.15, lw=0)
    ax2.plot(x, s.token_share, marker="o", color=c, ls=ls, label=name)
ax1.set_yscale("log")
plots.label_layers(ax1, ylabel="outlier ratio (dominant / median max |x|)")
plots.label_layers(ax2, ylabel="share of tokens whose top channel\nis the super-outlier")
ax2.set_ylim(-0.02, 1.02)
ax1.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# **Figure.** Left: the outlier ratio of each block (max $|x|$ of its dominant channel over the
# median channel's; log scale) on all sequences, with the 10-90% range over groups of sequences
# (band). Right: the fraction of held-out tokens whose largest-magnitude channel at the attention
# input is the model's super-outlier; 1 means the same channel dominates at every position.

# %%
# NBVAL_CHECK_OUTPUT
per_layer = pd.concat([stats[n][w].to_frame() for n in subjects for w in ("attn_input", "residual")],
                      ignore_index=True)
print(per_layer[per_layer["where"] == "attn_input"]
      .drop(columns=["where", "top5_mean_abs"]).round(3).reset_index(drop=True).to_string())

# %% [markdown]
# ## Along a diffusion generation (paper B appendix B.3)
#
# The diffusion models generate `gen_length` tokens after a held-out prompt while the recorder keeps
# each denoising step's per-channel mean $|x|$ at the attention input. We follow the super-outlier
# found on held-out text and the median channel.

# %%
steps_rows, traces, per_step = [], {}, {}  # per_step: the ledger's persistence (B7)
for name, lm in subjects.items():
    if not lm.family.is_diffusion:
        continue
    prompt = inputs[name][:gen_prompts, :prompt_len].to(lm.device)
    with record_channels(lm, "attn_input") as rec:
        diffusion_generate(lm, prompt, gen_length=gen_length, steps=diffusion_steps, block_length=block_length)
    mean_abs, max_abs = rec.stacked()  # [steps, L, d]
    so = stats[name]["attn_input"].super_outlier
    traces[name] = (mean_abs, so)
    per_step[name] = {"max_abs": max_abs, "mean_abs": mean_abs}
    dominant = max_abs.argmax(-1)  # [steps, L]
    for layer in range(lm.num_layers):
        steps_rows.append({"model": name, "layer": layer, "steps": mean_abs.shape[0],
                           "share_of_steps_dominated": float((dominant[:, layer] == so).mean()),
                           "outlier_mean_abs_min": float(mean_abs[:, layer, so].min()),
                           "outlier_mean_abs_max": float(mean_abs[:, layer, so].max()),
                           "median_channel_mean_abs": float(np.median(mean_abs[:, layer, :]))})
steps_table = pd.DataFrame(steps_rows)

if traces:
    from matplotlib.lines import Line2D

    # each model follows its own super-outlier channel: the channel is named in each panel's title
    fig, axes = plt.subplots(1, len(traces), figsize=(4.8 * len(traces) + 1.2, 3.5), squeeze=False, sharey=True)
    n_blocks = max(m.shape[1] for m, _ in traces.values())
    cmap = plt.get_cmap("viridis", n_blocks)
    for ax, (name, (mean_abs, so)) in zip(axes[0], traces.items()):
        steps = np.arange(1, mean_abs.shape[0] + 1)
        for layer in range(mean_abs.shape[1]):
            ax.plot(steps, mean_abs[:, layer, so], color=cmap(layer))
            ax.plot(steps, np.median(mean_abs[:, layer, :], -1), color=cmap(layer), ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("denoising step")
        ax.set_title(f"{name}: super-outlier channel {so}")
    axes[0, 0].set_ylabel("mean |x| at the attention input")
    axes[0, 0].legend([Line2D([], [], color="grey"), Line2D([], [], color="grey", ls=":", lw=1)],
                      ["super-outlier channel", "median channel"], fontsize=7)
    fig.colorbar(plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(-0.5, n_blocks - 0.5)),
                 ax=axes[0].tolist(), label="block", ticks=range(n_blocks))
    plt.show()
    display(Markdown("**Figure.** Mean $|x|$ at the attention input of each block (colour) at every denoising "
                     "step, for each diffusion model's own super-outlier channel (solid; the channel found on "
                     "held-out text, named in the panel's title) and for the median channel (dotted); log "
                     f"scale. {gen_prompts} generations of {gen_length} tokens in {diffusion_steps} steps."))
    display(steps_table.round(3))

# %% [markdown]
# ## Result file
#
# The ledger number: the mean over the early blocks of $\log_{10}$(outlier ratio), diffusion model
# minus AR model. The interval resamples groups of sequences (paired when the models read the same
# token ids, i.e. share a tokenizer). The ledger checks two pre-registered definitions, the ratio at
# the attention input (the headline, what paper B plots) and on the residual stream, and the diffusion
# model's own early ratio beside the difference. From the generation above it also reads how
# persistent the super-outlier is: the share of (denoising step, early block) pairs at which it is the
# channel with the largest max $|x|$ (headline, as the super-outlier is found) or mean $|x|$ (as
# paper B's appendix B.3 plots it).

# %%
# NBVAL_CHECK_OUTPUT
def same_inputs(a: str, b: str) -> bool:
    """Did models ``a`` and ``b`` read the same token ids (then the interval is paired)?"""
    return bool(inputs[a].shape == inputs[b].shape and (inputs[a] == inputs[b]).all())


# the same groups read on the residual stream: the ledger's alternative definition of the outlier ratio
residual_groups = {n: np.stack([channel_stats(lm, inputs[n][g::n_groups], where="residual",
                                              batch_size=batch_size)["residual"].outlier_ratio
                                for g in range(min(n_groups, n_seqs))]) for n, lm in subjects.items()}
ledger_metrics = {**claims.super_outlier_metrics(
    {n: stats[n]["attn_input"] for n in subjects},
    {n: np.stack([g.outlier_ratio for g in groups[n]]) for n in subjects},  # [groups, L] per model
    {n: lm.family for n, lm in subjects.items()}, paired=same_inputs, n_boot=n_boot, seed=seed,
    residual_ratios=residual_groups),
    # persistence over the denoising steps recorded above (diffusion models)
    **claims.outlier_persistence_metrics(per_step, {n: so for n, (_, so) in traces.items()},
                                         {n: lm.family for n, lm in subjects.items()}, n_boot=n_boot, seed=seed)}
path = save_result(
    "04_super_outlier", profile=profile, metrics=ledger_metrics,
    models={n: lm.spec.model_id for n, lm in subjects.items()},
    data={"summary": summary.to_dict(orient="records"), "per_layer": per_layer.to_dict(orient="records"),
          "diffusion_steps": steps_table.to_dict(orient="records"),
          "params": {"n_seqs": n_seqs, "seq_len": seq_len, "n_groups": n_groups,
                     "early_layers": {n: len(claims.early_layers(lm.num_layers)) for n, lm in subjects.items()},
                     "gen_length": gen_length, "diffusion_steps": diffusion_steps, "n_boot": n_boot}},
    cache=cache_dir or None)
print(claims.format_metrics(ledger_metrics))

# %% [markdown]
# ## What this chapter found
#
# Generated from the metrics above (`layerwise.findings.super_outlier`); the verdicts are the claims
# ledger's.

# %%
from layerwise import findings

display(Markdown(findings.super_outlier(ledger_metrics)))

# %% [markdown]
# ## Run it yourself
#
# The tiny profile runs on a CPU in well under a minute once the tiny triplet is trained. Paper B's
# setting on the 8B models (100k tokens take a few minutes on one H100; the accumulators stay
# layers x hidden size):
#
# ```bash
# python -m layerwise.book run --profile paper --chapters 04_super_outlier
# # or directly:
# jupytext --to ipynb notebooks/04_super_outlier.py -o /tmp/04.ipynb
# papermill /tmp/04.ipynb /tmp/04.out.ipynb -p profile paper -p device cuda \
#   -y '{"models": ["GSAI-ML/LLaDA-8B-Base", "meta-llama/Llama-3.1-8B"],
#        "preset": "gpu", "n_seqs": 64, "seq_len": 2048, "batch_size": 4, "gen_length": 128,
#        "diffusion_steps": 128, "block_length": 32, "prompt_len": 256}'
# ```
