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
# # Compression: quantization, pruning, and where to put the sparsity
#
# **Paper B's claims (section 3).** Diffusion LMs are surprisingly robust to compression: under
# **3-bit GPTQ**, LLaDA-8B loses only **1.8%** of its GSM8K accuracy where Llama-3.1-8B loses
# **64.7%**. And the best place for sparsity *reverses* between the families: at **50% average
# sparsity**, giving early layers more sparsity than late ones ("earlier is sparser") beats the
# reverse allocation by **+8.4%** for LLaDA but loses **-8.4%** for Llama. Paper B links both to
# the collapsed, redundant early layers of diffusion models (chapters on layer similarity and the
# super-outlier).
#
# **What we measure**, for each model of the controlled triplet (`ar`, `dlm`, `ar2dlm`: same data,
# tokenizer, architecture and initial weights) or any models given by id:
#
# - **retention against bits**: GPTQ and round-to-nearest (RTN, the same per-group asymmetric
#   min-max grid, no error feedback) at 2, 3, 4 and 8 bits, fake-quantized (dequantized weights in the
#   model's dtype);
# - **retention against sparsity**: magnitude, Wanda ($|W_{ij}|\,\lVert X_j\rVert_2$ per output row)
#   and SparseGPT (OBS updates with the layer Hessian) at 30, 50 and 70% unstructured sparsity;
# - **allocation at 50% average sparsity**: uniform, *earlier is sparser* and *deeper is sparser*
#   (a linear ramp of $\pm\varepsilon$ over depth, paper B), OWL (outlier-weighted) and AlphaPruning
#   (alpha-Hill), all with the same parameter-weighted average; the **early-minus-late effect** is the
#   retention of "earlier is sparser" relative to "deeper is sparser", with a paired bootstrap interval;
# - **diffusion-aware calibration**: diffusion models are calibrated on partially masked inputs
#   ($t \sim U[0,1]$ per sequence, each token masked with probability $t$), as they are at sampling
#   time; we compare this with plain, unmasked calibration.
#
# Retention is the compressed model's metric over the unmodified model's (for losses: unmodified
# over compressed) on the same items, with 95% paired-bootstrap intervals (`layerwise.evals`). Every
# method is `layerwise.compress`: one layer-by-layer calibration loop (block inputs captured once, then
# block by block: statistics, compression, post-compression outputs for the next block), so an 8B
# model needs one block's activations in memory at a time.

# %% tags=["parameters"]
profile = "tiny"      # which profile file produced this run: tiny / gpu / paper
preset = "tiny"       # triplet preset trained or loaded when `models` is empty
models = []           # hub ids or local paths; [] = the controlled triplet (ar, dlm, ar2dlm)
data_dir = ""         # "" = $LAYERWISE_DATA_DIR (the runner passes its data directory)
cache_dir = ""        # "" = $LAYERWISE_CACHE_DIR (the runner passes its cache)
device = "auto"
seed = 0
tasks = ["lw_stories"]         # evaluation tasks; retention of `headline_task` goes to the ledger
headline_task = "lw_stories"   # held-out synthetic stories (gpu: lw_gutenberg)
limit = 8                      # items per task (the same items for every configuration)
num_fewshot = {}               # shots per task, e.g. {"lw_gsm8k": 5}; {} = each task's default
allow_code_execution = False   # lw_humaneval runs the model's code (subprocess, 3 s limit): switch on explicitly
gutenberg_chars = 400          # characters per held-out Gutenberg passage (whole paragraphs)
bits = [2, 3, 4, 8]
quant_methods = ["gptq", "rtn"]
group_size = 128               # falls back to the full row / a divisor for small dimensions
sparsities = [0.3, 0.5, 0.7]
prune_methods = ["magnitude", "wanda", "sparsegpt"]
allocation_average = 0.5       # paper B's average sparsity for the allocation comparison
allocation_epsilon = 0.1       # ramp / AlphaPruning half-range: sparsity in [s - eps, s + eps]
allocation_schemes = ["uniform", "earlier_sparser", "deeper_sparser", "owl", "alpha"]
allocation_method = "wanda"    # the pruning method used for the allocation comparison
owl_m, owl_lambda = 5.0, 0.08  # OWL outlier threshold (x mean score) and sparsity half-range
calib_seqs = 16                # calibration sequences (paper: 128 x 2048 tokens)
calib_len = 64
diffusion_calibration = True   # diffusion models: calibrate on masked inputs (paper B)
batch_size = 16
gen_length = 16                # generation tasks: tokens per answer / diffusion steps
mc_samples = 4                 # Monte-Carlo samples per diffusion log-likelihood (LLaDA uses 128)
mc_target_se = 0.0            # 0 = always mc_samples; > 0: a request stops once its Monte-Carlo standard error is <= this (nats), mc_samples the cap, batches of 16
n_boot = 500
resume = True                  # store each finished configuration under cache_dir/runs/ and re-use it on a rerun
diagnosis_blocks = 4           # first N blocks quantized and measured in the 2-bit GPTQ diagnosis (0 = all blocks)

