"""Training objectives (the triplet's losses) and the learning-rate schedule.

The diffusion losses mask tokens with :func:`layerwise.diffusion.mask_tokens` (LLaDA's forward
process) and pair logits with targets through :func:`layerwise.diffusion.prediction_pairs`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..config import LayerwiseError
from ..diffusion import Family, Objective, mask_tokens, maskable_positions, prediction_pairs, sample_t

#: the triplet's objectives, in training order (``ar2dlm`` starts from an ``ar`` snapshot)
OBJECTIVES: tuple[Objective, ...] = tuple(Objective)


def check_objective(objective: Objective | str) -> Objective:
    """``objective`` as an :class:`~layerwise.diffusion.Objective` (an error names the valid ones)."""
    return Objective(objective)


def _token_ce_eager(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy in fp32: ``logits [N, V]``, ``targets [N]`` -> ``[N]``."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


_token_ce_compiled: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None


def token_ce(logits: torch.Tensor, targets: torch.Tensor, compiled: bool = False) -> torch.Tensor:
    """Per-token cross-entropy; ``compiled`` fuses the fp32 upcast into the softmax kernels
    (eagerly, ``logits.float()`` writes and re-reads an fp32 copy of ``[B*L, V]``: ~4 GB per
    gpu-preset micro-batch, ~10% of a training step on an H100)."""
    global _token_ce_compiled
    if not compiled:
        return _token_ce_eager(logits, targets)
    if _token_ce_compiled is None:
        _token_ce_compiled = torch.compile(_token_ce_eager)
    return _token_ce_compiled(logits, targets)


def ar_loss(model: Callable[..., Any], ids: torch.Tensor, compiled: bool = False) -> torch.Tensor:
    """Next-token cross-entropy. ``ids``: ``[B, L]``; logits ``[B, L, V]``, position i predicts i+1."""
    logits, targets = prediction_pairs(model(input_ids=ids, use_cache=False).logits, ids, Family.AR)
    return token_ce(logits.flatten(0, 1), targets.flatten(), compiled).mean()


def diffusion_loss(model: Callable[..., Any], ids: torch.Tensor, mask_id: int, eps: float, gen: torch.Generator,
                   shifted: bool, compiled: bool = False) -> torch.Tensor:
    """Masked-diffusion loss (LLaDA's ``forward_process`` + 1/t weighting).

    ``t ~ U(0,1)`` per sequence, ``p = (1 - eps) t + eps`` (:func:`~layerwise.diffusion.sample_t`);
    each token is masked with probability p (:func:`~layerwise.diffusion.mask_tokens`); the loss is
    ``sum_masked CE / p`` over ``B * L``. With ``shifted`` (Dream / ``ar2dlm``), position 0 is never
    masked and logits at i-1 predict token i, so an AR model's head is reused as is.
    """
    b, l = ids.shape
    family = Family.AR2DLM if shifted else Family.DLM
    p = sample_t(b, eps=eps, generator=gen, device=ids.device)  # [B, 1]
    noisy, masked = mask_tokens(ids, p, mask_id, generator=gen, maskable=maskable_positions(l, family, ids.device))
    logits = model(input_ids=noisy, use_cache=False).logits  # [B, L, V]
    logits, targets, m = prediction_pairs(logits, ids, family, masked)
    # CE at every position, zero weight where unmasked: no boolean indexing, hence no host sync
    # (a data-dependent shape) inside a compiled training step
    ce = token_ce(logits.flatten(0, 1), targets.flatten(), compiled).view_as(m)
    return (ce * m / p).sum() / (b * l)


def objective_loss(objective: Objective | str, model: Callable[..., Any], ids: torch.Tensor, mask_id: int | None,
                   eps: float, gen: torch.Generator, compiled: bool = False) -> torch.Tensor:
    """The training loss of ``objective``; ``compiled``: use the compiled cross-entropy (training)."""
    o = Objective(objective)
    if not o.is_diffusion:
        return ar_loss(model, ids, compiled)
    if mask_id is None:
        raise LayerwiseError(f"objective {o.value!r} needs the tokenizer's mask token id: pass "
                             "mask_id=layerwise.diffusion.mask_token_id(tokenizer)")
    return diffusion_loss(model, ids, mask_id, eps, gen, shifted=o.shifted_logits, compiled=compiled)


def wsd_lambda(total: int, warmup: int, decay_frac: float, min_frac: float) -> Callable[[int], float]:
    """Warmup-stable-decay multiplier: linear warmup, flat, then linear decay to ``min_frac``
    over the last ``decay_frac`` of ``total`` steps."""
    decay_start = total - max(1, round(decay_frac * total))

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if step < decay_start:
            return 1.0
        return 1.0 - (1.0 - min_frac) * (step - decay_start + 1) / max(1, total - decay_start)
    return f

