"""Static layer skipping on tiny random-weight transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from layerwise.config import LayerwiseError
from layerwise.models import wrap
from layerwise.skipping import (
    STRATEGIES,
    block_flops,
    block_influence,
    flops_fraction,
    select_layers,
    skip_layers,
)

VOCAB = 64


def tiny(family: str = "ar", layers: int = 6, arch: str = "llama"):
    torch.manual_seed(0)
    kw = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
              pad_token_id=0, eos_token_id=1, bos_token_id=2)
    if arch == "qwen2":  # has config.layer_types
        model = Qwen2ForCausalLM(Qwen2Config(**kw)).eval()
    else:
        cfg = LlamaConfig(**kw)
        cfg.is_causal = family == "ar"
        model = LlamaForCausalLM(cfg).eval()
    return wrap(model, None, family, mask_token_id=None if family == "ar" else VOCAB - 1)


def ids(n=2, t=9):
    return torch.randint(3, VOCAB - 1, (n, t), generator=torch.Generator().manual_seed(4))


def logits(lm, x):
    with torch.no_grad():
        return lm.model(input_ids=x).logits


def snapshot(lm):
    blocks = lm.adapter.get_blocks(lm.model)
    return (blocks, [id(b) for b in blocks], [b.self_attn.layer_idx for b in blocks],
            lm.model.config.num_hidden_layers, list(getattr(lm.model.config, "layer_types", None) or []),
            {k: v.clone() for k, v in lm.model.state_dict().items()})


def test_skip_nothing_is_bit_identical():
    lm = tiny("dlm")
    x = ids()
    ref = logits(lm, x)
    with skip_layers(lm, []):
        assert torch.equal(logits(lm, x), ref)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_skip_changes_output_then_restores_exactly(arch):
    lm = tiny("ar", arch=arch)
    x = ids()
    ref = logits(lm, x)
    before = snapshot(lm)
    with skip_layers(lm, [4, 1]) as skipped:
        assert skipped == [1, 4]
        blocks = lm.adapter.get_blocks(lm.model)
        assert len(blocks) == 4 and lm.model.config.num_hidden_layers == 4
        assert [b.self_attn.layer_idx for b in blocks] == [0, 1, 2, 3]
        if arch == "qwen2":
            assert len(lm.model.config.layer_types) == 4
        out = logits(lm, x)
        assert not torch.allclose(out, ref)
    after = snapshot(lm)
    assert after[0] is before[0] and after[1:5] == before[1:5]
    assert all(torch.equal(before[5][k], after[5][k]) for k in before[5])
    assert torch.equal(logits(lm, x), ref)


def test_skipping_equals_manual_forward_without_those_blocks():
    """The skipped model computes exactly embeddings -> kept blocks -> norm -> head (causal, so that
    attention_mask=None means the same mask in the manual loop as in the model)."""
    lm = tiny("ar")
    x = ids()
    m = lm.model.model
    with torch.no_grad():
        h = m.embed_tokens(x)
        pos = torch.arange(x.shape[1])[None]
        pe = m.rotary_emb(h, pos)
        for i, blk in enumerate(m.layers):
            if i not in (2, 3):
                h = blk(h, attention_mask=None, position_embeddings=pe, position_ids=pos)
                h = h[0] if isinstance(h, tuple) else h
        want = lm.model.lm_head(m.norm(h))
    with skip_layers(lm, [2, 3]):
        torch.testing.assert_close(logits(lm, x), want)


def test_restored_after_exception():
    lm = tiny("ar")
    before = snapshot(lm)
    with pytest.raises(RuntimeError):
        with skip_layers(lm, [0, 5]):
            raise RuntimeError("inside")
    after = snapshot(lm)
    assert after[0] is before[0] and after[1:5] == before[1:5]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_generate_with_and_without_kv_cache_agree_under_skipping(arch):
    lm = tiny("ar", arch=arch)
    prompt = ids(1, 5)
    with skip_layers(lm, [1, 3]):
        with torch.no_grad():
            a = lm.model.generate(prompt, max_new_tokens=5, do_sample=False, use_cache=True)
            b = lm.model.generate(prompt, max_new_tokens=5, do_sample=False, use_cache=False)
        assert torch.equal(a, b)
    with torch.no_grad():
        c = lm.model.generate(prompt, max_new_tokens=5, do_sample=False, use_cache=True)
    assert a.shape == c.shape


@pytest.mark.parametrize("bad,match", [([6], "out of range"), ([-1], "out of range"), ([2, 2], "more than once"),
                                       ([0, 1, 2, 3, 4, 5], "cannot skip all"), (["1"], "not an int")])
def test_bad_indices(bad, match):
    lm = tiny("ar")
    with pytest.raises(LayerwiseError, match=match) as e:
        with skip_layers(lm, bad):
            pass
    assert "0..5" in str(e.value)
    assert len(lm.adapter.get_blocks(lm.model)) == 6


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("n_skip", [0, 1, 3, 6])
def test_strategies_return_valid_distinct_indices(strategy, n_skip):
    L = 8
    infl = np.random.default_rng(1).random(L)
    out = select_layers(strategy, n_skip, L, influence=infl, seed=3)
    assert len(out) == n_skip == len(set(out))
    assert out == sorted(out) and all(1 <= i <= L - 2 for i in out)
    if strategy == "redundant" and n_skip:
        cand = np.arange(1, L - 1)
        assert set(out) == set(cand[np.argsort(infl[cand])][:n_skip].tolist())


def test_strategy_shapes():
    assert select_layers("early", 3, 10) == [1, 2, 3]
    assert select_layers("late", 3, 10) == [6, 7, 8]
    assert select_layers("early", 3, 10, protect_first=False) == [0, 1, 2]
    u = select_layers("uniform", 4, 10)
    assert np.ptp(np.diff(u)) <= 1  # evenly spaced
    draws = {tuple(select_layers("random", 3, 32, seed=s)) for s in range(5)}
    assert len(draws) > 1 and select_layers("random", 3, 32, seed=7) == select_layers("random", 3, 32, seed=7)
    with pytest.raises(LayerwiseError, match="n_skip"):
        select_layers("early", 9, 10)
    with pytest.raises(LayerwiseError, match="influence"):
        select_layers("redundant", 2, 10)
    with pytest.raises(LayerwiseError, match="unknown strategy"):
        select_layers("middle", 2, 10)


def test_flops_fraction():
    lm = tiny("dlm", layers=6)
    per_block, head = block_flops(lm, 16)
    assert flops_fraction(lm, [], 16) == 0.0
    f2 = flops_fraction(lm, [1, 2], 16)
    assert f2 == pytest.approx(2 * per_block[0] / (6 * per_block[0] + head))
    assert 0 < f2 < 2 / 6  # the LM head is never skipped
    # the per-block count equals the Linear parameter count x 2T plus attention's 4 T^2 d
    block0 = lm.adapter.get_blocks(lm.model)[0]
    n_lin = sum(p.numel() for n, p in block0.named_parameters() if n.endswith("proj.weight"))
    assert per_block[0] == 2 * 16 * n_lin + 4 * 16 * 16 * 32


def test_block_influence_is_one_minus_similarity():
    lm = tiny("dlm")
    bi = block_influence(lm, ids(3, 8))
    assert bi.shape == (6,) and np.all((bi >= 0) & (bi <= 2))
    sel = select_layers("redundant", 2, 6, influence=bi)
    assert len(sel) == 2
