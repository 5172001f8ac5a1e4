"""Random-weight models at a given shape, for benchmarks and tests (nothing is downloaded)."""

from __future__ import annotations

from typing import Any

import torch

from .config import resolve_device, resolve_dtype
from .diffusion import Family
from .models import LoadedModel, wrap


def random_model(*, layers: int, d_model: int, heads: int, mlp: int, vocab: int, family: Family | str = "dlm",
                 device: str | torch.device = "auto", dtype: str | torch.dtype = "auto", seed: int = 0,
                 max_position_embeddings: int = 8192) -> LoadedModel:
    """A transformers Llama of the given shape with random weights, built directly on ``device``.

    For benchmarks and tests at a real model's dimensions (e.g. LLaDA-8B: 32 layers, d 4096, 32
    heads, MLP 12288, vocab 126464) without downloading anything. Diffusion families are
    bidirectional (``config.is_causal = False``) and use the last vocabulary id as the mask token.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    family = Family(family)
    dev = resolve_device(device)
    sdpa: dict[str, Any] = {"attn_implementation": "sdpa"}
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=d_model, intermediate_size=mlp, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=max_position_embeddings, **sdpa)
    cfg.is_causal = not family.is_diffusion
    torch.manual_seed(seed)
    with torch.device(dev):
        model = LlamaForCausalLM._from_config(cfg, dtype=resolve_dtype(dtype, dev)).eval()
    return wrap(model, None, family, mask_token_id=vocab - 1 if family.is_diffusion else None,
                adapter="llama", model_id=f"random-{family.value}-{layers}L-d{d_model}")
