"""Writing compressed weights back, recording the change, and snapshots to undo it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from ..models import LoadedModel


def _record(rows: list[dict], i: int, role: str, lin: nn.Linear, w_old: torch.Tensor, **extra: Any) -> None:
    w_new = lin.weight.detach().float()
    rows.append({"layer": i, "role": role, "out_features": lin.out_features, "in_features": lin.in_features,
                 "sparsity": (w_new == 0).float().mean().item(),
                 "rel_weight_change": ((w_new - w_old).norm() / w_old.norm().clamp_min(1e-12)).item(), **extra})


def _write(lin: nn.Linear, w: torch.Tensor) -> None:
    lin.weight.data.copy_(w.to(lin.weight.dtype))



def snapshot(lm: LoadedModel) -> dict[tuple[int, str], torch.Tensor]:
    """CPU copies of every block Linear's weight (the only tensors this module changes)."""
    return {(i, r): lin.weight.detach().to("cpu", copy=True) for i, r, lin in lm.adapter.named_linears(lm.model)}


@torch.no_grad()
def restore(lm: LoadedModel, snap: dict[tuple[int, str], torch.Tensor]) -> None:
    """Write a :func:`snapshot` back into the model."""
    for i, r, lin in lm.adapter.named_linears(lm.model):
        lin.weight.copy_(snap[(i, r)])


@contextlib.contextmanager
def preserved(lm: LoadedModel, snap: dict[tuple[int, str], torch.Tensor] | None = None) -> Iterator[None]:
    """``with preserved(lm): quantize(lm, ...); evaluate(...)`` leaves the weights as they were.
    Pass a snapshot taken once to avoid copying the weights again for every configuration."""
    snap = snapshot(lm) if snap is None else snap
    try:
        yield
    finally:
        restore(lm, snap)


@contextlib.contextmanager
def compressed(lm: LoadedModel, apply: Callable[[], Any],
               snap: dict[tuple[int, str], torch.Tensor] | None = None) -> Iterator[Any]:
    """Context manager: ``apply()`` (e.g. ``lambda: quantize(lm, "gptq", 3, calib_ids=c)``) on entry,
    the original weights back on exit; yields what ``apply`` returned. An ``evals.retention``
    intervention: ``{"gptq3": lambda: compressed(lm, lambda: quantize(...), snap)}``."""
    with preserved(lm, snap):
        yield apply()


def relative_error(y: torch.Tensor, y_ref: torch.Tensor) -> float:
    """``||y - y_ref|| / ||y_ref||`` (Frobenius), used to compare layer outputs."""
    return ((y.float() - y_ref.float()).norm() / y_ref.float().norm().clamp_min(1e-12)).item()

