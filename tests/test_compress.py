"""Tests for layerwise.compress on tiny random-weight transformers and a briefly trained tiny layer."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from layerwise import compress as C
from layerwise.arch import LayerAdapter
from layerwise.config import LayerwiseError
from layerwise.models import wrap

VOCAB, D, F, L = 64, 32, 64, 4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices: one thread avoids oversubscription on a shared 2-core machine (10x faster)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_llama(family: str = "dlm", seed: int = 0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=D, intermediate_size=F, num_hidden_layers=L,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    if family != "ar":
        cfg.is_causal = False
    model = LlamaForCausalLM(cfg).eval()
    return wrap(model, None, family, mask_token_id=VOCAB - 1 if family != "ar" else None)


class ToyBlock(nn.Module):
    """LLaDA-style block: LLaDA module names, an extra positional argument, returns (x, cache)."""

    def __init__(self) -> None:
        super().__init__()
        self.attn_norm, self.ff_norm = nn.LayerNorm(D), nn.LayerNorm(D)
        self.q_proj, self.k_proj, self.v_proj, self.attn_out = (nn.Linear(D, D, bias=False) for _ in range(4))
        self.ff_proj, self.up_proj = nn.Linear(D, F, bias=False), nn.Linear(D, F, bias=False)
        self.ff_out = nn.Linear(F, D, bias=False)

    def forward(self, x, scale, attention_bias=None, layer_past=None, use_cache=False):
        h = self.attn_norm(x)
        att = torch.softmax(self.q_proj(h) @ self.k_proj(h).transpose(1, 2) / D ** 0.5 + attention_bias, -1)
        x = x + scale * self.attn_out(att @ self.v_proj(h))
        h = self.ff_norm(x)
        return x + self.ff_out(nn.functional.silu(self.ff_proj(h)) * self.up_proj(h)), None


class ToyLLaDA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.model = nn.Module()
        self.model.transformer = nn.Module()
        t = self.model.transformer
        t.wte, t.blocks = nn.Embedding(VOCAB, D), nn.ModuleList(ToyBlock() for _ in range(L))
        t.ln_f, t.ff_out = nn.LayerNorm(D), nn.Linear(D, VOCAB, bias=False)

    def forward(self, input_ids, use_cache=False):
        t = self.model.transformer
        x = t.wte(input_ids)
        bias = torch.zeros(1, input_ids.shape[1], input_ids.shape[1])
        for blk in t.blocks:
            x, _ = blk(x, torch.tensor(0.5), attention_bias=bias, layer_past=None, use_cache=use_cache)
        return t.ff_out(t.ln_f(x))


def ids(n: int = 8, seq: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB - 1, (n, seq), generator=torch.Generator().manual_seed(seed))


def plain_block_outputs(lm, input_ids):
    """Every block's output from one ordinary full-model forward, via forward hooks."""
    outs = []
    hs = [b.register_forward_hook(lambda _m, _i, o: outs.append(LayerAdapter.hidden_from_output(o)))
          for b in lm.adapter.get_blocks(lm.model)]
    with torch.no_grad():
        lm.model(input_ids=input_ids)
    for h in hs:
        h.remove()
    return outs


@pytest.fixture(scope="module")
def trained_layer():
    """A Linear(64 -> 48) briefly trained on correlated inputs, with held-out inputs."""
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(64, 64, generator=g) * torch.exp(torch.randn(64, generator=g))[None, :]
    x = torch.randn(4096, 64, generator=g) @ mix
    x_cal, x_test = x[:2048], x[2048:]
    teacher = torch.randn(48, 64, generator=g) / 8
    torch.manual_seed(0)
    lin = nn.Linear(64, 48, bias=False)
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        loss = (lin(x_cal) - x_cal @ teacher.T).square().mean()
        loss.backward()
        opt.step()
    w = lin.weight.detach().clone()
    stats = C.LinearStats(torch.zeros(64), torch.zeros(64, 64))
    stats.add(x_cal)
    return w, stats, x_test


# ------------------------------------------------------------------------------ the calibration loop


