"""Model registry, loading, and layer adapters.

Every probe, skip, ablation, compression pass and sampler reaches a model's inside only through a
:class:`LayerAdapter`, so the same code runs on the project's triplet (transformers Llama naming),
Qwen2.5 / Llama-3.1 (Llama naming), Dream's remote code (Qwen2 naming, tuple block outputs, shifted
logits), LLaDA's remote code (``transformer.blocks`` naming, tuple outputs), GPT-NeoX and
DiffusionGemma (an encoder-decoder block-diffusion model; the adapter points at its denoiser).

A forward pass for analysis goes through :meth:`LoadedModel.logits` (i.e. :meth:`LayerAdapter.logits`),
which hides each architecture's input quirks (Dream's 4D boolean mask, LLaDA's causal bias under a
padding mask, DiffusionGemma's prompt-cache + canvas call).

Shapes: hidden states are ``[batch, seq, d_model]`` throughout; logits ``[batch, seq, vocab]``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from .config import LayerwiseError, resolve_device, resolve_dtype
from .diffusion import Family

log = logging.getLogger(__name__)

META_FILE = "layerwise_meta.json"


# ---------------------------------------------------------------------------------------------
# Layer adapters
# ---------------------------------------------------------------------------------------------


def get_path(root: Any, path: str) -> Any:
    """``get_path(model, "model.layers")`` -> ``model.model.layers`` (empty path returns root)."""
    obj: Any = root
    for part in path.split(".") if path else []:
        obj = getattr(obj, part)
    return obj


def set_path(root: Any, path: str, value: Any) -> None:
    parent_path, _, name = path.rpartition(".")
    setattr(get_path(root, parent_path), name, value)


def _has_path(root: Any, path: str) -> bool:
    try:
        get_path(root, path)
        return True
    except AttributeError:
        return False


#: ``logits_fn(model, input_ids [B, T], attention_mask [B, T] or None) -> logits [B, T, V]``
LogitsFn = Callable[[nn.Module, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def _default_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """transformers-style forward; ``use_cache=False`` because analysis never reuses a KV cache."""
    kwargs: dict[str, Any] = {"input_ids": input_ids}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    if getattr(getattr(model, "config", None), "use_cache", None) is not None:
        kwargs["use_cache"] = False
    return model(**kwargs).logits


def _padding_mask_4d(attention_mask: torch.Tensor) -> torch.Tensor:
    """2D padding mask ``[B, T]`` (1 = real token) -> bidirectional 4D bool mask ``[B, 1, T, T]``.

    Every query may attend to every real key; padded keys are hidden. Padded query rows keep their
    own position visible so that sdpa never sees an all-False row (which gives NaN).
    """
    keep = attention_mask.bool()
    m = keep[:, None, None, :].expand(-1, 1, keep.shape[1], -1).clone()
    eye = torch.eye(keep.shape[1], dtype=torch.bool, device=keep.device)[None, None]
    return m | (eye & ~keep[:, None, :, None])


def _llada_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """LLaDA forward. LLaDA's ``attention_mask`` path adds a *causal* bias when the mask has zeros
    (modeling_llada.py: ``attention_bias = get_causal_attention_bias(...)``), which would make padded
    batches causal; so a padding mask is passed as a bidirectional boolean ``attention_bias`` instead."""
    if attention_mask is None or bool(attention_mask.bool().all()):
        return model(input_ids=input_ids).logits
    return model(input_ids=input_ids, attention_bias=_padding_mask_4d(attention_mask)).logits


def _dream_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Dream forward: its attention takes a 4D boolean mask or None; a 2D mask breaks it."""
    if attention_mask is None or bool(attention_mask.bool().all()):
        return model(input_ids=input_ids).logits
    return model(input_ids=input_ids, attention_mask=_padding_mask_4d(attention_mask)).logits


