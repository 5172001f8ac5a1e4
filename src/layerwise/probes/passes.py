"""The probes' entry points: one forward pass computing any subset of the probes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..config import LayerwiseError
from ..models import LoadedModel
from .channels import SITES, ChannelStats, _ChannelAccumulator, _ChannelCollector, _check_sites, _hidden_size
from .hooks import _accumulator_device, _batches, _forward, _input_device, _prepare, block_hooks, module_output_hooks
from .similarity import LayerSimilarity, TokenSimilarity, _LayerSimCollector, _TokenSimCollector


def layer_similarity(lm: LoadedModel, input_ids: torch.Tensor, *, attention_mask: torch.Tensor | None = None,
                     mask_ratio: float = 0.0, batch_size: int = 8, generator: torch.Generator | None = None,
                     keep_per_sequence: bool = False) -> LayerSimilarity:
    """Mean cosine similarity between consecutive hidden states ``h_l`` and ``h_{l+1}`` (paper A).

    ``input_ids``: LongTensor ``[N, T]``; ``attention_mask``: ``[N, T]`` (1 = token, 0 = padding,
    padding is excluded from every average). For diffusion models ``mask_ratio`` replaces that
    fraction of each sequence's tokens (uniform, reproducible with ``generator``) by the mask token
    before the pass, as paper B does; AR models need ``mask_ratio=0``.

    Per sequence ``s`` and block ``l``: ``c_s[l] = mean_t cos(h_l[s,t], h_{l+1}[s,t])``; returned are the
    mean and std of ``c_s[l]`` over sequences (streamed with :class:`Welford`, ``O(L)`` memory).
    """
    res = probe_pass(lm, input_ids, attention_mask=attention_mask, mask_ratio=mask_ratio, batch_size=batch_size,
                     generator=generator, similarity=True, channels=(),
                     keep_per_sequence=keep_per_sequence).layer_similarity
    assert res is not None
    return res


def token_similarity(lm: LoadedModel, input_ids: torch.Tensor, *, attention_mask: torch.Tensor | None = None,
                     max_distance: int = 32, mask_ratio: float = 0.0, batch_size: int = 8, bins: int = 200,
                     generator: torch.Generator | None = None, keep_per_sequence: bool = False) -> TokenSimilarity:
    """Token-token similarity vs distance per layer, the recency measure, and per-token cosine histograms.

    ``input_ids``: LongTensor ``[N, T]`` with ``T > max_distance``. See :class:`TokenSimilarity` for
    the exact definitions. Accumulators: ``[L+1, max_distance]`` sums and counts, ``[L, bins]``
    histogram counts, a :class:`Welford` over ``[L+1]`` per-sequence recency gaps.
    """
    res = probe_pass(lm, input_ids, attention_mask=attention_mask, mask_ratio=mask_ratio, batch_size=batch_size,
                     generator=generator, similarity=False, channels=(), max_distance=max_distance, bins=bins,
                     keep_per_sequence=keep_per_sequence).token_similarity
    assert res is not None
    return res


def channel_stats(lm: LoadedModel, input_ids: torch.Tensor, *, attention_mask: torch.Tensor | None = None,
                  where: str | Sequence[str] = SITES, mask_ratio: float = 0.0, batch_size: int = 8,
                  generator: torch.Generator | None = None,
                  _accumulators: dict[str, _ChannelAccumulator] | None = None) -> ChannelStats:
    """Per-layer, per-channel ``mean |x|`` and ``max |x|`` (with its position) at the attention input
    and/or in the residual stream, streamed on the device (paper B Fig. 1-2).

    ``input_ids``: LongTensor ``[N, T]``. Accumulators are ``[L, d_model]`` per site regardless of
    ``N`` and ``T`` (``_accumulators``, if a dict is passed, receives them, for tests and benchmarks).
    See :class:`SiteChannelStats` for the derived quantities (top-5 channels, the super-outlier,
    whether it dominates across layers and token positions).
    """
    res = probe_pass(lm, input_ids, attention_mask=attention_mask, mask_ratio=mask_ratio, batch_size=batch_size,
                     generator=generator, similarity=False, channels=_check_sites(where),
                     _accumulators=_accumulators).channel_stats
    assert res is not None
    return res


@dataclass
class ProbeResults:
    """What :func:`probe_pass` computed (None for the probes not asked for)."""

    layer_similarity: LayerSimilarity | None = None
    token_similarity: TokenSimilarity | None = None
    channel_stats: ChannelStats | None = None


@torch.inference_mode()
def probe_pass(lm: LoadedModel, input_ids: torch.Tensor, *, attention_mask: torch.Tensor | None = None,
               mask_ratio: float = 0.0, batch_size: int = 8, generator: torch.Generator | None = None,
               similarity: bool = True, channels: str | Sequence[str] = SITES, max_distance: int = 0,
               bins: int = 200, keep_per_sequence: bool = False,
               _accumulators: dict[str, _ChannelAccumulator] | None = None) -> ProbeResults:
    """Run several probes in ONE forward pass over ``input_ids`` (``LongTensor[N, T]``).

    ``similarity``: :func:`layer_similarity`; ``channels``: the sites of :func:`channel_stats` (``()``
    for none); ``max_distance > 0``: :func:`token_similarity` with that many distances. On an 8B
    model one pass costs minutes, so the chapters ask for everything they need at once.
    """
    sites = _check_sites(channels) if channels else ()
    ids, valid = _prepare(lm, input_ids, attention_mask, mask_ratio, batch_size, generator)
    L, dev = lm.num_layers, _accumulator_device(lm)
    cols: dict[str, Any] = {}
    if similarity:
        cols["layer_similarity"] = _LayerSimCollector(L, dev, keep_per_sequence)
    if max_distance:
        T = ids.shape[1]
        if not 2 <= max_distance < T:
            raise LayerwiseError(f"max_distance={max_distance} must be in [2, seq_len-1={T - 1}]: "
                                 "lower it or use longer sequences")
        if bins < 2:
            raise LayerwiseError(f"bins={bins} must be >= 2")
        cols["token_similarity"] = _TokenSimCollector(L, max_distance, bins, dev, keep_per_sequence)
    if sites:
        cols["channel_stats"] = _ChannelCollector(sites, L, _hidden_size(lm), dev)
        if _accumulators is not None:
            _accumulators.update(cols["channel_stats"].accs)
    if not cols:
        raise LayerwiseError("probe_pass has nothing to do: ask for similarity=True, channels=... or max_distance>0")
    active = list(cols.values())
    attn_users = [c for c in active if c.wants_attn_input]

    def on_block(i: int, h_in: torch.Tensor, h_out: torch.Tensor) -> None:
        for c in active:
            c.on_block(i, h_in, h_out)

    def on_attn(i: int, x: torch.Tensor) -> None:
        for c in attn_users:
            c.on_attn_input(i, x)

    blocks = lm.adapter.get_blocks(lm.model)
    attn_mods = [lm.adapter.attn_input_module(b) for b in blocks] if attn_users else []
    in_dev = _input_device(lm)
    with module_output_hooks(attn_mods, on_attn), block_hooks(lm, on_block, stop_after_last=True):
        for a, b in _batches(ids.shape[0], batch_size, f"probes {lm.name}"):
            v = valid[a:b].to(in_dev)
            for c in active:
                c.begin(v, a)
            _forward(lm, ids[a:b].to(in_dev), v.long() if attention_mask is not None else None)
            for c in active:
                c.end()
    return ProbeResults(**{k: c.result(lm.name, mask_ratio) for k, c in cols.items()})
