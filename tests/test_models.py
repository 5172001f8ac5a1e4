"""Registry, adapters, transformers-5 patches and loading (incl. a dispatched model) on tiny models.

(Detection from a config and each patch on its own: tests/test_arch.py.)

The look-alikes (layerwise.lookalikes) carry LLaDA's / Dream's names, output types and
transformers-4 habits; their math equals Llama / Qwen2 with is_causal=False, so after a weight copy
every part the adapters expose must give the same tensors.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from layerwise import arch as A
from layerwise import lookalikes as LA
from layerwise import models as M
from layerwise.arch import dream, llada, llama
from layerwise.config import LayerwiseError
from layerwise.diffusion import Family

V, T = 64, 12


def _llama(layers: int = 3, causal: bool = False, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    cfg.is_causal = causal
    return LlamaForCausalLM(cfg).eval()


def _qwen2(layers: int = 3, seed: int = 1) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    cfg.is_causal = False
    m = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():  # random q/k/v biases so that the bias path is exercised
        for layer in m.model.layers:
            for p in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                p.bias.normal_(0, 0.1)
    return m


def _gpt_neox() -> GPTNeoXForCausalLM:
    torch.manual_seed(2)
    cfg = GPTNeoXConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    return GPTNeoXForCausalLM(cfg).eval()


def diffusion_gemma():
    """Tiny DiffusionGemmaForBlockDiffusion (2 layers, 2 experts, tiny vision tower)."""
    from transformers import Gemma4VisionConfig
    from transformers.models.diffusion_gemma import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

    torch.manual_seed(3)
    vc = Gemma4VisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                            num_key_value_heads=1, head_dim=8)
    tc = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
              num_key_value_heads=1, head_dim=16, global_head_dim=16, num_experts=2, top_k_experts=1,
              moe_intermediate_size=16, sliding_window=8, layer_types=["sliding_attention", "full_attention"])
    cfg = DiffusionGemmaConfig(text_config=tc, vision_config=vc.to_dict(), canvas_length=8)
    return DiffusionGemmaForBlockDiffusion(cfg).eval()


@pytest.fixture(scope="module")
def pair_llada():
    ll = _llama()
    la = LA.llada_like_from_llama(ll)
    llada.patch_llada_config(la.config)
    return ll, la


@pytest.fixture(scope="module")
def pair_dream():
    qw = _qwen2()
    dream.patch_rope_default()
    return qw, LA.dream_like_from_qwen2(qw)


def _ids(b: int = 2, seed: int = 5) -> torch.Tensor:
    return torch.randint(0, V - 1, (b, T), generator=torch.Generator().manual_seed(seed))


def _capture(model, adapter: A.LayerAdapter, ids: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """Block outputs, attention inputs, MLP inputs and every Linear's input, via the adapter."""
    rec: dict[str, list[torch.Tensor]] = {"block": [], "attn_in": [], "mlp_in": [], "final_norm": []}
    hs = []
    for blk in adapter.get_blocks(model):
        hs.append(blk.register_forward_hook(
            lambda _m, _a, o: rec["block"].append(A.LayerAdapter.hidden_from_output(o))))
        hs.append(adapter.attn_input_module(blk).register_forward_hook(lambda _m, _a, o: rec["attn_in"].append(o)))
        hs.append(adapter.mlp_input_module(blk).register_forward_hook(lambda _m, _a, o: rec["mlp_in"].append(o)))
        for role, lin in adapter.block_linears(blk).items():
            rec.setdefault(role, [])
            hs.append(lin.register_forward_hook(lambda _m, a, _o, r=role: rec[r].append(a[0])))
    hs.append(adapter.get_final_norm(model).register_forward_hook(lambda _m, _a, o: rec["final_norm"].append(o)))
    try:
        with torch.no_grad():
            rec["logits"] = [adapter.logits(model, ids)]
    finally:
        for h in hs:
            h.remove()
    return rec


# -- adapters ---------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["llada", "dream"])
def test_lookalike_parts_equal_standard_model(which, pair_llada, pair_dream):
    std, look = pair_llada if which == "llada" else pair_dream
    a_std, a_look = A.infer_adapter(std), A.infer_adapter(look)
    assert (a_std.name, a_look.name) == ("llama", which)
    assert a_look.block_returns_tuple
    ids = _ids()
    r_std, r_look = _capture(std, a_std, ids), _capture(look, a_look, ids)
    assert set(r_std) == set(r_look)
    for key in r_std:
        assert len(r_std[key]) == len(r_look[key]) > 0, key
        for x, y in zip(r_std[key], r_look[key]):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5, msg=key)
    # weights the adapters expose are the same numbers
    for (i, role, lin_s), (j, role2, lin_l) in zip(a_std.named_linears(std), a_look.named_linears(look)):
        assert (i, role) == (j, role2)
        assert torch.equal(lin_s.weight, lin_l.weight)
    assert torch.equal(a_std.get_lm_head(std).weight, a_look.get_lm_head(look).weight)
    assert torch.equal(a_std.get_embed(std).weight, a_look.get_embed(look).weight)
    assert a_look.num_layers(look) == a_look.config_num_layers(look) == 3


