"""Masked-diffusion generation with LLaDA's semi-autoregressive sampler (``generate.py`` semantics)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config import LayerwiseError
from ..diffusion import logit_positions
from ..models import LoadedModel
from .common import _mask_id, _none_if_full, sliced_lm_head

REMASKING = ("low_confidence", "random")


def num_transfer_tokens(block_mask: torch.Tensor, steps: int) -> torch.Tensor:
    """Tokens to unmask at each of ``steps`` steps, per row: ``[B, steps]`` int64.

    ``block_mask``: ``[B, block_length]`` bool, the masked positions of a block. LLaDA's linear noise
    schedule moves the same expected number of tokens per step: ``n // steps`` each, and the first
    ``n % steps`` steps one more (as ``get_num_transfer_tokens`` in LLaDA's generate.py).
    """
    n = block_mask.sum(dim=1, keepdim=True)
    extra = torch.arange(steps, device=block_mask.device).unsqueeze(0) < (n % steps)
    return (n // steps + extra).to(torch.int64)


def _rand(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
          generator: torch.Generator | None) -> torch.Tensor:
    """Uniform [0, 1) noise on ``device``, drawn on the generator's own device (a CPU generator can
    then drive a GPU model, and gives the same numbers on any device)."""
    where = generator.device if generator is not None else device
    return torch.rand(shape, dtype=dtype, device=where, generator=generator).to(device)


def add_gumbel_noise(logits: torch.Tensor, temperature: float,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Gumbel-max perturbation, so that argmax samples from softmax(logits / temperature).

    As LLaDA's ``add_gumbel_noise``: float64 throughout (low-precision Gumbel noise hurts generation
    quality, arXiv:2409.02908); returns ``logits`` unchanged at temperature 0. Shape preserved.
    """
    if temperature == 0:
        return logits
    logits = logits.to(torch.float64)
    noise = _rand(tuple(logits.shape), torch.float64, logits.device, generator)
    return logits.exp() / (-torch.log(noise)) ** temperature


def _check_diffusion_args(gen_length: int, steps: int, block_length: int, temperature: float,
                          remasking: str) -> int:
    """Validate sampler settings; returns the number of steps per block."""
    if gen_length < 1 or block_length < 1 or steps < 1:
        raise LayerwiseError(
            f"gen_length={gen_length}, steps={steps}, block_length={block_length} must all be >= 1"
        )
    if gen_length % block_length != 0:
        raise LayerwiseError(
            f"gen_length={gen_length} is not a multiple of block_length={block_length}: choose a "
            f"block_length that divides gen_length (e.g. {math.gcd(gen_length, block_length)}) or round "
            "gen_length up to a multiple of it"
        )
    num_blocks = gen_length // block_length
    if steps % num_blocks != 0:
        raise LayerwiseError(
            f"steps={steps} cannot be split evenly over {num_blocks} blocks (gen_length / block_length): "
            f"use a multiple of {num_blocks}, e.g. steps={max(num_blocks, steps - steps % num_blocks)}"
        )
    if remasking not in REMASKING:
        raise LayerwiseError(f"unknown remasking {remasking!r}: use one of {REMASKING}")
    if temperature < 0:
        raise LayerwiseError(f"temperature={temperature} must be >= 0 (0 = greedy)")
    return steps // num_blocks


