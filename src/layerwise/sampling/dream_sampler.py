"""Masked-diffusion generation with Dream's own algorithms (``generation_utils.py``: ``diffusion_generate``).

Dream (Dream-org/Dream-v0-Base-7B, -Instruct-7B) samples without blocks: the whole ``gen_length`` canvas
is masked, ``steps`` timesteps go linearly from 1 down to ``eps``, and each step either unmasks each
masked position with probability ``1 - s / t`` (``"origin"``), or unmasks the ``int(masked * (1 - s / t))``
positions ranked first by a confidence (``"maskgit_plus"``: the sampled token's probability;
``"topk_margin"``: top-1 minus top-2 probability; ``"entropy"``: the negative entropy). ``alg_temp > 0``
draws those positions from a softmax of the confidences instead of taking the top ones. Tokens come
from the logits divided by ``temperature``, cut by ``top_p`` (nucleus) and ``top_k``, then sampled
(temperature > 0) or argmax'd.

:func:`dream_generate` follows Dream's ``_sample`` operation by operation (the same tensors, dtypes,
ops and random draws in the same order), on any diffusion model of the library: it reads aligned logits
(Dream's are shifted, :func:`layerwise.diffusion.align_logits`). For a Dream model with left padding it
passes Dream's own position ids (real tokens numbered from 0) and its 4D attention mask, as Dream does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import distributions as dists
from tqdm.auto import tqdm

from ..config import LayerwiseError
from ..diffusion import align_logits
from ..models import LoadedModel
from .common import _check_prompt, _mask_id, _model_logits

#: Dream's unmasking algorithms (``alg`` of its ``diffusion_generate``)
DREAM_ALGS = ("origin", "maskgit_plus", "topk_margin", "entropy")


def top_p_logits(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus cut as Dream's ``top_p_logits``: keep the most probable tokens up to cumulative
    probability ``top_p`` (and always the first); the others get the dtype's lowest value. ``[N, V]``."""
    sorted_logits, sorted_indices = torch.sort(logits, descending=True)
    cumulative_probs = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
    remove = cumulative_probs > top_p
    remove[..., 1:] = remove[..., :-1].clone()  # shift right: keep the first token above the threshold
    remove[..., 0] = 0
    mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, sorted_indices, remove)
    return logits.masked_fill(mask, torch.finfo(logits.dtype).min)


