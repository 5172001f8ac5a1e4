"""Probes against brute force on tiny random-weight transformers (Llama naming, bidirectional and causal)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from layerwise.config import LayerwiseError
from layerwise.models import wrap
from layerwise.probes import (
    channel_stats,
    layer_similarity,
    mask_tokens,
    record_channels,
    token_similarity,
)

VOCAB, MASK_ID = 64, 63


def tiny_lm(family: str = "dlm", layers: int = 4, hidden: int = 32, seed: int = 0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    cfg.is_causal = family == "ar"
    model = LlamaForCausalLM(cfg).eval()
    return wrap(model, tokenizer=None, family=family, mask_token_id=None if family == "ar" else MASK_ID)


def ids(n: int = 5, t: int = 12, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB - 1, (n, t), generator=g)


def brute_states(lm, x: torch.Tensor, attention_mask=None) -> list[torch.Tensor]:
    """h_0 .. h_L by hand: output_hidden_states for h_0..h_{L-1}, the last block's raw output by a manual loop."""
    m = lm.model
    with torch.no_grad():
        out = m(input_ids=x, attention_mask=attention_mask, output_hidden_states=True)
    hs = list(out.hidden_states[:-1])  # the last entry is norm(h_L): not the raw output
    raw = []
    h = m.model.layers[-1].register_forward_hook(lambda _m, _a, o: raw.append(o[0] if isinstance(o, tuple) else o))
    try:
        with torch.no_grad():
            m(input_ids=x, attention_mask=attention_mask)
    finally:
        h.remove()
    return hs + raw


def test_layer_similarity_matches_brute_force():
    lm = tiny_lm("dlm")
    x = ids(7, 10)
    res = layer_similarity(lm, x, batch_size=3, keep_per_sequence=True)
    hs = brute_states(lm, x)
    per_seq = torch.stack([torch.nn.functional.cosine_similarity(hs[l], hs[l + 1], dim=-1).mean(1)
                           for l in range(lm.num_layers)], 1).double()           # [N, L]
    np.testing.assert_allclose(res.per_sequence, per_seq.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.mean, per_seq.mean(0).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.std, per_seq.std(0).numpy(), rtol=1e-4, atol=1e-6)
    assert res.n_seqs == 7 and res.mean.shape == (lm.num_layers,)
    assert set(res.to_frame().columns) >= {"layer", "cos_mean", "cos_std"}


def test_layer_similarity_respects_padding():
    lm = tiny_lm("ar")
    x = ids(4, 10)
    am = torch.ones_like(x)
    am[1, 6:] = 0
    res = layer_similarity(lm, x, attention_mask=am, batch_size=4, keep_per_sequence=True)
    hs = brute_states(lm, x[1:2, :6])  # causal model: the padded tail does not affect the prefix
    want = [torch.nn.functional.cosine_similarity(hs[l], hs[l + 1], dim=-1).mean().item() for l in range(lm.num_layers)]
    np.testing.assert_allclose(res.per_sequence[1], want, rtol=1e-5, atol=1e-6)


