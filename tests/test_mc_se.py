"""The diffusion Monte-Carlo likelihood with an accuracy target (``target_se``) on tiny random-weight models.

The fixed-cost estimate is checked bit for bit against the estimator as written in LLaDA's
``get_log_likelihood`` form (stratified masked fractions per Monte-Carlo batch, ``-mean sum CE / t``),
re-implemented below from the same mask draws.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from layerwise import sampling as S
from layerwise.config import LayerwiseError
from layerwise.diffusion import stratified_mask
from layerwise.evals.lm import MC_KWARGS
from layerwise.models import LoadedModel, wrap
from layerwise.sampling.likelihood import MCEstimate

VOCAB = 61
MASK = VOCAB - 1

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(causal: bool, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, vocab_size=VOCAB, max_position_embeddings=128,
                      tie_word_embeddings=False, attn_implementation="sdpa")
    cfg.is_causal = causal
    m = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        m.lm_head.weight.mul_(20)  # peaked, context-dependent predictions: a real spread between copies
    return m


@pytest.fixture(scope="module")
def dlm() -> LoadedModel:
    return wrap(tiny(False), None, "dlm", mask_token_id=MASK)


@pytest.fixture(scope="module")
def requests() -> tuple[list[list[int]], list[list[int]]]:
    g = torch.Generator().manual_seed(3)
    ctxs = [torch.randint(0, MASK, (int(n),), generator=g).tolist() for n in (5, 9, 3, 12, 7, 6)]
    conts = [torch.randint(0, MASK, (int(n),), generator=g).tolist() for n in (4, 6, 8, 3, 10, 5)]
    return ctxs, conts


@torch.no_grad()
def fixed_cost_estimate(lm: LoadedModel, ctx: list[int], cont: list[int], n_samples: int, batch_size: int,
                        seed: int) -> float:
    """The fixed-cost estimator: ``n_samples`` copies in batches of ``batch_size``, full-vocabulary logits."""
    gen = torch.Generator().manual_seed(seed)
    p, t = len(ctx), len(cont)
    seq = torch.tensor(ctx + cont)
    target = seq[p:]
    total = 0.0
    for s in range(0, n_samples, batch_size):
        n = min(batch_size, n_samples - s)
        is_mask, p_mask = stratified_mask(n, t, gen)
        noisy = seq.repeat(n, 1)
        noisy[:, p:] = torch.where(is_mask, MASK, target)
        logits = lm.model(input_ids=noisy).logits[:, p:]
        ce = F.cross_entropy(logits.float().transpose(1, 2), target.expand(n, t), reduction="none")
        total += float(((ce * is_mask) / p_mask[:, None]).sum())
    return -total / n_samples


def test_without_target_the_fixed_cost_estimate_bit_for_bit(dlm, requests):
    ctxs, conts = requests
    got = S.diffusion_loglikelihood(dlm, ctxs, conts, n_samples=20, batch_size=8, seed=4)
    want = [fixed_cost_estimate(dlm, a, c, 20, 8, 4) for a, c in zip(ctxs, conts)]
    assert [float(v) for v in got] == want
    assert all(isinstance(v, MCEstimate) and v.n_samples == 20 and v.se > 0 for v in got)
    # through the family dispatch too
    assert [ll for ll, _ in S.loglikelihood(dlm, ctxs, conts, n_samples=20, batch_size=8, seed=4)] == want


def test_the_reported_error_meets_the_target_or_the_cap_is_hit(dlm, requests):
    ctxs, conts = requests
    full = S.diffusion_loglikelihood(dlm, ctxs, conts, n_samples=64, batch_size=8)
    target = float(torch.tensor([v.se for v in full]).median()) * 2
    got = S.diffusion_loglikelihood(dlm, ctxs, conts, n_samples=64, batch_size=8, target_se=target)
    for v in got:
        assert v.se <= target or v.n_samples == 64
        assert v.n_samples >= 8 and v.n_samples % 8 == 0
    assert any(v.n_samples < 64 for v in got) and any(v.n_samples == 64 for v in got)


def test_the_stopped_estimate_is_the_full_runs_first_copies(dlm, requests):
    ctxs, conts = requests
    full = S.diffusion_loglikelihood(dlm, ctxs, conts, n_samples=64, batch_size=8)
    target = float(torch.tensor([v.se for v in full]).max()) * 3
    got = S.diffusion_loglikelihood(dlm, ctxs, conts, n_samples=64, batch_size=8, target_se=target)
    for a, c, v in zip(ctxs, conts, got):
        assert v.n_samples < 64
        same = S.diffusion_loglikelihood(dlm, [a], [c], n_samples=v.n_samples, batch_size=8)[0]
        assert float(v) == float(same) and v.se == same.se


def test_a_larger_target_uses_fewer_samples(dlm, requests):
    ctxs, conts = requests
    full = S.diffusion_loglikelihood(dlm, ctxs, conts, n_samples=128, batch_size=8)
    se = float(torch.tensor([v.se for v in full]).median())
    used = []
    for mult in (0.5, 1.0, 2.0, 4.0):  # a target of mult x the 128-copy error
        got = S.diffusion_loglikelihood(dlm, ctxs, conts, n_samples=128, batch_size=8, target_se=mult * se)
        used.append([v.n_samples for v in got])
    for smaller, larger in zip(used, used[1:]):
        assert all(b <= a for a, b in zip(smaller, larger))
    assert sum(used[-1]) < sum(used[0])


def test_the_estimate_converges_to_the_128_sample_value(dlm, requests):
    ctxs, conts = requests
    ref = S.diffusion_loglikelihood(dlm, ctxs, conts, n_samples=128, batch_size=8)
    se = float(torch.tensor([v.se for v in ref]).median())
    errors, costs = [], []
    for target in (16 * se, 4 * se, se, 1e-9):  # the last one no request can meet before the cap
        got = S.diffusion_loglikelihood(dlm, ctxs, conts, n_samples=128, batch_size=8, target_se=target)
        errors.append(sum(abs(float(g) - float(r)) for g, r in zip(got, ref)))
        costs.append(sum(v.n_samples for v in got))
    assert costs == sorted(costs) and costs[-1] == 128 * len(ctxs)  # the tightest target runs to the cap
    assert errors[-1] == 0.0 and errors[0] > errors[2] > 0


def test_bad_settings_name_the_fix(dlm):
    with pytest.raises(LayerwiseError, match="target_se"):
        S.diffusion_loglikelihood(dlm, [[1, 2]], [[3]], target_se=0.0)
    with pytest.raises(LayerwiseError, match="min_samples"):
        S.diffusion_loglikelihood(dlm, [[1, 2]], [[3]], target_se=0.1, min_samples=1)


def test_mc_estimate_is_a_float_with_its_cost():
    v = MCEstimate(-3.5, 24, 0.2)
    assert v == -3.5 and v + 1 == -2.5 and (v.n_samples, v.se) == (24, 0.2)
    import pickle

    w = pickle.loads(pickle.dumps(v))
    assert (float(w), w.n_samples, w.se) == (-3.5, 24, 0.2)
    assert math.isnan(MCEstimate(1.0, 1, math.nan).se)


class Recorder:
    """A backend that records the likelihood keyword arguments the wrapper passes."""

    def __init__(self) -> None:
        self.kwargs: list[dict[str, Any]] = []

    def loglikelihood(self, lm: LoadedModel, context_ids: list[list[int]], continuation_ids: list[list[int]],
                      **kw: Any) -> list[tuple[float, bool]]:
        self.kwargs.append(kw)
        return S.loglikelihood(lm, context_ids, continuation_ids, **kw)

    def generate(self, *a: Any, **k: Any) -> list[str]:  # pragma: no cover - not used here
        raise AssertionError("no generation in this test")

    def rolling_loglikelihood(self, *a: Any, **k: Any) -> float:  # pragma: no cover - not used here
        raise AssertionError("no rolling likelihood in this test")


@pytest.mark.parametrize("family", ["dlm", "ar"])
def test_the_lm_eval_wrapper_passes_target_se_to_diffusion_models_only(family):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from layerwise.evals import LayerwiseLM

    vocab = {f"w{i}": i for i in range(MASK)} | {"<eos>": MASK - 1}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>")
    model = wrap(tiny(family == "ar"), tok, family, mask_token_id=MASK if family == "dlm" else None)
    rec = Recorder()
    kw = {"n_samples": 32, "batch_size": 8, "target_se": 0.5, "min_samples": 16}
    wrapper = LayerwiseLM(model, batch_size=2, loglikelihood_kwargs=kw, backend=rec)
    reqs = [(("w1 w2 w3", " w4 w5"), [1, 2, 3], [4, 5]), (("w1 w2 w3", " w6"), [1, 2, 3], [6])]
    out = wrapper._loglikelihood_tokens(reqs)
    assert len(out) == 2 and all(math.isfinite(ll) for ll, _ in out)
    if family == "dlm":
        assert rec.kwargs == [kw]
        want = S.diffusion_loglikelihood(model, [[1, 2, 3], [1, 2, 3]], [[4, 5], [6]], **kw)
        assert [ll for ll, _ in out] == [float(v) for v in want]
    else:
        assert not set(rec.kwargs[0]) & (set(MC_KWARGS) - {"batch_size"}) and rec.kwargs[0]["batch_size"] == 2


@pytest.mark.slow
def test_bench_mc_se_on_a_trained_triplet(tmp_path):
    """The benchmark's path end to end (the GPU command with --models): the test preset's diffusion models
    through lm-eval, the fixed cost against two targets, every row's numbers consistent with its settings."""
    import csv
    import sys
    from pathlib import Path

    from layerwise.training import ensure_triplet

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_mc_se as bench

    paths = ensure_triplet("test", cache_dir=tmp_path / "cache", device="cpu", progress=False)
    out = tmp_path / "mc_se"
    rows = bench.main(["--models", str(paths["dlm"]), str(paths["ar2dlm"]), str(paths["ar"]), "--device", "cpu",
                       "--cache-dir", str(tmp_path / "cache"), "--tasks", "lw_stories_choice", "--limit", "4",
                       "--n-samples", "32", "--mc-batch", "8", "--targets", "1e9,1e-9", "--antithetic",
                       "--out", str(out)])
    assert [(r["model"], r["config"]) for r in rows] == [
        (m, c) for m in ("dlm", "ar2dlm") for c in ("n=32", "se<=1e+09", "se<=1e-09", "anti n=32", "anti se<=1e+09",
                                                    "anti se<=1e-09")]  # the AR model dropped
    for r in rows:
        assert r["requests"] > r["items"] == 4 and 0 <= r["agreement"] <= 1
        if r["config"].endswith("se<=1e+09"):  # any error meets it: every request stops at the minimum
            assert r["mean_samples"] == r["max_samples"] == 8
        else:  # the fixed cost, and a target only requests without spread (identical copies) meet early
            assert r["max_samples"] == 32
        if not r["config"].startswith("anti") and r["config"] != "se<=1e+09":  # the reference's own copies
            assert r["max_abs_diff"] == 0.0 and r["agreement"] == 1.0 and r["acc"] == r["acc_ref"]
    anti = {r["model"]: r for r in rows if r["config"] == "anti n=32"}
    assert all(r["max_abs_diff"] > 0 for r in anti.values())  # other draws
    with open(out.with_suffix(".csv")) as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert "| dlm | lw_stories_choice | n=32 |" in out.with_suffix(".md").read_text()


