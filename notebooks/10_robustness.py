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
# # Robustness: training seeds
#
# **Why.** Every interval in chapters 01-07 covers the evaluation items (sequences, problems, modules)
# of *one* trained triplet. Two triplets trained from different random initialisations, in a
# different data order and with different masking noise, are different models: a difference between
# `dlm` and `ar` smaller than the spread between training seeds says nothing about the objective. The
# claims ledger therefore combines the training seeds of each metric
# (`layerwise.stats.seed_item_interval`: a t-interval over the seeds' values widened by the item
# variance) and says "seed variance not measured" while a metric has one seed.
#
# **What this chapter does.** For each training seed $k$ in `train_seeds` (seed 0 is the preset's own,
# trained by chapter 00) it
#
# 1. trains the triplet of that seed if it is missing (`ar`, `dlm`, `ar2dlm`, and with `branch_runs`
#    the preset's extra `ar2dlm` branch points), into `<cache>/triplet/<preset>-seed<k>/`;
# 2. runs the competence report (`layerwise.training.competence`) on its final models;
# 3. re-runs the chapters in `rerun` on it through the book's runner
#    (`layerwise.book.chapters.run_seed_replicates`): each chapter computes its claim metrics exactly
#    as in its own page and writes them as a seed replicate (`<chapter>@train_seed-<k>.json`) beside
#    seed 0's result file;
#
# and then shows, per claim metric, the value of every seed, the seed-to-seed spread (standard
# deviation and range) and the ledger's interval over the seeds.
#
# With `train_seeds: []` it trains and re-runs nothing: it gathers every seed whose result files are
# present (seeds trained in other GPU sessions or cluster jobs, and the competence rows this chapter's
# earlier runs scored) and draws this page from them, on any machine.
#
# The chapter applies to the controlled triplet only: the papers' 8B models were each trained once
# (one seed), so with hub models (`models` not empty, the `paper` profile) it says so and stops.

# %% tags=["parameters"]
profile = "tiny"      # which profile file produced this run: tiny / gpu / paper
preset = "tiny"       # triplet preset trained or loaded when `models` is empty
models = []           # hub ids or local paths; [] = the controlled triplet (ar, dlm, ar2dlm)
data_dir = ""         # "" = $LAYERWISE_DATA_DIR (the runner passes its data directory)
cache_dir = ""        # "" = $LAYERWISE_CACHE_DIR (the runner passes its cache)
device = "auto"
seed = 0
train_seeds = [1]     # training seeds besides seed 0 (the preset's own, trained by chapter 00)
branch_runs = False   # also train and score the preset's extra ar2dlm branch runs (ar2dlm_b<percent>) per seed
rerun = ["01_layer_similarity"]   # chapters re-run on each training seed (their claim metrics get seed replicates)
force = False         # re-run those chapters even when unchanged since their last run on that seed
competence_items = 32     # competence report: held-out arithmetic problems per model (as chapter 00)
competence_passages = 4   # competence report: held-out text passages per model (bits per byte)
competence_chars = 400    # competence report: characters per held-out passage
mc_samples = 2            # competence report: Monte-Carlo samples per window of a diffusion model's ELBO
arith_batch = 32          # competence report: generation batch size
notebooks_dir = ""    # "" = $LAYERWISE_NOTEBOOKS, else the notebooks/ folder of the book this page runs in

# %% tags=["provenance"]
from layerwise.book import provenance
from layerwise.params import coerce_injected

coerce_injected(globals(), "10_robustness")  # values papermill injected as text get their parameters' types
provenance(profile=profile, models=models or ["ar", "dlm", "ar2dlm"], preset=preset, device=device, seed=seed,
           train_seeds=train_seeds, rerun=rerun)

# %%
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from layerwise import plots
from layerwise.book import NOTEBOOKS_ENV
from layerwise.book.chapters import run_seed_replicates
from layerwise.config import cache_dir as resolve_cache_dir
from layerwise.ledger import CLAIMS, seed_replicates, seed_table
from layerwise.results import load_results, save_result
from layerwise.training import OBJECTIVES, competence, ensure_triplet, get_preset, is_complete, run_dir, run_names

