"""lm-eval integration: local offline tasks, the LM wrapper, answer extraction, retention.

An oracle backend (generation returns the gold answer; log-likelihood favours the gold text, which
the test rebuilds from the raw jsonl files, independently of the YAML templates) checks that the
tasks are wired right; a shuffled-answer backend checks chance-level scoring and its flag; a tiny
random-weight Llama through layerwise.sampling checks the real path and retention.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from layerwise import data
from layerwise.config import LayerwiseError, data_dir
from layerwise.evals import LayerwiseLM, TaskParams, evaluate, load_tasks, retention
from layerwise.models import wrap
from layerwise.tasks import utils as task_utils

try:
    DATA = data_dir()
except LayerwiseError:  # pragma: no cover - the offline data lives beside the checkout
    DATA = None
needs_data = pytest.mark.skipif(DATA is None, reason="offline data directory ../shared/data not found")

PARAMS = TaskParams(arithmetic_n=60, gutenberg_passages=4, gutenberg_chars=300)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def tok():
    texts = list(data.arithmetic_documents(60)) + list(data.synthetic_documents(20))
    return data.train_tokenizer(texts, 320)


@pytest.fixture(scope="module")
def tiny_ar(tok):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return wrap(LlamaForCausalLM(cfg).eval(), tok, "ar")


class OracleBackend:
    """Generation from a prompt -> answer table; log-likelihood 0 for gold full texts, else < 0."""

    def __init__(self, tok: Any, answers: dict[str, str] | None = None, gold_texts: set[str] | None = None) -> None:
        self.tok, self.answers, self.gold = tok, answers or {}, gold_texts or set()

    def generate(self, lm, prompts, *, max_new_tokens, batch_size, until, **kw):
        # a trailing stop string and junk: the wrapper must cut at "\n" as the task asks
        return [f" {self.answers[p]}\nQuestion: 1 + 1 = 3" for p in prompts]

    def loglikelihood(self, lm, context_ids, continuation_ids, **kw):
        out = []
        for c, x in zip(context_ids, continuation_ids):
            gold = self.tok.decode(list(c) + list(x)) in self.gold
            out.append((0.0 if gold else -1.0 - len(x), gold))
        return out

    def rolling_loglikelihood(self, lm, token_ids, *, max_length, prefix_token_id=None, **kw):
        return -float(len(token_ids))


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / "benchmarks" / name).read_text().splitlines()[:5]]


def _gold_texts() -> set[str]:
    """Gold (context + continuation) strings of the first 5 items of each MC task, from the raw files,
    in lm-eval's prompt formats (arc / boolq: "...\\nAnswer: choice"; obqa: "stem choice";
    piqa: "Question: goal\\nAnswer: sol"; winogrande: "filled context + continuation")."""
    gold = set()
    for f in ("arc_easy.jsonl", "arc_challenge.jsonl", "boolq.jsonl"):
        gold |= {f"{r['query']}\nAnswer: {r['choices'][r['gold']]}" for r in _rows(f)}
    gold |= {f"{r['query']} {r['choices'][r['gold']]}" for r in _rows("openbook_qa.jsonl")}
    labels = (DATA / "benchmarks" / "piqa_valid-labels.lst").read_text().split()
    gold |= {f"Question: {r['goal']}\nAnswer: {r['sol' + str(int(y) + 1)]}"
             for r, y in zip(_rows("piqa_valid.jsonl"), labels)}
    gold |= {f"{r['context_options'][r['gold']]} {r['continuation']}" for r in _rows("winogrande.jsonl")}
    gold |= {f"{r['context']} {r['continuation']}" for r in _rows("lambada_openai.jsonl")}
    return gold


def _arith(tok) -> dict[str, str]:
    return {p["prompt"]: p["answer"] for p in data.arithmetic_heldout(PARAMS.arithmetic_n, PARAMS.arithmetic_seed)}


@needs_data
def test_arithmetic_by_likelihood_scores_the_answer_line(tiny_ar, tok, cache):
    # the oracle is greedy exactly on "prompt + ' ' + answer + newline": acc 1 means the task's
    # continuation is the answer line as training writes it (and not, e.g., the answer without its space)
    answers = _arith(tok)
    gold = {f"{p} {a}\n" for p, a in answers.items()}
    tasks = load_tasks(["lw_arithmetic_ll"], cache_dir=cache, params=PARAMS)
    res = evaluate(LayerwiseLM(tiny_ar, backend=OracleBackend(tok, gold_texts=gold)), tasks, limit=30)
    assert res["n"]["lw_arithmetic_ll"] == 30
    assert res["metrics"]["lw_arithmetic_ll"]["acc,none"] == 1.0
    wrong = {f"{p} {int(a) + 1}\n" for p, a in answers.items()}
    res = evaluate(LayerwiseLM(tiny_ar, backend=OracleBackend(tok, gold_texts=wrong)), tasks, limit=30)
    assert res["metrics"]["lw_arithmetic_ll"]["acc,none"] == 0.0
    assert 0 < res["chance"]["lw_arithmetic_ll"]["acc,none"] < 0.5


MC_TASKS = ["lw_arc_easy", "lw_arc_challenge", "lw_boolq", "lw_openbookqa", "lw_piqa", "lw_winogrande", "lw_lambada"]


@needs_data
def test_oracle_scores_100_percent_on_arithmetic_and_shuffled_is_at_chance(tiny_ar, tok, cache):
    answers = _arith(tok)
    tasks = load_tasks(["lw_arithmetic"], cache_dir=cache, params=PARAMS)
    oracle = LayerwiseLM(tiny_ar, backend=OracleBackend(tok, answers))
    res = evaluate(oracle, tasks, limit=40)
    assert res["n"]["lw_arithmetic"] == 40
    assert res["metrics"]["lw_arithmetic"]["exact_match,first-number"] == 1.0

    prompts = list(answers)
    shuffled = {p: answers[prompts[(i + 1) % len(prompts)]] for i, p in enumerate(prompts)}  # a derangement
    table = retention(LayerwiseLM(tiny_ar, backend=OracleBackend(tok, shuffled)), {}, tasks, limit=40, n_boot=200)
    row = table.iloc[0]
    # the shuffled model is right exactly when the neighbour's answer happens to coincide
    coincide = np.mean([answers[p] == shuffled[p] for p in prompts[:40]])
    assert row["baseline"] == pytest.approx(coincide)
    assert row["baseline"] <= row["chance"] + 1e-12  # no better than always answering the commonest answer
    assert not row["meaningful"] and row["baseline_p"] > 0.05


@needs_data
def test_local_mc_tasks_load_offline_with_limit(tiny_ar, tok, cache):
    import os

    lm = LayerwiseLM(tiny_ar, max_length=4096, backend=OracleBackend(tok, gold_texts=_gold_texts()))
    res = evaluate(lm, MC_TASKS, limit=5, cache_dir=cache, params=PARAMS)
    assert os.environ["HF_DATASETS_OFFLINE"] == "1" and os.environ["HF_HUB_OFFLINE"] == "1"
    for t in MC_TASKS:
        assert res["n"][t] == 5
        assert res["metrics"][t]["acc,none"] == 1.0, t  # the oracle's gold texts match the task's prompts
        if t != "lw_lambada":
            n_choices = [len(s["arguments"]) for s in res["samples"][t]]
            assert res["chance"][t]["acc,none"] == pytest.approx(np.mean([1 / k for k in n_choices]))
    assert res["chance"]["lw_arc_easy"]["acc,none"] == pytest.approx(0.25)
    assert res["chance"]["lw_piqa"]["acc,none"] == pytest.approx(0.5)


@needs_data
def test_gsm8k_extraction_strict_and_flexible(tiny_ar, tok, cache):
    rows = _rows("gsm8k_test.jsonl")[:3]
    prompts = [f"Question: {r['question']}\nAnswer:" for r in rows]
    outputs = [
        "She has 16 - 3 - 4 = 9 eggs and makes 9 * 2 = $18.\n#### 18",  # both filters: 18 (gold 18)
        "It takes 2 + 1 = 3 bolts in total.",  # no '####': strict fails, flexible takes the last number
        "The profit is $70,000.\n#### 7000",  # strict reads 7000 (wrong); flexible also the last: 7000
    ]
    be = OracleBackend(tok, dict(zip(prompts, outputs)))
    be.generate = lambda lm, ps, **kw: [be.answers[p] for p in ps]
    res = evaluate(LayerwiseLM(tiny_ar, backend=be), ["lw_gsm8k"], limit=3, cache_dir=cache, params=PARAMS)
    items = res["items"]["lw_gsm8k"]
    assert [r["answer"].rsplit("#### ", 1)[1] for r in rows] == ["18", "3", "70000"]
    assert items["exact_match,strict-match"] == [1.0, 0.0, 0.0]
    assert items["exact_match,flexible-extract"] == [1.0, 1.0, 0.0]


def test_math_answer_extraction_minerva_style():
    final = "so x = 5.\nFinal Answer: The final answer is $\\frac{1}{2}$. I hope it is correct."
    assert task_utils.extract_math_answer(final) == "\\frac{1}{2}"
    assert task_utils.extract_math_answer("The answer is 4") == task_utils.INVALID_ANSWER
    assert task_utils.normalize_final_answer("\\text{(C)}") == "(C)"
    assert task_utils.normalize_final_answer("10,000 dollars") == "10000"
    assert task_utils.normalize_final_answer("\\frac12") == "\\frac{1}{2}"
    doc = {"answer": "\\frac{1}{2}"}
    assert task_utils.math_process_results(doc, [final]) == {"exact_match": 1, "exact_match_boxed": 1}
    boxed = "Hence the area is $\\boxed{\\frac{1}{2}}$."
    assert task_utils.math_process_results(doc, [boxed]) == {"exact_match": 0, "exact_match_boxed": 1}
    assert task_utils.last_boxed_only_string("a \\boxed{x^{2}} b") == "\\boxed{x^{2}}"


@needs_data
def test_math500_task_scores_oracle_solutions(tiny_ar, tok, cache):
    rows = _rows("math500_test.jsonl")[:2]
    be = OracleBackend(tok)
    # the oracle answers with the reference solution (ends in \boxed{...}) plus Minerva's sentence
    be.generate = lambda lm, ps, **kw: [
        f"{rows[i]['solution']}\nFinal Answer: The final answer is ${rows[i]['answer']}$. I hope it is correct."
        for i in [0 if rows[0]["problem"] in p.rsplit("Problem:", 1)[-1] else 1 for p in ps]]
    res = evaluate(LayerwiseLM(tiny_ar, backend=be), ["lw_math500"], limit=2, num_fewshot=0, cache_dir=cache,
                   params=PARAMS)
    assert res["metrics"]["lw_math500"]["exact_match,none"] == 1.0
    assert res["metrics"]["lw_math500"]["exact_match_boxed,none"] == 1.0


@needs_data
def test_retention_of_unmodified_model_is_exactly_one_and_skipping_changes_it(tiny_ar, cache):
    from layerwise.skipping import skip_layers

    before = {k: v.clone() for k, v in tiny_ar.model.state_dict().items()}
    table, runs = retention(tiny_ar, {"same": contextlib.nullcontext,
                                      "skip12": lambda: skip_layers(tiny_ar, [1, 2])},
                            ["lw_gutenberg", "lw_winogrande"], limit=4, batch_size=4, cache_dir=cache, params=PARAMS,
                            n_boot=200, return_runs=True)
    assert all(r["seconds"]["total"] > 0 and r["seconds"]["intervention"] >= 0 and "loglikelihood_rolling" in
               r["seconds"] for r in runs.values())
    for name in ("unmodified", "same"):
        rows = table[table.intervention == name]
        assert len(rows) == 4  # 3 rolling metrics + winogrande acc
        assert (rows.retention == 1.0).all() and (rows.ci_low == 1.0).all() and (rows.ci_high == 1.0).all()
    bpb = table[(table.intervention == "skip12") & (table.metric == "bits_per_byte")].iloc[0]
    assert bpb.retention != 1.0 and bpb.ci_low <= bpb.retention <= bpb.ci_high
    assert bpb.value == pytest.approx(bpb.baseline / bpb.retention)  # lower is better: base / value
    assert all(torch.equal(v, tiny_ar.model.state_dict()[k]) for k, v in before.items())
    wino = table[(table.intervention == "unmodified") & (table.task == "lw_winogrande")].iloc[0]
    assert wino.chance == 0.5 and bool(wino.meaningful) == (wino.baseline_p < 0.05)
    assert table[table.task == "lw_gutenberg"].chance.isna().all()  # no chance level for a loss


def test_missing_data_file_names_the_path(tmp_path, cache):
    (tmp_path / "benchmarks").mkdir()
    with pytest.raises(LayerwiseError, match=str(tmp_path / "benchmarks" / "arc_easy.jsonl")):
        load_tasks(["lw_arc_easy"], data_dir=tmp_path, cache_dir=cache)
    with pytest.raises(LayerwiseError, match="piqa_valid.jsonl"):
        load_tasks(["lw_piqa"], data_dir=tmp_path, cache_dir=cache)


def test_wrapper_rejects_bad_input(tiny_ar):
    with pytest.raises(LayerwiseError, match="LoadedModel"):
        LayerwiseLM(tiny_ar.model)  # type: ignore[arg-type]
    with pytest.raises(LayerwiseError, match="batch_size"):
        LayerwiseLM(tiny_ar, batch_size=0)


def test_arithmetic_fewshot_layout_matches_training_lines():
    """Few-shot arithmetic prompts put one solved problem per line, as the training stream does."""
    import re

    from layerwise.evals import load_tasks
    task = load_tasks(["lw_arithmetic"], num_fewshot=2, seed=0).tasks["lw_arithmetic"]
    ctx = task.fewshot_context(task.test_docs()[0], num_fewshot=2)
    lines = ctx.split("\n")
    assert len(lines) == 3 and "" not in lines
    assert all(re.fullmatch(r"Question: .+\? Answer: -?\d+", ln) for ln in lines[:2])
    assert lines[2].startswith("Question: ") and lines[2].endswith("Answer:")


def test_diffusion_greedy_check_runs_only_for_tasks_that_read_it(tok, cache, monkeypatch):
    """Multiple-choice tasks read only log-likelihoods: a diffusion model skips its is_greedy forward pass
    for them, with the same scores; a loglikelihood task (whose acc is is_greedy) still gets it."""
    from layerwise.sampling import likelihood as L

    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=len(tok) + 1, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    dlm = wrap(LlamaForCausalLM(cfg).eval(), tok, "dlm", mask_token_id=len(tok))
    calls: list[int] = []
    real = L._diffusion_is_greedy
    monkeypatch.setattr(L, "_diffusion_is_greedy", lambda *a: calls.append(1) or real(*a))
    tasks = load_tasks(["lw_stories_choice", "lw_arithmetic_ll"], cache_dir=cache, params=PARAMS)
    kw = {"n_samples": 4, "seed": 0}
    res = evaluate(dlm, tasks, limit=5, loglikelihood_kwargs=kw)
    n_ll = len(res["samples"]["lw_arithmetic_ll"])
    # wall-clock seconds per request type ride along (the timeline of a long chapter)
    assert set(res["seconds"]) == {"total", "loglikelihood"} and 0 < res["seconds"]["loglikelihood"] <= \
        res["seconds"]["total"]
    assert len(calls) == n_ll == 5  # one greedy pass per arithmetic request, none for the 5 x 4 choices
    calls.clear()
    import layerwise.sampling as S

    monkeypatch.setattr(S, "loglikelihood", lambda lm, c, x, greedy=True, _f=S.loglikelihood, **k: _f(lm, c, x, **k))
    every = evaluate(dlm, tasks, limit=5, loglikelihood_kwargs=kw)  # the greedy pass for every request
    assert len(calls) == n_ll + sum(len(s["arguments"]) for s in every["samples"]["lw_stories_choice"])
    assert res["items"] == every["items"]
