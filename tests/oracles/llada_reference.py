"""LLaDA's reference diffusion sampler (``generate.py`` of GSAI-ML/LLaDA), line by line: the oracle.

``reference_diffusion_generate`` computes the logits and a softmax (in the logits' dtype, as LLaDA's code)
over the whole vocabulary at every position and selects tokens with a per-row Python top-k loop, as
LLaDA's code does. The tests check that ``layerwise.sampling.diffusion_generate`` gives identical tokens
(the genuine ``generate.py`` itself is compared in tests/test_sampler_reference.py, where the remote code is
available); ``benchmarks/bench_sampling.py`` times both. Additions to LLaDA's code: a left-padding attention
mask, a ``torch.Generator``, Dream's shifted-logit alignment, ``use_cache=False``, and ``confidence_dtype``
(the sampler's float64-ranking option).
"""

# ruff: noqa: E501  (kept line for line as LLaDA wrote it)
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def add_gumbel_noise(logits, temperature, generator=None):
    # as LLaDA: float64 Gumbel-max, identity at temperature 0
    if temperature == 0:
        return logits
    logits = logits.to(torch.float64)
    where = generator.device if generator is not None else logits.device  # CPU generators drive GPU runs
    noise = torch.rand(logits.shape, dtype=torch.float64, device=where, generator=generator).to(logits.device)
    gumbel_noise = (-torch.log(noise)) ** temperature
    return logits.exp() / gumbel_noise


def get_num_transfer_tokens(mask_index, steps):
    mask_num = mask_index.sum(dim=1, keepdim=True)
    base = mask_num // steps
    remainder = mask_num % steps
    num_transfer_tokens = torch.zeros(mask_num.size(0), steps, device=mask_index.device, dtype=torch.int64) + base
    for i in range(mask_num.size(0)):
        num_transfer_tokens[i, :remainder[i]] += 1
    return num_transfer_tokens


@torch.no_grad()
def reference_diffusion_generate(model, prompt, attention_mask=None, *, steps, gen_length, block_length,
                                 temperature=0.0, remasking="low_confidence", mask_id, shifted=False,
                                 generator=None, confidence_dtype=None):
    """LLaDA's generate.py, plus: a left-padding attention mask, a torch.Generator, Dream's shifted-logit
    alignment, use_cache=False and confidence_dtype (None: the logits' dtype, as LLaDA). Returns
    ``[B, gen_length]`` (LLaDA returns the whole canvas)."""
    x = torch.full((prompt.shape[0], prompt.shape[1] + gen_length), mask_id, dtype=torch.long).to(prompt.device)
    x[:, :prompt.shape[1]] = prompt.clone()
    if attention_mask is not None:
        attention_mask = torch.cat([attention_mask, torch.ones(prompt.shape[0], gen_length, dtype=attention_mask.dtype,
                                                               device=attention_mask.device)], dim=1)
        if bool(attention_mask.bool().all()):  # same convention as the fast sampler: no mask when no padding
            attention_mask = None

    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    steps = steps // num_blocks

    for num_block in range(num_blocks):
        block_mask_index = (x[:, prompt.shape[1] + num_block * block_length: prompt.shape[1] + (num_block + 1) * block_length] == mask_id)
        num_transfer_tokens = get_num_transfer_tokens(block_mask_index, steps)
        for i in range(steps):
            mask_index = (x == mask_id)
            logits = model(x, attention_mask=attention_mask, use_cache=False).logits
            if shifted:
                logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
            logits_with_noise = add_gumbel_noise(logits, temperature=temperature, generator=generator)
            x0 = torch.argmax(logits_with_noise, dim=-1)  # b, l

            if remasking == "low_confidence":
                p = F.softmax(logits if confidence_dtype is None else logits.to(confidence_dtype), dim=-1)
                x0_p = torch.squeeze(torch.gather(p, dim=-1, index=torch.unsqueeze(x0, -1)), -1)  # b, l
            elif remasking == "random":
                x0_p = torch.rand((x0.shape[0], x0.shape[1]), device=generator.device if generator is not None else x0.device,
                                  generator=generator).to(x0.device)
            else:
                raise NotImplementedError(remasking)

            x0_p[:, prompt.shape[1] + (num_block + 1) * block_length:] = -math.inf

            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, -math.inf)

            transfer_index = torch.zeros_like(x0, dtype=torch.bool, device=x0.device)
            for j in range(confidence.shape[0]):
                _, select_index = torch.topk(confidence[j], k=int(num_transfer_tokens[j, i]))
                transfer_index[j, select_index] = True
            x[transfer_index] = x0[transfer_index]

    return x[:, prompt.shape[1]:]
