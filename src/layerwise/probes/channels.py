"""Paper B's channel statistics (the super-outlier) and a recorder of channel magnitudes at every
forward call (e.g. every denoising step of a diffusion sampler)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..config import LayerwiseError
from ..models import LoadedModel
from .hooks import _EPS, _accumulator_device, block_hooks, module_output_hooks

#: where channel statistics can be taken
SITES = ("attn_input", "residual")


@dataclass
class SiteChannelStats:
    """Per-layer, per-channel magnitude statistics at one site (``attn_input`` or ``residual``).

    All arrays are ``[L, d_model]`` over every non-padding token seen:

    * ``mean_abs``: mean ``|x|``; ``max_abs``: max ``|x|``;
    * ``max_seq`` / ``max_pos``: sequence index and token position where that max occurred;
    * ``top_count``: number of tokens whose largest-``|x|`` channel is this channel.

    ``attn_input`` is the output of the block's attention norm (what enters q/k/v, paper B's "QKV
    input"); ``residual`` is the block's raw output ``h_{l+1}``.
    """

    where: str
    mean_abs: np.ndarray
    max_abs: np.ndarray
    max_seq: np.ndarray
    max_pos: np.ndarray
    top_count: np.ndarray
    n_tokens: int
    model: str = ""

    @property
    def num_layers(self) -> int:
        return self.mean_abs.shape[0]

    def top_channels(self, k: int = 5, by: str = "mean_abs") -> np.ndarray:
        """``[L, k]`` channel indices with the largest ``mean_abs`` (or ``max_abs``), largest first."""
        vals = {"mean_abs": self.mean_abs, "max_abs": self.max_abs}[by]
        return np.argsort(-vals, axis=1, kind="stable")[:, :k]

    @property
    def dominant_per_layer(self) -> np.ndarray:
        """``[L]``: the channel with the largest ``max |x|`` in each layer."""
        return self.max_abs.argmax(1)

    @property
    def super_outlier(self) -> int:
        """The dominant channel overall: argmax of ``max |x|`` over all layers and channels."""
        return int(np.unravel_index(self.max_abs.argmax(), self.max_abs.shape)[1])

    @property
    def super_outlier_layer(self) -> int:
        return int(np.unravel_index(self.max_abs.argmax(), self.max_abs.shape)[0])

    @property
    def outlier_ratio(self) -> np.ndarray:
        """``[L]``: ``max |x|`` of the layer's dominant channel over the median channel's ``max |x|``."""
        return self.max_abs.max(1) / np.maximum(np.median(self.max_abs, 1), _EPS)

    @property
    def layers_dominated(self) -> np.ndarray:
        """``[L]`` bool: is the super-outlier also the dominant channel of this layer?"""
        return self.dominant_per_layer == self.super_outlier

    @property
    def token_share(self) -> np.ndarray:
        """``[L]``: fraction of tokens whose largest-``|x|`` channel is the super-outlier (same channel across
        positions)."""
        return self.top_count[:, self.super_outlier] / max(self.n_tokens, 1)

    def summary(self) -> dict[str, Any]:
        return {
            "where": self.where, "super_outlier": self.super_outlier, "layer_of_max": self.super_outlier_layer,
            "max_abs": float(self.max_abs.max()),
            "share_of_layers_dominated": float(self.layers_dominated.mean()),
            "layers_dominated": np.flatnonzero(self.layers_dominated).tolist(),
            "max_token_share": float(self.token_share.max()), "n_tokens": self.n_tokens,
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per layer: dominant channel, its magnitude, the top-5 by mean |x|, token share."""
        top = self.top_channels(5)
        L = self.num_layers
        return pd.DataFrame({
            "model": self.model, "where": self.where, "layer": np.arange(L),
            "dominant_channel": self.dominant_per_layer, "dominant_max_abs": self.max_abs.max(1),
            "dominant_pos": self.max_pos[np.arange(L), self.dominant_per_layer],
            "outlier_ratio": self.outlier_ratio,
            "top5_by_mean": [list(map(int, r)) for r in top],
            "top5_mean_abs": [list(map(float, self.mean_abs[l, top[l]])) for l in range(L)],
            "super_outlier_token_share": self.token_share,
        })


@dataclass
class ChannelStats:
    """:class:`SiteChannelStats` per site; ``stats["attn_input"]``."""

    sites: dict[str, SiteChannelStats] = field(default_factory=dict)

    def __getitem__(self, where: str) -> SiteChannelStats:
        if where not in self.sites:
            raise LayerwiseError(f"no channel statistics for {where!r}: computed sites are {sorted(self.sites)}")
        return self.sites[where]

    def to_frame(self) -> pd.DataFrame:
        return pd.concat([s.to_frame() for s in self.sites.values()], ignore_index=True)