def test_block_output_type_and_layer_index(pair_llada, pair_dream):
    _, la = pair_llada
    _, dr = pair_dream
    x = torch.randn(1, 4, 32)
    assert isinstance(A.ADAPTERS["llada"].get_blocks(la)[0](x), tuple)
    assert isinstance(A.ADAPTERS["dream"].get_blocks(dr)[0](x), tuple)
    for ad, model in ((A.ADAPTERS["llada"], la), (A.ADAPTERS["dream"], dr)):
        idx = [A.get_path(b, ad.attn_layer_idx) for b in ad.get_blocks(model)]
        assert idx == list(range(3))


def test_padding_mask_through_adapter(pair_llada, pair_dream):
    """A padded batch: LLaDA's own mask path turns causal and Dream rejects a 2D mask; the adapters'
    forward equals the bidirectional standard model on the real tokens."""
    ids = _ids()
    am = torch.ones_like(ids)
    am[1, 8:] = 0
    keep = am.bool()
    for std, look, name in (*pair_llada, "llada"), (*pair_dream, "dream"):
        with torch.no_grad():
            ref = std(input_ids=ids, attention_mask=am).logits
            got = A.ADAPTERS[name].logits(look, ids, am)
        torch.testing.assert_close(got[keep], ref[keep], rtol=1e-5, atol=1e-5)
    ll, la = pair_llada
    with torch.no_grad():
        raw = la(input_ids=ids, attention_mask=am).logits
    assert not torch.allclose(raw[keep], ll(input_ids=ids, attention_mask=am).logits[keep], atol=1e-3)
    with pytest.raises(ValueError, match="4D bool"):
        pair_dream[1](input_ids=ids, attention_mask=am)


