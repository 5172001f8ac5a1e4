"""Tests for layerwise.sampling on tiny random-weight (and one briefly trained) Llama models."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from layerwise import sampling as S
from layerwise.config import LayerwiseError
from layerwise.models import Family, LoadedModel, ModelSpec, wrap
from oracles.llada_reference import get_num_transfer_tokens
from oracles.llada_reference import reference_diffusion_generate as reference

VOCAB = 97
MASK = VOCAB - 1


def tiny_llama(causal: bool, *, vocab: int = VOCAB, d: int = 32, layers: int = 2, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=d, intermediate_size=2 * d, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=4, vocab_size=vocab, max_position_embeddings=256,
                      tie_word_embeddings=False, attn_implementation="sdpa")
    cfg.is_causal = causal
    m = LlamaForCausalLM(cfg).eval()
    # random init (std 0.02) gives near-uniform logits; a larger head makes argmax/ranking non-trivial
    with torch.no_grad():
        m.lm_head.weight.mul_(20)
    return m


def roll_left(model: LlamaForCausalLM) -> LlamaForCausalLM:
    """A copy whose logits at position i are the original's at i + 1: a model with shifted logits."""
    m = copy.deepcopy(model)
    m.model.norm.register_forward_hook(lambda _mod, _inp, out: torch.roll(out, -1, dims=1))
    return m


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dlm() -> LoadedModel:
    return wrap(tiny_llama(False), None, "dlm", mask_token_id=MASK)


@pytest.fixture(scope="module")
def ar() -> LoadedModel:
    return wrap(tiny_llama(True, seed=1), None, "ar")


