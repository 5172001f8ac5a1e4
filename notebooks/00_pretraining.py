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
# every model has seen the same number of tokens. A few percent of the training sequences are an
# arithmetic task ("Question: What is 347 + 58? Answer: 405", plus word problems) whose held-out
# problems never occur in training: our small-scale stand-in for GSM8K in the retention chapters.
#
# The `tiny` profile trains a 4-layer, d=64 triplet on a synthetic corpus in a few CPU minutes; the
# `gpu` profile a 12-layer, d=512 triplet on 100M tokens of Project Gutenberg per model.

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
from layerwise.training import ensure_triplet, get_preset, read_log, run_dir

plots.style()
if models:
    display(Markdown("This chapter trains the controlled triplet; with hub models (`models` not empty) "
                     "there is nothing to pretrain. The chapters that follow analyse the given models."))
p = get_preset(preset, **(overrides or {}))
print(f"preset {p.name}: {p.n_layers} layers, d_model {p.d_model}, {p.n_heads} heads, MLP {p.d_mlp}, "
      f"seq_len {p.seq_len}, {p.tokens:,} tokens per model = {p.total_steps} steps of "
      f"{p.batch_size} x {p.seq_len}; ar2dlm branches at step {p.branch_step}; config {p.config_hash()}")

# %% [markdown]
# ## Train (or load) the triplet
#
# `ensure_triplet` trains what is missing, resumes a killed run from its last checkpoint (same step
# count, same data order, same weights as an uninterrupted run: this is tested), and is a no-op when
# the checkpoints exist under `<cache>/triplet/<preset>/`.

# %%
t0 = time.perf_counter()
paths = ensure_triplet(p, data_dir=data_dir or None, cache_dir=cache_dir or None, device=device) if not models else {}
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
    ax.axvline(p.branch_step * p.batch_size * p.seq_len / 1e6, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("training loss (nats / token)")
    ax.set_yscale("log")
    ax.legend()
    plt.show()
    display(Markdown(f"**Figure 1.** Training loss per objective ({smooth}-point moving average) against "
                     f"tokens seen, preset `{p.name}`. The dotted line marks the 75% branch point of `ar2dlm`."))

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
                    for o, r in arith.iterrows()}},
        data={"preset": p.name, "config_hash": p.config_hash(), "table": table.reset_index().to_dict("records"),
              "arithmetic": arith.reset_index().to_dict("records"),
              "logs": {o: logs[o][["tokens", "loss", "tokens_per_s"]].to_dict("list") for o in paths},
              "snapshots": {o: sorted(x.name for x in (run_dir(p, o, cache_dir or None) / "snapshots").glob("step_*"))
                            for o in paths}},
    )
    print(out)

# %% [markdown]
# ## Where the artefacts are
#
# `<cache>/triplet/<preset>/<objective>/`: the final checkpoint (`save_pretrained` + tokenizer +
# `layerwise_meta.json`, loadable with `layerwise.models.load(path)`), `train_log.jsonl` (the curves
# above), `ckpt/state.pt` (the resumable state) and `snapshots/step_<n>/` (models at 25/50/75/100% of
# the budget, used by the alpha-Hill chapter).
#
# ## Run it yourself
#
# ```bash
# # the published (gpu) triplet, on one H100; reads corpus/ from $LAYERWISE_DATA_DIR (layerwise-book data fetch)
# python -m layerwise.training --preset gpu --objective all
# # then this chapter with the gpu profile
# python -m layerwise.book run --profile gpu --chapters 00_pretraining
# # or directly with papermill
# jupytext --to ipynb notebooks/00_pretraining.py -o /tmp/00.ipynb
# papermill /tmp/00.ipynb /tmp/00.out.ipynb -p profile gpu -p preset gpu -p device cuda
# ```
#
# The `paper` profile analyses the 8B hub models and has nothing to pretrain.
