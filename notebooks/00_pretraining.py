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
# # Pretraining the controlled triplet
#
# **Why this chapter exists.** Both papers compare diffusion LMs (LLaDA-8B, Dream-7B) with
# autoregressive LMs (Qwen2.5-7B, Llama-3.1-8B) that differ in far more than their objective: data,
# tokenizer, architecture details, training length. Paper A attributes early-layer redundancy to
# the objective because the AR-initialised Dream behaves like an AR model; paper B backs its
# "over-training" reading with Pythia-160M-shaped models pretrained on **100B tokens** of
# FineWeb-Edu, but — its referee's first point — *without a matched AR counterpart trained on
# identical data, architecture and initialisation*, so the attribution stays correlational.
#
# **What we build instead.** Three models that differ *only* in their training objective:
#
# | name | attention | loss | starts from |
# |---|---|---|---|
# | `ar` | causal | next-token cross-entropy | the shared random init |
# | `dlm` | bidirectional | LLaDA masked diffusion: $t\sim U(\epsilon,1)$, mask each token w.p. $t$, CE on masked tokens $\times 1/t$ | the shared random init |
# | `ar2dlm` | bidirectional | the same diffusion loss, Dream's *shifted* form (logits at $i-1$ predict token $i$) | `ar` at 75% of the budget |
#
# Same architecture (transformers Llama: RMSNorm, SwiGLU, RoPE), same tokenizer (byte-level BPE
# trained on the corpus), same initial weights (one seed), same batches in the same order (the batch
# at step $s$ is identical for all three), same optimiser and warmup-stable-decay schedule.
# `ar2dlm` is the Dream-7B analogue: it branches off the `ar` run at 75% of the token budget — a
# point in the schedule's stable phase — and trains the remaining 25% with the diffusion loss, so
# every model has seen the same number of tokens. A preset may add more branch points (runs named
# `ar2dlm_b25` for a branch at 25%, ...): how much of the budget the diffusion objective gets, as a
# dose. A share of the training sequences is an arithmetic task ("Question: What is 347 + 58?
# Answer: 405", plus word problems) whose held-out problems never occur in training: our small-scale
# stand-in for GSM8K in the retention chapters.
#
# **Competent models, or the comparison says little.** A model at chance on the held-out task cannot
# lose or retain anything in the later chapters. So this chapter ends with a *competence report*
# over training: for every snapshot and final model, held-out exact match decoded with the model's
# own sampler (against chance), held-out bits per byte by its own likelihood, and the tokens it has
# seen per parameter (paper B's controlled models saw ~600 tokens per parameter).
#
# The `tiny` profile trains a 4-layer, d=64 triplet on a synthetic corpus in a few CPU minutes; the
# `gpu` profile trains the `gpu` preset on Project Gutenberg (its fields are printed below).

# %% tags=["parameters"]
profile = "tiny"      # which profile file produced this run: tiny / gpu / paper
preset = "tiny"       # triplet preset trained or loaded when `models` is empty
models = []           # hub ids or local paths; [] = the controlled triplet (ar, dlm, ar2dlm)
data_dir = ""         # "" = $LAYERWISE_DATA_DIR (the runner passes its data directory)
cache_dir = ""        # "" = $LAYERWISE_CACHE_DIR (the runner passes its cache)
device = "auto"
seed = 0
overrides = {}        # Preset field overrides for training, e.g. {"micro_batch": 32}; {} keeps the preset
smooth = 5            # moving-average window (log points) for the loss curves
arith_items = 64      # held-out arithmetic problems per model (our GSM8K stand-in)
arith_batch = 32      # generation batch size
semi_ar_block = 4     # also sample the diffusion models in semi-autoregressive blocks of this many tokens (0: skip)
competence_items = 32     # competence report: held-out arithmetic problems per model (every snapshot and final)
competence_passages = 4   # competence report: held-out text passages per model (bits per byte)
competence_chars = 400    # competence report: characters per held-out passage (whole paragraphs)
mc_samples = 2            # competence report: Monte-Carlo samples per window of a diffusion model's ELBO
peak_flops = 989e12       # nominal bf16 dense peak for MFU (H100 SXM and H200: 989e12 FLOP/s)

# %% tags=["provenance"]
from layerwise.book import provenance
from layerwise.params import coerce_injected

coerce_injected(globals(), "00_pretraining")  # values papermill injected as text get their parameters' types
provenance(profile=profile, models=models or ["ar", "dlm", "ar2dlm"], preset=preset, device=device, seed=seed)

