"""DiffusionGemma (``transformers.models.diffusion_gemma``, ``DiffusionGemmaForBlockDiffusion``).

An encoder-decoder block-diffusion model: the AR encoder writes a KV cache for the prompt, a
bidirectional MoE decoder (the denoiser) refines a canvas of random tokens that attends to that cache
and to itself. The adapter addresses the decoder. Its weights are tied to the encoder's, so an in-place
weight edit (compression) changes both; hooks and skipping affect the denoiser only. Blocks return a
tensor. The MoE experts are 3D Parameters, not Linears: only the dense MLP's Linears are listed.
Uniform-noise diffusion: there is no mask token. Native in transformers 5.17: no patches.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import Architecture, LayerAdapter
from .llama import LLAMA_LINEARS


def logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The prompt is the BOS token alone and ``input_ids`` is the canvas, so the hooked decoder blocks
    see exactly ``[B, T, d]`` for the given tokens. Logits are float32, soft-capped, unshifted (canvas
    position i scores canvas token i)."""
    config: Any = model.config
    cfg = config.get_text_config()
    bos = cfg.bos_token_id if cfg.bos_token_id is not None else 2
    prompt = torch.full((input_ids.shape[0], 1), bos, dtype=input_ids.dtype, device=input_ids.device)
    kwargs: dict[str, Any] = {"input_ids": prompt, "decoder_input_ids": input_ids}
    if attention_mask is not None and not bool(attention_mask.bool().all()):
        ones = torch.ones_like(prompt, dtype=attention_mask.dtype)
        kwargs["attention_mask"] = ones
        kwargs["decoder_attention_mask"] = torch.cat([ones, attention_mask], dim=1)
    return model(**kwargs).logits


ADAPTER = LayerAdapter(
    name="diffusion_gemma", blocks="model.decoder.layers", embed="model.decoder.embed_tokens",
    final_norm="model.decoder.norm", lm_head="lm_head",
    attn_input="input_layernorm", mlp_input="pre_feedforward_layernorm",
    linears=LLAMA_LINEARS, num_layers_attr="text_config.num_hidden_layers",
    logits_fn=logits, noise="uniform",
)

ARCHITECTURE = Architecture(
    adapter=ADAPTER,
    model_types=("diffusion_gemma",),
    class_names=("DiffusionGemmaForBlockDiffusion",),
    auto_class="DiffusionGemmaForBlockDiffusion",
    name_hints=("diffusion_gemma", "diffusiongemma"),
)
