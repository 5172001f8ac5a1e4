"""Masked-diffusion conventions, in one place.

Every module that masks tokens, looks up a mask token, or aligns a model's logits with the tokens
they predict calls this module: training (the diffusion losses), sampling, probes (masked inputs),
compression (diffusion-aware calibration) and evaluation (Monte-Carlo likelihoods).

- :class:`Family`: what a model's logits mean (causal next-token, masked diffusion predicting the
  token at its own position, or AR-initialised diffusion that keeps the AR shift, as Dream does).
- :class:`Objective`: the triplet's training objectives (``ar``, ``dlm``, ``ar2dlm``); each trains a
  model of the family of the same name.
- Mask token: :func:`mask_token_id` (a model's or a tokenizer's, or an error naming the fix),
  :func:`find_mask_token_id` (the same without the error), :func:`requires_mask_token` (for
  operations that exist only for diffusion models).
- Forward masking processes (all drawn from a ``torch.Generator``, on the generator's device so that a
  CPU generator gives the same masks for a model on any device):

  * :func:`sample_t` + :func:`mask_tokens`: LLaDA's process, ``t ~ U(eps, 1)`` per sequence and each
    token masked independently with probability ``t`` (training, diffusion-aware calibration);
  * :func:`mask_fraction`: exactly ``round(ratio * n)`` tokens per sequence (probes' masked inputs);
  * :func:`stratified_mask`: numbers of masked continuation tokens stratified over a batch of
    Monte-Carlo samples (LLaDA's likelihood estimate, ``eval_llada.py``).

- Logit alignment: shifted families (``ar``, ``ar2dlm``) have the logits at position ``i`` predict
  token ``i + 1``. :func:`align_logits` makes aligned position ``i`` predict token ``i`` with
  ``cat([l[:, :1], l[:, :-1]], 1)`` (position 0 keeps its own logits, Dream's convention);
  :func:`logit_positions` gives the raw positions behind aligned ones (to run an LM head on a few
  positions only); :func:`prediction_pairs` gives the (logits, target) pairs of a loss.
"""

from __future__ import annotations

import enum
from typing import Any

import torch

from .config import LayerwiseError

#: the mask token the project's tokenizers carry (``layerwise.data.train_tokenizer``)
MASK_TOKEN = "<|mask|>"


class Family(str, enum.Enum):
    """Training objective family of a model."""

    AR = "ar"  #: causal, next-token prediction (Qwen2.5, Llama-3.1, triplet `ar`)
    DLM = "dlm"  #: masked diffusion, bidirectional, position i predicts token i (LLaDA, triplet `dlm`)
    AR2DLM = "ar2dlm"  #: AR-initialised diffusion, position i predicts token i+1 (Dream, triplet `ar2dlm`)

    @classmethod
    def _missing_(cls, value: object) -> Family:
        raise LayerwiseError(f"unknown family {value!r}: use one of {tuple(f.value for f in cls)}")

    @property
    def is_diffusion(self) -> bool:
        return self is not Family.AR

    @property
    def shifted_logits(self) -> bool:
        """True when logits at position i predict token i+1 (AR and Dream-style diffusion)."""
        return self is not Family.DLM


class Objective(str, enum.Enum):
    """A training objective of the triplet; prints as its plain name (``f"{o}"`` is ``"dlm"``).

    ``ar``: next-token cross-entropy, causal attention. ``dlm``: LLaDA's masked-diffusion loss,
    bidirectional. ``ar2dlm``: the diffusion loss in Dream's shifted form, starting from an ``ar``
    snapshot. Plain strings are accepted wherever an objective is: ``Objective("dlm")`` (a typo is a
    :class:`~layerwise.config.LayerwiseError` naming the valid values).
    """

    AR = "ar"
    DLM = "dlm"
    AR2DLM = "ar2dlm"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def _missing_(cls, value: object) -> Objective:
        raise LayerwiseError(f"unknown objective {value!r}: use one of {tuple(o.value for o in cls)}")

    @property
    def family(self) -> Family:
        """The family of the model this objective trains."""
        return Family(self.value)

    @property
    def is_diffusion(self) -> bool:
        return self.family.is_diffusion

    @property
    def causal(self) -> bool:
        """Whether the model attends causally (only ``ar``)."""
        return self is Objective.AR

    @property
    def shifted_logits(self) -> bool:
        return self.family.shifted_logits


def as_family(family: Family | Objective | str) -> Family:
    """``family`` (a :class:`Family`, an :class:`Objective` or its name) as a :class:`Family`."""
    if isinstance(family, Family):
        return family
    return Family(family.value if isinstance(family, Objective) else family)