# %% tags=["provenance"]
from layerwise.book import provenance
from layerwise.params import coerce_injected

coerce_injected(globals(), "07_compression")  # values papermill injected as text get their parameters' types
provenance(profile=profile, models=models or ["ar", "dlm", "ar2dlm"], preset=preset, device=device, seed=seed)

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display

from layerwise import claims, compress, plots
from layerwise.config import cache_dir as resolve_cache_dir
from layerwise.data import calibration_sequences, eval_sequences
from layerwise.diffusion import mask_tokens, requires_mask_token, sample_t
from layerwise.evals import HEADLINE_METRICS, TaskParams, load_tasks, retention
from layerwise.results import save_result
from layerwise.spectra import model_alpha_hill
from layerwise.subjects import load_subjects

plots.style()
subjects = load_subjects(models, preset=preset, data_dir=data_dir or None, cache_dir=cache_dir or None,
                         device=device)
taskset = load_tasks(tasks, data_dir=data_dir or None, cache_dir=cache_dir or None, seed=seed,
                     params=TaskParams(gutenberg_chars=gutenberg_chars, gutenberg_passages=max(64, limit)),
                     num_fewshot=num_fewshot or None, allow_code_execution=allow_code_execution)
print({name: f"{lm.family.value}, {lm.num_layers} blocks" for name, lm in subjects.items()})

# %% [markdown]
# ## Calibration data and the per-layer sparsity of each allocation
#
# Calibration windows are held-out text disjoint from the evaluation items
# (`data.calibration_sequences`). The allocations need no pruning yet: OWL needs the Wanda scores of
# the unmodified model (one pass of the calibration loop), AlphaPruning the alpha-Hill of every
# weight matrix (`spectra.model_alpha_hill`, averaged per block).

# %%
calib, calib_plain, allocations = {}, {}, {}
for name, lm in subjects.items():
    ids = calibration_sequences(lm.tokenizer, preset, calib_seqs, calib_len, data_dir=data_dir or None,
                                cache_dir=cache_dir or None, seed=seed)
    calib_plain[name] = compress.calibration_inputs(lm, ids, diffusion_masking=False)
    calib[name] = compress.calibration_inputs(lm, ids, seed=seed,
                                              diffusion_masking=diffusion_calibration and lm.family.is_diffusion)
    alphas = model_alpha_hill(lm, progress=False) if "alpha" in allocation_schemes else None
    allocations[name] = {
        scheme: compress.allocate_sparsity(lm, allocation_average, scheme, epsilon=allocation_epsilon,
                                           calib_ids=calib[name], owl_m=owl_m, owl_lambda=owl_lambda, alphas=alphas,
                                           batch_size=batch_size, progress=False)
        for scheme in allocation_schemes}

