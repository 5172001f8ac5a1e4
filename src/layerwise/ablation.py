"""Reversible channel ablation, its random-channel control, and the text metrics that score it.

Paper B zeroes the super-outlier channel of the attention input (the normed hidden state entering
q/k/v) and reports that LLaDA's generations turn into "repetitive random token loops". This module
gives the intervention and the measurements:

- :func:`ablate_channels`: a context manager that zeroes (or mean-replaces) chosen channels at
  chosen layers through forward hooks on the adapter's modules. Nothing in the model is modified:
  on exit the hooks are removed and the model computes bit-identical outputs again.
- :func:`random_control_channels`: channels of similar magnitude rank to the target (the target
  excluded), the control the paper's referee asked for: is it *this* channel, or any large one?
- text statistics (``textstats`` section): repeated n-gram share (rep-n), distinct-n, the longest
  loop (longest contiguous span made of one unit repeated at least twice), and arithmetic exact
  match.
- :func:`run_conditions` / :func:`ablation_effect`: generate under each condition and compare the
  outlier ablation with the control draws, with a bootstrap CI over prompts and draws.

Chapter 05's design on top of these (two sites, two outlier definitions, the prompts a model does
not already loop on, its findings paragraph) is :mod:`layerwise.ablation_design`.

Shapes: hidden states are ``[batch, seq, d_model]``; channel statistics ``[d_model]`` or
``[n_layers, d_model]``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .arch import LayerAdapter, check_layer_index
from .config import LayerwiseError, progress_disabled
from .models import LoadedModel
from .stats import two_level_bootstrap

Where = Literal["attn_input", "residual"]
Mode = Literal["zero", "mean"]
Layers = Sequence[int] | Literal["all"]

# ---------------------------------------------------------------------------------------------
# Hooks
# ---------------------------------------------------------------------------------------------


def hidden_size(lm: LoadedModel) -> int:
    """``d_model``, read from the embedding matrix ``[vocab, d_model]`` (works for every adapter)."""
    emb: Any = lm.adapter.get_embed(lm.model)  # an Embedding (or Embedding-like) module
    return int(emb.weight.shape[-1])


def resolve_layers(lm: LoadedModel, layers: Layers) -> list[int]:
    """``"all"`` -> every block index; otherwise each index checked against the model's depth."""
    n = lm.num_layers
    if isinstance(layers, str):
        if layers != "all":
            raise LayerwiseError(f"layers={layers!r}: pass a list of block indices or 'all'")
        return list(range(n))
    if isinstance(layers, int):
        layers = [layers]
    out = list(layers)
    for i in out:
        check_layer_index(i, n)
    if not out:
        raise LayerwiseError("layers is empty: pass at least one block index or 'all'")
    return sorted(set(out))


def _resolve_channels(channels: int | Sequence[int], d: int) -> list[int]:
    chans = [channels] if isinstance(channels, (int, np.integer)) else list(channels)
    if not chans:
        raise LayerwiseError("channels is empty: pass a channel index or a list of them")
    for c in chans:
        if not isinstance(c, (int, np.integer)) or isinstance(c, bool) or not 0 <= int(c) < d:
            raise LayerwiseError(f"channel {c!r} is out of range: the hidden size is {d}, use 0..{d - 1}")
    return sorted({int(c) for c in chans})


def _hook_module(lm: LoadedModel, block: nn.Module, where: Where) -> nn.Module:
    if where == "attn_input":
        return lm.adapter.attn_input_module(block)
    if where == "residual":
        return block
    raise LayerwiseError(f"where={where!r}: use 'attn_input' (the q/k/v input) or 'residual' (block output)")


def _replace_hidden(out: Any, new: torch.Tensor) -> Any:
    """Put ``new`` where :meth:`LayerAdapter.hidden_from_output` found the hidden state."""
    if isinstance(out, torch.Tensor):
        return new
    if isinstance(out, tuple):
        return (new, *out[1:])
    if isinstance(out, list):
        return [new, *out[1:]]
    raise LayerwiseError(f"cannot ablate a block output of type {type(out).__name__}: "
                         "use where='attn_input', or register an adapter whose blocks return tensors/tuples")


