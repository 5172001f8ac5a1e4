"""Evaluation results do not depend on the batch size: the same evaluation at batch sizes 1 and 4 gives the
same answers item by item, for an autoregressive and a masked-diffusion tiny model (float32 on CPU).

- Generation (``lw_arithmetic``): exact equality of every generated text. Batching left-pads the prompts;
  the attention mask removes the padding from every softmax, and on this CPU the logits of a row in
  float32 are close enough that greedy argmax and LLaDA's confidence ranking pick the same tokens.
- Likelihood (``lw_stories_choice``): the log-likelihoods agree within a relative 1e-5, not bit for bit:
  AR requests of one batch are right-padded to the longest, so each row's matrix multiplies run on other
  shapes (another blocking, another summation order, other low bits). Diffusion Monte-Carlo estimates
  draw their masks per request from the seed (never per batch), so they do not depend on the batch.
  Their own Monte-Carlo batch (``loglikelihood_kwargs["batch_size"]``) is part of the estimator, as in
  LLaDA's ``get_log_likelihood``: the masked fractions are stratified within each Monte-Carlo batch, so it
  stays fixed here and must stay fixed between runs that are compared.
- The diffusion model generates with LLaDA's sampler (semi-autoregressive blocks) and its default early
  stop at end-of-text (``stop_at_eos``), which ends a batch only when every row's answer is final.

bfloat16 caveats (GPU runs): the low bits that padding changes are 3 decimal digits in bfloat16; near-ties
of the argmax (AR greedy) or of LLaDA's confidences (many confidences tie in bfloat16, and
``torch.topk`` breaks ties by position) can then flip a token and every token after it, so generation at
two batch sizes is identical only up to such flips there, and likelihood choices can swap when two
options are within bfloat16 rounding of each other. Batch size 1 is the reference in that case.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from layerwise import data
from layerwise.evals import LayerwiseLM, TaskParams, evaluate, load_tasks
from layerwise.models import LoadedModel, wrap

PARAMS = TaskParams(arithmetic_n=40)
LIMIT = 6


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    texts = list(data.arithmetic_documents(60)) + list(data.synthetic_documents(20))
    return data.train_tokenizer(texts, 320)


@pytest.fixture(scope="module")
def tasks(tok, tmp_path_factory):
    return load_tasks(["lw_arithmetic", "lw_stories_choice"], cache_dir=tmp_path_factory.mktemp("tasks"),
                      params=PARAMS)


def tiny(tok: Any, family: str) -> LoadedModel:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=False, attn_implementation="sdpa")
    cfg.is_causal = family == "ar"
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(20)  # context-dependent, non-uniform predictions
    return wrap(model, tok, family)


def per_item(res: dict[str, Any], task: str) -> dict[int, Any]:
    return {s["doc_id"]: s["resps"] for s in res["samples"][task]}


@pytest.mark.parametrize("family", ["ar", "dlm"])
def test_results_do_not_depend_on_the_batch_size(tok, tasks, family):
    lm = tiny(tok, family)
    runs = {}
    for bs in (1, 4):
        wrapper = LayerwiseLM(lm, batch_size=bs, sampler_kwargs=dict(steps=16, block_length=4),
                              loglikelihood_kwargs=dict(n_samples=8, batch_size=4))
        runs[bs] = evaluate(wrapper, tasks, limit=LIMIT, seed=0)
    gen1, gen4 = per_item(runs[1], "lw_arithmetic"), per_item(runs[4], "lw_arithmetic")
    assert len(gen1) == LIMIT and gen1 == gen4
    assert any(r[0][0].strip() for r in gen1.values())  # real text, not all empty
    ll1, ll4 = per_item(runs[1], "lw_stories_choice"), per_item(runs[4], "lw_stories_choice")
    assert len(ll1) == LIMIT and ll1.keys() == ll4.keys()
    for doc, options in ll1.items():
        a = [float(o[0][0]) for o in options]
        b = [float(o[0][0]) for o in ll4[doc]]
        assert b == pytest.approx(a, rel=1e-5, abs=1e-6), doc
    m1, m4 = runs[1]["metrics"]["lw_stories_choice"], runs[4]["metrics"]["lw_stories_choice"]
    assert m1["acc,none"] == m4["acc,none"]
