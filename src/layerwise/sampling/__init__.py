"""Generation and likelihoods for autoregressive and masked-diffusion language models.

Two model families are driven here (see :class:`layerwise.diffusion.Family`):

- ``ar``: causal next-token models. Generation goes through transformers' ``generate``; the
  log-likelihood of a continuation is exact (one forward pass).
- ``dlm`` / ``ar2dlm``: masked-diffusion models (LLaDA, Dream). Generation follows LLaDA's
  ``generate.py`` (semi-autoregressive blocks, a fixed number of tokens unmasked per step, low-confidence
  or random remasking, Gumbel-max temperature in float64). The log-likelihood is LLaDA's Monte-Carlo
  estimate of the ELBO (``eval_llada.py``): only the continuation is masked, the masked fraction is
  sampled, and the cross-entropy on masked tokens is divided by the masked fraction.

Shifted logits: ``ar2dlm`` models (Dream) keep the AR convention that the logits at position ``i``
predict token ``i + 1``; the diffusion code reads them aligned (:func:`layerwise.diffusion.align_logits`,
aligned position ``i`` predicts token ``i``), through :func:`sliced_lm_head`.

Modules: :mod:`.diffusion_sampler` (LLaDA's sampler), :mod:`.generation` (AR decoding, text in / text
out), :mod:`.likelihood` (exact and Monte-Carlo log-likelihoods), :mod:`.common` (the sliced LM head).

Speed (:func:`diffusion_generate` versus LLaDA's reference loop): the model still sees the whole
sequence every step (its bidirectional attention needs it), but the LM head, the argmax and the
float64 confidence are computed only on the current block (``block_length`` positions instead of
prompt + generation), through a reversible pre-hook on ``adapter.get_lm_head``; top-k is vectorised
over the batch. These changes keep the tokens identical to the reference at temperature 0 because every
kept number is computed by the same kernels on the same rows.
"""

from __future__ import annotations

from .common import sliced_lm_head
from .diffusion_sampler import REMASKING, add_gumbel_noise, diffusion_generate, num_transfer_tokens
from .generation import ar_generate, generate
from .likelihood import ar_loglikelihood, diffusion_loglikelihood, loglikelihood, rolling_loglikelihood

__all__ = [
    "ar_generate", "diffusion_generate", "generate", "ar_loglikelihood", "diffusion_loglikelihood",
    "loglikelihood", "rolling_loglikelihood", "num_transfer_tokens", "add_gumbel_noise", "sliced_lm_head",
    "REMASKING",
]
