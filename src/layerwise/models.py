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

from .arch import ADAPTERS, Architecture, LayerAdapter, detect_architecture, infer_adapter, is_remote_code
from .arch.remote_code import RemoteFile, checkpoint_remote_files, loaded_remote_files, warn_untested
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


#: the registered model whose per-model facts (family, sampler defaults) a checkpoint of an architecture
#: gets when neither its id nor its folder is registered (a fine-tune, a renamed download)
ARCHITECTURE_DEFAULTS: dict[str, str] = {"llada": "GSAI-ML/LLaDA-8B-Base", "dream": "Dream-org/Dream-v0-Base-7B",
                                         "diffusion_gemma": "google/diffusiongemma-26B-A4B-it"}


def registered_id_of_folder(path: str | os.PathLike[str]) -> str | None:
    """The registry id a local folder is a download of: a hub-cache snapshot
    (``.../models--GSAI-ML--LLaDA-8B-Base/snapshots/<commit>``) or a folder named as the model
    (``hf download GSAI-ML/LLaDA-8B-Base --local-dir LLaDA-8B-Base``); None otherwise."""
    p = Path(path).expanduser().resolve()
    for part in p.parts:
        if part.startswith("models--") and part.count("--") >= 2:
            rid = "/".join(part.split("--")[1:3])
            if rid in REGISTRY:
                return rid
    by_name = {mid.rsplit("/", 1)[-1].lower(): mid for mid in REGISTRY}
    return by_name.get(p.name.lower())


def _spec_and_origin(model_id: str, arch: Architecture | None) -> tuple[ModelSpec | None, str]:
    if model_id in REGISTRY:
        return REGISTRY[model_id], "registry"
    meta = Path(model_id) / META_FILE
    if meta.is_file():
        m = json.loads(meta.read_text())
        return ModelSpec(model_id=str(model_id), family=Family(m["objective"]), adapter=m.get("adapter", "llama"),
                         mask_token_id=m.get("mask_token_id"), dtype="auto",
                         sampler=SamplerDefaults(**m.get("sampler", {}))), "triplet"
    if os.path.isdir(model_id) and (rid := registered_id_of_folder(model_id)) is not None:
        return replace(REGISTRY[rid], model_id=str(model_id), notes=f"local copy of {rid}; {REGISTRY[rid].notes}"), rid
    if arch is not None and arch.name in ARCHITECTURE_DEFAULTS:
        like = REGISTRY[ARCHITECTURE_DEFAULTS[arch.name]]
        variant = "instruct" if "instruct" in Path(model_id).name.lower() else "base"
        return replace(like, model_id=str(model_id), mask_token_id=None, dtype="auto", variant=variant, pair=None,
                       notes=f"a {arch.name} checkpoint: the per-model facts of {like.model_id}"), "architecture"
    return None, ""


def spec_for(model_id: str, arch: Architecture | None = None) -> ModelSpec | None:
    """Per-model facts of a checkpoint: its registry entry (by hub id, or a folder that is a download of
    a registered model), the metadata of a triplet folder, or, for a checkpoint of an architecture in
    :data:`ARCHITECTURE_DEFAULTS`, that architecture's registered facts (dtype "auto", no mask id: the
    mask id then comes from the checkpoint's config or tokenizer). None when nothing is known."""
    return _spec_and_origin(model_id, arch)[0]


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
    #: the remote-code files that ran to build it (name, sha256, tested or not); () for native code
    remote_code: tuple[RemoteFile, ...] = ()

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


def _looks_like_path(model_id: str) -> bool:
    """True for what can only be a path (a hub id is ``name`` or ``org/name``)."""
    return (os.path.isabs(model_id) or model_id.startswith((".", "~")) or model_id.count("/") > 1
            or os.sep != "/" and os.sep in model_id)


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def _not_found(model_id: str, e: Exception) -> LayerwiseError:
    """The one-line error for an id that is neither a checkpoint folder nor a hub model reachable from here."""
    why = f"{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    head = f"could not load the config of {model_id!r}:"
    if _looks_like_path(model_id):
        return LayerwiseError(f"{head} there is no such folder: pass the folder that holds the checkpoint's "
                              "config.json (for a hub download: .../models--ORG--NAME/snapshots/<commit>)")
    fetch = f"download it on a machine with hub access (hf download {model_id}) and pass its folder or set HF_HOME"
    if _hub_offline():
        return LayerwiseError(f"{head} it is neither a local folder nor in the local hub cache, and the hub is "
                              f"switched off (HF_HUB_OFFLINE=1): {fetch}, or unset HF_HUB_OFFLINE")
    if "connect" in str(e).lower() or "resolve" in str(e).lower():
        return LayerwiseError(f"{head} it is not a local folder and the hub cannot be reached ({why}): {fetch}")
    return LayerwiseError(f"{head} it is neither a local folder nor a model on the hub ({why}): check the "
                          "spelling (hub ids are ORG/NAME); a gated or private model needs `hf auth login` first")


