"""Calibration data and the layer-by-layer calibration loop (:func:`blockwise`) every method shares."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from ..arch import LayerAdapter
from ..config import LayerwiseError
from ..diffusion import mask_tokens, requires_mask_token, sample_t
from ..models import LoadedModel

Collect = Literal["hessian", "norms"] | None


def calibration_inputs(lm: LoadedModel, input_ids: torch.Tensor, *, diffusion_masking: bool,
                       seed: int = 0, repeats: int = 1) -> torch.Tensor:
    """Calibration token ids ``[n * repeats, seq]``, optionally diffusion-masked.

    With ``diffusion_masking`` (paper B's diffusion-aware calibration, as super-outlier-dlm's
    ``mask_calibration_data``), each copy of each sequence draws ``t ~ U[0, 1]`` and replaces every
    token by the model's mask token with probability ``t`` (LLaDA's forward process,
    :func:`layerwise.diffusion.mask_tokens`), so the activation statistics match what a
    masked-diffusion model sees while sampling. Without it the ids are repeated unchanged.
    """
    if input_ids.ndim != 2 or input_ids.dtype not in (torch.long, torch.int32, torch.int64):
        raise LayerwiseError(f"calibration ids must be an integer tensor [n, seq], got {tuple(input_ids.shape)} "
                             f"{input_ids.dtype}: stack equal-length sequences, e.g. data.eval_sequences(...)")
    ids = input_ids.long().repeat(repeats, 1)
    if not diffusion_masking:
        return ids
    mid = requires_mask_token(lm, purpose="diffusion_masking=True", alternative="diffusion_masking=False")
    g = torch.Generator().manual_seed(seed)
    t = sample_t(ids.shape[0], generator=g)
    return mask_tokens(ids, t, mid, generator=g)[0]


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


def _need_calib(calib_ids: torch.Tensor | None, what: str) -> torch.Tensor:
    if calib_ids is None:
        raise LayerwiseError(f"{what} needs calibration tokens: pass calib_ids=calibration_inputs(lm, ids, ...)")
    return calib_ids