def _diffusion_gemma_logits(model: nn.Module, input_ids: torch.Tensor,
                            attention_mask: torch.Tensor | None) -> torch.Tensor:
    """DiffusionGemma: the encoder writes a KV cache for the prompt, the decoder (the denoiser this
    adapter's blocks point at) refines a canvas that attends to that cache and to itself.

    For analysis the prompt is the BOS token alone and ``input_ids`` is the canvas, so the hooked
    decoder blocks see exactly ``[B, T, d]`` for the given tokens. Logits are float32, soft-capped,
    unshifted (canvas position i scores canvas token i).
    """
    cfg = model.config.get_text_config()
    bos = cfg.bos_token_id if cfg.bos_token_id is not None else 2
    prompt = torch.full((input_ids.shape[0], 1), bos, dtype=input_ids.dtype, device=input_ids.device)
    kwargs: dict[str, Any] = {"input_ids": prompt, "decoder_input_ids": input_ids}
    if attention_mask is not None and not bool(attention_mask.bool().all()):
        ones = torch.ones_like(prompt, dtype=attention_mask.dtype)
        kwargs["attention_mask"] = ones
        kwargs["decoder_attention_mask"] = torch.cat([ones, attention_mask], dim=1)
    return model(**kwargs).logits


_LOGITS_FNS: dict[str, LogitsFn] = {
    "default": _default_logits, "llada": _llada_logits, "dream": _dream_logits,
    "diffusion_gemma": _diffusion_gemma_logits,
}


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
    ``logits_fn`` names the forward used for analysis (key of ``_LOGITS_FNS``).
    ``noise`` is ``"mask"`` for masked diffusion (needs a mask token) or ``"uniform"`` where the
    denoiser starts from random tokens (DiffusionGemma: no mask token exists).
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
    #: config attribute holding the number of layers (for skipping); dotted path into model.config
    num_layers_attr: str = "num_hidden_layers"
    #: substring of the top module's class name / model_type this adapter is for (inference)
    detects: tuple[str, ...] = ()
    logits_fn: str = "default"
    noise: str = "mask"
    #: paths (relative to the model) whose presence means the adapter cannot address every block
    unsupported: dict[str, str] = field(default_factory=dict)

    # -- accessors ---------------------------------------------------------------------------
    def _check_supported(self, model: nn.Module) -> None:
        for path, why in self.unsupported.items():
            if _has_path(model, path):
                raise LayerwiseError(why)

    def get_blocks(self, model: nn.Module) -> nn.ModuleList:
        """The model's transformer blocks, in execution order."""
        try:
            return get_path(model, self.blocks)
        except AttributeError:
            self._check_supported(model)
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
        return _LOGITS_FNS[self.logits_fn](model, input_ids, attention_mask)

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
        if not all(_has_path(model, p) for p in (self.blocks, self.final_norm, self.lm_head, self.embed)):
            return False
        blocks = get_path(model, self.blocks)
        return len(blocks) > 0 and all(
            _has_path(blocks[0], p) for p in [self.attn_input, self.mlp_input, *self.linears.values()]
        )


_LLAMA_LINEARS = {
    "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj",
}

