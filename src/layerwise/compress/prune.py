"""Pruning: magnitude, Wanda and SparseGPT, unstructured or N:M."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pandas as pd
import torch
from torch import nn

from ..config import LayerwiseError
from ..models import LoadedModel
from .calibration import LinearStats, _need_calib, blockwise
from .quantize import _inverse_hessian_chol, _prep
from .weights import _record, _write

PruneMethod = Literal["magnitude", "wanda", "sparsegpt"]


def _check_sparsity(s: float) -> float:
    if not 0.0 <= float(s) < 1.0:
        raise LayerwiseError(f"sparsity {s} must be in [0, 1): e.g. 0.5 for half the weights pruned")
    return float(s)


def _smallest_mask(score: torch.Tensor, k: int, dim: int | None) -> torch.Tensor:
    """Boolean mask of the ``k`` smallest entries of ``score`` (overall, or per slice along ``dim``)."""
    mask = torch.zeros_like(score, dtype=torch.bool)
    if k <= 0:
        return mask
    if dim is None:
        mask.view(-1)[torch.topk(score.flatten(), k, largest=False).indices] = True
    else:
        mask.scatter_(dim, torch.topk(score, k, dim=dim, largest=False).indices, True)
    return mask


def _nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """N:M mask: in every run of ``m`` consecutive input columns, the ``n`` smallest scores pruned."""
    rows, cols = score.shape
    if cols % m:
        raise LayerwiseError(f"{n}:{m} sparsity needs in_features ({cols}) divisible by {m}: use unstructured")
    return _smallest_mask(score.reshape(rows, cols // m, m), n, dim=2).reshape(rows, cols)


def magnitude_mask(w: torch.Tensor, sparsity: float, nm: tuple[int, int] | None = None) -> torch.Tensor:
    """Mask (True = prune) of the ``int(numel * s)`` smallest ``|W|`` of the whole matrix ``[out, in]``."""
    score = w.abs().float()
    return _nm_mask(score, *nm) if nm else _smallest_mask(score, int(w.numel() * sparsity), None)


def wanda_mask(w: torch.Tensor, col_norm: torch.Tensor, sparsity: float,
               nm: tuple[int, int] | None = None) -> torch.Tensor:
    """Wanda (Sun et al. 2024; locuslab/wanda) mask: score ``|W_ij| * ||X_j||_2``; the
    ``int(in * s)`` smallest scores of every output row are pruned (per-row comparison group)."""
    score = w.abs().float() * col_norm.float()[None, :]
    return _nm_mask(score, *nm) if nm else _smallest_mask(score, int(w.shape[1] * sparsity), 1)


def sparsegpt_prune_weight(w: torch.Tensor, h: torch.Tensor, sparsity: float, *,
                           nm: tuple[int, int] | None = None, damp: float = 0.01,
                           blocksize: int = 128) -> torch.Tensor:
    """SparseGPT (Frantar & Alistarh 2023; IST-DASLab/sparsegpt) of ``w`` ``[out, in]`` with Hessian
    ``h`` ``[in, in]``; returns pruned, OBS-updated weights (float32).

    Per block of ``blocksize`` columns the mask prunes the entries with the smallest
    ``w^2 / [H^-1]_jj^2`` (exactly ``int(rows * cols_in_block * s)`` of them, or ``n`` of every ``m``);
    each pruned column's error is compensated on the remaining columns as in GPTQ.
    """
    w, h = _prep(w, h)
    n = w.shape[1]
    hinv = _inverse_hessian_chol(h, damp)
    if nm and blocksize % nm[1]:
        blocksize = nm[1] * max(1, blocksize // nm[1])
    for i1 in range(0, n, blocksize):
        i2 = min(i1 + blocksize, n)
        w1, hinv1 = w[:, i1:i2].clone(), hinv[i1:i2, i1:i2]
        err1 = torch.zeros_like(w1)
        score = w1.square() / hinv1.diagonal()[None, :].square()
        mask1 = _nm_mask(score, *nm) if nm else _smallest_mask(score, int(score.numel() * sparsity), None)
        for i in range(i2 - i1):
            col = w1[:, i]
            q = col.masked_fill(mask1[:, i], 0.0)
            e = (col - q) / hinv1[i, i]
            w1[:, i:] -= e[:, None] * hinv1[i, i:][None, :]
            w1[:, i] = q
            err1[:, i] = e
        w[:, i1:i2] = w1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return w


def _per_layer(lm: LoadedModel, sparsity: float | Sequence[float]) -> list[float]:
    if isinstance(sparsity, (int, float)):
        return [_check_sparsity(sparsity)] * lm.num_layers
    out = [_check_sparsity(s) for s in sparsity]
    if len(out) != lm.num_layers:
        raise LayerwiseError(f"got {len(out)} per-layer sparsities for {lm.num_layers} layers: give one per "
                             "block, e.g. allocate_sparsity(lm, 0.5, 'uniform')")
    return out


def prune(lm: LoadedModel, method: PruneMethod = "wanda", sparsity: float | Sequence[float] = 0.5, *,
          calib_ids: torch.Tensor | None = None, nm: tuple[int, int] | None = None, damp: float = 0.01,
          blocks: Sequence[int] | None = None, batch_size: int = 8,
          store_device: str | torch.device | None = None, progress: bool = True) -> pd.DataFrame:
    """Prune every block Linear in place; ``sparsity`` is one float or one value per block.

    ``"magnitude"`` needs no data; ``"wanda"`` and ``"sparsegpt"`` run the calibration loop on
    ``calib_ids`` ``[n, seq]``. ``nm=(2, 4)`` gives N:M semi-structured sparsity instead.
    Returns one row per Linear (layer, role, shape, achieved sparsity, target, rel_weight_change).
    """
    per = _per_layer(lm, sparsity)
    rows: list[dict] = []
    if method == "magnitude":
        sel = set(range(lm.num_layers) if blocks is None else blocks)
        for i, role, lin in lm.adapter.named_linears(lm.model):
            if i in sel:
                w_old = lin.weight.detach().float().clone()
                _write(lin, w_old.masked_fill(magnitude_mask(w_old, per[i], nm), 0.0))
                _record(rows, i, role, lin, w_old, target=per[i])
        return pd.DataFrame(rows)
    if method not in ("wanda", "sparsegpt"):
        raise LayerwiseError(f"unknown pruning method {method!r}: use 'magnitude', 'wanda' or 'sparsegpt'")
    calib = _need_calib(calib_ids, method)

    def fn(i: int, _b: nn.Module, linears: dict[str, nn.Linear], stats: dict[str, LinearStats]) -> bool:
        for role, lin in linears.items():
            w_old = lin.weight.detach().float().clone()  # .float() is a no-op view in float32
            if method == "wanda":
                new = w_old.masked_fill(wanda_mask(w_old, stats[role].col_norm, per[i], nm), 0.0)
            else:
                new = sparsegpt_prune_weight(w_old, stats[role].hessian, per[i], nm=nm, damp=damp)
                stats[role].xtx = None
            _write(lin, new)
            _record(rows, i, role, lin, w_old, target=per[i])
        return True

    blockwise(lm, calib, fn, collect="hessian" if method == "sparsegpt" else "norms", blocks=blocks,
              batch_size=batch_size, store_device=store_device, progress=progress, desc=method)
    return pd.DataFrame(rows)
