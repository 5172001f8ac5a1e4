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
# # Static layer skipping
#
# **Paper A's claim.** Diffusion LMs build redundant early-layer representations: statically skipping
# 6 of LLaDA-8B's 32 layers (**18.75% of the FLOPs**) keeps **93-97%** of its GSM8K, MATH-500 and
# HumanEval scores, while the AR model (Qwen2.5-7B) *collapses* under the same skipping, and the
# AR-initialised diffusion model (Dream-7B) behaves like the AR one.
#
# **What we measure.** For every model and every way of choosing the blocks to skip, the
# *retention* of each metric (the skipped model's score as a fraction of the unmodified model's)
# against the number of skipped blocks, from 0 to a third of the depth:
#
# - **strategies** (`layerwise.skipping.select_layers`; the first and last blocks are never skipped):
#   `redundant` (ShortGPT: lowest block influence $BI_l = 1 - \cos(h_l, h_{l+1})$, measured on
#   held-out text), `early` (a contiguous run right after block 0), `late` (a contiguous run right
#   before the last block), `uniform` (evenly spaced), `random` (seeded, averaged over draws);
# - **metrics**: the generation task (held-out arithmetic, exact match: our GSM8K analogue, decoded
#   greedily for `ar`, by the masked-diffusion sampler for `dlm`/`ar2dlm`), held-out loss (bits per
#   byte, rolling log-likelihood; the Monte-Carlo ELBO for diffusion models) and one multiple-choice
#   task (accuracy from log-likelihoods);
# - **retention**: $\text{score}_{\text{skip}} / \text{score}_{\text{full}}$ for higher-is-better
#   metrics and $\text{loss}_{\text{full}} / \text{loss}_{\text{skip}}$ for losses, with a 95% paired
#   bootstrap interval over items (`layerwise.evals.retention`). A metric whose unmodified score is
#   not significantly above chance (one-sided binomial test, 5%) is flagged: retaining a chance-level
#   score means nothing.
# - **FLOPs reduction**: the share of a forward pass's FLOPs the skipped blocks account for
#   (`layerwise.skipping.flops_fraction`, LM head included; paper A's 18.75% is $k/L$).
#
# Skipping acts on the model in memory (a reversible context manager) and lm-eval evaluates that
# same object, so one loaded model and one tokenised copy of each task serve every configuration.

# %% tags=["parameters"]
profile = "tiny"      # which profile file produced this run: tiny / gpu / paper
preset = "tiny"       # triplet preset trained or loaded when `models` is empty
models = []           # hub ids or local paths; [] = the controlled triplet (ar, dlm, ar2dlm)
data_dir = ""         # "" = $LAYERWISE_DATA_DIR (the runner passes its data directory)
cache_dir = ""        # "" = $LAYERWISE_CACHE_DIR (the runner passes its cache)
device = "auto"
seed = 0
strategies = ["redundant", "early", "late", "uniform", "random"]
random_draws = 3              # seeds averaged for the `random` strategy
max_skip = 0                  # largest number of skipped blocks; 0 = a third of the depth (at least 1)
target_fraction = 0.1875      # paper A's configuration: 6 of 32 layers
headline_strategy = "early"   # the strategy whose retention at ~18.75% goes to the claims ledger
generation_task = "lw_arithmetic"
likelihood_tasks = ["lw_stories", "lw_stories_choice"]  # held-out loss + multiple choice (gpu: lw_gutenberg; paper: ARC etc.)
extra_generation_tasks = []   # more generation tasks, shown beside generation_task (paper A: lw_math500, lw_humaneval)
num_fewshot = {}              # shots per task, e.g. {"lw_gsm8k": 5}; {} = each task's default
allow_code_execution = False  # lw_humaneval runs the model's code (subprocess, 3 s limit): switch on explicitly
limit = 16                    # items per task (the same items for every configuration)
gen_length = 16               # tokens generated per answer (the diffusion sampler's gen_length)
batch_size = 16
mc_samples = 8                # Monte-Carlo samples per diffusion log-likelihood (LLaDA uses 128)
mc_target_se = 0.0            # 0 = always mc_samples; > 0: a request stops once its Monte-Carlo standard error is <= this (nats), mc_samples the cap, batches of 16
diffusion_steps = 16          # diffusion sampler steps (= gen_length: one token per step)
influence_seqs = 8            # held-out sequences for the block influence of `redundant`
influence_len = 64
n_boot = 500                  # bootstrap resamples for the intervals
gutenberg_chars = 400         # characters per held-out Gutenberg passage (whole paragraphs)
flops_seq_len = 256           # sequence length at which FLOPs fractions are counted
resume = True                 # store each finished configuration under cache_dir/runs/ and re-use it on a rerun
native_checks = True          # the referees' checks at the end: disruption under native inference, skipping by stage
native_prompts = 8            # held-out arithmetic prompts for those checks (the gpu profile: 100)
native_points = [0.25, 0.5, 0.75]  # matched trajectory points: fractions of the denoising steps / generated tokens