# ---------------------------------------------------------------------------------------------
# Mask token
# ---------------------------------------------------------------------------------------------


def find_mask_token_id(*sources: Any) -> int | None:
    """The first mask token id found among ``sources``, else None.

    A source is a loaded model (its ``spec.mask_token_id``), a ``ModelSpec``, a tokenizer (its
    ``mask_token_id``), an int, or None (skipped); e.g. ``find_mask_token_id(explicit_id, tokenizer)``.
    """
    for src in sources:
        if src is None:
            continue
        if isinstance(src, int):
            return src
        spec = getattr(src, "spec", None)
        mid = getattr(spec, "mask_token_id", None) if spec is not None else getattr(src, "mask_token_id", None)
        if mid is not None:
            return int(mid)
    return None


def mask_token_id(source: Any, *, purpose: str = "masked diffusion", alternative: str | None = None) -> int:
    """The mask token id of a loaded model or a tokenizer, or an error naming how to provide one.

    ``purpose`` names what needs it (in the error); ``alternative`` is offered as the other fix
    (e.g. ``"objective='ar'"``).
    """
    mid = find_mask_token_id(source)
    if mid is not None:
        return mid
    spec = getattr(source, "spec", None)
    if spec is not None:
        fix = ("wrap it with layerwise.models.wrap(..., mask_token_id=ID), or give its tokenizer a mask_token "
               f"(e.g. {MASK_TOKEN!r})")
        what = f"model {spec.model_id!r} has no mask_token_id"
    else:
        fix = f"add {MASK_TOKEN!r} as its mask_token (layerwise.data.train_tokenizer does)"
        what = "the tokenizer has no mask token"
    raise LayerwiseError(f"{purpose} needs a mask token, but {what}: {fix}"
                         + (f", or use {alternative}" if alternative else ""))


def requires_mask_token(lm: Any, *, purpose: str, alternative: str) -> int:
    """The mask id of ``lm`` for an operation that exists only for masked-diffusion models.

    An autoregressive ``lm`` is an error offering ``alternative`` (e.g. ``"mask_ratio=0"``); a
    diffusion model without a mask id is :func:`mask_token_id`'s error.
    """
    fam = as_family(lm.family)
    if not fam.is_diffusion:
        raise LayerwiseError(f"{purpose} needs a diffusion model with a mask token, but {lm.name} is family "
                             f"{fam.value!r}: use {alternative} for autoregressive models")
    return mask_token_id(lm, purpose=purpose, alternative=alternative)


# ---------------------------------------------------------------------------------------------
# Forward masking processes
# ---------------------------------------------------------------------------------------------


def _uniform(shape: tuple[int, ...], device: torch.device | str | None,
             generator: torch.Generator | None) -> torch.Tensor:
    """U[0, 1) float32 noise drawn on the generator's device (else ``device``), moved to ``device``."""
    where = generator.device if generator is not None else device
    u = torch.rand(shape, device=where, generator=generator)
    return u if device is None else u.to(device)


def sample_t(n: int, *, eps: float = 0.0, generator: torch.Generator | None = None,
             device: torch.device | str | None = None) -> torch.Tensor:
    """LLaDA's per-sequence masking probability ``t = (1 - eps) u + eps``, ``u ~ U[0, 1)``: ``[n, 1]``.

    ``eps`` (LLaDA: 1e-3) keeps ``t`` away from 0, where the loss's ``1/t`` weight explodes.
    """
    u = _uniform((n, 1), device, generator)
    return (1 - eps) * u + eps


