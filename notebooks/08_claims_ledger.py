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
# # Claims ledger
#
# One row per quantitative claim of the two papers: the paper's number, ours with its 95% confidence
# interval, the margin the paper's own wording sets, a verdict, and how the verdict depends on the
# claim's alternative definitions. Nothing in the tables is typed in: they are built from the result
# files that the chapters wrote when they ran (`layerwise.ledger`).
#
# ## The verdict rule
#
# **Margins.** A claim part is a metric and the side of a *bound* the paper puts it on. The bound is
# not zero: it lies beyond the no-effect value by a margin derived from the paper's own words and
# numbers. "Keeps 93-97%" becomes a retention of at least 0.90; "collapses" a retention under 0.5;
# "1.8% vs 64.7%" a difference of the drops of at least a quarter of the paper's 62.9-point gap;
# "+8.4% vs -8.4%" at least half of each; "higher" for a similarity profile a quarter of the spread of
# the similarity between blocks; "lower alpha-Hill" at least 10% lower. A margin relative to a measured
# scale (a spread, the AR model's own value) reads that scale from the result file. The table of
# margins below gives every part's bound and its derivation.
#
# **Intervals.** 95% intervals over the evaluation items (sequences, prompts, weight matrices, as the
# chapter says). Where a chapter ran several training seeds, the seeds' values are combined: a
# t-interval over the seeds widened by the mean item variance (`layerwise.stats.seed_item_interval`;
# the seeds share the evaluation items, so item noise does not average out). With one seed the item
# interval stands and the ledger says that seed variance was not measured: two runs of the same
# objective can differ by more than one run's item interval.
#
# **Definitions.** Each part lists pre-registered alternative definitions, fixed before the results
# were read: A1, A4 and B6 with and without block 0 (the embedding-to-first-block step); A3 and A5 with
# the `early` and `redundant` skipping strategies on every generation task; B1 on the attention input
# and on the residual stream; B2 with the super-outlier zeroed at either site; B3 with both
# alpha-Hill cut-off rules (fixed and KS); B4 on every task and metric evaluated (generation exact
# match, bits per byte); B7 with the dominant channel by max and by mean $|x|$. B5 on every task and
# metric evaluated too, added after the first results were read (chapter 07 had measured bits per byte
# beside exact match and the two disagreed). Result files written before carry only its headline; their
# definitions are read from the same file's table of the same computation (`layerwise.claims.backfill`).
# A definition that did not run is named in the sentences below.
#
# **Verdicts** (per definition, then per part, then per claim):
#
# - **reproduced**: every definition's whole interval lies beyond the margin, on the paper's side;
# - **not reproduced**: every definition's whole interval lies on the other side of the bound (also
#   when the estimate is in the paper's direction but short of its margin: the summary says which);
# - **depends on definition**: some definitions reproduce the claim and others do not (the sensitivity
#   table says which way each goes);
# - **inconclusive**: an interval straddles the bound, or a number or the margin's scale is missing;
# - **not testable**: the chapter flagged that its design cannot show the effect (a baseline at chance,
#   a model already looping), with the reason;
# - **not run**: the chapter did not produce the metric in this profile.
#
# A claim with several parts (e.g. "the diffusion model keeps > 90% *and* the AR model collapses") is
# reproduced only when every part is, and not reproduced when any part is. A claim about *every* member
# of a family (A8: every stage of the diffusion schedule) reads its members as components, not as
# alternative definitions: one stage on the other side of the bound makes it not reproduced.
#
# Scale matters: the papers study 7-8B models trained on trillions of tokens; the published book's
# subjects are the controlled triplet (same architecture, data order, tokenizer and initial weights,
# three training objectives) at a far smaller scale. A verdict here says whether the *mechanism* shows
# up in a controlled setting, not whether the 8B numbers are right. The `paper` profile re-runs every
# chapter on the 8B models.

# %% tags=["parameters"]
profile = "tiny"      # which profile's result files to read: tiny / gpu / paper
preset = "tiny"
models = []
data_dir = ""
cache_dir = ""
results_dir = ""      # "" = <cache>/results/<profile>
device = "auto"
seed = 0

# %% tags=["provenance"]
from layerwise.book import provenance
from layerwise.params import coerce_injected

coerce_injected(globals(), "08_claims_ledger")  # values papermill injected as text get their parameters' types
provenance(profile=profile, models=models or ["ar", "dlm", "ar2dlm"])

# %%
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from layerwise import plots
from layerwise.ledger import (
    CLAIMS,
    build_ledger,
    margins_table,
    normalised_table,
    seed_table,
    sensitivity_table,
)
from layerwise.results import load_results, metric, save_result

plots.style()
results = load_results(profile, results_dir=results_dir or None, cache=cache_dir or None)
ledger = build_ledger(results)
print(f"result files found for profile {profile!r}: {sorted(results)}")

# %% [markdown]
# ## The ledger

# %%
def _link(chapters: str) -> str:
    """Link the chapters that ran in this profile by their number (a narrow column); name the others (their
    pages are not in this build)."""
    return ", ".join(f"[{c[:2]}]({c}.ipynb)" if c in results else f"{c} (not run)" for c in chapters.split(", "))


columns = ["claim", "verdict", "statement", "ours (95% CI)", "margin (paper's side)", "paper's number", "chapter"]
table = ledger.assign(chapter=ledger["chapter"].map(_link))[columns]
display(Markdown(table.to_markdown(index=False)))

# %% [markdown]
# *Table 1: each claim's verdict; ours: every part's value with its 95% interval and the number of
# training seeds it combines; margin: the side of the bound the paper's wording puts the metric on (a
# relative margin shows its factor, the scale read from the result file and the bound).*
#
# ## In one sentence per claim

