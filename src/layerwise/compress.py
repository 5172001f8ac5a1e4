"""Post-training compression: GPTQ / RTN fake-quantization, magnitude / Wanda / SparseGPT pruning,
layer-wise sparsity allocation, and the one layer-by-layer calibration loop they all share.

Hand-written on purpose (DESIGN.md section 5): llm-compressor pins other torch/transformers versions
and its OWL is broken, gptqmodel does not support LLaDA-1, auto-gptq does not import on transformers 5.
Everything here reaches inside a model only through ``lm.adapter`` and is *fake* compression: weights
are quantized / pruned and written back in the model's dtype, so every other module (samplers,
evals, probes) runs on the compressed model unchanged.

The calibration loop (:func:`blockwise`) is the Wanda / GPTQ "catcher" pattern, generalised:

1. run the model once per calibration chunk with a forward pre-hook on block 0 that records the
   block's inputs (hidden state ``[b, seq, d]`` plus whatever positional/keyword arguments the
   block needs: attention mask, position embeddings, ...) and raises to stop the forward;
2. for each block: run it on the stored inputs with hooks on its Linears collecting input
   statistics (``X^T X`` for GPTQ / SparseGPT, per-column ``sum x_j^2`` for Wanda / OWL), compress it,
   run it again to get the *post-compression* outputs (as GPTQ does), which become the next
   block's inputs.

So an 8B model needs one block's activations in memory at a time.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal, Sequence

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .config import LayerwiseError
from .models import LayerAdapter, LoadedModel

Collect = Literal["hessian", "norms"] | None
QuantMethod = Literal["gptq", "rtn"]
PruneMethod = Literal["magnitude", "wanda", "sparsegpt"]
SCHEMES = ("uniform", "earlier_sparser", "deeper_sparser", "owl", "alpha")

# ---------------------------------------------------------------------------------------------
# Calibration inputs
# ---------------------------------------------------------------------------------------------


def calibration_inputs(lm: LoadedModel, input_ids: torch.Tensor, *, diffusion_masking: bool,
                       seed: int = 0, repeats: int = 1) -> torch.Tensor:
    """Calibration token ids ``[n * repeats, seq]``, optionally diffusion-masked.

    With ``diffusion_masking`` (paper B's diffusion-aware calibration, as super-outlier-dlm's
    ``mask_calibration_data``), each copy of each sequence draws ``t ~ U[0, 1]`` and replaces every
    token by ``lm.spec.mask_token_id`` with probability ``t``, so the activation statistics match
    what a masked-diffusion model sees while sampling. Without it the ids are repeated unchanged.
    """
    if input_ids.ndim != 2 or input_ids.dtype not in (torch.long, torch.int32, torch.int64):
        raise LayerwiseError(f"calibration ids must be an integer tensor [n, seq], got {tuple(input_ids.shape)} "
                             f"{input_ids.dtype}: stack equal-length sequences, e.g. data.eval_sequences(...)")
    ids = input_ids.long().repeat(repeats, 1)
    if not diffusion_masking:
        return ids
    if not lm.family.is_diffusion or lm.spec.mask_token_id is None:
        raise LayerwiseError(f"diffusion_masking=True needs a diffusion model with a mask token; {lm.name} is "
                             f"family {lm.family.value!r}: use diffusion_masking=False for AR models")
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(ids.shape[0], 1, generator=g)
    masked = torch.rand(ids.shape, generator=g) < t
    return ids.masked_fill(masked, lm.spec.mask_token_id)


# ---------------------------------------------------------------------------------------------
# The layer-by-layer loop
# ---------------------------------------------------------------------------------------------


@dataclass
class LinearStats:
    """Input statistics of one ``nn.Linear`` over the calibration tokens (float32).

    ``sumsq[j] = sum_tokens x_j^2`` (shape ``[in]``); ``xtx = X^T X`` (``[in, in]``, only when the
    Hessian is collected); ``n`` = number of tokens seen.
    """

    sumsq: torch.Tensor
    xtx: torch.Tensor | None = None
    n: int = 0

    def add(self, x: torch.Tensor) -> None:
        """Accumulate a Linear's input ``x`` of shape ``[..., in]``."""
        x = x.reshape(-1, x.shape[-1]).float()
        self.sumsq += x.square().sum(0)
        if self.xtx is not None:
            self.xtx.addmm_(x.T, x)
        self.n += x.shape[0]

    @property
    def hessian(self) -> torch.Tensor:
        """GPTQ / SparseGPT layer Hessian ``H = 2 X^T X / n`` ``[in, in]``."""
        if self.xtx is None:
            raise LayerwiseError("the Hessian was not collected: run the loop with collect='hessian'")
        return self.xtx * (2.0 / max(self.n, 1))

    @property
    def col_norm(self) -> torch.Tensor:
        """Wanda's per-input-column activation norm ``||X_j||_2`` ``[in]``."""
        return self.sumsq.sqrt()