def _check_sites(where: str | Sequence[str]) -> tuple[str, ...]:
    sites = (where,) if isinstance(where, str) else tuple(where)
    bad = [w for w in sites if w not in SITES]
    if bad or not sites:
        raise LayerwiseError(f"unknown site(s) {bad or sites}: use where= one or more of {SITES}")
    return sites


class _ChannelAccumulator:
    """``[L, d]`` running sums / maxima / argmax positions / top-channel counts for one site."""

    def __init__(self, L: int, d: int, device: torch.device) -> None:
        self.sum_abs = torch.zeros(L, d, dtype=torch.float64, device=device)
        self.max_abs = torch.full((L, d), -1.0, dtype=torch.float32, device=device)
        self.max_seq = torch.zeros(L, d, dtype=torch.long, device=device)
        self.max_pos = torch.zeros(L, d, dtype=torch.long, device=device)
        self.top_count = torch.zeros(L, d, dtype=torch.long, device=device)
        self.n_tokens = torch.zeros(L, dtype=torch.long, device=device)

    def numel(self) -> int:
        parts = (self.sum_abs, self.max_abs, self.max_seq, self.max_pos, self.top_count, self.n_tokens)
        return sum(t.numel() for t in parts)

    def update(self, l: int, x: torch.Tensor, valid: torch.Tensor, seq_offset: int) -> None:
        """Fold ``x: [B, T, d]`` (``valid: [B, T]`` bool) into layer ``l``.

        ``max |x|`` and its argmax come from ``max`` and ``min`` of ``x`` (no ``|x|`` copy of the
        activations); ``sum |x|`` is an L1 norm accumulated in float32. Padding rows are zeroed
        first (only when there is padding).
        """
        dev = self.sum_abs.device
        B, T, d = x.shape
        xf = x.reshape(B * T, d)
        vflat = valid.to(x.device).reshape(-1)
        has_pad = not bool(vflat.all())
        if has_pad:
            xf = xf.masked_fill(~vflat[:, None], 0)
        self.sum_abs[l] += torch.linalg.vector_norm(xf, ord=1, dim=0, dtype=torch.float32).to(dev, torch.float64)
        (mx, imx), (mn, imn) = xf.max(0), xf.min(0)                                # [d] each
        neg = -mn > mx
        bmax = torch.where(neg, -mn, mx).float().to(dev)
        barg = torch.where(neg, imn, imx).to(dev)
        better = bmax > self.max_abs[l]
        self.max_abs[l] = torch.where(better, bmax, self.max_abs[l])
        self.max_seq[l] = torch.where(better, seq_offset + barg // T, self.max_seq[l])
        self.max_pos[l] = torch.where(better, barg % T, self.max_pos[l])
        (tmx, itmx), (tmn, itmn) = xf.max(1), xf.min(1)                            # [B*T] each
        top = torch.where(-tmn > tmx, itmn, itmx)
        if has_pad:
            top = top[vflat]
        self.top_count[l] += torch.bincount(top, minlength=d).to(dev)
        self.n_tokens[l] += top.numel()

    def result(self, where: str, model: str) -> SiteChannelStats:
        n = int(self.n_tokens[0].item())
        return SiteChannelStats(
            where=where, mean_abs=(self.sum_abs / self.n_tokens.clamp_min(1)[:, None]).float().cpu().numpy(),
            max_abs=self.max_abs.clamp_min(0).cpu().numpy(), max_seq=self.max_seq.cpu().numpy(),
            max_pos=self.max_pos.cpu().numpy(), top_count=self.top_count.cpu().numpy(), n_tokens=n, model=model,
        )


class _ChannelCollector:
    """One :class:`_ChannelAccumulator` per site."""

    def __init__(self, sites: tuple[str, ...], L: int, d: int, dev: torch.device) -> None:
        self.accs = {w: _ChannelAccumulator(L, d, dev) for w in sites}
        self.wants_attn_input = "attn_input" in self.accs

    def begin(self, valid: torch.Tensor, offset: int) -> None:
        self.valid, self.offset = valid, offset

    def on_block(self, i: int, _h_in: torch.Tensor, h_out: torch.Tensor) -> None:
        if "residual" in self.accs:
            self.accs["residual"].update(i, h_out, self.valid, self.offset)

    def on_attn_input(self, i: int, x: torch.Tensor) -> None:
        self.accs["attn_input"].update(i, x, self.valid, self.offset)

    def end(self) -> None:
        pass

    def result(self, model: str, mask_ratio: float) -> ChannelStats:
        return ChannelStats({w: acc.result(w, model) for w, acc in self.accs.items()})


def _hidden_size(lm: LoadedModel) -> int:
    blk = lm.adapter.get_blocks(lm.model)[0]
    first = next(iter(lm.adapter.block_linears(blk).values()))
    return int(first.in_features)



@dataclass
class ChannelRecording:
    """Filled by :func:`record_channels`: one ``[L, d_model]`` array per forward call.

    ``mean_abs[c]`` / ``max_abs[c]``: per-layer, per-channel mean and max ``|x|`` over all tokens
    of forward call ``c`` (with ``per_call=False`` a single entry accumulated over all calls).
    """

    where: str
    mean_abs: list[np.ndarray] = field(default_factory=list)
    max_abs: list[np.ndarray] = field(default_factory=list)
    n_tokens: list[int] = field(default_factory=list)

    @property
    def n_calls(self) -> int:
        return len(self.mean_abs)

    def stacked(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean_abs, max_abs)`` as ``[calls, L, d]`` arrays."""
        if not self.mean_abs:
            raise LayerwiseError("nothing recorded: run a forward pass (e.g. a sampler) inside record_channels(...)")
        return np.stack(self.mean_abs), np.stack(self.max_abs)

    def channel_trace(self, channels: Sequence[int]) -> np.ndarray:
        """``[calls, L, len(channels)]`` mean ``|x|`` of the given channels at every call."""
        return self.stacked()[0][:, :, list(channels)]


@contextlib.contextmanager
def record_channels(lm: LoadedModel, where: str = "attn_input", per_call: bool = True) -> Iterator[ChannelRecording]:
    """Record per-layer per-channel ``mean |x|`` and ``max |x|`` for every forward call while active.

    Wrap a sampler (e.g. ``layerwise.sampling.diffusion_generate``) to get the statistics at each
    denoising step::

        with record_channels(lm, "attn_input") as rec:
            diffusion_generate(lm, prompt, ...)
        mean_abs, max_abs = rec.stacked()        # [steps, L, d]

    A call starts when block 0 runs and ends after the last block, so the recorder works whatever
    wrapper the sampler calls. Memory on the device is one ``[L, d]`` buffer; each finished call
    is copied to the CPU (``O(calls x L x d)`` there). Hooks are removed on exit.
    """
    (site,) = _check_sites(where)
    L, d = lm.num_layers, _hidden_size(lm)
    dev = _accumulator_device(lm)
    rec = ChannelRecording(where=site)
    state: dict[str, Any] = {}

    def reset() -> None:
        state["sum"] = torch.zeros(L, d, dtype=torch.float64, device=dev)
        state["max"] = torch.zeros(L, d, dtype=torch.float32, device=dev)
        state["n"] = 0

    def add(i: int, x: torch.Tensor) -> None:
        a = x.detach().abs().reshape(-1, x.shape[-1])
        state["sum"][i] += a.sum(0, dtype=torch.float32).to(dev, torch.float64)
        state["max"][i] = torch.maximum(state["max"][i], a.max(0).values.float().to(dev))
        if i == 0:
            state["n"] += a.shape[0]

    def flush() -> None:
        n = max(state["n"], 1)
        if per_call or not rec.mean_abs:
            rec.mean_abs.append((state["sum"] / n).float().cpu().numpy())
            rec.max_abs.append(state["max"].cpu().numpy())
            rec.n_tokens.append(state["n"])
        else:  # fold into the single running entry
            n0 = rec.n_tokens[0]
            rec.mean_abs[0] = (rec.mean_abs[0] * n0 + (state["sum"]).float().cpu().numpy()) / (n0 + state["n"])
            rec.max_abs[0] = np.maximum(rec.max_abs[0], state["max"].cpu().numpy())
            rec.n_tokens[0] = n0 + state["n"]

    def on_block(i: int, _h_in: torch.Tensor, h_out: torch.Tensor) -> None:
        if site == "residual":
            add(i, h_out)
        if i == L - 1:
            flush()

    blocks = lm.adapter.get_blocks(lm.model)
    handles = [blocks[0].register_forward_pre_hook(lambda *_: reset())]
    mods = [lm.adapter.attn_input_module(b) for b in blocks] if site == "attn_input" else []
    try:
        with module_output_hooks(mods, add), block_hooks(lm, on_block):
            yield rec
    finally:
        for h in handles:
            h.remove()


def accumulator_numel(accs: dict[str, _ChannelAccumulator]) -> int:
    """Total number of elements held by channel accumulators (for memory tests / benchmarks)."""
    return sum(a.numel() for a in accs.values())