ADAPTERS: dict[str, LayerAdapter] = {
    # transformers Llama / Qwen2 / Mistral naming; also the project's triplet
    "llama": LayerAdapter(
        name="llama", blocks="model.layers", embed="model.embed_tokens", final_norm="model.norm",
        lm_head="lm_head", attn_input="input_layernorm", mlp_input="post_attention_layernorm",
        linears=_LLAMA_LINEARS, detects=("llama", "qwen2", "mistral"),
    ),
    # Dream's remote code (modeling_dream.py): Qwen2 naming, but its decoder layers return a tuple
    # `(hidden,) [+ attn] [+ cache]` and its attention wants a 4D bool mask or None
    "dream": LayerAdapter(
        name="dream", blocks="model.layers", embed="model.embed_tokens", final_norm="model.norm",
        lm_head="lm_head", attn_input="input_layernorm", mlp_input="post_attention_layernorm",
        linears=_LLAMA_LINEARS, block_returns_tuple=True, detects=("dream",), logits_fn="dream",
    ),
    # LLaDA's remote code (modeling_llada.py, LLaDALlamaBlock): blocks return (x, cache);
    # LLaDAModelLM.model is LLaDAModel, whose `transformer` is a ModuleDict
    "llada": LayerAdapter(
        name="llada", blocks="model.transformer.blocks", embed="model.transformer.wte",
        final_norm="model.transformer.ln_f", lm_head="model.transformer.ff_out",
        attn_input="attn_norm", mlp_input="ff_norm",
        linears={"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "attn_out",
                 "gate": "ff_proj", "up": "up_proj", "down": "ff_out"},
        block_returns_tuple=True, attn_layer_idx="layer_id", num_layers_attr="n_layers",
        detects=("llada",), logits_fn="llada",
        unsupported={"model.transformer.block_groups": (
            "this LLaDA checkpoint groups its blocks (config.block_group_size > 1, blocks under "
            "model.transformer.block_groups): per-block hooks and skipping need block_group_size=1; "
            "load it with AutoConfig, set config.block_group_size = 1 and pass config=... to from_pretrained "
            "(the weights' names do not depend on the grouping)"
        )},
    ),
    # GPT-NeoX / Pythia (transformers 5.17 gpt_neox): fused qkv, no gate, parallel residual. The head
    # is `lm_head` in transformers 5 (it was `embed_out` in 4.x; checkpoints are renamed on load)
    "gpt_neox": LayerAdapter(
        name="gpt_neox", blocks="gpt_neox.layers", embed="gpt_neox.embed_in",
        final_norm="gpt_neox.final_layer_norm", lm_head="lm_head",
        attn_input="input_layernorm", mlp_input="post_attention_layernorm",
        linears={"qkv": "attention.query_key_value", "o": "attention.dense",
                 "up": "mlp.dense_h_to_4h", "down": "mlp.dense_4h_to_h"},
        attn_layer_idx="attention.layer_idx", detects=("gpt_neox", "gptneox", "pythia"),
    ),
    # DiffusionGemma (transformers.models.diffusion_gemma, DiffusionGemmaForBlockDiffusion): the
    # adapter addresses the decoder (the denoiser). Its weights are tied to the encoder's, so an
    # in-place weight edit (compression) changes both; hooks and skipping affect the denoiser only.
    # Blocks return a tensor. The MoE experts are 3D Parameters, not Linears: only the dense MLP's
    # Linears are listed. Uniform-noise diffusion: there is no mask token.
    "diffusion_gemma": LayerAdapter(
        name="diffusion_gemma", blocks="model.decoder.layers", embed="model.decoder.embed_tokens",
        final_norm="model.decoder.norm", lm_head="lm_head",
        attn_input="input_layernorm", mlp_input="pre_feedforward_layernorm",
        linears=_LLAMA_LINEARS, num_layers_attr="text_config.num_hidden_layers",
        detects=("diffusion_gemma", "diffusiongemma"), logits_fn="diffusion_gemma", noise="uniform",
    ),
}


def check_layer_index(i: int, n_layers: int) -> None:
    if not isinstance(i, int) or isinstance(i, bool):
        raise LayerwiseError(f"layer index {i!r} must be an int in [0, {n_layers - 1}]")
    if not 0 <= i < n_layers:
        raise LayerwiseError(
            f"layer index {i} is out of range: this model has {n_layers} layers, use 0..{n_layers - 1}"
        )


def _module_names(model: nn.Module, depth: int = 3, limit: int = 40) -> list[str]:
    """Dotted names of modules up to ``depth`` levels (for error messages)."""
    names = [n for n, _ in model.named_modules() if n and n.count(".") < depth]
    return names[:limit] + (["..."] if len(names) > limit else [])


def infer_adapter(model: nn.Module) -> LayerAdapter:
    """Pick the adapter whose module paths exist in ``model``; error says why none fits."""
    tag = (type(model).__name__ + " " + str(getattr(getattr(model, "config", None), "model_type", ""))).lower()
    # adapters whose `detects` names the model come first: Dream and Llama share paths
    ordered = sorted(ADAPTERS.values(), key=lambda a: not any(d in tag for d in a.detects))
    for ad in ordered:
        ad._check_supported(model)
        if ad.matches(model):
            return ad
    raise LayerwiseError(
        f"no layer adapter fits {type(model).__name__}: its modules are {_module_names(model)}; known "
        f"adapters {sorted(ADAPTERS)} look for e.g. 'model.layers.0.self_attn.q_proj' (llama), "
        "'model.transformer.blocks.0.q_proj' (llada), 'gpt_neox.layers.0.attention.query_key_value'. "
        "Register one with layerwise.models.register_adapter(LayerAdapter(...))"
    )


