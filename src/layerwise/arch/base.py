"""The pieces every architecture shares: :class:`LayerAdapter`, :class:`LoadPatches`, :class:`Architecture`.

A :class:`LayerAdapter` says where the parts of one architecture live (dotted attribute paths) and how
to call it for logits; every probe, skip, ablation, compression pass and sampler reaches a model's inside
only through it. An :class:`Architecture` bundles an adapter with what loading needs: how to recognise
the architecture from a checkpoint's config, the transformers-5 fixes its remote code needs, and the
config values it cannot handle.

Shapes: hidden states are ``[batch, seq, d_model]`` throughout; logits ``[batch, seq, vocab]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..config import LayerwiseError


def get_path(root: Any, path: str) -> Any:
    """``get_path(model, "model.layers")`` -> ``model.model.layers`` (empty path returns root)."""
    obj: Any = root
    for part in path.split(".") if path else []:
        obj = getattr(obj, part)
    return obj


def set_path(root: Any, path: str, value: Any) -> None:
    """``set_path(model, "model.layers", new)`` sets ``model.model.layers = new``."""
    parent_path, _, name = path.rpartition(".")
    setattr(get_path(root, parent_path), name, value)


def has_path(root: Any, path: str) -> bool:
    """True when ``get_path(root, path)`` resolves."""
    try:
        get_path(root, path)
        return True
    except AttributeError:
        return False


def check_layer_index(i: int, n_layers: int) -> None:
    """Raise :class:`LayerwiseError` unless ``i`` is an int in ``[0, n_layers)``."""
    if not isinstance(i, int) or isinstance(i, bool):
        raise LayerwiseError(f"layer index {i!r} must be an int in [0, {n_layers - 1}]")
    if not 0 <= i < n_layers:
        raise LayerwiseError(
            f"layer index {i} is out of range: this model has {n_layers} layers, use 0..{n_layers - 1}"
        )


def module_names(model: nn.Module, depth: int = 3, limit: int = 40) -> list[str]:
    """Dotted names of modules up to ``depth`` levels (for error messages)."""
    names = [n for n, _ in model.named_modules() if n and n.count(".") < depth]
    return names[:limit] + (["..."] if len(names) > limit else [])


# ---------------------------------------------------------------------------------------------
# Forward for analysis
# ---------------------------------------------------------------------------------------------

#: ``logits_fn(model, input_ids [B, T], attention_mask [B, T] or None) -> logits [B, T, V]``
LogitsFn = Callable[[nn.Module, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def default_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """transformers-style forward; ``use_cache=False`` because analysis never reuses a KV cache."""
    kwargs: dict[str, Any] = {"input_ids": input_ids}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    if getattr(getattr(model, "config", None), "use_cache", None) is not None:
        kwargs["use_cache"] = False
    return model(**kwargs).logits


def padding_mask_4d(attention_mask: torch.Tensor) -> torch.Tensor:
    """2D padding mask ``[B, T]`` (1 = real token) -> bidirectional 4D bool mask ``[B, 1, T, T]``.

    Every query may attend to every real key; padded keys are hidden. Padded query rows keep their
    own position visible so that sdpa never sees an all-False row (which gives NaN).
    """
    keep = attention_mask.bool()
    m = keep[:, None, None, :].expand(-1, 1, keep.shape[1], -1).clone()
    eye = torch.eye(keep.shape[1], dtype=torch.bool, device=keep.device)[None, None]
    return m | (eye & ~keep[:, None, :, None])


# ---------------------------------------------------------------------------------------------
# Layer adapter
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerAdapter:
    """Where the parts of one architecture live. Paths are dotted attribute paths.

    ``attn_input`` names the module (relative to a block) whose *output* is the normed hidden state
    that enters q/k/v: the "attention input" of paper B. ``linears`` maps short role names to
    paths relative to a block, in execution order (q, k, v, o, gate, up, down).
    ``attn_layer_idx`` is the attribute (relative to a block) holding the layer index used by a KV
    cache, renumbered when blocks are skipped (None where the architecture keeps no such index).
    ``num_layers_attr`` is a dotted path in ``model.config`` (``"text_config.num_hidden_layers"``
    for DiffusionGemma); :meth:`layer_config` returns the config object holding it (and
    ``layer_types`` where present).
    ``logits_fn`` is the forward used for analysis (hides each architecture's calling convention).
    ``noise`` is ``"mask"`` for masked diffusion (needs a mask token) or ``"uniform"`` where the
    denoiser starts from random tokens (DiffusionGemma: no mask token exists).
    ``unsupported`` maps paths (relative to the model) whose presence means the adapter cannot
    address every block to the error message naming the fix.
    """

    name: str
    blocks: str
    embed: str
    final_norm: str
    lm_head: str
    attn_input: str
    mlp_input: str
    linears: dict[str, str]
    block_returns_tuple: bool = False
    attn_layer_idx: str | None = "self_attn.layer_idx"
    num_layers_attr: str = "num_hidden_layers"
    logits_fn: LogitsFn = field(default=default_logits, compare=False)
    noise: str = "mask"
    unsupported: dict[str, str] = field(default_factory=dict)

    # -- accessors ---------------------------------------------------------------------------
    def check_supported(self, model: nn.Module) -> None:
        """Raise the adapter's :class:`LayerwiseError` when ``model`` has a layout it cannot address."""
        for path, why in self.unsupported.items():
            if has_path(model, path):
                raise LayerwiseError(why)

    def get_blocks(self, model: nn.Module) -> nn.ModuleList:
        """The model's transformer blocks, in execution order."""
        try:
            return get_path(model, self.blocks)
        except AttributeError:
            self.check_supported(model)
            raise LayerwiseError(
                f"adapter {self.name!r} expects blocks at '{self.blocks}' but {type(model).__name__} has none "
                f"(top-level modules {[n for n, _ in model.named_children()]}); pick another adapter or "
                "let infer_adapter(model) choose"
            ) from None

    def num_layers(self, model: nn.Module) -> int:
        return len(self.get_blocks(model))

    def block(self, model: nn.Module, i: int) -> nn.Module:
        blocks = self.get_blocks(model)
        check_layer_index(i, len(blocks))
        return blocks[i]

    def attn_input_module(self, block: nn.Module) -> nn.Module:
        """Module whose output ``[B, T, d]`` is the normed input of q/k/v (paper B's QKV input)."""
        return get_path(block, self.attn_input)

    def mlp_input_module(self, block: nn.Module) -> nn.Module:
        """Module whose output ``[B, T, d]`` is the normed input of the MLP."""
        return get_path(block, self.mlp_input)

    def block_linears(self, block: nn.Module) -> dict[str, nn.Linear]:
        """Role -> Linear for one block, in execution order (q, k, v, o, gate, up, down).

        A role whose module is None in this block is left out (DiffusionGemma's full-attention layers
        share keys and values: ``v_proj is None`` there)."""
        mods = {role: get_path(block, p) for role, p in self.linears.items()}
        return {role: m for role, m in mods.items() if m is not None}

    def named_linears(self, model: nn.Module) -> Iterator[tuple[int, str, nn.Linear]]:
        """(layer index, role, module) for every Linear of every block."""
        for i, blk in enumerate(self.get_blocks(model)):
            for role, mod in self.block_linears(blk).items():
                yield i, role, mod

    def get_final_norm(self, model: nn.Module) -> nn.Module:
        return get_path(model, self.final_norm)

    def get_lm_head(self, model: nn.Module) -> nn.Module:
        try:
            return get_path(model, self.lm_head)
        except AttributeError:
            raise LayerwiseError(
                f"adapter {self.name!r}: no LM head at '{self.lm_head}' in {type(model).__name__} "
                "(tied embeddings?); use get_embed(model).weight as the head matrix"
            ) from None

    def get_embed(self, model: nn.Module) -> nn.Module:
        return get_path(model, self.embed)

    def layer_config(self, model: nn.Module) -> Any:
        """The config object holding ``num_layers_attr``'s last part (and ``layer_types`` if any)."""
        prefix = self.num_layers_attr.rpartition(".")[0]
        return get_path(model.config, prefix)

    def config_num_layers(self, model: nn.Module) -> int:
        return int(get_path(model.config, self.num_layers_attr))

    def set_config_num_layers(self, model: nn.Module, n: int) -> None:
        """Write the layer count into the config (skipping that removes blocks must keep it in sync)."""
        set_path(model.config, self.num_layers_attr, n)

    def logits(self, model: nn.Module, input_ids: torch.Tensor,
               attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, T, V]`` for ``input_ids [B, T]`` (``attention_mask [B, T]``, 1 = real token).

        Hides each architecture's calling convention; position alignment is unchanged (use
        ``Family.shifted_logits`` to align).
        """
        return self.logits_fn(model, input_ids, attention_mask)

    @staticmethod
    def hidden_from_output(out: Any) -> torch.Tensor:
        """A block's output hidden state, whether the block returns a tensor or a tuple."""
        if isinstance(out, torch.Tensor):
            return out
        if isinstance(out, (tuple, list)):
            return out[0]
        if hasattr(out, "hidden_states"):
            return out.hidden_states
        raise TypeError(f"cannot find the hidden state in a block output of type {type(out)}")

    def matches(self, model: nn.Module) -> bool:
        """True when every path this adapter needs exists in ``model``."""
        if not all(has_path(model, p) for p in (self.blocks, self.final_norm, self.lm_head, self.embed)):
            return False
        blocks = get_path(model, self.blocks)
        return len(blocks) > 0 and all(
            has_path(blocks[0], p) for p in [self.attn_input, self.mlp_input, *self.linears.values()]
        )