def _layer_values(means: torch.Tensor | dict[int, torch.Tensor] | None, layers: list[int], n_layers: int,
                  d: int) -> dict[int, torch.Tensor]:
    """Replacement vector ``[d]`` per layer for ``mode="mean"``."""
    if means is None:
        raise LayerwiseError("mode='mean' needs means=...: per-layer channel means, e.g. from "
                             "layerwise.ablation.channel_means(lm, input_ids)")
    if isinstance(means, dict):
        missing = [i for i in layers if i not in means]
        if missing:
            raise LayerwiseError(f"means has no entry for layers {missing}: give a [d] tensor per ablated layer")
        vals = {i: torch.as_tensor(means[i]) for i in layers}
    else:
        m = torch.as_tensor(means)
        if m.dim() == 1:
            vals = {i: m for i in layers}
        elif m.dim() == 2 and m.shape[0] == n_layers:
            vals = {i: m[i] for i in layers}
        else:
            raise LayerwiseError(f"means of shape {tuple(m.shape)}: pass [d_model] or [n_layers={n_layers}, d_model]")
    for i, v in vals.items():
        if v.shape != (d,):
            raise LayerwiseError(f"means for layer {i} has shape {tuple(v.shape)}, expected ({d},)")
    return vals


def _replace_hook(mask: torch.Tensor, values: torch.Tensor,
                  rows: int | None = None) -> Callable[[nn.Module, Any, Any], Any]:
    """A forward hook that puts ``values`` where ``mask`` is set in the hooked hidden state: ``[d]`` for
    every row, or ``[rows, d]`` per row of a batch that must have ``rows`` rows. Mask and values move
    to the hidden state's device and dtype once per pair."""
    cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
    per_row = (lambda t: t[:, None, :]) if rows is not None else (lambda t: t)

    def hook(_mod: nn.Module, _args: Any, out: Any) -> Any:
        h = LayerAdapter.hidden_from_output(out)
        if rows is not None and h.shape[0] != rows:
            raise LayerwiseError(f"a batch of {h.shape[0]} rows under conditions for {rows} rows: generate "
                                 f"the rows of apply_conditions_by_row in one batch (batch_size={rows})")
        key = (h.device, h.dtype)
        if key not in cache:
            cache[key] = (per_row(mask.to(h.device)), per_row(values.to(device=h.device, dtype=h.dtype)))
        m, v = cache[key]
        return _replace_hidden(out, torch.where(m, v, h))

    return hook


@contextlib.contextmanager
def ablate_channels(lm: LoadedModel, channels: int | Sequence[int], layers: Layers = "all",
                    mode: Mode = "zero", where: Where = "attn_input",
                    means: torch.Tensor | dict[int, torch.Tensor] | None = None) -> Iterator[list[int]]:
    """Zero or mean-replace ``channels`` of the attention input (or the residual stream) at ``layers``.

    ``where="attn_input"`` hooks the output of ``adapter.attn_input_module(block)`` (the normed
    hidden state that q/k/v read, paper B's QKV input); ``where="residual"`` hooks the block output
    (the residual stream the next block reads). ``mode="zero"`` sets the channels to 0;
    ``mode="mean"`` sets them to ``means`` (``[d]``, ``[n_layers, d]`` or ``{layer: [d]}``, e.g. from
    :func:`channel_means`). The replacement is out of place (``torch.where``), so autograd and the
    module's own buffers are untouched. Yields the resolved layer list; removes every hook on exit,
    also on error.
    """
    if mode not in ("zero", "mean"):
        raise LayerwiseError(f"mode={mode!r}: use 'zero' or 'mean'")
    d = hidden_size(lm)
    chans = _resolve_channels(channels, d)
    idx = resolve_layers(lm, layers)
    blocks = lm.adapter.get_blocks(lm.model)
    vals = _layer_values(means, idx, len(blocks), d) if mode == "mean" else {}
    mask = torch.zeros(d, dtype=torch.bool)
    mask[chans] = True

    handles = []
    try:
        for i in idx:
            hook = _replace_hook(mask, vals[i] if mode == "mean" else torch.zeros(d))
            handles.append(_hook_module(lm, blocks[i], where).register_forward_hook(hook))
        yield idx
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def channel_means(lm: LoadedModel, input_ids: torch.Tensor, *, attention_mask: torch.Tensor | None = None,
                  where: Where = "attn_input", batch_size: int = 8) -> torch.Tensor:
    """Signed mean of every channel over tokens, per layer: ``[n_layers, d_model]`` float32.

    The replacement value for ``mode="mean"``. (The probes module streams magnitudes, mean |x| and
    max |x|; mean ablation needs the signed mean, which is a separate sum.) ``input_ids``:
    ``[n, seq]``; padded positions (``attention_mask == 0``) are left out. Memory is
    ``n_layers x d_model`` whatever the number of tokens.
    """
    if input_ids.dim() != 2:
        raise LayerwiseError(f"input_ids must be [n, seq], got shape {tuple(input_ids.shape)}")
    blocks = lm.adapter.get_blocks(lm.model)
    L, d, dev = len(blocks), hidden_size(lm), lm.device
    sums = torch.zeros(L, d, dtype=torch.float64, device=dev)
    count = torch.zeros((), dtype=torch.float64, device=dev)
    cur: dict[str, torch.Tensor | None] = {"mask": None}

    def make_hook(i: int) -> Callable[[nn.Module, Any, Any], None]:
        def hook(_mod: nn.Module, _args: Any, out: Any) -> None:
            h = LayerAdapter.hidden_from_output(out).to(torch.float64)  # [b, s, d]
            m = cur["mask"]
            sums[i] += (h * m[..., None]).sum((0, 1)) if m is not None else h.sum((0, 1))
        return hook

    handles = [_hook_module(lm, b, where).register_forward_hook(make_hook(i)) for i, b in enumerate(blocks)]
    try:
        for s in range(0, input_ids.shape[0], batch_size):
            ids = input_ids[s:s + batch_size].to(dev)
            am = attention_mask[s:s + batch_size].to(dev) if attention_mask is not None else None
            cur["mask"] = am.to(torch.float64) if am is not None else None
            lm.logits(ids, am)  # the adapter's forward: LLaDA / Dream / DiffusionGemma padding conventions
            count += am.sum() if am is not None else ids.numel()
    finally:
        for h in handles:
            h.remove()
    return (sums / count).float()