fig, axes = plt.subplots(1, len(subjects), figsize=(3.6 * len(subjects), 2.8), sharey=True, squeeze=False)
for ax, (name, per) in zip(axes[0], allocations.items()):
    for scheme, s in per.items():
        ax.plot(range(len(s)), 100 * np.array(s), marker="o", ms=3, label=scheme)
    ax.set_title(name)
    ax.set_xlabel("block")
axes[0, 0].set_ylabel("sparsity (%)")
axes[0, -1].legend(fontsize=7)
fig.suptitle(f"Per-block sparsity of each allocation at {100 * allocation_average:.0f}% average")
fig.tight_layout()
plt.show()

# %% [markdown]
# **Figure.** Sparsity assigned to each block by each allocation scheme, per model; every scheme's
# parameter-weighted mean is the same average (asserted by `compress.allocate_sparsity`).

# %% [markdown]
# ## Evaluating every configuration
#
# Each configuration is a reversible intervention (`compress.compressed`): the block weights are
# snapshotted to the CPU once per model, compressed on entry, restored on exit, so one loaded model
# and one tokenised copy of each task serve every configuration. With `resume`, each finished
# configuration is stored with its per-Linear report (keyed by the weights, tasks, settings and the
# compression settings), so a run stopped half-way and started again evaluates only the rest.

# %%
runs_dir = resolve_cache_dir(cache_dir or None) / "runs" / profile / "07_compression" if resume else None
compression_key = repr(dict(preset=preset, data_dir=data_dir, group_size=group_size, calib_seqs=calib_seqs,
                            calib_len=calib_len, diffusion_calibration=diffusion_calibration,
                            batch_size=batch_size, allocation_average=allocation_average,
                            allocation_epsilon=allocation_epsilon, allocation_method=allocation_method,
                            owl_m=owl_m, owl_lambda=owl_lambda))
reports = {}  # (model, configuration) -> the per-Linear table compress.quantize / compress.prune returned


def configurations(name, lm, snap):
    """configuration -> (description, intervention factory) for one model."""
    c = calib[name]

    def intervention(key, apply):
        """A reversible intervention that also keeps `apply()`'s per-Linear report."""
        def run():
            reports[(name, key)] = apply()
            return reports[(name, key)]
        return lambda: compress.compressed(lm, run, snap)

    out = {}
    for m in quant_methods:
        for b in bits:
            out[f"{m}-{b}bit"] = (dict(kind="quant", method=m, bits=b), intervention(f"{m}-{b}bit", (
                lambda m=m, b=b: compress.quantize(lm, m, b, group_size, calib_ids=c, batch_size=batch_size,
                                                   progress=False))))
    for m in prune_methods:
        for s in sparsities:
            out[f"{m}-{s:.2f}"] = (dict(kind="prune", method=m, sparsity=s), intervention(f"{m}-{s:.2f}", (
                lambda m=m, s=s: compress.prune(lm, m, s, calib_ids=c, batch_size=batch_size, progress=False))))
    for scheme, per in allocations[name].items():
        out[f"alloc-{scheme}"] = (dict(kind="alloc", method=allocation_method, scheme=scheme,
                                       sparsity=allocation_average),
                                  intervention(f"alloc-{scheme}", lambda per=per: compress.prune(
                                      lm, allocation_method, per, calib_ids=c, batch_size=batch_size,
                                      progress=False)))
    if lm.family.is_diffusion and diffusion_calibration:  # the same 3-bit GPTQ, calibrated without masks
        out["gptq-3bit-plain-calib"] = (dict(kind="calib", method="gptq", bits=3), intervention(
            "gptq-3bit-plain-calib", lambda: compress.quantize(lm, "gptq", 3, group_size,
                                                               calib_ids=calib_plain[name], batch_size=batch_size,
                                                               progress=False)))
    return out