plots.style()
applies = not models
if not applies:
    display(Markdown("**Not applicable.** The subjects are hub models, each trained once by its authors: there is "
                     "no second training seed to compare. This chapter runs on the controlled triplet "
                     "(`models: []`, the `tiny` and `gpu` profiles)."))
seeds = sorted({0, *train_seeds}) if applies else []
base = get_preset(preset)
runs = [o.value for o in OBJECTIVES] + ([r for r in run_names(base) if r not in {o.value for o in OBJECTIVES}]
                                        if branch_runs else [])
print(f"preset {base.name}: training seeds trained or loaded here {seeds}; runs {', '.join(runs)}; chapters "
      + (f"re-run per seed: {', '.join(rerun) or 'none'}" if train_seeds else
         f"read from the seeds' result files: {', '.join(rerun) or 'none'}"))

# %% [markdown]
# ## Train the triplet of each seed
#
# The training seed sets the initial weights, the order of the training rows and the masking noise;
# the corpus, tokenizer and held-out data are the same for every seed. Seed 0 is chapter 00's triplet
# (not trained here: when it is missing, its numbers come from chapter 00's result file, if any).

# %%
paths: dict[int, dict[str, Path]] = {}
for k in seeds:
    p = get_preset(preset, seed=k)
    if k == 0:
        found = {r: run_dir(p, r, cache_dir or None) for r in runs}
        if all(is_complete(d, p) for d in found.values()):
            paths[0] = found
        continue
    t0 = time.perf_counter()
    paths[k] = ensure_triplet(p, data_dir=data_dir or None, cache_dir=cache_dir or None, device=device,
                              objectives=runs)
    print(f"seed {k}: ensure_triplet {time.perf_counter() - t0:.1f} s -> {paths[k]['ar'].parent}")
print(f"trained triplets: seeds {sorted(paths)}")

# %% [markdown]
# ## Competence per seed
#
# The same report as chapter 00's (same settings, so seed 0's rows are re-used from its store), on the
# final models only: held-out arithmetic exact match with each model's own sampler (95% Wilson
# interval) and held-out bits per byte by its own likelihood (an ELBO bound for diffusion models).

# %%
report = pd.DataFrame()
if paths:
    settings = competence.CompetenceSettings(arith_items=competence_items, text_passages=competence_passages,
                                             text_chars=competence_chars, mc_samples=mc_samples,
                                             batch_size=arith_batch, seed=seed)
    t0 = time.perf_counter()
    report = competence.competence_report([paths[k][r] for k in paths for r in runs], settings, device=device,
                                          data_dir=data_dir or None, cache_dir=cache_dir or None)
    report = report.assign(seed=report.seed.fillna(0).astype(int))
    print(f"competence report: {len(report)} models in {time.perf_counter() - t0:.1f} s")
earlier_results = load_results(profile, cache=cache_dir or None) if applies else {}
if applies and 0 not in paths:  # seed 0 from chapter 00's result file, when its triplet is not in this cache
    rows = earlier_results.get("00_pretraining", {}).get("data", {}).get("competence", [])
    seed0 = pd.DataFrame([r for r in rows if r.get("final") and r.get("run") in runs])
    if len(seed0):
        report = pd.concat([seed0.assign(seed=0), report], ignore_index=True)
        print(f"seed 0: {len(seed0)} final models from chapter 00's result file")
# seeds this run did not train (another GPU session trained and scored them): their rows from this chapter's
# earlier result file, when it is of the same preset configuration
earlier = competence.earlier_seed_rows(earlier_results, config_hash=base.config_hash(), runs=runs,
                                       skip_seeds=[0, *paths])
if len(earlier):
    report = pd.concat([report, earlier], ignore_index=True).sort_values(["seed"], kind="stable", ignore_index=True)
    print(f"seeds {sorted(earlier.seed.unique().tolist())}: {len(earlier)} final models from this chapter's earlier "
          "result file (scored by an earlier run, e.g. in another GPU session)")