def random_control_channels(stats: torch.Tensor | np.ndarray, target_channel: int, n_draws: int, seed: int = 0,
                            rank_window: int = 8, exclude: Sequence[int] = ()) -> list[int]:
    """Random channels whose magnitude rank is near the target's: the control for an ablation.

    ``stats``: a per-channel magnitude ``[d]`` (e.g. max |x| of the attention input) or
    ``[n_layers, d]`` (averaged over layers first). Channels are ranked by magnitude (0 = largest);
    candidates are those within ``rank_window`` ranks of the target, the target and ``exclude``
    left out; for the super-outlier (rank 0) these are the next ``rank_window`` largest channels.
    Returns ``n_draws`` channels, distinct while the window allows (then drawn with replacement).
    """
    s = torch.as_tensor(np.asarray(stats, dtype=np.float64) if isinstance(stats, np.ndarray) else stats)
    s = s.detach().double().cpu()
    if s.dim() == 2:
        s = s.mean(0)
    if s.dim() != 1:
        raise LayerwiseError(f"stats must be [d] or [n_layers, d] channel magnitudes, got shape {tuple(s.shape)}")
    d = s.numel()
    _resolve_channels(target_channel, d)
    if n_draws < 1 or rank_window < 1:
        raise LayerwiseError(f"n_draws={n_draws} and rank_window={rank_window} must both be >= 1")
    order = torch.argsort(s, descending=True).tolist()  # channel ids by rank
    r = order.index(int(target_channel))
    banned = {int(target_channel), *map(int, exclude)}
    cands = [c for c in order[max(0, r - rank_window): r + rank_window + 1] if c not in banned]
    if not cands:
        raise LayerwiseError(f"no control channel within rank_window={rank_window} of channel {target_channel}: "
                             "widen rank_window")
    rng = np.random.default_rng(seed)
    replace = n_draws > len(cands)
    return [int(c) for c in rng.choice(cands, size=n_draws, replace=replace)]


# ---------------------------------------------------------------------------------------------
# textstats: repetition and task accuracy of generated text
# ---------------------------------------------------------------------------------------------


