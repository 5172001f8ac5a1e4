"""Data-parallel evaluation: N shards of the items, merged, equal the single-process run item by item.

A tiny random-weight Llama (float32, CPU) on generated tasks (no data directory): greedy generation
(lw_arithmetic, few-shot, so few-shot contexts must match too) and multiple-choice log-likelihood
(lw_stories_choice), and a bidirectional model's Monte-Carlo likelihood. Shards run in-process with
explicit ranks, and once for real under ``accelerate launch --multi_gpu --num_processes 2`` on the CPU.
"""

from __future__ import annotations

import math
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from layerwise.config import LayerwiseError
from layerwise.evals import LayerwiseLM, TaskParams, evaluate, load_tasks
from layerwise.models import wrap
from layerwise.parallel import evaluate_sharded, merge_shard_files, merge_shards

PARAMS = TaskParams(arithmetic_n=40)
TASKS = ["lw_arithmetic", "lw_stories_choice"]
LIMIT = 7

MODEL_SCRIPT = """
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from layerwise import data
from layerwise.models import wrap

def tiny_model():
    texts = list(data.arithmetic_documents(60)) + list(data.synthetic_documents(20))
    tok = data.train_tokenizer(texts, 320)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    return wrap(LlamaForCausalLM(cfg).eval(), tok, "ar")
"""


def _tiny_model() -> Any:
    ns: dict[str, Any] = {}
    exec(MODEL_SCRIPT, ns)
    return ns["tiny_model"]()


@pytest.fixture(scope="module")
def model() -> Any:
    return _tiny_model()


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _run(model: Any, cache: Path, **kw: Any) -> dict[str, Any]:
    tasks = load_tasks(TASKS, cache_dir=cache, params=PARAMS, num_fewshot={"lw_arithmetic": 2})
    fn = evaluate_sharded if "rank" in kw else evaluate
    return fn(LayerwiseLM(model, batch_size=3, max_gen_toks=6), tasks, limit=LIMIT, **kw)


@pytest.fixture(scope="module")
def single(model, cache) -> dict[str, Any]:
    return _run(model, cache)


def _assert_same(merged: dict[str, Any], single: dict[str, Any]) -> None:
    for name in TASKS:
        assert merged["n"][name] == single["n"][name] == LIMIT
        assert [s["doc_id"] for s in merged["samples"][name]] == [s["doc_id"] for s in single["samples"][name]]
        # prompts (few-shot examples included), raw responses and per-item scores, item by item
        assert [s["arguments"] for s in merged["samples"][name]] == [s["arguments"] for s in single["samples"][name]]
        assert [s["resps"] for s in merged["samples"][name]] == [s["resps"] for s in single["samples"][name]]
        assert merged["items"][name] == single["items"][name]
        assert merged["metrics"][name] == single["metrics"][name]
        assert merged["chance"][name] == single["chance"][name]
        assert merged["higher_is_better"][name] == single["higher_is_better"][name]


@pytest.mark.parametrize("world", [2, 3])
def test_shards_merge_to_the_single_process_run(model, cache, single, world, tmp_path):
    shards = [_run(model, cache, rank=r, world=world, out_dir=tmp_path) for r in range(world)]
    # each shard scored its own items only
    for r, shard in enumerate(shards):
        assert [s["doc_id"] for s in shard["samples"]["lw_stories_choice"]] == list(range(r, LIMIT, world))
    _assert_same(merge_shards(list(reversed(shards))), single)
    _assert_same(merge_shard_files(tmp_path), single)
    # the merged aggregate is the single run's value, not a mean of shard means
    assert math.isclose(single["metrics"]["lw_stories_choice"]["acc,none"],
                        sum(single["items"]["lw_stories_choice"]["acc,none"]) / LIMIT)


