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
# the same?
#
# **What we measure.** For each model we find its super-outlier at the attention input on held-out
# text (`layerwise.probes.channel_stats`), then generate under:
#
# - `none`: the unmodified model;
# - `outlier/early`, `outlier/all`: the super-outlier channel of the attention input zeroed in the
#   early blocks or in every block (`layerwise.ablation.ablate_channels`, reversible hooks);
# - `control/...`: the same with a random channel of similar magnitude rank instead, one per draw
#   (`layerwise.ablation.random_control_channels`: the next-largest channels, the outlier excluded).
#
# We score every generation for **repetition** (rep-n: the share of word n-grams that repeat an
# earlier one; distinct-n; the longest loop, i.e. the longest span made of one unit repeated at least
# twice) on continuations of held-out text, and for **task accuracy** on held-out arithmetic (exact
# match of the first number after "Answer:"). The ledger number is the outlier's repetition minus the
# control's (mean over draws), averaged over prompts, with a bootstrap interval that resamples both
# prompts and control draws.

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
text_prompts = 8            # held-out text prompts continued under each condition
prompt_len = 32             # prompt tokens
gen_tokens = 32             # tokens generated per text prompt
arith_items = 8             # held-out arithmetic problems
arith_fewshot = 1           # solved problems in front of each question (tiny: prompts stay < 128 tokens)
answer_tokens = 8           # tokens generated per arithmetic answer
diffusion_steps = 0         # denoising steps for the diffusion models; 0 = the model's default ratio
batch_size = 8
where = "attn_input"        # ablated site: "attn_input" (paper B) or "residual"
mode = "zero"               # "zero" (paper B) or "mean" (the channel's mean over held-out tokens)
n_draws = 3                 # random control channels per scope
rank_window = 8             # controls come from the channels within this many magnitude ranks
headline_metric = "rep_2"   # the repetition metric the claims ledger reads
headline_scope = "early"
examples = 2                # prompts whose generations are printed per model
n_boot = 1000               # bootstrap resamples for the intervals

# %% tags=["provenance"]
from layerwise.book import provenance
from layerwise.params import coerce_injected

coerce_injected(globals(), "05_outlier_ablation")  # values papermill injected as text get their parameters' types
provenance(profile=profile, models=models or ["ar", "dlm", "ar2dlm"], preset=preset, device=device, seed=seed)

# %%
from functools import partial

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from layerwise import claims, plots
from layerwise.ablation import ablation_conditions, channel_means, random_control_channels, run_conditions
from layerwise.data import arithmetic_heldout, eval_sequences
from layerwise.probes import channel_stats
from layerwise.results import save_result
from layerwise.sampling import generate
from layerwise.subjects import load_subjects

plots.style()
subjects = load_subjects(models, preset=preset, data_dir=data_dir or None, cache_dir=cache_dir or None,
                         device=device, cpu_threads=cpu_threads)
print({name: f"{lm.family.value}, {lm.num_layers} blocks" for name, lm in subjects.items()})

# %% [markdown]
# ## The target channel and its controls
#
# The super-outlier is the channel with the largest max $|x|$ at the ablated site; controls are drawn
# among the channels whose max $|x|$ over the early blocks ranks within `rank_window` of it.

# %%
plans = {}
for name, lm in subjects.items():
    ids = eval_sequences(lm.tokenizer, preset, stat_seqs, stat_len, data_dir=data_dir or None,
                         cache_dir=cache_dir or None, seed=seed)
    s = channel_stats(lm, ids, where=where, batch_size=batch_size)[where]
    n_early = len(claims.early_layers(lm.num_layers))  # the first ceil(L/3) blocks
    target = s.super_outlier
    controls = random_control_channels(s.max_abs[:n_early], target, n_draws=n_draws, seed=seed,
                                       rank_window=rank_window)
    ranks = np.argsort(-s.max_abs[:n_early].mean(0)).tolist()
    plans[name] = {"target": target, "controls": controls, "n_early": n_early,
                   "conditions": ablation_conditions(target, {"early": list(range(n_early)), "all": "all"}, controls),
                   "means": channel_means(lm, ids, where=where, batch_size=batch_size) if mode == "mean" else None,
                   "target_ratio": float(s.outlier_ratio[:n_early].mean())}
    print(f"{name}: super-outlier channel {target} (early outlier ratio {plans[name]['target_ratio']:.1f}); "
          f"controls {controls} at magnitude ranks {[ranks.index(c) for c in controls]}")