# %%
import json
import time

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from layerwise import data, plots
from layerwise.models import META_FILE
from layerwise.results import metric, save_result
from layerwise.training import ensure_triplet, get_preset, read_log, run_dir, run_names

plots.style()
if models:
    display(Markdown("This chapter trains the controlled triplet; with hub models (`models` not empty) "
                     "there is nothing to pretrain. The chapters that follow analyse the given models."))
p = get_preset(preset, **(overrides or {}))
print(f"preset {p.name}: {p.n_layers} layers, d_model {p.d_model}, {p.n_heads} heads, MLP {p.d_mlp}, "
      f"seq_len {p.seq_len}, {p.tokens:,} tokens per model = {p.total_steps} steps of "
      f"{p.batch_size} x {p.seq_len}; {p.data.arith_frac:.0%} arithmetic rows; training seed {p.seed}; "
      f"runs {', '.join(run_names(p))} (ar2dlm branches at steps "
      f"{', '.join(str(p.step_at(f)) for f in p.branch_points())}); config {p.config_hash()}")

# %% [markdown]
# ## Train (or load) the triplet
#
# `ensure_triplet` trains what is missing, resumes a killed run from its last checkpoint (same step
# count, same data order, same weights as an uninterrupted run: this is tested), and is a no-op when
# the checkpoints exist under `<cache>/triplet/<preset>/` (another training seed: `<preset>-seed<k>/`).

# %%
t0 = time.perf_counter()
paths = ensure_triplet(p, data_dir=data_dir or None, cache_dir=cache_dir or None, device=device,
                       objectives=run_names(p)) if not models else {}
print(f"ensure_triplet: {time.perf_counter() - t0:.1f} s")
metas = {o: json.loads((paths[o] / META_FILE).read_text()) for o in paths}
logs = {o: pd.DataFrame(read_log(paths[o])) for o in paths}

# %% [markdown]
# ## What the models read
#
# One training row of each kind, decoded (the tokenizer is saved with every checkpoint and loads
# with `transformers.AutoTokenizer`).

# %%
if paths:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(paths["ar"])
    td = data.prepare(p.data, data_dir=data_dir or None, cache_dir=cache_dir or None, progress=False)
    print("text row:      ", repr(tok.decode(td.text_rows[0][:60].tolist()))[:300])
    print("arithmetic row:", repr(tok.decode(td.arith_rows[0][:60].tolist()))[:300])
    print(f"vocabulary {len(tok)} (special: {tok.eos_token!r}, {tok.pad_token!r}, {tok.mask_token!r}); "
          f"{td.info['text_rows']:,} text rows + {td.info['arith_rows']:,} arithmetic rows of {p.seq_len} tokens")
    print("held-out example prompt:", repr(data.arithmetic_heldout(1, seed=seed, num_fewshot=1)[0]["prompt"]))

# %% [markdown]
# ## Loss curves
#
# The x-axis is the shared token axis: `ar2dlm`'s curve starts where it branches off `ar`. The AR loss
# (next-token cross-entropy) and the diffusion loss (an upper bound on the negative log-likelihood,
# averaged over masking rates) are different quantities, so compare curves of the same objective
# across time, not levels across objectives.