# %% tags=["provenance"]
from layerwise.book import provenance
from layerwise.params import coerce_injected

coerce_injected(globals(), "03_layer_skipping")  # values papermill injected as text get their parameters' types
provenance(profile=profile, models=models or ["ar", "dlm", "ar2dlm"], preset=preset, device=device, seed=seed)

# %%
import json

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from layerwise import claims, plots
from layerwise.config import cache_dir as resolve_cache_dir
from layerwise.data import eval_sequences
from layerwise.evals import HEADLINE_METRICS, TaskParams, load_tasks, retention
from layerwise.results import save_result
from layerwise.skipping import block_influence, flops_fraction, select_layers, skip_layers
from layerwise.subjects import load_subjects

plots.style()
subjects = load_subjects(models, preset=preset, data_dir=data_dir or None, cache_dir=cache_dir or None,
                         device=device)
tasks = load_tasks([generation_task, *extra_generation_tasks, *likelihood_tasks], data_dir=data_dir or None,
                   cache_dir=cache_dir or None, seed=seed, params=TaskParams(gutenberg_chars=gutenberg_chars),
                   num_fewshot=num_fewshot or None, allow_code_execution=allow_code_execution)
print({name: f"{lm.family.value}, {lm.num_layers} blocks" for name, lm in subjects.items()})

# %% [markdown]
# ## Which blocks each strategy skips
#
# `redundant` needs the block influence of each block on held-out text; the other strategies depend
# only on the depth. Configurations that coincide (e.g. `uniform` and one `random` draw) are
# evaluated once.