def test_gpt_neox_adapter_matches_module_names():
    m = _gpt_neox()
    ad = A.infer_adapter(m)
    assert ad.name == "gpt_neox"
    blk = ad.get_blocks(m)[0]
    assert set(ad.block_linears(blk)) == {"qkv", "o", "up", "down"}
    assert ad.get_lm_head(m) is m.lm_head and ad.get_final_norm(m) is m.gpt_neox.final_layer_norm
    assert [A.get_path(b, ad.attn_layer_idx) for b in ad.get_blocks(m)] == [0, 1]
    assert ad.config_num_layers(m) == 2
    # the final norm's output through the head gives the model's logits
    ids = _ids()
    rec = _capture(m, ad, ids)
    torch.testing.assert_close(ad.get_lm_head(m)(rec["final_norm"][0]), rec["logits"][0])
    # block outputs: hidden_states[i + 1] of transformers is the output of block i (except the last)
    with torch.no_grad():
        hs = m(input_ids=ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(rec["block"][0], hs[1])


def test_diffusion_gemma_adapter():
    m = diffusion_gemma()
    ad = A.infer_adapter(m)
    assert ad.name == "diffusion_gemma" and ad.noise == "uniform"
    assert ad.num_layers(m) == ad.config_num_layers(m) == 2
    assert ad.layer_config(m) is m.config.text_config
    # full-attention layers share k and v (v_proj is None): the role is left out there
    roles = set(llama.LLAMA_LINEARS)
    assert [set(ad.block_linears(b)) for b in ad.get_blocks(m)] == [roles, roles - {"v"}]
    ids = _ids()
    rec = _capture(m, ad, ids)
    assert rec["logits"][0].shape == (2, T, V)
    assert [b.shape for b in rec["block"]] == [(2, T, 32)] * 2  # the denoiser saw the canvas = ids
    # the logits are the soft-capped head of the final norm's output
    cap = m.config.text_config.final_logit_softcapping
    head = ad.get_lm_head(m)(rec["final_norm"][0]).float()
    torch.testing.assert_close(torch.tanh(head / cap) * cap, rec["logits"][0])
    # the denoiser's weights are tied to the encoder's: an in-place edit changes both
    enc_q = m.model.encoder.language_model.layers[0].self_attn.q_proj.weight
    assert ad.block_linears(ad.get_blocks(m)[0])["q"].weight.data_ptr() == enc_q.data_ptr()
    lm = M.wrap(m, None, "dlm")  # uniform-noise diffusion: no mask token needed
    assert lm.spec.mask_token_id is None and lm.adapter.name == "diffusion_gemma"


def test_llada_block_groups_error_is_clear():
    ll = _llama(layers=4)
    grouped = LA.llada_like_from_llama(ll, block_group_size=2)
    with pytest.raises(LayerwiseError, match="block_group_size"):
        A.infer_adapter(grouped)
    with pytest.raises(LayerwiseError, match="block_group_size"):
        A.ADAPTERS["llada"].get_blocks(grouped)


def test_infer_adapter_error_lists_modules():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(LayerwiseError, match=r"modules are \['0'\].*register_adapter"):
        A.infer_adapter(model)


def test_wrap_errors():
    with pytest.raises(LayerwiseError, match="mask token"):
        M.wrap(_llama(layers=1), None, "dlm")
    with pytest.raises(LayerwiseError, match="unknown adapter"):
        M.wrap(_llama(layers=1), None, "ar", adapter="nope")
    with pytest.raises(LayerwiseError, match="out of range"):
        A.ADAPTERS["llama"].block(_llama(layers=1), 3)


# -- registry -----------------------------------------------------------------------------------


def test_registry_entries():
    """Per-model facts: family, mask token, sampler defaults, Base/Instruct pairs. (Which architecture,
    remote code and patches each model gets is detected from its config: test_arch.py asserts it for
    every registered id.)"""
    r = M.REGISTRY
    for mid in ("GSAI-ML/LLaDA-8B-Base", "GSAI-ML/LLaDA-8B-Instruct"):
        s = r[mid]
        assert (s.family, s.mask_token_id) == (Family.DLM, 126336)
        assert not s.shifted_logits
        assert (s.sampler.gen_length, s.sampler.steps, s.sampler.block_length) == (256, 256, 32)
    for mid in ("Dream-org/Dream-v0-Base-7B", "Dream-org/Dream-v0-Instruct-7B"):
        s = r[mid]
        assert (s.family, s.mask_token_id) == (Family.AR2DLM, 151666)
        assert s.shifted_logits
    for mid in ("Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-7B-Instruct", "meta-llama/Llama-3.1-8B",
                "meta-llama/Llama-3.1-8B-Instruct"):
        assert r[mid].family is Family.AR
    dg = r["google/diffusiongemma-26B-A4B-it"]
    assert dg.mask_token_id is None and dg.family is Family.DLM
    assert all(s.adapter == "" for s in r.values())  # the architecture comes from the checkpoint's config


def test_registry_base_instruct_pairs():
    pairs = {"GSAI-ML/LLaDA-8B-Base": "GSAI-ML/LLaDA-8B-Instruct",
             "Dream-org/Dream-v0-Base-7B": "Dream-org/Dream-v0-Instruct-7B",
             "Qwen/Qwen2.5-7B": "Qwen/Qwen2.5-7B-Instruct",
             "meta-llama/Llama-3.1-8B": "meta-llama/Llama-3.1-8B-Instruct"}
    for base, inst in pairs.items():
        for mid in (base, inst):
            assert (M.base_of(mid), M.instruct_of(mid)) == (base, inst)
        assert (M.REGISTRY[base].variant, M.REGISTRY[inst].variant) == ("base", "instruct")
        assert M.REGISTRY[base].family is M.REGISTRY[inst].family
    for s in M.REGISTRY.values():  # pairs are symmetric
        assert s.pair is None or M.REGISTRY[s.pair].pair == s.model_id
    dg = "google/diffusiongemma-26B-A4B-it"
    assert (M.base_of(dg), M.instruct_of(dg)) == (None, dg)
    with pytest.raises(LayerwiseError, match="not in the registry"):
        M.base_of("nobody/nothing")


def test_unknown_id_errors(tmp_path):
    with pytest.raises(LayerwiseError, match="could not load the config"):
        M.load(str(tmp_path / "nothing-here"))


# -- transformers-5 patches ------------------------------------------------------------------------


def test_llada_patches_make_from_pretrained_and_forward_work(tmp_path, pair_llada):
    _, la = pair_llada
    la.save_pretrained(tmp_path)

    class Fresh(LA.LLaDALikeLM):  # a fresh class, as remote code gives each load
        pass

    with pytest.raises(AttributeError, match="all_tied_weights_keys"):
        Fresh.from_pretrained(tmp_path)
    llada.patch_llada_class(Fresh)
    m = Fresh.from_pretrained(tmp_path).eval()
    cfg = LA.LLaDALikeConfig.from_pretrained(tmp_path)
    cfg.__dict__.pop("use_cache", None)  # as LLaDAConfig: no use_cache at all
    m.config = cfg
    with pytest.raises(AttributeError, match="use_cache"):
        m(input_ids=_ids())
    llada.patch_llada_config(m.config)
    with torch.no_grad():
        torch.testing.assert_close(m(input_ids=_ids()).logits, la(input_ids=_ids()).logits)
    m.tie_weights(missing_keys=set(), recompute_mapping=False)  # transformers 5's call


def test_dream_rope_patch():
    from transformers import modeling_rope_utils

    had = modeling_rope_utils.ROPE_INIT_FUNCTIONS.pop("default", None)
    try:
        with pytest.raises(KeyError, match="default"):
            LA.DreamLikeModel(LA.DreamLikeConfig())

        class Fresh(LA.DreamLikeModel):
            pass

        dream.patch_dream_class(Fresh)
        Fresh(LA.DreamLikeConfig())
        assert r"rotary_emb\.inv_freq" in Fresh._keys_to_ignore_on_load_unexpected
        cfg = LA.DreamLikeConfig(hidden_size=32, num_attention_heads=4, rope_theta=500.0)
        inv, scale = dream.compute_default_rope_parameters(cfg)
        assert scale == 1.0 and inv.shape == (4,)
        torch.testing.assert_close(inv, 1.0 / 500.0 ** (torch.arange(0, 8, 2).float() / 8))
    finally:
        if had is not None:
            modeling_rope_utils.ROPE_INIT_FUNCTIONS["default"] = had


# -- loading ---------------------------------------------------------------------------------------


def _remote_dir(tmp_path: Path, model, cls_name: str, cfg_name: str) -> Path:
    """A local checkpoint whose config.json names remote code (a copy of layerwise.lookalikes), laid out
    as the hub repos are (Dream's with a generation_config.json). Written without save_pretrained,
    which Dream's class cannot do unpatched."""
    from safetensors.torch import save_file

    d = tmp_path / cls_name
    d.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "model.safetensors"))
    shutil.copy(LA.__file__, d / "modeling_lookalike.py")
    cfg = model.config.to_dict()
    cfg["architectures"] = [cls_name]
    cfg["auto_map"] = {"AutoConfig": f"modeling_lookalike.{cfg_name}", "AutoModel": f"modeling_lookalike.{cls_name}"}
    cfg.pop("use_cache", None)
    (d / "config.json").write_text(json.dumps(cfg))
    if cls_name.startswith("Dream"):
        gen = {"mask_token_id": V - 1, "transformers_version": "4.46.2"}
        (d / "generation_config.json").write_text(json.dumps(gen))
    return d