tables, all_runs, described = [], {}, []
for name, lm in subjects.items():
    snap = compress.snapshot(lm)
    confs = configurations(name, lm, snap)
    yielded = {}  # configuration -> its per-Linear report (from the cache for stored configurations)
    t, runs = retention(lm, {k: f for k, (_, f) in confs.items()}, taskset, limit=limit, batch_size=batch_size,
                        seed=seed, n_boot=n_boot, return_runs=True, max_gen_toks=gen_length,
                        sampler_kwargs={"steps": gen_length},
                        loglikelihood_kwargs={"n_samples": mc_samples, "seed": seed,
                                              "target_se": mc_target_se or None,
                                              "batch_size": 16 if mc_target_se else mc_samples},
                        cache=runs_dir, cache_key=compression_key, yielded=yielded)
    reports.update({(name, k): v for k, v in yielded.items() if k in confs})
    tables.append(t.assign(model=name, family=lm.family.value))
    all_runs[name] = runs
    described += [{"model": name, "intervention": k, **d} for k, (d, _) in confs.items()]
    del snap

FOLLOW = dict(HEADLINE_METRICS)  # the metric followed per task; a task not listed follows "acc"
evals = pd.concat(tables, ignore_index=True)
evals = evals[evals.apply(lambda r: r.metric == FOLLOW.get(r.task, "acc"), axis=1)]
evals = evals.drop_duplicates(["model", "intervention", "task", "metric"], keep="last")
results = evals.merge(pd.DataFrame(described), on=["model", "intervention"], how="left")
results["label"] = results.task + " " + results.metric
head = results[results.task == headline_task]

# %% [markdown]
# The configurations evaluated on every model (plain-calibration GPTQ only for diffusion models):

# %%
# NBVAL_CHECK_OUTPUT
print(pd.DataFrame(described).groupby(["model", "kind"]).size().unstack(fill_value=0).to_string())

# %% [markdown]
# ## Unmodified models
#
# The baselines all retentions are relative to (a metric whose baseline is not significantly above
# chance is flagged: retaining a chance-level score means nothing). On the `tiny` profile the triplet
# is trained on a synthetic corpus and evaluated on held-out stories of the same generator
# (`lw_stories`, no data directory needed): tiny-profile retentions check the machinery, not paper B's
# claims.

# %%
# NBVAL_CHECK_OUTPUT
print(results[results.intervention == "unmodified"][["model", "family", "task", "metric", "n", "baseline",
                                                      "chance", "meaningful"]].round(4).reset_index(drop=True)
      .to_string())

# %% [markdown]
# ## Retention against bits: GPTQ vs round-to-nearest

