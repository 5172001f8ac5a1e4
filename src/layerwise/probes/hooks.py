"""The probes' machinery: block hooks, streaming accumulators, devices, batching and masked inputs."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..arch import LayerAdapter
from ..config import LayerwiseError
from ..diffusion import mask_fraction, requires_mask_token
from ..models import LoadedModel

_EPS = 1e-12


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
            handles.append(m.register_forward_hook(
                lambda _m, _a, out, i=i: fn(i, LayerAdapter.hidden_from_output(out))))
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
    """Replace ``round(mask_ratio * n_valid)`` uniformly chosen valid tokens of each row by the mask id
    (:func:`layerwise.diffusion.mask_fraction`; ``valid``: bool ``[N, T]``, padding is never masked)."""
    return mask_fraction(input_ids, mask_ratio, mask_token_id, generator=generator, maskable=valid)[0]


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



def _prepare(lm: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, mask_ratio: float,
             batch_size: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated inputs, masked for diffusion models when ``mask_ratio > 0``, and the bool valid mask."""
    valid = _check_inputs(lm, input_ids, attention_mask, batch_size)
    if mask_ratio > 0:
        mid = requires_mask_token(lm, purpose=f"mask_ratio={mask_ratio}", alternative="mask_ratio=0")
        input_ids = mask_fraction(input_ids, mask_ratio, mid, generator=generator, maskable=valid)[0]
    return input_ids, valid
