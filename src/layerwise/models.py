"""Model registry, loading, and layer adapters.

Every probe, skip, ablation, compression pass and sampler reaches a model's inside only through a
:class:`LayerAdapter`, so the same code runs on the project's triplet (transformers Llama naming),
Qwen2.5 / Llama-3.1 / Dream (Llama-like naming), LLaDA's remote code (``transformer.blocks`` naming,
tuple outputs), GPT-NeoX and DiffusionGemma.

Shapes: hidden states are ``[batch, seq, d_model]`` throughout.
"""

from __future__ import annotations

import enum
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from .config import LayerwiseError, resolve_device, resolve_dtype

log = logging.getLogger(__name__)

META_FILE = "layerwise_meta.json"


class Family(str, enum.Enum):
    """Training objective family of a model."""

    AR = "ar"  #: causal, next-token prediction (Qwen2.5, Llama-3.1, triplet `ar`)
    DLM = "dlm"  #: masked diffusion, bidirectional, position i predicts token i (LLaDA, triplet `dlm`)
    AR2DLM = "ar2dlm"  #: AR-initialised diffusion, position i predicts token i+1 (Dream, triplet `ar2dlm`)

    @property
    def is_diffusion(self) -> bool:
        return self is not Family.AR

    @property
    def shifted_logits(self) -> bool:
        """True when logits at position i predict token i+1 (AR and Dream-style diffusion)."""
        return self is not Family.DLM


# ---------------------------------------------------------------------------------------------
# Layer adapters
# ---------------------------------------------------------------------------------------------


def get_path(root: nn.Module, path: str) -> Any:
    """``get_path(model, "model.layers")`` -> ``model.model.layers`` (empty path returns root)."""
    obj: Any = root
    for part in path.split(".") if path else []:
        obj = getattr(obj, part)
    return obj


def set_path(root: nn.Module, path: str, value: Any) -> None:
    parent_path, _, name = path.rpartition(".")
    setattr(get_path(root, parent_path), name, value)


def _has_path(root: nn.Module, path: str) -> bool:
    try:
        get_path(root, path)
        return True
    except AttributeError:
        return False