def register_adapter(adapter: LayerAdapter) -> None:
    ADAPTERS[adapter.name] = adapter


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplerDefaults:
    """Diffusion sampler defaults (LLaDA generate.py naming; Dream's map onto the same fields).

    ``alg`` is the remasking / unmasking order: ``"low_confidence"`` / ``"random"`` (LLaDA),
    ``"entropy"`` / ``"maskgit_plus"`` / ``"topk_margin"`` / ``"origin"`` (Dream). ``top_p`` and
    ``alg_temp`` are Dream's; ``eps`` is Dream's smallest timestep.
    """

    gen_length: int = 256
    steps: int = 256
    block_length: int = 32
    temperature: float = 0.0
    remasking: str = "low_confidence"
    top_p: float | None = None
    alg_temp: float | None = None
    eps: float | None = None


#: LLaDA generate.py (GSM8K settings of the paper: gen_length 256, steps 256, block_length 32)
LLADA_SAMPLER = SamplerDefaults(gen_length=256, steps=256, block_length=32, temperature=0.0,
                                remasking="low_confidence")
#: Dream's diffusion_generate (generation_utils.py): no blocks (block_length = gen_length), its README's
#: settings max_new_tokens 256 = steps, temperature 0.2, top_p 0.95, alg "entropy", eps 1e-3
DREAM_SAMPLER = SamplerDefaults(gen_length=256, steps=256, block_length=256, temperature=0.2,
                                remasking="entropy", top_p=0.95, alg_temp=0.0, eps=1e-3)
#: DiffusionGemma's own generate (DiffusionGemmaGenerationConfig defaults: 48 denoising steps over a
#: canvas of config.canvas_length = 256 tokens); the masked-diffusion sampler does not apply
DIFFUSION_GEMMA_SAMPLER = SamplerDefaults(gen_length=256, steps=48, block_length=256, temperature=0.0,
                                          remasking="entropy_bound")


@dataclass(frozen=True)
class ModelSpec:
    """What the library needs to know about a model beyond its weights.

    ``auto_class``: the transformers class (by name) or remote-code ``auto_map`` key used to load it;
    ``patches``: names in :data:`PATCHES` applied at load (remote code written for transformers 4).
    """

    model_id: str
    family: Family
    adapter: str
    mask_token_id: int | None = None
    dtype: str = "bfloat16"
    trust_remote_code: bool = False
    sampler: SamplerDefaults = field(default_factory=SamplerDefaults)
    notes: str = ""
    auto_class: str = "AutoModelForCausalLM"
    patches: tuple[str, ...] = ()

    @property
    def shifted_logits(self) -> bool:
        return self.family.shifted_logits


REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    REGISTRY[spec.model_id] = spec
    return spec


for _id in ("GSAI-ML/LLaDA-8B-Base", "GSAI-ML/LLaDA-8B-Instruct"):
    register(ModelSpec(_id, Family.DLM, "llada", mask_token_id=126336, trust_remote_code=True,
                       sampler=LLADA_SAMPLER, auto_class="AutoModel", patches=("llada",),
                       notes="remote code (modeling_llada.py); transformers-5 patches applied at load; "
                             "use the Base model for likelihood tasks"))
for _id in ("Dream-org/Dream-v0-Base-7B", "Dream-org/Dream-v0-Instruct-7B"):
    register(ModelSpec(_id, Family.AR2DLM, "dream", mask_token_id=151666, trust_remote_code=True,
                       sampler=DREAM_SAMPLER, auto_class="AutoModel", patches=("dream",),
                       notes="remote code (modeling_dream.py); shifted logits; transformers-5 RoPE patch at load"))
for _id in ("Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-7B-Instruct", "meta-llama/Llama-3.1-8B",
            "meta-llama/Llama-3.1-8B-Instruct"):
    register(ModelSpec(_id, Family.AR, "llama", notes="native transformers; causal"))