def test_antithetic_masks_are_draws_of_the_forward_process():
    """Each half is LLaDA's forward process (count uniform on 1..L, then a uniform subset of that size), and a
    pair covers every token with exactly one token in common."""
    from itertools import combinations

    length, n = 3, 6000
    is_mask, p_mask = S.likelihood.antithetic_mask(n, length, torch.Generator().manual_seed(0))
    first, second = is_mask[: n // 2], is_mask[n // 2:]
    assert torch.equal(p_mask, is_mask.sum(1).float() / length) and bool(is_mask.any(1).all())
    assert bool((first | second).all()) and bool(((first & second).sum(1) == 1).all())
    for half in (first, second):
        for k in range(1, length + 1):
            for subset in combinations(range(length), k):
                want = torch.zeros(length, dtype=torch.bool)
                want[list(subset)] = True
                freq = float((half == want).all(1).float().mean())
                assert freq == pytest.approx(1 / length / math.comb(length, k), abs=0.025), (k, subset)


@torch.no_grad()
def exact_elbo(lm: LoadedModel, ctx: list[int], cont: list[int]) -> float:
    """``E_k E_S [-(L / k) sum_{i in S} CE_i]``: k uniform on 1..L, S a uniform k-subset, by enumeration."""
    from itertools import combinations

    length = len(cont)
    seq = torch.tensor(ctx + cont)
    total = 0.0
    for k in range(1, length + 1):
        subsets = list(combinations(range(length), k))
        for subset in subsets:
            noisy = seq.clone()
            noisy[[len(ctx) + i for i in subset]] = MASK
            logits = lm.model(input_ids=noisy[None]).logits[0, len(ctx):].float()
            ce = F.cross_entropy(logits, seq[len(ctx):], reduction="none")
            total += -float(ce[list(subset)].sum()) * length / k / length / len(subsets)
    return total


@pytest.mark.parametrize("antithetic", [False, True])
def test_both_estimators_are_unbiased_for_the_exact_elbo(dlm, antithetic):
    ctx, cont = [5, 17, 33, 2, 41], [7, 29, 11, 50]
    exact = exact_elbo(dlm, ctx, cont)
    ests = torch.tensor([float(S.diffusion_loglikelihood(dlm, [ctx], [cont], n_samples=64, batch_size=16, seed=s,
                                                         antithetic=antithetic)[0]) for s in range(40)],
                        dtype=torch.float64)
    se = float(ests.std() / math.sqrt(len(ests)))
    assert abs(float(ests.mean()) - exact) < 4 * se + 1e-6


def test_antithetic_option_settings_and_target(dlm, requests):
    ctxs, conts = requests
    got = S.diffusion_loglikelihood(dlm, ctxs, conts, n_samples=64, batch_size=8, antithetic=True, target_se=0.3)
    assert all(v.se <= 0.3 or v.n_samples == 64 for v in got) and all(v.n_samples % 8 == 0 for v in got)
    plain = S.diffusion_loglikelihood(dlm, ctxs, conts, n_samples=64, batch_size=8)
    assert [float(v) for v in got] != [float(v) for v in plain]  # other draws
    with pytest.raises(LayerwiseError, match="even batch_size"):
        S.diffusion_loglikelihood(dlm, ctxs, conts, n_samples=64, batch_size=7, antithetic=True)
