"""Layer skipping under native inference: the sampler's step context, disruption along the trajectory, stages."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from layerwise.config import LayerwiseError
from layerwise.models import LoadedModel, wrap
from layerwise.native_skipping import (
    POINTS,
    _decode,
    native_disruption,
    native_generate,
    skip_during,
    stage_retention,
    stage_steps,
)
from layerwise.sampling import diffusion_generate
from layerwise.skipping import skip_layers

pytestmark = pytest.mark.usefixtures("one_thread")

N_WORDS = 40
LAYERS = 6
SKIP = [1, 2]
GEN = 8
KW = {"steps": 8, "block_length": 4}  # two blocks of four steps


def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(N_WORDS)]
    vocab = {w: i for i, w in enumerate(words + ["<|endoftext|>", "<|pad|>", "<|mask|>"])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", pad_token="<|pad|>",
                                   mask_token="<|mask|>")


def model(family: str, seed: int) -> LoadedModel:
    tok = tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS, num_attention_heads=4,
                      num_key_value_heads=4, vocab_size=len(tok), max_position_embeddings=128,
                      tie_word_embeddings=False, attn_implementation="sdpa", pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id)
    cfg.is_causal = family == "ar"
    m = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # a larger head makes argmax and confidence ranking non-trivial
        m.lm_head.weight.mul_(20)
    return wrap(m, tok, family, mask_token_id=None if family == "ar" else tok.mask_token_id)


@pytest.fixture(scope="module")
def dlm() -> LoadedModel:
    return model("dlm", 0)


@pytest.fixture(scope="module")
def ar() -> LoadedModel:
    return model("ar", 1)


PROMPTS = ["w1 w2 w3", "w4 w5 w6 w7 w8", "w9 w10", "w11 w12 w13 w14", "w3 w3 w5"]


def canvas(lm: LoadedModel):
    tok = lm.tokenizer
    tok.padding_side = "left"
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


def test_step_context_all_steps_is_static_skipping_and_no_steps_is_unmodified(dlm):
    ids, am = canvas(dlm)
    plain = diffusion_generate(dlm, ids, am, gen_length=GEN, **KW)
    with skip_layers(dlm, SKIP):
        static = diffusion_generate(dlm, ids, am, gen_length=GEN, **KW)
    assert not torch.equal(plain, static)  # the mask changes the tokens of this model
    assert torch.equal(diffusion_generate(dlm, ids, am, gen_length=GEN, step_context=skip_during(dlm, SKIP, range(8)),
                                          **KW), static)
    assert torch.equal(diffusion_generate(dlm, ids, am, gen_length=GEN, step_context=skip_during(dlm, SKIP, range(0)),
                                          **KW), plain)
    # the context sees every step once, in order, with the canvas the model is about to see
    calls = []

    def record(step, x):
        calls.append((step, int((x == dlm.tokenizer.mask_token_id).sum())))
        return contextlib.nullcontext()

    assert torch.equal(diffusion_generate(dlm, ids, am, gen_length=GEN, step_context=record, **KW), plain)
    assert [s for s, _ in calls] == list(range(8))
    masked = [m for _, m in calls]
    assert masked[0] == len(PROMPTS) * GEN and all(a > b for a, b in zip(masked, masked[1:], strict=False))
    # the model is whole again after every step
    assert len(dlm.adapter.get_blocks(dlm.model)) == LAYERS


def test_step_context_refuses_a_prefix_cache(dlm):
    ids, am = canvas(dlm)
    with pytest.raises(LayerwiseError, match="prefix_cache=False"):
        diffusion_generate(dlm, ids, am, gen_length=GEN, prefix_cache=True, step_context=skip_during(dlm, SKIP, []),
                           **KW)


def test_stage_steps_split_the_schedule_into_thirds():
    parts = [stage_steps(s, 9) for s in ("early", "middle", "late")]
    assert [list(p) for p in parts] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert stage_steps("all", 9) == range(9)
    with pytest.raises(LayerwiseError, match="unknown stage"):
        stage_steps("first", 9)


@pytest.mark.parametrize("family", ["dlm", "ar"])
def test_disruption_is_zero_without_skipping_and_positive_with_it(family, dlm, ar):
    lm = dlm if family == "dlm" else ar
    none = native_disruption(lm, PROMPTS, [], gen_length=GEN, batch_size=3, sampler_kwargs=KW)
    assert none.per_prompt.shape == (len(POINTS), LAYERS - 1, len(PROMPTS))
    assert np.abs(none.per_prompt).max() < 1e-6
    d = native_disruption(lm, PROMPTS, SKIP, gen_length=GEN, batch_size=3, sampler_kwargs=KW, model=family)
    assert d.blocks == tuple(range(max(SKIP) + 1, LAYERS)) and d.per_prompt.shape == (3, LAYERS - 3, len(PROMPTS))
    assert (d.per_prompt > 1e-4).all() and (d.per_prompt <= 2).all()
    assert d.final.shape == (3, len(PROMPTS))
    f = d.to_frame(n_boot=50)
    assert len(f) == 3 * (LAYERS - 3) and f.final.sum() == 3 and set(f.point) == set(POINTS)
    assert ((f.ci_low <= f.disruption + 1e-12) & (f.disruption <= f.ci_high + 1e-12)).all()
    assert f.disruption.to_numpy() == pytest.approx(d.per_prompt.mean(axis=2).ravel())


def test_disruption_points_differ_along_the_diffusion_trajectory(dlm):
    """The canvases at 25% and 75% of the steps are different inputs: the disruption differs too."""
    d = native_disruption(dlm, PROMPTS, SKIP, gen_length=GEN, sampler_kwargs=KW)
    assert not np.allclose(d.per_prompt[0], d.per_prompt[2])
    with pytest.raises(LayerwiseError, match="fractions"):
        native_disruption(dlm, PROMPTS, SKIP, gen_length=GEN, points=(0.0, 0.5), sampler_kwargs=KW)


def _texts(lm, static=False):
    with skip_layers(lm, SKIP if static else []):
        return _decode(lm, native_generate(lm, PROMPTS, gen_length=GEN, batch_size=2, sampler_kwargs=KW))


def same(texts, answers):
    return np.array([float(t == a) for t, a in zip(texts, answers, strict=True)])


def test_stage_retention_against_the_unmodified_run(dlm):
    answers = _texts(dlm)  # the unmodified run's texts, scored by equality: the baseline is 1 by construction
    r = stage_retention(dlm, PROMPTS, answers, SKIP, gen_length=GEN, batch_size=2, sampler_kwargs=KW, n_boot=200,
                        score=same, model="dlm")
    assert list(r.stage) == ["early", "middle", "late", "all"]
    assert (r.baseline == 1).all() and r.meaningful.all() and (r.n == len(PROMPTS)).all()
    assert r.set_index("stage").loc["all", "retention"] == pytest.approx(same(_texts(dlm, static=True), answers).mean())
    assert r.retention.min() < 1  # skipping changes some answer at some stage
    assert ((r.ci_low <= r.retention + 1e-12) & (r.retention <= r.ci_high + 1e-12)).all()
    assert list(r.steps) == ["0-2 of 8", "3-4 of 8", "5-7 of 8", "0-7 of 8"]


def test_stage_retention_of_an_ar_model_is_the_whole_decoding(ar):
    r = stage_retention(ar, PROMPTS, ["1"] * len(PROMPTS), SKIP, gen_length=GEN, n_boot=50)
    assert list(r.stage) == ["all"] and list(r.steps) == ["whole decoding"]
    assert not r.meaningful.any()  # no prompt's answer is "1": the baseline is not above 0
    with pytest.raises(LayerwiseError, match="answer per prompt"):
        stage_retention(ar, PROMPTS, ["1"], SKIP, gen_length=GEN)