@pytest.mark.parametrize("family", ["ar", "dlm"])
def test_blockwise_equals_plain_forward(family):
    lm = tiny_llama(family)
    x = ids()
    loop = C.blockwise(lm, x, keep_outputs=True, batch_size=3, progress=False)
    ref = plain_block_outputs(lm, x)
    assert len(loop) == L
    for a, b in zip(loop, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_blockwise_tuple_blocks_llada_adapter():
    lm = wrap(ToyLLaDA().eval(), None, "dlm", mask_token_id=VOCAB - 1, adapter="llada")
    x = ids()
    loop = C.blockwise(lm, x, keep_outputs=True, batch_size=4, progress=False)
    for a, b in zip(loop, plain_block_outputs(lm, x)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    df = C.quantize(lm, "gptq", 4, calib_ids=x, progress=False)
    assert len(df) == L * 7


def test_stats_match_direct_computation():
    lm = tiny_llama()
    x = ids()
    got = {}
    C.blockwise(lm, x, lambda i, b, lin, st: got.update({i: st}) or False, collect="hessian", blocks=[2],
                progress=False)
    inputs = []
    h = lm.adapter.block_linears(lm.adapter.get_blocks(lm.model)[2])["down"].register_forward_hook(
        lambda _m, i, _o: inputs.append(i[0].reshape(-1, F)))
    with torch.no_grad():
        lm.model(input_ids=x)
    h.remove()
    xx = torch.cat(inputs)
    torch.testing.assert_close(got[2]["down"].hessian, 2 * xx.T @ xx / xx.shape[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got[2]["down"].col_norm, xx.norm(dim=0), rtol=1e-4, atol=1e-5)


def test_calibration_inputs_masking():
    lm = tiny_llama("dlm")
    x = ids(64, 32)
    m = C.calibration_inputs(lm, x, diffusion_masking=True, seed=0, repeats=2)
    assert m.shape == (128, 32)
    frac = (m == VOCAB - 1).float().mean(1)
    assert 0.3 < frac.mean() < 0.7 and frac.std() > 0.15  # t ~ U[0,1] per sequence
    assert torch.equal(m[m != VOCAB - 1], x.repeat(2, 1)[m != VOCAB - 1])
    assert torch.equal(C.calibration_inputs(lm, x, diffusion_masking=False), x)
    with pytest.raises(LayerwiseError):
        C.calibration_inputs(tiny_llama("ar"), x, diffusion_masking=True)


# ------------------------------------------------------------------------------ quantization


def test_gptq_8bit_reproduces_layer_output(trained_layer):
    w, stats, x_test = trained_layer
    q = C.gptq_quantize_weight(w, stats.hessian, 8, 32)
    assert C.relative_error(x_test @ q.T, x_test @ w.T) < 0.01
    assert len(torch.unique(q[:, :32][0])) <= 256  # on an 8-bit grid per group


def test_gptq_8bit_model_outputs():
    lm = tiny_llama()
    x = ids()
    ref = plain_block_outputs(lm, x)[-1]
    C.quantize(lm, "gptq", 8, calib_ids=x, progress=False)
    assert C.relative_error(plain_block_outputs(lm, x)[-1], ref) < 0.01


@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_3bit_beats_rtn(trained_layer, act_order):
    w, stats, x_test = trained_layer
    y = x_test @ w.T
    err_gptq = C.relative_error(x_test @ C.gptq_quantize_weight(w, stats.hessian, 3, 32, act_order=act_order).T, y)
    err_rtn = C.relative_error(x_test @ C.rtn_quantize_weight(w, 3, 32).T, y)
    assert err_gptq < err_rtn


def test_rtn_grid_and_group_fallback():
    w = torch.randn(8, 96)
    assert C.resolve_group_size(96, 128) == 96 and C.resolve_group_size(96, 64) == 48
    assert C.resolve_group_size(4096, 128) == 128 and C.resolve_group_size(12, None) == 12
    q = C.rtn_quantize_weight(w, 2, 48)
    for row in q.reshape(-1, 48):
        assert len(torch.unique(row)) <= 4
    with pytest.raises(LayerwiseError):
        C.rtn_quantize_weight(w, 0)


# ------------------------------------------------------------------------------ pruning


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_pruning_hits_target_per_layer(method):
    lm = tiny_llama()
    per = C.allocate_sparsity(lm, 0.5, "earlier_sparser", epsilon=0.2)
    df = C.prune(lm, method, per, calib_ids=ids(), progress=False)
    assert len(df) == L * 7
    for i, role, lin in lm.adapter.named_linears(lm.model):
        achieved = (lin.weight == 0).float().mean().item()
        assert abs(achieved - per[i]) <= 1.0 / lin.in_features + 1e-6, (method, i, role, achieved, per[i])


@pytest.mark.parametrize("how", ["gptq", "rtn", "magnitude", "wanda", "sparsegpt"])
def test_report_weight_change_is_measured(how):
    """Each report row's rel_weight_change is ||W_new - W_old|| / ||W_old|| of that Linear (float32
    weights: the old copy must not alias the weight that is overwritten)."""
    lm = tiny_llama()
    before = {(i, r): lin.weight.detach().clone() for i, r, lin in lm.adapter.named_linears(lm.model)}
    if how in ("gptq", "rtn"):
        df = C.quantize(lm, how, 3, 16, calib_ids=ids(), progress=False)
    else:
        df = C.prune(lm, how, 0.5, calib_ids=ids(), progress=False)
    got = {(r.layer, r.role): r.rel_weight_change for r in df.itertuples()}
    for i, r, lin in lm.adapter.named_linears(lm.model):
        want = ((lin.weight - before[(i, r)]).norm() / before[(i, r)].norm()).item()
        assert want > 0 and got[(i, r)] == pytest.approx(want, rel=1e-4), (how, i, r)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_two_four(method):
    lm = tiny_llama()
    C.prune(lm, method, 0.5, calib_ids=ids(), nm=(2, 4), progress=False)
    for _i, _r, lin in lm.adapter.named_linears(lm.model):
        assert torch.all((lin.weight.reshape(lin.out_features, -1, 4) == 0).sum(-1) == 2)


def test_wanda_mask_equals_brute_force():
    lm = tiny_llama()
    x, s, k = ids(), 0.4, 1
    orig = copy.deepcopy(lm.model)
    inputs: dict[str, list[torch.Tensor]] = {}
    hs = [lin.register_forward_hook(lambda _m, i, _o, r=r: inputs.setdefault(r, []).append(i[0]))
          for r, lin in lm.adapter.block_linears(lm.adapter.get_blocks(orig)[k]).items()]
    with torch.no_grad():
        orig(input_ids=x)
    for h in hs:
        h.remove()
    C.prune(lm, "wanda", s, calib_ids=x, blocks=[k], progress=False)
    new = lm.adapter.block_linears(lm.adapter.get_blocks(lm.model)[k])
    for role, lin0 in lm.adapter.block_linears(lm.adapter.get_blocks(orig)[k]).items():
        xx = torch.cat(inputs[role]).reshape(-1, lin0.in_features)
        score = lin0.weight.abs() * torch.sqrt((xx ** 2).sum(0))
        n_prune = int(lin0.in_features * s)
        expect = torch.zeros_like(score, dtype=torch.bool)
        for r in range(score.shape[0]):
            expect[r, score[r].argsort()[:n_prune]] = True
        assert torch.equal(new[role].weight == 0, expect), role
    # other blocks untouched
    assert torch.equal(lm.adapter.get_blocks(lm.model)[0].self_attn.q_proj.weight,
                       lm.adapter.get_blocks(orig)[0].self_attn.q_proj.weight)


def test_sparsegpt_beats_wanda(trained_layer):
    w, stats, x_test = trained_layer
    y = x_test @ w.T
    wanda = w.masked_fill(C.wanda_mask(w, stats.col_norm, 0.5), 0.0)
    sgpt = C.sparsegpt_prune_weight(w, stats.hessian, 0.5)
    assert (sgpt == 0).float().mean().item() == pytest.approx(0.5, abs=1e-3)
    assert C.relative_error(x_test @ sgpt.T, y) < C.relative_error(x_test @ wanda.T, y)


def test_sparsegpt_beats_wanda_on_model():
    x = ids(16, 16)
    errs = {}
    for method in ("wanda", "sparsegpt"):
        lm = tiny_llama()
        ref = plain_block_outputs(lm, x)[-1]
        C.prune(lm, method, 0.5, calib_ids=x, progress=False)
        errs[method] = C.relative_error(plain_block_outputs(lm, x)[-1], ref)
    assert errs["sparsegpt"] < errs["wanda"]


# ------------------------------------------------------------------------------ allocation


def test_allocation_hits_average():
    lm = tiny_llama()
    w = torch.tensor(C.block_param_counts(lm), dtype=torch.float64)
    results = {}
    for scheme in C.SCHEMES:
        per = C.allocate_sparsity(lm, 0.5, scheme, epsilon=0.1, calib_ids=ids(), alphas=[3.0, 2.0, 4.0, 2.5],
                                  progress=False)
        assert len(per) == L
        assert float((w * torch.tensor(per, dtype=torch.float64)).sum() / w.sum()) == pytest.approx(0.5, abs=1e-9)
        results[scheme] = per
    assert results["uniform"] == [0.5] * L
    assert results["earlier_sparser"][0] == pytest.approx(0.6) and results["earlier_sparser"][-1] == pytest.approx(0.4)
    assert results["deeper_sparser"] == pytest.approx(results["earlier_sparser"][::-1])
    alpha = results["alpha"]  # lower alpha -> lower sparsity
    assert alpha[1] == min(alpha) and alpha[2] == max(alpha)
    owl = C.owl_outlier_ratios(lm, ids(), progress=False)
    assert results["owl"][owl.index(max(owl))] == min(results["owl"])  # most outliers -> least sparse
    with pytest.raises(LayerwiseError):
        C.allocate_sparsity(lm, 0.5, "nonsense")
    with pytest.raises(LayerwiseError):
        C.allocate_sparsity(lm, 0.9, "earlier_sparser", epsilon=0.2)


def test_alpha_allocation_accepts_dataframe():
    import pandas as pd

    lm = tiny_llama()
    df = pd.DataFrame({"layer": [0, 0, 1, 1, 2, 3], "role": ["q", "k"] * 3, "alpha": [2, 4, 5, 5, 1, 3]})
    per = C.allocate_sparsity(lm, 0.5, "alpha", alphas=df, epsilon=0.1)
    assert per.index(min(per)) == 2 and per.index(max(per)) == 1


# ------------------------------------------------------------------------------ snapshots


def test_preserved_restores_weights():
    lm = tiny_llama()
    before = C.snapshot(lm)
    snap = C.snapshot(lm)
    with C.preserved(lm, snap):
        C.quantize(lm, "rtn", 2)
        assert not torch.equal(lm.adapter.get_blocks(lm.model)[0].mlp.down_proj.weight, before[(0, "down")])
    for key, w in C.snapshot(lm).items():
        assert torch.equal(w, before[key])


# ------------------------------------------------------------------------------ mixed layer types


def test_blockwise_mixed_layer_types_diffusion_gemma():
    """DiffusionGemma mixes sliding-window and full-attention blocks, each with its own mask and rotary
    tables: the loop must replay every block with its own arguments (captured through ``lm.logits``,
    which feeds the tokens to the denoiser), so its block outputs equal those of a hooked forward."""
    from layerwise.arch import LayerAdapter
    from test_models import V as GV
    from test_models import diffusion_gemma

    lm = wrap(diffusion_gemma(), None, "dlm")
    assert C.mixed_layer_types(lm) and not C.mixed_layer_types(tiny_llama())
    x = torch.randint(0, GV - 1, (4, 12), generator=torch.Generator().manual_seed(0))
    seen = []
    hs = [b.register_forward_hook(lambda _m, _a, o: seen.append(LayerAdapter.hidden_from_output(o)))
          for b in lm.adapter.get_blocks(lm.model)]
    with torch.no_grad():
        lm.logits(x)
    for h in hs:
        h.remove()
    out = C.blockwise(lm, x, keep_outputs=True, progress=False, batch_size=2)
    assert len(out) == len(seen) == 2
    for got, ref in zip(out, seen):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    # with block 0's arguments reused for block 1 (the single-type shortcut) the outputs would differ
    short = C.capture_block_inputs(lm, x, batch_size=4, per_block=False)
    assert short.per_block is None
    (a, kw), = short.block_args(1)
    with torch.no_grad():
        wrong = LayerAdapter.hidden_from_output(lm.adapter.get_blocks(lm.model)[1](seen[0], *a, **kw))
    assert not torch.allclose(wrong, seen[1], atol=1e-3)