# %% [markdown]
# ## Generating under every condition

# %%
text_tables, arith_tables = [], []
problems = arithmetic_heldout(arith_items, seed=seed, num_fewshot=arith_fewshot)
for name, lm in subjects.items():
    ids = eval_sequences(lm.tokenizer, preset, text_prompts, prompt_len, data_dir=data_dir or None,
                         cache_dir=cache_dir or None, seed=seed + 1)
    prompts = lm.tokenizer.batch_decode(ids)
    kw = {"steps": diffusion_steps} if diffusion_steps and lm.family.is_diffusion else {}
    plan = plans[name]
    common = dict(mode=mode, where=where, means=plan["means"])
    text_tables.append(run_conditions(
        lm, plan["conditions"], prompts, partial(generate, progress=False),
        max_new_tokens=gen_tokens, batch_size=batch_size, **common, **kw).assign(model=name))
    arith_tables.append(run_conditions(
        lm, plan["conditions"], [p["prompt"] for p in problems], partial(generate, progress=False),
        answers=[p["answer"] for p in problems], max_new_tokens=answer_tokens, batch_size=batch_size,
        until=["\n"], **common, **kw).assign(model=name))
text_df = pd.concat(text_tables, ignore_index=True)
arith_df = pd.concat(arith_tables, ignore_index=True)

# %% [markdown]
# ## Repetition and accuracy per condition

# %%
# NBVAL_CHECK_OUTPUT
cols = ["rep_1", "rep_2", "rep_3", "distinct_2", "loop_frac", "loop_len"]
table = (text_df.assign(group=text_df.kind + "/" + text_df.scope.replace("", "-"))
         .groupby(["model", "group"])[cols].mean())
table["accuracy"] = (arith_df.assign(group=arith_df.kind + "/" + arith_df.scope.replace("", "-"))
                     .groupby(["model", "group"]).correct.mean())
print(table.round(3).to_string())

# %%
groups = ["none/-", "outlier/early", "control/early", "outlier/all", "control/all"]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for ax, (df, col, ylabel) in zip(axes, [(text_df, headline_metric, f"{headline_metric} (text continuations)"),
                                        (arith_df, "correct", "arithmetic exact match")]):
    width = 0.8 / len(subjects)
    for j, name in enumerate(subjects):
        d = df[df.model == name].assign(group=lambda x: x.kind + "/" + x.scope.replace("", "-"))
        # per draw (controls) or per condition: mean over prompts; dots show the draws
        per_cond = d.groupby(["group", "condition"])[col].mean().reset_index()
        xs = np.arange(len(groups)) + (j - (len(subjects) - 1) / 2) * width
        means = [per_cond[per_cond.group == g][col].mean() for g in groups]
        ax.bar(xs, means, width=width, color=plots.model_color(name), alpha=0.8, label=name)
        for x, g in zip(xs, groups):
            pts = per_cond[per_cond.group == g][col]
            if len(pts) > 1:
                ax.plot(np.full(len(pts), x), pts, "k.", ms=4)
    ax.set_xticks(np.arange(len(groups)), groups, rotation=20)
    ax.set_ylabel(ylabel)
axes[0].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# **Figure.** Left: mean share of repeated word n-grams (`headline_metric`) in the continuations of
# held-out text; right: exact match on held-out arithmetic; per model (bars) and condition. Black dots:
# the individual control draws (one random channel each), whose mean is the bar.

# %% [markdown]
# ## Example generations