def ngrams(tokens: Sequence[Any], n: int) -> list[tuple[Any, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def repeated_ngram_share(tokens: Sequence[Any], n: int) -> float:
    """rep-n (Welleck et al. 2019): share of the text's n-grams that repeat an n-gram seen before.

    ``1 - |unique n-grams| / |n-grams|``; NaN when the text has fewer than ``n`` tokens.
    """
    g = ngrams(tokens, n)
    return float("nan") if not g else 1.0 - len(set(g)) / len(g)


def distinct_n(texts_tokens: Sequence[Sequence[Any]], n: int) -> float:
    """distinct-n (Li et al. 2016): unique n-grams over all n-grams, pooled over a set of texts."""
    allg = [g for t in texts_tokens for g in ngrams(t, n)]
    return float("nan") if not allg else len(set(allg)) / len(allg)


@dataclass(frozen=True)
class Loop:
    """The longest span ``tokens[start:start+length]`` made of a unit of ``period`` tokens repeated
    (at least twice, possibly with a partial last copy). ``length == 0`` when there is no repeat."""

    length: int
    period: int
    start: int


def longest_loop(tokens: Sequence[Any], max_period: int | None = None) -> Loop:
    """The longest repeated contiguous cycle, e.g. ``a b c a b c a b`` -> length 8, period 3.

    For each period ``p``, positions with ``t[j] == t[j + p]`` form runs; a run of ``r >= p`` matches
    starting at ``j`` means ``t[j : j + r + p]`` repeats a ``p``-token unit, length ``r + p``.
    O(len * max_period) with numpy (default ``max_period = len // 2``).
    """
    n = len(tokens)
    if n < 2:
        return Loop(0, 0, 0)
    # map tokens to ints so that numpy compares them vectorised (tokens may be str / int)
    vocab: dict[Any, int] = {}
    a = np.fromiter((vocab.setdefault(t, len(vocab)) for t in tokens), dtype=np.int64, count=n)
    best = Loop(0, 0, 0)
    for p in range(1, (max_period or n // 2) + 1):
        if 2 * p > n:
            break
        eq = np.concatenate([[False], a[p:] == a[:-p], [False]])
        edges = np.flatnonzero(np.diff(eq.astype(np.int8)))
        starts, ends = edges[::2], edges[1::2]
        runs = ends - starts
        ok = runs >= p
        if ok.any():
            k = int(np.argmax(np.where(ok, runs, -1)))
            length = int(runs[k]) + p
            if length > best.length:
                best = Loop(length, p, int(starts[k]))
    return best


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def extract_answer(text: str, marker: str = "Answer:") -> str | None:
    """The first number after ``marker`` (or in the text, when the continuation lacks the marker)."""
    pos = text.find(marker)
    m = _NUMBER.search(text[pos + len(marker):] if pos >= 0 else text)
    return m.group(0) if m else None


def exact_match(generation: str, answer: str, marker: str = "Answer:") -> bool:
    got = extract_answer(generation, marker)
    return got is not None and got.lstrip("+") == str(answer).strip()


def whitespace_tokens(text: str) -> list[str]:
    return text.split()


def text_metrics(text: str, tokenize: Callable[[str], Sequence[Any]] = whitespace_tokens,
                 ns: Sequence[int] = (1, 2, 3, 4)) -> dict[str, float]:
    """Repetition metrics of one generation: ``rep_n`` for each n, longest loop (tokens, share)."""
    toks = list(tokenize(text))
    loop = longest_loop(toks)
    out: dict[str, float] = {"n_tokens": float(len(toks))}
    for n in ns:
        out[f"rep_{n}"] = repeated_ngram_share(toks, n)
        out[f"distinct_{n}"] = distinct_n([toks], n)
    out["loop_len"] = float(loop.length)
    out["loop_frac"] = loop.length / len(toks) if toks else float("nan")
    out["loop_period"] = float(loop.period)
    return out


# ---------------------------------------------------------------------------------------------
# Experiment: generate under conditions, compare outlier vs control
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """One generation setting: ``kind`` is ``none`` / ``outlier`` / ``control``; ``scope`` names the
    layer set (e.g. ``early`` / ``all``); ``draw`` numbers the control's random channel. ``site``
    (``attn_input`` / ``residual``; None = the ``where`` of :func:`run_conditions`) is where the
    channel is ablated; ``definition`` names how the target channel was chosen (e.g. the site whose
    max |x| picked it)."""

    name: str
    kind: Literal["none", "outlier", "control"]
    channels: tuple[int, ...] = ()
    layers: tuple[int, ...] | Literal["all"] = "all"
    scope: str = ""
    draw: int | None = None
    site: Where | None = None
    definition: str = ""


def ablation_conditions(target_channel: int, scopes: dict[str, Sequence[int] | Literal["all"]],
                        control_channels: Sequence[int], *, site: Where | None = None, definition: str = "",
                        baseline: bool = True) -> list[Condition]:
    """The baseline (unless ``baseline=False``), the outlier ablated at each layer scope, and one
    control per (scope, draw). With ``site``, condition names start ``<site>/<definition>/``."""
    conds = [Condition("none", "none")] if baseline else []
    prefix = f"{site}/{definition}/" if site else ""
    for scope, layers in scopes.items():
        lay: tuple[int, ...] | Literal["all"] = "all" if layers == "all" else tuple(layers)
        conds.append(Condition(f"{prefix}outlier/{scope}", "outlier", (int(target_channel),), lay, scope,
                               site=site, definition=definition))
        conds += [Condition(f"{prefix}control/{scope}/{k}", "control", (int(c),), lay, scope, k, site=site,
                            definition=definition)
                  for k, c in enumerate(control_channels)]
    return conds


Means = torch.Tensor | dict[int, torch.Tensor] | dict[str, torch.Tensor] | None


def _site_means(means: Means, site: str) -> torch.Tensor | dict[int, torch.Tensor] | None:
    """``means`` may be keyed by site (``{"attn_input": [L, d], "residual": [L, d]}``)."""
    if isinstance(means, dict) and means and all(isinstance(k, str) for k in means):
        if site not in means:
            raise LayerwiseError(f"means has no entry for site {site!r}: give channel_means(lm, ids, where={site!r})")
        return means[site]  # type: ignore[index]
    return means  # type: ignore[return-value]


@contextlib.contextmanager
def apply_condition(lm: LoadedModel, cond: Condition, *, mode: Mode = "zero", where: Where = "attn_input",
                    means: Means = None) -> Iterator[None]:
    """Hooks for ``cond`` (none for the baseline), at ``cond.site`` or else ``where``."""
    if cond.kind == "none":
        yield
        return
    site = cond.site or where
    with ablate_channels(lm, list(cond.channels), cond.layers if cond.layers == "all" else list(cond.layers),
                         mode=mode, where=site, means=_site_means(means, site) if mode == "mean" else None):
        yield


@contextlib.contextmanager
def apply_conditions_by_row(lm: LoadedModel, conditions: Sequence[Condition], *, mode: Mode = "zero",
                            where: Where = "attn_input", means: Means = None) -> Iterator[None]:
    """Row ``j`` of each batch the model runs gets ``conditions[j]``'s ablation (the baseline: none).

    One hook per (site, layer) that any condition ablates replaces the channels of its rows only
    (``torch.where`` with a ``[B, 1, d]`` mask), so one generation call runs many conditions: a small
    model's generation costs its model calls, not its rows. A row's numbers are those of
    :func:`apply_condition` on that row alone. A batch of another size than ``len(conditions)`` is an
    error.
    """
    if mode not in ("zero", "mean"):
        raise LayerwiseError(f"mode={mode!r}: use 'zero' or 'mean'")
    d, b = hidden_size(lm), len(conditions)
    blocks = lm.adapter.get_blocks(lm.model)
    plan: dict[tuple[Where, int], tuple[torch.Tensor, torch.Tensor]] = {}  # (site, layer) -> mask, values
    for j, cond in enumerate(conditions):
        if cond.kind == "none":
            continue
        site = cond.site or where
        chans = _resolve_channels(list(cond.channels), d)
        layers = resolve_layers(lm, cond.layers if cond.layers == "all" else list(cond.layers))
        vals = _layer_values(_site_means(means, site), layers, len(blocks), d) if mode == "mean" else {}
        for i in layers:
            m, v = plan.setdefault((site, i), (torch.zeros(b, d, dtype=torch.bool), torch.zeros(b, d)))
            m[j, chans] = True
            if mode == "mean":
                v[j] = vals[i].float()

    handles = []
    try:
        for (at, i), (m, v) in plan.items():
            handles.append(_hook_module(lm, blocks[i], at).register_forward_hook(_replace_hook(m, v, rows=b)))
        yield
    finally:
        for h in handles:
            h.remove()


def run_conditions(lm: LoadedModel, conditions: Sequence[Condition], prompts: Sequence[str],
                   generate_fn: Callable[..., list[str]], *, answers: Sequence[str] | None = None,
                   tokenize: Callable[[str], Sequence[Any]] = whitespace_tokens, mode: Mode = "zero",
                   where: Where = "attn_input", means: Means = None, mixed_batches: bool = False,
                   progress: bool = True, **gen_kwargs: Any) -> pd.DataFrame:
    """Generate ``prompts`` under every condition and score each generation.

    ``generate_fn(lm, prompts, **gen_kwargs) -> list[str]`` (e.g. ``layerwise.sampling.generate``,
    returning continuations). ``means`` (``mode="mean"``): as :func:`ablate_channels`, or a dict of
    them per site. ``mixed_batches``: the (condition, prompt) pairs are packed into batches of
    ``gen_kwargs["batch_size"]`` rows (default 8), each row under its own condition
    (:func:`apply_conditions_by_row`), instead of one condition at a time: the same generations in
    far fewer model calls (``generate_fn`` must run its prompts as one batch of ``batch_size``).
    One row per (condition, prompt): condition fields (``site`` filled in from ``where`` for
    ablations), ``prompt_id``, ``text``, the :func:`text_metrics` columns and, with ``answers``,
    ``correct`` (exact match of the first number).
    """
    if answers is not None and len(answers) != len(prompts):
        raise LayerwiseError(f"{len(answers)} answers for {len(prompts)} prompts: pass one answer per prompt")
    pairs = [(c, p) for c in conditions for p in range(len(prompts))]
    texts: list[str] = []
    if mixed_batches:
        bs = int(gen_kwargs.get("batch_size", 8))
        for s in tqdm(range(0, len(pairs), bs), desc=f"ablation ({lm.name})",
                      disable=progress_disabled(not progress)):
            chunk = pairs[s:s + bs]
            with apply_conditions_by_row(lm, [c for c, _ in chunk], mode=mode, where=where, means=means):
                texts += generate_fn(lm, [prompts[p] for _, p in chunk], **{**gen_kwargs, "batch_size": len(chunk)})
    else:
        for cond in tqdm(conditions, desc=f"ablation ({lm.name})", disable=progress_disabled(not progress)):
            with apply_condition(lm, cond, mode=mode, where=where, means=means):
                texts += generate_fn(lm, list(prompts), **gen_kwargs)
    rows = []
    for (cond, p), text in zip(pairs, texts, strict=True):
        row: dict[str, Any] = {"condition": cond.name, "kind": cond.kind, "scope": cond.scope,
                               "draw": cond.draw, "channel": cond.channels[0] if cond.channels else None,
                               "site": "" if cond.kind == "none" else (cond.site or where),
                               "definition": cond.definition,
                               "prompt_id": p, "text": text, **text_metrics(text, tokenize)}
        if answers is not None:
            row["correct"] = float(exact_match(text, answers[p]))
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class Effect:
    """Outlier-ablation metric minus the control's (mean over draws), averaged over prompts."""

    metric: str
    scope: str
    outlier: float
    control: float
    diff: float
    ci: tuple[float, float]
    n_prompts: int
    n_draws: int
    extra: dict[str, Any] = field(default_factory=dict)


def ablation_effect(df: pd.DataFrame, *, metric: str = "rep_3", scope: str = "early", n_boot: int = 2000,
                      seed: int = 0, level: float = 0.95) -> Effect:
    """How much more ``metric`` (repetition, accuracy...) the outlier ablation gives than the control.

    Two-level percentile bootstrap: prompts are resampled, and so are control draws (each draw is
    one random channel), so the CI covers both the prompt sample and the choice of control channel.
    Per bootstrap sample: mean over prompts of ``outlier[p] - mean_draws control[d, p]``.
    """
    for col in ("site", "definition"):
        if col in df and df.loc[df.kind != "none", col].nunique() > 1:
            raise LayerwiseError(f"the table mixes several ablation {col}s: compare one at a time, e.g. "
                                 "layerwise.ablation_design.subset(df, site, definition)")
    out = df[(df.kind == "outlier") & (df.scope == scope)].set_index("prompt_id")[metric].sort_index()
    ctrl = df[(df.kind == "control") & (df.scope == scope)].pivot(index="draw", columns="prompt_id", values=metric)
    if out.empty or ctrl.empty:
        raise LayerwiseError(f"no outlier/control rows for scope {scope!r}: run run_conditions with "
                             "ablation_conditions(...) that include it")
    ctrl = ctrl[out.index]
    o, c = out.to_numpy(float), ctrl.to_numpy(float)  # [P], [D, P]
    diff, ci = two_level_bootstrap(o, c, n_boot=n_boot, seed=seed, level=level)  # NaN metrics are ignored
    return Effect(metric, scope, float(np.nanmean(o)), float(np.nanmean(c)), diff, ci, o.size, c.shape[0])
