"""Masked-diffusion conventions, in one place.

Every module that masks tokens, looks up a mask token, or aligns a model's logits with the tokens
they predict calls this module: training (the diffusion losses), sampling, probes (masked inputs),
compression (diffusion-aware calibration) and evaluation (Monte-Carlo likelihoods).

- :class:`Family`: what a model's logits mean (causal next-token, masked diffusion predicting the
  token at its own position, or AR-initialised diffusion that keeps the AR shift, as Dream does).
"""

from __future__ import annotations

import enum


class Family(str, enum.Enum):
    """Training objective family of a model."""

    AR = "ar"  #: causal, next-token prediction (Qwen2.5, Llama-3.1, triplet `ar`)
    DLM = "dlm"  #: masked diffusion, bidirectional, position i predicts token i (LLaDA, triplet `dlm`)
    AR2DLM = "ar2dlm"  #: AR-initialised diffusion, position i predicts token i+1 (Dream, triplet `ar2dlm`)

    @property
    def is_diffusion(self) -> bool:
        return self is not Family.AR

    @property
    def shifted_logits(self) -> bool:
        """True when logits at position i predict token i+1 (AR and Dream-style diffusion)."""
        return self is not Family.DLM