@dataclass(frozen=True)
class LayerAdapter:
    """Where the parts of one architecture live. Paths are dotted attribute paths.

    ``attn_input`` names the module (relative to a block) whose *output* is the normed hidden state
    that enters q/k/v: the "attention input" of paper B. ``linears`` maps short role names to
    paths relative to a block, in execution order (q, k, v, o, gate, up, down).
    ``attn_layer_idx`` is the attribute (relative to a block) holding the layer index used by a KV
    cache, renumbered when blocks are skipped (None where the architecture keeps no such index).
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
    #: config attribute holding the number of layers (for skipping)
    num_layers_attr: str = "num_hidden_layers"
    #: substring of the top module's class name / model_type this adapter is for (inference)
    detects: tuple[str, ...] = ()

    # -- accessors ---------------------------------------------------------------------------
    def get_blocks(self, model: nn.Module) -> nn.ModuleList:
        return get_path(model, self.blocks)

    def num_layers(self, model: nn.Module) -> int:
        return len(self.get_blocks(model))

    def block(self, model: nn.Module, i: int) -> nn.Module:
        blocks = self.get_blocks(model)
        check_layer_index(i, len(blocks))
        return blocks[i]

    def attn_input_module(self, block: nn.Module) -> nn.Module:
        return get_path(block, self.attn_input)

    def mlp_input_module(self, block: nn.Module) -> nn.Module:
        return get_path(block, self.mlp_input)

    def block_linears(self, block: nn.Module) -> dict[str, nn.Linear]:
        """Role -> Linear for one block, in execution order (q, k, v, o, gate, up, down)."""
        return {role: get_path(block, p) for role, p in self.linears.items()}

    def named_linears(self, model: nn.Module) -> Iterator[tuple[int, str, nn.Linear]]:
        """(layer index, role, module) for every Linear of every block."""
        for i, blk in enumerate(self.get_blocks(model)):
            for role, mod in self.block_linears(blk).items():
                yield i, role, mod

    def get_final_norm(self, model: nn.Module) -> nn.Module:
        return get_path(model, self.final_norm)

    def get_lm_head(self, model: nn.Module) -> nn.Module:
        return get_path(model, self.lm_head)

    def get_embed(self, model: nn.Module) -> nn.Module:
        return get_path(model, self.embed)

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
        return all(_has_path(model, p) for p in (self.blocks, self.final_norm, self.lm_head)) and (
            len(self.get_blocks(model)) > 0
            and all(_has_path(self.get_blocks(model)[0], p) for p in [self.attn_input, *self.linears.values()])
        )


_LLAMA_LINEARS = {
    "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj",
}

ADAPTERS: dict[str, LayerAdapter] = {
    # transformers Llama / Qwen2 / Mistral naming; also Dream's remote code and the project's triplet
    "llama": LayerAdapter(
        name="llama", blocks="model.layers", embed="model.embed_tokens", final_norm="model.norm",
        lm_head="lm_head", attn_input="input_layernorm", mlp_input="post_attention_layernorm",
        linears=_LLAMA_LINEARS, detects=("llama", "qwen2", "mistral", "dream"),
    ),
    # LLaDA's remote code (modeling_llada.py): blocks return (x, cache)
    "llada": LayerAdapter(
        name="llada", blocks="model.transformer.blocks", embed="model.transformer.wte",
        final_norm="model.transformer.ln_f", lm_head="model.transformer.ff_out",
        attn_input="attn_norm", mlp_input="ff_norm",
        linears={"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "attn_out",
                 "gate": "ff_proj", "up": "up_proj", "down": "ff_out"},
        block_returns_tuple=True, attn_layer_idx="layer_id", num_layers_attr="n_layers",
        detects=("llada",),
    ),
    # GPT-NeoX / Pythia: fused qkv, no gate
    "gpt_neox": LayerAdapter(
        name="gpt_neox", blocks="gpt_neox.layers", embed="gpt_neox.embed_in",
        final_norm="gpt_neox.final_layer_norm", lm_head="embed_out",
        attn_input="input_layernorm", mlp_input="post_attention_layernorm",
        linears={"qkv": "attention.query_key_value", "o": "attention.dense",
                 "up": "mlp.dense_h_to_4h", "down": "mlp.dense_4h_to_h"},
        attn_layer_idx="attention.layer_idx", detects=("gpt_neox", "gptneox", "pythia"),
    ),
}


def check_layer_index(i: int, n_layers: int) -> None:
    if not isinstance(i, int) or isinstance(i, bool):
        raise LayerwiseError(f"layer index {i!r} must be an int in [0, {n_layers - 1}]")
    if not 0 <= i < n_layers:
        raise LayerwiseError(
            f"layer index {i} is out of range: this model has {n_layers} layers, use 0..{n_layers - 1}"
        )


def infer_adapter(model: nn.Module) -> LayerAdapter:
    """Pick the adapter whose module paths exist in ``model``; error says why none fits."""
    tag = (type(model).__name__ + " " + str(getattr(getattr(model, "config", None), "model_type", ""))).lower()
    ordered = sorted(ADAPTERS.values(), key=lambda a: not any(d in tag for d in a.detects))
    for ad in ordered:
        if ad.matches(model):
            return ad
    top = [n for n, _ in model.named_children()]
    raise LayerwiseError(
        f"no layer adapter fits {type(model).__name__} (top-level modules {top}): known adapters "
        f"{sorted(ADAPTERS)} look for e.g. 'model.layers[i].self_attn.q_proj'. Register one with "
        "layerwise.models.register_adapter(LayerAdapter(...))"
    )


def register_adapter(adapter: LayerAdapter) -> None:
    ADAPTERS[adapter.name] = adapter


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplerDefaults:
    """Masked-diffusion sampler defaults (LLaDA generate.py naming)."""

    gen_length: int = 256
    steps: int = 256
    block_length: int = 32
    temperature: float = 0.0
    remasking: str = "low_confidence"


@dataclass(frozen=True)
class ModelSpec:
    """What the library needs to know about a model beyond its weights."""

    model_id: str
    family: Family
    adapter: str
    mask_token_id: int | None = None
    dtype: str = "bfloat16"
    trust_remote_code: bool = False
    sampler: SamplerDefaults = field(default_factory=SamplerDefaults)
    notes: str = ""

    @property
    def shifted_logits(self) -> bool:
        return self.family.shifted_logits


REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    REGISTRY[spec.model_id] = spec
    return spec


for _id in ("GSAI-ML/LLaDA-8B-Base", "GSAI-ML/LLaDA-8B-Instruct"):
    register(ModelSpec(_id, Family.DLM, "llada", mask_token_id=126336, trust_remote_code=True,
                       notes="remote code; transformers-5 patches applied at load"))
for _id in ("Dream-org/Dream-v0-Base-7B", "Dream-org/Dream-v0-Instruct-7B"):
    register(ModelSpec(_id, Family.AR2DLM, "llama", mask_token_id=151666, trust_remote_code=True,
                       notes="remote code; shifted logits; transformers-5 RoPE patch at load"))
for _id in ("Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-7B-Instruct", "meta-llama/Llama-3.1-8B",
            "meta-llama/Llama-3.1-8B-Instruct"):
    register(ModelSpec(_id, Family.AR, "llama"))


def spec_for(model_id: str) -> ModelSpec | None:
    """Registry entry for a hub id, or the triplet metadata of a local checkpoint directory."""
    if model_id in REGISTRY:
        return REGISTRY[model_id]
    meta = Path(model_id) / META_FILE
    if meta.is_file():
        m = json.loads(meta.read_text())
        return ModelSpec(model_id=str(model_id), family=Family(m["objective"]), adapter="llama",
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
        return next(self.model.parameters()).device

    @property
    def name(self) -> str:
        return Path(self.spec.model_id).name if os.path.isdir(self.spec.model_id) else self.spec.model_id

    @property
    def num_layers(self) -> int:
        return self.adapter.num_layers(self.model)


def wrap(model: nn.Module, tokenizer: Any, family: Family | str, *, mask_token_id: int | None = None,
         adapter: LayerAdapter | str | None = None, model_id: str | None = None) -> LoadedModel:
    """Wrap an in-memory model (e.g. a test model) into a :class:`LoadedModel`."""
    family = Family(family)
    ad = ADAPTERS[adapter] if isinstance(adapter, str) else (adapter or infer_adapter(model))
    if mask_token_id is None and tokenizer is not None:
        mask_token_id = getattr(tokenizer, "mask_token_id", None)
    if family.is_diffusion and mask_token_id is None:
        raise LayerwiseError(
            "a diffusion model needs a mask token id: the tokenizer has no mask token; "
            "pass mask_token_id=... or add '<|mask|>' as the tokenizer's mask_token"
        )
    spec = ModelSpec(model_id or type(model).__name__, family, ad.name, mask_token_id=mask_token_id)
    return LoadedModel(model, tokenizer, spec, ad)


#: load-time fixes keyed by adapter/spec, applied to remote code (see :func:`load`)
LOAD_PATCHES: dict[str, Callable[[nn.Module], None]] = {}


def load(model_id: str, *, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
         device_map: str | dict | None = None, family: Family | str | None = None) -> LoadedModel:
    """Load a model by hub id or local path, with its tokenizer, spec and adapter.

    Unknown ids load through the Auto classes; the adapter is inferred from module names and the
    choice is logged. ``device_map`` (e.g. ``"auto"``) dispatches a large model over the GPUs of a
    node through accelerate.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = spec_for(model_id)
    if spec is None:
        if family is None:
            raise LayerwiseError(
                f"unknown model id {model_id!r}: not in the registry ({', '.join(sorted(REGISTRY))}) "
                f"and not a local checkpoint with {META_FILE}; pass family='ar'|'dlm'|'ar2dlm' to load "
                "it through the Auto classes"
            )
        spec = ModelSpec(model_id, Family(family), adapter="?", dtype="auto")
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(spec.dtype if dtype == "auto" and spec.dtype != "auto" else dtype, dev)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": spec.trust_remote_code}
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(model_id, **kwargs)
    except OSError as e:
        raise LayerwiseError(
            f"could not load {model_id!r}: {e.__class__.__name__}: {str(e).splitlines()[0]}. "
            "Check the id or path; without hub access, download the weights first and pass the local path"
        ) from e
    if device_map is None:
        model.to(dev)
    model.eval()
    tok = AutoTokenizer.from_pretrained(model_id, trust_remote_code=spec.trust_remote_code)
    if spec.adapter == "?":
        ad = infer_adapter(model)
        log.warning("model %s is not in the registry: inferred layer adapter %r", model_id, ad.name)
        spec = ModelSpec(model_id, spec.family, ad.name, mask_token_id=getattr(tok, "mask_token_id", None))
    else:
        ad = ADAPTERS[spec.adapter]
    if spec.adapter in LOAD_PATCHES:
        LOAD_PATCHES[spec.adapter](model)
    return wrap(model, tok, spec.family, mask_token_id=spec.mask_token_id, adapter=ad, model_id=model_id) \
        if spec.mask_token_id is None else LoadedModel(model, tok, spec, ad)
