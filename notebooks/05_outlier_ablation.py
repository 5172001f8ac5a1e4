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
# # Ablating the super-outlier
#
# **Paper B's claim.** The super-outlier (chapter 04) looks redundant, one channel repeating the
# same value at every position, yet it is indispensable: **pruning it turns LLaDA-8B's generations
# into repetitive random token loops**. The paper shows examples but, as its referee noted, no
# variance over seeds and no control: is it *this* channel, or would removing any large channel do
# the same? And is it the attention input that matters, or the residual stream?
#
# **A test that can fail.** "The ablation makes loops" can only show on text that did not loop
# already: a model whose own continuations repeat themselves has nothing left to turn into loops. So
# the test set is the held-out prompts that the **unmodified model continues without looping**
# (`headline_metric` below `loop_threshold`, e.g. rep-2 < 0.2: fewer than one word pair in five
# repeats an earlier one); the chapter reports how many prompts qualify and calls the claim **not
# testable** on a model with fewer than `min_prompts` of them. The unmodified model continues a pool
# of `text_prompts` prompts; only the selected ones (up to `max_test_prompts`) are generated under
# every ablation, so a large pool is cheap. On those prompts we compare the
# outlier's ablation with **random channels of similar magnitude rank** (several draws), not with the
# unmodified model: prompts chosen for a low score drift upward under any perturbation (regression
# to the mean), and the control drifts the same way.
#
# **What we measure.** For each model we find the super-outlier on held-out text
# (`layerwise.probes.channel_stats`) by two **definitions**: the channel of largest max $|x|$ at the
# attention input (the normed hidden state q/k/v read: paper B) and in the residual stream (the block
# output); where they pick different channels both are ablated. Each target is zeroed at two
# **sites**: the attention input of the chosen blocks, or the residual stream they write (the next
# block then reads the zeroed channel, and its norm rescales the rest). Blocks: the early third
# (`early`) or all of them (`all`). Conditions (`layerwise.ablation_design.plan_ablations`, reversible
# hooks of `layerwise.ablation.ablate_channels`):
#
# - `none`: the unmodified model;
# - `<site>/<definition>/outlier/<scope>`: the super-outlier zeroed;
# - `<site>/<definition>/control/<scope>/<k>`: a random channel of similar magnitude rank instead.
#
# Every continuation is scored for **repetition** (rep-n: the share of word n-grams that repeat an
# earlier one; the longest loop, i.e. the longest span made of one unit repeated at least twice;
# **loop onset**: whether the continuation reaches `loop_threshold`), and held-out arithmetic for
# **accuracy** (exact match of the first number after "Answer:"). The ledger number is the outlier's
# repetition minus the control's (mean over draws) on the non-looping prompts, with a bootstrap
# interval that resamples both prompts and control draws; the other sites and definitions are
# pre-registered alternative definitions of the same number.

