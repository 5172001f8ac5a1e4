"""GPU-hours of a profile's chapters, from unit costs measured on one GPU.

A chapter's work is counted in *units* from its resolved parameters, following the chapter's own loops
(the sequences it probes in batches, the skip configurations that :func:`layerwise.skipping.select_layers`
gives, the ablation conditions of :func:`layerwise.ablation.ablation_conditions`, the compression
configurations, the evaluation items in batches). Each unit is one call of a library operation (a probe
batch, a denoising step, an AR prefill or decoding step, the spectra of one block, one block's
compression), whose seconds ``benchmarks/bench_paper_profile.py`` measured on 8B-shaped random-weight
models at the paper profile's shapes and stored in the package's cost file (``costs/paper_profile.json``).
A unit at another shape is scaled by its token count (attention's quadratic term is not modelled).

Random weights never emit an end-of-text token, so every generation runs to its full length: the
estimate is the full-length upper bound (LLaDA's sampler stops early once every answer is final).
Likelihood tasks are costed at ``mc_samples`` copies per request, the cap when a target standard error
(``mc_target_se``) stops a request earlier: an upper bound too. (Slightly over 500 lines: the unit
counts, their costs and their tables are read together.)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..config import LayerwiseError

#: the cost file shipped with the package (``benchmarks/bench_paper_profile.py`` writes it)
COST_FILE = "paper_profile.json"
TINY_COST_FILE = "paper_profile_tiny.json"

#: mean characters of one prompt item and of one few-shot example in the offline data files
#: (GSM8K test: question 240, question + answer 533; MATH-500: problem 196, problem + solution 727;
#: HumanEval: prompt 451; the generated arithmetic problems: ~45 per solved example), plus the template
PROMPT_CHARS: dict[str, tuple[int, int]] = {
    "lw_gsm8k": (260, 553),
    "lw_math500": (220, 760),
    "lw_humaneval": (451, 0),
    "lw_arithmetic": (47, 45),
}
#: likelihood tasks: mean characters of a request's context and continuation, requests per item (ARC:
#: "Question: ... Answer:" and each of 4 choices); lw_gutenberg scores each passage whole (its
#: ``gutenberg_chars`` parameter sets the length)
LIKELIHOOD_CHARS: dict[str, tuple[int, int, int]] = {
    "lw_arc_easy": (140, 23, 4),
    "lw_arc_challenge": (158, 29, 4),
}
#: copies per Monte-Carlo batch when chapters 03 and 07 stop requests at a target standard error
MC_TARGET_BATCH = 16
#: items in each task's test split (a chapter's ``limit`` above it evaluates them all)
TASK_ITEMS = {"lw_gsm8k": 1319, "lw_math500": 500, "lw_humaneval": 164, "lw_arc_easy": 2376, "lw_arc_challenge": 1172}
#: characters per token of the papers' tokenizers on English and math text (approximate)
CHARS_PER_TOKEN = 4.0


def prompt_tokens(task: str, shots: int) -> int:
    """Approximate prompt length in tokens of ``task`` with ``shots`` solved examples in front."""
    if task not in PROMPT_CHARS:
        raise LayerwiseError(f"no prompt length for task {task!r}: add it to layerwise.book.estimate.PROMPT_CHARS "
                             f"(known: {', '.join(PROMPT_CHARS)})")
    item, shot = PROMPT_CHARS[task]
    return max(1, round((item + shots * shot) / CHARS_PER_TOKEN))


#: the tasks' default shots (their YAMLs) when a chapter's ``num_fewshot`` does not name them
DEFAULT_SHOTS = {"lw_gsm8k": 5, "lw_math500": 4, "lw_humaneval": 0, "lw_arithmetic": 0}


# ---------------------------------------------------------------------------------------------
# Cost file
# ---------------------------------------------------------------------------------------------


def cost_path(tiny: bool = False) -> Path:
    """Where the package's cost file lives (it may not exist before the benchmark ran)."""
    return Path(str(resources.files("layerwise.book") / "costs" / (TINY_COST_FILE if tiny else COST_FILE)))