# %%
configs = []  # one row per (model, strategy, draw, k): the skipped blocks and their FLOPs share
for name, lm in subjects.items():
    L = lm.num_layers
    k_max = max_skip or max(1, L // 3)
    ids = eval_sequences(lm.tokenizer, preset, influence_seqs, influence_len, data_dir=data_dir or None,
                         cache_dir=cache_dir or None, seed=seed).to(lm.device)
    influence = block_influence(lm, ids, batch_size=batch_size)
    for strategy in strategies:
        for draw in range(random_draws if strategy == "random" else 1):
            for k in range(0, k_max + 1):
                idx = select_layers(strategy, k, L, influence=influence, seed=seed + draw)
                configs.append({"model": name, "family": lm.family.value, "layers": L, "strategy": strategy,
                                "draw": draw, "k": k, "skipped": tuple(idx),
                                "flops_reduction": flops_fraction(lm, idx, seq_len=flops_seq_len)})
configs = pd.DataFrame(configs)
display(configs[configs.k > 0].drop_duplicates(["model", "strategy", "k", "skipped"])
        .pivot_table(index=["model", "strategy"], columns="k", values="skipped", aggfunc="first"))

# %% [markdown]
# ## Evaluating every configuration
#
# One call of `layerwise.evals.retention` per model: the unmodified model first, then every distinct
# set of skipped blocks, on the same items, with the same Monte-Carlo seeds. With `resume`, each
# finished configuration is stored (keyed by the weights, tasks, settings and skipped blocks), so a
# run stopped half-way and started again evaluates only what it had not finished.

# %%
runs_dir = resolve_cache_dir(cache_dir or None) / "runs" / profile / "03_layer_skipping" if resume else None
tables = []
for name, lm in subjects.items():
    distinct = sorted({s for s in configs[configs.model == name].skipped if s}, key=lambda s: (len(s), s))
    interventions = {str(list(s)): (lambda s=s, lm=lm: skip_layers(lm, list(s))) for s in distinct}
    t = retention(lm, interventions, tasks, limit=limit, batch_size=batch_size, seed=seed, n_boot=n_boot,
                  max_gen_toks=gen_length, sampler_kwargs={"steps": diffusion_steps},
                  loglikelihood_kwargs={"n_samples": mc_samples, "seed": seed, "target_se": mc_target_se or None,
                                         "batch_size": 16 if mc_target_se else mc_samples},
                  cache=runs_dir, cache_key="skip_layers")
    tables.append(t.assign(model=name))
evals = pd.concat(tables, ignore_index=True)
evals["skipped"] = evals.intervention.map(lambda s: () if s == "unmodified" else tuple(json.loads(s)))

# the metrics followed in the figures (one per task): exact match, bits per byte, accuracy; where a
# task has several answer filters (GSM8K: strict-match, flexible-extract) the last one is kept
FOLLOW = {generation_task: "exact_match", **HEADLINE_METRICS}  # a task not listed follows "acc"
evals = evals[evals.apply(lambda r: r.metric == FOLLOW.get(r.task, "acc"), axis=1)]
evals = evals.drop_duplicates(["model", "intervention", "task", "metric"], keep="last")
results = configs.merge(evals, on=["model", "skipped"], how="left")
results["label"] = results.task + " " + results.metric

# %% [markdown]
# ## Unmodified models
#
# The baseline every retention is relative to, with the chance level and whether the baseline is
# significantly above it (a metric that is not is marked *meaningless* in what follows).

# %%
# NBVAL_CHECK_OUTPUT
base = results[(results.k == 0)].drop_duplicates(["model", "label"])
print(base[["model", "family", "task", "metric", "n", "baseline", "chance", "baseline_p", "meaningful"]]
      .round(4).reset_index(drop=True).to_string())

# %% [markdown]
# ## Retention against FLOPs reduction
#
# Mean over random draws for `random` (the band spans the draws). The dashed vertical line is paper
# A's 18.75%; the marked point on each line is the configuration closest to it; the dotted horizontal
# line is 90% retention. Hollow markers: the baseline is not above chance, so retention is meaningless.

# %%
curve = (results.groupby(["model", "strategy", "k", "label"], as_index=False)
         .agg(flops_reduction=("flops_reduction", "mean"), retention=("retention", "mean"),
              lo=("retention", "min"), hi=("retention", "max"), ci_low=("ci_low", "mean"),
              ci_high=("ci_high", "mean"), meaningful=("meaningful", "all"), layers=("layers", "first")))
labels = list(dict.fromkeys(results.label))
fig, axes = plt.subplots(len(labels), len(strategies), figsize=(3.1 * len(strategies), 2.6 * len(labels)),
                         sharex=True, sharey="row", squeeze=False)
for r, label in enumerate(labels):
    for c, strategy in enumerate(strategies):
        ax = axes[r, c]
        for name in subjects:
            d = curve[(curve.model == name) & (curve.strategy == strategy) & (curve.label == label)].sort_values("k")
            if d.empty:
                continue
            x = 100 * d.flops_reduction
            color = plots.model_color(name)
            ax.plot(x, d.retention, plots.model_linestyle(name), color=color, marker="o",
                    mfc=color if d.meaningful.all() else "white", label=name)
            band_lo, band_hi = (d.lo, d.hi) if strategy == "random" else (d.ci_low, d.ci_high)
            ax.fill_between(x, band_lo, band_hi, color=color, alpha=0.15, lw=0)
            star = d.iloc[(d.k / d.layers - target_fraction).abs().argmin()]
            ax.plot(100 * star.flops_reduction, star.retention, marker="*", ms=13, color=color, mec="black")
        ax.axvline(100 * target_fraction, color="grey", ls="--", lw=1)
        ax.axhline(0.9, color="grey", ls=":", lw=1)
        if r == 0:
            ax.set_title(strategy)
        if r == len(labels) - 1:
            ax.set_xlabel("FLOPs reduction (%)")
        if c == 0:
            ax.set_ylabel(f"retention (1 = unmodified)\n({label})")
    # the row's scale follows the meaningful curves: a baseline at chance gives retentions (and
    # intervals) of several times 1 that would flatten the others
    shown = curve[(curve.label == label) & curve.meaningful.astype(bool)]
    if len(shown):
        lo, hi = min(shown.ci_low.min(), 0.9), max(shown.ci_high.max(), 1.0)
        axes[r, 0].set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
axes[0, -1].legend(fontsize=8)
fig.suptitle("Retention of each metric against the FLOPs removed by skipping blocks")
fig.tight_layout()
plt.show()

# %% [markdown]
# **Figure.** Retention (skipped / unmodified; for bits per byte, unmodified / skipped) of the
# generation task, held-out loss and a multiple-choice task (rows) for each block-selection strategy
# (columns), against the share of forward FLOPs removed, for each model. Bands: 95% paired-bootstrap
# intervals (for `random`, the range over draws). Stars: the configuration closest to paper A's 6 of
# 32 layers (dashed line); dotted line: 90% retention. Open markers: a model whose unmodified score is
# not above chance on that task (retention not meaningful); each row's vertical range covers the
# meaningful curves and their intervals, so such a curve may leave the plot.

# %% [markdown]
# ## At paper A's configuration
#
# The configuration closest to $k/L$ = 18.75% for each model, on the generation task, for every
# strategy; the `headline_strategy` row is what the claims ledger reads.

# %%
# NBVAL_CHECK_OUTPUT
gen = curve[curve.label.str.startswith(generation_task)]
at_target = claims.closest_to_fraction(gen, target_fraction)
at_target["family"] = at_target.model.map(lambda n: subjects[n].family.value)
print(at_target[["model", "family", "strategy", "k", "layers", "flops_reduction", "retention", "ci_low", "ci_high",
                 "meaningful"]].round(3).to_string())

# %% [markdown]
# ## Result file
#
# `layerwise.claims.retention_at_target` picks, for each model, the `headline_strategy` configuration
# closest to paper A's 18.75% and reports its retention with the paired-bootstrap interval; the
# ledger reads the first model of each family (`retention_at_18.75pct_dlm`, `..._ar`). The same
# retention for the strategies `early` and `redundant` on every generation task is saved too: these
# are the claim's pre-registered alternative definitions, which the ledger checks one by one.

# %%
# NBVAL_CHECK_OUTPUT
generation_tasks = tuple(f"{t} " for t in [generation_task, *extra_generation_tasks])
ledger_metrics = claims.layer_skipping_metrics(gen, {n: lm.family for n, lm in subjects.items()},
                                               strategy=headline_strategy, target_fraction=target_fraction,
                                               what=f"{generation_task} exact match, {limit} items",
                                               definitions=curve[curve.label.str.startswith(generation_tasks)])
path = save_result(
    "03_layer_skipping", profile=profile, metrics=ledger_metrics,
    models={n: lm.spec.model_id for n, lm in subjects.items()},
    data={"curve": curve.to_dict(orient="records"), "at_target": at_target.to_dict(orient="records"),
          "configs": configs.assign(skipped=configs.skipped.map(list)).to_dict(orient="records"),
          "params": {"limit": limit, "mc_samples": mc_samples, "mc_target_se": mc_target_se,
                     "diffusion_steps": diffusion_steps, "n_boot": n_boot,
                     "tasks": [generation_task, *likelihood_tasks], "headline_strategy": headline_strategy}},
    cache=cache_dir or None)
print(claims.format_metrics(ledger_metrics))

# %% [markdown]
# ## Referees' checks: disruption under native inference, and skipping by diffusion stage
#
# Paper A's referees asked for two checks of the skipping result (`layerwise.native_skipping`), both with
# the `headline_strategy` mask closest to 18.75% of each model's blocks, on `native_prompts` held-out
# arithmetic prompts, each model generating with its own sampler (greedy left-to-right decoding for `ar`,
# the masked-diffusion sampler with `diffusion_steps` steps for `dlm` and `ar2dlm`):
#
# - **Disruption under native inference** (claim A7). Each model generates once, unmodified; the inputs
#   it saw are kept at matched points of its trajectory: the canvas before step $\lfloor f \cdot S \rfloor$
#   of the $S$ denoising steps, or the prompt and the first $f \cdot G$ of the $G$ generated tokens, for
#   $f$ in `native_points`. At each of them the hidden states with and without the mask are compared by
#   paper A's metric, the cosine similarity: disruption $= 1 - \cos$, per token, averaged over a prompt's
#   positions, at the output of every block after the skipped ones (the final block last); 95% bootstrap
#   interval over prompts.
# - **Skipping by stage** (claim A8). The mask is applied only during the early, middle or late third of
#   the denoising steps (the sampler's `step_context`), or during all of them (static skipping, as above);
#   exact-match retention against the unmodified sampler on the same prompts, with a paired bootstrap
#   interval. An AR model has no denoising schedule: it is shown for the whole decoding only, the
#   reference the stages are read against.
#
# The `paper` profile leaves these checks out (`native_checks: false`: they add one generation per
# model and stage to a 24-hour plan); `-p native_checks True` runs them there too.

# %%
from matplotlib.ticker import MaxNLocator

from layerwise.config import LayerwiseError
from layerwise.data import arithmetic_heldout
from layerwise.native_skipping import STAGES, native_disruption, stage_retention

native_metrics = {}
if native_checks:
    native_items = arithmetic_heldout(native_prompts, seed)
    prompts_ = [it["prompt"] for it in native_items]
    answers_ = [it["answer"] for it in native_items]
    headline = claims.closest_to_fraction(
        configs[(configs.strategy == headline_strategy) & (configs.draw == 0)], target_fraction)
    masks = {r.model: list(r.skipped) for r in headline.itertuples()}
    gen_base = base[base.task == generation_task].set_index("model")
    disruption, stage_tables = {}, []
    for name, lm in subjects.items():
        kw = dict(gen_length=gen_length, batch_size=batch_size, sampler_kwargs={"steps": diffusion_steps})
        try:
            disruption[name] = native_disruption(lm, prompts_, masks[name], points=native_points, model=name, **kw)
            stage_tables.append(stage_retention(lm, prompts_, answers_, masks[name], n_boot=n_boot, seed=seed,
                                                chance=float(gen_base.chance.get(name, 0.0)), model=name, **kw))
        except LayerwiseError as err:  # a sampler these checks cannot drive (e.g. Dream's own algorithms)
            disruption.pop(name, None)
            print(f"{name}: not measured ({err})")
    native_checks = bool(disruption)  # nothing measured: the sections below say the checks did not run
if native_checks:
    native_frame = pd.concat([d.to_frame(n_boot=n_boot, seed=seed) for d in disruption.values()], ignore_index=True)
    stages = pd.concat(stage_tables, ignore_index=True)
    print({name: mask for name, mask in masks.items()})

# %% [markdown]
# ### Disruption at matched points of each generation trajectory

# %%
# NBVAL_CHECK_OUTPUT
if native_checks:
    final = native_frame[native_frame.final]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name in disruption:
        color = plots.model_color(name)
        d = final[final.model == name]
        axes[0].errorbar(d.point, d.disruption, yerr=[d.disruption - d.ci_low, d.ci_high - d.disruption],
                         fmt=plots.model_linestyle(name), marker="o", color=color, capsize=3,
                         label=f"{name} (skips {masks[name]})")
        mid = native_frame[(native_frame.model == name)
                           & (native_frame.point == native_points[len(native_points) // 2])]
        axes[1].plot(mid.block, mid.disruption, plots.model_linestyle(name), marker="o", color=color, label=name)
        axes[1].fill_between(mid.block, mid.ci_low, mid.ci_high, color=color, alpha=0.15, lw=0)
    axes[0].set_xlabel("point of the generation trajectory (fraction of steps / generated tokens)")
    axes[0].set_ylabel("disruption at the final block (1 - cos)")
    axes[1].set_xlabel("block (after the skipped ones)")
    axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].set_ylabel(f"disruption (1 - cos) at point {native_points[len(native_points) // 2]}")
    axes[0].legend(fontsize=8)
    fig.suptitle("How much the same skip mask changes the hidden states under each model's own inference")
    fig.tight_layout()
    plt.show()
    per_model = final.groupby("model", sort=False).disruption.agg(["min", "max"])
    words = "; ".join(f"`{m}` {r['min']:.4f}-{r['max']:.4f}" for m, r in per_model.iterrows())
    ratio = ""
    if {"dlm", "ar"} <= set(final.family):
        dl = final[final.family == "dlm"].groupby("model", sort=False).disruption.mean().iloc[0]
        ar_ = final[final.family == "ar"].groupby("model", sort=False).disruption.mean().iloc[0]
        ratio = f" The diffusion model's mean is {dl / ar_:.2f} times the AR model's."
    print(f"At the final block, over the points {native_points} of each trajectory, the mask's disruption "
          f"(1 - cos) ranges: {words}.{ratio}")

# %% [markdown]
# **Figure.** Left: disruption $1 - \cos$ of the final block's output caused by each model's headline skip
# mask (legend), at matched points of the model's own generation (diffusion: the canvas at that fraction
# of the denoising steps; AR: the prompt and that fraction of the generated tokens); bars: 95% bootstrap
# intervals over prompts. Right: the same at every block after the skipped ones, at the middle point;
# bands: 95% intervals. The sentence above is computed from the plotted numbers.

# %% [markdown]
# ### Retention with the mask applied in one stage of the diffusion schedule

# %%
# NBVAL_CHECK_OUTPUT
if native_checks:
    diff = [n for n in disruption if subjects[n].family.is_diffusion]
    staged = stages[stages.model.isin(diff)]
    order = [s for s in STAGES if s in set(staged.stage)]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for j, name in enumerate(diff):
        d = stages[stages.model == name].set_index("stage").reindex(order)
        x = [i + 0.12 * (j - (len(diff) - 1) / 2) for i in range(len(order))]
        color = plots.model_color(name)
        ax.errorbar(x, d.retention, yerr=[d.retention - d.ci_low, d.ci_high - d.retention], fmt="o",
                    color=color, mfc=color if d.meaningful.all() else "white", capsize=3, label=name)
    for name in disruption:
        if not subjects[name].family.is_diffusion:
            r = stages[stages.model == name].iloc[0]
            ax.axhline(r.retention, color=plots.model_color(name), ls="--", lw=1, label=f"{name}, whole decoding")
            ax.axhspan(r.ci_low, r.ci_high, color=plots.model_color(name), alpha=0.1, lw=0)
    ax.axhline(0.9, color="grey", ls=":", lw=1)
    ax.set_xticks(range(len(order)), [f"{s}\n({staged[staged.stage == s].steps.iloc[0]})" for s in order])
    if not stages.meaningful.any():
        ax.set_ylim(0, 1.1)
        ax.text(0.5, 0.5, "no model's unmodified score is above chance:\nretention is not meaningful",
                transform=ax.transAxes, ha="center", va="center", color="grey")
    ax.set_xlabel("denoising steps with the mask applied")
    ax.set_ylabel(f"retention ({generation_task}, exact match)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.show()
    print(stages[["model", "stage", "steps", "n", "baseline", "exact_match", "retention", "ci_low", "ci_high",
                  "meaningful"]].round(3).to_string())
    said = []
    for name in diff:
        d = stages[(stages.model == name) & (stages.stage != "all")]
        if not d.meaningful.all():
            said.append(f"`{name}`'s unmodified score is not above chance, so its retention means nothing")
        else:
            low = d.loc[d.retention.idxmin()]
            said.append(f"`{name}` keeps {d.retention.min():.2f}-{d.retention.max():.2f} of its score, least "
                        f"with the mask in the {low.stage} stage ({low.ci_low:.2f}-{low.ci_high:.2f})")
    print("By stage: " + "; ".join(said) + ".")

# %% [markdown]
# **Figure.** Exact-match retention of each diffusion model with its headline skip mask applied only in
# the early, middle or late third of the denoising steps, or in all of them (static skipping); bars: 95%
# paired-bootstrap intervals over prompts; open markers: the unmodified model is not above chance
# (retention meaningless). Dashed line and band: the AR model with the same mask over its whole decoding.
# Dotted line: 90% retention. The sentence above is computed from the table.

# %% [markdown]
# ### Claims A7 and A8
#
# `layerwise.claims.native_skipping_metrics` turns both checks into the ledger's metrics (A7: the
# diffusion model's final-block disruption minus the AR model's, one definition per trajectory point;
# A8: the diffusion model's lowest retention over the stages, one definition per stage); they are added
# to the chapter's result file.

# %%
# NBVAL_CHECK_OUTPUT
if native_checks:
    native_metrics = claims.native_skipping_metrics(
        {n: d.final for n, d in disruption.items()}, native_points, stages,
        {n: subjects[n].family for n in disruption}, what=f"{generation_task} exact match, {native_prompts} prompts",
        n_boot=n_boot, seed=seed)
    saved = json.loads(path.read_text())
    path = save_result(
        "03_layer_skipping", profile=profile, metrics={**saved["metrics"], **native_metrics}, models=saved["models"],
        data={**saved["data"], "native": {"masks": masks, "disruption": native_frame.to_dict(orient="records"),
                                          "stages": stages.to_dict(orient="records"),
                                          "params": {"native_prompts": native_prompts, "points": native_points}}},
        cache=cache_dir or None)
    print(claims.format_metrics(native_metrics))
else:
    native_metrics = {}
    print("native_checks is off: claims A7 and A8 are not measured in this run")

# %% [markdown]
# ## What this chapter found
#
# Generated from the metrics above, the referees' checks included (`layerwise.findings.layer_skipping`); the
# verdicts are the claims ledger's.

# %%
from IPython.display import Markdown

from layerwise import findings

display(Markdown(findings.layer_skipping({**ledger_metrics, **native_metrics})))

# %% [markdown]
# ## Speed: does skipping k of L blocks make generation L/(L-k) faster?
#
# FLOPs are not wall-clock time. `benchmarks/bench_skipping.py` times the diffusion sampler with
# and without skipping on a GPU-preset-shaped model (and an 8B-shaped one) and compares the
# speed-up with the ideal $L/(L-k)$; its table is in `benchmarks/results/bench_skipping.md`.
#
# ## Run it yourself
#
# The tiny profile (this page's defaults) runs on a laptop CPU in about a minute once the tiny
# triplet is trained. The published numbers come from the `gpu` profile; the paper's models:
#
# ```bash
# python -m layerwise.book run --profile paper --chapters 03_layer_skipping
# # or directly: the Instruct models on GSM8K (5-shot), MATH-500 (4-shot) and HumanEval, skipping the
# # first k = 0..6 of 32 blocks; HumanEval executes the model's code, so it needs allow_code_execution
# jupytext --to ipynb notebooks/03_layer_skipping.py -o /tmp/03.ipynb
# papermill /tmp/03.ipynb /tmp/03.out.ipynb -p profile paper -p device cuda \
#   -y '{"models": ["GSAI-ML/LLaDA-8B-Instruct", "Dream-org/Dream-v0-Instruct-7B", "Qwen/Qwen2.5-7B-Instruct"],
#        "generation_task": "lw_gsm8k", "extra_generation_tasks": ["lw_math500", "lw_humaneval"],
#        "likelihood_tasks": [], "num_fewshot": {"lw_gsm8k": 5, "lw_math500": 4, "lw_humaneval": 0},
#        "allow_code_execution": true, "limit": 200, "gen_length": 256, "diffusion_steps": 256,
#        "strategies": ["early"], "max_skip": 6, "batch_size": 16}'
# ```
#
# On Colab: the *Open in Colab* link at the top of this chapter's page opens `book/colab/03_layer_skipping.ipynb`
# (this chapter with an install cell; set the parameters cell, then run all).
