"""Streaming hidden-state statistics through block hooks.

Three probes (paper A's layer- and token-wise cosine similarity, paper B's channel magnitudes) and
one recorder (channel magnitudes at every forward call, e.g. every denoising step of a diffusion
sampler). They share one design:

* **Block hooks, not ``output_hidden_states``.** HF models (and LLaDA, Dream) return
  ``[emb, out_0 .. out_{L-2}, norm(out_{L-1})]``: the last block's *raw* output is missing. A
  forward hook on every block (found through :class:`~layerwise.models.LayerAdapter`) sees the
  block's input ``h_l`` and raw output ``h_{l+1}`` directly.
* **Streaming on the device.** Every hook reduces its ``[batch, seq, d_model]`` tensors at once to
  per-sequence, per-layer or per-channel sums; accumulators are ``O(layers x d_model)`` or
  ``O(layers x bins)`` and never grow with the number of tokens. With ``keep_per_sequence=True``
  the probes also keep one float per (sequence, layer) on the CPU, for paired confidence intervals.
* **Reversible.** Hooks are registered in a context manager and removed in ``finally``, so an
  exception leaves the model untouched.
* **Dispatched models.** With an accelerate ``device_map`` the blocks live on several devices:
  each hook reduces on its block's device and moves only the reduced tensor to the accumulator's
  device (the device of the first block).
* **No LM head.** The probes stop the forward pass after the last block (an internal exception
  caught here), which saves the head's FLOPs and the ``[batch, seq, vocab]`` logits.

Notation: a model has ``L`` blocks; ``h_0`` is the input of block 0 (the embeddings) and
``h_{l+1}`` the raw output of block ``l``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .config import LayerwiseError
from .models import LayerAdapter, LoadedModel

#: where channel statistics can be taken
SITES = ("attn_input", "residual")

_EPS = 1e-12


# ---------------------------------------------------------------------------------------------
# Streaming accumulators
# ---------------------------------------------------------------------------------------------


class Welford:
    """Running mean and variance of a vector-valued quantity over samples (Chan et al.'s merge).

    ``update(x)`` takes a batch ``x: [batch, *shape]`` and folds it in; memory is ``O(shape)``.
    Kept in float64 so that thousands of near-1 cosines do not lose precision.
    """

    def __init__(self, shape: Sequence[int] | int, device: torch.device) -> None:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.n = 0
        self.mean = torch.zeros(shape, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(shape, dtype=torch.float64, device=device)

    def update(self, x: torch.Tensor) -> None:
        x = x.to(device=self.mean.device, dtype=torch.float64)
        nb = x.shape[0]
        if nb == 0:
            return
        mb = x.mean(0)
        m2b = ((x - mb) ** 2).sum(0)
        n = self.n + nb
        delta = mb - self.mean
        self.mean += delta * (nb / n)
        self.m2 += m2b + delta**2 * (self.n * nb / n)
        self.n = n

    def std(self) -> torch.Tensor:
        """Sample standard deviation (ddof=1); NaN with fewer than two samples."""
        if self.n < 2:
            return torch.full_like(self.mean, float("nan"))
        return (self.m2 / (self.n - 1)).sqrt()


# ---------------------------------------------------------------------------------------------
# Hook plumbing
# ---------------------------------------------------------------------------------------------


class _StopForward(Exception):
    """Raised after the last block to skip the final norm and LM head (caught by :func:`_forward`)."""


def _block_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden state a block was called with: positional (HF, LLaDA) or by keyword."""
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    for key in ("hidden_states", "x", "hidden_state"):
        if isinstance(kwargs.get(key), torch.Tensor):
            return kwargs[key]
    raise LayerwiseError(
        "could not find the hidden state among a block's inputs (neither the first positional "
        f"argument nor hidden_states=/x=; got kwargs {sorted(kwargs)}): register a LayerAdapter whose "
        "blocks take the hidden state first"
    )


BlockFn = Callable[[int, torch.Tensor, torch.Tensor], None]


@contextlib.contextmanager
def block_hooks(lm: LoadedModel, fn: BlockFn, *, stop_after_last: bool = False) -> Iterator[None]:
    """Call ``fn(layer, h_in, h_out)`` after every block's forward, for as long as the context lasts.

    ``h_in`` is the block's input ``[batch, seq, d]`` moved to the device of ``h_out`` (accelerate
    hooks move inputs only inside the block's forward), ``h_out`` its raw output. With
    ``stop_after_last`` the forward pass is cut after the last block (see :func:`_forward`).
    Hooks are removed on exit, also on exceptions.
    """
    blocks = lm.adapter.get_blocks(lm.model)
    n = len(blocks)
    handles = []

    def make(i: int) -> Callable:
        def hook(_mod: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
            h_out = LayerAdapter.hidden_from_output(out)
            h_in = _block_input(args, kwargs).to(h_out.device)
            fn(i, h_in, h_out)
            if stop_after_last and i == n - 1:
                raise _StopForward

        return hook

    try:
        for i, blk in enumerate(blocks):
            handles.append(blk.register_forward_hook(make(i), with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def module_output_hooks(modules: Sequence[nn.Module], fn: Callable[[int, torch.Tensor], None]) -> Iterator[None]:
    """Call ``fn(i, output)`` after ``modules[i]``'s forward; hooks removed on exit."""
    handles = []
    try:
        for i, m in enumerate(modules):
            handles.append(m.register_forward_hook(lambda _m, _a, out, i=i: fn(i, LayerAdapter.hidden_from_output(out))))
        yield
    finally:
        for h in handles:
            h.remove()


def _accumulator_device(lm: LoadedModel) -> torch.device:
    """Where the accumulators live: the first block's device (GPU 0 of a dispatched model)."""
    blk = lm.adapter.get_blocks(lm.model)[0]
    for p in blk.parameters():
        if p.device.type != "meta":
            return p.device
    return lm.device


def _input_device(lm: LoadedModel) -> torch.device:
    """Where input ids go: the embedding's device (accelerate moves them on, but not off, 'meta')."""
    try:
        emb = lm.adapter.get_embed(lm.model)
        for p in emb.parameters():
            if p.device.type != "meta":
                return p.device
    except AttributeError:
        pass
    return _accumulator_device(lm)


def _forward(lm: LoadedModel, ids: torch.Tensor, am: torch.Tensor | None) -> None:
    """One forward pass (through the adapter's ``logits``) for its hooks' side effects; stops after the
    last block when asked to."""
    try:
        lm.logits(ids, am)
    except _StopForward:
        pass


def _check_inputs(lm: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                  batch_size: int) -> torch.Tensor:
    """Validate shapes; return the attention mask as bool ``[N, T]`` (all ones when None)."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype != torch.long:
        raise LayerwiseError(
            "input_ids must be a LongTensor [num_sequences, seq_len]: stack your token lists, e.g. "
            "torch.tensor(seqs, dtype=torch.long), or use layerwise.data.eval_sequences(...)"
        )
    if input_ids.shape[0] == 0 or input_ids.shape[1] < 2:
        raise LayerwiseError(f"input_ids has shape {tuple(input_ids.shape)}: give at least one sequence of >= 2 tokens")
    if batch_size < 1:
        raise LayerwiseError(f"batch_size={batch_size} must be >= 1")
    if attention_mask is None:
        return torch.ones_like(input_ids, dtype=torch.bool)
    if attention_mask.shape != input_ids.shape:
        raise LayerwiseError(
            f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}: "
            "pass one 0/1 flag per token"
        )
    return attention_mask.bool()


def mask_tokens(input_ids: torch.Tensor, mask_ratio: float, mask_token_id: int,
                valid: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace ``round(mask_ratio * n_valid)`` uniformly chosen valid tokens of each row by the mask id.

    ``input_ids``: ``[N, T]``; ``valid``: bool ``[N, T]`` (padding is never masked). Exactly that
    many tokens per sequence (not Bernoulli), so every sequence sees the stated ratio; the choice is
    reproducible through ``generator`` (CPU).
    """
    if not 0.0 <= mask_ratio <= 1.0:
        raise LayerwiseError(f"mask_ratio={mask_ratio} must be in [0, 1]")
    if mask_ratio == 0.0:
        return input_ids
    valid = torch.ones_like(input_ids, dtype=torch.bool) if valid is None else valid.bool()
    scores = torch.rand(input_ids.shape, generator=generator)
    scores[~valid.cpu()] = 2.0  # padding sorts last, so it is never picked
    rank = scores.argsort(dim=1).argsort(dim=1)
    k = (valid.sum(1).cpu().double() * mask_ratio).round().long()
    chosen = (rank < k[:, None]).to(input_ids.device)
    return input_ids.masked_fill(chosen, mask_token_id)


def _batches(n: int, batch_size: int, desc: str) -> Iterator[tuple[int, int]]:
    for start in tqdm(range(0, n, batch_size), desc=desc, leave=False,
                      total=math.ceil(n / batch_size)):
        yield start, min(start + batch_size, n)


def _per_token_cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine along the last axis: ``[B, T, d] x [B, T, d] -> [B, T]`` float32.

    Norms and the dot product's sum accumulate in float32 straight from the (bf16) inputs, without
    float32 copies of ``[B, T, d]`` tensors: the hooks must stay cheap next to the block's matmuls.
    The elementwise products are rounded to the input dtype (relative error ~2^-9 per term, random
    sign, so about 1e-5 on the cosine for d = 4096).
    """
    dot = (a * b).sum(-1, dtype=torch.float32)
    na = torch.linalg.vector_norm(a, dim=-1, dtype=torch.float32)
    nb = torch.linalg.vector_norm(b, dim=-1, dtype=torch.float32)
    return dot / (na * nb).clamp_min(_EPS)


def _prepare(lm: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
             mask_ratio: float, batch_size: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    valid = _check_inputs(lm, input_ids, attention_mask, batch_size)
    if mask_ratio > 0:
        if not lm.family.is_diffusion or lm.spec.mask_token_id is None:
            raise LayerwiseError(
                f"mask_ratio={mask_ratio} needs a diffusion model with a mask token, but {lm.name} is "
                f"family {lm.family.value!r}: use mask_ratio=0 for autoregressive models"
            )
        input_ids = mask_tokens(input_ids, mask_ratio, lm.spec.mask_token_id, valid, generator)
    return input_ids, valid


# ---------------------------------------------------------------------------------------------
# 1. Consecutive-layer similarity (paper A)
# ---------------------------------------------------------------------------------------------


@dataclass
class LayerSimilarity:
    """Mean cosine similarity between consecutive hidden states, per layer.

    ``mean[l]`` / ``std[l]``: mean and sample std over sequences of the per-sequence average of
    ``cos(h_l[t], h_{l+1}[t])`` over the sequence's (non-padding) tokens, ``l = 0 .. L-1``.
    ``per_sequence``: ``[n_seqs, L]`` when asked for, else None.
    """

    mean: np.ndarray
    std: np.ndarray
    n_seqs: int
    mask_ratio: float = 0.0
    model: str = ""
    per_sequence: np.ndarray | None = None

    @property
    def sem(self) -> np.ndarray:
        """Standard error of the mean over sequences, per layer."""
        return self.std / math.sqrt(max(self.n_seqs, 1))

    @property
    def block_influence(self) -> np.ndarray:
        """ShortGPT's block influence ``1 - cos(h_l, h_{l+1})`` per block (low = redundant)."""
        return 1.0 - self.mean

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({
            "model": self.model, "mask_ratio": self.mask_ratio, "layer": np.arange(len(self.mean)),
            "cos_mean": self.mean, "cos_std": self.std, "cos_sem": self.sem, "n_seqs": self.n_seqs,
        })


class _LayerSimCollector:
    """Per-sequence mean of per-token ``cos(h_l, h_{l+1})``, folded into a :class:`Welford` per batch."""

    wants_attn_input = False

    def __init__(self, L: int, dev: torch.device, keep_per_sequence: bool) -> None:
        self.L, self.dev, self.keep = L, dev, keep_per_sequence
        self.wel = Welford(L, dev)
        self.per_seq: list[torch.Tensor] = []

    def begin(self, valid: torch.Tensor, offset: int) -> None:
        self.valid = valid
        self.buf = torch.zeros(valid.shape[0], self.L, dtype=torch.float64, device=self.dev)   # [B, L]

    def on_block(self, i: int, h_in: torch.Tensor, h_out: torch.Tensor) -> None:
        m = self.valid.to(h_out.device)
        cos = _per_token_cos(h_in, h_out)                           # [B, T]
        self.buf[:, i] = ((cos * m).sum(1) / m.sum(1).clamp_min(1)).to(self.dev, torch.float64)

    def end(self) -> None:
        self.wel.update(self.buf)
        if self.keep:
            self.per_seq.append(self.buf.cpu())

    def result(self, model: str, mask_ratio: float) -> LayerSimilarity:
        return LayerSimilarity(
            mean=self.wel.mean.cpu().numpy(), std=self.wel.std().cpu().numpy(), n_seqs=self.wel.n,
            mask_ratio=mask_ratio, model=model,
            per_sequence=torch.cat(self.per_seq).numpy() if self.keep else None,
        )


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
    return probe_pass(lm, input_ids, attention_mask=attention_mask, mask_ratio=mask_ratio, batch_size=batch_size,
                      generator=generator, similarity=True, channels=(),
                      keep_per_sequence=keep_per_sequence).layer_similarity


# ---------------------------------------------------------------------------------------------
# 2. Token similarity vs distance (recency bias) and per-token cosine distributions
# ---------------------------------------------------------------------------------------------


@dataclass
class TokenSimilarity:
    """Similarity between token representations as a function of their distance, per layer.

    States ``s = 0 .. L`` (``h_0`` = embeddings, ``h_{s}`` = raw output of block ``s-1``), distances
    ``d = 1 .. max_distance``.

    * ``sim[s, d-1]``: mean over all (sequence, position ``i``) pairs with ``i - d >= 0`` and both
      tokens non-padding of ``cos(h_s[i], h_s[i-d])`` (raw hidden states).
    * ``sim_centered[s, d-1]``: the same after subtracting each sequence's mean hidden state (over
      its positions) from every token: this removes the component shared by all tokens (e.g. a
      massive-activation channel), which otherwise makes every cosine close to 1.
    * ``recency[s]`` (the recency-bias measure): **near-minus-far gap** of the centered similarity,
      ``sim_centered[s, d=1] - mean_{d in far} sim_centered[s, d]`` with ``far = ceil(D/2) .. D``,
      computed per sequence and then averaged (``recency_std`` over sequences). A model whose token
      representations mostly reflect their immediate neighbours (recency bias) has a large gap;
      a model with global representations has similarity that decays little with distance.
    * ``cos_hist[l, k]``: histogram of per-token ``cos(h_l[t], h_{l+1}[t])`` for blocks ``l = 0 .. L-1``
      over ``bins`` equal bins of ``[-1, 1]`` (paper B Fig. 3).
    """

    sim: np.ndarray
    sim_centered: np.ndarray
    recency: np.ndarray
    recency_std: np.ndarray
    cos_hist: np.ndarray
    bin_edges: np.ndarray
    n_seqs: int
    max_distance: int
    mask_ratio: float = 0.0
    model: str = ""
    per_sequence_recency: np.ndarray | None = None

    @property
    def far(self) -> slice:
        """Distances (as a slice of the ``d-1`` axis) that count as far: ``ceil(D/2) .. D``."""
        return _far_slice(self.max_distance)

    @property
    def recency_sem(self) -> np.ndarray:
        return self.recency_std / math.sqrt(max(self.n_seqs, 1))

    def to_frame(self) -> pd.DataFrame:
        """Long table: one row per (state, distance)."""
        S, D = self.sim.shape
        return pd.DataFrame({
            "model": self.model, "mask_ratio": self.mask_ratio,
            "state": np.repeat(np.arange(S), D), "distance": np.tile(np.arange(1, D + 1), S),
            "sim": self.sim.ravel(), "sim_centered": self.sim_centered.ravel(),
        })

    def recency_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"model": self.model, "state": np.arange(len(self.recency)),
                             "recency": self.recency, "recency_std": self.recency_std,
                             "recency_sem": self.recency_sem, "n_seqs": self.n_seqs})

    def cos_quantiles(self, qs: Sequence[float] = (0.1, 0.5, 0.9)) -> np.ndarray:
        """Quantiles ``[L, len(qs)]`` of the per-token cosine distributions (bin-centre resolution)."""
        cdf = np.cumsum(self.cos_hist, 1) / np.maximum(self.cos_hist.sum(1, keepdims=True), 1)
        centres = (self.bin_edges[:-1] + self.bin_edges[1:]) / 2
        return np.stack([centres[np.minimum((cdf < q).sum(1), len(centres) - 1)] for q in qs], 1)


def _far_slice(max_distance: int) -> slice:
    return slice(math.ceil(max_distance / 2) - 1, max_distance)


class _TokenSimCollector:
    """Sums of ``cos(h_s[i], h_s[i-d])`` per (state, distance), raw and sequence-centred; histograms of
    per-token ``cos(h_l, h_{l+1})``; per-sequence recency gaps folded into a :class:`Welford`."""

    wants_attn_input = False

    def __init__(self, L: int, D: int, bins: int, dev: torch.device, keep_per_sequence: bool) -> None:
        self.L, self.D, self.bins, self.dev, self.keep = L, D, bins, dev, keep_per_sequence
        self.sums = torch.zeros(2, L + 1, D, dtype=torch.float64, device=dev)    # raw / centred
        self.counts = torch.zeros(L + 1, D, dtype=torch.float64, device=dev)
        self.hist = torch.zeros(L, bins, dtype=torch.float64, device=dev)
        self.wel = Welford(L + 1, dev)
        self.far = _far_slice(D)
        self.per_seq: list[torch.Tensor] = []

    def begin(self, valid: torch.Tensor, offset: int) -> None:
        self.valid = valid
        self.rec = torch.zeros(valid.shape[0], self.L + 1, dtype=torch.float64, device=self.dev)  # [B, L+1]

    def _distance(self, s: int, h: torch.Tensor) -> None:
        D = self.D
        m = self.valid.to(h.device).float()                                    # [B, T]
        hf = h.float()
        mu = (hf * m[..., None]).sum(1, keepdim=True) / m.sum(1).clamp_min(1)[:, None, None]
        seq_sims = torch.zeros(2, h.shape[0], D, dtype=torch.float64, device=h.device)
        seq_cnt = torch.zeros(h.shape[0], D, dtype=torch.float64, device=h.device)
        for v, x in enumerate((hf, hf - mu)):
            u = x / x.norm(dim=-1, keepdim=True).clamp_min(_EPS)               # [B, T, d]
            for d in range(1, D + 1):
                pair = m[:, d:] * m[:, :-d]                                    # [B, T-d]
                seq_sims[v, :, d - 1] = ((u[:, d:] * u[:, :-d]).sum(-1) * pair).sum(1)
                if v == 0:
                    seq_cnt[:, d - 1] = pair.sum(1)
        self.sums[:, s] += seq_sims.sum(1).to(self.dev)
        self.counts[s] += seq_cnt.sum(0).to(self.dev)
        per_d = seq_sims[1] / seq_cnt.clamp_min(1)                             # [B, D] centred, per sequence
        self.rec[:, s] = (per_d[:, 0] - per_d[:, self.far].mean(1)).to(self.dev)

    def on_block(self, i: int, h_in: torch.Tensor, h_out: torch.Tensor) -> None:
        if i == 0:
            self._distance(0, h_in)
        self._distance(i + 1, h_out)
        cos = _per_token_cos(h_in, h_out)[self.valid.to(h_out.device)]       # [n_valid]
        self.hist[i] += torch.histc(cos, bins=self.bins, min=-1.0, max=1.0).to(self.dev, torch.float64)

    def end(self) -> None:
        self.wel.update(self.rec)
        if self.keep:
            self.per_seq.append(self.rec.cpu())

    def result(self, model: str, mask_ratio: float) -> TokenSimilarity:
        sim = (self.sums / self.counts.clamp_min(1)).cpu().numpy()
        return TokenSimilarity(
            sim=sim[0], sim_centered=sim[1], recency=self.wel.mean.cpu().numpy(),
            recency_std=self.wel.std().cpu().numpy(), cos_hist=self.hist.cpu().numpy(),
            bin_edges=np.linspace(-1.0, 1.0, self.bins + 1), n_seqs=self.wel.n, max_distance=self.D,
            mask_ratio=mask_ratio, model=model,
            per_sequence_recency=torch.cat(self.per_seq).numpy() if self.keep else None,
        )


def token_similarity(lm: LoadedModel, input_ids: torch.Tensor, *, attention_mask: torch.Tensor | None = None,
                     max_distance: int = 32, mask_ratio: float = 0.0, batch_size: int = 8, bins: int = 200,
                     generator: torch.Generator | None = None, keep_per_sequence: bool = False) -> TokenSimilarity:
    """Token-token similarity vs distance per layer, the recency measure, and per-token cosine histograms.

    ``input_ids``: LongTensor ``[N, T]`` with ``T > max_distance``. See :class:`TokenSimilarity` for
    the exact definitions. Accumulators: ``[L+1, max_distance]`` sums and counts, ``[L, bins]``
    histogram counts, a :class:`Welford` over ``[L+1]`` per-sequence recency gaps.
    """
    return probe_pass(lm, input_ids, attention_mask=attention_mask, mask_ratio=mask_ratio, batch_size=batch_size,
                      generator=generator, similarity=False, channels=(), max_distance=max_distance, bins=bins,
                      keep_per_sequence=keep_per_sequence).token_similarity


# ---------------------------------------------------------------------------------------------
# 3. Channel statistics (paper B: the super-outlier)
# ---------------------------------------------------------------------------------------------


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
        """``[L]``: fraction of tokens whose largest-``|x|`` channel is the super-outlier (same channel across positions)."""
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
        return sum(t.numel() for t in (self.sum_abs, self.max_abs, self.max_seq, self.max_pos, self.top_count, self.n_tokens))

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
    return probe_pass(lm, input_ids, attention_mask=attention_mask, mask_ratio=mask_ratio, batch_size=batch_size,
                      generator=generator, similarity=False, channels=_check_sites(where),
                      _accumulators=_accumulators).channel_stats


# ---------------------------------------------------------------------------------------------
# One pass, several probes
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Recording channel magnitudes at every forward call (diffusion steps, paper B appendix B.3)
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Confidence intervals over sequences (for the chapters' result files)
# ---------------------------------------------------------------------------------------------


def paired_bootstrap(statistic: Callable[..., float], *per_sequence: np.ndarray, n_boot: int = 2000,
                     seed: int = 0, level: float = 0.95, paired: bool = True) -> tuple[float, tuple[float, float]]:
    """``statistic(*arrays)`` and its percentile bootstrap interval, resampling *sequences*.

    Each array is ``[n_seqs, ...]`` (e.g. the ``per_sequence`` of :class:`LayerSimilarity`). With
    ``paired=True`` all arrays hold the same sequences in the same order (models fed the same
    ``input_ids``) and one resample of sequence indices is applied to all, keeping the pairing;
    with ``paired=False`` (models with different tokenizers see different windows) each array is
    resampled independently.
    """
    n = [a.shape[0] for a in per_sequence]
    if paired and len(set(n)) != 1:
        raise LayerwiseError(f"per-sequence arrays have different numbers of sequences {n}: run every model on "
                             "the same input_ids with keep_per_sequence=True, or pass paired=False")
    rng = np.random.default_rng(seed)
    value = float(statistic(*per_sequence))
    boots = []
    for _ in range(n_boot):
        if paired:
            idx = rng.integers(0, n[0], size=n[0])
            boots.append(statistic(*(a[idx] for a in per_sequence)))
        else:
            boots.append(statistic(*(a[rng.integers(0, len(a), size=len(a))] for a in per_sequence)))
    lo, hi = np.quantile(np.asarray(boots, dtype=float), [(1 - level) / 2, (1 + level) / 2])
    return value, (float(lo), float(hi))