register(ModelSpec("google/diffusiongemma-26B-A4B-it", Family.DLM, "diffusion_gemma", mask_token_id=None,
                   sampler=DIFFUSION_GEMMA_SAMPLER, auto_class="DiffusionGemmaForBlockDiffusion",
                   notes="native in transformers 5.17 (model_type diffusion_gemma): AR encoder writes the prompt "
                         "cache, a bidirectional MoE denoiser refines a 256-token canvas of random tokens "
                         "(uniform noise, no mask token); the adapter addresses the denoiser"))


def spec_for(model_id: str) -> ModelSpec | None:
    """Registry entry for a hub id, or the triplet metadata of a local checkpoint directory."""
    if model_id in REGISTRY:
        return REGISTRY[model_id]
    meta = Path(model_id) / META_FILE
    if meta.is_file():
        m = json.loads(meta.read_text())
        return ModelSpec(model_id=str(model_id), family=Family(m["objective"]), adapter=m.get("adapter", "llama"),
                         mask_token_id=m.get("mask_token_id"), dtype="auto",
                         sampler=SamplerDefaults(**m.get("sampler", {})))
    return None


@dataclass
class LoadedModel:
    """A model with everything the library needs to drive it."""

    model: nn.Module
    tokenizer: Any
    spec: ModelSpec
    adapter: LayerAdapter

    @property
    def family(self) -> Family:
        return self.spec.family

    @property
    def device(self) -> torch.device:
        """Where inputs go: the embedding's device (GPU 0 of a model dispatched with device_map)."""
        try:
            for p in self.adapter.get_embed(self.model).parameters():
                if p.device.type != "meta":
                    return p.device
        except AttributeError:
            pass
        return next(self.model.parameters()).device

    @property
    def name(self) -> str:
        return Path(self.spec.model_id).name if os.path.isdir(self.spec.model_id) else self.spec.model_id

    @property
    def num_layers(self) -> int:
        return self.adapter.num_layers(self.model)

    @property
    def is_dispatched(self) -> bool:
        """True when accelerate spread the model over devices (``device_map``)."""
        return bool(getattr(self.model, "hf_device_map", None))

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, T, V]`` through the adapter's forward (inputs moved to :attr:`device`)."""
        dev = self.device
        am = attention_mask.to(dev) if attention_mask is not None else None
        return self.adapter.logits(self.model, input_ids.to(dev), am)


def wrap(model: nn.Module, tokenizer: Any, family: Family | str, *, mask_token_id: int | None = None,
         adapter: LayerAdapter | str | None = None, model_id: str | None = None,
         spec: ModelSpec | None = None) -> LoadedModel:
    """Wrap an in-memory model (e.g. a test model) into a :class:`LoadedModel`."""
    family = Family(family)
    if isinstance(adapter, str):
        if adapter not in ADAPTERS:
            raise LayerwiseError(f"unknown adapter {adapter!r}: use one of {sorted(ADAPTERS)} or register_adapter(...)")
        ad = ADAPTERS[adapter]
    else:
        ad = adapter or infer_adapter(model)
    if mask_token_id is None and tokenizer is not None:
        mask_token_id = getattr(tokenizer, "mask_token_id", None)
    if family.is_diffusion and ad.noise == "mask" and mask_token_id is None:
        raise LayerwiseError(
            "a diffusion model needs a mask token id: the tokenizer has no mask token; "
            "pass mask_token_id=... or add '<|mask|>' as the tokenizer's mask_token"
        )
    if spec is None:
        spec = ModelSpec(model_id or type(model).__name__, family, ad.name, mask_token_id=mask_token_id)
    else:
        spec = replace(spec, family=family, adapter=ad.name, mask_token_id=mask_token_id)
    return LoadedModel(model, tokenizer, spec, ad)


# ---------------------------------------------------------------------------------------------
# transformers-5 fixes for remote code written for transformers 4.x
# ---------------------------------------------------------------------------------------------


def _noop_tie_weights(self: nn.Module, *args: Any, **kwargs: Any) -> None:
    """LLaDA-8B does not tie weights (config.weight_tying = False), so there is nothing to tie."""