# %%
# NBVAL_CHECK_OUTPUT
if len(report):
    fig, (ax_em, ax_bpb) = plt.subplots(1, 2, figsize=(10, 3.6))
    shown_seeds = sorted(report.seed.unique())
    for i, run in enumerate(runs):
        g = report[report.run == run].sort_values("seed")
        x = i + 0.12 * (np.arange(len(g)) - (len(g) - 1) / 2)
        kw = dict(color=plots.model_color(run), ls="none", marker="o")
        ax_em.errorbar(x, g.exact_match, yerr=[g.exact_match - g.em_ci_low, g.em_ci_high - g.exact_match],
                       capsize=3, label=run, **kw)
        ax_bpb.plot(x, g.bits_per_byte, label=run, **kw)
    ax_em.axhline(report.chance.max(), color="grey", ls="--", lw=1, label="chance (constant guess)")
    fewer = [f"{r}: {', '.join(map(str, sorted(set(g))))}" for r, g in report.groupby("run", sort=False).seed
             if set(g) != set(shown_seeds)]  # runs scored on some of the seeds only
    for ax, label in ((ax_em, "held-out exact match (fraction)"),
                      (ax_bpb, f"held-out bits per byte ({report.text_task.iloc[0]})")):
        ax.set_xticks(range(len(runs)), runs)
        ax.set_xlabel("run")
        ax.set_ylabel(label)
    ax_em.set_ylim(0, 1)
    ax_em.legend(fontsize=8)
    fig.supxlabel("points of a run, left to right: training seeds " + ", ".join(map(str, shown_seeds))
                  + "".join(f"; {f}" for f in fewer), fontsize=9)
    fig.tight_layout()
    plt.show()
    display(Markdown(f"**Figure 1.** Competence of each run's final model per training seed. Left: held-out "
                     f"arithmetic exact match ({competence_items} problems, 95% Wilson intervals; dashed: chance). "
                     f"Right: held-out bits per byte ({competence_passages} passages; diffusion models: ELBO bound "
                     f"with {mc_samples} Monte-Carlo samples per window)."))
    spread = (report.groupby("run", sort=False)
              .agg(seeds=("seed", "nunique"), exact_match_mean=("exact_match", "mean"),
                   exact_match_sd=("exact_match", "std"), bits_per_byte_mean=("bits_per_byte", "mean"),
                   bits_per_byte_sd=("bits_per_byte", "std"))
              .reindex([r for r in runs if r in set(report.run)]))
    print(spread.round(3).to_string())
    print(report.pivot_table(index="run", columns="seed", values="exact_match").reindex(spread.index)
          .round(3).to_string())

# %% [markdown]
# ## The claim metrics on each seed
#
# Each chapter in `rerun` runs again, unchanged, on every seed's triplet: the runner sets
# `$LAYERWISE_TRAIN_SEED`, `layerwise.subjects.load_subjects` loads that seed's triplet, and
# `layerwise.results.save_result` files the chapter's result as `<chapter>@train_seed-<k>.json`. Their
# notebooks are kept under `<cache>/runs/<profile>/10_robustness/train_seed-<k>/`; a chapter unchanged
# since its last run on a seed is not run again.

# %%
if applies and rerun and train_seeds:
    nb_dir = notebooks_dir or os.environ.get(NOTEBOOKS_ENV) or next(
        (str(d / "notebooks") for d in [Path.cwd(), *Path.cwd().parents]
         if (d / "notebooks" / "10_robustness.py").is_file()), None)
    t0 = time.perf_counter()
    status = run_seed_replicates(profile, rerun, [k for k in seeds if k],
                                 out=resolve_cache_dir(cache_dir or None) / "runs" / profile / "10_robustness",
                                 notebooks_dir=nb_dir, cache=cache_dir or None, force=force)
    print(f"chapters per seed ({time.perf_counter() - t0:.0f} s): {status}")