# %% tags=["parameters"]
profile = "tiny"      # which profile file produced this run: tiny / gpu / paper
preset = "tiny"       # triplet preset trained or loaded when `models` is empty
models = []           # hub ids or local paths; [] = the controlled triplet (ar, dlm, ar2dlm)
data_dir = ""         # "" = $LAYERWISE_DATA_DIR (the runner passes its data directory)
cache_dir = ""        # "" = $LAYERWISE_CACHE_DIR (the runner passes its cache)
device = "auto"
seed = 0
cpu_threads = 1             # torch threads on CPU: tiny models run fastest on one, on shared cores
stat_seqs = 8               # held-out sequences for finding the super-outlier
stat_len = 128
text_prompts = 16           # held-out text prompts the unmodified model continues (the pool the test set comes from)
max_test_prompts = 8        # non-looping prompts ablated under every condition (the first ones; 0 = all)
compare_prompts = 8         # the first prompts also ablated at the headline site, looping or not (paper B's design)
prompt_len = 32             # prompt tokens
gen_tokens = 32             # tokens generated per text prompt
arith_items = 8             # held-out arithmetic problems
arith_fewshot = 1           # solved problems in front of each question (tiny: prompts stay < 128 tokens)
answer_tokens = 8           # tokens generated per arithmetic answer
diffusion_steps = 0         # denoising steps for the diffusion models; 0 = the model's default ratio
batch_size = 8              # rows per generation call (rows of different conditions share a call)
sites = ["attn_input", "residual"]        # where the channel is zeroed: attention input (paper B), residual stream
definitions = ["attn_input", "residual"]  # where the super-outlier is found (largest max |x| at that site)
headline_site = "attn_input"              # the ledger's site and definition (paper B's); the others are alternatives
headline_definition = "attn_input"
mode = "zero"               # "zero" (paper B) or "mean" (the channel's mean over held-out tokens)
n_draws = 3                 # random control channels per (site, definition)
rank_window = 8             # controls come from the channels within this many magnitude ranks
headline_metric = "rep_2"   # the repetition metric the claims ledger reads
headline_scope = "early"
loop_threshold = 0.2        # a continuation loops when its headline_metric reaches this
min_prompts = 4             # fewer non-looping prompts than this: the claim is not testable on that model
examples = 2                # prompts whose generations are printed per model
n_boot = 1000               # bootstrap resamples for the intervals

# %% tags=["provenance"]
from layerwise.book import provenance
from layerwise.params import coerce_injected

coerce_injected(globals(), "05_outlier_ablation")  # values papermill injected as text get their parameters' types
provenance(profile=profile, models=models or ["ar", "dlm", "ar2dlm"], preset=preset, device=device, seed=seed)

# %%
import json
from functools import partial

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from layerwise import claims, plots
from layerwise.ablation import channel_means, run_conditions
from layerwise.ablation_design import (
    chapter_05_findings,
    condition_means,
    label,
    mark_loops,
    plan_ablations,
    run_screened,
    subset,
    with_groups,
)
from layerwise.data import arithmetic_heldout, eval_sequences
from layerwise.probes import channel_stats
from layerwise.results import save_result
from layerwise.sampling import generate
from layerwise.subjects import load_subjects

plots.style()
subjects = load_subjects(models, preset=preset, data_dir=data_dir or None, cache_dir=cache_dir or None,
                         device=device, cpu_threads=cpu_threads)
print({name: f"{lm.family.value}, {lm.num_layers} blocks" for name, lm in subjects.items()})
headline_label = label(headline_site, headline_definition)

# %% [markdown]
# ## The target channels and their controls
#
# Per definition, the super-outlier is the channel with the largest max $|x|$ at that site (over all
# blocks, as chapter 04); controls are drawn among the channels whose max $|x|$ over the early blocks
# ranks within `rank_window` of the target at the ablated site.

# %%
plans, means = {}, {}
for name, lm in subjects.items():
    ids = eval_sequences(lm.tokenizer, preset, stat_seqs, stat_len, data_dir=data_dir or None,
                         cache_dir=cache_dir or None, seed=seed)
    stats = channel_stats(lm, ids, where=sorted(set(sites) | set(definitions)), batch_size=batch_size)
    plans[name] = plan_ablations(stats, lm.num_layers, sites=sites, definitions=definitions, n_draws=n_draws,
                                 rank_window=rank_window, seed=seed)
    means[name] = ({s: channel_means(lm, ids, where=s, batch_size=batch_size) for s in sites}
                   if mode == "mean" else None)
    p = plans[name]
    agree = f" (the {', '.join(p.same_channel)} definition picks the same channel)" if p.same_channel else ""
    print(f"{name}: super-outlier {p.targets}{agree}; {len(p.conditions)} conditions")
    for lab, ctrl in p.controls.items():
        site, d = lab.split("/")
        early = np.asarray(stats[site].max_abs)[:p.n_early].mean(0)
        ranks = np.argsort(-early).tolist()
        print(f"    {lab:22s} target rank {ranks.index(p.targets[d])}, controls {ctrl} at ranks "
              f"{[ranks.index(c) for c in ctrl]} (max |x| over the early blocks at the {site})")

