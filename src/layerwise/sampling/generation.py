"""Autoregressive generation, and text in / text out for both families."""

from __future__ import annotations

from typing import Any

import torch
from tqdm.auto import tqdm

from ..config import LayerwiseError
from ..diffusion import Family
from ..models import LoadedModel
from .diffusion_sampler import diffusion_generate
from .dream_sampler import DREAM_ALGS, dream_generate


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
        hf: Any = lm.model  # a transformers model: generate() is not on nn.Module's type
        out = hf.generate(input_ids=ids, attention_mask=am, **kw)
    new = out[:, ids.shape[1]:]
    if new.shape[1] < max_new_tokens:  # every row stopped at EOS before the budget
        fill = torch.full((new.shape[0], max_new_tokens - new.shape[1]), pad, dtype=new.dtype, device=new.device)
        new = torch.cat([new, fill], dim=1)
    return new


def _diffusion_defaults(lm: LoadedModel, gen_length: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Sampler settings from ``lm.spec.sampler`` scaled to ``gen_length`` unless given explicitly.

    The default keeps the registry's tokens-per-step ratio; a default block length that does not divide
    ``gen_length`` falls back to one block. Explicit arguments are used as given (and validated).
    Dream's algorithms (``remasking`` in :data:`DREAM_ALGS`) have no blocks; they also take the registry's
    ``top_p``, ``alg_temp`` and ``eps``, and their ``remasking`` is passed as ``alg``.
    """
    d = lm.spec.sampler
    out = dict(kwargs)
    if "alg" in out:  # Dream's name for it
        out["remasking"] = out.pop("alg")
    out.setdefault("remasking", d.remasking)
    if out["remasking"] in DREAM_ALGS:
        block = out.pop("block_length", gen_length)
        if block != gen_length:
            raise LayerwiseError(
                f"block_length={block} with Dream's {out['remasking']!r} algorithm: Dream's sampler has no blocks; "
                f"leave block_length out (or set it to gen_length={gen_length}), or use remasking='low_confidence' "
                "for LLaDA's semi-autoregressive blocks"
            )
        out["alg"] = out.pop("remasking")
        if "steps" not in out:
            out["steps"] = max(1, round(gen_length * d.steps / d.gen_length))
        out.setdefault("temperature", d.temperature)
        for key in ("top_p", "alg_temp", "eps"):
            if key not in out and getattr(d, key) is not None:
                out[key] = getattr(d, key)
        return out
    if "block_length" not in out:
        out["block_length"] = d.block_length if gen_length % d.block_length == 0 else gen_length
    if "steps" not in out:
        nb = gen_length // out["block_length"] if gen_length % out["block_length"] == 0 else 1
        steps = max(1, round(gen_length * d.steps / d.gen_length))
        out["steps"] = max(nb, steps - steps % nb)
    out.setdefault("temperature", d.temperature)
    return out


def generate(lm: LoadedModel, prompts: list[str], *, max_new_tokens: int, batch_size: int = 8,
             until: list[str] | None = None, progress: bool = True, **sampler_kwargs: Any) -> list[str]:
    """Generate a continuation for each prompt (strings in, strings out).

    Tokenizes with left padding, runs :func:`ar_generate` (``ar``) or, for ``dlm``/``ar2dlm``
    (``gen_length = max_new_tokens``, other settings from ``lm.spec.sampler`` unless passed in
    ``sampler_kwargs``), :func:`diffusion_generate` (LLaDA's ``low_confidence`` / ``random`` remasking)
    or :func:`dream_generate` (Dream's ``origin`` / ``maskgit_plus`` / ``topk_margin`` / ``entropy``),
    cuts each output at the first EOS token, decodes, and cuts the text at the first of the ``until``
    strings. LLaDA's sampler runs with ``stop_at_eos=True`` at the tokenizer's EOS unless
    ``stop_at_eos=False`` is passed: it stops once every row's text up to its first EOS is final, which
    leaves the returned texts unchanged.
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
                stop_at_eos = kw.pop("stop_at_eos", None)
                if "alg" in kw:
                    if stop_at_eos:
                        raise LayerwiseError("stop_at_eos=True is for LLaDA's semi-autoregressive sampler; "
                                             "Dream's algorithms run in full: leave stop_at_eos out")
                    new = dream_generate(lm, ids, am, gen_length=max_new_tokens, **kw)
                else:
                    # exact: the text is cut at the first EOS below, and the sampler stops only once
                    # every row's text up to its first EOS is final
                    if eos is not None and stop_at_eos is not False:
                        kw.update(stop_at_eos=True, eos_ids=[eos])
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
