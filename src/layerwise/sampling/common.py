"""Pieces shared by the samplers and the likelihoods: model calls and the sliced LM head."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..arch import llada
from ..config import LayerwiseError
from ..diffusion import align_logits, logit_positions, mask_token_id
from ..models import LoadedModel


def _mask_id(lm: LoadedModel) -> int:
    """The mask token id diffusion sampling and likelihoods need (an error naming the fix if none)."""
    return mask_token_id(lm, purpose="diffusion sampling and likelihoods")


def _none_if_full(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Drop an all-ones attention mask: attention is then unmasked and SDPA may use its fastest
    kernel (transformers skips such masks too; doing it here makes both samplers see the same)."""
    if attention_mask is None or bool(attention_mask.bool().all()):
        return None
    return attention_mask


def _check_prompt(input_ids: torch.Tensor, mid: int) -> None:
    """A prompt batch ``[B, P]`` that holds no mask token (a sampler would treat it as a position to fill)."""
    if input_ids.dim() != 2:
        raise LayerwiseError(f"input_ids must be [batch, prompt_len], got shape {tuple(input_ids.shape)}")
    if bool((input_ids == mid).any()):
        raise LayerwiseError(
            f"the prompt contains the mask token id {mid} (as text or as padding): the sampler would "
            "treat it as a position to fill; pad with a different token (tokenizer.pad_token)"
        )


def _model_logits(lm: LoadedModel, ids: torch.Tensor, attention_mask: torch.Tensor | None,
                  **kw: Any) -> torch.Tensor:
    """Logits ``[B, T, V]`` through the adapter (``lm.logits`` hides each architecture's mask and cache
    conventions); with ``kw`` (a KV cache for the opt-in prefix cache) the model is called directly. A
    padded LLaDA batch gets :func:`layerwise.arch.llada.padding_bias` either way (the adapter's forward uses
    it too), the numbers of LLaDA's own ``attention_mask`` path."""
    if not kw:
        return lm.logits(ids, attention_mask)
    if attention_mask is not None and lm.adapter.name == "llada" and bool((attention_mask == 0).any()):
        dev = lm.device
        return lm.model(input_ids=ids.to(dev), attention_bias=llada.padding_bias(attention_mask.to(dev)), **kw).logits
    kw.setdefault("use_cache", False)
    return lm.model(input_ids=ids, attention_mask=attention_mask, **kw).logits


@contextlib.contextmanager
def sliced_lm_head(lm: LoadedModel) -> Iterator[Any]:
    """Reversibly make the LM head run only on chosen sequence positions.

    Yields a function ``logits_at(ids [B, L], attention_mask, positions [K], **model_kwargs) -> [B, K, V]``
    returning the *aligned* logits at ``positions`` (row ``k`` predicts token ``positions[k]``, see
    :func:`layerwise.diffusion.align_logits`). It runs the model on ``ids`` but feeds the LM head only the
    hidden states at the raw positions behind them (:func:`layerwise.diffusion.logit_positions`; a
    forward pre-hook on ``adapter.get_lm_head``). Models whose head is not called as a module (tied
    weights used through ``F.linear``) still work: the full logits are then aligned and sliced afterwards.
    """
    head = lm.adapter.get_lm_head(lm.model)
    state: dict[str, torch.Tensor | None] = {"pos": None}

    def pre_hook(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        pos = state["pos"]
        if pos is None or not args or args[0].dim() != 3:
            return None
        return (args[0].index_select(1, pos), *args[1:])

    handle = head.register_forward_pre_hook(pre_hook)

    def logits_at(ids: torch.Tensor, attention_mask: torch.Tensor | None, positions: torch.Tensor,
                  **kw: Any) -> torch.Tensor:
        state["pos"] = logit_positions(positions, lm.family)
        try:
            logits = _model_logits(lm, ids, attention_mask, **kw)
        finally:
            state["pos"] = None
        if logits.shape[1] != positions.numel():  # the head bypassed the hook: align and slice afterwards
            logits = align_logits(logits, lm.family).index_select(1, positions)
        return logits

    try:
        yield logits_at
    finally:
        handle.remove()