# %%
display(Markdown("\n".join(f"- {s}" for s in ledger["summary"])))

# %% [markdown]
# ## Margins and how each follows from the paper

# %%
display(Markdown(margins_table().drop(columns=["metric"]).to_markdown(index=False)))

# %% [markdown]
# *Table 2: per claim part, the side of the bound that reproduces the claim, the no-effect value, the
# derivation of the margin from the paper's wording and number, the paper's own value in the metric's
# units (where it gives one), and the pre-registered definitions (`*` stands for every task the
# chapter evaluated).*
#
# ## Sensitivity to the definition

# %%
display(Markdown(sensitivity_table(results, wide=True).to_markdown(index=False)))

# %% [markdown]
# *Table 3: one column per pre-registered definition of each claim (its part, for claims with two):
# our value with its 95% interval, its verdict against the part's margin and its direction (beyond
# the margin; in the paper's direction but within the margin; the opposite direction). "not run":
# the chapter did not save that definition in this profile.*

# %%
sensitivity = sensitivity_table(results)
display(Markdown(sensitivity.to_markdown(index=False)))

# %% [markdown]
# *Table 4: the same, one row per definition.*
#
# ## Training seeds

# %%
display(Markdown(seed_table(results).to_markdown(index=False)))

# %% [markdown]
# *Table 5: how many training seeds each claim part combines, their values and standard deviation.
# One seed: the interval covers the evaluation items only.*
#
# ## At a glance: ours, the paper's and the margin on one scale
#
# Every part on its own scale, made comparable: 0 is no effect, 1 is the margin's bound, and the
# paper's side lies to the right (the axis is linear between -1 and 1 and logarithmic beyond).

# %%
colors = {"reproduced": "tab:green", "not reproduced": "tab:red", "depends on definition": "tab:purple",
          "inconclusive": "tab:orange", "not testable": "tab:gray", "not run": "lightgray"}
norm = normalised_table(results)
parts = list(dict.fromkeys(zip(norm.claim, norm.part)))
fig, ax = plt.subplots(figsize=(8, 0.6 * len(parts) + 1.4))
ax.axvspan(-1e4, 0, color="tab:red", alpha=0.06, lw=0)
ax.axvspan(1, 1e4, color="tab:green", alpha=0.08, lw=0)
ax.axvline(0, color="k", lw=1)
ax.axvline(1, color="k", ls="--", lw=1)
finite = norm[["x_low", "x_high", "paper_x"]].to_numpy(dtype=float)
finite = finite[np.isfinite(finite)]
span = max(3.0, float(np.abs(finite).max()) * 1.3) if finite.size else 3.0
for i, (cid, part) in enumerate(parts):
    d = norm[(norm.claim == cid) & (norm.part == part)]
    defs = d[d.definition != "headline"]
    for j, (_, r) in enumerate(defs.iterrows()):  # definitions: small open markers, spread vertically
        if np.isfinite(r.x):
            y = i + 0.25 * (j + 1) / (len(defs) + 1) - 0.125
            ax.errorbar([r.x], [y], xerr=[[r.x - r.x_low], [r.x_high - r.x]], fmt="o", ms=4, mfc="white",
                        color=colors[r.verdict], capsize=2, lw=1)
    h = d[d.definition == "headline"].iloc[0]
    if np.isfinite(h.x):
        ax.errorbar([h.x], [i], xerr=[[h.x - h.x_low], [h.x_high - h.x]], fmt="o", ms=7, color=colors[h.verdict],
                    capsize=4, lw=2)
    else:
        ax.text(0.5, i, h.verdict, ha="center", va="center", fontsize=8, color="gray")
    if np.isfinite(h.paper_x):
        ax.plot([h.paper_x], [i], marker="*", ms=12, color="black", ls="none")
ax.set_xscale("symlog", linthresh=1)
ax.set_xlim(-span, span)
verdict_of = dict(zip(zip(norm.claim, norm.part), norm.part_verdict))
ax.set_yticks(range(len(parts)), [f"{c}: {p}\n({verdict_of[c, p]})" for c, p in parts], fontsize=8)
ax.invert_yaxis()
ax.set_xlabel("(ours - no effect) / (margin's bound - no effect)")
ax.set_title("0 = no effect, 1 = the margin (dashed);\ngreen: the paper's side beyond it", fontsize=9, loc="left")
fig.tight_layout()
plt.show()

# %% [markdown]
# *Figure: every claim part on its own normalised scale. Filled marker and bar: our headline value
# with its 95% interval (over seeds where measured); open markers: the pre-registered alternative
# definitions; colour: verdict (green reproduced, red not reproduced, purple depends on definition,
# orange inconclusive, grey not testable); star: the paper's own value where it gives one. Parts that
# did not run have no marker; the verdict under each label is the part's, over all its definitions.*

# %%
counts = ledger["verdict"].value_counts().to_dict()
save_result("08_claims_ledger", profile=profile, results_dir=results_dir or None, cache=cache_dir or None,
            metrics={f"n_{k.replace(' ', '_')}": metric(v) for k, v in counts.items()},
            data={"ledger": ledger.to_dict(orient="records"), "sensitivity": sensitivity.to_dict(orient="records"),
                  "rule": "v2: margins, definitions, seeds", "claims": [c.cid for c in CLAIMS]})
print("verdicts:", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))

# %% [markdown]
# ## Run it yourself
#
# The ledger reads whatever result files the chapters of a profile wrote, so run the chapters first:
#
# ```bash
# python -m layerwise.book run --profile paper          # every chapter on the 8B models, then this page
# # or this page alone with papermill, once the chapters have written their result files:
# jupytext --to ipynb notebooks/08_claims_ledger.py -o /tmp/08.ipynb
# papermill /tmp/08.ipynb /tmp/08.out.ipynb -p profile paper
# ```