# %% [markdown]
# ## Seed-to-seed spread
#
# One row per claim part read from the re-run chapters: its headline value on each training seed, the
# standard deviation and range over seeds, and the ledger's value and 95% interval over the seeds (the
# mean of the seeds; the interval covers both the training seed and the evaluation items).

# %%
results = load_results(profile, cache=cache_dir or None) if applies else {}
reps = seed_replicates(results)
reps = reps[reps.chapter.isin(rerun)] if applies else reps
if len(reps):
    wide = reps.pivot_table(index=["claim", "part"], columns="train_seed", values="value", sort=False)
    wide = wide[sorted(wide.columns)]  # seed order, whichever session filed a seed first
    wide.columns = [f"seed {c}" for c in wide.columns]
    grouped = reps.groupby(["claim", "part"], sort=False)
    testable = reps[reps.testable].groupby(["claim", "part"], sort=False)  # the seeds the ledger combines
    summary = wide.assign(
        **{"not testable": grouped.apply(lambda g: ", ".join(f"seed {k}" for k in g.train_seed[~g.testable]) or "–",
                                         include_groups=False),
           "seed SD": testable.value.std(),
           "range": (testable.value.max() - testable.value.min()).where(testable.value.count() > 1),
           "over seeds (95% CI)": grouped.apply(lambda g: f"{g.combined.iloc[0]:.3g} [{g.combined_low.iloc[0]:.3g}, "
                                                           f"{g.combined_high.iloc[0]:.3g}]", include_groups=False)})

# %%
# NBVAL_CHECK_OUTPUT
if len(reps):
    table = summary.reset_index().astype(object)
    display(Markdown(table.where(table.notna(), None).to_markdown(index=False, floatfmt=".3g", missingval="–")))
    display(Markdown("**Table 1.** Per claim part: the headline metric on each training seed, the seeds on which "
                     "the chapter flagged its design unable to show the effect (left out by the ledger), the "
                     "seed-to-seed standard deviation and range of the others, and the ledger's estimate over them; "
                     "–: the chapter did not run on that seed."))
else:
    print("no claim metrics: " + ("not applicable to hub models" if not applies else
                                  "run the chapters in `rerun` first (seed 0: layerwise-book run)"))

# %%
if len(reps):
    keys = list(dict.fromkeys(zip(reps.claim, reps.part)))
    ncol = min(3, len(keys))
    nrow = -(-len(keys) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.9 * nrow), squeeze=False)
    parts = {(c.cid, p.label or p.metric): p for c in CLAIMS for p in c.parts}
    for ax, key in zip(axes.flat, keys):
        g = reps[(reps.claim == key[0]) & (reps.part == key[1])].sort_values("train_seed")
        x = g.train_seed.astype(int).to_numpy()
        lo, hi = g.ci_low.to_numpy(dtype=float), g.ci_high.to_numpy(dtype=float)
        ok = g.testable.to_numpy(dtype=bool)
        for sel, style in ((ok, {"fmt": "o", "color": "k"}), (~ok, {"fmt": "x", "color": "grey", "alpha": 0.6})):
            if sel.any():
                ax.errorbar(x[sel], g.value[sel], yerr=[(g.value - lo)[sel], (hi - g.value)[sel]], capsize=3,
                            label=None if sel is ok else "not testable (left out)", **style)
        first = g.iloc[0]
        if first.n_seeds > 1 and pd.notna(first.combined_low):
            ax.axhspan(first.combined_low, first.combined_high, color="C0", alpha=0.15, label="over seeds, 95% CI")
            ax.axhline(first.combined, color="C0", lw=1)
        lim = parts[key].limits(results[parts[key].chapter]["metrics"].get(parts[key].metric))
        if lim is not None:
            ax.axhline(lim[0], color="C3", ls="--", lw=1, label="paper's bound")
        # the axis fits the seeds, their item intervals, the mean and the bound: with two or three seeds the
        # t-interval over seeds can be many times wider, and would flatten the seeds' differences
        ys = np.array([*lo, *hi, *g.value, first.combined, lim[0] if lim is not None else np.nan], dtype=float)
        ys = ys[np.isfinite(ys)]
        if ys.size:
            pad = 0.12 * ((ys.max() - ys.min()) or abs(ys.max()) or 1.0)
            y0, y1 = ys.min() - pad, ys.max() + pad
            ax.set_ylim(y0, y1)
            if first.n_seeds > 1 and (first.combined_low < y0 or first.combined_high > y1):
                ax.text(0.02, 0.03, f"over seeds: [{first.combined_low:.3g}, {first.combined_high:.3g}], beyond the axis",
                        transform=ax.transAxes, fontsize=6, color="C0")
        ax.set_title(f"{key[0]}: {key[1]}", fontsize=9)
        ax.set_xticks(x)
        ax.set_xlabel("training seed")
        ax.set_ylabel("metric (its own units)")
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    handles = {lab: h for a in axes.flat for h, lab in zip(*a.get_legend_handles_labels())}  # every panel's labels
    axes.flat[0].legend(handles.values(), handles.keys(), fontsize=7)
    fig.tight_layout()
    plt.show()
    display(Markdown("**Figure 2.** Each claim part's headline metric per training seed (95% item intervals); "
                     "grey crosses: seeds the chapter flagged not testable, which the ledger leaves out; "
                     "shaded: the ledger's 95% interval over the seeds around their mean (where it reaches beyond the axis, "
                     "its ends are printed in the panel); dashed: the bound "
                     "on the paper's side (chapter 08 derives each one). A spread between seeds as wide as the "
                     "distance to the bound makes one seed's verdict fragile."))

