"""The masked-diffusion conventions (layerwise.diffusion) on constructed inputs whose answers are known."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from layerwise.config import LayerwiseError
from layerwise.diffusion import (
    Family,
    Objective,
    align_logits,
    as_family,
    find_mask_token_id,
    logit_positions,
    mask_fraction,
    mask_token_id,
    mask_tokens,
    maskable_positions,
    prediction_pairs,
    requires_mask_token,
    sample_t,
    stratified_mask,
)

MASK = 99


def tokenizer(with_mask: bool):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "a": 1, "b": 2, "<|mask|>": 3}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    kw = {"mask_token": "<|mask|>"} if with_mask else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", **kw)


def fake_lm(family: str, mask_id: int | None):
    spec = SimpleNamespace(model_id="tiny", mask_token_id=mask_id)
    return SimpleNamespace(family=Family(family), name="tiny", spec=spec)


# ------------------------------------------------------------------ masking processes ----------


def test_mask_tokens_rate_and_never_masks_non_maskable() -> None:
    ids = torch.arange(20_000).remainder(50).reshape(100, 200)
    maskable = torch.ones(200, dtype=torch.bool)
    maskable[:10] = False
    for t in (0.1, 0.5, 0.9):
        noisy, masked = mask_tokens(ids, t, MASK, generator=torch.Generator().manual_seed(0), maskable=maskable)
        assert not masked[:, :10].any() and torch.equal(noisy[:, :10], ids[:, :10])
        rate = masked[:, 10:].float().mean().item()
        assert abs(rate - t) < 0.01, (t, rate)  # 19 000 Bernoulli(t) draws: sd <= 0.004
        assert torch.equal(noisy == MASK, masked) and torch.equal(noisy[~masked], ids[~masked])
    # per-sequence t: each row masked at its own rate; the same generator seed gives the same masks
    t = torch.tensor([[0.0], [1.0]])
    _, m = mask_tokens(ids[:2], t, MASK, generator=torch.Generator().manual_seed(1))
    assert not m[0].any() and m[1].all()
    a = mask_tokens(ids, 0.3, MASK, generator=torch.Generator().manual_seed(7))[0]
    b = mask_tokens(ids, 0.3, MASK, generator=torch.Generator().manual_seed(7))[0]
    assert torch.equal(a, b)


def test_sample_t_range_and_maskable_positions() -> None:
    t = sample_t(10_000, eps=0.1, generator=torch.Generator().manual_seed(0))
    assert t.shape == (10_000, 1) and float(t.min()) >= 0.1 and float(t.max()) < 1.0
    assert abs(float(t.mean()) - 0.55) < 0.01  # U(0.1, 1)
    assert maskable_positions(5, "dlm") is None
    for fam in ("ar2dlm", Family.AR, Objective.AR2DLM):
        assert maskable_positions(5, fam).tolist() == [False, True, True, True, True]


def test_mask_fraction_exact_count_and_padding_untouched() -> None:
    ids = torch.arange(60).reshape(3, 20)
    valid = torch.ones(3, 20, dtype=torch.bool)
    valid[1, 12:] = False  # 12 real tokens
    noisy, masked = mask_fraction(ids, 0.25, MASK, generator=torch.Generator().manual_seed(0), maskable=valid)
    assert masked.sum(1).tolist() == [5, 3, 5]  # round(0.25 * n_valid)
    assert not masked[~valid].any() and torch.equal(noisy == MASK, masked)
    unchanged, none = mask_fraction(ids, 0.0, MASK)
    assert unchanged is ids and not none.any()
    with pytest.raises(LayerwiseError, match=r"\[0, 1\]"):
        mask_fraction(ids, 1.5, MASK)


def test_stratified_mask_counts_cover_the_range() -> None:
    is_mask, p_mask = stratified_mask(8, 16, torch.Generator().manual_seed(0))
    counts = is_mask.sum(1)
    assert torch.equal(p_mask, counts.float() / 16)
    assert int(counts.min()) >= 1 and int(counts.max()) <= 16
    assert len(set(counts.tolist())) == 8  # evenly spaced over 1..16: all different


# ------------------------------------------------------------------ logit alignment ------------


@pytest.mark.parametrize("family", list(Family))
def test_align_logits_per_family(family: Family) -> None:
    B, L, V = 2, 6, 3
    logits = torch.arange(L, dtype=torch.float32)[None, :, None].expand(B, L, V)  # row i holds i
    aligned = align_logits(logits, family)
    want = [0, 0, 1, 2, 3, 4] if family.shifted_logits else [0, 1, 2, 3, 4, 5]
    assert aligned[0, :, 0].tolist() == want and aligned.shape == logits.shape
    pos = torch.tensor([0, 2, 5])
    assert torch.equal(aligned[:, pos], logits[:, logit_positions(pos, family)])
    targets = torch.arange(L)[None].expand(B, L)
    lg, tg, m = prediction_pairs(logits, targets, family, targets > 2)
    if family.shifted_logits:  # raw logits at i predict token i + 1
        assert torch.equal(lg[0, :, 0].long() + 1, tg[0]) and m.shape == (B, L - 1)
    else:
        assert torch.equal(lg[0, :, 0].long(), tg[0]) and m.shape == (B, L)
    assert Family.DLM.shifted_logits is False and Family.AR2DLM.shifted_logits and Family.AR.shifted_logits


# ------------------------------------------------------------------ mask token -----------------


def test_mask_token_id_lookup_and_errors_name_the_fix() -> None:
    assert mask_token_id(tokenizer(True)) == 3
    fix = r"tokenizer has no mask token: add '<\|mask\|>' as its mask_token.*objective='ar'"
    with pytest.raises(LayerwiseError, match=fix):
        mask_token_id(tokenizer(False), purpose="objective 'dlm'", alternative="objective='ar'")
    assert mask_token_id(fake_lm("dlm", 7)) == 7
    with pytest.raises(LayerwiseError, match=r"mask_token_id.*wrap\(\.\.\., mask_token_id=ID\)"):
        mask_token_id(fake_lm("dlm", None))
    assert find_mask_token_id(None, tokenizer(False), 5, tokenizer(True)) == 5
    assert find_mask_token_id(tokenizer(False)) is None and find_mask_token_id(fake_lm("dlm", 2)) == 2
    assert requires_mask_token(fake_lm("ar2dlm", 4), purpose="x", alternative="y") == 4
    with pytest.raises(LayerwiseError, match="use mask_ratio=0 for autoregressive"):
        requires_mask_token(fake_lm("ar", None), purpose="mask_ratio=0.5", alternative="mask_ratio=0")


# ------------------------------------------------------------------ enums ----------------------


def test_objective_round_trips_from_strings() -> None:
    for name in ("ar", "dlm", "ar2dlm"):
        o = Objective(name)
        assert o == name and o.value == name and str(o) == name and f"{o}" == name and Objective(o) is o
        assert json.dumps({o: o}) == json.dumps({name: name}) and {name: 1}[o] == 1
        assert o.family is Family(name) and as_family(o) is Family(name)
        assert o.is_diffusion == (name != "ar") and o.causal == (name == "ar")
    assert [o.value for o in Objective] == ["ar", "dlm", "ar2dlm"]
    with pytest.raises(LayerwiseError, match=r"unknown objective 'mdm': use one of \('ar', 'dlm', 'ar2dlm'\)"):
        Objective("mdm")
    with pytest.raises(LayerwiseError, match="unknown family"):
        as_family("bert")