def _config_error(model_id: str, e: Exception, trust_remote_code: bool | None) -> LayerwiseError:
    return LayerwiseError(
        f"could not load the config of {model_id!r}: {e.__class__.__name__}: {str(e).splitlines()[0]}. "
        "Check the id or path; without hub access, download the weights first and pass the local path"
        + ("" if trust_remote_code is not False else "; remote-code models need trust_remote_code=True")
    )


def read_config(model_id: str) -> dict[str, Any]:
    """The raw ``config.json`` of a hub id or local folder, without importing any remote code.

    :class:`LayerwiseError` (one line, naming the fix) for a folder without ``config.json``, a path that
    does not exist, and a hub id that is not on the hub or, offline, not in the local hub cache."""
    from transformers import PretrainedConfig

    folder = Path(model_id).expanduser()
    if folder.is_dir() and not (folder / "config.json").is_file():
        inside = sorted(p.name for p in folder.iterdir())[:8]
        raise LayerwiseError(f"could not load the config of {model_id!r}: the folder has no config.json (it holds "
                             f"{inside or 'nothing'}): pass the checkpoint's own folder (with config.json and the "
                             "weights), e.g. a hub snapshot folder")
    if not folder.is_dir() and _looks_like_path(model_id):
        raise _not_found(model_id, FileNotFoundError(model_id))
    try:
        raw, _ = PretrainedConfig.get_config_dict(str(folder) if folder.is_dir() else model_id)
    except (OSError, ValueError) as e:
        if folder.is_dir():
            raise _config_error(model_id, e, None) from e
        raise _not_found(model_id, e) from e
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


def _config_mask_id(raw: dict[str, Any]) -> int | None:
    """``mask_token_id`` as config.json writes it (not a config class's default: LLaDAConfig's is 50256)."""
    mid = raw.get("mask_token_id")
    return int(mid) if isinstance(mid, int) and not isinstance(mid, bool) else None


def check_mask_token_id(model_id: str, mask: int, model: nn.Module, adapter: LayerAdapter, tokenizer: Any,
                        source: str) -> None:
    """:class:`LayerwiseError` unless ``mask`` is a row of the model's embedding and an id of its tokenizer."""
    weight = adapter.get_embed(model).weight
    rows = int(weight.shape[0]) if isinstance(weight, torch.Tensor) else 0
    n_tok = len(tokenizer) if tokenizer is not None else rows
    if not 0 <= mask < min(rows, n_tok):
        has = getattr(tokenizer, "mask_token_id", None)
        raise LayerwiseError(
            f"mask token id {mask} of {model_id} (from {source}) is not in its vocabulary ({rows} embedding rows, "
            f"{n_tok} tokenizer ids): give the right one, load(..., mask_token_id=ID) or a models entry "
            f"{{id: {model_id}, mask_token_id: ID}}" + (f" (its tokenizer's mask token is {has})" if has is not None
                                                         else ""))


def _load_tokenizer(model_id: str, source: str | None, trc: bool, required: bool) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source or model_id, trust_remote_code=trc)
    except (OSError, ValueError, TypeError, KeyError) as e:
        why = f"{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if required:
            raise LayerwiseError(
                f"no tokenizer for {model_id} in {source or model_id!r} ({why[:160]}): save its tokenizer into the "
                "folder (tokenizer.save_pretrained(FOLDER)) or say where it is: load(..., tokenizer=ID_OR_FOLDER), "
                f"or a models entry {{id: {model_id}, tokenizer: ID_OR_FOLDER}}") from e
        log.warning("no tokenizer for %s (%s): LoadedModel.tokenizer is None", model_id, why)
        return None


