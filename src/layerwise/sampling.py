"""Generation and likelihoods for autoregressive and masked-diffusion language models.

Two model families are driven here (see :class:`layerwise.models.Family`):

- ``ar``: causal next-token models. Generation goes through transformers' ``generate``; the
  log-likelihood of a continuation is exact (one forward pass).
- ``dlm`` / ``ar2dlm``: masked-diffusion models (LLaDA, Dream). Generation follows LLaDA's
  ``generate.py`` (semi-autoregressive blocks, a fixed number of tokens unmasked per step, low-confidence
  or random remasking, Gumbel-max temperature in float64). The log-likelihood is LLaDA's Monte-Carlo
  estimate of the ELBO (``eval_llada.py``): only the continuation is masked, the masked fraction is
  sampled, and the cross-entropy on masked tokens is divided by the masked fraction.

Shifted logits: ``ar2dlm`` models (Dream) keep the AR convention that the logits at position ``i``
predict token ``i + 1``; they are aligned with ``cat([l[:, :1], l[:, :-1]], 1)`` so that aligned
position ``i`` predicts token ``i`` (position 0 keeps its own logits, Dream's convention).

Speed (:func:`diffusion_generate` versus LLaDA's reference loop): the model still sees the whole
sequence every step (its bidirectional attention needs it), but the LM head, the argmax and the
float64 confidence are computed only on the current block (``block_length`` positions instead of
prompt + generation), through a reversible pre-hook on ``adapter.get_lm_head``; top-k is vectorised
over the batch. These changes keep the tokens identical to the reference at temperature 0 because every
kept number is computed by the same kernels on the same rows. ``benchmarks/bench_sampling.py``
measures it.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .config import LayerwiseError
from .models import Family, LoadedModel

REMASKING = ("low_confidence", "random")

__all__ = [
    "ar_generate", "diffusion_generate", "generate", "ar_loglikelihood", "diffusion_loglikelihood",
    "loglikelihood", "rolling_loglikelihood", "num_transfer_tokens", "add_gumbel_noise",
    "align_logits", "sliced_lm_head",
]


# ---------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------


def mask_token_id(lm: LoadedModel) -> int:
    """The mask token id of a diffusion model, or an error naming how to provide one."""
    mid = lm.spec.mask_token_id
    if mid is None:
        raise LayerwiseError(
            f"model {lm.spec.model_id!r} has no mask token id, which diffusion sampling and likelihoods "
            "need: wrap it with layerwise.models.wrap(..., mask_token_id=ID), or give its tokenizer a "
            "mask_token (e.g. '<|mask|>')"
        )
    return int(mid)


def align_logits(logits: torch.Tensor, shifted: bool) -> torch.Tensor:
    """Make aligned position ``i`` predict token ``i``.

    ``logits``: ``[B, L, V]``. For shifted models (position i predicts i + 1) returns
    ``cat([l[:, :1], l[:, :-1]], 1)`` (Dream's convention); otherwise ``logits`` unchanged.
    """
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1) if shifted else logits


def _raw_positions(positions: torch.Tensor, shifted: bool) -> torch.Tensor:
    """Raw logit positions that give the aligned logits at ``positions`` (1D long tensor)."""
    return (positions - 1).clamp_min(0) if shifted else positions


def _none_if_full(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Drop an all-ones attention mask: attention is then unmasked and SDPA may use its fastest
    kernel (transformers skips such masks too; doing it here makes both samplers see the same)."""
    if attention_mask is None or bool(attention_mask.bool().all()):
        return None
    return attention_mask


def _model_logits(lm: LoadedModel, ids: torch.Tensor, attention_mask: torch.Tensor | None,
                  **kw: Any) -> torch.Tensor:
    """Logits ``[B, T, V]`` through the adapter (``lm.logits`` hides each architecture's mask and cache
    conventions); with ``kw`` (a KV cache for the opt-in prefix cache) the model is called directly."""
    if not kw:
        return lm.logits(ids, attention_mask)
    kw.setdefault("use_cache", False)
    return lm.model(input_ids=ids, attention_mask=attention_mask, **kw).logits


@contextlib.contextmanager
def sliced_lm_head(lm: LoadedModel) -> Iterator[Any]:
    """Reversibly make the LM head run only on chosen sequence positions.

    Yields a function ``logits_at(ids [B, L], attention_mask, positions [K], **model_kwargs) -> [B, K, V]``
    that runs the model on ``ids`` but feeds the LM head only ``hidden[:, positions]`` (a forward pre-hook on
    ``adapter.get_lm_head``). Models whose head is not called as a module (tied weights used through
    ``F.linear``) still work: the full logits are then sliced afterwards.
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
        state["pos"] = positions
        try:
            logits = _model_logits(lm, ids, attention_mask, **kw)
        finally:
            state["pos"] = None
        if logits.shape[1] != positions.numel():  # the head bypassed the hook: slice afterwards
            logits = logits.index_select(1, positions)
        return logits

    try:
        yield logits_at
    finally:
        handle.remove()


# ---------------------------------------------------------------------------------------------
# Diffusion sampling (LLaDA generate.py semantics)
# ---------------------------------------------------------------------------------------------


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
    mid = mask_token_id(lm)
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
    shifted = lm.family.shifted_logits
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
            positions = torch.arange(start, start + block_length, device=dev)
            raw_pos = _raw_positions(positions, shifted)
            # one host sync per block: the per-step k is needed as a Python int by topk
            ntt = num_transfer_tokens(x[:, start:start + block_length] == mid, spb)
            k_max = ntt.max(dim=0).values.tolist()
            keep_len = int(raw_pos[0])  # cached prefix length: everything before the first raw position
            cache = None
            for i in range(spb):
                masked = x[:, start:start + block_length] == mid  # [B, Lb]
                if not prefix_cache:
                    logits = logits_at(x, am, raw_pos)  # [B, Lb, V], aligned to the block
                elif i == 0:  # full pass that also fills the cache; keep only the prefix's keys/values
                    cache = DynamicCache(config=lm.model.config)
                    logits = logits_at(x, am, raw_pos, past_key_values=cache, use_cache=True)
                    cache.crop(keep_len - cache.get_seq_length())
                else:  # the block and its suffix only, attending to the cached prefix
                    logits = logits_at(x[:, keep_len:], am, raw_pos - keep_len, past_key_values=cache,
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


# ---------------------------------------------------------------------------------------------
# AR generation
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def ar_generate(lm: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, *,
                max_new_tokens: int, temperature: float = 0.0, eos_token_id: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Greedy (temperature 0) or temperature sampling through transformers' ``generate``.

    ``input_ids``/``attention_mask``: ``[B, P]``, left-padded. Returns ``[B, max_new_tokens]``; rows that
    stop early at ``eos_token_id`` are filled with it. transformers' sampler draws from the global RNG, so a
    ``generator`` seeds a forked RNG (the generator advances; reruns with the same seed repeat).
    """
    if max_new_tokens < 1:
        raise LayerwiseError(f"max_new_tokens={max_new_tokens} must be >= 1")
    if temperature < 0:
        raise LayerwiseError(f"temperature={temperature} must be >= 0 (0 = greedy)")
    dev = lm.device
    ids = input_ids.to(dev)
    am = attention_mask.to(dev) if attention_mask is not None else torch.ones_like(ids)
    pad = eos_token_id
    if pad is None and lm.tokenizer is not None:
        pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.tokenizer.eos_token_id
    pad = 0 if pad is None else pad
    kw: dict[str, Any] = dict(max_new_tokens=max_new_tokens, eos_token_id=eos_token_id, pad_token_id=pad,
                              use_cache=True)
    if temperature > 0:
        kw.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
    else:
        kw.update(do_sample=False, temperature=None, top_k=None, top_p=None)
    devices = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=generator is not None):
        if generator is not None:
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        out = lm.model.generate(input_ids=ids, attention_mask=am, **kw)
    new = out[:, ids.shape[1]:]
    if new.shape[1] < max_new_tokens:  # every row stopped at EOS before the budget
        fill = torch.full((new.shape[0], max_new_tokens - new.shape[1]), pad, dtype=new.dtype, device=new.device)
        new = torch.cat([new, fill], dim=1)
    return new