# ---------------------------------------------------------------------------------------------
# Architecture: adapter + detection + load-time fixes + config checks
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadPatches:
    """Load-time fixes for remote code written for transformers 4.x, in the order loading meets them.

    ``cls``: on the class the checkpoint's ``auto_map`` names, before ``from_pretrained``;
    ``config``: on the config object passed to ``from_pretrained``; ``model``: on the loaded model.
    Each is a plain function whose docstring names the failure it fixes; each is idempotent and
    leaves alone what does not need fixing.
    """

    cls: tuple[Callable[[type[Any]], Any], ...] = ()
    config: tuple[Callable[[Any], Any], ...] = ()
    model: tuple[Callable[[nn.Module], Any], ...] = ()

    def apply_cls(self, cls: type[Any]) -> type[Any]:
        for fix in self.cls:
            fix(cls)
        return cls

    def apply_config(self, config: Any) -> Any:
        for fix in self.config:
            fix(config)
        return config

    def apply_model(self, model: nn.Module) -> nn.Module:
        for fix in self.model:
            fix(model)
        return model

    def all(self) -> tuple[Callable[..., Any], ...]:
        return (*self.cls, *self.config, *self.model)


def config_fields(config: Any) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """``(model_type, architectures, auto_map)`` of a config given as a ``config.json`` dict, a
    transformers config object or None (then ``("", (), {})``)."""
    if config is None:
        return "", (), {}
    get = config.get if isinstance(config, Mapping) else (lambda k, d=None: getattr(config, k, d))
    model_type = str(get("model_type", "") or "")
    architectures = tuple(str(a) for a in (get("architectures", None) or ()))
    auto_map = dict(get("auto_map", None) or {})
    return model_type, architectures, auto_map


