"""Streaming hidden-state statistics through block hooks.

Three probes (paper A's layer- and token-wise cosine similarity, paper B's channel magnitudes) and
one recorder (channel magnitudes at every forward call, e.g. every denoising step of a diffusion
sampler). They share one design:

* **Block hooks, not ``output_hidden_states``.** HF models (and LLaDA, Dream) return
  ``[emb, out_0 .. out_{L-2}, norm(out_{L-1})]``: the last block's *raw* output is missing. A
  forward hook on every block (found through :class:`~layerwise.models.LayerAdapter`) sees the
  block's input ``h_l`` and raw output ``h_{l+1}`` directly.
* **Streaming on the device.** Every hook reduces its ``[batch, seq, d_model]`` tensors at once to
  per-sequence, per-layer or per-channel sums; accumulators are ``O(layers x d_model)`` or
  ``O(layers x bins)`` and never grow with the number of tokens. With ``keep_per_sequence=True``
  the probes also keep one float per (sequence, layer) on the CPU, for paired confidence intervals.
* **Reversible.** Hooks are registered in a context manager and removed in ``finally``, so an
  exception leaves the model untouched.
* **Dispatched models.** With an accelerate ``device_map`` the blocks live on several devices:
  each hook reduces on its block's device and moves only the reduced tensor to the accumulator's
  device (the device of the first block).
* **No LM head.** The probes stop the forward pass after the last block (an internal exception
  caught here), which saves the head's FLOPs and the ``[batch, seq, vocab]`` logits.

Masked inputs (``mask_ratio > 0``, diffusion models only) replace an exact fraction of each sequence's
tokens by the mask token (:func:`layerwise.diffusion.mask_fraction`).

Modules: :mod:`.hooks` (hooks, accumulators, devices, masked inputs), :mod:`.similarity` (paper A's
layer and token similarity), :mod:`.channels` (paper B's channel statistics and the recorder),
:mod:`.passes` (:func:`probe_pass` and the one-probe entry points).

Notation: a model has ``L`` blocks; ``h_0`` is the input of block 0 (the embeddings) and
``h_{l+1}`` the raw output of block ``l``.
"""

from __future__ import annotations

from .channels import SITES, ChannelRecording, ChannelStats, SiteChannelStats, accumulator_numel, record_channels
from .hooks import BlockFn, Welford, block_hooks, mask_tokens, module_output_hooks
from .hooks import _forward as _forward  # the cut the benchmarks time
from .hooks import _StopForward as _StopForward
from .passes import ProbeResults, channel_stats, layer_similarity, probe_pass, token_similarity
from .similarity import LayerSimilarity, TokenSimilarity

__all__ = [
    "SITES", "Welford", "BlockFn", "block_hooks", "module_output_hooks", "mask_tokens", "LayerSimilarity",
    "layer_similarity", "TokenSimilarity", "token_similarity", "SiteChannelStats", "ChannelStats", "channel_stats",
    "ProbeResults", "probe_pass", "ChannelRecording", "record_channels", "accumulator_numel",
]
