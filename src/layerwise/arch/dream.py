"""Dream (Dream-org/Dream-v0-Base-7B, -Instruct-7B): remote code ``modeling_dream.py``, written for transformers 4.

Qwen2 naming (``model.layers[i].self_attn.{q,k,v,o}_proj``, ``mlp.{gate,up,down}_proj``), but its
decoder layers return a tuple ``(hidden,) [+ attn] [+ cache]``, its attention takes a 4D boolean mask
or None, and its logits are shifted (position i predicts token i+1). The config has ``model_type``
"Dream" and ``auto_map`` -> ``modeling_dream.DreamModel``.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

import torch
from torch import nn

from .base import Architecture, LayerAdapter, LoadPatches, padding_mask_4d
from .llama import LLAMA_LINEARS


def logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Dream's attention takes a 4D boolean mask or None; a 2D mask breaks it, so a padding mask goes in
    as the bidirectional ``[B, 1, T, T]`` mask."""
    if attention_mask is None or bool(attention_mask.bool().all()):
        return model(input_ids=input_ids).logits
    return model(input_ids=input_ids, attention_mask=padding_mask_4d(attention_mask)).logits


# ---------------------------------------------------------------------------------------------
# transformers-5 fixes
# ---------------------------------------------------------------------------------------------


def compute_default_rope_parameters(config: Any, device: torch.device | str | None = None,
                                    seq_len: int | None = None, **_: Any) -> tuple[torch.Tensor, float]:
    """The original RoPE inverse frequencies ``1 / theta^(2i/d)`` ``[d/2]`` and scaling 1.0.

    Reads ``rope_theta`` from ``config.rope_parameters`` (transformers 5) or ``config.rope_theta`` (4.x).
    """
    rp = getattr(config, "rope_parameters", None) or {}
    base = float(rp.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    dim = int(head_dim * float(rp.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0))))
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    return inv_freq.to(device) if device is not None else inv_freq, 1.0


def patch_rope_default() -> None:
    """Fixes building the model failing with ``KeyError: 'default'`` at ``ROPE_INIT_FUNCTIONS[self.rope_type]``.

    transformers 5 dropped ``ROPE_INIT_FUNCTIONS["default"]`` (each model now has its own
    ``compute_default_rope_parameters``); Dream's rotary embeddings still look it up. Puts
    :func:`compute_default_rope_parameters` back under that key. Idempotent; no native transformers 5
    model looks the key up, so they are unaffected.
    """
    from transformers import modeling_rope_utils

    modeling_rope_utils.ROPE_INIT_FUNCTIONS.setdefault("default", compute_default_rope_parameters)


def register_default_rope(cls: type[Any]) -> type[Any]:
    """:func:`patch_rope_default` as a class-level fix (``KeyError: 'default'`` when building ``cls``)."""
    patch_rope_default()
    return cls


def ignore_rotary_buffers(cls: type[Any]) -> type[Any]:
    """Fixes every load reporting ``rotary_emb.inv_freq`` as unexpected keys (strict loaders fail on them).

    Dream's checkpoints carry the rotary ``inv_freq`` buffers that transformers 5 models register as
    non-persistent. The ignore list is extended, never replaced; a second call adds nothing.
    """
    ignore = list(getattr(cls, "_keys_to_ignore_on_load_unexpected", None) or [])
    if r"rotary_emb\.inv_freq" not in ignore:
        cls._keys_to_ignore_on_load_unexpected = [*ignore, r"rotary_emb\.inv_freq"]
    return cls


def tied_weights_as_mapping(cls: type[Any]) -> type[Any]:
    """Fixes ``save_pretrained`` failing with ``AttributeError: 'list' object has no attribute 'keys'``.

    Dream declares ``_tied_weights_keys = ["lm_head.weight"]`` (transformers 4's list of targets);
    transformers 5 expects a {target: source} mapping. The head ties to the input embedding, as in
    Qwen2; transformers 5 ties only when ``config.tie_word_embeddings`` (False for Dream-7B). A mapping
    is left alone.
    """
    keys = cls._tied_weights_keys if hasattr(cls, "_tied_weights_keys") else None
    if isinstance(keys, (list, tuple)):
        cls._tied_weights_keys = {k: "model.embed_tokens.weight" for k in keys if k == "lm_head.weight"}
    return cls


