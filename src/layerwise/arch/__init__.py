"""Architectures: one module per architecture, each owning its module paths, forward quirks,
load-time patches and config checks.

- :mod:`.llama`: transformers Llama / Qwen2 / Mistral naming; also the project's triplet.
- :mod:`.dream`: Dream's remote code (Qwen2 naming, tuple block outputs, 4D boolean mask).
- :mod:`.llada`: LLaDA's remote code (``transformer.blocks`` naming, tuple outputs, causal bias under
  a padding mask).
- :mod:`.gpt_neox`: GPT-NeoX / Pythia.
- :mod:`.diffusion_gemma`: DiffusionGemma (the adapter points at its denoiser).
- :mod:`.remote_code`: the sha256 of every remote-code file the project has tested, and which files a
  checkpoint runs.

Which architecture a checkpoint is comes from its config (:func:`detect_architecture`: ``model_type``,
``architectures``, ``auto_map``), so a hub id and a local folder of the same model are treated alike;
an in-memory model gets its adapter from :func:`infer_adapter`. Adding an architecture: write a module
like :mod:`.llada` (a :class:`LayerAdapter`, its logits function, its :class:`LoadPatches`, its config
check) and call :func:`register_architecture` with its :class:`Architecture`.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from ..config import LayerwiseError
from . import diffusion_gemma, dream, gpt_neox, llada, llama, remote_code
from .base import (
    Architecture,
    LayerAdapter,
    LoadPatches,
    LogitsFn,
    auto_map_refs,
    check_layer_index,
    config_fields,
    default_logits,
    get_path,
    has_path,
    module_names,
    padding_mask_4d,
    set_path,
)

__all__ = [
    "ADAPTERS", "ARCHITECTURES", "Architecture", "LayerAdapter", "LoadPatches", "LogitsFn", "check_layer_index",
    "default_logits", "detect_architecture", "get_path", "has_path", "infer_adapter", "is_remote_code",
    "padding_mask_4d", "register_adapter", "register_architecture", "remote_code", "set_path",
]

log = logging.getLogger(__name__)

#: name -> architecture, in registration order (the order :func:`infer_adapter` tries them in)
ARCHITECTURES: dict[str, Architecture] = {}
#: name -> layer adapter of every registered architecture
ADAPTERS: dict[str, LayerAdapter] = {}


def register_architecture(arch: Architecture) -> Architecture:
    """Add (or replace) an architecture; its adapter becomes available by name (``wrap(adapter=...)``)."""
    ARCHITECTURES[arch.name] = arch
    ADAPTERS[arch.name] = arch.adapter
    return arch


def register_adapter(adapter: LayerAdapter) -> None:
    """Register a bare adapter (found by :func:`infer_adapter` from module names, never from a config)."""
    register_architecture(Architecture(adapter))


# Llama before Dream: both have the same paths, an unnamed in-memory model gets the plain forward.
for _mod in (llama, dream, llada, gpt_neox, diffusion_gemma):
    register_architecture(_mod.ARCHITECTURE)


def is_remote_code(config: Any) -> bool:
    """True when a config names model code that ships with the checkpoint: an ``auto_map`` with a
    model class, for a ``model_type`` transformers does not know."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    model_type, _, auto_map = config_fields(config)
    has_model = any(k.startswith("AutoModel") for k in auto_map)
    return has_model and model_type not in CONFIG_MAPPING_NAMES


def detect_architecture(config: Any, *, strict: bool = True) -> Architecture | None:
    """The registered architecture a checkpoint's config names (a ``config.json`` dict or a config object).

    Tried in order: ``model_type``, ``architectures``, the modules ``auto_map`` points at. None for a
    config that names nothing registered (the adapter is then inferred from the loaded model's module
    names); with ``strict``, remote code that names nothing registered raises :class:`LayerwiseError`,
    since its transformers-5 fixes and forward quirks are unknown.
    """
    ranked = [(r, a) for a in ARCHITECTURES.values() if (r := a.match_rank(config)) is not None]
    if ranked:
        return min(ranked, key=lambda ra: ra[0])[1]
    if strict and is_remote_code(config):
        model_type, architectures, auto_map = config_fields(config)
        known = sorted(a.name for a in ARCHITECTURES.values() if a.model_types or a.class_names)
        raise LayerwiseError(
            f"this checkpoint's code ships with it (model_type {model_type!r}, architectures {list(architectures)}, "
            f"auto_map {sorted({m for m, _ in auto_map_refs(auto_map)})}) and is not a supported architecture "
            f"({', '.join(known)}): add one with layerwise.arch.register_architecture(Architecture(...)) "
            "(see layerwise/arch/llada.py), or, if you trust its code, pass trust_remote_code=True (in a chapter: "
            "a models entry {id: ..., trust_remote_code: true}) to run it unpatched with an adapter inferred from "
            "its module names"
        )
    return None


def infer_adapter(model: nn.Module) -> LayerAdapter:
    """The adapter for an in-memory model: the architecture its config names, else the one whose name
    hints match its class name, else the first whose module paths all exist; the error says why none fits."""
    config = getattr(model, "config", None)
    named = detect_architecture(config, strict=False) if config is not None else None
    if named is not None and named.check_config is not None:
        named.check_config(config)
    cls_name = type(model).__name__.lower()

    def rank(a: Architecture) -> int:
        return 0 if a is named else 1 if any(h in cls_name for h in a.name_hints) else 2

    for arch in sorted(ARCHITECTURES.values(), key=rank):
        arch.adapter.check_supported(model)
        if arch.adapter.matches(model):
            return arch.adapter
    raise LayerwiseError(
        f"no layer adapter fits {type(model).__name__}: its modules are {module_names(model)}; known "
        f"adapters {sorted(ADAPTERS)} look for e.g. 'model.layers.0.self_attn.q_proj' (llama), "
        "'model.transformer.blocks.0.q_proj' (llada), 'gpt_neox.layers.0.attention.query_key_value'. "
        "Register one with layerwise.arch.register_adapter(LayerAdapter(...))"
    )