# ---------------------------------------------------------------------------------------------
# Text in, text out
# ---------------------------------------------------------------------------------------------


def _diffusion_defaults(lm: LoadedModel, gen_length: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Sampler settings from ``lm.spec.sampler`` scaled to ``gen_length`` unless given explicitly.

    The default keeps the registry's tokens-per-step ratio; a default block length that does not divide
    ``gen_length`` falls back to one block. Explicit arguments are used as given (and validated).
    """
    d = lm.spec.sampler
    out = dict(kwargs)
    if "block_length" not in out:
        out["block_length"] = d.block_length if gen_length % d.block_length == 0 else gen_length
    if "steps" not in out:
        nb = gen_length // out["block_length"] if gen_length % out["block_length"] == 0 else 1
        steps = max(1, round(gen_length * d.steps / d.gen_length))
        out["steps"] = max(nb, steps - steps % nb)
    out.setdefault("temperature", d.temperature)
    out.setdefault("remasking", d.remasking)
    return out


def generate(lm: LoadedModel, prompts: list[str], *, max_new_tokens: int, batch_size: int = 8,
             until: list[str] | None = None, progress: bool = True, **sampler_kwargs: Any) -> list[str]:
    """Generate a continuation for each prompt (strings in, strings out).

    Tokenizes with left padding, runs :func:`ar_generate` (``ar``) or :func:`diffusion_generate`
    (``dlm``/``ar2dlm``, ``gen_length = max_new_tokens``, other settings from ``lm.spec.sampler``
    unless passed in ``sampler_kwargs``), cuts each output at the first EOS token, decodes, and cuts
    the text at the first of the ``until`` strings.
    """
    tok = lm.tokenizer
    if tok is None:
        raise LayerwiseError("generate() needs a tokenizer: load the model with its tokenizer or pass one to wrap()")
    if batch_size < 1:
        raise LayerwiseError(f"batch_size={batch_size} must be >= 1")
    if tok.pad_token_id is None:
        raise LayerwiseError("the tokenizer has no pad token: set tokenizer.pad_token (e.g. to its eos token)")
    eos = tok.eos_token_id
    old_side = tok.padding_side
    tok.padding_side = "left"
    outs: list[str] = []
    try:
        for s in tqdm(range(0, len(prompts), batch_size), desc="generate", disable=not progress, leave=False):
            enc = tok(list(prompts[s:s + batch_size]), return_tensors="pt", padding=True)
            ids, am = enc["input_ids"], enc["attention_mask"]
            if lm.family is Family.AR:
                kw = {k: v for k, v in sampler_kwargs.items() if k in ("temperature", "generator")}
                new = ar_generate(lm, ids, am, max_new_tokens=max_new_tokens, eos_token_id=eos, **kw)
            else:
                kw = _diffusion_defaults(lm, max_new_tokens, sampler_kwargs)
                new = diffusion_generate(lm, ids, am, gen_length=max_new_tokens, **kw)
            for row in new.tolist():
                if eos is not None and eos in row:
                    row = row[:row.index(eos)]
                text = tok.decode(row, skip_special_tokens=True)
                for stop in until or []:
                    if stop and stop in text:
                        text = text[:text.index(stop)]
                outs.append(text)
    finally:
        tok.padding_side = old_side
    return outs


# ---------------------------------------------------------------------------------------------
# Likelihoods
# ---------------------------------------------------------------------------------------------


def _check_pairs(context_ids: Sequence[Sequence[int]], continuation_ids: Sequence[Sequence[int]]) -> None:
    if len(context_ids) != len(continuation_ids):
        raise LayerwiseError(
            f"{len(context_ids)} contexts but {len(continuation_ids)} continuations: pass one context per continuation"
        )
    for i, c in enumerate(continuation_ids):
        if len(c) == 0:
            raise LayerwiseError(f"continuation {i} is empty: every request needs at least one token to score")


@torch.no_grad()
def ar_loglikelihood(lm: LoadedModel, context_ids: Sequence[Sequence[int]],
                     continuation_ids: Sequence[Sequence[int]], *, batch_size: int = 16,
                     progress: bool = False) -> list[tuple[float, bool]]:
    """Exact ``sum_t log p(cont_t | ctx, cont_<t)`` and whether greedy decoding reproduces ``cont``.

    Requests are batched with right padding (harmless for a causal model); the log-softmax is taken in
    float32 on the continuation positions only. Contexts must be non-empty (prepend a BOS/EOS token, as
    lm-eval does, to score a text from its first token).
    """
    _check_pairs(context_ids, continuation_ids)
    for i, c in enumerate(context_ids):
        if len(c) == 0:
            raise LayerwiseError(
                f"context {i} is empty: an AR model cannot score the first token; prepend the tokenizer's "
                "BOS or EOS id to the context"
            )
    dev = lm.device
    results: list[tuple[float, bool]] = []
    order = range(0, len(context_ids), batch_size)
    for s in tqdm(order, desc="AR log-likelihood", disable=not progress, leave=False):
        ctxs, conts = context_ids[s:s + batch_size], continuation_ids[s:s + batch_size]
        seqs = [list(a) + list(c) for a, c in zip(ctxs, conts)]
        inputs = [q[:-1] for q in seqs]  # the last token is only predicted, never an input
        width = max(len(q) for q in inputs)
        ids = torch.zeros(len(inputs), width, dtype=torch.long)
        am = torch.zeros(len(inputs), width, dtype=torch.long)
        for r, q in enumerate(inputs):
            ids[r, :len(q)] = torch.tensor(q)
            am[r, :len(q)] = 1
        logits = _model_logits(lm, ids.to(dev), _none_if_full(am.to(dev)))
        for r, (a, c) in enumerate(zip(ctxs, conts)):
            lp = F.log_softmax(logits[r, len(a) - 1:len(a) - 1 + len(c)].float(), dim=-1)  # [T, V]
            tgt = torch.tensor(list(c), device=dev)
            results.append((float(lp.gather(-1, tgt[:, None]).sum()), bool((lp.argmax(-1) == tgt).all())))
    return results


def _stratified_masks(n: int, length: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks for ``n`` Monte-Carlo samples over ``length`` continuation tokens (eval_llada's forward process).

    The numbers of masked tokens are stratified over the batch (evenly spaced from a random start, wrapped
    to 1..length), which lowers the variance against i.i.d. masked fractions; which tokens are masked is a
    uniform random subset per row. Returns ``is_mask [n, length]`` bool and ``p_mask [n]`` (the masked
    fraction, the ELBO's 1/t weight).
    """
    k0 = int(torch.randint(1, length + 1, (), generator=generator))
    counts = torch.round(torch.linspace(float(k0), k0 + (n - 1) * (length / n), steps=n)).long()
    counts = (counts - 1) % length + 1
    perm = torch.rand(n, length, generator=generator).argsort(dim=1)
    rank_masked = torch.arange(length).unsqueeze(0) < counts.unsqueeze(1)
    is_mask = torch.zeros(n, length, dtype=torch.bool).scatter_(1, perm, rank_masked)
    return is_mask, counts.float() / length


@torch.no_grad()
def diffusion_loglikelihood(lm: LoadedModel, context_ids: Sequence[Sequence[int]],
                            continuation_ids: Sequence[Sequence[int]], *, n_samples: int = 128,
                            batch_size: int = 32, seed: int = 0, progress: bool = False) -> list[float]:
    """LLaDA's Monte-Carlo estimate of ``log p(cont | ctx)`` (a lower bound: the ELBO).

    For each request, ``n_samples`` noisy copies mask a sampled fraction ``t`` of the continuation only;
    the estimate is ``-mean over copies of sum_masked CE / t``. Logits are aligned for shifted-logit
    models. The randomness restarts from ``seed`` for every request, so continuations of one context are
    compared under the same masks (common random numbers) and the value of a request does not depend on
    its neighbours. The LM head runs on the continuation positions only.
    """
    _check_pairs(context_ids, continuation_ids)
    if n_samples < 1 or batch_size < 1:
        raise LayerwiseError(f"n_samples={n_samples} and batch_size={batch_size} must be >= 1")
    mid = mask_token_id(lm)
    dev = lm.device
    shifted = lm.family.shifted_logits
    out: list[float] = []
    with sliced_lm_head(lm) as logits_at:
        pairs = list(zip(context_ids, continuation_ids))
        for ctx, cont in tqdm(pairs, desc="diffusion log-likelihood", disable=not progress, leave=False):
            gen = torch.Generator().manual_seed(seed)  # CPU: the same masks on any device
            p, t = len(ctx), len(cont)
            seq = torch.tensor(list(ctx) + list(cont), dtype=torch.long, device=dev)
            target = seq[p:]
            raw_pos = _raw_positions(torch.arange(p, p + t, device=dev), shifted)
            total = 0.0
            for s in range(0, n_samples, batch_size):
                n = min(batch_size, n_samples - s)
                is_mask, p_mask = _stratified_masks(n, t, gen)
                is_mask, p_mask = is_mask.to(dev), p_mask.to(dev)
                noisy = seq.repeat(n, 1)
                noisy[:, p:] = torch.where(is_mask, mid, target)
                logits = logits_at(noisy, None, raw_pos)  # [n, T, V]
                ce = F.cross_entropy(logits.float().transpose(1, 2), target.expand(n, t), reduction="none")
                total += float(((ce * is_mask) / p_mask[:, None]).sum())
            out.append(-total / n_samples)
    return out


@torch.no_grad()
def _diffusion_is_greedy(lm: LoadedModel, ctx: Sequence[int], cont: Sequence[int]) -> bool:
    """Whether one step on the fully masked continuation predicts it exactly (argmax at every position)."""
    mid = mask_token_id(lm)
    dev = lm.device
    seq = torch.tensor([list(ctx) + [mid] * len(cont)], dtype=torch.long, device=dev)
    pos = _raw_positions(torch.arange(len(ctx), len(ctx) + len(cont), device=dev), lm.family.shifted_logits)
    with sliced_lm_head(lm) as logits_at:
        pred = logits_at(seq, None, pos)[0].argmax(-1)
    return bool((pred == torch.tensor(list(cont), device=dev)).all())


def loglikelihood(lm: LoadedModel, context_ids: Sequence[Sequence[int]],
                  continuation_ids: Sequence[Sequence[int]], **kw: Any) -> list[tuple[float, bool]]:
    """``(log p(cont | ctx), is_greedy)`` per request, dispatched on ``lm.family``.

    ``ar``: exact (:func:`ar_loglikelihood`). Diffusion: the Monte-Carlo ELBO
    (:func:`diffusion_loglikelihood`, keyword arguments passed on), and ``is_greedy`` is whether one
    denoising step from the fully masked continuation predicts every token of it.
    """
    if lm.family is Family.AR:
        return ar_loglikelihood(lm, context_ids, continuation_ids, **kw)
    lls = diffusion_loglikelihood(lm, context_ids, continuation_ids, **kw)
    return [(ll, _diffusion_is_greedy(lm, a, c)) for ll, a, c in zip(lls, context_ids, continuation_ids)]


def rolling_loglikelihood(lm: LoadedModel, token_ids: Sequence[int], *, max_length: int,
                          n_samples: int = 128, prefix_token_id: int | None = None, **kw: Any) -> float:
    """Log-likelihood of a whole document, in windows of at most ``max_length`` tokens.

    Windows are lm-eval's (``get_rolling_token_windows`` with context 1, made disjoint): each token is
    scored once, conditioned on up to ``max_length`` preceding tokens, the first on ``prefix_token_id``
    (default: the tokenizer's BOS, else EOS). AR sums exact log-likelihoods; diffusion sums the ELBO of
    each window (``n_samples`` Monte-Carlo samples each), a lower bound.
    """
    try:
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
    except ImportError as e:  # pragma: no cover - lm-eval is an optional extra
        raise LayerwiseError("rolling_loglikelihood uses lm-eval's windows: pip install 'layerwise[eval]'") from e
    if max_length < 1:
        raise LayerwiseError(f"max_length={max_length} must be >= 1")
    if prefix_token_id is None:
        tok = lm.tokenizer
        prefix_token_id = None if tok is None else (tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id)
    if prefix_token_id is None:
        raise LayerwiseError("no prefix token: pass prefix_token_id=... (the tokenizer has no BOS or EOS token)")
    windows = [make_disjoint_window(w) for w in
               get_rolling_token_windows(list(token_ids), prefix_token_id, max_length, 1)]
    if not windows:
        return 0.0
    ctxs, conts = [w[0] for w in windows], [w[1] for w in windows]
    if lm.family is Family.AR:
        return sum(ll for ll, _ in ar_loglikelihood(lm, ctxs, conts, **kw))
    return sum(diffusion_loglikelihood(lm, ctxs, conts, n_samples=n_samples, **kw))