def load_costs(path: str | Path | None = None, *, tiny: bool = False) -> dict[str, Any]:
    """The measured unit costs: ``{"device", "command", "models": {key: {"ids", "family", "layers",
    "build_s", "ops": {op: {"seconds", ...shape}}}}}``."""
    p = Path(path) if path else cost_path(tiny)
    if not p.is_file():
        raise LayerwiseError(f"no cost file at {p}: run `python benchmarks/bench_paper_profile.py` on a GPU "
                             "(or --tiny on CPU) to measure one")
    costs: dict[str, Any] = json.loads(p.read_text())
    return costs


def model_key(costs: Mapping[str, Any], model_id: str) -> str | None:
    """The cost file's model measured for ``model_id`` (a hub id, Base or Instruct), else None."""
    for key, m in costs.get("models", {}).items():
        if model_id == key or model_id in m.get("ids", ()):
            return str(key)
    return None


# ---------------------------------------------------------------------------------------------
# Units of work
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Work:
    """``units`` calls of operation ``op`` at ``shape`` (what one unit is, in words: ``unit``)."""

    unit: str
    units: int
    op: str
    shape: tuple[tuple[str, Any], ...] = ()
    scale: float = 1.0  #: share of a full unit's cost (e.g. a forward pass with skipped blocks)

    @property
    def shape_dict(self) -> dict[str, Any]:
        return dict(self.shape)


def _work(unit: str, units: int, op: str, scale: float = 1.0, **shape: Any) -> Work:
    return Work(unit, int(units), op, tuple(sorted(shape.items())), scale)


def _batches(n: int, batch: int) -> int:
    return math.ceil(max(0, n) / max(1, batch))


def _generation(family: str, batches: int, batch: int, prompt: int, gen: int, steps: int, what: str,
                scale: float = 1.0, prompts: int | None = None) -> list[Work]:
    """A chapter's generation: ``batches`` batches of up to ``batch`` prompts (``prompts`` in all, default
    full batches) of ``prompt`` tokens, ``gen`` new tokens; diffusion samplers run ``steps`` model calls
    over prompt + answer, AR a prefill + ``gen`` decoding steps. Model calls over many tokens cost in
    proportion to the prompts a batch holds; an AR decoding step costs the same in a part-filled batch."""
    if batches <= 0:
        return []
    fill = min(1.0, (prompts if prompts is not None else batches * batch) / (batches * batch))
    if family == "ar":
        return [_work(f"{what}: prefill, {batch} x {prompt} tokens", batches, "ar_prefill", scale * fill,
                      batch=batch, seq_len=prompt),
                _work(f"{what}: decoding step, batch {batch}", batches * gen, "ar_token", scale, batch=batch,
                      seq_len=prompt + gen)]
    op = "dream_step" if family == "ar2dlm" else "diffusion_step"
    return [_work(f"{what}: denoising step, {batch} x ({prompt} + {gen}) tokens", batches * steps, op, scale * fill,
                  batch=batch, seq_len=prompt + gen)]


