"""The samplers give the tokens of the genuine reference code: LLaDA's ``generate.py`` and Dream's
``diffusion_generate`` (``generation_utils.py``), on tiny random-weight checkpoints built from the genuine
modeling files and loaded back through ``layerwise.models.load``, in float32 and bfloat16 on CPU.

The checkpoints are "sharpened" (larger weights) so that predictions depend on the context and the top
probabilities are large: confidences then tie often (bfloat16 has 8 bits of mantissa), and the ranking
dtype changes tokens, which the tests check too. ``generate.py`` draws its noise from the global RNG: both
samplers run after the same ``torch.manual_seed``. Needs ``../shared/remote_code`` (skips without it).
"""

from __future__ import annotations

import csv
import inspect
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from layerwise import sampling as S
from layerwise.arch import dream
from layerwise.arch.llada import padding_bias as llada_padding_bias
from layerwise.models import DREAM_SAMPLER, wrap
from oracles.remote_code import (
    REMOTE_CODE,
    genuine_checkpoint,
    genuine_class,
    hub_folder,
    import_llada_generate,
    load_checkpoint,
    needs_remote_code,
    tiny_config,
)

VOCAB, MASK, PAD = 97, 96, 95


pytestmark = [needs_remote_code, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("genuine")
    return {"llada": genuine_checkpoint(d, "llada", vocab=VOCAB),
            "dream": genuine_checkpoint(d, "dream", vocab=VOCAB),
            "llada-2025-06": genuine_checkpoint(d / "june", "llada", vocab=VOCAB,
                                                modeling="modeling_llada.hub-2025-06.py")}


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def llada(request, checkpoints):
    return load_checkpoint(checkpoints["llada"], "llada", request.param, MASK)


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def dream_lm(request, checkpoints):
    return load_checkpoint(checkpoints["dream"], "dream", request.param, MASK)


def batch(b: int, seed: int, length: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """``b`` prompts; rows after the first are left-padded by a random amount (``PAD``, mask 0)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, PAD, (b, length), generator=g)
    am = torch.ones_like(ids)
    for r in range(1, b):
        am[r, :int(torch.randint(1, length - 2, (1,), generator=g))] = 0
    ids[am == 0] = PAD
    return ids, am


def llada_pair(lm, b: int, seed: int, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    """(generate.py's tokens, the library's) for one batch, both after ``torch.manual_seed(seed)``."""
    G = import_llada_generate()
    ids, am = batch(b, seed)
    options = {k: kw.pop(k) for k in ("confidence_dtype", "sliced_head", "gumbel_noise") if k in kw}
    torch.manual_seed(seed)
    ref = G.generate(lm.model, ids, am, mask_id=MASK, **kw)[:, ids.shape[1]:]
    torch.manual_seed(seed)
    return ref, S.diffusion_generate(lm, ids, am, **kw, **options)


# -- LLaDA: generate.py ---------------------------------------------------------------------------


@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
@pytest.mark.parametrize("gen_length, steps, block_length", [(16, 16, 8), (16, 8, 16)], ids=["semi-ar", "one-block"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("b", [1, 4])
def test_llada_sampler_gives_generate_py_tokens(llada, b, temperature, gen_length, steps, block_length, remasking):
    """Three batches each: same tokens as generate.py at the same batch shape (batch 4 left-padded with an
    attention mask, as its main()), greedy and sampled, semi-autoregressive and one block."""
    kw = dict(gen_length=gen_length, steps=steps, block_length=block_length, temperature=temperature,
              remasking=remasking)
    for seed in range(3):
        ref, got = llada_pair(llada, b, seed, **kw)
        assert got.shape == (b, gen_length)
        assert torch.equal(got, ref), f"seed {seed}: {int((got != ref).sum())} of {ref.numel()} tokens differ"


def test_llada_forward_is_generate_py_forward(llada):
    """The padded forward the samplers use gives generate.py's logits bit for bit (generate.py passes a 2D
    attention_mask, which LLaDA's modeling code turns into :func:`layerwise.arch.llada.padding_bias`)."""
    ids, am = batch(4, 0, length=20)
    with torch.no_grad():
        ref = llada.model(ids, attention_mask=am).logits
        got = llada.model(input_ids=ids, attention_bias=llada_padding_bias(am)).logits
    assert torch.equal(got, ref)


def test_confidence_ties_decide_tokens(llada):
    """Ties are real: within a block many first-step confidences are equal in the model's dtype, and
    ranking in float64 (the named option) gives other tokens than generate.py, while the default does not."""
    kw = dict(gen_length=16, steps=16, block_length=8)
    ties = differ = 0
    for seed in range(3):
        ref, f64 = llada_pair(llada, 4, seed, confidence_dtype=torch.float64, **kw)
        _, default = llada_pair(llada, 4, seed, **kw)
        assert torch.equal(default, ref)
        differ += int((f64 != ref).sum())
        ids, am = batch(4, seed)
        x = torch.cat([ids, torch.full((4, 16), MASK)], dim=1)
        with torch.no_grad():
            logits = llada.model(x, attention_mask=torch.cat([am, torch.ones(4, 16, dtype=am.dtype)], 1)).logits
        conf = F.softmax(logits[:, 10:18], dim=-1).max(dim=-1).values
        ties += sum(len(row) - len(set(row)) for row in conf.tolist())
    assert ties > 0 and differ > 0


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_llada_options(llada, temperature):
    """``sliced_head`` (LM head on the block only) gives generate.py's tokens on this CPU; ``gumbel_noise=
    "block"`` (less noise drawn) changes tokens when sampling and nothing when greedy."""
    kw = dict(gen_length=16, steps=16, block_length=8, temperature=temperature)
    for seed in range(2):
        ref, sliced = llada_pair(llada, 4, seed, sliced_head=True, **kw)
        assert torch.equal(sliced, ref)
    ref, block_noise = llada_pair(llada, 4, 0, gumbel_noise="block", **kw)
    assert torch.equal(block_noise, ref) == (temperature == 0)


@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_llada_stop_at_eos_keeps_generate_py_text(llada, temperature, remasking):
    """``stop_at_eos``: generate.py's tokens up to each row's first end-of-text token (the rest set to it),
    and the global RNG left where generate.py leaves it. The end-of-text ids are tokens every row emits in
    its first block, so the sampler stops after it."""
    G = import_llada_generate()
    kw = dict(gen_length=16, steps=16, block_length=4, temperature=temperature, remasking=remasking)
    for seed in range(2):
        ids, am = batch(4, seed)
        torch.manual_seed(seed)
        ref = G.generate(llada.model, ids, am, mask_id=MASK, **kw)[:, ids.shape[1]:]
        after_ref = torch.rand(1)
        eos = sorted(set(ref[:, :2].flatten().tolist()) - {MASK})
        torch.manual_seed(seed)
        got = S.diffusion_generate(llada, ids, am, stop_at_eos=True, eos_ids=eos, **kw)
        assert torch.equal(got, S.fill_after_stop(ref, eos, MASK))
        assert torch.equal(torch.rand(1), after_ref)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_llada_june_2025_modeling_file(checkpoints, temperature):
    """The pre-October-2025 hub file ignores padding masks; generate.py and the sampler agree there too."""
    lm = load_checkpoint(checkpoints["llada-2025-06"], "llada", "float32", MASK)
    for seed in range(2):
        ref, got = llada_pair(lm, 4, seed, gen_length=16, steps=16, block_length=8, temperature=temperature)
        assert torch.equal(got, ref)


def test_bench_llada_reference_tiny(tmp_path):
    """The GPU check script's CPU path: a tiny genuine LLaDA, every generated token equal."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_llada_reference as bench

    out = tmp_path / "ref"
    rows = bench.main(["--tiny", "--remote-code", str(REMOTE_CODE), "--out", str(out), "--dtype", "bfloat16",
                       "--samples", "4", "--float64"])
    assert [(r["batch"], r["samples"]) for r in rows] == [(1, 4), (4, 4)]
    for r in rows:
        assert r["tokens_equal"] == r["tokens_total"] == 4 * 16 and r["rows_equal"] == 4
        assert r["ref_s_per_sample"] > 0 and r["lw_s_per_sample"] > 0 and "float64_tokens_equal" in r
    with open(out.with_suffix(".csv")) as f:
        assert [int(r["tokens_equal"]) for r in csv.DictReader(f)] == [64, 64]
    assert "| 4 | 4 |" in out.with_suffix(".md").read_text()


# -- Dream: diffusion_generate --------------------------------------------------------------------


def test_dream_generation_fix(tmp_path):
    """Dream's own diffusion_generate fails on transformers 5 without the fix, and runs with it."""
    fix = dream.generation_config_from_model_config
    assert "'GenerationConfig' object has no attribute 'eps'" in " ".join(fix.__doc__.split())
    assert fix in dream.ARCHITECTURE.patches.cls
    config, cls, _ = genuine_class(hub_folder(tmp_path / "dream", "dream", tiny_config("dream", VOCAB)))
    gen_config = sys.modules[cls.__module__].DreamGenerationConfig
    fixed = gen_config.__dict__.get("from_model_config")
    ids = torch.randint(0, PAD, (1, 5))
    try:
        if fixed is not None:
            del gen_config.from_model_config
        model = cls(config).eval()
        dream.reset_rope_buffers(model)
        with pytest.raises(AttributeError, match="'GenerationConfig' object has no attribute 'eps'"):
            model.diffusion_generate(ids, max_new_tokens=4, steps=4)
        fix(cls)
        again = gen_config.__dict__["from_model_config"]
        fix(cls)
        assert gen_config.__dict__["from_model_config"] is again  # applying it twice changes nothing
        out = model.diffusion_generate(ids, max_new_tokens=4, steps=4)
        assert out.shape == (1, 9) and not (out == MASK).all()
    finally:
        if fixed is not None:
            gen_config.from_model_config = fixed


def test_dream_sampler_defaults_are_dreams(checkpoints):
    """dream_generate's defaults are DreamGenerationConfig's (alg, steps, eps, temperature, top_p, top_k,
    alg_temp)."""
    lm = load_checkpoint(checkpoints["dream"], "dream", "float32", MASK)
    genuine = sys.modules[type(lm.model).__module__].DreamGenerationConfig()
    params = inspect.signature(S.dream_generate).parameters
    for name in ("alg", "steps", "eps", "temperature", "top_p", "top_k", "alg_temp"):
        assert params[name].default == getattr(genuine, name), name


DREAM_SETTINGS = {"greedy": dict(temperature=0.0), "sampled": dict(temperature=1.0),
                  "nucleus": dict(temperature=0.5, top_p=0.9, top_k=20),
                  "alg_temp": dict(temperature=0.0, alg_temp=0.5)}


@pytest.mark.parametrize("alg, setting", [(a, s) for a in S.DREAM_ALGS for s in DREAM_SETTINGS
                                           if not (a == "origin" and s == "alg_temp")])  # origin ranks nothing
@pytest.mark.parametrize("b", [1, 3])
def test_dream_sampler_gives_diffusion_generate_tokens(dream_lm, b, alg, setting):
    """Two batches each: the tokens of Dream's own diffusion_generate, for every algorithm, greedy and
    sampled (same global seed), with nucleus / top-k cuts and alg_temp, batch 3 left-padded."""
    kw = DREAM_SETTINGS[setting]
    for seed in range(2):
        ids, am = batch(b, seed, length=7)
        torch.manual_seed(seed)
        ref = dream_lm.model.diffusion_generate(ids, attention_mask=am, max_new_tokens=12, steps=6, alg=alg,
                                                **kw)[:, 7:]
        torch.manual_seed(seed)
        got = S.dream_generate(dream_lm, ids, am, gen_length=12, steps=6, alg=alg, **kw)
        assert torch.equal(got, ref), f"seed {seed}: {int((got != ref).sum())} of {ref.numel()} tokens differ"


def test_generate_with_dreams_registered_sampler(checkpoints):
    """generate() on a Dream model with its registry defaults (entropy, temperature 0.2, top_p 0.95) gives
    the text of Dream's own diffusion_generate with those settings, padding and seed."""
    from test_sampling import tiny_tokenizer

    base = load_checkpoint(checkpoints["dream"], "dream", "float32", MASK)
    tok = tiny_tokenizer()
    lm = wrap(base.model, tok, "ar2dlm", spec=replace(base.spec, sampler=DREAM_SAMPLER))
    texts = ["w1 w2 w3", "w4 w5 w6 w7 w8"]
    torch.manual_seed(0)
    out = S.generate(lm, texts, max_new_tokens=8, progress=False)
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True)
    torch.manual_seed(0)
    ref = base.model.diffusion_generate(enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=8,
                                        steps=8, alg="entropy", temperature=0.2, top_p=0.95, alg_temp=0.0, eps=1e-3)
    eos = tok.eos_token_id
    rows = [r[:r.index(eos)] if eos in r else r for r in ref[:, enc["input_ids"].shape[1]:].tolist()]
    assert out == [tok.decode(r, skip_special_tokens=True) for r in rows]
