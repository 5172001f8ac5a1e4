"""LLaDA (GSAI-ML/LLaDA-8B-Base, -Instruct): remote code ``modeling_llada.py``, written for transformers 4.

``LLaDAModelLM.model`` is ``LLaDAModel``, whose ``transformer`` is a ModuleDict: ``wte``,
``blocks[i]`` (``LLaDALlamaBlock``: ``attn_norm``, ``q_proj``, ``k_proj``, ``v_proj``, ``attn_out``,
``ff_norm``, ``ff_proj``, ``up_proj``, ``ff_out``), ``ln_f``, ``ff_out``. Blocks return ``(x, cache)``.
The config (``model_type`` "llada", ``auto_map`` -> ``modeling_llada.LLaDAModelLM``) uses its own names
(``n_layers``, ``d_model``...).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from ..config import LayerwiseError
from .base import Architecture, LayerAdapter, LoadPatches

_GROUPED = (
    "this LLaDA checkpoint groups its blocks (config.block_group_size > 1, blocks under "
    "model.transformer.block_groups): per-block hooks and skipping need block_group_size=1; "
    "load it with AutoConfig, set config.block_group_size = 1 and pass config=... to from_pretrained "
    "(the weights' names do not depend on the grouping)"
)


def logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """LLaDA's ``attention_mask`` path adds a *causal* bias when the mask has zeros (modeling_llada.py:
    ``attention_bias = get_causal_attention_bias(...)``), which would make padded batches causal; so a
    padding mask is passed as a bidirectional float ``attention_bias`` instead (:func:`padding_bias`)."""
    if attention_mask is None or bool(attention_mask.bool().all()):
        return model(input_ids=input_ids).logits
    return model(input_ids=input_ids, attention_bias=padding_bias(attention_mask)).logits


def padding_bias(attention_mask: torch.Tensor) -> torch.Tensor:
    """The float attention bias ``[B, 1, T, T]`` LLaDA's modeling code builds from a 2D padding mask
    ``[B, T]`` (0 where a key is visible, the float32 minimum where it is padding), built the same way.

    LLaDA's own sampler (``generate.py``) passes ``attention_mask``; the current hub modeling file turns it
    into this bias. A boolean mask would become a bias of 1.0 on visible keys: the same attention in exact
    arithmetic but other low bits, so the adapter passes this one and its numbers are LLaDA's own.
    """
    b, t = attention_mask.shape
    keys = attention_mask.to(dtype=torch.float).view(b, -1)[:, None, None, :]
    keys = (1.0 - keys) * torch.finfo(keys.dtype).min
    return torch.zeros((1, 1, t, t), dtype=torch.float, device=attention_mask.device) + keys


# ---------------------------------------------------------------------------------------------
# transformers-5 fixes
# ---------------------------------------------------------------------------------------------


def add_tied_weights_mapping(cls: type[Any]) -> type[Any]:
    """Fixes ``from_pretrained`` failing with
    ``AttributeError: 'LLaDAModelLM' object has no attribute 'all_tied_weights_keys'``.

    transformers 5 sets ``all_tied_weights_keys`` in ``post_init()``, which LLaDA's ``__init__`` never
    calls, and reads it as a mapping (``.keys()``); ``_tied_weights_keys`` must be a {target: source}
    dict or None. LLaDA-8B ties nothing (``weight_tying=False``, a separate ``transformer.ff_out``): empty
    dicts. A class that already has mappings is left alone.
    """
    if not isinstance(getattr(cls, "_tied_weights_keys", None), dict):
        cls._tied_weights_keys = {}
    if not isinstance(getattr(cls, "all_tied_weights_keys", None), dict):
        cls.all_tied_weights_keys = {}
    return cls


def tie_weights_accepts_kwargs(cls: type[Any]) -> type[Any]:
    """Fixes ``from_pretrained`` failing with
    ``TypeError: LLaDAModelLM.tie_weights() got an unexpected keyword argument 'missing_keys'``.

    LLaDA's ``tie_weights(self)`` takes no arguments; transformers 5 calls
    ``tie_weights(missing_keys=..., recompute_mapping=...)``. The wrapper drops the arguments and runs
    LLaDA's own method (which ties ``ff_out`` to ``wte`` only when ``config.weight_tying``).
    """
    own = cls.tie_weights
    params = inspect.signature(own).parameters
    if "missing_keys" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return cls  # already takes transformers 5's arguments (or was fixed before)

    def tie_weights(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        own(self)

    cls.tie_weights = tie_weights
    return cls


def add_use_cache(config: Any) -> Any:
    """Fixes every forward failing with ``AttributeError: 'LLaDAConfig' object has no attribute 'use_cache'``.

    ``LLaDAModelLM.forward`` reads ``self.config.use_cache`` when the caller passes none, and transformers
    5 no longer keeps ``use_cache`` on a config that does not declare it (even when config.json has it).
    LLaDA has no usable KV cache for masked diffusion anyway: False. A value already set is kept.
    """
    if getattr(config, "use_cache", None) is None:
        config.use_cache = False
    return config


def add_use_cache_to_model(model: nn.Module) -> nn.Module:
    """Fixes ``AttributeError: 'LLaDAConfig' object has no attribute 'use_cache'`` on the loaded model:
    :func:`add_use_cache` on its config (``from_pretrained`` may hand the model a config other than the
    one it was given)."""
    add_use_cache(model.config)
    return model


def patch_llada_class(cls: type[Any]) -> type[Any]:
    """Every class-level fix for ``LLaDAModelLM`` (apply BEFORE ``from_pretrained``):
    :func:`add_tied_weights_mapping`, :func:`tie_weights_accepts_kwargs`."""
    return tie_weights_accepts_kwargs(add_tied_weights_mapping(cls))


def patch_llada_config(config: Any) -> Any:
    """Every config-level fix for ``LLaDAConfig``: :func:`add_use_cache`."""
    return add_use_cache(config)


def check_config(config: Any) -> None:
    """LLaDA checkpoints with ``block_group_size > 1`` keep their blocks under ``block_groups``: the
    adapter cannot address single blocks there."""
    n = getattr(config, "block_group_size", None)
    if n is None and isinstance(config, dict):
        n = config.get("block_group_size")
    if n is not None and int(n) > 1:
        raise LayerwiseError(_GROUPED.replace("> 1", f"= {int(n)}", 1))


ADAPTER = LayerAdapter(
    name="llada", blocks="model.transformer.blocks", embed="model.transformer.wte",
    final_norm="model.transformer.ln_f", lm_head="model.transformer.ff_out",
    attn_input="attn_norm", mlp_input="ff_norm",
    linears={"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "attn_out",
             "gate": "ff_proj", "up": "up_proj", "down": "ff_out"},
    block_returns_tuple=True, attn_layer_idx="layer_id", num_layers_attr="n_layers",
    logits_fn=logits, unsupported={"model.transformer.block_groups": _GROUPED},
)

ARCHITECTURE = Architecture(
    adapter=ADAPTER,
    model_types=("llada",),
    class_names=("LLaDAModelLM",),
    remote_modules=("modeling_llada",),
    remote_code=True,
    auto_class="AutoModel",
    patches=LoadPatches(cls=(add_tied_weights_mapping, tie_weights_accepts_kwargs), config=(add_use_cache,),
                        model=(add_use_cache_to_model,)),
    check_config=check_config,
    name_hints=("llada",),
)