def load(model_id: str, *, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
         device_map: str | dict | None = None, family: Family | str | None = None,
         trust_remote_code: bool | None = None, mask_token_id: int | None = None, tokenizer: str | None = None,
         require_tokenizer: bool = False, **from_pretrained_kwargs: Any) -> LoadedModel:
    """Load a model by hub id or local path, with its tokenizer, spec and adapter.

    The checkpoint's config decides the architecture (:func:`layerwise.arch.detect_architecture`): its
    adapter, its config checks and, for a recognised remote-code architecture, ``trust_remote_code``
    (unless given) and its transformers-5 fixes. An unrecognised native model gets an adapter inferred
    from its module names (logged); unrecognised remote code is refused unless ``trust_remote_code=True``.
    The remote-code files that run are hashed into :attr:`LoadedModel.remote_code`; a file the project
    has not tested gets a :class:`~layerwise.arch.remote_code.UntestedRemoteCodeWarning`.

    Per-model facts come from :func:`spec_for` (the registry, a triplet folder, a download of a registered
    model, or the architecture's registered facts); ``family`` overrides them. The mask id is
    ``mask_token_id`` if given, else the config.json's ``mask_token_id``, else the registry's, else the
    tokenizer's mask token, and must be in the vocabulary. ``tokenizer``: another id or folder to take
    the tokenizer from; ``require_tokenizer``: a missing tokenizer is an error (else a warning and
    ``LoadedModel.tokenizer`` None). ``device_map`` (``"auto"`` or a dict of module -> device)
    dispatches a large model over the GPUs of a node through accelerate; :attr:`LoadedModel.device` then
    names the embedding's device, where inputs go.
    """
    from transformers import AutoConfig

    raw = read_config(model_id)
    if trust_remote_code is False and is_remote_code(raw):
        # refused here, not by transformers: once a process has run a model_type's remote code, transformers
        # resolves that model_type to the same classes without asking again
        raise LayerwiseError(f"could not load {model_id!r}: its code ships with it (auto_map) and trust_remote_code="
                             "False: pass trust_remote_code=True (or leave it unset for a recognised architecture) "
                             "to run it")
    arch = detect_architecture(raw, strict=trust_remote_code is not True)
    spec, origin = _spec_and_origin(model_id, arch)
    trc = bool(arch is not None and arch.remote_code) if trust_remote_code is None else bool(trust_remote_code)
    before = checkpoint_remote_files(model_id, raw) if trc and raw.get("auto_map") else ()
    if before:
        warn_untested(model_id, before)  # a local folder's files are known before any of them runs
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
    except (AttributeError, TypeError, KeyError) as e:
        if arch is not None or not trc:
            raise
        raise LayerwiseError(
            f"could not load {model_id!r} with its own code, unpatched ({e.__class__.__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}): code written for transformers 4 needs fixes; add an "
            "Architecture with them (layerwise.arch.register_architecture, see layerwise/arch/dream.py)") from e
    if device_map is None:
        model.to(dev)
    model.eval()
    if arch is not None:
        arch.patches.apply_model(model)
    remote = loaded_remote_files(config, model)
    known = {f.sha256 for f in before or ()}
    warn_untested(model_id, [f for f in remote if f.sha256 not in known])  # e.g. a hub id's, once downloaded
    for f in remote:
        log.info("%s runs remote code %s", model_id, f.describe())
    tok = _load_tokenizer(model_id, tokenizer, trc, require_tokenizer)

    ad = arch.adapter if arch is not None else infer_adapter(model)
    if origin in ("", "architecture"):
        log.warning("model %s is not in the registry: inferred layer adapter %r from its %s (family %s%s)",
                    model_id, ad.name, "config" if arch is not None else "module names", spec.family.value,
                    f", sampler defaults of {ARCHITECTURE_DEFAULTS[ad.name]}" if origin else "")
    mask: int | None
    if mask_token_id is not None:
        mask, source = int(mask_token_id), "the mask_token_id given"
    elif (cfg_mask := _config_mask_id(raw)) is not None:
        mask, source = cfg_mask, "its config.json"
    elif spec.mask_token_id is not None:
        mask, source = spec.mask_token_id, "the model registry"
    else:
        mask, source = find_mask_token_id(tok), "its tokenizer"
    if mask is not None:
        check_mask_token_id(model_id, mask, model, ad, tok, source)
    lm = wrap(model, tok, spec.family, mask_token_id=mask, adapter=ad, model_id=model_id, spec=spec)
    lm.remote_code = remote
    return lm
