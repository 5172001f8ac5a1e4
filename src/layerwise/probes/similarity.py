"""Paper A's similarity probes: consecutive-layer cosine similarity, and token-token similarity
against distance (the recency measure) with per-token cosine histograms."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .hooks import _EPS, Welford, _per_token_cos


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

