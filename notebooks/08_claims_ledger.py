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
# interval, the models and profile that produced it, a verdict, and the chapter where it is measured.
#
# **The verdict rule** (code: `layerwise.ledger.part_verdict`). Each claim is a statement that a metric
# lies on one side of a threshold (for differences between models, of zero). Our verdict is
#
# - **reproduced** when the whole 95% interval lies on the paper's side,
# - **not reproduced** when the whole interval lies on the other side,
# - **inconclusive** when the interval straddles the threshold, or the metric has no value or interval,
#   or its chapter flagged it not meaningful (a retention whose baseline is not above chance),
# - **not run** when the chapter did not produce the metric in this profile.
#
# A claim with two parts (e.g. "the diffusion model keeps > 90% *and* the AR model does not") is
# reproduced only when both parts are. Nothing in the table is typed in: it is built from the result
# files that the chapters wrote when they ran.
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
from IPython.display import Markdown, display

from layerwise import plots
from layerwise.ledger import CLAIMS, build_ledger
from layerwise.results import load_results, metric, save_result

plots.style()
results = load_results(profile, results_dir=results_dir or None, cache=cache_dir or None)
ledger = build_ledger(results)
print(f"result files found for profile {profile!r}: {sorted(results)}")

# %% [markdown]
# ## The ledger

# %%
# NBVAL_CHECK_OUTPUT
def _link(chapters: str) -> str:
    """Link the chapters that ran in this profile; name the others (their pages are not in this build)."""
    return ", ".join(f"[{c}]({c}.ipynb)" if c in results else f"{c} (not run)" for c in chapters.split(", "))


table = ledger.assign(chapter=ledger["chapter"].map(_link))
display(Markdown(table.to_markdown(index=False)))

# %% [markdown]
# ## At a glance
#
# Each claim part as our value with its 95% interval, on the scale where the paper's threshold is the
# dashed line; the marker's colour is the part's verdict.

# %%
colors = {"reproduced": "tab:green", "not reproduced": "tab:red", "inconclusive": "tab:orange",
          "not run": "lightgray"}
from layerwise.ledger import part_verdict  # noqa: E402

parts = [(c, p) for c in CLAIMS for p in c.parts]
fig, axes = plt.subplots(len(parts), 1, figsize=(7, 0.75 * len(parts) + 0.8), squeeze=False)
for ax, (c, p) in zip(axes[:, 0], parts):
    m = results.get(p.chapter, {}).get("metrics", {}).get(p.metric)
    v = part_verdict(p, m)
    ax.axvline(p.threshold, color="k", ls="--", lw=1)
    if m is not None and m.get("value") is not None:
        ci = m.get("ci") or [m["value"], m["value"]]
        ax.errorbar([m["value"]], [0], xerr=[[m["value"] - ci[0]], [ci[1] - m["value"]]],
                    fmt="o", color=colors[v], capsize=4)
        lo, hi = min(ci[0], p.threshold), max(ci[1], p.threshold)
        pad = 0.15 * (hi - lo) + 1e-6
        ax.set_xlim(lo - pad, hi + pad)
    ax.set_yticks([])
    ax.set_ylabel(f"{c.cid}", rotation=0, ha="right", va="center")
    ax.set_title(f"{p.metric}  (paper: {p.side} {p.threshold:g}) — {v}", fontsize=8, loc="left")
fig.supxlabel("metric value (units as in the chapter; dashed: the claim's threshold)")
fig.tight_layout()
plt.show()

# %% [markdown]
# *Figure: every claim part of the ledger; point = our estimate, bar = 95% interval, colour = verdict
# (green reproduced, red not reproduced, orange inconclusive, grey not run).*

# %%
# NBVAL_CHECK_OUTPUT
counts = ledger["verdict"].value_counts().to_dict()
save_result("08_claims_ledger", profile=profile, results_dir=results_dir or None, cache=cache_dir or None,
            metrics={f"n_{k.replace(' ', '_')}": metric(v) for k, v in counts.items()},
            data={"ledger": ledger.to_dict(orient="records")})
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
