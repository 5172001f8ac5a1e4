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
# # Performance
#
# **What this page is.** The library's speed and memory, measured by the benchmark scripts in
# `benchmarks/` on one GPU and checked against its performance targets. Each script writes a CSV and a
# markdown table to `benchmarks/results/`; this page reads those files through `layerwise.perf` and
# measures nothing itself, so it takes seconds in every profile and shows the same numbers whichever
# profile built the book. Every number below is a cell of a committed CSV or arithmetic on such cells;
# only the targets are typed in (`layerwise.perf.TARGETS`, each with the sentence that states it).
#
# **What "8B-shaped" means.** The probe, sampler, GPTQ and memory benchmarks build a transformers
# Llama with LLaDA-8B's dimensions (32 layers, d 4096, MLP 12288, vocab 126464, bidirectional), random
# bf16 weights, nothing downloaded: speed and memory depend on the shapes, not on the weights. The
# training-step benchmark times the triplet's step at the shapes its table states; the triplet design run
# trains the gpu preset itself and records each run's speed and MFU; the skipping benchmark also times a
# small triplet-shaped model.
#
# **Two peaks.** MFU (model FLOP utilisation: FLOPs the model needs / time / peak FLOP/s) depends on the
# peak. `training.csv` states it against the GPU's datasheet bf16 dense peak; `probes.csv` measures the
# matmul peak the same machine actually reaches (large bf16 matmuls), which is lower. Every MFU below
# says against which peak.

# %% tags=["parameters"]
profile = "tiny"      # which profile file produced this run: tiny / gpu / paper (the page is the same)
preset = "tiny"       # unused: this page loads no model
models = []           # unused: this page loads no model
data_dir = ""         # unused
cache_dir = ""        # where the result file goes; "" = $LAYERWISE_CACHE_DIR (the runner passes its cache)
device = "auto"       # unused: nothing is computed on a device
seed = 0
benchmarks_dir = ""   # benchmark results folder; "" = $LAYERWISE_BENCHMARKS_DIR, else the checkout's benchmarks/results
smoke_runs = False    # True: read the CPU smoke runs (*_tiny.csv) instead of the GPU results

# %% tags=["provenance"]
from layerwise.book import provenance
from layerwise.params import coerce_injected

coerce_injected(globals(), "09_performance")  # values papermill injected as text get their parameters' types
provenance(profile=profile, models=[], benchmarks_dir=benchmarks_dir or "benchmarks/results", smoke_runs=smoke_runs)

# %%
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from layerwise import perf, plots
from layerwise.config import LayerwiseError
from layerwise.results import metric, save_result


def find_benchmarks_dir(given: str) -> Path:
    """The benchmark results folder: the parameter, $LAYERWISE_BENCHMARKS_DIR, or the checkout's."""
    if given or os.environ.get("LAYERWISE_BENCHMARKS_DIR"):
        return Path(given or os.environ["LAYERWISE_BENCHMARKS_DIR"])
    for d in (Path.cwd(), *Path.cwd().parents):  # the runner executes chapters inside the checkout
        if (d / "benchmarks" / "results").is_dir():
            return d / "benchmarks" / "results"
    raise LayerwiseError("no benchmarks/results folder above the working directory: pass "
                         "-p benchmarks_dir=<checkout>/benchmarks/results or set LAYERWISE_BENCHMARKS_DIR")


rdir = find_benchmarks_dir(benchmarks_dir)
plots.style()
frames = perf.load_benchmarks(rdir, tiny=smoke_runs)
info = perf.benchmark_info(rdir, tiny=smoke_runs)
targets = perf.targets_table(rdir, tiny=smoke_runs)
devices = dict(zip(info["benchmark"], info["device"]))
kind = "CPU smoke runs" if smoke_runs else "GPU runs"
print(f"benchmark results read ({kind}): {', '.join(sorted(frames)) or 'none'}")


def pct(v: float) -> str:
    """A fraction as a percentage ("–" when missing)."""
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1%}"