def generation_config_accepts_user_set_attributes(cls: type[Any]) -> type[Any]:
    """Fixes ``from_pretrained`` failing with
    ``TypeError: DreamGenerationConfig.validate() got an unexpected keyword argument 'user_set_attributes'``.

    Dream's ``from_pretrained`` reads ``generation_config.json`` into its ``DreamGenerationConfig``,
    whose ``validate(self, is_init=False)`` predates the argument transformers 5 passes. Every
    ``GenerationConfig`` subclass in ``cls``'s module whose ``validate`` lacks it gets a wrapper that
    drops the arguments the original does not take; others are left alone.
    """
    from transformers import GenerationConfig

    for obj in list(vars(sys.modules[cls.__module__]).values()):
        if not (isinstance(obj, type) and issubclass(obj, GenerationConfig) and obj is not GenerationConfig):
            continue
        own = obj.validate
        params = inspect.signature(own).parameters
        if "user_set_attributes" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
            continue
        names = set(params)

        def validate(self: Any, *args: Any, _own: Any = own, _names: set[str] = names, **kwargs: Any) -> Any:
            return _own(self, **{k: v for k, v in kwargs.items() if k in _names})

        obj.validate = validate  # type: ignore[method-assign]
    return cls


def generation_config_from_model_config(cls: type[Any]) -> type[Any]:
    """Fixes Dream's own ``model.diffusion_generate(...)`` failing with
    ``AttributeError: 'GenerationConfig' object has no attribute 'eps'``.

    Dream's ``_prepare_generation_config`` builds ``DreamGenerationConfig.from_model_config(self.config)``.
    transformers 5's ``from_model_config`` then compares every attribute of the new config with a plain
    ``GenerationConfig()``, which lacks Dream's diffusion attributes (``eps``, ``steps``, ``alg``,
    ``alg_temp``). Every ``GenerationConfig`` subclass in ``cls``'s module that inherits
    ``from_model_config`` gets transformers 4's (the version Dream was written for): the model config's
    non-None values through ``from_dict(..., _from_model_config=True)``. Others are left alone.
    """
    from transformers import GenerationConfig

    def from_model_config(klass: type[Any], model_config: Any) -> Any:
        values = dict(model_config) if isinstance(model_config, dict) else model_config.to_dict()
        values.pop("_from_model_config", None)
        values = {k: v for k, v in values.items() if v is not None}
        return klass.from_dict(values, return_unused_kwargs=False, _from_model_config=True)

    for obj in list(vars(sys.modules[cls.__module__]).values()):
        if (isinstance(obj, type) and issubclass(obj, GenerationConfig) and obj is not GenerationConfig
                and "from_model_config" not in vars(obj)):
            obj.from_model_config = classmethod(from_model_config)  # type: ignore[assignment]
    return cls


def patch_dream_class(cls: type[Any]) -> type[Any]:
    """Every class-level fix for ``DreamModel`` (apply BEFORE ``from_pretrained``):
    :func:`register_default_rope`, :func:`ignore_rotary_buffers`, :func:`tied_weights_as_mapping`,
    :func:`generation_config_accepts_user_set_attributes`, :func:`generation_config_from_model_config`."""
    for fix in ARCHITECTURE.patches.cls:
        fix(cls)
    return cls


def reset_rope_buffers(model: nn.Module) -> int:
    """Fixes RoPE frequencies left as uninitialised memory after loading (no error: every logit is wrong).

    transformers 5 builds models on the meta device and then materialises non-persistent buffers
    without values; its own ``_init_weights`` refills rotary buffers only for modules that define
    ``compute_default_rope_parameters``, which Dream's ``DreamRotaryEmbedding`` does not, and Dream's
    ``_init_weights`` skips them. Recomputes every rotary embedding's ``inv_freq`` ``[head_dim/2]``;
    returns how many. Recomputing correct buffers gives the same values.
    """
    n = 0
    for mod in model.modules():
        buf = getattr(mod, "inv_freq", None)
        if not isinstance(buf, torch.Tensor) or buf.device.type == "meta":
            continue
        fn = getattr(mod, "rope_init_fn", None) or compute_default_rope_parameters
        cfg = getattr(mod, "config", None) or model.config
        inv, scale = fn(cfg, buf.device, **(getattr(mod, "rope_kwargs", None) or {}))
        mod.register_buffer("inv_freq", inv.to(buf.device), persistent=False)
        if isinstance(getattr(mod, "original_inv_freq", None), torch.Tensor):
            mod.original_inv_freq = mod.inv_freq
        mod.attention_scaling = scale  # type: ignore[assignment]
        n += 1
    return n


ADAPTER = LayerAdapter(
    name="dream", blocks="model.layers", embed="model.embed_tokens", final_norm="model.norm",
    lm_head="lm_head", attn_input="input_layernorm", mlp_input="post_attention_layernorm",
    linears=LLAMA_LINEARS, block_returns_tuple=True, logits_fn=logits,
)

ARCHITECTURE = Architecture(
    adapter=ADAPTER,
    model_types=("dream",),
    class_names=("DreamModel",),
    remote_modules=("modeling_dream",),
    remote_code=True,
    auto_class="AutoModel",
    patches=LoadPatches(cls=(register_default_rope, ignore_rotary_buffers, tied_weights_as_mapping,
                             generation_config_accepts_user_set_attributes, generation_config_from_model_config),
                        model=(reset_rope_buffers,)),
    name_hints=("dream",),
)