# %% [markdown]
# ## Generating under every condition

# %%
text_tables, arith_tables, selections = [], [], {}
problems = arithmetic_heldout(arith_items, seed=seed, num_fewshot=arith_fewshot)
gen = partial(generate, progress=False)
for name, lm in subjects.items():
    ids = eval_sequences(lm.tokenizer, preset, text_prompts, prompt_len, data_dir=data_dir or None,
                         cache_dir=cache_dir or None, seed=seed + 1)
    prompts = lm.tokenizer.batch_decode(ids)
    kw = {"steps": diffusion_steps} if diffusion_steps and lm.family.is_diffusion else {}
    # mixed_batches: each batch holds rows of many conditions (one hook per layer, a per-row mask): a small
    # model's generation costs its model calls, so this runs all conditions in a few calls per prompt set
    common = dict(mode=mode, means=means[name], progress=False, batch_size=batch_size, mixed_batches=True, **kw)
    t, selections[name] = run_screened(lm, plans[name], prompts, gen, measure=headline_metric,
                                       threshold=loop_threshold, min_prompts=min_prompts,
                                       max_prompts=max_test_prompts, compare_prompts=compare_prompts,
                                       headline=headline_label, max_new_tokens=gen_tokens, **common)
    text_tables.append(t.assign(model=name))
    arith_tables.append(run_conditions(lm, plans[name].conditions, [p["prompt"] for p in problems], gen,
                                       answers=[p["answer"] for p in problems], max_new_tokens=answer_tokens,
                                       until=["\n"], **common).assign(model=name))
text_df = mark_loops(pd.concat(text_tables, ignore_index=True), measure=headline_metric, threshold=loop_threshold)
arith_df = pd.concat(arith_tables, ignore_index=True)

# %% [markdown]
# ## Which prompts can show loops appearing
#
# The test set of each model: the prompts its unmodified continuation does not loop on.

# %%
# NBVAL_CHECK_OUTPUT
sel_table = pd.DataFrame([{"model": n, "non-looping prompts": s.qualifying, "of": s.n_pool, "tested": s.n,
                           f"unablated {headline_metric} (all prompts)":
                               text_df[(text_df.model == n) & (text_df.kind == "none")][headline_metric].mean(),
                           "testable": s.testable} for n, s in selections.items()]).set_index("model")
print(sel_table.round(3).to_string())
for n, s in selections.items():
    if not s.testable:
        print(f"{n}: not testable: {s.reason}")

# %% [markdown]
# ## Repetition and accuracy per condition
#
# Means per model, ablation (`site/definition`) and condition, on each model's tested non-looping
# prompts; arithmetic accuracy is over all items.

# %%
# NBVAL_CHECK_OUTPUT
cols = ["rep_2", "rep_3", "distinct_2", "loop_frac", "looping"]
table = condition_means(text_df, selections, cols)
acc = (with_groups(arith_df)
       .groupby(["model", "label", "group"]).correct.mean().rename("accuracy").reset_index())
table = table.merge(acc, on=["model", "label", "group"], how="left")
print(table.set_index(["model", "label", "group"]).round(3).to_string())

# %%
labels = list(dict.fromkeys(lab for p in plans.values() for lab in p.controls))
groups = ["none", "outlier/early", "control/early", "outlier/all", "control/all"]
fig, axes = plt.subplots(1, len(labels), figsize=(3.6 * len(labels) + 1, 3.6), sharey=True, squeeze=False)
for ax, lab in zip(axes[0], labels):
    width = 0.8 / len(subjects)
    for j, name in enumerate(subjects):
        sel = text_df[(text_df.model == name) & text_df.prompt_id.isin(selections[name].prompt_ids)]
        d = with_groups(subset(sel, *lab.split("/")))
        per_cond = d.groupby(["group", "condition"])[headline_metric].mean().reset_index()
        xs = np.arange(len(groups)) + (j - (len(subjects) - 1) / 2) * width
        ax.bar(xs, [per_cond[per_cond.group == g][headline_metric].mean() for g in groups], width=width,
               color=plots.model_color(name), alpha=0.8, label=name)
        for x, g in zip(xs, groups):  # the individual control draws
            pts = per_cond[per_cond.group == g][headline_metric]
            if len(pts) > 1:
                ax.plot(np.full(len(pts), x), pts, "k.", ms=4)
    ax.axhline(loop_threshold, color="grey", ls=":", lw=1)
    ax.set_xticks(np.arange(len(groups)), groups, rotation=25, fontsize=8)
    ax.set_title(f"zeroed at the {lab.split('/')[0]}\n(outlier by {lab.split('/')[1]})", fontsize=9)