def patch_llada_class(cls: type) -> type:
    """Class-level fixes for ``LLaDAModelLM`` (apply BEFORE ``from_pretrained``).

    - ``all_tied_weights_keys``: transformers 5 sets it in ``post_init()``, which LLaDA's ``__init__``
      never calls; without it ``from_pretrained`` fails with
      ``'LLaDAModelLM' object has no attribute 'all_tied_weights_keys'``. transformers 5 reads it as a
      mapping (``.keys()``), so an empty dict, not a list.
    - ``_tied_weights_keys``: transformers 5 expects a {target: source} dict (or None); empty = no ties.
    - ``tie_weights``: LLaDA's takes no arguments; transformers 5 calls
      ``tie_weights(missing_keys=..., recompute_mapping=...)`` -> TypeError. LLaDA-8B has
      ``weight_tying=False`` (separate ``transformer.ff_out``), so a no-op is exact.
    """
    cls._tied_weights_keys = {}
    cls.all_tied_weights_keys = {}
    cls.tie_weights = _noop_tie_weights
    return cls


def patch_llada_config(config: Any) -> Any:
    """``LLaDAConfig`` has no ``use_cache``; ``LLaDAModelLM.forward`` reads ``self.config.use_cache``
    when the caller passes none, so every forward fails with
    ``'LLaDAConfig' object has no attribute 'use_cache'``. LLaDA has no usable KV cache for masked
    diffusion anyway: False."""
    if not hasattr(config, "use_cache") or config.use_cache is None:
        config.use_cache = False
    return config


def compute_default_rope_parameters(config: Any, device: torch.device | str | None = None,
                                    seq_len: int | None = None, **_: Any) -> tuple[torch.Tensor, float]:
    """The original RoPE inverse frequencies ``1 / theta^(2i/d)`` ``[d/2]`` and scaling 1.0.

    transformers 5 dropped ``ROPE_INIT_FUNCTIONS["default"]`` (each model now has its own
    ``compute_default_rope_parameters``); Dream's remote code still looks it up. Reads
    ``rope_theta`` from ``config.rope_parameters`` (transformers 5) or ``config.rope_theta`` (4.x).
    """
    rp = getattr(config, "rope_parameters", None) or {}
    base = float(rp.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    dim = int(head_dim * float(rp.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0))))
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    return inv_freq.to(device) if device is not None else inv_freq, 1.0


def patch_rope_default() -> None:
    """Give transformers 5 back a ``"default"`` RoPE initialiser. Without it Dream cannot even build
    its rotary embeddings: ``KeyError: 'default'`` from ``ROPE_INIT_FUNCTIONS``. Idempotent; no
    native transformers 5 model looks the key up, so they are unaffected."""
    from transformers import modeling_rope_utils

    modeling_rope_utils.ROPE_INIT_FUNCTIONS.setdefault("default", compute_default_rope_parameters)


@contextlib.contextmanager
def flash_sdpa_under_compile() -> Iterator[None]:
    """Let SDPA pick its flash kernel inside ``torch.compile`` when no attention mask is given.

    transformers 5 materialises the (all-true) causal or bidirectional mask whenever it is being
    traced (``is_tracing`` is true under dynamo), to keep exported graphs shape-generic. A compiled
    training step then hands SDPA an explicit ``[B, 1, L, L]`` mask, which rules out the flash kernel.
    Inside this context a call with no padding mask, no local window and full-length queries skips the
    mask as it does in eager mode: exactly the same attention, decided from shapes only (no data-
    dependent branch), so it is safe to trace. Anything else goes to transformers' own checks.
    """
    from transformers import masking_utils as mu

    orig_causal, orig_bidir = mu._ignore_causal_mask_sdpa, mu._ignore_bidirectional_mask_sdpa

    def causal(padding_mask: Any, q_length: int, kv_length: int, q_offset: int, kv_offset: int,
               local_attention_size: int | None = None) -> bool:
        if padding_mask is None and local_attention_size is None and q_length == kv_length and q_offset == 0:
            return True
        return orig_causal(padding_mask, q_length, kv_length, q_offset, kv_offset, local_attention_size)

    def bidirectional(padding_mask: Any, kv_length: int, local_attention_size: int | None = None) -> bool:
        if padding_mask is None and local_attention_size is None:
            return True
        return orig_bidir(padding_mask, kv_length, local_attention_size)

    mu._ignore_causal_mask_sdpa, mu._ignore_bidirectional_mask_sdpa = causal, bidirectional
    try:
        yield
    finally:
        mu._ignore_causal_mask_sdpa, mu._ignore_bidirectional_mask_sdpa = orig_causal, orig_bidir


