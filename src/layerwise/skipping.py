"""Reversible static layer skipping and block-selection strategies (paper A section 4).

:func:`skip_layers` removes blocks from the model for the duration of a ``with`` block: the
adapter's ``ModuleList`` is swapped for a new one holding only the kept blocks (so the forward loop
of any architecture simply runs fewer blocks), the kept blocks' KV-cache layer indices are
renumbered ``0 .. L-k-1``, and the config's layer count (and ``layer_types``) is trimmed, so that
transformers builds a cache of the right length. On exit the original ``ModuleList`` object, layer
indices and config values are put back exactly.

:func:`select_layers` implements the strategies compared in the chapter; :func:`flops_fraction`
says which share of a forward pass's FLOPs a configuration removes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .arch import get_path, set_path
from .config import LayerwiseError
from .models import LoadedModel

STRATEGIES = ("redundant", "early", "late", "uniform", "random")

_MISSING = object()


def _check_indices(indices: Sequence[int], n_layers: int) -> list[int]:
    idx = list(indices)
    for i in idx:
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise LayerwiseError(f"layer index {i!r} is not an int: pass indices in 0..{n_layers - 1}")
    idx = [int(i) for i in idx]
    bad = [i for i in idx if not 0 <= i < n_layers]
    if bad:
        raise LayerwiseError(f"layer indices {bad} are out of range: this model has {n_layers} layers, "
                             f"use 0..{n_layers - 1}")
    dup = sorted({i for i in idx if idx.count(i) > 1})
    if dup:
        raise LayerwiseError(f"layer indices {dup} are given more than once: pass each of 0..{n_layers - 1} "
                             "at most once")
    if len(idx) >= n_layers:
        raise LayerwiseError(f"cannot skip all {n_layers} layers: keep at least one (skip at most {n_layers - 1} "
                             f"of 0..{n_layers - 1})")
    return sorted(idx)


@contextlib.contextmanager
def skip_layers(lm: LoadedModel, indices: Sequence[int]) -> Iterator[list[int]]:
    """Run the model without the blocks ``indices`` inside the ``with`` block; restore it exactly on exit.

    Works with and without a KV cache: kept block ``j`` gets cache index ``j`` (``adapter.attn_layer_idx``)
    and ``config.<num_layers_attr>`` / ``config.layer_types`` describe the kept blocks only. An empty
    ``indices`` leaves the model untouched (bit-identical outputs). Yields the sorted skipped indices.

    Errors (``LayerwiseError``): non-int, out-of-range or duplicate indices, or skipping every layer.
    """
    ad, model = lm.adapter, lm.model
    blocks = ad.get_blocks(model)
    skip = _check_indices(indices, len(blocks))
    if not skip:
        yield skip
        return
    cfg = ad.layer_config(model)  # may be a sub-config (e.g. DiffusionGemma's text_config)
    n_attr = ad.num_layers_attr.rpartition(".")[2]
    kept = [b for i, b in enumerate(blocks) if i not in set(skip)]
    # saved state, restored in `finally`
    old_idx: list[tuple[nn.Module, Any]] = []
    old_cfg = {k: getattr(cfg, k, _MISSING) for k in (n_attr, "layer_types")}
    try:
        new_list = nn.ModuleList(kept)
        set_path(model, ad.blocks, new_list)
        if ad.attn_layer_idx:
            for j, blk in enumerate(kept):
                try:
                    old = get_path(blk, ad.attn_layer_idx)
                except AttributeError:
                    continue
                old_idx.append((blk, old))
                set_path(blk, ad.attn_layer_idx, j)
        if old_cfg[n_attr] is not _MISSING:
            setattr(cfg, n_attr, len(kept))
        lt = old_cfg["layer_types"]
        if isinstance(lt, (list, tuple)) and len(lt) == len(blocks):
            cfg.layer_types = type(lt)(lt[i] for i in range(len(blocks)) if i not in set(skip))
        yield skip
    finally:
        set_path(model, ad.blocks, blocks)
        for blk, old in old_idx:  # filled only when the adapter has an attn_layer_idx path
            set_path(blk, str(ad.attn_layer_idx), old)
        for k, v in old_cfg.items():
            if v is _MISSING:
                if k in getattr(cfg, "__dict__", {}):
                    delattr(cfg, k)
            else:
                setattr(cfg, k, v)


def select_layers(strategy: str, n_skip: int, n_layers: int, *, influence: Sequence[float] | None = None,
                  seed: int = 0, protect_first: bool = True, protect_last: bool = True) -> list[int]:
    """Which ``n_skip`` of ``n_layers`` blocks to skip, sorted ascending, distinct.

    Candidates are ``0 .. L-1`` minus block 0 (``protect_first``: it turns token embeddings into the
    residual stream every later block expects) and block ``L-1`` (``protect_last``: its output feeds
    the LM head directly). Strategies:

    * ``"redundant"``: ShortGPT's choice: the ``n_skip`` candidates with the lowest block influence
      ``BI_l = 1 - cos(h_l, h_{l+1})`` (pass ``influence``, e.g. from :func:`block_influence`).
    * ``"early"``: the contiguous run starting at the first candidate (``1 .. n_skip`` by default).
    * ``"late"``: the contiguous run ending at the last candidate (``L-1-n_skip .. L-2`` by default).
    * ``"uniform"``: ``n_skip`` candidates evenly spaced over the candidates (centres of equal bins).
    * ``"random"``: ``n_skip`` candidates drawn without replacement with ``numpy`` seed ``seed``;
      average several seeds.
    """
    if strategy not in STRATEGIES:
        raise LayerwiseError(f"unknown strategy {strategy!r}: use one of {STRATEGIES}")
    cand = list(range(1 if protect_first else 0, n_layers - 1 if protect_last else n_layers))
    if not 0 <= n_skip <= len(cand):
        raise LayerwiseError(
            f"n_skip={n_skip} is not possible: {len(cand)} of {n_layers} layers are candidates "
            f"(protect_first={protect_first}, protect_last={protect_last}); use 0..{len(cand)}"
        )
    if n_skip == 0:
        return []
    if strategy == "redundant":
        if influence is None or len(influence) != n_layers:
            raise LayerwiseError(
                f"strategy 'redundant' needs influence= with one block-influence value per layer ({n_layers}): "
                "compute it with layerwise.skipping.block_influence(lm, input_ids)"
            )
        bi = np.asarray(influence, dtype=float)
        out = sorted(cand, key=lambda i: (bi[i], i))[:n_skip]
    elif strategy == "early":
        out = cand[:n_skip]
    elif strategy == "late":
        out = cand[len(cand) - n_skip:]
    elif strategy == "uniform":
        out = [cand[int((k + 0.5) * len(cand) / n_skip)] for k in range(n_skip)]
    else:
        out = np.random.default_rng(seed).choice(cand, size=n_skip, replace=False).tolist()
    return sorted(int(i) for i in out)


def block_flops(lm: LoadedModel, seq_len: int) -> tuple[list[float], float]:
    """Forward FLOPs per block and of the LM head for one sequence of ``seq_len`` tokens.

    Counted from the modules themselves (so every adapter is covered): each Linear costs
    ``2 * T * in * out``; attention scores and the weighted sum cost ``2 * 2 * T^2 * d_q`` (``d_q`` =
    query width; a full square even for causal models, as sdpa's dense kernels nearly do); the
    LM head ``2 * T * d * V``. Norms, activations and the embedding lookup are ignored (< 1%).
    """
    T = seq_len
    per_block = []
    for blk in lm.adapter.get_blocks(lm.model):
        lins = lm.adapter.block_linears(blk)
        f = sum(2.0 * T * m.in_features * m.out_features for m in lins.values())
        d_q = lins["q"].out_features if "q" in lins else lins["qkv"].out_features / 3
        per_block.append(f + 4.0 * T * T * d_q)
    head: Any = lm.adapter.get_lm_head(lm.model)  # a Linear (or Linear-like) module
    return per_block, 2.0 * T * int(head.in_features) * int(head.out_features)


def flops_fraction(lm: LoadedModel, indices: Sequence[int], seq_len: int = 2048) -> float:
    """Share of a forward pass's FLOPs removed by skipping ``indices`` (LM head and embedding kept).

    Paper A's "18.75%" for 6 of 32 layers is ``k / L``, i.e. it ignores the LM head; this count
    includes it, so it is slightly lower (e.g. about 17.5% for LLaDA-8B at 2048 tokens).
    """
    per_block, head = block_flops(lm, seq_len)
    skip = _check_indices(indices, len(per_block))
    return float(sum(per_block[i] for i in skip) / (sum(per_block) + head))


@torch.inference_mode()
def block_influence(lm: LoadedModel, input_ids: torch.Tensor, *, attention_mask: torch.Tensor | None = None,
                    batch_size: int = 8, mask_ratio: float = 0.0) -> np.ndarray:
    """ShortGPT block influence ``BI_l = 1 - mean cos(h_l, h_{l+1})`` per block, ``[L]`` (low = redundant).

    The mean is over sequences of the per-sequence token average (see
    :func:`layerwise.probes.layer_similarity`); ShortGPT averages over all tokens, which is the same
    for equal-length, unpadded sequences.
    """
    from .probes import layer_similarity

    return layer_similarity(lm, input_ids, attention_mask=attention_mask, batch_size=batch_size,
                            mask_ratio=mask_ratio).block_influence
