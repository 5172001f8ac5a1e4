"""Compiled training steps, autocast and CPU threads."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch


@contextlib.contextmanager
def flash_sdpa_under_compile() -> Iterator[None]:
    """Let SDPA pick its flash kernel inside ``torch.compile`` when no attention mask is given.

    transformers 5 materialises the (all-true) causal or bidirectional mask whenever it is being
    traced (``is_tracing`` is true under dynamo), to keep exported graphs shape-generic. A compiled
    training step then hands SDPA an explicit ``[B, 1, L, L]`` mask, which rules out the flash kernel.
    Inside this context a call with no padding mask, no local window and full-length queries skips the
    mask as it does in eager mode: exactly the same attention, decided from shapes only (no data-
    dependent branch), so it is safe to trace. Anything else goes to transformers' own checks.
    """
    from transformers import masking_utils as mu

    orig_causal, orig_bidir = mu._ignore_causal_mask_sdpa, mu._ignore_bidirectional_mask_sdpa

    def causal(padding_mask: Any, q_length: int, kv_length: int, q_offset: int, kv_offset: int,
               local_attention_size: int | None = None) -> bool:
        if padding_mask is None and local_attention_size is None and q_length == kv_length and q_offset == 0:
            return True
        return orig_causal(padding_mask, q_length, kv_length, q_offset, kv_offset, local_attention_size)

    def bidirectional(padding_mask: Any, kv_length: int, local_attention_size: int | None = None) -> bool:
        if padding_mask is None and local_attention_size is None:
            return True
        return orig_bidir(padding_mask, kv_length, local_attention_size)

    mu._ignore_causal_mask_sdpa, mu._ignore_bidirectional_mask_sdpa = causal, bidirectional
    try:
        yield
    finally:
        mu._ignore_causal_mask_sdpa, mu._ignore_bidirectional_mask_sdpa = orig_causal, orig_bidir


def compile_for_training(model: torch.nn.Module) -> Callable[..., Any]:
    """``torch.compile(model)`` whose calls trace with :func:`flash_sdpa_under_compile`, so the
    compiled graph keeps SDPA's flash kernel (no materialised all-true mask; see there)."""
    compiled = torch.compile(model)

    def fwd(*args: Any, **kwargs: Any) -> Any:
        with flash_sdpa_under_compile():
            return compiled(*args, **kwargs)
    return fwd


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


@contextlib.contextmanager
def cpu_threads(n: int | None, device: torch.device) -> Iterator[None]:
    """Temporarily set torch's intra-op CPU threads (no-op on CUDA or when ``n`` is None)."""
    if device.type != "cpu" or n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