def _load_registered(d: Path, family: Family, **kw) -> M.LoadedModel:
    """load() of a local folder registered with per-model facts only (family, mask token, dtype)."""
    M.register(M.ModelSpec(str(d), family, mask_token_id=V - 1, dtype="float32"))
    try:
        return M.load(str(d), device="cpu", **kw)
    finally:
        del M.REGISTRY[str(d)]


def test_load_remote_code_applies_patches(tmp_path, pair_llada, pair_dream):
    """load() of a local folder of remote code: its config names the architecture, which decides
    trust_remote_code and the fixes: AutoConfig -> class from the dynamic module -> class patches ->
    config check and patches -> from_pretrained -> model patches. Without the patches this load fails
    (see the tests above and test_arch.py)."""
    ids = _ids()
    for (std, look), cls_name, cfg_name, arch, fam in (
        (pair_llada, "LLaDALikeLM", "LLaDALikeConfig", "llada", Family.DLM),
        (pair_dream, "DreamLikeModel", "DreamLikeConfig", "dream", Family.AR2DLM),
    ):
        d = _remote_dir(tmp_path, look, cls_name, cfg_name)
        lm = _load_registered(d, fam)
        assert type(lm.model).__name__ == cls_name and type(lm.model) is not type(look)
        assert lm.adapter.name == lm.spec.adapter == arch and lm.family is fam and lm.spec.mask_token_id == V - 1
        with torch.no_grad():
            torch.testing.assert_close(lm.logits(ids), std(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
        # an explicit trust_remote_code=False is kept, and the error says what to pass
        with pytest.raises(LayerwiseError, match="trust_remote_code=True"):
            _load_registered(d, fam, trust_remote_code=False)
    assert type(lm.model.generation_config).__name__ == "DreamLikeGenerationConfig"


def test_load_checks_config_before_weights(tmp_path, pair_llada):
    """A grouped LLaDA checkpoint is refused from its config, before any weight is read."""
    d = _remote_dir(tmp_path, pair_llada[1], "LLaDALikeLM", "LLaDALikeConfig")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "block_group_size": 2}))
    (d / "model.safetensors").unlink()  # would fail differently if the weights were read
    with pytest.raises(LayerwiseError, match="block_group_size = 2"):
        _load_registered(d, Family.DLM)