# %%
def retention_panel(kind, x, xlabel, title):
    labels = list(dict.fromkeys(results.label))
    fig, axes = plt.subplots(len(labels), len(subjects), figsize=(3.6 * len(subjects), 2.8 * len(labels)),
                             sharex=True, sharey="row", squeeze=False)
    for r, label in enumerate(labels):
        for c, name in enumerate(subjects):
            ax = axes[r, c]
            d = results[(results.kind == kind) & (results.model == name) & (results.label == label)]
            for m, g in d.groupby("method"):
                g = g.sort_values(x)
                xs = 100 * g[x] if x == "sparsity" else g[x]
                ax.plot(xs, g.retention, marker="o", label=m)
                ax.fill_between(xs, g.ci_low, g.ci_high, alpha=0.15, lw=0)
            ax.axhline(1.0, color="grey", ls=":", lw=1)
            if r == 0:
                ax.set_title(name, color=plots.model_color(name))
            if r == len(labels) - 1:
                ax.set_xlabel(xlabel)
            if c == 0:
                ax.set_ylabel(f"retention\n({label})")
    axes[0, -1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    plt.show()


retention_panel("quant", "bits", "bits per weight", "Retention under weight quantization")

# %% [markdown]
# **Figure.** Retention (unmodified / quantized for losses, quantized / unmodified for scores) against
# the bits per weight, GPTQ and RTN on the same per-group grid, per model (columns) and metric (rows).
# Bands: 95% paired-bootstrap intervals over items.

# %%
# NBVAL_CHECK_OUTPUT
quant = head[head.kind == "quant"].pivot_table(index=["model", "method"], columns="bits", values="retention")
print(quant.round(3).to_string())

# %% [markdown]
# ## Why 2-bit GPTQ barely moves the dlm
#
# GPTQ spreads each weight column's rounding error over the columns not yet quantized, weighted by the
# second moment of the layer's inputs `X^T X`. When a Linear's inputs span only a few directions (a low
# *effective rank* of `X^T X`), most of that error can be moved into directions the inputs never take:
# the weights change a lot, the outputs hardly at all. Round-to-nearest has no such feedback.
# `compress.linear_errors` measures per block Linear the relative weight change, the relative output
# error on held-out inputs (diffusion models: masked at t ~ U[0, 1], as their likelihood sees them) and
# the effective rank of those inputs (`compress.effective_rank`), for GPTQ and round-to-nearest at 2, 3
# and 4 bits on the first `diagnosis_blocks` blocks, calibrated as above.

# %%
diag_bits = [b for b in (2, 3, 4) if b in bits] or [2, 3, 4]
diag = []
for name, lm in subjects.items():
    blocks_measured = list(range(min(diagnosis_blocks or lm.num_layers, lm.num_layers)))
    held_out = eval_sequences(lm.tokenizer, preset, calib_seqs, calib_len, data_dir=data_dir or None,
                              cache_dir=cache_dir or None, seed=seed + 1)
    if lm.family.is_diffusion:
        mid = requires_mask_token(lm, purpose="masked held-out inputs", alternative="an AR model")
        gen = torch.Generator().manual_seed(seed + 1)
        held_out = mask_tokens(held_out, sample_t(held_out.shape[0], generator=gen), mid, generator=gen)[0]
    held_out = held_out.to(lm.device)
    snap = compress.snapshot(lm)
    diag.append(compress.linear_errors(lm, snap, held_out, blocks=blocks_measured, batch_size=batch_size)
                .assign(model=name, method="none", bits=0))
    for m in ("gptq", "rtn"):
        for b in diag_bits:
            with compress.preserved(lm, snap):
                compress.quantize(lm, m, b, group_size, calib_ids=calib[name], blocks=blocks_measured,
                                  batch_size=batch_size, progress=False)
                diag.append(compress.linear_errors(lm, snap, held_out, blocks=blocks_measured, batch_size=batch_size)
                            .assign(model=name, method=m, bits=b))
    del snap
diag = pd.concat(diag, ignore_index=True)
errors = (diag[diag.method != "none"].groupby(["model", "method", "bits"], sort=False)
          [["rel_weight_change", "rel_output_error"]].median().unstack("bits"))
ranks = diag[diag.method == "none"].groupby("model", sort=False)[["in_features", "effective_rank", "top1_share"]].median()
print("Median over block Linears (relative to the unmodified weights / outputs):")
print(errors.round(4).to_string())
print("\nInputs of the unmodified models (median over block Linears):")
print(ranks.round(3).to_string())

# %%
fig, axes = plt.subplots(1, len(subjects), figsize=(3.6 * len(subjects), 3.0), sharey=True, squeeze=False)
for ax, name in zip(axes[0], subjects):
    for m, color in (("gptq", "tab:blue"), ("rtn", "tab:orange")):
        e = errors.loc[(name, m)].unstack(0)
        ax.plot(e.index, 100 * e["rel_output_error"], marker="o", color=color, label=f"{m}: output error")
        ax.plot(e.index, 100 * e["rel_weight_change"], marker="s", ls="--", color=color, label=f"{m}: weight change")
    r = ranks.loc[name]
    ax.set_title(f"{name}: input eff. rank {r.effective_rank:.1f} of {int(r.in_features)}",
                 color=plots.model_color(name), fontsize=9)
    ax.set_xlabel("bits per weight")
    ax.set_xticks(diag_bits)
    ax.set_yscale("log")
axes[0, 0].set_ylabel("median relative change (%)")
axes[0, -1].legend(fontsize=7)
fig.suptitle("What quantization does to the weights and to the outputs on held-out inputs")
fig.tight_layout()
plt.show()

# %% [markdown]
# **Figure.** Per model, the median over block Linears of the relative weight change (dashed) and of
# the relative output error on held-out inputs (solid), GPTQ (blue) and round-to-nearest (orange), on
# a log scale; the title gives the inputs' median effective rank and the Linears' median input width.

# %%
low = min(diag_bits)
lines = []
for name in subjects:
    g, r = errors.loc[(name, "gptq")], errors.loc[(name, "rtn")]
    lines.append(f"{name}: at {low} bits GPTQ changes the weights by {g[('rel_weight_change', low)]:.1%} "
                 f"(round-to-nearest {r[('rel_weight_change', low)]:.1%}) and the outputs on held-out inputs by "
                 f"{g[('rel_output_error', low)]:.1%} (round-to-nearest {r[('rel_output_error', low)]:.1%}); its "
                 f"inputs' effective rank is {ranks.loc[name, 'effective_rank']:.1f} of "
                 f"{int(ranks.loc[name, 'in_features'])} features.")
by_error = sorted(subjects, key=lambda n: errors.loc[(n, "gptq"), ("rel_output_error", low)])
by_rank = sorted(subjects, key=lambda n: ranks.loc[n, "effective_rank"])
lines.append(f"Ordered by {low}-bit GPTQ output error ({', '.join(by_error)}) the models "
             f"{'are' if by_error == by_rank else 'are not'} in the order of their inputs' effective rank "
             f"({', '.join(by_rank)}).")
print("\n".join(lines))


# %%
retention_panel("prune", "sparsity", "unstructured sparsity (%)", "Retention under pruning")

# %% [markdown]
# **Figure.** Retention against the fraction of block weights pruned (uniform over blocks), per
# pruning method and model; bands are 95% paired-bootstrap intervals.

# %%
# NBVAL_CHECK_OUTPUT
print(head[head.kind == "prune"].pivot_table(index=["model", "method"], columns="sparsity",
                                             values="retention").round(3).to_string())

# %% [markdown]
# ## Where to put the sparsity: allocation at 50% average
#
# Paper B's comparison is "earlier is sparser" against "deeper is sparser". We report each scheme's
# retention against the unmodified model, and the **early-minus-late effect**: the retention of the
# early-sparse model *relative to the late-sparse one* (paired bootstrap over the same items), minus 1,
# in percent. Paper B: +8.4% for LLaDA, -8.4% for Llama.

# %% [markdown]
# First, what each allocation actually pruned: the parameter-weighted share of zero weights per
# block, read from `compress.prune`'s per-Linear report (Wanda prunes `int(in_features * s)` weights
# per output row, so the achieved sparsity is the target rounded down per row). The uniform and ramp
# schemes depend only on the layer shapes, so this table is exact and the same on every machine.

# %%
# NBVAL_CHECK_OUTPUT
def achieved(report):
    """Parameter-weighted sparsity (%) per block from a per-Linear report."""
    w = report.out_features * report.in_features
    return 100 * (report.sparsity * w).groupby(report.layer).sum() / w.groupby(report.layer).sum()


geometric = [s for s in ("uniform", "earlier_sparser", "deeper_sparser") if s in allocation_schemes]
achieved_rows = []
for name in subjects:
    for scheme in geometric:
        rep = reports[(name, f"alloc-{scheme}")]
        per = achieved(rep)
        w = rep.out_features * rep.in_features
        achieved_rows.append({"model": name, "scheme": scheme, **{f"block {i}": v for i, v in per.items()},
                              "overall": 100 * float((rep.sparsity * w).sum() / w.sum())})
print(f"Achieved sparsity (%) of {allocation_method} at {100 * allocation_average:.0f}% average, "
      f"epsilon {allocation_epsilon}:")
print(pd.DataFrame(achieved_rows).set_index(["model", "scheme"]).round(2).to_string())

# %% [markdown]
# The data-driven schemes (OWL, AlphaPruning) depend on the trained weights: their per-block
# sparsity (%) per model.

# %%
data_driven = [(name, scheme) for name in subjects for scheme in allocation_schemes if scheme not in geometric]
if data_driven:
    display(pd.DataFrame([{"model": n, "scheme": sch, **{f"block {i}": v for i, v in achieved(
        reports[(n, f"alloc-{sch}")]).items()}} for n, sch in data_driven]).set_index(["model", "scheme"]).round(2))

# %%
alloc = head[head.kind == "alloc"]
fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(allocation_schemes) * len(subjects) / 2, 3.2))
width = 0.8 / len(subjects)
for j, name in enumerate(subjects):
    d = alloc[alloc.model == name].set_index("scheme").reindex(allocation_schemes)
    xs = np.arange(len(allocation_schemes)) + j * width
    # the effects are a few percent: bars show the change from the unmodified model (retention - 1) in %
    change = 100 * (d.retention - 1)
    ax.bar(xs, change, width, color=plots.model_color(name), label=name,
           yerr=[100 * (d.retention - d.ci_low), 100 * (d.ci_high - d.retention)], capsize=2)