# %%
if paths:
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for o, df in logs.items():
        ax.plot(df.tokens / 1e6, df.loss.rolling(smooth, min_periods=1).mean(), color=plots.model_color(o),
                ls=plots.model_linestyle(o), label=o)
    for frac in p.branch_points():
        ax.axvline(p.step_at(frac) * p.batch_size * p.seq_len / 1e6, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("training loss (nats / token)")
    ax.set_yscale("log")
    ax.legend()
    plt.show()
    display(Markdown(f"**Figure 1.** Training loss per objective ({smooth}-point moving average) against "
                     f"tokens seen, preset `{p.name}`. Dotted lines: the branch points of the ar2dlm runs "
                     f"({', '.join(f'{f:.0%}' for f in p.branch_points())} of the budget)."))

# %% [markdown]
# ## Throughput
#
# Tokens per second and model FLOPs utilisation (MFU = achieved FLOP/s over the accelerator's bf16
# peak, with $6N_\text{non-emb} + 12\,L\,d\,T$ FLOPs per token). On a CPU there is no meaningful
# peak, so MFU is not reported. `benchmarks/bench_training.py` measures throughput in isolation.

# %%
if paths:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for o, df in logs.items():
        ax.plot(df.tokens / 1e6, df.tokens_per_s / 1e3, color=plots.model_color(o), ls=plots.model_linestyle(o), label=o)
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("throughput (thousand tokens / s)")
    ax.legend()
    plt.show()
    display(Markdown("**Figure 2.** Training throughput per logging interval (includes checkpoint and "
                     "snapshot writes, hence the dips)."))

# %%
if paths:
    rows = []
    for o in paths:
        m, df = metas[o], logs[o]
        mfu = df.mfu.dropna() if "mfu" in df else pd.Series(dtype=float)
        rows.append({"model": o, "init": m["init"], "params": m["n_params"], "steps (own)": m["steps"],
                     "tokens seen": m["tokens_seen"], "own tokens": m["own_tokens"],
                     "final train loss": round(df.loss.tail(smooth).mean(), 4),
                     "held-out loss": round(m["val_loss"], 4),
                     "median tokens/s": round(df.tokens_per_s.median()),
                     "median MFU": round(float(mfu.median()), 3) if len(mfu) else None})
    table = pd.DataFrame(rows).set_index("model")
    display(table)
    display(Markdown("**Table 1.** The triplet after training. *held-out loss*: the model's own objective "
                     "on held-out text (fixed noise for the diffusion models). All three share the data-order "
                     f"digest `{metas['ar']['data']['order_digest'][:12]}`."))

# %% [markdown]
# ## Held-out arithmetic
#
# The arithmetic problems of the evaluation set never occur in training (tested). `ar` answers
# greedily; `dlm` and `ar2dlm` with the masked-diffusion sampler (LLaDA's low-confidence remasking,
# one token per step, temperature 0). Exact match on the first integer generated, through the
# project's lm-eval task `lw_arithmetic` (`layerwise.evals.evaluate`). *Chance* is what a constant
# guesser scores (the frequency of the commonest answer). The interval is a 95% Wilson interval.

# %%
import numpy as np

from layerwise import evals, stats
from layerwise.models import load

if paths:
    arith_rows, kind_rows = [], []
    for o in paths:
        lm = load(str(paths[o]), device=device)
        r = evals.evaluate(lm, ["lw_arithmetic", "lw_arithmetic_ll"], limit=arith_items, batch_size=arith_batch,
                           seed=seed, data_dir=data_dir or None, cache_dir=cache_dir or None)
        key = next(k for k in r["metrics"]["lw_arithmetic"] if k.startswith("exact_match"))
        scores = r["items"]["lw_arithmetic"][key]
        k_ok, n = int(round(sum(scores))), r["n"]["lw_arithmetic"]
        lo, hi = stats.wilson_interval(k_ok, n)
        one_pass = float(np.mean(r["items"]["lw_arithmetic_ll"]["acc,none"]))
        arith_rows.append({"model": o, "sampler": "greedy (AR)" if lm.family.value == "ar" else "masked diffusion",
                           "accuracy": k_ok / n, "ci_low": lo, "ci_high": hi,
                           "chance": r["chance"]["lw_arithmetic"][key], "items": n,
                           "answer_by_likelihood": one_pass})
        if semi_ar_block and lm.family.value != "ar":
            r2 = evals.evaluate(lm, ["lw_arithmetic"], limit=arith_items, batch_size=arith_batch, seed=seed,
                                data_dir=data_dir or None, cache_dir=cache_dir or None,
                                sampler_kwargs={"block_length": semi_ar_block})
            arith_rows[-1][f"accuracy_blocks_of_{semi_ar_block}"] = float(np.mean(r2["items"]["lw_arithmetic"][key]))
        metric_name, filter_name = key.split(",", 1)
        kind_rows += [{"model": o, "kind": s_["doc"].get("kind", "?"), "correct": s_[metric_name]}
                      for s_ in r["samples"]["lw_arithmetic"] if s_["filter"] == filter_name]
        del lm
    arith = pd.DataFrame(arith_rows).set_index("model")
    fig, ax = plt.subplots(figsize=(5, 3))
    for i, (o, row) in enumerate(arith.iterrows()):
        ax.bar(i, row.accuracy, color=plots.model_color(o), label=o)
        ax.errorbar(i, row.accuracy, yerr=[[row.accuracy - row.ci_low], [row.ci_high - row.accuracy]], color="k", capsize=4)
    ax.axhline(arith.chance.max(), color="grey", ls="--", lw=1, label="chance (constant guess)")
    ax.set_xticks(range(len(arith)), arith.index)
    ax.set_ylabel("exact match (fraction)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    plt.show()
    display(Markdown(f"**Figure 3.** Held-out arithmetic accuracy per model ({arith_items} problems, 95% Wilson "
                     "intervals); dashed: chance."))

# %%
# NBVAL_CHECK_OUTPUT
if paths:
    print(arith.round(3).to_string())
    display(Markdown("`answer_by_likelihood`: the same problems scored by `lw_arithmetic_ll`, whether the answer "
                     "line is the model's argmax at every position (AR: greedy decoding; diffusion: ONE pass over "
                     "the fully masked answer, its length given). "
                     + (f"`accuracy_blocks_of_{semi_ar_block}`: the diffusion sampler filling the answer in blocks "
                        f"of {semi_ar_block} tokens, left to right (LLaDA's semi-autoregressive mode) instead of "
                        "one block. " if semi_ar_block else "") + "Accuracy by kind of problem:"))
    display(pd.DataFrame(kind_rows).pivot_table(index="model", columns="kind", values="correct", aggfunc="mean")
            .reindex(list(paths)).round(3))

# %% [markdown]
# ## Competence over training
#
# The competence report (`layerwise.training.competence`) scores every snapshot and final model:
#
# - **held-out exact match** on the arithmetic task, each model decoded with its own sampler (as
#   above), with a 95% Wilson interval and chance (the commonest answer's share);
# - **held-out bits per byte** on text of the training source (Gutenberg passages on the `gpu`
#   preset, synthetic stories on `tiny`), each model by its own likelihood: exact for `ar`; for the
#   diffusion models the Monte-Carlo ELBO, a lower bound on the log-likelihood, so their bits per byte
#   are an *upper bound* and sit above `ar`'s partly for that reason;
# - **tokens per parameter**: tokens seen (for an `ar2dlm` run including the `ar` steps before its
#   branch point) over non-embedding parameters (input embedding excluded, LM head included);
# - **training speed** from the training logs: median tokens per second and MFU against the nominal
#   bf16 peak (`peak_flops`; on an H200 a large bf16 matmul reaches ~80% of it, so that is the
#   practical ceiling). A CPU has no meaningful peak: no MFU there.

# %%
from layerwise.training import competence

if paths:
    settings = competence.CompetenceSettings(arith_items=competence_items, text_passages=competence_passages,
                                             text_chars=competence_chars, mc_samples=mc_samples,
                                             batch_size=arith_batch, seed=seed, peak_flops=peak_flops)
    folders = [f for o in paths for f in competence.model_folders(paths[o])]
    t0 = time.perf_counter()
    report = competence.competence_report(folders, settings, device=device, data_dir=data_dir or None,
                                          cache_dir=cache_dir or None)
    print(f"competence report: {len(report)} models in {time.perf_counter() - t0:.1f} s")
    fig, (ax_em, ax_bpb) = plt.subplots(1, 2, figsize=(10, 3.8))
    groups = list(report.groupby("run", sort=False))
    for i, (run, own) in enumerate(groups):
        g = own
        if pd.notna(own.branch_frac.iloc[0]):  # an ar2dlm curve starts at the ar snapshot it branched from
            start = report[(report.run == "ar") & (report.global_step == p.step_at(own.branch_frac.iloc[0]))]
            g = pd.concat([start, own])
        kw = dict(color=plots.model_color(run), ls=plots.model_linestyle(run), marker="o", label=run)
        shift = 1 + 0.012 * (i - (len(groups) - 1) / 2)  # a small horizontal offset keeps the intervals apart
        ax_em.errorbar(g.tokens_per_param * shift, g.exact_match,
                       yerr=[g.exact_match - g.em_ci_low, g.em_ci_high - g.exact_match], capsize=3, **kw)
        ax_bpb.plot(own.tokens_per_param, own.bits_per_byte, **kw)  # own points only: exact vs ELBO differ
    ax_em.axhline(report.chance.max(), color="grey", ls="--", lw=1, label="chance (constant guess)")
    ax_em.set_xlabel("tokens seen per non-embedding parameter")
    ax_em.set_ylabel("held-out exact match (fraction)")
    ax_em.set_ylim(0, 1)
    ax_em.legend(fontsize=8)
    ax_bpb.set_xlabel("tokens seen per non-embedding parameter")
    ax_bpb.set_ylabel(f"held-out bits per byte ({report.text_task.iloc[0]})")
    plt.show()
    display(Markdown(
        f"**Figure 4.** Left: held-out arithmetic exact match of every snapshot and final model against the "
        f"tokens it has seen per non-embedding parameter ({competence_items} problems, 95% Wilson intervals; "
        f"dashed: chance). Right: held-out bits per byte by each model's own likelihood ({competence_passages} "
        f"passages; diffusion models: ELBO bound, {mc_samples} Monte-Carlo samples per window, so an upper bound). "
        "On the left an `ar2dlm` curve starts at the `ar` snapshot it branched from; the points of different models are "
        "offset slightly along the x-axis so that their intervals stay apart."))

# %%
if paths:
    shown = report[["model", "tokens_seen", "tokens_per_param", "sampler", "exact_match", "em_ci_low", "em_ci_high",
                    "chance", "x_chance", "bits_per_byte", "bpb_kind"]].set_index("model")
    display(shown.round(3))
    speed = report[report.final][["run", "own_tokens", "tokens_per_s", "train_s", "mfu"]].set_index("run")
    display(speed.round(3))
    display(Markdown(
        "**Table 2.** The competence report: every model (`run@global step`; the last of each run is its final "
        "model). *x_chance*: exact match over chance. **Table 3.** Training speed of each run over its own steps "
        f"(MFU against {peak_flops:.3g} FLOP/s; empty on a CPU)."))

# %%
if paths:
    out = save_result(
        "00_pretraining", profile=profile, cache=cache_dir or None,
        models={o: str(paths[o]) for o in paths},
        metrics={**{f"heldout_loss_{o}": metric(metas[o]["val_loss"], model=o, note="own objective, held-out text")
                    for o in paths},
                 **{f"tokens_seen_{o}": metric(metas[o]["tokens_seen"], model=o) for o in paths},
                 **{f"arithmetic_accuracy_{o}": metric(r.accuracy, (r.ci_low, r.ci_high), model=o, chance=r.chance,
                                                       note=f"held-out arithmetic, {r.sampler}, {r['items']} items")
                    for o, r in arith.iterrows()},
                 **{f"bits_per_byte_{r.run}": metric(r.bits_per_byte, model=r.run,
                                                     note=f"held-out {r.text_task}, {r.bpb_kind}")
                    for r in report[report.final].itertuples()},
                 **{f"tokens_per_param_{r.run}": metric(r.tokens_per_param, model=r.run,
                                                        note="tokens seen / non-embedding parameters")
                    for r in report[report.final].itertuples()}},
        data={"preset": p.name, "config_hash": p.config_hash(), "table": table.reset_index().to_dict("records"),
              "arithmetic": arith.reset_index().to_dict("records"),
              "logs": {o: logs[o][["tokens", "loss", "tokens_per_s"]].to_dict("list") for o in paths},
              "competence": report.drop(columns=["path", "reused"]).to_dict("records"),
              "snapshots": {o: sorted(x.name for x in (run_dir(p, o, cache_dir or None) / "snapshots").glob("step_*"))
                            for o in paths}},
    )
    print(out)

# %% [markdown]
# ## What this chapter found
#
# Generated from the result file above (`layerwise.findings.pretraining`).

# %%
if paths:
    from layerwise import findings

    display(Markdown(findings.pretraining(json.loads(out.read_text()))))

# %% [markdown]
# ## Where the artefacts are
#
# `<cache>/triplet/<preset>/<run>/` (`<preset>-seed<k>/` for training seed k): the final checkpoint
# (`save_pretrained` + tokenizer + `layerwise_meta.json`, loadable with `layerwise.models.load(path)`),
# `train_log.jsonl` (the curves above), `ckpt/state.pt` (the resumable state), `snapshots/step_<n>/`
# (models at 25/50/75/100% of the budget and at every branch point, used by the alpha-Hill chapter and
# the competence report) and `competence/` (the stored rows of the competence report).
#
# ## Run it yourself
#
# ```bash
# # the published (gpu) triplet, on one GPU (about 11 min on an H200); reads corpus/ from $LAYERWISE_DATA_DIR (layerwise-book data fetch)
# python -m layerwise.training --preset gpu --objective all
# # a candidate design: train it with a 25% branch point and score every snapshot (benchmarks/results/)
# python benchmarks/bench_triplet_design.py --preset gpu --set d_model=256 --set n_layers=8 --set n_heads=4 \
#     --set d_mlp=704 --set arith_frac=0.5 --set tokens=600000000
# # then this chapter with the gpu profile
# python -m layerwise.book run --profile gpu --chapters 00_pretraining
# # or directly with papermill
# jupytext --to ipynb notebooks/00_pretraining.py -o /tmp/00.ipynb
# papermill /tmp/00.ipynb /tmp/00.out.ipynb -p profile gpu -p preset gpu -p device cuda
# ```
#
# The `paper` profile analyses the 8B hub models and has nothing to pretrain.