class _StopForward(Exception):
    """Raised by the block-0 pre-hook once its inputs are captured."""


@dataclass
class BlockInputs:
    """Inputs of the current block, one entry per calibration chunk.

    ``hidden[c]`` is ``[b_c, seq, d]``; ``args[c]`` / ``kwargs[c]`` are the block's other positional
    and keyword arguments (attention mask, position embeddings, ...), captured from block 0 and
    reused for every block, since in most models they do not depend on depth. Models that mix layer
    types (``config.layer_types``: sliding-window and full attention, each with its own mask and
    rotary embedding, as Gemma / DiffusionGemma) get them per block: ``per_block[i][c]`` is block
    ``i``'s ``(args, kwargs)`` for chunk ``c``.
    """

    hidden: list[torch.Tensor] = field(default_factory=list)
    args: list[tuple] = field(default_factory=list)
    kwargs: list[dict[str, Any]] = field(default_factory=list)
    per_block: dict[int, list[tuple[tuple, dict[str, Any]]]] | None = None

    def block_args(self, i: int) -> list[tuple[tuple, dict[str, Any]]]:
        """``(args, kwargs)`` per chunk for block ``i``."""
        if self.per_block is not None:
            return self.per_block[i]
        return list(zip(self.args, self.kwargs))


def _to(obj: Any, device: torch.device, memo: dict[int, torch.Tensor] | None = None) -> Any:
    """Move tensors nested in tuples / lists / dicts to ``device``; ``memo`` (id -> moved tensor)
    moves a tensor shared by several blocks (a mask, rotary tables) once."""
    if isinstance(obj, torch.Tensor):
        if memo is None:
            return obj.to(device)
        if id(obj) not in memo:
            memo[id(obj)] = obj.to(device)
        return memo[id(obj)]
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to(o, device, memo) for o in obj)
    if isinstance(obj, dict):
        return {k: _to(v, device, memo) for k, v in obj.items()}
    return obj


def mixed_layer_types(lm: LoadedModel) -> bool:
    """Whether the blocks receive depth-dependent arguments: more than one ``config.layer_types``
    entry (each layer type gets its own attention mask and rotary embedding)."""
    try:
        types = getattr(lm.adapter.layer_config(lm.model), "layer_types", None)
    except (AttributeError, KeyError, LayerwiseError):
        return False
    return types is not None and len(set(types[: lm.num_layers])) > 1


def _block_device(block: nn.Module) -> torch.device:
    return next(block.parameters()).device