def patch_dream_class(cls: type) -> type:
    """Class-level fixes for Dream's ``DreamModel`` (apply BEFORE ``from_pretrained``).

    Dream's checkpoints carry ``rotary_emb.inv_freq`` buffers that transformers 5 models register as
    non-persistent; without ignoring them every load reports them as unexpected keys (and strict
    loaders fail). The regex list is extended, never replaced.
    """
    patch_rope_default()
    ignore = list(getattr(cls, "_keys_to_ignore_on_load_unexpected", None) or [])
    if r"rotary_emb\.inv_freq" not in ignore:
        cls._keys_to_ignore_on_load_unexpected = [*ignore, r"rotary_emb\.inv_freq"]
    return cls


def reset_rope_buffers(model: nn.Module) -> int:
    """Recompute every rotary embedding's ``inv_freq`` ``[head_dim/2]`` after loading; returns how many.

    transformers 5 builds models on the meta device and then materialises non-persistent buffers
    without values; its own ``_init_weights`` refills rotary buffers only for modules that define
    ``compute_default_rope_parameters``, which Dream's ``DreamRotaryEmbedding`` does not, and Dream's
    ``_init_weights`` skips them. Without this the RoPE frequencies are uninitialised memory and every
    logit is wrong (no error is raised).
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
        mod.attention_scaling = scale
        n += 1
    return n


def _patch_dream_model(model: nn.Module) -> None:
    reset_rope_buffers(model)


@dataclass(frozen=True)
class Patch:
    """Load-time fixes for one remote-code family: class-level (before from_pretrained), config-level
    (on the config object passed to from_pretrained) and model-level (after loading)."""

    cls: Callable[[type], type] | None = None
    config: Callable[[Any], Any] | None = None
    model: Callable[[nn.Module], None] | None = None


PATCHES: dict[str, Patch] = {
    "llada": Patch(cls=patch_llada_class, config=patch_llada_config,
                   model=lambda m: patch_llada_config(m.config)),
    "dream": Patch(cls=patch_dream_class, model=_patch_dream_model),
}

#: kept for callers of the first draft: adapter name -> model-level fix
LOAD_PATCHES: dict[str, Callable[[nn.Module], None]] = {
    k: p.model for k, p in PATCHES.items() if p.model is not None
}


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _resolve_class(spec: ModelSpec, config: Any) -> type:
    """The class that loads ``spec``: remote code through ``config.auto_map`` (patched), else a
    transformers class or Auto class by name."""
    import transformers

    if spec.trust_remote_code and getattr(config, "auto_map", None):
        from transformers.dynamic_module_utils import get_class_from_dynamic_module

        auto_map = config.auto_map
        ref = auto_map.get(spec.auto_class) or auto_map.get("AutoModelForCausalLM") or auto_map.get("AutoModel")
        if ref is None:
            raise LayerwiseError(
                f"{spec.model_id}: its config.auto_map {auto_map} has no {spec.auto_class}/AutoModel entry; "
                "register a ModelSpec with the right auto_class"
            )
        cls = get_class_from_dynamic_module(ref, spec.model_id)
        for name in spec.patches:
            if PATCHES[name].cls is not None:
                PATCHES[name].cls(cls)
        return cls
    if not hasattr(transformers, spec.auto_class):
        raise LayerwiseError(
            f"transformers {transformers.__version__} has no {spec.auto_class} (needed for {spec.model_id}); "
            "upgrade transformers (pip install -U 'transformers>=5.17')"
        )
    return getattr(transformers, spec.auto_class)


def _guess_family(config: Any, model_id: str) -> Family:
    """Family of an unknown model, or an error when it may be a diffusion model."""
    tag = f"{model_id} {getattr(config, 'model_type', '')}".lower()
    if getattr(config, "is_causal", True) is False or any(w in tag for w in ("diffusion", "llada", "dream", "mdm")):
        raise LayerwiseError(
            f"{model_id} looks like a diffusion LM (bidirectional or named so) but is not in the registry: "
            "pass family='dlm' (position i predicts token i) or family='ar2dlm' (shifted, Dream-style)"
        )
    return Family.AR


def load(model_id: str, *, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
         device_map: str | dict | None = None, family: Family | str | None = None,
         trust_remote_code: bool | None = None, **from_pretrained_kwargs: Any) -> LoadedModel:
    """Load a model by hub id or local path, with its tokenizer, spec and adapter.

    Registry ids (:data:`REGISTRY`) get their family, mask token, dtype, sampler defaults and load-time
    patches. Unknown ids load through the Auto classes; the adapter is inferred from module names and
    the choice is logged (or a :class:`LayerwiseError` lists the modules found). ``device_map``
    (``"auto"`` or a dict of module -> device) dispatches a large model over the GPUs of a node through
    accelerate; :attr:`LoadedModel.device` then names the embedding's device, where inputs go.
    """
    from transformers import AutoConfig, AutoTokenizer

    spec = spec_for(model_id)
    registered = spec is not None
    trc = spec.trust_remote_code if registered and trust_remote_code is None else bool(trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(model_id, trust_remote_code=trc)
    except (OSError, ValueError) as e:
        raise LayerwiseError(
            f"could not load the config of {model_id!r}: {e.__class__.__name__}: {str(e).splitlines()[0]}. "
            "Check the id or path; without hub access, download the weights first and pass the local path"
            + ("" if trc else "; remote-code models need trust_remote_code=True")
        ) from e
    if spec is None:
        fam = Family(family) if family is not None else _guess_family(config, model_id)
        spec = ModelSpec(model_id, fam, adapter="?", dtype="auto", trust_remote_code=trc)
    elif family is not None:
        spec = replace(spec, family=Family(family))
    for name in spec.patches:
        if PATCHES[name].config is not None:
            PATCHES[name].config(config)

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(spec.dtype if dtype == "auto" and spec.dtype != "auto" else dtype, dev)
    kwargs: dict[str, Any] = {"config": config, "dtype": torch_dtype, **from_pretrained_kwargs}
    if spec.trust_remote_code:
        kwargs["trust_remote_code"] = True
    if device_map is not None:
        kwargs["device_map"] = device_map
    cls = _resolve_class(spec, config)
    try:
        model = cls.from_pretrained(model_id, **kwargs)
    except OSError as e:
        raise LayerwiseError(
            f"could not load {model_id!r}: {e.__class__.__name__}: {str(e).splitlines()[0]}. "
            "Check the id or path; without hub access, download the weights first and pass the local path"
        ) from e
    if device_map is None:
        model.to(dev)
    model.eval()
    for name in spec.patches:
        if PATCHES[name].model is not None:
            PATCHES[name].model(model)
    try:
        tok = AutoTokenizer.from_pretrained(model_id, trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError, TypeError) as e:
        log.warning("no tokenizer for %s (%s): LoadedModel.tokenizer is None", model_id, e)
        tok = None

    if spec.adapter == "?":
        ad = infer_adapter(model)
        log.warning("model %s is not in the registry: inferred layer adapter %r (family %s)",
                    model_id, ad.name, spec.family.value)
        spec = replace(spec, adapter=ad.name)
    else:
        ad = ADAPTERS[spec.adapter]
    mask = spec.mask_token_id if spec.mask_token_id is not None else getattr(tok, "mask_token_id", None)
    return wrap(model, tok, spec.family, mask_token_id=mask, adapter=ad, model_id=model_id, spec=spec)


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
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=d_model, intermediate_size=mlp, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=max_position_embeddings, attn_implementation="sdpa")
    cfg.is_causal = not family.is_diffusion
    torch.manual_seed(seed)
    with torch.device(dev):
        model = LlamaForCausalLM._from_config(cfg, dtype=resolve_dtype(dtype, dev)).eval()
    return wrap(model, None, family, mask_token_id=vocab - 1 if family.is_diffusion else None,
                adapter="llama", model_id=f"random-{family.value}-{layers}L-d{d_model}")