def _likelihood(family: str, task: str, p: Mapping[str, Any], evaluations: int, scale: float = 1.0) -> list[Work]:
    """A likelihood task scored ``evaluations`` times: diffusion models run ``ceil(mc_samples / batch)``
    Monte-Carlo batches per request (``mc_samples`` is the cap when a target standard error stops a
    request earlier), AR models one forward pass per batch of requests."""
    if task == "lw_gutenberg":
        ctx, cont, per_item = 1, round(p["gutenberg_chars"] / CHARS_PER_TOKEN), 1
    else:
        c_ctx, c_cont, per_item = LIKELIHOOD_CHARS[task]
        ctx, cont = round(c_ctx / CHARS_PER_TOKEN), max(1, round(c_cont / CHARS_PER_TOKEN))
    requests = evaluations * _items(task, p["limit"]) * per_item
    n = ctx + cont
    if family == "ar":
        bs = int(p.get("batch_size", 8))
        return [_work(f"{task}: scoring batch, {bs} x {n} tokens", evaluations * _batches(requests // evaluations, bs),
                      "ar_loglik", scale, batch=bs, seq_len=n)]
    mc = int(p["mc_samples"])
    mcb = MC_TARGET_BATCH if p.get("mc_target_se") else mc  # the chapters' Monte-Carlo batch
    what = f"{mc} samples per request" + (f" at most (target SE {p['mc_target_se']} nats)" if p.get("mc_target_se")
                                          else "")
    return [_work(f"{task}: Monte-Carlo batch, {mcb} x {n} tokens ({what})", requests * math.ceil(mc / mcb),
                  "mc_batch", scale, batch=mcb, seq_len=n)]


def _llada_steps(gen: int, steps: int, block_length: int) -> int:
    """Model calls of LLaDA's sampler for ``steps`` (at least one per block)."""
    nb = gen // block_length if block_length and gen % block_length == 0 else 1
    return max(nb, steps)


def skip_configurations(strategies: Sequence[str], k_max: int, n_layers: int, *, random_draws: int,
                        seed: int = 0) -> list[int]:
    """The number of skipped blocks of each distinct non-empty skip set chapter 03 evaluates (its loop
    over strategies, draws and k through :func:`layerwise.skipping.select_layers`). ``redundant``
    depends on measured block influences, so each of its k counts as a set of its own: an upper bound."""
    from ..skipping import select_layers

    sets: set[tuple[int, ...]] = set()
    redundant: list[int] = []
    for strategy in strategies:
        if strategy == "redundant":
            redundant = list(range(1, k_max + 1))
            continue
        for draw in range(random_draws if strategy == "random" else 1):
            for k in range(1, k_max + 1):
                sets.add(tuple(select_layers(strategy, k, n_layers, seed=seed + draw)))
    return sorted([len(s) for s in sets] + redundant)


def compression_configurations(p: Mapping[str, Any], family: str) -> dict[str, int]:
    """Chapter 07's configurations by compression method (its ``configurations()``): ``{method: count}``."""
    out: dict[str, int] = {}
    for m in p["quant_methods"]:
        out[m] = out.get(m, 0) + len(p["bits"])
    for m in p["prune_methods"]:
        out[m] = out.get(m, 0) + len(p["sparsities"])
    out[p["allocation_method"]] = out.get(p["allocation_method"], 0) + len(p["allocation_schemes"])
    if family != "ar" and p["diffusion_calibration"]:
        out["gptq"] = out.get("gptq", 0) + 1
    return out


def _items(task: str, limit: int) -> int:
    return min(int(limit), TASK_ITEMS.get(task, int(limit)))


def ablation_conditions(p: Mapping[str, Any], n_layers: int) -> tuple[int, int]:
    """Chapter 05's conditions (:func:`layerwise.ablation_design.plan_ablations`, the unmodified one
    included) and how many of them are the headline site's and definition's. Each definition is taken
    to find a channel of its own (where two find the same one, the chapter runs fewer): an upper bound."""
    from types import SimpleNamespace

    import numpy as np

    from ..ablation_design import plan_ablations

    d = 4 * (p["rank_window"] + p["n_draws"]) + 8
    rng = np.random.default_rng(0)
    sites = sorted(set(p["sites"]) | set(p["definitions"]))
    stats = {s: SimpleNamespace(super_outlier=i, max_abs=rng.random((n_layers, d))) for i, s in enumerate(sites)}
    plan = plan_ablations(stats, n_layers, sites=p["sites"], definitions=p["definitions"], n_draws=p["n_draws"],
                          rank_window=p["rank_window"], seed=p["seed"])
    head = [c for c in plan.conditions
            if c.kind != "none" and c.site == p["headline_site"] and c.definition == p["headline_definition"]]
    return len(plan.conditions), len(head)


def _shots(p: Mapping[str, Any], task: str) -> int:
    return int((p.get("num_fewshot") or {}).get(task, DEFAULT_SHOTS.get(task, 0)))


#: chapters that run no model of a hub-model profile (nothing to pretrain; ledger and tables; seeds of the
#: triplet only)
NO_MODEL_WORK = ("00_pretraining", "08_claims_ledger", "09_performance", "10_robustness")


def chapter_work(chapter: str, p: Mapping[str, Any], model: Mapping[str, Any]) -> tuple[list[Work], str]:
    """The units of ``chapter`` for one model (cost-file entry ``model``) at parameters ``p``; the second
    value is a reason when part of the chapter has no estimate ("" otherwise)."""
    fam, L, bs = model["family"], int(model["layers"]), int(p.get("batch_size", 8))
    work: list[Work]
    diffusion = fam != "ar"
    if chapter == "01_layer_similarity":
        ratios = len(p["mask_ratios"]) if diffusion else 1
        return [_work(f"probe batch, {bs} x {p['seq_len']} tokens", _batches(p["n_seqs"], bs) * ratios,
                      "layer_similarity", batch=bs, seq_len=p["seq_len"])], ""
    if chapter == "02_token_similarity":
        return [_work(f"probe batch, {bs} x {p['seq_len']} tokens", _batches(p["n_seqs"], bs), "token_similarity",
                      batch=bs, seq_len=p["seq_len"], max_distance=p["max_distance"])], ""
    if chapter == "03_layer_skipping":
        k_max = min(p["max_skip"] or max(1, L // 3), max(L - 2, 0))  # first and last blocks are never skipped
        skipped = [0, *skip_configurations(p["strategies"], k_max, L, random_draws=p["random_draws"], seed=p["seed"])]
        n_conf = len(skipped)
        kept = sum(L - k for k in skipped) / (L * n_conf)  # a skipped block costs nothing
        work = [_work(f"influence batch, {bs} x {p['influence_len']} tokens", _batches(p["influence_seqs"], bs),
                      "layer_similarity", batch=bs, seq_len=p["influence_len"])]
        for task in [p["generation_task"], *p["extra_generation_tasks"]]:
            prompt = prompt_tokens(task, _shots(p, task))
            steps = _llada_steps(p["gen_length"], p["diffusion_steps"], 32) if fam == "dlm" else p["diffusion_steps"]
            n = _items(task, p["limit"])
            work += _generation(fam, n_conf * _batches(n, bs), bs, prompt, p["gen_length"], steps,
                                f"{task} ({n_conf} configurations, {kept:.0%} of the blocks on average)", kept,
                                prompts=n_conf * n)
        reason = ""
        for task in p["likelihood_tasks"]:
            if task == "lw_gutenberg" or task in LIKELIHOOD_CHARS:
                work += _likelihood(fam, task, p, n_conf, kept)
            else:
                reason = f"likelihood task {task} not estimated"
        return work, reason
    if chapter == "04_super_outlier":
        groups = min(p["n_groups"], p["n_seqs"])
        per_group = _batches(math.ceil(p["n_seqs"] / max(groups, 1)), bs)
        work = [_work(f"channel-statistics batch, {bs} x {p['seq_len']} tokens",
                      _batches(p["n_seqs"], bs) + 2 * groups * per_group,  # all, then groups at each site
                      "channel_stats", batch=bs, seq_len=p["seq_len"])]
        if diffusion:
            steps = _llada_steps(p["gen_length"], p["diffusion_steps"], p["block_length"])
            work += _generation(fam, 1, p["gen_prompts"], p["prompt_len"], p["gen_length"], steps,
                                "recorded generation")
        return work, ""
    if chapter == "05_outlier_ablation":
        n_cond, n_head = ablation_conditions(p, L)
        work = [_work(f"channel-statistics batch, {bs} x {p['stat_len']} tokens", _batches(p["stat_seqs"], bs),
                      "channel_stats", batch=bs, seq_len=p["stat_len"])]
        text_steps = p["diffusion_steps"] or p["gen_tokens"]
        arith_steps = p["diffusion_steps"] or p["answer_tokens"]
        if fam == "dlm":
            text_steps = _llada_steps(p["gen_tokens"], text_steps, 32)
            arith_steps = _llada_steps(p["answer_tokens"], arith_steps, 32)
        pool = p["text_prompts"]
        tested = min(p["max_test_prompts"] or pool, pool)  # at most: the non-looping prompts of the pool
        compare = min(p["compare_prompts"], pool)
        # the chapter packs (condition, prompt) rows of many conditions into each batch (mixed_batches)
        ablated = (n_cond - 1) * tested + n_head * compare
        text = _batches(pool, bs) + _batches(ablated, bs)
        work += _generation(fam, text, bs, p["prompt_len"], p["gen_tokens"], text_steps,
                            f"text continuation ({n_cond} conditions, at most {tested} tested prompts)",
                            prompts=pool + ablated)
        arith = prompt_tokens("lw_arithmetic", p["arith_fewshot"])
        work += _generation(fam, _batches(n_cond * p["arith_items"], bs), bs, arith, p["answer_tokens"], arith_steps,
                            f"arithmetic ({n_cond} conditions)", prompts=n_cond * p["arith_items"])
        return work, ""
    if chapter == "06_alpha_hill":
        return [_work("spectra of one block's matrices (one cut-off rule)", L * len(p["methods"]),
                      "alpha_hill_block")], ""
    if chapter == "07_compression":
        confs = compression_configurations(p, fam)
        calib = dict(calib_seqs=p["calib_seqs"], calib_len=p["calib_len"])
        work = []
        if "owl" in p["allocation_schemes"]:
            work.append(_work("OWL ratios of one block (calibration pass)", L, "compress_block", method="wanda",
                              **calib))
        if "alpha" in p["allocation_schemes"]:
            work.append(_work("spectra of one block's matrices", L, "alpha_hill_block"))
        for method, n in confs.items():
            work.append(_work(f"{method}: one block ({n} configurations)", n * L, "compress_block", method=method,
                              **calib))
        n_eval = 1 + sum(confs.values())
        reason = ""
        for task in p["tasks"]:
            if task == "lw_gutenberg" or task in LIKELIHOOD_CHARS:
                work += _likelihood(fam, task, p, n_eval)
                continue
            if task not in PROMPT_CHARS:
                reason = f"task {task} not estimated"
                continue
            prompt = prompt_tokens(task, _shots(p, task))
            steps = _llada_steps(p["gen_length"], p["gen_length"], 32) if fam == "dlm" else p["gen_length"]
            n = _items(task, p["limit"])
            work += _generation(fam, n_eval * _batches(n, bs), bs, prompt, p["gen_length"], steps,
                                f"{task} ({n_eval} evaluations)", prompts=n_eval * n)
        return work, reason
    if chapter in NO_MODEL_WORK:
        return [], ""
    return [], "the estimate does not count this chapter's units"


# ---------------------------------------------------------------------------------------------
# Costs of units, the estimate, its table
# ---------------------------------------------------------------------------------------------


_TOKEN_SCALED = {"layer_similarity", "token_similarity", "channel_stats", "diffusion_step", "dream_step", "ar_prefill",
                 "mc_batch", "ar_loglik"}


def unit_seconds(model: Mapping[str, Any], w: Work) -> float | None:
    """Seconds of one unit of ``w`` on the measured device; None when the op was not measured."""
    ops = model.get("ops", {})
    key = w.op if w.op != "compress_block" else f"compress_block:{w.shape_dict['method']}"
    m = ops.get(key)
    if m is None:
        return None
    s = float(m["seconds"]) * w.scale
    sh = w.shape_dict
    if w.op in _TOKEN_SCALED:
        s *= (sh["batch"] * sh["seq_len"]) / (m["batch"] * m["seq_len"])
    elif w.op == "compress_block" and m.get("calib_seqs"):
        s *= (sh["calib_seqs"] * sh["calib_len"]) / (m["calib_seqs"] * m["calib_len"])
    return s


@dataclass
class Row:
    chapter: str
    model: str
    unit: str
    units: int
    s_per_unit: float
    gpu_hours: float


@dataclass
class Estimate:
    """Rows (chapter, model, unit, units, seconds per unit, GPU-hours), what has no estimate, the device."""

    rows: list[Row]
    missing: list[tuple[str, str, str]] = field(default_factory=list)  #: (chapter, model, reason)
    device: str = ""

    def by_chapter_model(self) -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = {}
        for r in self.rows:
            out[(r.chapter, r.model)] = out.get((r.chapter, r.model), 0.0) + r.gpu_hours
        return out

    def by_chapter(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for r in self.rows:
            out[r.chapter] = out.get(r.chapter, 0.0) + r.gpu_hours
        return out

    @property
    def total_hours(self) -> float:
        return sum(r.gpu_hours for r in self.rows)


def _models_of(p: Mapping[str, Any]) -> list[str]:
    out = []
    for m in p.get("models") or []:
        out.append(str(m.get("id", m)) if isinstance(m, Mapping) else str(m))
    return out


def estimate(params: Mapping[str, Mapping[str, Any]], costs: Mapping[str, Any]) -> Estimate:
    """The GPU-hours of each chapter x model from ``{chapter: full parameters}`` (the chapter's
    defaults overridden by the profile, as :func:`plan_parameters` gives) and a cost file."""
    est = Estimate([], [], str(costs.get("device", "")))
    for chapter, p in params.items():
        for mid in _models_of(p):
            key = model_key(costs, mid)
            if key is None:
                est.missing.append((chapter, mid, "no measured costs for this model"))
                continue
            model = costs["models"][key]
            work, reason = chapter_work(chapter, p, model)
            if not work:
                if reason:
                    est.missing.append((chapter, mid, reason))
                continue
            est.rows.append(Row(chapter, mid, "model load (random-weight build)", 1, float(model["build_s"]),
                                float(model["build_s"]) / 3600))
            for w in work:
                s = unit_seconds(model, w)
                if s is None:
                    what = w.op + (f" {w.shape_dict['method']}" if "method" in w.shape_dict else "")
                    est.missing.append((chapter, mid, f"{what} not measured: run benchmarks/bench_paper_profile.py"))
                    continue
                est.rows.append(Row(chapter, mid, w.unit, w.units, s, w.units * s / 3600))
            if reason:
                est.missing.append((chapter, mid, reason))
    return est


def plan_parameters(plans: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """``{chapter: parameters}`` of runner plans, each chapter's declared defaults filled in."""
    from .chapters import schema

    out = {}
    for plan in plans:
        full = {name: prm.default for name, prm in schema(plan.nb, plan.chapter).items()}
        full.update(plan.parameters)
        out[plan.chapter] = full
    return out


def has_estimate(params: Mapping[str, Mapping[str, Any]], costs: Mapping[str, Any]) -> bool:
    """True when some chapter's model has measured costs (a profile of hub models)."""
    return any(model_key(costs, m) is not None for p in params.values() for m in _models_of(p))


def _short(model_id: str) -> str:
    return model_id.rsplit("/", 1)[-1]


def format_estimate(est: Estimate, *, budget_hours: float | None = None, detail: bool = False) -> str:
    """Markdown table of GPU-hours per chapter x model and the total (``detail``: one row per unit)."""
    lines = [f"Estimated GPU-hours on {est.device or 'the measured device'} (full-length generations: an "
             "upper bound)", ""]
    if detail:
        lines += ["| chapter | model | unit | units | s/unit | GPU-hours |", "|---|---|---|---:|---:|---:|"]
        lines += [f"| {r.chapter} | {_short(r.model)} | {r.unit} | {r.units} | {r.s_per_unit:.3g} | {r.gpu_hours:.2f} |"
                  for r in est.rows]
    else:
        lines += ["| chapter | model | GPU-hours |", "|---|---|---:|"]
        lines += [f"| {ch} | {_short(m)} | {h:.2f} |" for (ch, m), h in est.by_chapter_model().items()]
    total = f"| **total** | | **{est.total_hours:.2f}** |" if not detail else \
        f"| **total** | | | | | **{est.total_hours:.2f}** |"
    lines.append(total)
    if budget_hours is not None:
        verdict = "within" if est.total_hours <= budget_hours else "OVER"
        lines += ["", f"Total {est.total_hours:.1f} GPU-hours: {verdict} the {budget_hours:g} GPU-hour budget."]
    for ch, m, why in est.missing:
        lines.append(f"- {ch} / {m}: no estimate ({why})")
    return "\n".join(lines)


def describe_estimate(est: Estimate) -> str:
    """Plain-text lines for ``layerwise-book run --dry-run``: per chapter (per model) and the total."""
    lines = [f"estimated GPU time on {est.device} (measured unit costs, full-length generations: an upper bound):"]
    per = est.by_chapter_model()
    for ch, hours in est.by_chapter().items():
        models = ", ".join(f"{_short(m)} {h:.2f}" for (c, m), h in per.items() if c == ch)
        lines.append(f"  {ch}: {hours:.2f} GPU-h ({models})")
    for ch, m, why in est.missing:
        lines.append(f"  {ch}: {_short(m)}: no estimate ({why})")
    lines.append(f"  total: {est.total_hours:.2f} GPU-h")
    return "\n".join(lines)


def one_line(est: Estimate) -> str:
    """One line for the start of a real run."""
    miss = f"; {len(est.missing)} part(s) without an estimate" if est.missing else ""
    return f"estimated {est.total_hours:.1f} GPU-hours on {est.device} (upper bound){miss}"


def profile_parameters(profile: str, *, chapters: Sequence[str] | None = None,
                       notebooks_dir: str | Path | None = None,
                       overrides: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """``{chapter: parameters}`` of a profile as the runner resolves them (defaults < common < chapter
    section < ``overrides``), without the runner's checks of data and cache folders."""
    from ..params import validate
    from .chapters import discover_chapters, load_profile, read_chapter, resolve_parameters, schema, select_chapters
    from .paths import locate

    layout = locate(notebooks_dir)
    known = discover_chapters(layout.notebooks)
    sections = load_profile(profile, layout.profiles, list(known))
    out = {}
    for ch in select_chapters(known, chapters):
        declared = schema(read_chapter(known[ch]), ch)
        params, _ = resolve_parameters(profile, sections, ch, declared,
                                       {k: v for k, v in (overrides or {}).items() if k in declared})
        full = {name: prm.default for name, prm in declared.items()}
        full.update(validate(ch, declared, params))
        out[ch] = full
    return out


def plans_estimate(plans: Sequence[Any], costs: Mapping[str, Any] | None = None) -> Estimate | None:
    """The estimate of runner plans from the package's cost file (or ``costs``); None when no cost file
    exists or no planned chapter runs a model with measured costs (e.g. the triplet profiles)."""
    if costs is None:
        if not cost_path().is_file():
            return None
        costs = load_costs()
    params = plan_parameters(plans)
    if not has_estimate(params, costs):
        return None
    return estimate(params, costs)


#: the generated section of book/run_on_gpu.md lies between these lines
PAGE_START = "<!-- paper-profile-estimate: generated by `python benchmarks/bench_paper_profile.py --render` -->"
PAGE_END = "<!-- paper-profile-estimate: end -->"


def page_section(est: Estimate, costs: Mapping[str, Any], *, budget_hours: float = 24.0) -> str:
    """The estimate as the book page shows it (between :data:`PAGE_START` and :data:`PAGE_END`)."""
    per: dict[tuple[str, str], float] = {}  # (chapter, measured model: Base and Instruct together) -> hours
    for (ch, mid), h in est.by_chapter_model().items():
        key = (ch, model_key(costs, mid) or _short(mid))
        per[key] = per.get(key, 0.0) + h
    models = list(dict.fromkeys(m for _, m in per))
    chapters = list(est.by_chapter())
    head = "| chapter | " + " | ".join(models) + " | chapter total |"
    lines = [PAGE_START, "", head, "|---|" + "---:|" * (len(models) + 1)]
    for ch in chapters:
        cells = [f"{per[ch, name]:.2f}" if (ch, name) in per else "" for name in models]
        lines.append(f"| {ch} | " + " | ".join(cells) + f" | {est.by_chapter()[ch]:.2f} |")
    totals = [f"{sum(v for (_, m), v in per.items() if m == name):.2f}" for name in models]
    lines.append("| **total** | " + " | ".join(totals) + f" | **{est.total_hours:.2f}** |")
    verdict = "within" if est.total_hours <= budget_hours else "over"
    command = costs.get("command", "")
    lines += ["", f"GPU-hours per chapter and model (Base and Instruct together). Total: **{est.total_hours:.1f} "
              f"GPU-hours** on one {est.device}, {verdict} the {budget_hours:g} GPU-hour budget. Measured by "
              f"`{command}` (`benchmarks/results/paper_profile.md` has every unit); model load is the "
              "random-weight build, so add the time to read each checkpoint from disk."]
    lines += [f"- {ch} / {_short(m)}: no estimate ({why})" for ch, m, why in est.missing]
    lines += ["", PAGE_END]
    return "\n".join(lines)


def replace_page_section(text: str, section: str) -> str:
    """``text`` with its generated section replaced by ``section``."""
    if PAGE_START not in text or PAGE_END not in text:
        raise LayerwiseError("the page has no generated estimate section: add the lines "
                             f"{PAGE_START!r} and {PAGE_END!r} where it belongs")
    before, rest = text.split(PAGE_START, 1)
    return before + section + rest.split(PAGE_END, 1)[1]