def test_masking_ratio_and_reproducibility():
    x = ids(6, 20)
    a = mask_tokens(x, 0.25, MASK_ID, generator=torch.Generator().manual_seed(0))
    b = mask_tokens(x, 0.25, MASK_ID, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert ((a == MASK_ID).sum(1) == 5).all()
    lm = tiny_lm("dlm")
    r0 = layer_similarity(lm, x, mask_ratio=0.5, generator=torch.Generator().manual_seed(3))
    r1 = layer_similarity(lm, x, mask_ratio=0.5, generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(r0.mean, r1.mean)
    with pytest.raises(LayerwiseError, match="mask_ratio=0"):
        layer_similarity(tiny_lm("ar"), x, mask_ratio=0.5)


def test_token_similarity_matches_brute_force():
    lm = tiny_lm("dlm", layers=3)
    x, D = ids(4, 9), 4
    res = token_similarity(lm, x, max_distance=D, batch_size=3, bins=50, keep_per_sequence=True)
    hs = brute_states(lm, x)
    assert res.sim.shape == (lm.num_layers + 1, D) and res.cos_hist.shape == (lm.num_layers, 50)
    far = slice(1, D)  # ceil(4/2)=2 .. 4
    for s, h in enumerate(hs):
        hc = h - h.mean(1, keepdim=True)
        for d in range(1, D + 1):
            want = torch.nn.functional.cosine_similarity(h[:, d:], h[:, :-d], dim=-1).mean().item()
            assert res.sim[s, d - 1] == pytest.approx(want, abs=1e-5)
        per_d = torch.stack([torch.nn.functional.cosine_similarity(hc[:, d:], hc[:, :-d], dim=-1).mean(1)
                             for d in range(1, D + 1)], 1)                 # [N, D]
        np.testing.assert_allclose(res.sim_centered[s], per_d.mean(0).numpy(), atol=1e-5)
        rec = per_d[:, 0] - per_d[:, far].mean(1)
        np.testing.assert_allclose(res.per_sequence_recency[:, s], rec.numpy(), atol=1e-5)
        assert res.recency[s] == pytest.approx(rec.mean().item(), abs=1e-5)
    for l in range(lm.num_layers):
        cos = torch.nn.functional.cosine_similarity(hs[l], hs[l + 1], dim=-1).flatten()
        want = torch.histc(cos, bins=50, min=-1, max=1).numpy()
        assert res.cos_hist[l].sum() == x.numel()
        assert np.abs(res.cos_hist[l] - want).sum() <= 2  # a value on a bin edge may land either side
    with pytest.raises(LayerwiseError, match="max_distance"):
        token_similarity(lm, x, max_distance=9)


def brute_channels(lm, x):
    """attn-norm outputs and block outputs per layer, by hooks collecting full tensors."""
    got = {"attn_input": {}, "residual": {}}
    hs = []
    for i, blk in enumerate(lm.model.model.layers):
        hs.append(blk.input_layernorm.register_forward_hook(lambda _m, _a, o, i=i: got["attn_input"].__setitem__(i, o)))
        hs.append(blk.register_forward_hook(
            lambda _m, _a, o, i=i: got["residual"].__setitem__(i, o[0] if isinstance(o, tuple) else o)))
    try:
        with torch.no_grad():
            lm.model(input_ids=x)
    finally:
        for h in hs:
            h.remove()
    return got


def test_channel_stats_match_brute_force():
    lm = tiny_lm("dlm")
    x = ids(5, 11)
    st = channel_stats(lm, x, batch_size=2)
    got = brute_channels(lm, x)
    for where in ("attn_input", "residual"):
        s = st[where]
        for l in range(lm.num_layers):
            a = got[where][l].abs()                                     # [N, T, d]
            np.testing.assert_allclose(s.mean_abs[l], a.mean((0, 1)).numpy(), rtol=1e-5, atol=1e-7)
            flat = a.reshape(-1, a.shape[-1])
            np.testing.assert_allclose(s.max_abs[l], flat.max(0).values.numpy(), rtol=1e-6)
            arg = flat.argmax(0)
            np.testing.assert_array_equal(s.max_seq[l], (arg // x.shape[1]).numpy())
            np.testing.assert_array_equal(s.max_pos[l], (arg % x.shape[1]).numpy())
            np.testing.assert_array_equal(s.top_count[l], torch.bincount(flat.argmax(1), minlength=a.shape[-1]).numpy())
        assert s.n_tokens == x.numel()
        assert s.top_channels(5).shape == (lm.num_layers, 5)


def test_planted_outlier_is_found():
    lm = tiny_lm("dlm", layers=4, hidden=32)
    channel, layer = 13, 2
    with torch.no_grad():
        lm.model.model.layers[layer].input_layernorm.weight[channel] *= 500.0
    st = channel_stats(lm, ids(4, 10), where="attn_input")["attn_input"]
    assert st.super_outlier == channel and st.super_outlier_layer == layer
    assert st.dominant_per_layer[layer] == channel
    assert st.top_channels(5)[layer, 0] == channel
    assert st.token_share[layer] == 1.0  # dominant at every token position
    assert st.outlier_ratio[layer] > 50


def test_accumulators_do_not_grow_with_tokens():
    lm = tiny_lm("dlm")
    sizes = []
    for n, t in [(2, 8), (9, 40)]:
        accs: dict = {}
        channel_stats(lm, ids(n, t), _accumulators=accs)
        sizes.append({k: [tuple(getattr(a, f).shape) for f in ("sum_abs", "max_abs", "max_pos", "top_count")]
                      for k, a in accs.items()})
    assert sizes[0] == sizes[1]
    assert sizes[0]["attn_input"][0] == (lm.num_layers, 32)
    r_small, r_big = token_similarity(lm, ids(2, 8), max_distance=4), token_similarity(lm, ids(9, 40), max_distance=4)
    assert r_small.sim.shape == r_big.sim.shape and r_small.cos_hist.shape == r_big.cos_hist.shape


@pytest.mark.parametrize("probe", ["layer", "token", "channel", "record"])
def test_hooks_removed_and_outputs_unchanged(probe):
    lm = tiny_lm("dlm")
    x = ids(3, 10)
    with torch.no_grad():
        before = lm.model(input_ids=x).logits.clone()
    n_hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in lm.model.modules())
    if probe == "layer":
        layer_similarity(lm, x)
    elif probe == "token":
        token_similarity(lm, x, max_distance=3)
    elif probe == "channel":
        channel_stats(lm, x)
    else:
        with record_channels(lm) as rec, torch.no_grad():
            lm.model(input_ids=x)
        assert rec.n_calls == 1
    with torch.no_grad():
        after = lm.model(input_ids=x).logits
    assert torch.equal(before, after)
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in lm.model.modules()) == n_hooks


def test_hooks_removed_on_exception():
    lm = tiny_lm("dlm")
    with pytest.raises(RuntimeError, match="boom"):
        with record_channels(lm):
            raise RuntimeError("boom")
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in lm.model.modules())


def test_record_channels_per_call_matches_channel_stats():
    lm = tiny_lm("dlm")
    x1, x2 = ids(2, 10, seed=5), ids(3, 10, seed=6)
    with record_channels(lm, "attn_input") as rec, torch.no_grad():
        lm.model(input_ids=x1)
        lm.model(input_ids=x2)
    mean_abs, max_abs = rec.stacked()
    assert mean_abs.shape == (2, lm.num_layers, 32)
    for k, x in enumerate((x1, x2)):
        st = channel_stats(lm, x, where="attn_input")["attn_input"]
        np.testing.assert_allclose(mean_abs[k], st.mean_abs, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(max_abs[k], st.max_abs, rtol=1e-6)
    with record_channels(lm, "residual", per_call=False) as tot, torch.no_grad():
        lm.model(input_ids=x1)
        lm.model(input_ids=x2)
    assert tot.n_calls == 1 and tot.n_tokens[0] == x1.numel() + x2.numel()


def test_bad_input_errors():
    lm = tiny_lm("dlm")
    with pytest.raises(LayerwiseError, match="LongTensor"):
        layer_similarity(lm, ids().float())
    with pytest.raises(LayerwiseError, match="where="):
        channel_stats(lm, ids(), where="mlp")
    with pytest.raises(LayerwiseError, match="attention_mask"):
        layer_similarity(lm, ids(), attention_mask=torch.ones(2, 3))


def test_probe_pass_combines_probes_in_one_forward():
    from layerwise.probes import probe_pass

    lm = tiny_lm("dlm")
    x = ids(4, 10)
    calls = []
    h = lm.model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        both = probe_pass(lm, x, similarity=True, channels=("attn_input",), max_distance=3)
    finally:
        h.remove()
    assert len(calls) == 1  # one batch, one forward for all three probes
    np.testing.assert_allclose(both.layer_similarity.mean, layer_similarity(lm, x).mean)
    np.testing.assert_allclose(both.token_similarity.sim, token_similarity(lm, x, max_distance=3).sim)
    np.testing.assert_allclose(both.channel_stats["attn_input"].max_abs,
                               channel_stats(lm, x, where="attn_input")["attn_input"].max_abs)