def test_load_unknown_remote_code(tmp_path, pair_dream, caplog):
    """Remote code of an unsupported architecture: refused with the supported ones named; with an
    explicit trust_remote_code=True it loads unpatched, adapter inferred from module names."""
    d = _remote_dir(tmp_path, pair_dream[1], "DreamLikeModel", "DreamLikeConfig")
    (d / "generation_config.json").unlink()
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "model_type": "fancy", "architectures": ["FancyLM"]}))
    with pytest.raises(LayerwiseError, match=r"not a supported architecture.*llada.*register_architecture"):
        M.load(str(d), device="cpu", family="ar2dlm")
    dream.patch_rope_default()  # the one fix this class cannot be built without
    with caplog.at_level("WARNING", logger="layerwise.models"):
        lm = M.load(str(d), device="cpu", family="ar", trust_remote_code=True)
    assert lm.adapter.name == "dream" and "from its module names" in caplog.text


def _triplet_dir(tmp_path: Path, model, objective: str) -> Path:
    d = tmp_path / objective
    model.save_pretrained(d)
    (d / M.META_FILE).write_text(json.dumps({"objective": objective, "mask_token_id": V - 1}))
    return d


def test_load_local_triplet_and_unknown(tmp_path, caplog):
    ll = _llama()
    lm = M.load(str(_triplet_dir(tmp_path, ll, "dlm")), device="cpu")
    assert (lm.family, lm.adapter.name, lm.spec.mask_token_id) == (Family.DLM, "llama", V - 1)
    # an unknown bidirectional model: the family must be given
    d = tmp_path / "unknown"
    ll.save_pretrained(d)
    with pytest.raises(LayerwiseError, match="family='dlm'"):
        M.load(str(d), device="cpu")
    causal = tmp_path / "causal"
    _llama(causal=True).save_pretrained(causal)
    with caplog.at_level("WARNING", logger="layerwise.models"):
        lm2 = M.load(str(causal), device="cpu")
    assert lm2.family is Family.AR and lm2.adapter.name == "llama"
    assert "inferred layer adapter 'llama' from its config" in caplog.text


def test_load_dispatched_over_cpu_and_disk(tmp_path):
    """device_map dict: two blocks offloaded to disk (their weights live on 'meta' between calls, as
    on a GPU node where blocks sit on other devices); logits and every block hook still work."""
    ll = _llama()
    d = _triplet_dir(tmp_path, ll, "dlm")
    dm = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
          "model.layers.1": "disk", "model.layers.2": "disk", "model.norm": "cpu", "lm_head": "cpu"}
    lm = M.load(str(d), device="cpu", device_map=dm, offload_folder=str(tmp_path / "offload"))
    assert lm.is_dispatched and lm.device == torch.device("cpu")
    assert {p.device.type for p in lm.adapter.get_blocks(lm.model)[2].parameters()} == {"meta"}
    ids = _ids()
    rec = _capture(lm.model, lm.adapter, ids)
    ref = _capture(ll, A.ADAPTERS["llama"], ids)
    for key in ("block", "attn_in", "logits"):
        for x, y in zip(rec[key], ref[key]):
            torch.testing.assert_close(x, y)


def test_random_model_shape_and_attention():
    """random_model builds the asked shape; diffusion families are bidirectional, AR causal."""
    import torch

    from layerwise.testing import random_model
    for fam, causal in (("dlm", False), ("ar", True)):
        lm = random_model(layers=3, d_model=32, heads=4, mlp=64, vocab=50, family=fam, device="cpu")
        assert lm.num_layers == 3 and lm.family is Family(fam)
        assert lm.model.config.hidden_size == 32 and lm.model.config.vocab_size == 50
        assert lm.spec.mask_token_id == (None if causal else 49)
        x = torch.randint(0, 40, (1, 6))
        y = x.clone()
        y[0, -1] = (y[0, -1] + 1) % 40
        with torch.no_grad():
            moved = (lm.logits(x)[0, 0] - lm.logits(y)[0, 0]).abs().max().item()
        assert (moved == 0.0) == causal
