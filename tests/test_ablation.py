"""Channel ablation hooks, the random control, and the repetition metrics, on tiny random models."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from layerwise.ablation import (
    ablate_channels,
    ablation_conditions,
    ablation_effect,
    channel_means,
    distinct_n,
    exact_match,
    extract_answer,
    longest_loop,
    random_control_channels,
    repeated_ngram_share,
    run_conditions,
    text_metrics,
)
from layerwise.config import LayerwiseError
from layerwise.models import wrap

D, L, V = 32, 4, 64


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_lm(causal: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=D, intermediate_size=64, num_hidden_layers=L, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=V, max_position_embeddings=64)
    cfg.is_causal = causal
    model = LlamaForCausalLM(cfg).eval()
    return wrap(model, None, "ar" if causal else "dlm", mask_token_id=V - 1)


@pytest.fixture(scope="module", params=[True, False], ids=["ar", "dlm"])
def lm(request):
    return tiny_lm(causal=request.param)


def ids(n=3, s=12, seed=1):
    return torch.randint(0, V - 1, (n, s), generator=torch.Generator().manual_seed(seed))


def capture(lm, where="attn_input"):
    """Record the hooked tensors per layer (attention input = q_proj's input; residual = block output)."""
    got, hs = {}, []
    for i, blk in enumerate(lm.adapter.get_blocks(lm.model)):
        if where == "attn_input":
            q = lm.adapter.block_linears(blk)["q"]
            hs.append(q.register_forward_pre_hook(lambda m, a, i=i: got.__setitem__(i, a[0].detach().clone())))
        else:
            hs.append(blk.register_forward_hook(
                lambda m, a, o, i=i: got.__setitem__(i, (o[0] if isinstance(o, tuple) else o).detach().clone())))
    return got, hs


@torch.no_grad()
def test_zero_ablation_hits_chosen_channels_and_layers_then_restores_exactly(lm):
    x = ids()
    before = lm.model(x).logits.clone()
    got, hs = capture(lm)
    with ablate_channels(lm, [3, 17], layers=[0, 2], mode="zero") as layers:
        inside = lm.model(x).logits.clone()
    for h in hs:
        h.remove()
    assert layers == [0, 2]
    for i in (0, 2):
        assert torch.all(got[i][..., [3, 17]] == 0)
        assert torch.all(got[i][..., [0, 1, 2, 4]] != 0)
    for i in (1, 3):
        assert torch.all(got[i][..., 3] != 0)
    assert not torch.equal(before, inside)
    after = lm.model(x).logits
    assert torch.equal(before, after)  # bit-identical: nothing of the model was modified
    assert all(not m._forward_hooks for m in lm.model.modules())


@torch.no_grad()
def test_mean_mode_sets_channel_means_and_residual_hook(lm):
    x = ids()
    means = channel_means(lm, x)
    assert means.shape == (L, D)
    # brute force: the attention input's channel means, from captured q_proj inputs
    got, hs = capture(lm)
    lm.model(x)
    for h in hs:
        h.remove()
    brute = torch.stack([got[i].double().mean((0, 1)) for i in range(L)]).float()
    torch.testing.assert_close(means, brute, rtol=1e-5, atol=1e-6)

    got, hs = capture(lm)
    with ablate_channels(lm, 5, layers="all", mode="mean", means=means):
        lm.model(x)
    for h in hs:
        h.remove()
    for i in range(L):
        assert torch.allclose(got[i][..., 5], means[i, 5].expand_as(got[i][..., 5]))

    with ablate_channels(lm, 7, layers=[1], where="residual"):
        got, hs = capture(lm, where="residual")  # registered after the ablation hook: sees its result
        lm.model(x)
    for h in hs:
        h.remove()
    assert torch.all(got[1][..., 7] == 0) and torch.all(got[0][..., 7] != 0)


@torch.no_grad()
def test_hooks_removed_on_error_and_bad_input_raises():
    lm = tiny_lm()
    x = ids()
    before = lm.model(x).logits.clone()
    with pytest.raises(RuntimeError):
        with ablate_channels(lm, 0):
            raise RuntimeError("boom")
    assert torch.equal(before, lm.model(x).logits)
    with pytest.raises(LayerwiseError, match="out of range"):
        with ablate_channels(lm, 0, layers=[L]):
            pass
    with pytest.raises(LayerwiseError, match="hidden size"):
        with ablate_channels(lm, D):
            pass
    with pytest.raises(LayerwiseError, match="means"):
        with ablate_channels(lm, 0, mode="mean"):
            pass
    with pytest.raises(LayerwiseError, match="where"):
        with ablate_channels(lm, 0, where="mlp"):
            pass


@torch.no_grad()
def test_zeroing_a_planted_outlier_changes_outputs_more_than_a_control():
    """Plant a huge channel in the embeddings: ablating it at the attention input moves logits far more
    than ablating a random channel of similar rank (the control)."""
    lm = tiny_lm()
    emb = lm.adapter.get_embed(lm.model).weight
    target = 11
    emb[:, target] = 50.0  # a massive, token-independent activation as in paper B
    x = ids(4, 16)
    base = lm.model(x).logits
    means = channel_means(lm, x)
    mag = means.abs()
    assert int(mag[0].argmax()) == target
    controls = random_control_channels(mag, target, n_draws=4, seed=0, rank_window=4)
    assert target not in controls and len(controls) == 4
    with ablate_channels(lm, target, layers=[0]):
        d_out = (lm.model(x).logits - base).abs().mean()
    d_ctrl = []
    for c in controls:
        with ablate_channels(lm, c, layers=[0]):
            d_ctrl.append((lm.model(x).logits - base).abs().mean())
    assert d_out > max(d_ctrl)


def test_random_control_channels_ranks():
    mag = torch.arange(20, dtype=torch.float32)  # channel 19 largest, 18 second, ...
    draws = random_control_channels(mag, 19, n_draws=3, seed=1, rank_window=3)
    assert set(draws) <= {18, 17, 16} and len(set(draws)) == 3
    assert random_control_channels(mag, 19, 3, seed=1, rank_window=3) == draws  # seeded
    mid = random_control_channels(mag, 10, n_draws=50, seed=0, rank_window=2)
    assert set(mid) == {8, 9, 11, 12}  # with replacement once the window is exhausted
    assert 19 not in random_control_channels(torch.stack([mag, mag]), 19, 2, exclude=[18], rank_window=2)
    with pytest.raises(LayerwiseError):
        random_control_channels(mag, 25, 2)


def test_repetition_metrics():
    toks = "a b c a b c a b".split()
    assert longest_loop(toks).length == 8 and longest_loop(toks).period == 3
    loop = longest_loop("x y z the cat the cat the cat q".split())
    assert (loop.length, loop.period, loop.start) == (6, 2, 3)
    assert longest_loop("a b c d e".split()).length == 0
    assert longest_loop(["w"] * 10).length == 10 and longest_loop(["w"] * 10).period == 1
    assert repeated_ngram_share(toks, 2) == pytest.approx(1 - 3 / 7)  # bigrams ab bc ca ab bc ca ab
    assert repeated_ngram_share("a b".split(), 3) != repeated_ngram_share("a b".split(), 3)  # NaN
    assert distinct_n([["a", "b"], ["a", "b"]], 1) == 0.5
    m = text_metrics("the cat the cat the cat")
    assert m["loop_frac"] == 1.0 and m["rep_2"] == pytest.approx(1 - 2 / 5)
    assert extract_answer(" 42 is it. Question: 7") == "42"
    assert extract_answer("Question: What is 3 + 4? Answer: -7 and 9") == "-7"
    assert exact_match(" 1234\nQuestion", "1234") and not exact_match(" 123", "1234")
    assert extract_answer("no digits") is None


@torch.no_grad()
def test_run_conditions_and_effect_ci():
    """End to end with a real greedy AR loop on the tiny model (generations are token-id strings)."""
    lm = tiny_lm()

    def greedy(lm, prompts, max_new_tokens=8):
        out = []
        for p in prompts:
            x = torch.tensor([[int(t) for t in p.split()]])
            for _ in range(max_new_tokens):
                nxt = lm.model(x).logits[:, -1].argmax(-1, keepdim=True)
                x = torch.cat([x, nxt], 1)
            out.append(" ".join(str(int(t)) for t in x[0, -max_new_tokens:]))
        return out

    prompts = [" ".join(str(int(t)) for t in row) for row in ids(3, 5)]
    conds = ablation_conditions(3, {"early": [0], "all": "all"}, control_channels=[4, 5])
    assert [c.name for c in conds] == ["none", "outlier/early", "control/early/0", "control/early/1",
                                       "outlier/all", "control/all/0", "control/all/1"]
    conds = [c for c in conds if c.scope != "early"]  # keep the test fast
    df = run_conditions(lm, conds, prompts, greedy, answers=["1", "2", "3"], progress=False, max_new_tokens=5)
    assert isinstance(df, pd.DataFrame) and len(df) == len(conds) * 3
    assert {"rep_3", "loop_len", "correct", "text"} <= set(df.columns)
    eff = ablation_effect(df, metric="rep_1", scope="all", n_boot=200)
    assert eff.n_prompts == 3 and eff.n_draws == 2
    assert eff.ci[0] <= eff.diff + 1e-12 and eff.diff <= eff.ci[1] + 1e-12
    # the effect is outlier minus mean control, computed by hand from the table
    sub = df[df.scope == "all"]
    controls = sub[sub.kind == "control"].groupby("prompt_id").rep_1.mean()
    by_hand = sub[sub.kind == "outlier"].rep_1.mean() - controls.mean()
    assert eff.diff == pytest.approx(by_hand)


# ---------------------------------------------------------------------------------------------
# channel_means through the adapter's forward (LLaDA / Dream padding conventions)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_channel_means_padded_equal_on_lookalikes(kind):
    """A padded batch gives the same per-layer channel means on a LLaDA / Dream look-alike as on the
    standard transformers model with the same weights (LLaDA turns causal and Dream fails under a raw
    2D mask: the forward must go through ``lm.logits``)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from layerwise import lookalikes as LA
    from layerwise.arch import dream, llada

    if kind == "llada":
        std = tiny_lm(causal=False).model
        look = LA.llada_like_from_llama(std)
        llada.patch_llada_config(look.config)
    else:
        dream.patch_rope_default()
        torch.manual_seed(1)
        cfg = Qwen2Config(vocab_size=V, hidden_size=D, intermediate_size=64, num_hidden_layers=L,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
        cfg.is_causal = False
        std = Qwen2ForCausalLM(cfg).eval()
        look = LA.dream_like_from_qwen2(std)
    s = wrap(std, None, "dlm", mask_token_id=V - 1)
    lk = wrap(look, None, "dlm", mask_token_id=V - 1)
    assert lk.adapter.name == kind
    x = ids(4, 10)
    am = torch.ones_like(x)
    am[1, 6:] = 0
    am[3, 3:] = 0
    a = channel_means(s, x, attention_mask=am, batch_size=2)
    b = channel_means(lk, x, attention_mask=am, batch_size=2)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # padding matters: the unpadded means differ (the padded tokens are left out, and hidden from others)
    assert not torch.allclose(a, channel_means(s, x, batch_size=2), atol=1e-4)


@torch.no_grad()
@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_mixed_batches_give_the_one_condition_at_a_time_generations(lm, mode):
    """Packing (condition, prompt) rows of different conditions into one batch (one hook per site and
    layer with a per-row mask) gives each row the generation of its condition run on its own."""
    from layerwise.ablation import Condition
    from layerwise.sampling import diffusion_generate

    calls = []

    def gen(lm, prompts, batch_size=8, max_new_tokens=6):
        calls.append(len(prompts))
        x = torch.tensor([[int(t) for t in p.split()] for p in prompts])
        if lm.family.is_diffusion:
            new = diffusion_generate(lm, x, gen_length=max_new_tokens, steps=max_new_tokens, block_length=3)
        else:
            new = x
            for _ in range(max_new_tokens):
                new = torch.cat([new, lm.model(new).logits[:, -1].argmax(-1, keepdim=True)], 1)
            new = new[:, x.shape[1]:]
        return [" ".join(str(int(t)) for t in row) for row in new]

    prompts = [" ".join(str(int(t)) for t in row) for row in ids(3, 5, seed=4)]
    conds = [Condition("none", "none"),
             Condition("a/outlier/early", "outlier", (3,), (0, 1), "early", site="attn_input"),
             Condition("a/control/all/0", "control", (7,), "all", "all", 0, site="attn_input"),
             Condition("r/outlier/early", "outlier", (3,), (0,), "early", site="residual")]
    means = {s: channel_means(lm, ids(4, 8, seed=5), where=s) for s in ("attn_input", "residual")} \
        if mode == "mean" else None
    one = run_conditions(lm, conds, prompts, gen, mode=mode, means=means, progress=False, batch_size=3)
    assert calls == [3, 3, 3, 3]  # one call per condition
    calls.clear()
    mixed = run_conditions(lm, conds, prompts, gen, mode=mode, means=means, progress=False, batch_size=5,
                           mixed_batches=True)  # 12 rows in batches of 5, 5 and 2: conditions mixed in each
    assert calls == [5, 5, 2]
    assert mixed.text.tolist() == one.text.tolist()
    assert mixed[["condition", "prompt_id", "site"]].equals(one[["condition", "prompt_id", "site"]])
    # the ablations change generations (so equality above is not trivially the baseline's)
    assert len(set(one.text)) > len(prompts)


def test_mixed_batch_of_the_wrong_size_is_an_error(lm):
    from layerwise.ablation import Condition, apply_conditions_by_row

    conds = [Condition("none", "none"), Condition("o", "outlier", (3,), "all", "all")]
    with apply_conditions_by_row(lm, conds), pytest.raises(LayerwiseError, match="batch_size=2"):
        lm.model(ids(3, 5))