# %%
show = ["none", "outlier/early", "outlier/all", "control/early/0"]
for name in subjects:
    d = text_df[(text_df.model == name) & text_df.condition.isin(show) & (text_df.prompt_id < examples)]
    lines = [f"#### {name} (super-outlier channel {plans[name]['target']})"]
    for pid, g in d.groupby("prompt_id"):
        lines.append(f"*prompt {pid}*")
        for _, r in g.set_index("condition").loc[[c for c in show if c in set(g.condition)]].iterrows():
            text = r.text.replace("\n", " ⏎ ").replace("|", "/")[:300]
            lines.append(f"- `{r.name}` ({headline_metric} {r[headline_metric]:.2f}, loop {int(r.loop_len)}): {text}")
    display(Markdown("\n".join(lines)))

# %% [markdown]
# ## Outlier minus control
#
# Positive repetition differences mean the outlier's ablation makes the text more repetitive than
# ablating a comparable channel; the interval resamples prompts and control draws.

# %%
# NBVAL_CHECK_OUTPUT
ledger_metrics = claims.outlier_ablation_metrics(
    text_df, arith_df, {n: lm.family for n, lm in subjects.items()}, repetition_measure=headline_metric,
    headline_scope=headline_scope, scopes=("early", "all"), targets={n: p["target"] for n, p in plans.items()},
    where=where, n_boot=n_boot, seed=seed)
effects = claims.metrics_table(ledger_metrics)  # one row per (model, scope, kind)
print(effects.drop(columns=["metric"]).round(3).to_string())

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.4))
rep = effects[effects.kind == "repetition"].reset_index(drop=True)
for i, r in rep.iterrows():
    ax.errorbar(i, r.value, yerr=[[r.value - r.ci_low], [r.ci_high - r.value]], fmt="o",
                color=plots.model_color(r.model), capsize=3)
ax.axhline(0, color="grey", lw=1)
ax.set_xticks(range(len(rep)), [f"{r.model}\n{r.scope}" for r in rep.itertuples()], fontsize=8)
ax.set_ylabel(f"{headline_metric}: outlier − control")
plt.show()

# %% [markdown]
# **Figure.** Increase of the repeated-n-gram share when the super-outlier is zeroed, relative to
# zeroing random channels of similar magnitude rank, per model and layer scope, with 95% bootstrap
# intervals over prompts and control draws.

# %% [markdown]
# ## Result file

# %%
# NBVAL_CHECK_OUTPUT
path = save_result(
    "05_outlier_ablation", profile=profile, metrics=ledger_metrics,
    models={n: lm.spec.model_id for n, lm in subjects.items()},
    data={"summary": table.reset_index().to_dict(orient="records"), "effects": effects.to_dict(orient="records"),
          "plans": {n: {k: v for k, v in p.items() if k not in ("conditions", "means")} for n, p in plans.items()},
          "generations": text_df[["model", "condition", "prompt_id", "text"]].to_dict(orient="records"),
          "params": {"where": where, "mode": mode, "n_draws": n_draws,
                     "rank_window": rank_window, "gen_tokens": gen_tokens, "text_prompts": text_prompts,
                     "arith_items": arith_items, "headline_metric": headline_metric, "n_boot": n_boot}},
    cache=cache_dir or None)
print(claims.format_metrics(ledger_metrics))

# %% [markdown]
# ## Run it yourself
#
# The tiny profile runs on a CPU in about a minute once the tiny triplet is trained. On the 8B
# models (LLaDA's sampler runs the full sequence at every step, so keep `gen_tokens` moderate):
#
# ```bash
# python -m layerwise.book run --profile paper --chapters 05_outlier_ablation
# # or directly:
# jupytext --to ipynb notebooks/05_outlier_ablation.py -o /tmp/05.ipynb
# papermill /tmp/05.ipynb /tmp/05.out.ipynb -p profile paper -p device cuda \
#   -y '{"models": ["GSAI-ML/LLaDA-8B-Base", "meta-llama/Llama-3.1-8B"],
#        "preset": "gpu", "text_prompts": 32, "prompt_len": 128, "gen_tokens": 128, "diffusion_steps": 128,
#        "arith_items": 64, "answer_tokens": 16, "n_draws": 5, "batch_size": 8}'
# ```
