"""Quantization: round-to-nearest and GPTQ fake-quantization on per-group asymmetric min-max grids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pandas as pd
import torch
from torch import nn

from ..config import LayerwiseError
from ..models import LoadedModel
from .calibration import LinearStats, _need_calib, blockwise
from .weights import _record, _write

QuantMethod = Literal["gptq", "rtn"]


def resolve_group_size(in_features: int, group_size: int | None) -> int:
    """Group size actually used for a row of ``in_features``: ``None``/``-1``/``>= in`` -> the full row;
    otherwise ``group_size`` if it divides ``in_features``, else its largest divisor below it."""
    if group_size is None or group_size <= 0 or group_size >= in_features:
        return in_features
    return max(g for g in range(1, group_size + 1) if in_features % g == 0)


def _minmax_params(w: torch.Tensor, maxq: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric min-max grid per row of ``w`` ``[rows, cols]`` (GPTQ's Quantizer, sym=False):
    the range always includes 0. Returns ``scale, zero`` of shape ``[rows, 1]``."""
    xmin = w.amin(1).clamp(max=0)
    xmax = w.amax(1).clamp(min=0)
    both0 = (xmin == 0) & (xmax == 0)
    xmin[both0], xmax[both0] = -1.0, 1.0
    scale = (xmax - xmin) / maxq
    zero = torch.round(-xmin / scale)
    return scale[:, None], zero[:, None]


def _qdq(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    """Quantize then dequantize ``w`` on the grid ``scale * (q - zero)``, ``q in {0..maxq}``."""
    return scale * (torch.clamp(torch.round(w / scale) + zero, 0, maxq) - zero)


def _check_bits(bits: int) -> int:
    if not isinstance(bits, int) or not 1 <= bits <= 16:
        raise LayerwiseError(f"bits={bits!r}: use an integer number of bits, e.g. 2, 3, 4 or 8")
    return 2 ** bits - 1


def rtn_quantize_weight(w: torch.Tensor, bits: int, group_size: int | None = 128) -> torch.Tensor:
    """Round-to-nearest fake-quant of ``w`` ``[out, in]`` on the same per-group grid as GPTQ (float32)."""
    maxq = _check_bits(bits)
    out_f, in_f = w.shape
    g = resolve_group_size(in_f, group_size)
    wg = w.float().reshape(out_f * in_f // g, g)
    scale, zero = _minmax_params(wg, maxq)
    return _qdq(wg, scale, zero, maxq).reshape(out_f, in_f)


def _inverse_hessian_chol(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of ``(H + damp * mean(diag H) I)^-1``; damping grows x10 if needed."""
    mean_diag = h.diagonal().mean()
    for k in range(4):
        hd = h.clone()
        hd.diagonal().add_(damp * (10 ** k) * mean_diag)
        chol, info = torch.linalg.cholesky_ex(hd)
        if info == 0:
            return torch.linalg.cholesky(torch.cholesky_inverse(chol), upper=True)
    raise LayerwiseError("the layer Hessian is not positive definite even with 1000x damping: "
                         "use more calibration tokens or a larger damp")


def _prep(w: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 copies; dead input columns (never active) are zeroed with unit Hessian diagonal."""
    w, h = w.float().clone(), h.float().clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    return w, h


def gptq_quantize_weight(w: torch.Tensor, h: torch.Tensor, bits: int, group_size: int | None = 128, *,
                         act_order: bool = False, damp: float = 0.01, blocksize: int = 128) -> torch.Tensor:
    """GPTQ (Frantar et al. 2023; IST-DASLab/gptq) fake-quant of ``w`` ``[out, in]`` given the layer
    Hessian ``h = 2 X^T X / n`` ``[in, in]``. Returns the dequantized weights (float32).

    Columns are quantized left to right (or by decreasing ``diag(H)`` with ``act_order``); each
    column's rounding error is spread over the not-yet-quantized columns through the Cholesky factor
    of ``H^-1``, lazily in blocks of ``blocksize`` columns. Group parameters (asymmetric min-max) are
    set when a group starts, from the weights updated by all earlier blocks (as IST-DASLab/gptq; with
    ``group_size == blocksize`` these are the fully updated weights). Matches the reference to float
    rounding.
    """
    maxq = _check_bits(bits)
    w, h = _prep(w, h)
    n = w.shape[1]
    perm = torch.argsort(h.diagonal(), descending=True) if act_order else None
    if perm is not None:
        w, h = w[:, perm], h[perm][:, perm]
    hinv = _inverse_hessian_chol(h, damp)
    g = resolve_group_size(n, group_size)
    scale = zero = None
    for i1 in range(0, n, blocksize):
        i2 = min(i1 + blocksize, n)
        w1, hinv1 = w[:, i1:i2].clone(), hinv[i1:i2, i1:i2]
        err1 = torch.zeros_like(w1)
        for i in range(i2 - i1):
            if (i1 + i) % g == 0:  # as the reference: from w, i.e. before this block's own updates
                scale, zero = _minmax_params(w[:, i1 + i:i1 + i + g], maxq)
            assert scale is not None and zero is not None  # column 0 starts a group
            col = w1[:, i]
            q = _qdq(col[:, None], scale, zero, maxq)[:, 0]
            e = (col - q) / hinv1[i, i]
            w1[:, i:] -= e[:, None] * hinv1[i, i:][None, :]
            w1[:, i] = q
            err1[:, i] = e
        w[:, i1:i2] = w1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    if perm is not None:
        w = w[:, torch.argsort(perm)]
    return w


def quantize(lm: LoadedModel, method: QuantMethod = "gptq", bits: int = 4, group_size: int | None = 128, *,
             calib_ids: torch.Tensor | None = None, act_order: bool = False, damp: float = 0.01,
             blocks: Sequence[int] | None = None, batch_size: int = 8,
             store_device: str | torch.device | None = None, progress: bool = True) -> pd.DataFrame:
    """Fake-quantize every block Linear in place (weights dequantized into the model's dtype).

    ``method="gptq"`` runs the calibration loop on ``calib_ids`` ``[n, seq]`` (see
    :func:`calibration_inputs`); ``"rtn"`` rounds to nearest on the same grid without data.
    Returns one row per Linear (layer, role, shape, rel_weight_change).
    """
    _check_bits(bits)
    rows: list[dict] = []
    if method == "rtn":
        sel = set(range(lm.num_layers) if blocks is None else blocks)
        for i, role, lin in lm.adapter.named_linears(lm.model):
            if i in sel:
                w_old = lin.weight.detach().float().clone()
                _write(lin, rtn_quantize_weight(w_old, bits, group_size))
                _record(rows, i, role, lin, w_old)
        return pd.DataFrame(rows)
    if method != "gptq":
        raise LayerwiseError(f"unknown quantization method {method!r}: use 'gptq' or 'rtn'")
    calib = _need_calib(calib_ids, "GPTQ")

    def fn(i: int, _b: nn.Module, linears: dict[str, nn.Linear], stats: dict[str, LinearStats]) -> bool:
        for role, lin in linears.items():
            w_old = lin.weight.detach().float().clone()  # .float() is a no-op view in float32
            _write(lin, gptq_quantize_weight(w_old, stats[role].hessian, bits, group_size,
                                             act_order=act_order, damp=damp))
            _record(rows, i, role, lin, w_old)
            stats[role].xtx = None  # free the [in, in] buffer as soon as it is used
        return True

    blockwise(lm, calib, fn, collect="hessian", blocks=blocks, batch_size=batch_size,
              store_device=store_device, progress=progress, desc=f"GPTQ {bits}-bit")
    return pd.DataFrame(rows)