def _prepare_canvas(lm: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                    gen_length: int) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Prompt followed by ``gen_length`` mask tokens: ``x [B, P + G]``, the matching 2D mask (or None)."""
    mid = _mask_id(lm)
    if input_ids.dim() != 2:
        raise LayerwiseError(f"input_ids must be [batch, prompt_len], got shape {tuple(input_ids.shape)}")
    if bool((input_ids == mid).any()):
        raise LayerwiseError(
            f"the prompt contains the mask token id {mid} (as text or as padding): the sampler would "
            "treat it as a position to fill; pad with a different token (tokenizer.pad_token)"
        )
    dev = lm.device
    b, p = input_ids.shape
    x = torch.full((b, p + gen_length), mid, dtype=torch.long, device=dev)
    x[:, :p] = input_ids.to(dev)
    am = None
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise LayerwiseError(
                f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids "
                f"{tuple(input_ids.shape)}: pass the tokenizer's mask for the same batch"
            )
        am = torch.cat([attention_mask.to(dev).long(),
                        torch.ones(b, gen_length, dtype=torch.long, device=dev)], dim=1)
    return x, _none_if_full(am), mid


@torch.no_grad()
def diffusion_generate(lm: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                       *, gen_length: int, steps: int, block_length: int, temperature: float = 0.0,
                       remasking: str = "low_confidence", generator: torch.Generator | None = None,
                       prefix_cache: bool = False, progress: bool = False) -> torch.Tensor:
    """Masked-diffusion generation with LLaDA's semi-autoregressive sampler.

    Args:
        input_ids: ``[B, P]`` prompt ids, left-padded when the prompts differ in length.
        attention_mask: ``[B, P]`` 1 for real tokens, 0 for padding (None: no padding).
        gen_length: tokens to generate, a multiple of ``block_length``.
        steps: denoising steps in total, split evenly over the ``gen_length / block_length`` blocks.
        block_length: blocks are filled left to right; within the current block, each step unmasks the
            number of tokens given by :func:`num_transfer_tokens`.
        temperature: 0 = argmax; > 0 samples with float64 Gumbel noise (:func:`add_gumbel_noise`).
        remasking: ``"low_confidence"`` unmasks the still-masked block positions whose argmax token has
            the highest probability; ``"random"`` picks them uniformly at random.
        generator: source of randomness for temperature and random remasking (seeded runs repeat).
        prefix_cache: APPROXIMATE, off by default. Fast-dLLM's prefix cache: at the first step of each
            block the whole sequence runs and the keys/values of everything before the block are kept;
            the block's other steps run only the block and what follows it. Outputs change (the cached
            prefix no longer sees the newest tokens), so measure accuracy against the exact sampler
            before relying on it. Needs a transformers model with a ``Cache`` (Llama/Qwen2 naming).
        progress: show a progress bar over steps.

    Returns:
        ``[B, gen_length]`` generated ids.

    Equal to LLaDA's ``generate`` (tokens identical at temperature 0, and with random remasking from the
    same generator) but the LM head, softmax and top-k run only on the ``block_length`` positions of the
    current block, which is where any token can be unmasked.
    """
    spb = _check_diffusion_args(gen_length, steps, block_length, temperature, remasking)
    x, am, mid = _prepare_canvas(lm, input_ids, attention_mask, gen_length)
    b, p = input_ids.shape
    dev = x.device
    num_blocks = gen_length // block_length
    if prefix_cache:
        if lm.adapter.name != "llama":
            raise LayerwiseError(
                f"prefix_cache=True needs a transformers model with a KV Cache (Llama/Qwen2 naming); "
                f"{lm.adapter.name!r} models are not supported: use prefix_cache=False"
            )
        from transformers import DynamicCache
    bar = tqdm(total=num_blocks * spb, desc="diffusion sampling", disable=not progress, leave=False)
    with sliced_lm_head(lm) as logits_at:
        for blk in range(num_blocks):
            start = p + blk * block_length
            positions = torch.arange(start, start + block_length, device=dev)  # aligned: the block's tokens
            # one host sync per block: the per-step k is needed as a Python int by topk
            ntt = num_transfer_tokens(x[:, start:start + block_length] == mid, spb)
            k_max = ntt.max(dim=0).values.tolist()
            # cached prefix length: everything before the first raw logit position the block needs
            keep_len = int(logit_positions(positions[:1], lm.family))
            cache = None
            for i in range(spb):
                masked = x[:, start:start + block_length] == mid  # [B, Lb]
                if not prefix_cache:
                    logits = logits_at(x, am, positions)  # [B, Lb, V], aligned to the block
                elif i == 0:  # full pass that also fills the cache; keep only the prefix's keys/values
                    hf: Any = lm.model  # a transformers model with a config
                    cache = DynamicCache(config=hf.config)
                    logits = logits_at(x, am, positions, past_key_values=cache, use_cache=True)
                    cache.crop(keep_len - cache.get_seq_length())
                else:  # the block and its suffix only, attending to the cached prefix
                    assert cache is not None
                    logits = logits_at(x[:, keep_len:], am, positions - keep_len, past_key_values=cache,
                                       use_cache=True)
                    cache.crop(keep_len - cache.get_seq_length())
                x0 = add_gumbel_noise(logits, temperature, generator).argmax(dim=-1)  # [B, Lb]
                if remasking == "low_confidence":
                    # float64 softmax of the same rows as the reference, so the ranking is identical
                    conf = F.softmax(logits.to(torch.float64), dim=-1).gather(-1, x0.unsqueeze(-1)).squeeze(-1)
                else:
                    # draw over the whole canvas as the reference does, so a shared generator agrees
                    conf = _rand((b, x.shape[1]), torch.float32, dev, generator)[:, start:start + block_length]
                conf = torch.where(masked, conf, torch.full_like(conf, -math.inf))
                k = ntt[:, i:i + 1]  # [B, 1]
                top = conf.topk(k_max[i], dim=1).indices  # [B, k_max]; rows use their first k entries
                keep = torch.arange(k_max[i], device=dev).unsqueeze(0) < k
                transfer = torch.zeros_like(masked).scatter_(1, top, keep)
                block = x[:, start:start + block_length]
                x[:, start:start + block_length] = torch.where(transfer & masked, x0, block)
                bar.update(1)
    bar.close()
    return x[:, p:]