@torch.no_grad()
def capture_block_inputs(lm: LoadedModel, input_ids: torch.Tensor, *, batch_size: int = 8,
                         store_device: str | torch.device | None = None,
                         per_block: bool | None = None) -> BlockInputs:
    """Run the model (``lm.logits``, the adapter's forward) on ``input_ids`` ``[n, seq]`` up to block 0 and
    keep block 0's inputs.

    ``per_block`` (default: :func:`mixed_layer_types`) runs the forward up to the last block instead
    and keeps every block's own positional / keyword arguments (see :class:`BlockInputs`).
    """
    blocks = lm.adapter.get_blocks(lm.model)
    store = torch.device(store_device) if store_device is not None else lm.device
    per_block = mixed_layer_types(lm) if per_block is None else per_block
    cap = BlockInputs(per_block={i: [] for i in range(len(blocks))} if per_block else None)
    stop_at = len(blocks) - 1 if per_block else 0
    memo: dict[int, torch.Tensor] = {}

    def make_hook(i: int) -> Callable[..., None]:
        def hook(_mod: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
            kwargs = dict(kwargs)
            hidden = args[0] if args else kwargs.pop("hidden_states")
            rest = (_to(tuple(args[1:]), store, memo), _to(kwargs, store, memo))
            if i == 0:
                cap.hidden.append(hidden.detach().to(store))
                cap.args.append(rest[0])
                cap.kwargs.append(rest[1])
            if cap.per_block is not None:
                cap.per_block[i].append(rest)
            if i == stop_at:
                raise _StopForward
        return hook

    handles = [blocks[i].register_forward_pre_hook(make_hook(i), with_kwargs=True) for i in range(stop_at + 1)]
    try:
        for chunk in input_ids.split(batch_size):
            memo.clear()
            try:  # the adapter's forward hides LLaDA's / Dream's / DiffusionGemma's calling conventions
                lm.logits(chunk)
            except _StopForward:
                pass
    finally:
        for h in handles:
            h.remove()
    if len(cap.hidden) != len(input_ids.split(batch_size)):
        raise LayerwiseError("block 0 was never called during the forward: the adapter's `blocks` path "
                             f"({lm.adapter.blocks}) does not point at the blocks the model runs")
    return cap


BlockFn = Callable[[int, nn.Module, dict[str, nn.Linear], dict[str, LinearStats]], bool]


@torch.no_grad()
def blockwise(lm: LoadedModel, input_ids: torch.Tensor, fn: BlockFn | None = None, *,
              collect: Collect = None, blocks: Sequence[int] | None = None, batch_size: int = 8,
              store_device: str | torch.device | None = None, keep_outputs: bool = False,
              progress: bool = True, desc: str = "blocks") -> list[torch.Tensor] | None:
    """The layer-by-layer calibration loop (see the module docstring).

    ``fn(i, block, linears, stats) -> modified`` is called for each selected block ``i`` after its
    statistics are collected (``linears``: role -> Linear in execution order; ``stats``: role ->
    :class:`LinearStats`, empty when ``collect`` is None). When it returns True the block is run
    again so the next block sees post-compression outputs. ``blocks`` restricts which blocks get
    ``fn`` (the loop stops after the last one). ``keep_outputs`` returns every visited block's
    output ``[n, seq, d]`` (for tests / small models).
    """
    ad: LayerAdapter = lm.adapter
    all_blocks = ad.get_blocks(lm.model)
    chosen = set(range(len(all_blocks)) if blocks is None else blocks)
    if any(not 0 <= b < len(all_blocks) for b in chosen):
        raise LayerwiseError(f"blocks {sorted(chosen)} out of range: this model has {len(all_blocks)} blocks")
    last = max(chosen) if chosen else -1
    cap = capture_block_inputs(lm, input_ids, batch_size=batch_size, store_device=store_device)
    outputs: list[torch.Tensor] = []

    def run(i: int, block: nn.Module) -> list[torch.Tensor]:
        dev = _block_device(block)
        outs = []
        for h, (a, kw) in zip(cap.hidden, cap.block_args(i), strict=True):
            out = block(h.to(dev), *_to(a, dev), **_to(kw, dev))
            outs.append(LayerAdapter.hidden_from_output(out).to(h.device))
        return outs

    for i in tqdm(range(last + 1), desc=desc, disable=not progress):
        block = all_blocks[i]
        stats: dict[str, LinearStats] = {}
        handles = []
        linears = ad.block_linears(block)
        if i in chosen and fn is not None and collect is not None:
            for role, lin in linears.items():
                d = lin.in_features
                stats[role] = LinearStats(
                    torch.zeros(d, device=lin.weight.device),
                    torch.zeros(d, d, device=lin.weight.device) if collect == "hessian" else None)
                handles.append(lin.register_forward_hook(
                    lambda _m, inp, _out, s=stats[role]: s.add(inp[0].detach())))
        try:
            outs = run(i, block)
        finally:
            for h in handles:
                h.remove()
        if i in chosen and fn is not None and fn(i, block, linears, stats):
            del stats
            outs = run(i, block)
        cap.hidden = outs
        if keep_outputs:
            outputs.append(torch.cat(outs))
    return outputs if keep_outputs else None


# ---------------------------------------------------------------------------------------------
# Quantization
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Pruning masks
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Whole-model passes
# ---------------------------------------------------------------------------------------------


def _record(rows: list[dict], i: int, role: str, lin: nn.Linear, w_old: torch.Tensor, **extra: Any) -> None:
    w_new = lin.weight.detach().float()
    rows.append({"layer": i, "role": role, "out_features": lin.out_features, "in_features": lin.in_features,
                 "sparsity": (w_new == 0).float().mean().item(),
                 "rel_weight_change": ((w_new - w_old).norm() / w_old.norm().clamp_min(1e-12)).item(), **extra})


def _write(lin: nn.Linear, w: torch.Tensor) -> None:
    lin.weight.data.copy_(w.to(lin.weight.dtype))


def _need_calib(calib_ids: torch.Tensor | None, what: str) -> torch.Tensor:
    if calib_ids is None:
        raise LayerwiseError(f"{what} needs calibration tokens: pass calib_ids=calibration_inputs(lm, ids, ...)")
    return calib_ids


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


# ---------------------------------------------------------------------------------------------
# Layer-wise sparsity allocation
# ---------------------------------------------------------------------------------------------


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
            from .spectra import model_alpha_hill
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


# ---------------------------------------------------------------------------------------------
# Snapshots: evaluate several configurations on one loaded model
# ---------------------------------------------------------------------------------------------


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


__all__ = [
    "LinearStats", "BlockInputs", "calibration_inputs", "capture_block_inputs", "blockwise",
    "resolve_group_size", "rtn_quantize_weight", "gptq_quantize_weight", "magnitude_mask", "wanda_mask",
    "sparsegpt_prune_weight", "quantize", "prune", "block_param_counts", "owl_outlier_ratios",
    "allocate_sparsity", "snapshot", "restore", "preserved", "compressed", "relative_error", "SCHEMES",
]
