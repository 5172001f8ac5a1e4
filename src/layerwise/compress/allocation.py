"""Layer-wise sparsity allocation: uniform, depth ramps, OWL outlier ratios, AlphaPruning."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from torch import nn

from ..config import LayerwiseError
from ..models import LoadedModel
from .calibration import LinearStats, _need_calib, blockwise
from .prune import _check_sparsity

SCHEMES = ("uniform", "earlier_sparser", "deeper_sparser", "owl", "alpha")


def block_param_counts(lm: LoadedModel) -> list[int]:
    """Number of Linear weights per block (the weights that pruning touches)."""
    counts = [0] * lm.num_layers
    for i, _role, lin in lm.adapter.named_linears(lm.model):
        counts[i] += lin.weight.numel()
    return counts


@torch.no_grad()
def owl_outlier_ratios(lm: LoadedModel, calib_ids: torch.Tensor, *, m: float = 5.0, batch_size: int = 8,
                       progress: bool = True) -> list[float]:
    """OWL (Yin et al. 2024; luuyin/OWL) layer outlier ratio in percent: the share of a block's Wanda
    scores ``|W| * ||X||`` (all its Linears together) above ``m`` x their mean."""
    ratios: list[float] = []

    def fn(_i: int, _b: nn.Module, linears: dict[str, nn.Linear], stats: dict[str, LinearStats]) -> bool:
        score = torch.cat([(lin.weight.float().abs() * stats[r].col_norm[None, :]).flatten()
                           for r, lin in linears.items()])
        ratios.append(100.0 * (score > m * score.mean()).float().mean().item())
        return False

    blockwise(lm, calib_ids, fn, collect="norms", batch_size=batch_size, progress=progress, desc="OWL ratios")
    return ratios


def _layer_alphas(lm: LoadedModel, alphas: Any) -> list[float]:
    """Per-block mean alpha-Hill from a sequence, or from a DataFrame (layer, role, alpha)."""
    if alphas is None:
        try:
            from ..spectra import model_alpha_hill
        except ImportError as e:
            raise LayerwiseError("alpha allocation needs alpha-Hill: layerwise.spectra is missing; pass "
                                 "alphas=[...] (one mean alpha per block)") from e
        alphas = model_alpha_hill(lm)
    if isinstance(alphas, pd.DataFrame):
        alphas = alphas.groupby("layer")["alpha"].mean().sort_index().tolist()
    out = [float(a) for a in alphas]
    if len(out) != lm.num_layers:
        raise LayerwiseError(f"got {len(out)} alphas for {lm.num_layers} blocks: pass one mean alpha per block")
    return out


def allocate_sparsity(lm: LoadedModel, average: float, scheme: str = "uniform", *, epsilon: float = 0.1,
                      calib_ids: torch.Tensor | None = None, owl_m: float = 5.0, owl_lambda: float = 0.08,
                      alphas: Any = None, batch_size: int = 8, progress: bool = True) -> list[float]:
    """Per-block sparsities whose parameter-weighted mean is ``average``.

    - ``uniform``: every block ``average``;
    - ``earlier_sparser`` / ``deeper_sparser``: a linear ramp from ``average +- epsilon`` at block 0
      to ``average -+ epsilon`` at the last block (paper B);
    - ``owl``: OWL outlier ratios (threshold ``owl_m``) min-max scaled to ``[0, 2 lambda]``; more
      outliers -> lower sparsity (needs ``calib_ids``);
    - ``alpha``: AlphaPruning: per-block mean alpha-Hill mapped linearly to
      ``[average - epsilon, average + epsilon]``, lower alpha (heavier tail) -> lower sparsity
      (``alphas``: per-block values or ``spectra.model_alpha_hill`` output; computed if None).

    Every scheme is shifted so that the parameter-weighted mean is exactly ``average``.
    """
    _check_sparsity(average)
    L = lm.num_layers
    depth = torch.linspace(0.0, 1.0, L, dtype=torch.float64) if L > 1 else torch.zeros(1, dtype=torch.float64)
    if scheme == "uniform":
        raw = torch.full((L,), average, dtype=torch.float64)
    elif scheme in ("earlier_sparser", "deeper_sparser"):
        sign = -1.0 if scheme == "earlier_sparser" else 1.0
        raw = average + sign * epsilon * (2.0 * depth - 1.0)
    elif scheme in ("owl", "alpha"):
        if scheme == "owl":
            score = torch.tensor(owl_outlier_ratios(lm, _need_calib(calib_ids, "OWL allocation"), m=owl_m,
                                                    batch_size=batch_size, progress=progress), dtype=torch.float64)
            spread, sign = 2.0 * owl_lambda, -1.0  # more outliers -> keep more
        else:
            score = torch.tensor(_layer_alphas(lm, alphas), dtype=torch.float64)
            spread, sign = 2.0 * epsilon, 1.0  # higher alpha -> prune more
        rng = score.max() - score.min()
        norm = (score - score.min()) / rng if rng > 1e-12 else torch.full_like(score, 0.5)
        raw = average + sign * spread * (norm - 0.5)
    else:
        raise LayerwiseError(f"unknown allocation scheme {scheme!r}: use one of {SCHEMES}")
    w = torch.tensor(block_param_counts(lm), dtype=torch.float64)
    out = raw + (average - (w * raw).sum() / w.sum())
    assert abs(float((w * out).sum() / w.sum()) - average) < 1e-9
    if out.min() < 0 or out.max() >= 1:
        raise LayerwiseError(f"allocation {scheme!r} at average {average} gives sparsities outside [0, 1) "
                             f"({out.min():.3f}..{out.max():.3f}): use a smaller epsilon / owl_lambda")
    return out.tolist()