ax.axhline(0, color="black", lw=0.8)
ax.set_xticks(np.arange(len(allocation_schemes)) + width * (len(subjects) - 1) / 2, allocation_schemes)
ax.set_ylabel(f"change vs unmodified (%)\n(retention - 1, {headline_task})")
ax.set_title(f"{allocation_method} at {100 * allocation_average:.0f}% average sparsity")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# **Figure.** Change of the headline metric's retention from the unmodified model, in percent
# (100 (retention - 1); 0 = unchanged, negative = worse), for each allocation scheme at the same average
# sparsity, per model, with 95% paired-bootstrap intervals. The early-minus-late effect below compares
# `earlier_sparser` with `deeper_sparser` directly on the same items.

# %%
# NBVAL_CHECK_OUTPUT
effects = claims.metrics_table({
    f"{name} {task}": claims.early_minus_late(all_runs[name]["alloc-earlier_sparser"],
                                              all_runs[name]["alloc-deeper_sparser"], task=task,
                                              measure=FOLLOW.get(task, "acc"), model=name, n_boot=n_boot, seed=seed)
    for name in subjects for task in tasks})
effects = effects.rename(columns={"value": "early_minus_late_pct"}).drop(columns=["metric"])
print(effects.round(2).to_string())

# %% [markdown]
# ## Diffusion-aware vs plain calibration
#
# For diffusion models, 3-bit GPTQ calibrated on masked inputs (the default above) against the same
# GPTQ calibrated on the unmasked text.