axes[0, 0].set_ylabel(f"{headline_metric} on non-looping prompts")
axes[0, -1].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# **Figure.** Mean share of repeated word n-grams (`headline_metric`) of the continuations of each
# model's non-looping prompts, per ablated site and outlier definition (panels) and condition; black
# dots: the individual control draws (one random channel each), whose mean is the bar; dotted line:
# the loop threshold. A model with no non-looping prompt has no bar.

# %% [markdown]
# ## Example generations (non-looping prompts)

# %%
for name in subjects:
    ids_shown = list(selections[name].prompt_ids[:examples])
    lines = [f"#### {name} (super-outlier {plans[name].targets})"]
    if not ids_shown:
        lines.append(f"No non-looping prompt: {selections[name].reason}.")
    h = f"{headline_label}/"
    show = ["none", f"{h}outlier/early", f"{h}outlier/all", f"{h}control/early/0"]
    d = text_df[(text_df.model == name) & text_df.condition.isin(show) & text_df.prompt_id.isin(ids_shown)]
    for pid, g in d.groupby("prompt_id"):
        lines.append(f"*prompt {pid}*")
        for _, r in g.set_index("condition").loc[[c for c in show if c in set(g.condition)]].iterrows():
            text = r.text.replace("\n", " ⏎ ").replace("|", "/")[:300]
            lines.append(f"- `{r.name}` ({headline_metric} {r[headline_metric]:.2f}, loop {int(r.loop_len)}): {text}")
    display(Markdown("\n".join(lines)))

# %% [markdown]
# ## Outlier minus control
#
# On each model's non-looping prompts: positive repetition (and loop-onset) differences mean that
# zeroing the super-outlier makes the text loop more than zeroing a comparable channel; the interval
# resamples prompts and control draws. Metrics of a model with too few non-looping prompts are
# flagged not meaningful (`meaningful` False, with the reason).

# %%
# NBVAL_CHECK_OUTPUT
ledger_metrics = claims.testable_ablation_metrics(
    text_df, arith_df, {n: lm.family for n, lm in subjects.items()}, selections=selections,
    repetition_measure=headline_metric, headline_scope=headline_scope, scopes=("early", "all"),
    headline=headline_label, targets={n: p.targets for n, p in plans.items()},
    same_channel={n: p.same_channel for n, p in plans.items()}, n_boot=n_boot, seed=seed)
effects = claims.metrics_table(ledger_metrics)
effects = effects[effects.kind.isin(["repetition", "onset", "accuracy"])]
print(effects[["model", "label", "scope", "kind", "value", "ci_low", "ci_high", "meaningful", "n_prompts"]]
      .round(3).to_string(index=False))

# %%
rep = effects[(effects.kind == "repetition") & (effects.scope == headline_scope)].reset_index(drop=True)
fig, ax = plt.subplots(figsize=(1.5 + 0.55 * len(rep), 3.6))
for i, r in rep.iterrows():
    ok = bool(r.meaningful) and np.isfinite(r.value)
    if np.isfinite(r.value):
        ax.errorbar(i, r.value, yerr=[[r.value - r.ci_low], [r.ci_high - r.value]], fmt="o" if ok else "x",
                    color=plots.model_color(r.model), alpha=1.0 if ok else 0.4, capsize=3)
