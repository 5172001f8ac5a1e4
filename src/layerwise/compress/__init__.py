"""Post-training compression: GPTQ / RTN fake-quantization, magnitude / Wanda / SparseGPT pruning,
layer-wise sparsity allocation, and the one layer-by-layer calibration loop they all share.

Hand-written on purpose: llm-compressor pins other torch/transformers versions
and its OWL is broken, gptqmodel does not support LLaDA-1, auto-gptq does not import on transformers 5.
Everything here reaches inside a model only through ``lm.adapter`` and is *fake* compression: weights
are quantized / pruned and written back in the model's dtype, so every other module (samplers,
evals, probes) runs on the compressed model unchanged.

The calibration loop (:func:`blockwise`) is the Wanda / GPTQ "catcher" pattern, generalised:

1. run the model once per calibration chunk with a forward pre-hook on block 0 that records the
   block's inputs (hidden state ``[b, seq, d]`` plus whatever positional/keyword arguments the
   block needs: attention mask, position embeddings, ...) and raises to stop the forward;
2. for each block: run it on the stored inputs with hooks on its Linears collecting input
   statistics (``X^T X`` for GPTQ / SparseGPT, per-column ``sum x_j^2`` for Wanda / OWL), compress it,
   run it again to get the *post-compression* outputs (as GPTQ does), which become the next
   block's inputs.

So an 8B model needs one block's activations in memory at a time.

Modules: :mod:`.calibration` (calibration data, the loop), :mod:`.quantize` (RTN, GPTQ),
:mod:`.prune` (magnitude, Wanda, SparseGPT), :mod:`.allocation` (per-layer sparsities),
:mod:`.weights` (write-back, snapshots), :mod:`.diagnostics` (per-Linear output errors and input ranks).
"""

from __future__ import annotations

from .allocation import SCHEMES, allocate_sparsity, block_param_counts, owl_outlier_ratios
from .calibration import (
    BlockFn,
    BlockInputs,
    Collect,
    LinearStats,
    blockwise,
    calibration_inputs,
    capture_block_inputs,
    mixed_layer_types,
)
from .diagnostics import effective_rank, linear_errors
from .prune import PruneMethod, magnitude_mask, prune, sparsegpt_prune_weight, wanda_mask
from .quantize import QuantMethod, gptq_quantize_weight, quantize, resolve_group_size, rtn_quantize_weight
from .weights import compressed, preserved, relative_error, restore, snapshot

__all__ = [
    "LinearStats", "BlockInputs", "calibration_inputs", "capture_block_inputs", "blockwise",
    "resolve_group_size", "rtn_quantize_weight", "gptq_quantize_weight", "magnitude_mask", "wanda_mask",
    "sparsegpt_prune_weight", "quantize", "prune", "block_param_counts", "owl_outlier_ratios",
    "allocate_sparsity", "snapshot", "restore", "preserved", "compressed", "relative_error", "SCHEMES",
    "mixed_layer_types", "BlockFn", "Collect", "QuantMethod", "PruneMethod", "effective_rank", "linear_errors",
]
