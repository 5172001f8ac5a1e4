"""Generation and likelihoods for autoregressive and masked-diffusion language models.

Two model families are driven here (see :class:`layerwise.diffusion.Family`):

- ``ar``: causal next-token models. Generation goes through transformers' ``generate``; the
  log-likelihood of a continuation is exact (one forward pass).
- ``dlm`` / ``ar2dlm``: masked-diffusion models (LLaDA, Dream). Two samplers, each giving the tokens of the
  model authors' own code: :func:`diffusion_generate` is LLaDA's ``generate.py`` (semi-autoregressive
  blocks, a fixed number of tokens unmasked per step, low-confidence or random remasking, float64
  Gumbel-max temperature); :func:`dream_generate` is Dream's ``diffusion_generate`` (no blocks, timesteps
  from 1 to ``eps``, algorithms ``origin`` / ``maskgit_plus`` / ``topk_margin`` / ``entropy``, ``top_p``,
  ``top_k``, ``alg_temp``). :func:`generate` picks by the ``remasking`` setting (the registry's default:
  LLaDA's for LLaDA, ``entropy`` for Dream). The log-likelihood is LLaDA's Monte-Carlo estimate of the
  ELBO (``eval_llada.py``): only the continuation is masked, the masked fraction is sampled, and the
  cross-entropy on masked tokens is divided by the masked fraction.

Shifted logits: ``ar2dlm`` models (Dream) keep the AR convention that the logits at position ``i``
predict token ``i + 1``; the diffusion code reads them aligned (:func:`layerwise.diffusion.align_logits`,
aligned position ``i`` predicts token ``i``), through :func:`sliced_lm_head`.

Modules: :mod:`.diffusion_sampler` (LLaDA's sampler), :mod:`.dream_sampler` (Dream's), :mod:`.generation`
(AR decoding, text in / text out), :mod:`.likelihood` (exact and Monte-Carlo log-likelihoods),
:mod:`.common` (the model call and the sliced LM head).

Identity with the reference code (tests/test_sampler_reference.py runs the genuine files): the same
tokens at temperature 0 and, after the same ``torch.manual_seed``, at temperature > 0, at the same batch
shape. That needs the reference's numbers, not only its algorithm: the softmax that ranks positions in
the logits' dtype (in bf16 many confidences tie and ``torch.topk`` over the full-length row breaks the
ties), the noise drawn over the whole canvas, a padded LLaDA batch's attention bias as LLaDA builds it
(:func:`layerwise.arch.llada.padding_bias`). Speed-ups kept by default change no number: the
Gumbel noise, the softmax and the argmax run only on the current block's rows (each row is computed on
its own). Options that may change tokens are named: ``confidence_dtype=torch.float64`` (rank in float64),
``gumbel_noise="block"`` (draw noise for the block only), ``sliced_head=True`` (the LM head on the block's
positions only: another matrix-multiply shape, hence possibly other low bits; equal tokens measured on CPU
and on an H200 at LLaDA-8B's shape, ``benchmarks/bench_llada_reference.py``) and ``prefix_cache=True``
(approximate).
"""

from __future__ import annotations

from .common import sliced_lm_head
from .diffusion_sampler import (
    GUMBEL_NOISE,
    REMASKING,
    add_gumbel_noise,
    diffusion_generate,
    fill_after_stop,
    num_transfer_tokens,
)
from .dream_sampler import DREAM_ALGS, dream_generate
from .generation import ar_generate, generate
from .likelihood import ar_loglikelihood, diffusion_loglikelihood, loglikelihood, rolling_loglikelihood

__all__ = [
    "ar_generate", "diffusion_generate", "generate", "ar_loglikelihood", "diffusion_loglikelihood",
    "loglikelihood", "rolling_loglikelihood", "num_transfer_tokens", "add_gumbel_noise", "sliced_lm_head",
    "REMASKING", "GUMBEL_NOISE", "DREAM_ALGS", "dream_generate", "fill_after_stop",
]