ax.axhline(0, color="grey", lw=1)
ax.set_xticks(range(len(rep)), [f"{r.model}\n{r.label}" for r in rep.itertuples()], fontsize=7, rotation=30)
ax.set_ylabel(f"{headline_metric}: outlier − control")
plt.show()

# %% [markdown]
# **Figure.** Increase of the repeated-n-gram share on the non-looping prompts when the super-outlier
# is zeroed in the `headline_scope` blocks, relative to zeroing random channels of similar magnitude
# rank, per model and `site/definition`, with 95% bootstrap intervals over prompts and control draws;
# crosses: not testable (too few non-looping prompts), shown for reference.

# %% [markdown]
# For comparison, paper B's design, which this chapter replaces: the same difference on the first
# `compare_prompts` prompts whether or not the unmodified model already loops on them (headline site
# and definition).

# %%
first = text_df[text_df.prompt_id < compare_prompts]
everything = claims.outlier_ablation_metrics(
    subset(first, headline_site, headline_definition), subset(arith_df, headline_site, headline_definition),
    {n: lm.family for n, lm in subjects.items()}, repetition_measure=headline_metric,
    headline_scope=headline_scope, scopes=(headline_scope,), where=headline_site, n_boot=n_boot, seed=seed)
all_prompts = claims.metrics_table(everything)
print(all_prompts[all_prompts.kind == "repetition"][["model", "value", "ci_low", "ci_high", "outlier", "control",
                                                     "n_prompts"]].round(3).to_string(index=False))

# %% [markdown]
# ## Result file and findings

# %%
# NBVAL_CHECK_OUTPUT
path = save_result(
    "05_outlier_ablation", profile=profile, metrics=ledger_metrics,
    models={n: lm.spec.model_id for n, lm in subjects.items()},
    data={"selection": {n: s.to_dict() for n, s in selections.items()},
          "summary": table.to_dict(orient="records"), "effects": effects.to_dict(orient="records"),
          "all_prompts_effects": all_prompts.to_dict(orient="records"),
          "plans": {n: p.summary() for n, p in plans.items()},
          "generations": text_df[["model", "condition", "prompt_id", "text"]].to_dict(orient="records"),
          "params": {"sites": sites, "definitions": definitions, "headline_label": headline_label, "mode": mode,
                     "n_draws": n_draws, "rank_window": rank_window, "gen_tokens": gen_tokens,
                     "text_prompts": text_prompts, "max_test_prompts": max_test_prompts,
                     "compare_prompts": compare_prompts, "arith_items": arith_items, "headline_metric": headline_metric,
                     "headline_scope": headline_scope, "loop_threshold": loop_threshold,
                     "min_prompts": min_prompts, "n_boot": n_boot}},
    cache=cache_dir or None)
print(claims.format_metrics({k: v for k, v in ledger_metrics.items() if "::" not in k and "__" not in k}))

# %%
display(Markdown(chapter_05_findings(json.loads(path.read_text()))))

# %% [markdown]
# ## Run it yourself
#
# The tiny profile runs on a CPU in a few minutes once the tiny triplet is trained. On the 8B
# models (LLaDA's sampler runs the full sequence at every step, so keep `gen_tokens` moderate; a
# larger `text_prompts` pool gives more non-looping prompts):
#
# ```bash
# python -m layerwise.book run --profile paper --chapters 05_outlier_ablation
# # or directly:
# jupytext --to ipynb notebooks/05_outlier_ablation.py -o /tmp/05.ipynb
# papermill /tmp/05.ipynb /tmp/05.out.ipynb -p profile paper -p device cuda \
#   -y '{"models": ["GSAI-ML/LLaDA-8B-Base", "meta-llama/Llama-3.1-8B"],
#        "preset": "gpu", "text_prompts": 256, "max_test_prompts": 32, "compare_prompts": 32,
#        "prompt_len": 128, "gen_tokens": 128, "diffusion_steps": 128,
#        "arith_items": 64, "answer_tokens": 16, "n_draws": 5, "batch_size": 8}'
# ```