def prompts(b: int, p: int, seed: int) -> torch.Tensor:
    return torch.randint(0, MASK, (b, p), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ diffusion sampler ----------


@pytest.mark.parametrize("b,p,gen,steps,blk,remasking,shifted", [
    (1, 7, 8, 8, 4, "low_confidence", False),
    (3, 5, 12, 6, 6, "low_confidence", False),     # 2 tokens per step
    (2, 9, 6, 12, 3, "low_confidence", True),       # more steps than tokens: some steps unmask nothing
    (4, 6, 8, 8, 8, "random", False),
    (2, 4, 12, 9, 4, "random", True),               # uneven tokens per step
])
def test_fast_sampler_equals_reference(b, p, gen, steps, blk, remasking, shifted):
    model = tiny_llama(False, seed=p)
    lm = wrap(roll_left(model) if shifted else model, None, "ar2dlm" if shifted else "dlm", mask_token_id=MASK)
    x = prompts(b, p, seed=b)
    kw = dict(gen_length=gen, steps=steps, block_length=blk, remasking=remasking)
    fast = S.diffusion_generate(lm, x, generator=torch.Generator().manual_seed(3), **kw)
    ref = reference(lm.model, x, mask_id=MASK, shifted=shifted, generator=torch.Generator().manual_seed(3), **kw)
    assert fast.shape == (b, gen)
    assert not (fast == MASK).any()
    assert torch.equal(fast, ref)


def test_fast_equals_reference_with_left_padding(dlm):
    x = prompts(3, 8, seed=5)
    am = torch.ones_like(x)
    am[0, :3] = 0
    am[2, :5] = 0
    x[am == 0] = 0  # pad id
    kw = dict(gen_length=8, steps=8, block_length=4)
    fast = S.diffusion_generate(dlm, x, am, **kw)
    assert torch.equal(fast, reference(dlm.model, x, am, mask_id=MASK, **kw))
    # the padding is really ignored: the padded row generates what the unpadded prompt generates
    alone = S.diffusion_generate(dlm, x[2:, 5:], **kw)
    assert torch.equal(fast[2:], alone)


def test_shifted_logits_are_aligned(dlm):
    """A model whose logits are shifted by one, declared ar2dlm, samples and scores exactly like the
    unshifted original; declared dlm (no alignment), it does not."""
    rolled = roll_left(dlm.model)
    shifted = wrap(rolled, None, "ar2dlm", mask_token_id=MASK)
    wrong = wrap(rolled, None, "dlm", mask_token_id=MASK)
    x = prompts(2, 6, seed=9)
    kw = dict(gen_length=8, steps=8, block_length=4)
    assert torch.equal(S.diffusion_generate(shifted, x, **kw), S.diffusion_generate(dlm, x, **kw))
    assert not torch.equal(S.diffusion_generate(wrong, x, **kw), S.diffusion_generate(dlm, x, **kw))
    ctx, cont = [[5, 6, 7, 8]], [[9, 10, 11]]
    a = S.diffusion_loglikelihood(dlm, ctx, cont, n_samples=8, batch_size=4)[0]
    b = S.diffusion_loglikelihood(shifted, ctx, cont, n_samples=8, batch_size=4)[0]
    c = S.diffusion_loglikelihood(wrong, ctx, cont, n_samples=8, batch_size=4)[0]
    assert a == pytest.approx(b, rel=1e-5) and abs(a - c) > 1e-3


def test_temperature_sampling_is_seeded(dlm):
    x = prompts(2, 5, seed=2)
    kw = dict(gen_length=8, steps=4, block_length=8, temperature=1.0)
    a = S.diffusion_generate(dlm, x, generator=torch.Generator().manual_seed(0), **kw)
    b = S.diffusion_generate(dlm, x, generator=torch.Generator().manual_seed(0), **kw)
    c = S.diffusion_generate(dlm, x, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_num_transfer_tokens_matches_llada():
    m = torch.tensor([[1] * 7 + [0], [1] * 3 + [0] * 5, [0] * 8]).bool()
    for steps in (1, 3, 4, 8):
        got = S.num_transfer_tokens(m, steps)
        assert torch.equal(got, get_num_transfer_tokens(m, steps))
        assert torch.equal(got.sum(1), m.sum(1))


@pytest.mark.parametrize("kw,needle", [
    (dict(gen_length=10, steps=10, block_length=4), "not a multiple of block_length"),
    (dict(gen_length=8, steps=3, block_length=4), "split evenly"),
    (dict(gen_length=8, steps=8, block_length=4, remasking="entropy"), "unknown remasking"),
    (dict(gen_length=8, steps=8, block_length=4, temperature=-1.0), "temperature"),
])
def test_diffusion_sampler_errors(dlm, kw, needle):
    with pytest.raises(LayerwiseError, match=needle):
        S.diffusion_generate(dlm, prompts(1, 4, 0), **kw)


def test_missing_mask_token_is_an_error(dlm):
    no_mask = LoadedModel(dlm.model, None, ModelSpec("x", Family.DLM, "llama", mask_token_id=None), dlm.adapter)
    with pytest.raises(LayerwiseError, match="mask_token_id"):
        S.diffusion_generate(no_mask, prompts(1, 4, 0), gen_length=4, steps=4, block_length=4)
    with pytest.raises(LayerwiseError, match="mask_token_id"):
        S.diffusion_loglikelihood(no_mask, [[1]], [[2]])
    with pytest.raises(LayerwiseError, match="mask token"):
        S.diffusion_generate(dlm, torch.tensor([[1, MASK, 2]]), gen_length=4, steps=4, block_length=4)


# ------------------------------------------------------------------ AR --------------------------


def test_ar_greedy_equals_argmax_loop(ar):
    x = prompts(3, 6, seed=4)
    am = torch.ones_like(x)
    am[1, :2] = 0
    x[am == 0] = 0
    got = S.ar_generate(ar, x, am, max_new_tokens=5)
    assert got.shape == (3, 5)
    for r in range(3):
        seq = x[r, am[r].bool()].tolist()
        for _ in range(5):
            seq.append(int(ar.model(torch.tensor([seq])).logits[0, -1].argmax()))
        assert got[r].tolist() == seq[-5:]


def test_ar_sampling_is_seeded_and_padded_after_eos(ar):
    x = prompts(2, 4, seed=1)
    a = S.ar_generate(ar, x, None, max_new_tokens=6, temperature=1.0, generator=torch.Generator().manual_seed(0))
    b = S.ar_generate(ar, x, None, max_new_tokens=6, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    greedy = S.ar_generate(ar, x[:1], None, max_new_tokens=6)
    eos = int(greedy[0, 0])  # stop right after the first token
    out = S.ar_generate(ar, x[:1], None, max_new_tokens=6, eos_token_id=eos)
    assert out.shape == (1, 6) and out[0].tolist() == [eos] * 6


def test_ar_loglikelihood_equals_brute_force(ar):
    ctxs = [[3, 4, 5], [7], [1, 2, 3, 4, 5, 6]]
    conts = [[6, 7], [8, 9, 10, 11], [12]]
    got = S.ar_loglikelihood(ar, ctxs, conts, batch_size=2)
    for (ll, greedy), a, c in zip(got, ctxs, conts):
        want, all_greedy = 0.0, True
        for j, tok in enumerate(c):
            with torch.no_grad():
                lp = F.log_softmax(ar.model(torch.tensor([a + c[:j]])).logits[0, -1].double(), -1)
            want += float(lp[tok])
            all_greedy &= int(lp.argmax()) == tok
        assert ll == pytest.approx(want, abs=1e-4)
        assert greedy == all_greedy
    # a greedy continuation is recognised as such
    cont = S.ar_generate(ar, torch.tensor([[3, 4, 5]]), None, max_new_tokens=3)[0].tolist()
    assert S.loglikelihood(ar, [[3, 4, 5]], [cont])[0][1] is True


def test_rolling_loglikelihood_ar_matches_one_window(ar):
    doc = prompts(1, 12, seed=7)[0].tolist()
    whole = S.rolling_loglikelihood(ar, doc, max_length=64, prefix_token_id=0)
    assert whole == pytest.approx(S.ar_loglikelihood(ar, [[0]], [doc])[0][0], abs=1e-4)
    windowed = S.rolling_loglikelihood(ar, doc, max_length=5, prefix_token_id=0)
    assert math.isfinite(windowed) and windowed != pytest.approx(whole, abs=1e-6)


# ------------------------------------------------------------------ diffusion likelihood ---------


def test_diffusion_loglikelihood_finite_deterministic_and_converges(dlm):
    ctx, cont = [[3, 4, 5, 6]], [[7, 8, 9, 10, 11]]
    one = S.diffusion_loglikelihood(dlm, ctx, cont, n_samples=8, batch_size=3, seed=0)[0]
    assert math.isfinite(one) and one < 0
    assert one == S.diffusion_loglikelihood(dlm, ctx, cont, n_samples=8, batch_size=3, seed=0)[0]
    few = torch.tensor([S.diffusion_loglikelihood(dlm, ctx, cont, n_samples=2, batch_size=2, seed=s)[0]
                        for s in range(12)])
    many = torch.tensor([S.diffusion_loglikelihood(dlm, ctx, cont, n_samples=32, batch_size=32, seed=s)[0]
                         for s in range(12)])
    assert many.var() < few.var() / 4


def bag_of_context_dlm(vocab: int = 24) -> LoadedModel:
    """A constructed one-layer dlm that predicts, at every position, the tokens present elsewhere in the
    sequence: one-hot embeddings (the mask token embeds to 0), zero queries/keys so attention averages
    all positions uniformly, identity values/output, no MLP, an identity LM head scaled by 10. At a masked
    position the logits are 10x the (normalised) histogram of the unmasked tokens, so the right
    continuation of ``[t] * n`` is ``[t] * m``."""
    model = tiny_llama(False, vocab=vocab, d=vocab, layers=1)
    eye = torch.eye(vocab)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.model.embed_tokens.weight.copy_(eye)
        model.model.embed_tokens.weight[vocab - 1] = 0  # the mask token carries no content
        attn = model.model.layers[0].self_attn
        attn.v_proj.weight.copy_(eye)
        attn.o_proj.weight.copy_(eye)
        model.model.layers[0].input_layernorm.weight.fill_(1)
        model.model.layers[0].post_attention_layernorm.weight.fill_(1)
        model.model.norm.weight.fill_(1)
        model.lm_head.weight.copy_(10 * eye)
    return wrap(model, None, "dlm", mask_token_id=vocab - 1)


def test_diffusion_loglikelihood_ranks_planted_continuation():
    lm = bag_of_context_dlm()
    ctxs = [[5] * 6, [5] * 6, [11] * 4, [11] * 4]
    conts = [[5] * 3, [9] * 3, [11] * 2, [2, 11]]
    res = S.loglikelihood(lm, ctxs, conts, n_samples=16, batch_size=16)
    assert res[0][0] > res[1][0] and res[2][0] > res[3][0]
    assert [g for _, g in res] == [True, False, True, False]
    assert all(math.isfinite(ll) for ll, _ in res)
    # the sampler fills the masks with the planted token, end to end through generate()'s engine
    out = S.diffusion_generate(lm, torch.tensor([[7] * 5]), gen_length=4, steps=4, block_length=2)
    assert out.tolist() == [[7] * 4]


# ------------------------------------------------------------------ text in, text out -----------


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(VOCAB - 3)]
    vocab = {w: i for i, w in enumerate(words + ["<|endoftext|>", "<|pad|>", "<|mask|>"])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", pad_token="<|pad|>",
                                  mask_token="<|mask|>")
    assert tok.mask_token_id == MASK
    return tok


def test_generate_text_for_both_families(ar, dlm):
    tok = tiny_tokenizer()
    lm_ar = wrap(ar.model, tok, "ar")
    lm_d = wrap(dlm.model, tok, "dlm")
    texts = ["w1 w2 w3", "w4 w5 w6 w7 w8"]
    for lm in (lm_ar, lm_d):
        out = S.generate(lm, texts, max_new_tokens=6, batch_size=2, progress=False)
        assert len(out) == 2 and all(isinstance(o, str) for o in out)
        # batched left padding gives what each prompt gives alone
        assert out[0] == S.generate(lm, texts[:1], max_new_tokens=6, progress=False)[0]
        first = out[1].split()[0]
        cut = S.generate(lm, texts[1:], max_new_tokens=6, until=[first], progress=False)[0]
        assert cut == out[1][:out[1].index(first)]
    with pytest.raises(LayerwiseError, match="not a multiple"):
        S.generate(lm_d, texts, max_new_tokens=6, block_length=4, steps=6, progress=False)


@pytest.mark.parametrize("family", ["dlm", "ar2dlm"])
def test_prefix_cache_is_exact_when_the_prefix_cannot_see_the_future(ar, family):
    """The opt-in prefix cache keeps stale keys/values of the prefix; for a causal model the prefix never
    depends on later tokens, so the cache must then change nothing (checks positions, cropping, padding)."""
    lm = wrap(ar.model, None, family, mask_token_id=MASK)
    x = prompts(2, 6, seed=3)
    am = torch.ones_like(x)
    am[1, :2] = 0
    kw = dict(gen_length=8, steps=8, block_length=4)
    exact = S.diffusion_generate(lm, x, am, **kw)
    assert torch.equal(S.diffusion_generate(lm, x, am, prefix_cache=True, **kw), exact)


def test_prefix_cache_runs_on_a_bidirectional_model(dlm):
    out = S.diffusion_generate(dlm, prompts(2, 6, 1), gen_length=8, steps=8, block_length=4, prefix_cache=True)
    assert out.shape == (2, 8) and not (out == MASK).any()


# ------------------------------------------------------------------ sampler options --------------


def test_float64_ranking_option_equals_reference_option():
    """``confidence_dtype=torch.float64`` is the reference with the same option (and the default is the
    reference's softmax in the logits' dtype, checked above)."""
    model = tiny_llama(False, seed=4)
    lm = wrap(model, None, "dlm", mask_token_id=MASK)
    x = prompts(3, 6, seed=8)
    kw = dict(gen_length=12, steps=12, block_length=4)
    fast = S.diffusion_generate(lm, x, confidence_dtype=torch.float64, **kw)
    assert torch.equal(fast, reference(model, x, mask_id=MASK, confidence_dtype=torch.float64, **kw))


def mask_loving_dlm(seed: int = 0) -> LoadedModel:
    """A dlm whose head favours the mask token: at temperature 1 steps often sample the mask id itself."""
    model = tiny_llama(False, seed=seed)

    def favour_mask(_module: torch.nn.Module, _inputs: tuple, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[..., MASK] += 4.0
        return out

    model.lm_head.register_forward_hook(favour_mask)
    return wrap(model, None, "dlm", mask_token_id=MASK)


@pytest.mark.parametrize("shifted", [False, True])
def test_positions_that_sampled_the_mask_token_are_revisited(shifted):
    """At temperature > 0 a step may sample the mask token itself: the position stays masked, and LLaDA's
    generate.py ranks it again in later blocks (its confidence row covers every masked position before the
    block's end). The sampler does the same, and draws the reference's noise (the whole canvas)."""
    lm = mask_loving_dlm()
    model = lm.model
    if shifted:
        model = roll_left(model)
        lm = wrap(model, None, "ar2dlm", mask_token_id=MASK)
    seen: list[torch.Tensor] = []
    hook = model.register_forward_pre_hook(
        lambda _m, args, kw: seen.append((args[0] if args else kw["input_ids"]).clone()), with_kwargs=True)
    x = prompts(2, 5, seed=1)
    kw = dict(gen_length=12, steps=12, block_length=4, temperature=1.0)
    try:
        ref = reference(model, x, mask_id=MASK, shifted=shifted, generator=torch.Generator().manual_seed(0), **kw)
    finally:
        hook.remove()
    revisited = sum(bool((s[:, 5:5 + 4 * (i // 4)] == MASK).any()) for i, s in enumerate(seen))
    assert revisited > 0  # the case happened: an earlier block still held a mask at a later step
    fast = S.diffusion_generate(lm, x, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(fast, ref)


def test_gumbel_noise_block_option():
    """``gumbel_noise="block"`` draws less noise: seeded runs repeat, tokens differ from the canvas draw
    at temperature > 0 and equal it at temperature 0 (no noise)."""
    lm = wrap(tiny_llama(False, seed=2), None, "dlm", mask_token_id=MASK)
    x = prompts(2, 6, seed=3)
    kw = dict(gen_length=16, steps=16, block_length=4)

    def run(noise: str, temperature: float) -> torch.Tensor:
        return S.diffusion_generate(lm, x, generator=torch.Generator().manual_seed(5), gumbel_noise=noise,
                                    temperature=temperature, **kw)

    assert torch.equal(run("block", 1.0), run("block", 1.0))
    assert not torch.equal(run("block", 1.0), run("canvas", 1.0))
    assert torch.equal(run("block", 0.0), run("canvas", 0.0))
    with pytest.raises(LayerwiseError, match="gumbel_noise"):
        run("everywhere", 1.0)


@pytest.mark.parametrize("shifted, padded", [(False, False), (True, True)])
def test_sliced_head_option_equals_reference(shifted, padded):
    model = tiny_llama(False, seed=6)
    lm = wrap(roll_left(model) if shifted else model, None, "ar2dlm" if shifted else "dlm", mask_token_id=MASK)
    x = prompts(3, 7, seed=6)
    am = None
    if padded:
        am = torch.ones_like(x)
        am[1, :3] = 0
        x[am == 0] = 0
    kw = dict(gen_length=8, steps=8, block_length=4)
    fast = S.diffusion_generate(lm, x, am, sliced_head=True, **kw)
    assert torch.equal(fast, reference(lm.model, x, am, mask_id=MASK, shifted=shifted, **kw))



def test_cuda_graph_needs_a_cuda_model(dlm):
    with pytest.raises(LayerwiseError, match="cuda_graph"):
        S.diffusion_generate(dlm, prompts(1, 4, seed=0), gen_length=4, steps=4, block_length=4, cuda_graph=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("sliced, padded", [(False, False), (True, False), (True, True)])
def test_cuda_graph_option_gives_the_eager_tokens(sliced, padded):
    lm = wrap(tiny_llama(False, seed=7).cuda(), None, "dlm", mask_token_id=MASK)
    x = prompts(3, 7, seed=7)
    am = None
    if padded:
        am = torch.ones_like(x)
        am[1, :3] = 0
        x[am == 0] = 0
    kw = dict(gen_length=16, steps=16, block_length=4, sliced_head=sliced)
    eager = S.diffusion_generate(lm, x, am, **kw)
    assert torch.equal(S.diffusion_generate(lm, x, am, cuda_graph=True, **kw), eager)
    assert torch.equal(eager.cpu(), reference(lm.model, x.cuda(), None if am is None else am.cuda(), mask_id=MASK,
                                              gen_length=16, steps=16, block_length=4).cpu())

def test_dream_algorithm_names_point_to_dream_generate(dlm):
    with pytest.raises(LayerwiseError, match="dream_generate"):
        S.diffusion_generate(dlm, prompts(1, 4, 0), gen_length=8, steps=8, block_length=8, remasking="maskgit_plus")


# ------------------------------------------------------------------ Dream's sampler --------------


@pytest.mark.parametrize("alg", S.DREAM_ALGS)
def test_dream_sampler_fills_the_planted_continuation(alg):
    """Every algorithm, greedy: the bag-of-context model's continuation of ``[7] * 5`` is ``[7] * 4``."""
    lm = bag_of_context_dlm()
    out = S.dream_generate(lm, torch.tensor([[7] * 5, [3] * 5]), gen_length=4, steps=4, alg=alg)
    assert out.tolist() == [[7] * 4, [3] * 4]


def test_dream_sampler_reads_aligned_logits(dlm):
    rolled = roll_left(dlm.model)
    shifted = wrap(rolled, None, "ar2dlm", mask_token_id=MASK)
    wrong = wrap(rolled, None, "dlm", mask_token_id=MASK)
    x = prompts(2, 6, seed=9)
    kw = dict(gen_length=8, steps=4, alg="entropy")
    assert torch.equal(S.dream_generate(shifted, x, **kw), S.dream_generate(dlm, x, **kw))
    assert not torch.equal(S.dream_generate(wrong, x, **kw), S.dream_generate(dlm, x, **kw))


@pytest.mark.parametrize("kw", [
    dict(alg="origin", temperature=1.0),
    dict(alg="maskgit_plus", temperature=1.0, top_p=0.9, top_k=20),
    dict(alg="topk_margin", alg_temp=0.5),
    dict(alg="entropy", temperature=0.5, alg_temp=0.2),
])
def test_dream_sampler_is_seeded(dlm, kw):
    x = prompts(2, 5, seed=2)

    def run(seed: int) -> torch.Tensor:
        return S.dream_generate(dlm, x, gen_length=10, steps=5, generator=torch.Generator().manual_seed(seed), **kw)

    a = run(0)
    assert a.shape == (2, 10)
    assert torch.equal(a, run(0)) and not torch.equal(a, run(1))


def test_dream_sampler_with_left_padding_equals_each_row_alone(dlm):
    x = prompts(2, 8, seed=4)
    am = torch.ones_like(x)
    am[1, :3] = 0
    x[am == 0] = 0
    both = S.dream_generate(dlm, x, am, gen_length=6, steps=3, alg="maskgit_plus")
    assert torch.equal(both[1:], S.dream_generate(dlm, x[1:, 3:], gen_length=6, steps=3, alg="maskgit_plus"))


@pytest.mark.parametrize("kw,needle", [
    (dict(alg="low_confidence"), "unknown Dream alg"),
    (dict(temperature=-0.1), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_k=0), "top_k"),
    (dict(alg_temp=-1.0), "alg_temp"),
    (dict(eps=1.0), "eps"),
    (dict(steps=0), "steps"),
])
def test_dream_sampler_errors(dlm, kw, needle):
    with pytest.raises(LayerwiseError, match=needle):
        S.dream_generate(dlm, prompts(1, 4, 0), gen_length=4, **kw)


def test_generate_settings_route_dream_algorithms(dlm):
    """generate(): a Dream algorithm (the registry's ``remasking``, or ``alg=``) runs Dream's sampler with
    the registry's top_p / alg_temp / eps and no blocks; LLaDA's keep blocks."""
    from dataclasses import replace

    from layerwise.models import DREAM_SAMPLER, LLADA_SAMPLER
    from layerwise.sampling.generation import _diffusion_defaults

    dream_lm = LoadedModel(dlm.model, None, replace(dlm.spec, sampler=DREAM_SAMPLER), dlm.adapter)
    got = _diffusion_defaults(dream_lm, 64, {})
    assert got == dict(alg="entropy", steps=64, temperature=0.2, top_p=0.95, alg_temp=0.0, eps=1e-3)
    assert _diffusion_defaults(dream_lm, 64, {"block_length": 64, "top_p": None})["top_p"] is None
    with pytest.raises(LayerwiseError, match="no blocks"):
        _diffusion_defaults(dream_lm, 64, {"block_length": 32})
    llada_lm = LoadedModel(dlm.model, None, replace(dlm.spec, sampler=LLADA_SAMPLER), dlm.adapter)
    assert _diffusion_defaults(llada_lm, 64, {}) == dict(remasking="low_confidence", block_length=32, steps=64,
                                                         temperature=0.0)
    assert _diffusion_defaults(llada_lm, 64, {"alg": "topk_margin"})["alg"] == "topk_margin"
    tok = tiny_tokenizer()
    lm = wrap(dlm.model, tok, "dlm")
    text = S.generate(lm, ["w1 w2 w3"], max_new_tokens=6, alg="maskgit_plus", steps=3, progress=False)
    ids = tok(["w1 w2 w3"], return_tensors="pt")["input_ids"]
    want = S.dream_generate(lm, ids, gen_length=6, steps=3, alg="maskgit_plus", temperature=0.0)[0].tolist()
    eos = tok.eos_token_id
    assert text == [tok.decode(want[:want.index(eos)] if eos in want else want, skip_special_tokens=True)]


# ------------------------------------------------------------------ early stop at end-of-text --


def count_calls(model: torch.nn.Module) -> list[int]:
    calls = [0]
    model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def early_eos_ids(full: torch.Tensor, cols: int = 2) -> list[int]:
    """End-of-text ids the model emits early: the tokens of each row's first ``cols`` positions."""
    return sorted({int(t) for t in full[:, :cols].flatten()} - {MASK})


@pytest.mark.parametrize("temperature, remasking, padded", [
    (0.0, "low_confidence", False), (0.0, "low_confidence", True), (1.0, "low_confidence", True),
    (1.0, "random", False)])
def test_stop_at_eos_keeps_the_text_up_to_the_first_eos(temperature, remasking, padded):
    """``stop_at_eos`` returns the full run with every position after each row's first end-of-text token set
    to it (so the text up to the first EOS is the full run's), runs fewer forward passes when every row stops
    early, and leaves the random stream where the full run leaves it."""
    lm = wrap(tiny_llama(False, seed=4), None, "dlm", mask_token_id=MASK)
    calls = count_calls(lm.model)
    x = prompts(3, 6, seed=7)
    am = None
    if padded:
        am = torch.ones_like(x)
        am[1, :2] = 0
        x[am == 0] = 0
    kw = dict(gen_length=16, steps=16, block_length=4, temperature=temperature, remasking=remasking)

    def run(**extra) -> tuple[torch.Tensor, int, float]:
        g = torch.Generator().manual_seed(11)
        calls[0] = 0
        out = S.diffusion_generate(lm, x, am, generator=g, **kw, **extra)
        return out, calls[0], float(torch.rand(1, generator=g))

    full, n_full, after_full = run()
    eos = early_eos_ids(full)
    stopped, n_stop, after_stop = run(stop_at_eos=True, eos_ids=eos)
    assert torch.equal(stopped, S.fill_after_stop(full, eos, MASK))
    assert n_stop < n_full == 16  # the first block's tokens are final: later blocks did not run
    assert after_stop == after_full  # same random numbers drawn, in the same shapes
    # an id never emitted: no early stop, the full run's tokens
    unused = sorted(set(range(MASK)) - {int(t) for t in full.flatten()})[:1]
    same, n_same, _ = run(stop_at_eos=True, eos_ids=unused)
    assert torch.equal(same, full) and n_same == n_full


def test_stop_at_eos_waits_for_every_row_and_earlier_masks():
    """No stop while one row has no EOS; a row's EOS counts only once the positions before it are decoded
    (a still-masked earlier position could still change the text)."""
    lm = wrap(tiny_llama(False, seed=0), None, "dlm", mask_token_id=MASK)
    calls = count_calls(lm.model)
    x = prompts(3, 6, seed=3)
    kw = dict(gen_length=16, steps=16, block_length=4)
    full = S.diffusion_generate(lm, x, **kw)
    early = sorted(set(full[1:, :4].flatten().tolist()) - set(full[0].tolist()))
    assert early  # rows 1 and 2 end in their first block, row 0 never: the batch runs in full
    calls[0] = 0
    got = S.diffusion_generate(lm, x, stop_at_eos=True, eos_ids=early, **kw)
    assert calls[0] == 16 and torch.equal(got, S.fill_after_stop(full, early, MASK))
    late = int(full[0, -1])  # row 0's last token: its first occurrence decides when the batch stops
    first = full[0].tolist().index(late)
    calls[0] = 0
    got = S.diffusion_generate(lm, x, stop_at_eos=True, eos_ids=early + [late], **kw)
    assert calls[0] <= 4 * (first // 4 + 1) and torch.equal(got, S.fill_after_stop(full, early + [late], MASK))
    from layerwise.sampling.diffusion_sampler import first_stop

    final, col = first_stop(torch.tensor([[5, MASK, 7, 9], [7, 5, 9, MASK]]), torch.tensor([7]), MASK)
    assert final.tolist() == [False, True] and col.tolist() == [2, 0]


def test_stop_at_eos_errors_and_block_noise(dlm):
    x = prompts(1, 5, seed=0)
    kw = dict(gen_length=8, steps=8, block_length=4)
    with pytest.raises(LayerwiseError, match="eos_ids"):
        S.diffusion_generate(dlm, x, stop_at_eos=True, **kw)  # no tokenizer, no ids
    with pytest.raises(LayerwiseError, match="mask id"):
        S.diffusion_generate(dlm, x, stop_at_eos=True, eos_ids=[MASK], **kw)
    # block noise at temperature > 0: draws depend on later tokens, so the sampler runs in full
    full = S.diffusion_generate(dlm, x, temperature=1.0, gumbel_noise="block",
                                generator=torch.Generator().manual_seed(0), **kw)
    eos = early_eos_ids(full)
    got = S.diffusion_generate(dlm, x, temperature=1.0, gumbel_noise="block", stop_at_eos=True, eos_ids=eos,
                               generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(got, S.fill_after_stop(full, eos, MASK))


def test_generate_stops_at_eos_by_default_with_the_same_texts():
    """``generate`` runs LLaDA's sampler with ``stop_at_eos`` at the tokenizer's EOS: the texts equal those
    of the full run (``stop_at_eos=False``), with fewer forward passes when EOS comes early."""
    tok = tiny_tokenizer()
    model = tiny_llama(False, seed=4)
    eos = tok.eos_token_id

    def favour_eos(_module: torch.nn.Module, _inputs: tuple, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[:, -12:, eos] += 3.0  # EOS likely after the first block of 4
        return out

    model.lm_head.register_forward_hook(favour_eos)
    lm = wrap(model, tok, "dlm")
    calls = count_calls(model)
    texts = ["w1 w2 w3", "w4 w5 w6 w7 w8", "w9", "w10 w11"]
    kw = dict(max_new_tokens=16, steps=16, block_length=4, batch_size=2, progress=False)
    full = S.generate(lm, texts, stop_at_eos=False, **kw)
    n_full, calls[0] = calls[0], 0
    fast = S.generate(lm, texts, **kw)
    assert fast == full and calls[0] < n_full == 32
    # batches stop at different steps (each when its own rows are final); the texts do not change
    assert S.generate(lm, texts, **{**kw, "batch_size": 1}) == full == S.generate(lm, texts, **{**kw, "batch_size": 4})
    assert any(t for t in full)  # not all empty: some text before the EOS


def test_bench_early_stop_tiny():
    """The early-stop benchmark runs: forward passes follow the block where the answer ends, tokens agree."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_early_stop.py"
    spec = importlib.util.spec_from_file_location("bench_early_stop", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(["--prompt", "8", "--gen-length", "16", "--steps", "16", "--block-length", "4",
                       "--answers", "2,9,15", "--repeats", "1", "--batch", "2"])
    assert [(r["passes_full"], r["passes_stop"]) for r in rows] == [(16, 4), (16, 12), (16, 16)]
    assert all(r["identical"] == 1.0 for r in rows)


@pytest.mark.parametrize("ks", [[3, 3, 3, 3], [2, 0, 2, 5], [0, 0, 0, 0], [1, 4, 1, 4]])
def test_transfer_mask_picks_per_row_topk_positions_ties_included(ks):
    from layerwise.sampling.diffusion_sampler import transfer_mask

    g = torch.Generator().manual_seed(0)
    conf = torch.rand(4, 40, generator=g)
    conf[:, 5:15] = 1.0  # ten tied confidences per row: topk decides among them
    conf[:, 30:] = -math.inf  # outside the block, as generate.py's confidence row
    got = transfer_mask(conf, ks)
    for j, k in enumerate(ks):
        want = torch.zeros(40, dtype=torch.bool)
        want[conf[j].topk(k).indices] = True  # generate.py's row-by-row selection
        assert torch.equal(got[j], want), (j, k)
    assert got.sum(1).tolist() == ks