def test_bad_shards_are_refused(model, cache, tmp_path):
    with pytest.raises(LayerwiseError, match="rank"):
        _run(model, cache, rank=2, world=2)
    shard = _run(model, cache, rank=0, world=2, out_dir=tmp_path)
    with pytest.raises(LayerwiseError, match="one shard per rank"):
        merge_shards([shard])
    with pytest.raises(LayerwiseError, match="missing shard files"):
        merge_shard_files(tmp_path)


LAUNCH_SCRIPT = MODEL_SCRIPT + """
import os, pickle, sys
from accelerate import PartialState
from layerwise.evals import LayerwiseLM, TaskParams, load_tasks
from layerwise.parallel import evaluate_data_parallel

state = PartialState()
assert os.environ["WORLD_SIZE"] == "2"
out_dir, cache, result = sys.argv[1:4]
tasks = load_tasks({tasks!r}, cache_dir=cache, params=TaskParams(arithmetic_n=40), num_fewshot={{"lw_arithmetic": 2}})
merged = evaluate_data_parallel(LayerwiseLM(tiny_model(), batch_size=3, max_gen_toks=6), tasks,
                                out_dir=out_dir, limit={limit}, wait_s=120)
assert (merged is None) == (os.environ["RANK"] != "0")
if merged is not None:
    with open(result, "wb") as f:
        pickle.dump({{k: merged[k] for k in ("n", "items", "metrics", "chance", "higher_is_better")}}
                    | {{"samples": {{t: [{{k: s[k] for k in ("doc_id", "arguments", "resps")}} for s in v]
                                   for t, v in merged["samples"].items()}}}}, f)
"""


@pytest.mark.skipif(shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None,
                    reason="accelerate's launcher is not installed beside this Python")
def test_accelerate_launch_two_cpu_processes(single, cache, tmp_path):
    script = tmp_path / "dp_eval.py"
    script.write_text(textwrap.dedent(LAUNCH_SCRIPT.format(tasks=TASKS, limit=LIMIT)))
    result = tmp_path / "merged.pkl"
    launcher = str(Path(sys.executable).parent / "accelerate")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    # accelerate's torchrun launcher (--multi_gpu) starts the two processes; on a machine without GPUs
    # they run on the CPU (accelerate's --cpu alone starts one process: multi-CPU launches need MPI)
    proc = subprocess.run([launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", str(script),
                           str(tmp_path / "shards"), str(cache), str(result)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [
        "shard-00000-of-00002.pkl", "shard-00001-of-00002.pkl"]
    with open(result, "rb") as f:
        merged = pickle.load(f)
    _assert_same(merged, single)
    torch.testing.assert_close(torch.tensor(merged["items"]["lw_stories_choice"]["acc,none"]),
                               torch.tensor(single["items"]["lw_stories_choice"]["acc,none"]))


def test_monte_carlo_likelihood_shards_match(model, cache, tmp_path):
    """A bidirectional (masked-diffusion) model scored by the Monte-Carlo likelihood: the estimate's
    randomness restarts per request, so sharding the items changes no item's score."""
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=len(model.tokenizer) + 1, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    cfg.is_causal = False
    dlm = wrap(LlamaForCausalLM(cfg).eval(), model.tokenizer, "dlm", mask_token_id=len(model.tokenizer))
    tasks = ["lw_stories_choice"]

    def run(**kw: Any) -> dict[str, Any]:
        lm = LayerwiseLM(dlm, batch_size=4, loglikelihood_kwargs={"n_samples": 4, "batch_size": 4})
        fn = evaluate_sharded if "rank" in kw else evaluate
        return fn(lm, load_tasks(tasks, cache_dir=cache, params=PARAMS), limit=LIMIT, **kw)

    single = run()
    merged = merge_shards([run(rank=r, world=3) for r in range(3)])
    assert [s["resps"] for s in merged["samples"]["lw_stories_choice"]] == [
        s["resps"] for s in single["samples"]["lw_stories_choice"]]
    assert merged["items"] == single["items"] and merged["metrics"] == single["metrics"]