def auto_map_refs(auto_map: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(module, class)`` of every reference in an ``auto_map``: ``"modeling_llada.LLaDAModelLM"`` ->
    ``("modeling_llada", "LLaDAModelLM")``; a ``"repo--module.Class"`` prefix and tokenizer pairs are
    handled."""
    out = []
    for ref in auto_map.values():
        for r in ref if isinstance(ref, (list, tuple)) else [ref]:
            if isinstance(r, str) and "." in r:
                module, _, cls = r.split("--")[-1].rpartition(".")
                out.append((module, cls))
    return out


@dataclass(frozen=True)
class Architecture:
    """One architecture: its :class:`LayerAdapter` and what loading a checkpoint of it needs.

    A checkpoint's config names the architecture through ``model_type`` (compared case-insensitively
    with ``model_types``), ``architectures`` (class names, ``class_names``) or, for remote code, the
    modules its ``auto_map`` points at (``remote_modules``, e.g. ``"modeling_llada"``).
    ``remote_code``: the code ships with the checkpoint (``trust_remote_code``), so loading it applies
    ``patches``. ``auto_class``: the transformers class (by name) or ``auto_map`` key that loads it.
    ``check_config``: raises :class:`LayerwiseError` for config values the adapter cannot handle.
    ``name_hints``: substrings of an in-memory model's class name, tried first by ``infer_adapter``.
    """

    adapter: LayerAdapter
    model_types: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()
    remote_modules: tuple[str, ...] = ()
    remote_code: bool = False
    auto_class: str = "AutoModelForCausalLM"
    patches: LoadPatches = field(default_factory=LoadPatches)
    check_config: Callable[[Any], None] | None = None
    name_hints: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.adapter.name

    def match_rank(self, config: Any) -> int | None:
        """How ``config`` names this architecture: 0 by ``model_type``, 1 by ``architectures``, 2 by an
        ``auto_map`` module; None when it does not."""
        model_type, architectures, auto_map = config_fields(config)
        if model_type.lower() in {t.lower() for t in self.model_types}:
            return 0
        if set(architectures) & set(self.class_names):
            return 1
        if {m for m, _ in auto_map_refs(auto_map)} & set(self.remote_modules):
            return 2
        return None

    def prepare_config(self, config: Any) -> Any:
        """Check the config (:class:`LayerwiseError` for what the adapter cannot handle), then fix it."""
        if self.check_config is not None:
            self.check_config(config)
        return self.patches.apply_config(config)