def fmt_value(v: float, unit: str) -> str:
    """A measured or target value in its unit (fractions of a peak as percentages)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return pct(v) if unit.startswith("fraction") else f"{v:.3g}"


def show_md(name: str) -> None:
    """The markdown table a benchmark script wrote, or a line saying it did not run."""
    display(Markdown(perf.results_markdown(name, rdir, tiny=smoke_runs) or f"{name}: not run"))


# %% [markdown]
# ## What was measured, where, with which command
#
# One row per benchmark. The command is the one the script recorded in its markdown table; where it
# recorded none, the GPU command from the script's docstring.

# %%
display(Markdown(info[["benchmark", "csv", "ran", "rows", "device", "command", "command_source"]]
                 .assign(command=lambda d: "`" + d["command"] + "`").to_markdown(index=False)))

# %% [markdown]
# ## The targets
#
# One row per target (per model shape for the skipping speed-up, per model family for evaluations per
# minute): what it asks for, what was measured, and whether it is met. `status` is *not run* when the
# benchmark's CSV is missing; the note says how the number was obtained.

# %%
shown = targets.assign(
    measured=[fmt_value(v, u) for v, u in zip(targets["measured"], targets["unit"])],
    target=[("–" if c == "report" else f"{c} {fmt_value(t, u)}") for t, c, u in
            zip(targets["target"], targets["comparison"], targets["unit"])],
)[["requirement", "measured", "target", "unit", "status", "device", "note"]]
display(Markdown(shown.to_markdown(index=False)))

# %%
# NBVAL_CHECK_OUTPUT
print(targets[["target_id", "measured", "status"]].to_string(index=False, float_format=lambda v: f"{v:.4g}"))

# %%
comparable = targets[targets["comparison"] != "report"].reset_index(drop=True)
colors = {"met": "tab:green", "not met": "tab:red", "not run": "lightgray", "no value": "lightgray"}
fig, ax = plt.subplots(figsize=(7, 0.42 * len(comparable) + 1.4))
y = np.arange(len(comparable))[::-1]
ratio = comparable["measured_over_target"].to_numpy(dtype=float)
ax.barh(y, np.nan_to_num(ratio), color=[colors[s] for s in comparable["status"]], height=0.6)
ax.axvline(1.0, color="k", ls="--", lw=1)
for yi, v, s, c in zip(y, ratio, comparable["status"], comparable["comparison"]):
    ax.text((0 if math.isnan(v) else max(v, 1.0)) + 0.02, yi, s if math.isnan(v) else f"{v:.2f} ({s}; need {c} 1)",
            va="center", fontsize=8)
ax.set_yticks(y)
ax.set_yticklabels(comparable["short"], fontsize=9)
ax.set_xlabel("measured / target (dimensionless; dashed line: the target)")
ax.set_xlim(0, max(1.6, float(np.nanmax(ratio, initial=1.0)) + 0.5))
ax.set_title(f"Measured vs target ({', '.join(sorted(set(comparable['device']) - {''})) or 'no results'})")
plt.show()

# %% [markdown]
# *Figure: every target with a number, as measured / target, so the dashed line at 1 is the target.
# Green: met, red: not met, grey: not run. For `>=` targets (MFU, speed-up) a bar must reach the line;
# for `<=` targets (GPTQ time and memory, the memory ratio) it must stay at or below it.*
#
# ## Training throughput and MFU
#
# The real training step of `layerwise.training` (loss, backward, clipping, fused AdamW, bf16 autocast)
# on random tokens, per objective, eager and compiled (`training.compile_for_training`, which keeps SDPA
# on its flash kernel when there is no padding); `training_wide.csv` times the same step at d_model 1024.
# The triplet design run (next section) trains the gpu preset itself and records each run's MFU. MFU grows
# with the width: per token the matmul FLOPs grow as d_model squared, the elementwise, normalisation and
# optimiser memory traffic only as d_model, so narrow matmuls leave the tensor cores waiting on memory.
# The training target has one row per measured width; the note of the design run's row gives the wider
# shapes' numbers.

# %%
tm = perf.training_mfu(frames)
wide = frames.get("training_wide")
if tm.empty:
    print("training.csv: not run")
else:
    display(Markdown(tm.assign(mfu_vs_datasheet=tm["mfu"].map(pct), mfu_vs_measured=tm["mfu_vs_measured"].map(pct))[
        ["objective", "compile", "tokens_per_s", "tflop_per_s", "mfu_vs_datasheet", "peak_tflop_per_s",
         "mfu_vs_measured", "measured_peak_tflop_per_s", "peak_mem_gib"]].to_markdown(index=False, floatfmt=",.1f")))
    objectives = list(dict.fromkeys(tm["objective"]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ax = axes[0]
    x = np.arange(len(objectives))
    for j, comp in enumerate([False, True]):
        sub = tm[tm["compile"].astype(bool) == comp].set_index("objective").reindex(objectives)
        bars = ax.bar(x + (j - 0.5) * 0.38, sub["tokens_per_s"] / 1e3, width=0.36,
                      color=[plots.model_color(o) for o in objectives], alpha=1.0 if comp else 0.45,
                      hatch="" if comp else "//", edgecolor="k", lw=0.5, label="compiled" if comp else "eager")
        for b, m in zip(bars, sub["mfu"]):
            ax.text(b.get_x() + b.get_width() / 2, b.get_height(), pct(m), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels(objectives)
    ax.set_xlabel("training objective (same model shape)")
    ax.set_ylabel("training throughput (thousand tokens/s)")
    ax.set_ylim(0, float(tm["tokens_per_s"].max()) / 1e3 * 1.25)
    width = f"d_model {int(tm['d_model'].iloc[0])}" if tm["d_model"].notna().any() else "training step"
    ax.set_title(f"training step, {width} ({devices['training']})", fontsize=10)
    ax.legend(ncol=2, loc="upper left")
    ax = axes[1]
    tbw = perf.training_by_width(frames)
    tbw = tbw[tbw["mfu"].notna() & tbw["d_model"].notna() & ~tbw["compile"].eq(False)]
    markers = {"training": "o", "training_wide": "s", "triplet_design": "D"}
    for (src, _run), g in tbw.groupby(["source", "run"], sort=False):
        ax.scatter(g["d_model"], g["mfu"] * 100, marker=markers[src], s=40, edgecolor="k", lw=0.5, zorder=3,
                   color=plots.model_color(str(g["objective"].iloc[0])))
    for src, g in tbw.groupby("source", sort=False):
        ax.scatter([], [], marker=markers[src], color="lightgray", edgecolor="k", lw=0.5,
                   label=f"{src}.csv, {int(g['n_layers'].iloc[0])} layers ({g['device'].iloc[0]})")
    for obj, g in tbw.groupby("objective", sort=False):
        best = g.groupby("d_model")["mfu"].max()
        ax.plot(best.index, best.to_numpy() * 100, color=plots.model_color(str(obj)), lw=1, alpha=0.6)
    ax.axhline(perf.TARGETS_BY_KEY["training"].target * 100, color="k", ls="--", lw=1, label="target")
    ax.set_xscale("log", base=2)
    if len(tbw):
        ax.set_xticks(sorted(tbw["d_model"].unique()))
    ax.xaxis.set_major_formatter(plt.ScalarFormatter())
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set_xlabel("model width d_model (log scale)")
    ax.set_ylabel("MFU (% of datasheet bf16 peak)")
    ax.set_ylim(0, 60)
    ax.set_title("MFU by model width (compiled step; design run: each run's median)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    plt.show()

# %% [markdown]
# *Figure: left, training tokens per second per objective of the training-step benchmark, eager (hatched,
# light) and compiled (solid); the label on each bar is its MFU against the datasheet bf16 peak. Right,
# MFU against the model width, coloured by objective: circles the compiled step of `training.csv`,
# squares the same step at d_model 1024 (`training_wide.csv`), diamonds the gpu preset's own training
# runs (`triplet_design.csv`, both ar2dlm branches included); lines join each objective's best MFU per
# width; dashed: the target. Depth and GPU differ between files (both in the legend); the GPUs' nominal
# bf16 dense peaks are the same.*

# %%
show_md("training")
if wide is not None:
    show_md("training_wide")

# %% [markdown]
# ## The triplet design run
#
# `bench_triplet_design.py` trains the gpu preset's four runs (`ar`, `dlm`, and `ar2dlm` branched from
# `ar` at 75% and at 25% of the budget), scores snapshots at 25/50/75/100% of the budget with the
# competence report (`layerwise.training.competence`): held-out arithmetic exact match by each model's own
# sampler with a 95% Wilson interval, against chance (the commonest answer's share), and tokens seen per
# non-embedding parameter.

# %%
td = frames.get("triplet_design")
if td is None or td.empty:
    print("triplet_design.csv: not run")
else:
    fig, ax = plt.subplots(figsize=(7, 4))
    for run, g in td.groupby("run", sort=False):
        g = g.sort_values("tokens_per_param")
        color = plots.model_color(str(g["objective"].iloc[0]))
        ls = "-" if g["branch_frac"].isna().all() else ":"
        ax.errorbar(g["tokens_per_param"], g["exact_match"] * 100,
                    yerr=[(g["exact_match"] - g["em_ci_low"]).clip(lower=0) * 100,
                          (g["em_ci_high"] - g["exact_match"]).clip(lower=0) * 100],
                    marker="o", ms=4, capsize=2, lw=1.2, ls=ls, color=color, label=str(run))
    chance = float(td["chance"].iloc[0])
    ax.axhline(chance * 100, color="gray", ls="--", lw=1, label=f"chance ({chance:.0%}, commonest answer)")
    ax.set_xlabel("training tokens seen per non-embedding parameter")
    ax.set_ylabel("held-out arithmetic exact match (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"Triplet design run, {int(td['arith_items'].iloc[0])} problems per point ({devices['triplet_design']})",
                 fontsize=10)
    ax.legend(fontsize=8)
    plt.show()

# %% [markdown]
# *Figure: exact match on held-out arithmetic problems against the tokens each model has seen per
# non-embedding parameter, one line per run with 95% Wilson intervals (dotted: the ar2dlm runs, branched
# from `ar` and counting `ar`'s tokens before the branch; the one branched at 75% is scored at its end
# only); grey dashed: chance.*

# %%
show_md("triplet_design")

# %% [markdown]
# ## The exact sampler against LLaDA's generate.py
#
# `bench_llada_reference.py` runs LLaDA's genuine `generate.py` and `layerwise.sampling.diffusion_generate`
# on the genuine LLaDA modeling code at the 8B shape (random bf16 weights) and counts the generated tokens
# that agree. One row per batch and sampler option (`sliced head`: the LM head only on the current
# block; `CUDA graph`: the denoising step captured once per call); `ratio` is the sampler's time per sample
# over `generate.py`'s at the same batch, and the target reads the best token-identical one. Batched rows
# are left-padded, so a batch's output need not equal each prompt's batch-1 output, for `generate.py` as
# for the library (the options table counts both).

# %%
gp = perf.generate_py_runs(frames)
if gp.empty:
    print("llada_reference.csv, llada_reference_options.csv: not run")
else:
    display(Markdown(gp.drop(columns=["b1_tokens_equal", "b1_tokens_total", "ref_b1_tokens_equal"])
                     .to_markdown(index=False, floatfmt=".3f")))
show_md("llada_reference")
show_md("llada_reference_options")

# %% [markdown]
# ## Monte-Carlo likelihood at a target standard error
#
# `bench_mc_se.py` scores the chapters' likelihood tasks with a diffusion model once with a fixed 128
# Monte-Carlo samples per request (LLaDA's setting) and once per target standard error (a request stops
# drawing samples once its standard error is below the target): samples used, distance to the fixed-cost
# estimate, and agreement of the multiple-choice decisions.

# %%
show_md("mc_se")

# %% [markdown]
# ## Cost of the paper profile
#
# `bench_paper_profile.py` times one unit of each chapter's work at the paper profile's shapes on
# 8B-shaped models and multiplies by the number of units (`layerwise.book.estimate`), giving the profile's
# GPU-hours.

# %%
show_md("paper_profile")

# %% [markdown]
# ## Several GPUs: data-parallel evaluation and a sweep
#
# `bench_multi_gpu.py` evaluates chapter 03's generation task on an LLaDA-8B-shaped model once in one
# process and once with one process per GPU (`layerwise.parallel.evaluate_data_parallel` under
# `accelerate launch`): the wall-clock speed-up, its efficiency (speed-up / number of GPUs) and how many
# merged per-item answers equal the one-process run's. It then runs two chapters x two models through
# submitit's local executor (`layerwise.sweep`), one GPU per job, and checks that every job's result
# file is where the build and the ledger read it.

# %%
if "multi_gpu" in frames:
    display(perf.multi_gpu_summary(frames))
show_md("multi_gpu")

# %% [markdown]
# ## Probe pass
#
# `layerwise.probes.probe_pass` with the layer-similarity and channel-statistics hooks on an 8B-shaped
# model, against a plain forward of the same blocks without hooks (neither computes the LM head); MFU
# against the bf16 matmul peak measured in the same run.

# %%
pr = frames.get("probes")
if pr is None or pr.empty:
    print("probes.csv: not run")
else:
    peak = float(pr["matmul_peak_tflop_per_s"].iloc[0])
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    labels = [p.split(" (")[0] for p in pr["pass"]]
    bars = ax.barh(labels[::-1], pr["tflop_per_s"][::-1], color=["tab:blue", "tab:gray"][:len(pr)], height=0.5)
    for b, m in zip(bars, pr["mfu_vs_measured_peak"][::-1]):
        ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {pct(m)} of peak", va="center", fontsize=8)
    ax.axvline(peak, color="k", lw=1, label=f"measured matmul peak ({peak:.3g} TFLOP/s)")
    ax.axvline(perf.TARGETS_BY_KEY["probe"].target * peak, color="tab:red", ls="--", lw=1,
               label=f"target ({perf.TARGETS_BY_KEY['probe'].target:.0%} of the peak)")
    ax.set_xlabel("achieved TFLOP/s (bf16)")
    ax.set_xlim(0, peak * 1.25)
    ax.set_title(f"Probe pass, 8B-shaped model, {int(pr['batch'].iloc[0])} x {int(pr['seq_len'].iloc[0])} tokens "
                 f"({devices['probes']})", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    plt.show()

# %% [markdown]
# *Figure: achieved TFLOP/s of the probe pass and of a plain forward, with the share of the measured
# matmul peak on each bar; the gap between them is what the hooks (per-token cosine similarities,
# channel maxima and means, reduced on the device every block) cost.*
#
# ## Channel-statistics memory
#
# `layerwise.probes.channel_stats` keeps running per-channel accumulators, so its memory must not grow
# with the number of tokens streamed through it.

# %%
mem = frames.get("probes_memory")
if mem is None or mem.empty:
    print("probes.csv: no memory rows")
else:
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    if "peak_gib" in mem:
        ax.plot(mem["tokens"] / 1e3, mem["peak_gib"], "o-", label="peak GPU memory (weights included)")
        ax.plot(mem["tokens"] / 1e3, mem["peak_above_weights_gib"], "s-", label="peak above the weights")
        ax.set_ylabel("GPU memory (GiB)")
        ax.set_ylim(0, float(mem["peak_gib"].max()) * 1.15)
    else:
        ax.plot(mem["tokens"] / 1e3, mem["accumulator_mib"], "o-", label="channel accumulators")
        ax.set_ylabel("accumulator memory (MiB)")
        ax.set_ylim(0, float(mem["accumulator_mib"].max()) * 1.5)
    ax.set_xlabel("tokens streamed through channel_stats (thousands)")
    ax.set_title(f"Channel statistics, 8B-shaped model ({devices['probes']}): "
                 f"{int(mem['accumulator_elements'].iloc[0]):,} accumulator elements at every size", fontsize=9)
    ax.legend(fontsize=8)
    plt.show()

# %% [markdown]
# *Figure: memory of `channel_stats` (both sites, every block) against the number of tokens it has seen;
# flat lines mean memory independent of the token count.*

# %%
show_md("probes")

# %% [markdown]
# ## Diffusion sampler
#
# LLaDA's GSM8K settings (900-token prompt, gen_length 256, 256 steps, block_length 32, temperature 0,
# low-confidence remasking) on the 8B-shaped model. *reference*: LLaDA's `generate.py` line by line
# (logits and a float64 softmax over the whole vocabulary at every position, a per-row Python top-k
# loop; the test suite's oracle); *fast*: `layerwise.sampling.diffusion_generate`, which computes the LM
# head, argmax and confidence only on the current block, vectorises top-k and gives identical tokens;
# *prefix cache*: the opt-in, **approximate** prefix KV cache, whose tokens differ (its agreement with
# the exact sampler is shown). An exact sampler must run every block over the whole canvas at every
# step (bidirectional attention: unmasking one token changes every position), so the only work it can
# drop is the reference's LM head and softmax outside the block and its Python loops; the table below
# counts where the time goes.

# %%
sl = perf.sampler_long(frames)
sf = perf.sampler_flops(frames, rdir, tiny=smoke_runs) if "sampling" in frames else pd.DataFrame()
if sl.empty:
    print("sampling.csv: not run")
else:
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    styles = {"reference": ("k", "s", "-"), "fast": ("tab:blue", "o", "-"), "prefix cache": ("tab:orange", "^", ":")}
    for name, g in sl.groupby("sampler", sort=False):
        c, mk, ls = styles[name]
        ax.plot(g["batch"], g["s_per_sample"], marker=mk, ls=ls, color=c,
                label=name if name != "prefix cache" else "prefix cache (approximate)")
        if name == "prefix cache":
            for b, s, a in zip(g["batch"], g["s_per_sample"], g["token_agreement"]):
                ax.annotate(f"{a:.0%} tokens agree", (b, s), textcoords="offset points", xytext=(6, -10), fontsize=7)
    if not sf.empty:
        ax.axhline(sf["floor_s_per_sample"].iloc[0], color="gray", ls="--", lw=1,
                   label="exact floor (100% of measured peak)")
        t = sf.dropna(subset=["target_s_per_sample"])
        ax.plot(t["batch"], t["target_s_per_sample"], "x", color="tab:red", ms=9, mew=2,
                label=f"target (reference / {perf.TARGETS_BY_KEY['sampler'].target:g})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(sl["batch"].unique()))
    ax.xaxis.set_major_formatter(plt.ScalarFormatter())
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set_xlabel("batch size (samples generated together)")
    ax.set_ylabel("seconds per sample")
    ax.set_ylim(0, None)
    ax.set_title(f"Diffusion sampler, 8B-shaped model ({devices['sampling']})")
    ax.legend(fontsize=8)
    plt.show()

# %% [markdown]
# *Figure: seconds per generated sample (lower is faster) against the batch size, for the reference,
# the exact fast sampler and the approximate prefix cache. Grey dashed: the least time an exact sampler
# can take (its FLOPs at 100% of the measured matmul peak); red crosses: the s/sample the speed-up target
# asks for at the batches where the reference ran.*

# %%
if not sf.empty:
    cols = ["batch", "ref_s_per_sample", "fast_s_per_sample", "ref_tflop_per_s", "ref_mfu_vs_measured",
            "ref_mfu_vs_datasheet", "fast_tflop_per_s", "fast_mfu_vs_measured", "floor_s_per_sample",
            "target_s_per_sample", "mfu_needed", "forward_step_s", "forward_share"]
    display(Markdown(sf[cols].to_markdown(index=False, floatfmt=".3g")))
show_md("sampling")

# %% [markdown]
# *Table: where the exact sampler's time goes. FLOPs per sample are counted by
# `layerwise.skipping.block_flops` on the benchmark's model shape: every block over the whole canvas at
# every step, plus the LM head over every position (reference) or over the current block (fast).
# `mfu_needed` is the share of the measured matmul peak the fast sampler would need to meet the speed-up
# target; `forward_share` is one plain forward of the canvas (`bench_8b_memory.csv`) as a share of the
# reference's time per step.*
#
# ## Layer skipping: speed-up and evaluations per minute
#
# The diffusion sampler (`diffusion_generate`, median of repeats) with the first k blocks after block 0
# skipped (`layerwise.skipping.skip_layers`), for the gpu-preset shape and the 8B shape. Skipping k of L
# blocks can at best speed the sampler up by L/(L-k); the fixed per-step work (top-k, the LM head on the
# block, kernel launches) weighs more at the small shape.

# %%
sk = frames.get("skipping")
if sk is None:
    print("bench_skipping.csv: not run")
else:
    shapes = list(dict.fromkeys(sk["shape"]))
    fig, axes = plt.subplots(1, len(shapes), figsize=(4.2 * len(shapes), 3.6), squeeze=False)
    bound = perf.TARGETS_BY_KEY["skipping"].target
    for ax, shape in zip(axes[0], shapes):
        g = sk[sk["shape"] == shape].sort_values("k")
        L = int(g["layers"].iloc[0])
        k = np.arange(0, int(g["k"].max()) + 1)
        ideal = L / (L - k)
        ax.plot(k, ideal, color="k", lw=1, label="ideal L/(L-k)")
        ax.fill_between(k, bound * ideal, ideal, color="tab:green", alpha=0.15,
                        label=f"target band (>= {bound:g} x ideal)")
        ax.plot(g["k"], g["ideal_flops"], ls=":", color="gray", label="ideal from FLOPs (LM head counted)")
        ok, base = g["vs_ideal"] >= bound, g["k"] == 0
        ax.plot(g["k"], g["speedup"], color="tab:blue", lw=1)
        ax.scatter(g["k"][base], g["speedup"][base], color="k", zorder=3, label="no block skipped")
        ax.scatter(g["k"][ok & ~base], g["speedup"][ok & ~base], color="tab:green", zorder=3, label="measured (met)")
        ax.scatter(g["k"][~ok], g["speedup"][~ok], color="tab:red", zorder=3, label="measured (not met)")
        ax.set_xlabel("early blocks skipped, k")
        ax.set_ylabel("sampler speed-up t(0) / t(k) (x)")
        ax.set_title(f"shape {shape}: {L} layers, batch {int(g['batch'].iloc[0])} ({devices['skipping']})", fontsize=9)
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# *Figure: wall-clock speed-up of the diffusion sampler when the first k blocks after block 0 are
# skipped, against the ideal L/(L-k) (black) and the band the target accepts (green).*

# %%
show_md("skipping")

# %% [markdown]
# ## GPTQ and the memory of each chapter on an 8B-shaped model
#
# GPTQ (`layerwise.compress.quantize`, 4-bit, group 128) of the 8B-shaped model with 128 x 2048
# calibration tokens; when only some blocks are quantized, the total time is extrapolated from their
# mean and the table says so. `bench_8b_memory.py` measures the peak GPU memory (weights included) and
# time of each chapter's core operation on the same model; the *Run it on your GPU* page builds on it.

# %%
g8 = frames.get("memory_8b")
gq = frames.get("gptq")
if g8 is None and gq is None:
    print("bench_8b_memory.csv, bench_gptq.csv: not run")
else:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    ax = axes[0]
    if g8 is not None and "peak_gib" in g8 and g8["peak_gib"].notna().any():
        ops = g8.dropna(subset=["peak_gib"])
        ax.barh(ops["operation"][::-1], ops["peak_gib"][::-1], color="tab:blue", height=0.6)
        ax.axvline(float(ops.loc[ops["operation"] == "weights", "peak_gib"].iloc[0]), color="gray", ls=":", lw=1,
                   label="weights alone")
        if gq is not None and not math.isnan(float(gq["peak_GB"].iloc[0])):
            ax.axvline(float(gq["peak_GB"].iloc[0]), color="tab:orange", ls="-", lw=1.5, label="GPTQ peak (bench_gptq)")
            ax.axvline(perf.TARGETS_BY_KEY["gptq_memory"].target, color="tab:red", ls="--", lw=1, label="GPTQ target")
        ax.set_xlabel("peak GPU memory (GiB)")
        ax.legend(fontsize=8, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no GPU memory in these results", ha="center", transform=ax.transAxes)
    ax.set_title(f"Peak memory per operation, 8B-shaped model ({devices['memory_8b']})", fontsize=10)
    ax = axes[1]
    if gq is not None:
        q = gq.iloc[0]
        measured_min = q["layers_measured"] * q["mean_block_s"] / 60
        extrapolated = bool(q["total_is_extrapolated"])
        bars = ax.bar([f"measured\n({int(q['layers_measured'])} blocks)", f"total\n({int(q['layers_total'])} blocks)"],
                      [measured_min, q["total_min"]], color="tab:blue", edgecolor="k", lw=0.5)
        if extrapolated:
            bars[1].set_hatch("//")
            bars[1].set_facecolor("tab:orange")
        ax.axhline(perf.TARGETS_BY_KEY["gptq_time"].target, color="tab:red", ls="--", lw=1, label="target")
        ax.set_ylabel("GPTQ time (minutes)")
        ax.set_title(f"GPTQ, {q['calib_tokens']} tokens ({devices['gptq']})", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# *Figure: left, peak GPU memory (weights included) of each chapter's core operation on the 8B-shaped
# model, with GPTQ's peak and its target; right, GPTQ time for the blocks measured and for the whole
# model (hatched: extrapolated from the measured blocks), against the time target.*

# %%
show_md("gptq")
show_md("memory_8b")

# %% [markdown]
# ## Result file

# %%
metrics = {t["target_id"]: metric(t["measured"], model="8B-shaped / triplet-shaped random weights", note=t["status"],
                                  target=None if t["comparison"] == "report" else t["target"],
                                  comparison=t["comparison"], unit=t["unit"], device=t["device"])
           for _, t in targets.iterrows()}
path = save_result("09_performance", profile=profile, metrics=metrics, results_dir=None, cache=cache_dir or None,
                   data={"targets": targets.astype(object).where(targets.notna(), None).to_dict(orient="records"),
                         "benchmarks": info.to_dict(orient="records"), "smoke_runs": smoke_runs})
print(f"wrote {path.name}: {len(metrics)} metrics, "
      f"{', '.join(f'{k}: {v}' for k, v in targets['status'].value_counts().items())}")

# %% [markdown]
# ## Run it yourself
#
# This page only reads results; to produce them, run the benchmark scripts on a GPU (each writes
# `benchmarks/results/<name>.csv` and `.md`; the table at the top lists the commands), then re-run the
# page:
#
# ```bash
# python benchmarks/bench_training.py --preset gpu
# python benchmarks/bench_probes.py
# python benchmarks/bench_sampling.py --time-blocks 2 --prefix-cache
# python benchmarks/bench_skipping.py
# python benchmarks/bench_gptq.py --layers 4              # drop --layers for all 32 blocks
# python benchmarks/bench_8b_memory.py
# python benchmarks/bench_llada_reference.py --remote-code ../shared/remote_code --batches 32 --time-blocks 1 \
#     --sliced-head --cuda-graph --batch1-rows 2 --out benchmarks/results/llada_reference_options
# python benchmarks/bench_triplet_design.py --preset gpu
# python benchmarks/bench_mc_se.py --models CACHE/triplet/gpu/dlm CACHE/triplet/gpu/ar2dlm --device cuda
# python benchmarks/bench_paper_profile.py --remote-code ../shared/remote_code
# python -m layerwise.book run --profile gpu --chapters 09_performance -p benchmarks_dir=$PWD/benchmarks/results
# ```
#
# Every script also has a `--tiny` CPU smoke run (`*_tiny.csv`); `-p smoke_runs=true` shows those.