def top_k_logits(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the ``top_k`` largest logits (ties with the k-th kept), as Dream's ``top_k_logits``."""
    top_k = min(top_k, logits.size(-1))
    remove = logits < torch.topk(logits, top_k)[0][..., -1, None]
    return logits.masked_fill(remove, torch.finfo(logits.dtype).min)


def _categorical(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor | None:
    """``torch.distributions.Categorical(probs).sample()`` (its argument check included), drawn from
    ``generator`` when given; None where Dream's ``try`` would fail (then it takes the argmax)."""
    try:
        dist = dists.Categorical(probs=probs)
        if generator is None:
            return dist.sample()
        flat = dist.probs.reshape(-1, probs.shape[-1])
        where = generator.device
        draw = torch.multinomial(flat.to(where), 1, True, generator=generator).to(probs.device)
        return draw.T.reshape(dist.batch_shape)
    except Exception:  # Dream: a bare except around the sampling (e.g. probabilities that do not sum to 1)
        return None


def sample_tokens(logits: torch.Tensor, temperature: float = 0.0, top_p: float | None = None,
                  top_k: int | None = None, margin_confidence: bool = False, neg_entropy: bool = False,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Dream's ``sample_tokens``: ``(confidence [N], tokens [N])`` from logits ``[N, V]``.

    Softmax in the logits' dtype; temperature > 0 samples (``Categorical``, falling back to the argmax
    when its check fails, as Dream), 0 takes the argmax. The confidence is the token's probability,
    or top-1 minus top-2 probability (``margin_confidence``), or the negative entropy (``neg_entropy``).
    """
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        logits = top_p_logits(logits, top_p)
    if top_k is not None:
        logits = top_k_logits(logits, top_k)
    probs = torch.softmax(logits, dim=-1)
    x0 = _categorical(probs, generator) if temperature > 0 else None
    if x0 is None:
        confidence, x0 = probs.max(dim=-1)
    else:
        confidence = torch.gather(probs, -1, x0.unsqueeze(-1)).squeeze(-1)
    if margin_confidence:
        sorted_probs, _ = torch.sort(probs, dim=-1, descending=True)
        confidence = sorted_probs[:, 0] - sorted_probs[:, 1]
    if neg_entropy:
        confidence = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
    return confidence, x0


def _check_dream_args(gen_length: int, steps: int, alg: str, temperature: float, top_p: float | None,
                      top_k: int | None, alg_temp: float | None, eps: float) -> None:
    if gen_length < 1 or steps < 1:
        raise LayerwiseError(f"gen_length={gen_length} and steps={steps} must both be >= 1")
    if alg not in DREAM_ALGS:
        raise LayerwiseError(f"unknown Dream alg {alg!r}: use one of {DREAM_ALGS} (LLaDA's low_confidence / "
                             "random remasking runs in layerwise.sampling.diffusion_generate)")
    if temperature < 0:
        raise LayerwiseError(f"temperature={temperature} must be >= 0 (0 = greedy)")
    if top_p is not None and not 0 < top_p <= 1:
        raise LayerwiseError(f"top_p={top_p} must be in (0, 1] (None: no nucleus cut)")
    if top_k is not None and top_k < 1:
        raise LayerwiseError(f"top_k={top_k} must be >= 1 (None: no cut)")
    if alg_temp is not None and alg_temp < 0:
        raise LayerwiseError(f"alg_temp={alg_temp} must be >= 0 (None or 0: take the top positions)")
    if not 0 < eps < 1:
        raise LayerwiseError(f"eps={eps} must be in (0, 1): Dream's last timestep (default 1e-3)")


def _dream_forward(lm: LoadedModel, attention_mask: torch.Tensor | None,
                   gen_length: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model call of Dream's ``_sample`` for this batch: ``x [B, N] -> aligned logits [B, N, V]``.

    Left padding (a 0 in ``attention_mask``): the mask is extended with ones over the generation; a Dream
    model gets Dream's position ids (``cumsum - 1``, padding at 1) and its 4D mask (query and key both
    real); other models get the 2D mask through their adapter.
    """
    dev = lm.device
    if attention_mask is None or not bool((attention_mask == 0).any()):
        return lambda x: align_logits(_model_logits(lm, x, None), lm.family)
    am = F.pad(attention_mask.to(dev), (0, gen_length), value=1.0)
    if lm.adapter.name != "dream":
        return lambda x: align_logits(_model_logits(lm, x, am), lm.family)
    tok_idx = am.long().cumsum(-1) - 1
    tok_idx.masked_fill_(am == 0, 1)
    mask4d = torch.logical_and(am.unsqueeze(1).unsqueeze(-2), am.unsqueeze(1).unsqueeze(-1))
    return lambda x: align_logits(lm.model(x, mask4d, tok_idx).logits, lm.family)


@torch.no_grad()
def dream_generate(lm: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                   gen_length: int, steps: int = 512, alg: str = "origin", temperature: float = 0.0,
                   top_p: float | None = None, top_k: int | None = None, alg_temp: float | None = None,
                   eps: float = 1e-3, generator: torch.Generator | None = None,
                   progress: bool = False) -> torch.Tensor:
    """Masked-diffusion generation with Dream's ``diffusion_generate`` (its ``_sample`` loop).

    Args:
        input_ids: ``[B, P]`` prompt ids, left-padded when the prompts differ in length.
        attention_mask: ``[B, P]`` 1 for real tokens, 0 for padding (None: no padding).
        gen_length: tokens to generate (Dream's ``max_new_tokens``); no blocks.
        steps: denoising steps (Dream's default 512); timesteps ``linspace(1, eps, steps + 1)``.
        alg: ``"origin"`` (Dream's default), ``"maskgit_plus"``, ``"topk_margin"`` or ``"entropy"``.
        temperature, top_p, top_k: token sampling (Dream's defaults: 0 = argmax, no cuts).
        alg_temp: None or 0 (default): unmask the top-confidence positions; > 0: draw them from
            ``softmax(confidence / alg_temp)``.
        eps: the last timestep (Dream's default 1e-3).
        generator: source of randomness. None: the global RNG, drawn in Dream's order and shapes, so
            ``torch.manual_seed(s)`` before either gives the same tokens as Dream's own
            ``diffusion_generate``.
        progress: show a progress bar over steps.

    Returns:
        ``[B, gen_length]`` generated ids.

    The tokens equal those of Dream's ``model.diffusion_generate(input_ids, attention_mask=...,
    max_new_tokens=gen_length, steps=..., alg=..., ...)`` at the same batch shape: same canvas, same
    model call, same ops in the same dtypes (softmax in the logits' dtype, ``torch.topk`` over the
    full-length confidence rows) and the same random draws.
    """
    _check_dream_args(gen_length, steps, alg, temperature, top_p, top_k, alg_temp, eps)
    mid = _mask_id(lm)
    _check_prompt(input_ids, mid)
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise LayerwiseError(f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids "
                             f"{tuple(input_ids.shape)}: pass the tokenizer's mask for the same batch")
    dev = lm.device
    b, p = input_ids.shape
    x = F.pad(input_ids.to(dev), (0, gen_length), value=mid)
    forward = _dream_forward(lm, attention_mask, gen_length)
    timesteps = torch.linspace(1, eps, steps + 1, device=dev)
    rand_on = generator.device if generator is not None else dev
    for i in tqdm(range(steps), desc="dream sampling", disable=not progress, leave=False):
        mask_index = x == mid
        logits = forward(x)
        mask_logits = logits[mask_index]  # [masked positions of the whole batch, V]
        t, s = timesteps[i], timesteps[i + 1]
        if alg == "origin":
            p_transfer = 1 - s / t if i < steps - 1 else 1
            x0 = torch.zeros_like(x[mask_index], dtype=torch.long) + mid
            transfer = torch.rand(*x0.shape, device=rand_on, generator=generator).to(dev) < p_transfer
            _, x0[transfer] = sample_tokens(mask_logits[transfer], temperature, top_p, top_k, generator=generator)
            x[mask_index] = x0.clone()
            continue
        confidence, x0 = sample_tokens(mask_logits, temperature, top_p, top_k, margin_confidence=alg == "topk_margin",
                                       neg_entropy=alg == "entropy", generator=generator)
        num_mask_token = mask_index.sum() / mask_index.shape[0]
        n = int(num_mask_token * (1 - s / t)) if i < steps - 1 else int(num_mask_token)
        full_confidence = torch.full_like(x, -torch.inf, dtype=logits.dtype)
        full_confidence[mask_index] = confidence
        if n > 0:
            if alg_temp is None or alg_temp == 0:
                _, transfer_index = torch.topk(full_confidence, n)
            else:
                weights = F.softmax(full_confidence / alg_temp, dim=-1)
                transfer_index = torch.multinomial(weights.to(rand_on), num_samples=n,
                                                   generator=generator).to(dev)
            x_ = torch.zeros_like(x) + mid
            x_[mask_index] = x0.clone()
            row_indices = torch.arange(b, device=dev).unsqueeze(1).expand_as(transfer_index)
            x[row_indices, transfer_index] = x_[row_indices, transfer_index]
    return x[:, p:]