# %%
calib_cmp = head[((head.kind == "calib") | ((head.kind == "quant") & (head.method == "gptq") & (head.bits == 3)))
                 & head.family.isin(["dlm", "ar2dlm"])]
calib_cmp = calib_cmp.assign(calibration=np.where(calib_cmp.kind == "calib", "plain", "diffusion-aware"))
display(calib_cmp[["model", "calibration", "retention", "ci_low", "ci_high"]].round(3).reset_index(drop=True))

# %% [markdown]
# The paired comparison: the diffusion-aware model's metric relative to the plain-calibrated one on
# the same items (retention ratio minus 1, in percent; positive = masked calibration is better).

# %%
aware = claims.metrics_table({
    f"{name} {task}": claims.relative_change_pct(all_runs[name]["gptq-3bit-plain-calib"], all_runs[name]["gptq-3bit"],
                                                 task=task, measure=FOLLOW.get(task, "acc"), model=name,
                                                 n_boot=n_boot, seed=seed)
    for name in subjects if {"gptq-3bit-plain-calib", "gptq-3bit"} <= set(all_runs[name]) for task in tasks})
if len(aware):
    aware = aware.rename(columns={"value": "aware_minus_plain_pct"}).drop(columns=["metric"])
display(aware.round(2))

# %% [markdown]
# ## Result file

