"""Architectures: detection from a checkpoint's config, and each transformers-5 fix on its own.

Each fix is shown to cure its failure on the in-repo look-alikes (layerwise.lookalikes) and to be safe
to apply twice or where it is not needed. Tests on the genuine LLaDA / Dream remote code (tiny
random-weight checkpoints laid out like the hub repos) need ../shared/remote_code and skip without it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import GPTNeoXConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config

from layerwise import arch as A
from layerwise import lookalikes as LA
from layerwise import models as M
from layerwise.arch import diffusion_gemma, dream, gpt_neox, llada, llama
from layerwise.config import LayerwiseError
from layerwise.diffusion import Family
from oracles.remote_code import hub_folder, needs_remote_code, tiny_config
from test_models import V, _ids, _llama, _qwen2

#: the fields detection reads, as the hub config.json of each registered Base model has them (the
#: Instruct models' are the same)
HUB_CONFIGS: dict[str, dict] = {
    "GSAI-ML/LLaDA-8B-Base": {"model_type": "llada", "architectures": ["LLaDAModelLM"], "auto_map": {
        "AutoConfig": "configuration_llada.LLaDAConfig", "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
        "AutoModel": "modeling_llada.LLaDAModelLM"}},
    "Dream-org/Dream-v0-Base-7B": {"model_type": "Dream", "architectures": ["DreamModel"], "auto_map": {
        "AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"}},
    "Qwen/Qwen2.5-7B": {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]},
    "meta-llama/Llama-3.1-8B": {"model_type": "llama", "architectures": ["LlamaForCausalLM"]},
    "google/diffusiongemma-26B-A4B-it": {"model_type": "diffusion_gemma",
                                         "architectures": ["DiffusionGemmaForBlockDiffusion"]},
}


# -- detection ------------------------------------------------------------------------------------


def test_registry_models_detected_from_their_configs():
    """Every registered model's config names its architecture: LLaDA and Dream as remote code with
    their fixes, the others natively (their class exists in this transformers)."""
    import transformers

    expected = {"GSAI-ML/LLaDA-8B-Base": ("llada", True), "Dream-org/Dream-v0-Base-7B": ("dream", True),
                "Qwen/Qwen2.5-7B": ("llama", False), "meta-llama/Llama-3.1-8B": ("llama", False),
                "google/diffusiongemma-26B-A4B-it": ("diffusion_gemma", False)}
    for mid in M.REGISTRY:
        arch = A.detect_architecture(HUB_CONFIGS[M.base_of(mid) or mid])
        assert (arch.name, arch.remote_code) == expected[M.base_of(mid) or mid], mid
        assert arch.remote_code or hasattr(transformers, arch.auto_class)
        assert bool(arch.patches.all()) == arch.remote_code
    assert A.detect_architecture(HUB_CONFIGS["GSAI-ML/LLaDA-8B-Base"]).patches.cls == (
        llada.add_tied_weights_mapping, llada.tie_weights_accepts_kwargs)
    assert dream.reset_rope_buffers in A.detect_architecture(HUB_CONFIGS["Dream-org/Dream-v0-Base-7B"]).patches.model


@pytest.mark.parametrize("config, name", [
    ({"model_type": "llada"}, "llada"),
    ({"architectures": ["LLaDAModelLM"]}, "llada"),
    ({"auto_map": {"AutoModel": "modeling_llada.LLaDAModelLM"}}, "llada"),
    ({"auto_map": {"AutoModel": "GSAI-ML/LLaDA-8B-Base--modeling_llada.LLaDAModelLM"}}, "llada"),
    ({"model_type": "Dream"}, "dream"),
    ({"model_type": "dream"}, "dream"),
    ({"auto_map": {"AutoModel": "modeling_dream.DreamModel"}}, "dream"),
    ({"model_type": "mistral"}, "llama"),
    ({"architectures": ["Qwen2ForCausalLM"]}, "llama"),
    ({"model_type": "gpt_neox"}, "gpt_neox"),
    ({"model_type": "diffusion_gemma"}, "diffusion_gemma"),
])
def test_detect_from_config_dict(config, name):
    assert A.detect_architecture(config).name == name


def test_detect_from_config_objects():
    """A config object (an in-memory model's, or AutoConfig's) is read like its config.json."""
    from transformers.models.diffusion_gemma import DiffusionGemmaConfig

    assert A.detect_architecture(LA.LLaDALikeConfig()) is A.ARCHITECTURES["llada"]
    assert A.detect_architecture(LA.DreamLikeConfig()) is A.ARCHITECTURES["dream"]
    assert A.detect_architecture(LlamaConfig()) is A.ARCHITECTURES["llama"]
    assert A.detect_architecture(Qwen2Config()) is A.ARCHITECTURES["llama"]
    assert A.detect_architecture(GPTNeoXConfig()) is A.ARCHITECTURES["gpt_neox"]
    assert A.detect_architecture(DiffusionGemmaConfig()) is A.ARCHITECTURES["diffusion_gemma"]


def test_detect_local_folder_as_its_hub_config(tmp_path):
    """A local folder is read through the same config.json as its hub id would be."""
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({**HUB_CONFIGS["GSAI-ML/LLaDA-8B-Base"], "n_layers": 2}))
    raw = M.read_config(str(d))
    assert A.detect_architecture(raw) is A.detect_architecture(HUB_CONFIGS["GSAI-ML/LLaDA-8B-Base"])


def test_unknown_architectures():
    """Unknown native models: None (the adapter is inferred from module names after loading). Unknown
    remote code: an error naming the supported architectures and how to add one."""
    assert A.detect_architecture({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}) is None
    assert A.detect_architecture({}) is None and A.detect_architecture(None) is None
    fancy = {"model_type": "fancy", "architectures": ["FancyLM"],
             "auto_map": {"AutoConfig": "configuration_fancy.FancyConfig", "AutoModel": "modeling_fancy.FancyLM"}}
    assert A.is_remote_code(fancy) and not A.is_remote_code({"model_type": "llama"})
    with pytest.raises(LayerwiseError) as e:
        A.detect_architecture(fancy)
    msg = str(e.value)
    for part in ("'fancy'", "modeling_fancy", "not a supported architecture", "llada", "dream", "llama",
                 "register_architecture", "trust_remote_code=True"):
        assert part in msg, part
    assert A.detect_architecture(fancy, strict=False) is None


def test_register_architecture_makes_a_config_detectable():
    fancy = A.Architecture(adapter=A.LayerAdapter(**{**{f: getattr(llama.ADAPTER, f) for f in (
        "blocks", "embed", "final_norm", "lm_head", "attn_input", "mlp_input", "linears")}, "name": "fancy"}),
        model_types=("fancy",), remote_code=True, auto_class="AutoModel")
    try:
        A.register_architecture(fancy)
        assert A.detect_architecture({"model_type": "fancy", "auto_map": {"AutoModel": "m.F"}}) is fancy
        assert A.ADAPTERS["fancy"] is fancy.adapter
    finally:
        del A.ARCHITECTURES["fancy"], A.ADAPTERS["fancy"]


def test_infer_adapter_prefers_the_config():
    """An in-memory model: the architecture its config names wins over module-path matching (Dream and
    Llama share paths), and a config check applies."""
    dream.patch_rope_default()
    qw = _qwen2(layers=1)
    dr = LA.dream_like_from_qwen2(qw)
    assert A.infer_adapter(qw).name == "llama" and A.infer_adapter(dr).name == "dream"
    with pytest.raises(LayerwiseError, match="block_group_size = 2"):
        A.infer_adapter(LA.llada_like_from_llama(_llama(layers=4), block_group_size=2))


def test_adapter_logits_fns():
    """Each architecture module owns its forward for analysis."""
    assert A.ADAPTERS["llada"].logits_fn is llada.logits and A.ADAPTERS["dream"].logits_fn is dream.logits
    assert A.ADAPTERS["diffusion_gemma"].logits_fn is diffusion_gemma.logits
    assert A.ADAPTERS["llama"].logits_fn is A.ADAPTERS["gpt_neox"].logits_fn is A.default_logits
    assert gpt_neox.ARCHITECTURE.adapter is A.ADAPTERS["gpt_neox"]


# -- each fix on its own ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lookalike_llada():
    ll = _llama()
    la = LA.llada_like_from_llama(ll)
    llada.patch_llada_config(la.config)
    return ll, la


@pytest.fixture(scope="module")
def lookalike_dream():
    qw = _qwen2()
    dream.patch_rope_default()
    return qw, LA.dream_like_from_qwen2(qw)


@pytest.mark.parametrize("fix, failure", [
    (llada.add_tied_weights_mapping, "'LLaDAModelLM' object has no attribute 'all_tied_weights_keys'"),
    (llada.tie_weights_accepts_kwargs, "unexpected keyword argument 'missing_keys'"),
    (llada.add_use_cache, "'LLaDAConfig' object has no attribute 'use_cache'"),
    (llada.add_use_cache_to_model, "'LLaDAConfig' object has no attribute 'use_cache'"),
    (dream.register_default_rope, "KeyError: 'default'"),
    (dream.ignore_rotary_buffers, "rotary_emb.inv_freq"),
    (dream.tied_weights_as_mapping, "'list' object has no attribute 'keys'"),
    (dream.generation_config_accepts_user_set_attributes, "unexpected keyword argument 'user_set_attributes'"),
    (dream.reset_rope_buffers, "uninitialised"),
])
def test_each_fix_names_its_failure(fix, failure):
    assert failure in " ".join(fix.__doc__.split())
    assert fix in llada.ARCHITECTURE.patches.all() + dream.ARCHITECTURE.patches.all()


def test_llada_class_fixes_one_by_one(tmp_path, lookalike_llada):
    """Each class fix cures one from_pretrained failure; applying them again changes nothing."""
    _, la = lookalike_llada
    la.save_pretrained(tmp_path)

    class Fresh(LA.LLaDALikeLM):
        pass

    with pytest.raises(AttributeError, match="all_tied_weights_keys"):
        Fresh.from_pretrained(tmp_path)
    llada.add_tied_weights_mapping(Fresh)
    with pytest.raises(TypeError, match="missing_keys"):
        Fresh.from_pretrained(tmp_path)
    llada.tie_weights_accepts_kwargs(Fresh)
    fixed = Fresh.tie_weights
    llada.patch_llada_class(Fresh)  # again: no double wrapping
    assert Fresh.tie_weights is fixed and Fresh.all_tied_weights_keys == {} == Fresh._tied_weights_keys
    m = Fresh.from_pretrained(tmp_path).eval()
    llada.add_use_cache_to_model(m)
    with torch.no_grad():
        torch.testing.assert_close(m(input_ids=_ids()).logits, la(input_ids=_ids()).logits)
    # where not needed they leave things alone: a transformers 5 class keeps its own tie_weights and mapping
    class Native(LlamaForCausalLM):
        _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    own = Native.tie_weights
    llada.patch_llada_class(Native)
    assert Native.tie_weights is own and Native._tied_weights_keys == {"lm_head.weight": "model.embed_tokens.weight"}


def test_llada_config_fix_keeps_a_set_value():
    cfg = LA.LLaDALikeConfig()
    cfg.__dict__.pop("use_cache", None)
    assert llada.add_use_cache(cfg).use_cache is False
    cfg.use_cache = True
    assert llada.add_use_cache(cfg).use_cache is True
    llada.check_config(cfg)  # block_group_size 1: fine
    with pytest.raises(LayerwiseError, match="block_group_size = 4"):
        llada.check_config(LA.LLaDALikeConfig(block_group_size=4))
    with pytest.raises(LayerwiseError, match="block_group_size = 2"):
        llada.check_config({"block_group_size": 2})


def test_dream_save_fix(tmp_path, lookalike_dream):
    _, dr = lookalike_dream

    class Fresh(LA.DreamLikeModel):
        pass

    m = Fresh(dr.config)
    with pytest.raises(AttributeError, match="'list' object has no attribute 'keys'"):
        m.save_pretrained(tmp_path / "a")
    dream.tied_weights_as_mapping(Fresh)
    dream.tied_weights_as_mapping(Fresh)
    assert Fresh._tied_weights_keys == {"lm_head.weight": "model.embed_tokens.weight"}
    assert LA.DreamLikeModel._tied_weights_keys == ["lm_head.weight"]  # the parent is untouched
    m.save_pretrained(tmp_path / "a")
    assert (tmp_path / "a" / "model.safetensors").is_file()
    dream.ignore_rotary_buffers(Fresh)
    dream.ignore_rotary_buffers(Fresh)
    assert Fresh._keys_to_ignore_on_load_unexpected == [r"rotary_emb\.inv_freq"]


def test_dream_generation_config_fix(tmp_path):
    d = tmp_path / "gen"
    d.mkdir()
    (d / "generation_config.json").write_text(json.dumps({"mask_token_id": 5, "transformers_version": "4.46.2"}))
    own = LA.DreamLikeGenerationConfig.validate
    try:
        with pytest.raises(TypeError, match="user_set_attributes"):
            LA.DreamLikeGenerationConfig.from_pretrained(d)
        dream.generation_config_accepts_user_set_attributes(LA.DreamLikeModel)  # finds it in the class's module
        fixed = LA.DreamLikeGenerationConfig.validate
        dream.generation_config_accepts_user_set_attributes(LA.DreamLikeModel)
        assert LA.DreamLikeGenerationConfig.validate is fixed
        assert LA.DreamLikeGenerationConfig.from_pretrained(d).mask_token_id == 5
    finally:
        LA.DreamLikeGenerationConfig.validate = own


def test_dream_rope_buffer_fix(lookalike_dream):
    _, dr = lookalike_dream
    ids = _ids()
    with torch.no_grad():
        ref = dr(input_ids=ids).logits
        assert dream.reset_rope_buffers(dr) == 1 + 3  # the base model's and each layer's attention's
        torch.testing.assert_close(dr(input_ids=ids).logits, ref)  # correct buffers: unchanged
        for mod in dr.modules():
            if hasattr(mod, "inv_freq"):
                mod.inv_freq.fill_(0.0)  # as transformers 5 leaves them: not the RoPE frequencies
        assert not torch.allclose(dr(input_ids=ids).logits, ref)
        dream.reset_rope_buffers(dr)
        torch.testing.assert_close(dr(input_ids=ids).logits, ref)


# -- the genuine remote code --------------------------------------------------------------------------


def _genuine_dir(tmp_path: Path, which: str) -> Path:
    """A hub-like folder: config.json (tiny sizes, vocab V, mask V - 1) + the genuine .py files, no weights."""
    return hub_folder(tmp_path / f"{which}_src", which, tiny_config(which, V))


@needs_remote_code
@pytest.mark.parametrize("which, family", [("llada", Family.DLM), ("dream", Family.AR2DLM)])
def test_genuine_remote_code_loads_through_detection(tmp_path, which, family):
    """Random tiny weights in the genuine LLaDA / Dream code, saved and loaded back by load() from a
    local folder: detection trusts the code and applies the fixes; the loaded model gives the logits of
    the model that was saved, and a padded batch through the adapter equals each row alone."""
    from transformers import AutoConfig
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    src = _genuine_dir(tmp_path, which)
    config = AutoConfig.from_pretrained(src, trust_remote_code=True)
    arch = A.detect_architecture(config)
    assert arch.name == which
    cls = get_class_from_dynamic_module(config.auto_map["AutoModel"], str(src))
    arch.patches.apply_cls(cls)
    arch.prepare_config(config)
    torch.manual_seed(0)
    model = cls(config).eval()
    arch.patches.apply_model(model)
    out = tmp_path / which
    model.save_pretrained(out)
    for f in src.iterdir():
        if f.suffix == ".py" or f.name == "generation_config.json":
            shutil.copy(f, out / f.name)

    M.register(M.ModelSpec(str(out), family, mask_token_id=V - 1, dtype="float32"))
    try:
        lm = M.load(str(out), device="cpu")
    finally:
        del M.REGISTRY[str(out)]
    assert lm.adapter.name == which and lm.num_layers == 2
    ids = _ids()
    with torch.no_grad():
        ref = arch.adapter.logits(model, ids, None)
        torch.testing.assert_close(lm.logits(ids), ref, rtol=1e-5, atol=1e-5)
        am = torch.ones_like(ids)
        am[1, 8:] = 0
        padded = lm.logits(ids, am)
        torch.testing.assert_close(padded[0], ref[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(padded[1, :8], lm.logits(ids[1:, :8])[0], rtol=1e-4, atol=1e-5)
