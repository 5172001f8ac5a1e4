"""Model registry and loading.

:func:`load` takes a hub id or a local folder. Which architecture the checkpoint is (and so its layer
adapter, its forward quirks, whether its code ships with it, and the transformers-5 fixes that code
needs) comes from the checkpoint's config (:func:`layerwise.arch.detect_architecture`), so a hub id and
a local copy of the same model are treated alike. The hub-id registry (:data:`REGISTRY`) keeps what the
config does not say: the training family (how to read the logits), the mask token, the dtype, the
sampler defaults of the model's paper, and which Base and Instruct models pair up.

Every other module reaches a model's inside only through :attr:`LoadedModel.adapter`
(a :class:`layerwise.arch.LayerAdapter`); a forward pass for analysis goes through
:meth:`LoadedModel.logits`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .arch import ADAPTERS, Architecture, LayerAdapter, detect_architecture, infer_adapter
from .config import LayerwiseError, resolve_device, resolve_dtype
from .diffusion import Family, find_mask_token_id

log = logging.getLogger(__name__)

#: metadata file of a triplet checkpoint folder (objective, mask token, sampler defaults)
META_FILE = "layerwise_meta.json"


# ---------------------------------------------------------------------------------------------
# Registry: per-model facts
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplerDefaults:
    """Diffusion sampler defaults (LLaDA generate.py naming; Dream's map onto the same fields).

    ``alg`` is the remasking / unmasking order: ``"low_confidence"`` / ``"random"`` (LLaDA),
    ``"entropy"`` / ``"maskgit_plus"`` / ``"topk_margin"`` / ``"origin"`` (Dream). ``top_p`` and
    ``alg_temp`` are Dream's; ``eps`` is Dream's smallest timestep.

    They live with the registry, not with the architectures: they are the settings of a model's paper
    (a fine-tune of the same architecture may ship others), and a triplet checkpoint stores its own.
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
    """What the library needs to know about a model beyond its weights and config.

    ``adapter`` names the architecture driving a loaded model (filled by :func:`load` / :func:`wrap`;
    registry entries leave it empty: it comes from the checkpoint's config). ``variant`` is ``"base"``
    or ``"instruct"``; ``pair`` is the other half of a Base/Instruct pair (None when none is known).
    """

    model_id: str
    family: Family
    adapter: str = ""
    mask_token_id: int | None = None
    dtype: str = "bfloat16"
    sampler: SamplerDefaults = field(default_factory=SamplerDefaults)
    notes: str = ""
    variant: str = "base"
    pair: str | None = None

    @property
    def shifted_logits(self) -> bool:
        return self.family.shifted_logits


REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add (or replace) a registry entry, keyed by ``spec.model_id``."""
    REGISTRY[spec.model_id] = spec
    return spec


def _register_pair(base: ModelSpec, instruct_id: str, **instruct_changes: Any) -> None:
    register(replace(base, variant="base", pair=instruct_id))
    register(replace(base, model_id=instruct_id, variant="instruct", pair=base.model_id, **instruct_changes))


_register_pair(ModelSpec("GSAI-ML/LLaDA-8B-Base", Family.DLM, mask_token_id=126336, sampler=LLADA_SAMPLER,
                         notes="remote code (modeling_llada.py); use the Base model for likelihood tasks"),
               "GSAI-ML/LLaDA-8B-Instruct")
_register_pair(ModelSpec("Dream-org/Dream-v0-Base-7B", Family.AR2DLM, mask_token_id=151666, sampler=DREAM_SAMPLER,
                         notes="remote code (modeling_dream.py); shifted logits"),
               "Dream-org/Dream-v0-Instruct-7B")
_register_pair(ModelSpec("Qwen/Qwen2.5-7B", Family.AR, notes="native transformers; causal"), "Qwen/Qwen2.5-7B-Instruct")
_register_pair(ModelSpec("meta-llama/Llama-3.1-8B", Family.AR, notes="native transformers; causal"),
               "meta-llama/Llama-3.1-8B-Instruct")
register(ModelSpec("google/diffusiongemma-26B-A4B-it", Family.DLM, mask_token_id=None,
                   sampler=DIFFUSION_GEMMA_SAMPLER, variant="instruct",
                   notes="native in transformers 5.17 (model_type diffusion_gemma): AR encoder writes the prompt "
                         "cache, a bidirectional MoE denoiser refines a 256-token canvas of random tokens "
                         "(uniform noise, no mask token); the adapter addresses the denoiser"))


def _registered(model_id: str) -> ModelSpec:
    if model_id not in REGISTRY:
        raise LayerwiseError(f"{model_id!r} is not in the registry: use one of {sorted(REGISTRY)} "
                             "or register(ModelSpec(...)) it")
    return REGISTRY[model_id]


def base_of(model_id: str) -> str | None:
    """The Base model of a registered id (the id itself for a Base model; None when none is known)."""
    spec = _registered(model_id)
    return spec.model_id if spec.variant == "base" else spec.pair


def instruct_of(model_id: str) -> str | None:
    """The Instruct model of a registered id (the id itself for an Instruct model; None when none is known)."""
    spec = _registered(model_id)
    return spec.model_id if spec.variant == "instruct" else spec.pair


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


# ---------------------------------------------------------------------------------------------
# Loaded models
# ---------------------------------------------------------------------------------------------


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
    mask_token_id = find_mask_token_id(mask_token_id, tokenizer)
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
# Loading
# ---------------------------------------------------------------------------------------------


def _config_error(model_id: str, e: Exception, trust_remote_code: bool | None) -> LayerwiseError:
    return LayerwiseError(
        f"could not load the config of {model_id!r}: {e.__class__.__name__}: {str(e).splitlines()[0]}. "
        "Check the id or path; without hub access, download the weights first and pass the local path"
        + ("" if trust_remote_code is not False else "; remote-code models need trust_remote_code=True")
    )


def read_config(model_id: str) -> dict[str, Any]:
    """The raw ``config.json`` of a hub id or local folder, without importing any remote code."""
    from transformers import PretrainedConfig

    try:
        raw, _ = PretrainedConfig.get_config_dict(model_id)
    except (OSError, ValueError) as e:
        raise _config_error(model_id, e, None) from e
    return raw


def _resolve_class(model_id: str, arch: Architecture | None, config: Any, trust_remote_code: bool) -> type[Any]:
    """The class that loads the checkpoint: remote code through ``config.auto_map`` (with the
    architecture's class-level fixes), else a transformers class or Auto class by name."""
    import transformers

    auto_class = arch.auto_class if arch is not None else "AutoModelForCausalLM"
    auto_map = getattr(config, "auto_map", None)
    if trust_remote_code and auto_map:
        from transformers.dynamic_module_utils import get_class_from_dynamic_module

        ref = auto_map.get(auto_class) or auto_map.get("AutoModelForCausalLM") or auto_map.get("AutoModel")
        if ref is None:
            raise LayerwiseError(
                f"{model_id}: its config.auto_map {auto_map} has no {auto_class}/AutoModel entry; "
                "register an Architecture whose auto_class names the right key"
            )
        cls = get_class_from_dynamic_module(ref, model_id)
        return arch.patches.apply_cls(cls) if arch is not None else cls
    if not hasattr(transformers, auto_class):
        raise LayerwiseError(
            f"transformers {transformers.__version__} has no {auto_class} (needed for {model_id}); "
            "upgrade transformers (pip install -U 'transformers>=5.17')"
        )
    return getattr(transformers, auto_class)


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

    The checkpoint's config decides the architecture (:func:`layerwise.arch.detect_architecture`): its
    adapter, its config checks and, for a recognised remote-code architecture, ``trust_remote_code``
    (unless given) and its transformers-5 fixes. An unrecognised native model gets an adapter inferred
    from its module names (logged); unrecognised remote code is refused unless ``trust_remote_code=True``.
    Registry ids (:data:`REGISTRY`) and triplet folders add their family, mask token, dtype and sampler
    defaults. ``device_map`` (``"auto"`` or a dict of module -> device) dispatches a large model over the
    GPUs of a node through accelerate; :attr:`LoadedModel.device` then names the embedding's device,
    where inputs go.
    """
    from transformers import AutoConfig, AutoTokenizer

    spec = spec_for(model_id)
    registered = spec is not None
    arch = detect_architecture(read_config(model_id), strict=trust_remote_code is not True)
    trc = bool(arch is not None and arch.remote_code) if trust_remote_code is None else bool(trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(model_id, trust_remote_code=trc)
    except (OSError, ValueError) as e:
        raise _config_error(model_id, e, trc) from e
    if spec is None:
        fam = Family(family) if family is not None else _guess_family(config, model_id)
        spec = ModelSpec(model_id, fam, dtype="auto")
    elif family is not None:
        spec = replace(spec, family=Family(family))
    if arch is not None:
        arch.prepare_config(config)

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(spec.dtype if dtype == "auto" and spec.dtype != "auto" else dtype, dev)
    kwargs: dict[str, Any] = {"config": config, "dtype": torch_dtype, **from_pretrained_kwargs}
    if trc:
        kwargs["trust_remote_code"] = True
    if device_map is not None:
        kwargs["device_map"] = device_map
    cls = _resolve_class(model_id, arch, config, trc)
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
    if arch is not None:
        arch.patches.apply_model(model)
    try:
        tok = AutoTokenizer.from_pretrained(model_id, trust_remote_code=trc)
    except (OSError, ValueError, TypeError) as e:
        log.warning("no tokenizer for %s (%s): LoadedModel.tokenizer is None", model_id, e)
        tok = None

    ad = arch.adapter if arch is not None else infer_adapter(model)
    if not registered:
        log.warning("model %s is not in the registry: inferred layer adapter %r from its %s (family %s)",
                    model_id, ad.name, "config" if arch is not None else "module names", spec.family.value)
    mask = find_mask_token_id(spec.mask_token_id, tok)
    return wrap(model, tok, spec.family, mask_token_id=mask, adapter=ad, model_id=model_id, spec=spec)