# %% [markdown]
# ## What the ledger now reads
#
# The ledger's seed table for the same parts: the number of seeds and their standard deviation. A part
# measured on one seed still says "seed variance not measured". Chapter 08 shows the verdicts with
# these intervals once it runs after this chapter.

# %%
if len(reps):
    ledger_seeds = seed_table(results)
    display(ledger_seeds[ledger_seeds.set_index(["claim", "part"]).index.isin(list(wide.index))]
            .reset_index(drop=True))

# %%
if applies:
    out = save_result(
        "10_robustness", profile=profile, cache=cache_dir or None, metrics={},
        models={f"{r}@seed{k}": str(paths[k][r]) for k in paths for r in paths[k]},
        data={"preset": base.name, "config_hash": base.config_hash(),
              "seeds": sorted({*seeds, *(int(k) for k in report.get("seed", []))}), "runs": runs, "rerun": rerun,
              # with the rows of runs not scored here (an earlier run's branch runs), so that none is dropped
              "competence": pd.concat([report.drop(columns=[c for c in ("path", "reused") if c in report]),
                                       competence.rows_of_other_runs(earlier_results, config_hash=base.config_hash(),
                                                                     runs=runs)],
                                      ignore_index=True).to_dict("records"),
              "replicates": reps.to_dict("records")})
    print(out)

# %% [markdown]
# ## Findings
#
# Generated from the result file above (`layerwise.findings.robustness`): each run's competence per
# training seed, and per claim part how far the seeds spread against one seed's item interval.

# %%
# NBVAL_CHECK_OUTPUT
if applies:
    import json

    from layerwise import findings

    display(Markdown(findings.robustness(json.loads(out.read_text()))))

# %% [markdown]
# ## Run it yourself
#
# ```bash
# # train seed 1 of the tiny triplet, score it and re-run chapter 01 on it (CPU, about 2 minutes)
# python -m layerwise.book run --profile tiny --chapters 10_robustness
# # two more seeds, and chapters 01 and 02 re-run on each
# python -m layerwise.book run --profile tiny --chapters 10_robustness -p train_seeds='[1, 2]' -p rerun='[01_layer_similarity, 02_token_similarity]'
# ```
#
# Any chapter runs on another training seed when `$LAYERWISE_TRAIN_SEED` is set for the runner (give it
# its own `--out` folder): its result file is then a seed replicate that the ledger combines.
