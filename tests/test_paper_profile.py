"""The paper profile's settings: which models each paper's claims compare, the benchmarks' shots, and
HumanEval's code execution (off unless switched on, then sandboxed with a time limit).

Model names here are the papers' hub ids on constructed data: nothing loads an 8B model.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

from layerwise import claims, data
from layerwise.book import plan_run
from layerwise.config import LayerwiseError
from layerwise.evals import PAPER_FEWSHOT, LayerwiseLM, evaluate, load_tasks
from layerwise.ledger import build_ledger
from layerwise.models import wrap
from layerwise.tasks import utils as task_utils

REPO = Path(__file__).resolve().parents[1]
LLADA, DREAM, QWEN, LLAMA = ("GSAI-ML/LLaDA-8B-Base", "Dream-org/Dream-v0-Base-7B", "Qwen/Qwen2.5-7B",
                             "meta-llama/Llama-3.1-8B")
#: the model list a user might give every chapter: both AR models, Qwen first
ALL_FOUR = {LLADA: "dlm", DREAM: "ar2dlm", QWEN: "ar", LLAMA: "ar"}


# ---------------------------------------------------------------------------------------------
# which models a claim compares
# ---------------------------------------------------------------------------------------------


def test_each_paper_picks_its_own_pair_and_the_triplet_falls_back_to_its_names():
    assert claims.representatives(ALL_FOUR, "A") == {"dlm": LLADA, "ar2dlm": DREAM, "ar": QWEN}
    assert claims.representatives(ALL_FOUR, "B") == {"dlm": LLADA, "ar2dlm": DREAM, "ar": LLAMA}
    # Instruct ids and local folders of the same models match too
    instruct = {"/models/Meta-Llama-3.1-8B-Instruct": "ar", "GSAI-ML/LLaDA-8B-Instruct": "dlm", QWEN: "ar"}
    assert claims.representatives(instruct, "B")["ar"] == "/models/Meta-Llama-3.1-8B-Instruct"
    triplet = {"ar": "ar", "dlm": "dlm", "ar2dlm": "ar2dlm"}
    assert claims.representatives(triplet, "A") == claims.representatives(triplet, "B") == \
           {"ar": "ar", "dlm": "dlm", "ar2dlm": "ar2dlm"}
    # without the paper's model, a family's first model; an explicit pair overrides the paper's
    assert claims.representatives({LLADA: "dlm", QWEN: "ar", "my/ar-model": "ar"}, "B")["ar"] == QWEN
    assert claims.representatives(ALL_FOUR, "B", pairs={"ar": "Qwen2.5"})["ar"] == QWEN
    with pytest.raises(LayerwiseError, match="unknown paper"):
        claims.representatives(ALL_FOUR, "C")


def _alphas(model: str, family: str, level: float) -> pd.DataFrame:
    rows = [{"model": model, "family": family, "method": "fixed", "layer": layer, "role": role,
             "alpha": level + 0.01 * layer + 0.001 * k, "depth": 6}
            for layer in range(6) for k, role in enumerate(["q", "k", "v", "o"])]
    return pd.DataFrame(rows)


def test_paper_b_claims_compare_llada_with_llama_even_when_qwen_is_listed_first():
    per_matrix = pd.concat([_alphas(LLADA, "dlm", 2.0), _alphas(DREAM, "ar2dlm", 3.5), _alphas(QWEN, "ar", 3.0),
                            _alphas(LLAMA, "ar", 5.0)])
    m = claims.alpha_hill_metrics(per_matrix, method="fixed", n_boot=100)
    b3 = m[claims.EARLY_ALPHA.minus_ar("dlm")]
    assert b3.model == f"{LLADA} - {LLAMA}"
    assert b3.value == pytest.approx(-3.0)  # LLaDA's 2.0 minus Llama's 5.0 (Qwen would give -1.0)
    assert m[claims.EARLY_ALPHA.diff(LLADA, QWEN)].value == pytest.approx(-1.0)  # every pair is still there

    ratios = {LLADA: np.full((4, 6), 100.0), DREAM: np.full((4, 6), 10.0), QWEN: np.full((4, 6), 10.0),
              LLAMA: np.full((4, 6), 1000.0)}
    stats = {n: type("S", (), {"super_outlier": 1, "layers_dominated": np.ones(6), "token_share": np.ones(1),
                               "num_layers": 6})() for n in ratios}
    b1 = claims.super_outlier_metrics(stats, ratios, ALL_FOUR, n_boot=50)[claims.EARLY_OUTLIER_RATIO.minus_ar("dlm")]
    assert b1.model == f"{LLADA} - {LLAMA}" and b1.value == pytest.approx(-1.0)  # log10 100 - log10 1000

    # the ledger's rows read those metrics: B3 names the Llama pair, A-claims the Qwen one
    per_seq = {n: np.tile(np.linspace(0.5, 0.9, 6), (8, 1)) + (0.05 if n == LLADA else 0) for n in ALL_FOUR}
    a = claims.layer_similarity_metrics(per_seq, ALL_FOUR, paired=True, n_boot=50)
    results = {claims.ALPHA_HILL: {"profile": "paper", "metrics": claims.to_result_metrics(m)},
               claims.LAYER_SIMILARITY: {"profile": "paper", "metrics": claims.to_result_metrics(a)}}
    ledger = build_ledger(results).set_index("claim")
    assert ledger.loc["B3", "models"] == f"{LLADA} - {LLAMA}" and ledger.loc["B3", "verdict"] == "reproduced"
    assert ledger.loc["A1", "models"] == f"{LLADA} - {QWEN}"


def test_paper_b_family_metrics_of_compression_use_llama():
    rows = [{"model": n, "kind": "quant", "method": "gptq", "bits": 3, "retention": r, "ci_low": r - 0.01,
             "ci_high": r + 0.01, "meaningful": True, "label": "lw_gsm8k exact_match", "n": 200}
            for n, r in [(LLADA, 0.98), (QWEN, 0.9), (LLAMA, 0.35)]]
    fams = {LLADA: "dlm", QWEN: "ar", LLAMA: "ar"}
    m = claims.compression_metrics(pd.DataFrame(rows), {}, fams, task="lw_gsm8k", measure="exact_match")
    assert m[claims.GPTQ3_CHANGE_PCT.of("ar")].model == LLAMA
    assert m[claims.GPTQ3_CHANGE_PCT.minus_ar("dlm")].value == pytest.approx(-2.0 - -65.0)


# ---------------------------------------------------------------------------------------------
# the profile itself
# ---------------------------------------------------------------------------------------------


def test_paper_profile_runs_each_paper_on_its_models_with_the_papers_shots(tmp_path):
    plans = {p.chapter: p.parameters for p in plan_run("paper", notebooks_dir=REPO / "notebooks", out=tmp_path,
                                                       cache=tmp_path / "c", overrides={"data_dir": str(tmp_path)})}
    for ch in ("01_layer_similarity", "02_token_similarity"):
        assert plans[ch]["models"] == [LLADA, DREAM, QWEN]
    for ch in ("04_super_outlier", "05_outlier_ablation", "06_alpha_hill"):
        assert plans[ch]["models"] == [LLADA, LLAMA]
    p3, p7 = plans["03_layer_skipping"], plans["07_compression"]
    assert p3["models"] == ["GSAI-ML/LLaDA-8B-Instruct", "Dream-org/Dream-v0-Instruct-7B", "Qwen/Qwen2.5-7B-Instruct"]
    assert [p3["generation_task"], *p3["extra_generation_tasks"]] == ["lw_gsm8k", "lw_math500", "lw_humaneval"]
    assert p3["num_fewshot"] == {k: PAPER_FEWSHOT[k] for k in ("lw_gsm8k", "lw_math500", "lw_humaneval")}
    assert p3["allow_code_execution"] is True  # switched on explicitly, in the profile
    assert p7["models"] == ["GSAI-ML/LLaDA-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"]
    assert p7["num_fewshot"] == {"lw_gsm8k": 5} and p7["headline_task"] == "lw_gsm8k"
    assert PAPER_FEWSHOT["lw_gsm8k"] == 5 and PAPER_FEWSHOT["lw_math500"] == 4
    # every other profile leaves code execution off (the chapters' default)
    for profile in ("tiny", "gpu"):
        text = yaml.safe_load((REPO / "notebooks" / "profiles" / f"{profile}.yaml").read_text())
        assert "allow_code_execution" not in json.dumps(text)


# ---------------------------------------------------------------------------------------------
# HumanEval and the shots, on a tiny model with scripted answers
# ---------------------------------------------------------------------------------------------

PROBLEMS = [
    {"task_id": "t/0", "prompt": 'def add(a, b):\n    """Sum of a and b."""\n', "entry_point": "add",
     "canonical_solution": "    return a + b\n", "test": "def check(f):\n    assert f(2, 3) == 5\n"},
    {"task_id": "t/1", "prompt": 'def double(x):\n    """Twice x."""\n', "entry_point": "double",
     "canonical_solution": "    return 2 * x\n", "test": "def check(f):\n    assert f(4) == 8\n"},
    {"task_id": "t/2", "prompt": 'def one():\n    """The number one."""\n', "entry_point": "one",
     "canonical_solution": "    return 1\n", "test": "def check(f):\n    assert f() == 1\n"},
]


@pytest.fixture(scope="module")
def humaneval_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    (root / "benchmarks").mkdir()
    with gzip.open(root / "benchmarks" / "HumanEval.jsonl.gz", "wt") as f:
        for p in PROBLEMS:
            f.write(json.dumps(p) + "\n")
    return root


@pytest.fixture(scope="module")
def tiny_lm():
    tok = data.train_tokenizer(list(data.synthetic_documents(20)), 320)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return wrap(LlamaForCausalLM(cfg).eval(), tok, "ar")


class Scripted:
    """Generation backend answering each prompt from a table (the model's weights are not used)."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers

    def generate(self, lm, prompts, **kw):
        return [self.answers[p] for p in prompts]


def test_humaneval_is_refused_unless_code_execution_is_switched_on(humaneval_dir, tmp_path, monkeypatch):
    monkeypatch.delenv(task_utils.CODE_EVAL_ENV, raising=False)
    with pytest.raises(LayerwiseError, match="allow_code_execution=True"):
        load_tasks(["lw_humaneval"], data_dir=humaneval_dir, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="HF_ALLOW_CODE_EVAL=1"):
        task_utils.run_program("print(1)")


@pytest.mark.slow
def test_humaneval_pass_at_1_executes_programs_in_a_sandbox_with_a_time_limit(humaneval_dir, tiny_lm, tmp_path,
                                                                              monkeypatch):
    monkeypatch.delenv(task_utils.CODE_EVAL_ENV, raising=False)
    answers = {p["prompt"]: p["canonical_solution"] for p in PROBLEMS}
    answers[PROBLEMS[1]["prompt"]] = "    return x + 1\n"  # wrong
    answers[PROBLEMS[2]["prompt"]] = "    while True:\n        pass\n"  # never ends: stopped after 3 s
    res = evaluate(LayerwiseLM(tiny_lm, backend=Scripted(answers)), ["lw_humaneval"], data_dir=humaneval_dir,
                   cache_dir=tmp_path, allow_code_execution=True)
    assert res["items"]["lw_humaneval"]["pass@1,create_test"] == [1.0, 0.0, 0.0]
    assert res["metrics"]["lw_humaneval"]["pass@1,create_test"] == pytest.approx(1 / 3)
    assert task_utils.CODE_EVAL_ENV not in os.environ  # switched off again afterwards
    # the sandbox: a program cannot delete files or start processes
    monkeypatch.setenv(task_utils.CODE_EVAL_ENV, "1")
    assert task_utils.run_program("x = 1") is True
    assert task_utils.run_program("import os\nos.system('true')") is False
    assert task_utils.run_program("import subprocess\nsubprocess.Popen(['true'])") is False


def test_shots_per_task_override_the_defaults(tmp_path):
    ts = load_tasks(["lw_arithmetic", "lw_arithmetic_ll"], cache_dir=tmp_path, num_fewshot={"lw_arithmetic": 3})
    assert ts.tasks["lw_arithmetic"].get_config("num_fewshot") == 3
    assert ts.tasks["lw_arithmetic_ll"].get_config("num_fewshot") == 0
    assert ts.allow_code_execution is False