# %%
# NBVAL_CHECK_OUTPUT
ledger = claims.compression_metrics(
    head, all_runs, {n: lm.family for n, lm in subjects.items()}, task=headline_task,
    measure=FOLLOW.get(headline_task, "acc"), n_boot=n_boot, seed=seed,
    allocation=f"{allocation_method} at {allocation_average:.0%} average sparsity, epsilon {allocation_epsilon}",
    definitions=results,  # B4 on every task and metric evaluated: the ledger's alternative definitions
    measures={t: FOLLOW.get(t, "acc") for t in tasks})  # B5 likewise
path = save_result(
    "07_compression", profile=profile, metrics=ledger,
    models={n: lm.spec.model_id for n, lm in subjects.items()},
    data={"results": results.drop(columns=["label"]).to_dict(orient="records"),
          "early_minus_late": effects.to_dict(orient="records"),
          "aware_minus_plain_calibration": aware.to_dict(orient="records"),
          "allocations": {n: a for n, a in allocations.items()},
          "params": {"tasks": tasks, "limit": limit, "gutenberg_chars": gutenberg_chars,
                     "calib": [calib_seqs, calib_len], "group_size": group_size,
                     "diffusion_calibration": diffusion_calibration, "allocation_epsilon": allocation_epsilon,
                     "allocation_method": allocation_method, "mc_samples": mc_samples, "mc_target_se": mc_target_se,
                     "n_boot": n_boot}},
    cache=cache_dir or None)
print(claims.format_metrics(ledger))

# %% [markdown]
# ## What this chapter found
#
# Generated from the metrics above (`layerwise.findings.compression`); the verdicts are the claims
# ledger's.

# %%
from IPython.display import Markdown

from layerwise import findings

display(Markdown(findings.compression(ledger)))

# %% [markdown]
# ## Speed
#
# `benchmarks/bench_gptq.py` quantizes an 8B-shaped random-weight model (LLaDA-8B dimensions) with
# GPTQ on 128 x 2048 calibration tokens on one H100; time and peak memory are in
# `benchmarks/results/bench_gptq.md`.
#
# ## Run it yourself
#
# The tiny profile (this page's defaults) runs on a CPU once the tiny triplet is trained. The
# published numbers come from the `gpu` profile; the paper's models (GSM8K as in paper B):
#
# ```bash
# python -m layerwise.book run --profile paper --chapters 07_compression
# # or directly:
# jupytext --to ipynb notebooks/07_compression.py -o /tmp/07.ipynb
# papermill /tmp/07.ipynb /tmp/07.out.ipynb -p profile paper \
#   -y '{"models": ["GSAI-ML/LLaDA-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"],
#        "tasks": ["lw_gsm8k"], "headline_task": "lw_gsm8k", "num_fewshot": {"lw_gsm8k": 5}, "limit": 200,
#        "quant_methods": ["gptq"], "bits": [2, 3, 4], "prune_methods": ["wanda"], "sparsities": [0.3, 0.5, 0.7],
#        "allocation_schemes": ["uniform", "earlier_sparser", "deeper_sparser"],
#        "calib_seqs": 128, "calib_len": 2048, "gen_length": 256, "batch_size": 16}'
# ```