def mask_tokens(input_ids: torch.Tensor, t: float | torch.Tensor, mask_id: int, *,
                generator: torch.Generator | None = None,
                maskable: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """LLaDA's forward process: each token replaced by ``mask_id`` independently with probability ``t``.

    ``input_ids``: ``[N, L]``; ``t``: a float or a tensor broadcastable to it (``[N, 1]`` from
    :func:`sample_t`); ``maskable``: bool broadcastable to ``[N, L]``, False where a token must stay
    (padding, the first position of a shifted family: :func:`maskable_positions`). One uniform draw
    per token. Returns ``(noisy_ids, masked)`` (``masked`` bool ``[N, L]``).
    """
    masked = _uniform(tuple(input_ids.shape), input_ids.device, generator) < t
    if maskable is not None:
        masked = masked & maskable.to(masked.device)
    return input_ids.masked_fill(masked, mask_id), masked


def maskable_positions(length: int, family: Family | Objective | str,
                       device: torch.device | str | None = None) -> torch.Tensor | None:
    """Which of ``length`` positions a training loss may mask: all (None) for unshifted families;
    for shifted ones every position but 0, which no logit predicts."""
    if not as_family(family).shifted_logits:
        return None
    keep = torch.ones(length, dtype=torch.bool, device=device)
    keep[0] = False
    return keep


def mask_fraction(input_ids: torch.Tensor, ratio: float, mask_id: int, *,
                  generator: torch.Generator | None = None,
                  maskable: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace exactly ``round(ratio * n)`` uniformly chosen maskable tokens of each row by ``mask_id``.

    ``input_ids``: ``[N, T]``; ``maskable``: bool ``[N, T]`` (e.g. not padding; ``n`` counts these).
    Exactly that many tokens per row (not Bernoulli), so every sequence sees the stated ratio. The
    choice (one uniform score per token, drawn on the generator's device or the CPU) is reproducible
    through ``generator``. ``ratio == 0`` draws nothing. Returns ``(noisy_ids, masked)``.
    """
    if not 0.0 <= ratio <= 1.0:
        raise LayerwiseError(f"mask_ratio={ratio} must be in [0, 1]")
    if ratio == 0.0:
        return input_ids, torch.zeros_like(input_ids, dtype=torch.bool)
    valid = torch.ones_like(input_ids, dtype=torch.bool) if maskable is None else maskable.bool()
    scores = _uniform(tuple(input_ids.shape), None, generator).cpu()
    scores[~valid.cpu()] = 2.0  # never-maskable tokens sort last, so they are never picked
    rank = scores.argsort(dim=1).argsort(dim=1)
    k = (valid.sum(1).cpu().double() * ratio).round().long()
    chosen = (rank < k[:, None]).to(input_ids.device)
    return input_ids.masked_fill(chosen, mask_id), chosen


def stratified_mask(n: int, length: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks for ``n`` Monte-Carlo samples over ``length`` tokens (LLaDA's likelihood forward process).

    The numbers of masked tokens are stratified over the batch (evenly spaced from a random start,
    wrapped to 1..length), which lowers the variance against i.i.d. masked fractions; which tokens are
    masked is a uniform random subset per row. CPU tensors. Returns ``is_mask [n, length]`` bool and
    ``p_mask [n]`` (the masked fraction, the ELBO's 1/t weight).
    """
    k0 = int(torch.randint(1, length + 1, (), generator=generator))
    counts = torch.round(torch.linspace(float(k0), k0 + (n - 1) * (length / n), steps=n)).long()
    counts = (counts - 1) % length + 1
    perm = torch.rand(n, length, generator=generator).argsort(dim=1)
    rank_masked = torch.arange(length).unsqueeze(0) < counts.unsqueeze(1)
    is_mask = torch.zeros(n, length, dtype=torch.bool).scatter_(1, perm, rank_masked)
    return is_mask, counts.float() / length


# ---------------------------------------------------------------------------------------------
# Logit alignment
# ---------------------------------------------------------------------------------------------


def align_logits(logits: torch.Tensor, family: Family | Objective | str) -> torch.Tensor:
    """Logits ``[B, L, V]`` whose position ``i`` predicts token ``i``.

    Shifted families (position i predicts i + 1): ``cat([l[:, :1], l[:, :-1]], 1)`` (position 0 keeps
    its own logits, Dream's convention); ``dlm``: ``logits`` unchanged.
    """
    if not as_family(family).shifted_logits:
        return logits
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


def logit_positions(positions: torch.Tensor, family: Family | Objective | str) -> torch.Tensor:
    """Raw logit positions whose logits :func:`align_logits` puts at aligned ``positions`` (1D long):
    ``align_logits(l, f)[:, p] == l[:, logit_positions(p, f)]``."""
    return (positions - 1).clamp_min(0) if as_family(family).shifted_logits else positions


def prediction_pairs(logits: torch.Tensor, targets: torch.Tensor, family: Family | Objective | str,
                     *per_target: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Raw ``logits [B, L, V]`` and ``targets [B, L]`` cut to the positions where one predicts the other.

    Shifted families: ``logits[:, :-1]`` and ``targets[:, 1:]`` (the aligned pairs of
    :func:`align_logits` without position 0, which predicts nothing); ``dlm``: unchanged. Tensors in
    ``per_target`` (``[B, L]``, e.g. the mask) are cut like ``targets``. Views, no copies.
    """
    if not as_family(family).shifted_logits:
        return (logits, targets, *per_target)
    return (logits[:, :-1], targets[:, 1:], *(x[:, 1:] for x in per_target))


__all__ = [
    "MASK_TOKEN", "Family", "Objective", "as_family", "find_mask_token_id", "mask_token_id", "requires_mask_token",
    "sample_t", "mask_tokens", "maskable_positions", "mask_fraction", "stratified_mask", "align_logits",
    "logit_positions", "prediction_pairs",
]
