"""Resumable retention: a run killed half-way and started again recomputes nothing it finished.

A tiny random-weight diffusion Llama (a tokenizer trained on the synthetic corpus) is evaluated
under several layer-skipping configurations in a subprocess that is killed (SIGKILL) once the first
configurations are stored; the restart must evaluate only the missing ones, leave the stored files
untouched and give the same table as an uninterrupted, uncached run. A changed key (seed, limit,
weights, the caller's salt) must miss the cache.
"""

from __future__ import annotations

import os
import pickle
import runpy
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from layerwise import data
from layerwise.evals import load_tasks, retention
from layerwise.evals import run as run_module
from layerwise.models import wrap
from layerwise.skipping import skip_layers

TASKS = ["lw_stories_choice", "lw_arithmetic"]
CONFIGS = [[0], [1], [2], [3]]

SCRIPT = textwrap.dedent('''
    import contextlib, logging, pickle, sys, time
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from layerwise import data
    from layerwise.evals import load_tasks, retention
    from layerwise.models import wrap
    from layerwise.skipping import skip_layers

    cache, marker, out, pause = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    texts = list(data.arithmetic_documents(60)) + list(data.synthetic_documents(20))
    tok = data.train_tokenizer(texts, 320)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    cfg.is_causal = False
    lm = wrap(LlamaForCausalLM(cfg).eval(), tok, "dlm", mask_token_id=len(tok) - 1)
    tasks = load_tasks(TASKS_, cache_dir=sys.argv[5])

    @contextlib.contextmanager
    def logged(layers):
        with open(marker, "a") as f:
            f.write(f"{layers}\\n")
        with skip_layers(lm, layers) as s:
            yield s
        time.sleep(pause)  # after the evaluation: the kill lands between stored configurations

    interventions = {str(c): (lambda c=c: logged(c)) for c in CONFIGS_}
    table, runs = retention(lm, interventions, tasks, limit=3, batch_size=3, seed=0, n_boot=50, return_runs=True,
                            cache=cache if cache != "none" else None, cache_key="skip_layers", max_gen_toks=4,
                            sampler_kwargs={"steps": 4}, loglikelihood_kwargs={"n_samples": 2, "batch_size": 2})
    with open(out, "wb") as f:
        pickle.dump({"table": table, "metrics": {k: r["metrics"] for k, r in runs.items()},
                     "items": {k: r["items"] for k, r in runs.items()}}, f)
''').replace("TASKS_", repr(TASKS)).replace("CONFIGS_", repr(CONFIGS))


def _run(script: Path, args: list[str], log: Path) -> subprocess.Popen:
    """The script in a new process, its output to ``log`` (a pipe could fill and stall it)."""
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
    with log.open("w") as f:
        return subprocess.Popen([sys.executable, str(script), *args], env=env, stdout=f, stderr=subprocess.STDOUT)


def _stored(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in folder.glob("*.pkl")}


def test_killed_run_resumes_without_recomputing_and_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    cache, task_cache = tmp_path / "runs", str(tmp_path / "tasks")
    marker1, marker2, marker_ref = (tmp_path / f"evaluated{i}.txt" for i in (1, 2, 3))

    first = _run(script, [str(cache), str(marker1), str(tmp_path / "first.pkl"), "3", task_cache], tmp_path / "1.log")
    deadline = time.monotonic() + 90
    while len(_stored(cache) if cache.exists() else {}) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL, (tmp_path / "1.log").read_text()
    stored = _stored(cache)
    # the baseline and the first configuration are stored; with a 3 s pause after each, not all of them
    assert 2 <= len(stored) < 1 + len(CONFIGS), stored
    assert not (tmp_path / "first.pkl").exists()
    assert not list(cache.glob("*.tmp"))

    second = _run(script, [str(cache), str(marker2), str(tmp_path / "second.pkl"), "0", task_cache],
                  tmp_path / "2.log")
    # meanwhile, the uninterrupted reference without a cache, in this process
    monkeypatch.setattr(sys, "argv", [str(script), "none", str(marker_ref), str(tmp_path / "ref.pkl"), "0", task_cache])
    runpy.run_path(str(script), run_name="__main__")
    second.wait(timeout=120)
    err = (tmp_path / "2.log").read_text()
    assert second.returncode == 0, err
    assert f"cached: {len(stored)} of {1 + len(CONFIGS)} configurations" in err
    after = _stored(cache)
    assert len(after) == 1 + len(CONFIGS)
    assert all(after[name] == stamp for name, stamp in stored.items())  # finished files untouched
    evaluated_first = marker1.read_text().split("\n")[:-1]
    evaluated_again = marker2.read_text().split("\n")[:-1]
    finished = len(stored) - 1  # stored interventions (the baseline is one file, no marker line)
    assert evaluated_again == [str(c) for c in CONFIGS[finished:]]  # only the missing ones
    assert evaluated_first[:finished] == [str(c) for c in CONFIGS[:finished]]

    ref, resumed = (pickle.loads((tmp_path / f).read_bytes()) for f in ("ref.pkl", "second.pkl"))
    assert marker_ref.read_text().split("\n")[:-1] == [str(c) for c in CONFIGS]
    pd.testing.assert_frame_equal(resumed["table"], ref["table"])
    assert resumed["metrics"] == ref["metrics"] and resumed["items"] == ref["items"]
    assert ref["table"].intervention.nunique() == 1 + len(CONFIGS)


@pytest.fixture(scope="module")
def tiny_dlm():
    texts = list(data.arithmetic_documents(60)) + list(data.synthetic_documents(20))
    tok = data.train_tokenizer(texts, 320)
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    cfg.is_causal = False
    return wrap(LlamaForCausalLM(cfg).eval(), tok, "dlm", mask_token_id=len(tok) - 1)


def test_a_changed_key_misses_the_cache(tiny_dlm, tmp_path, monkeypatch):
    calls: list[int] = []
    real = run_module.evaluate

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "evaluate", counting)
    tasks = load_tasks(["lw_stories_choice"], cache_dir=tmp_path / "tasks")
    folder = tmp_path / "runs"
    skip = {"[1]": lambda: skip_layers(tiny_dlm, [1])}

    def go(**kw) -> int:
        calls.clear()
        args = {"limit": 2, "seed": 0, "cache_key": "skip", **kw}
        retention(tiny_dlm, skip, tasks, batch_size=2, n_boot=20, cache=folder,
                  loglikelihood_kwargs={"n_samples": 2, "batch_size": 2}, **args)
        return len(calls)

    assert go() == 2
    assert go() == 0  # everything stored
    assert go(seed=1) == 2
    assert go(limit=3) == 2
    assert go(cache_key="skip-other") == 1  # the baseline is shared, the intervention is not
    weight = tiny_dlm.model.model.layers[0].mlp.up_proj.weight
    original = weight.detach().clone()
    with torch.no_grad():
        weight.mul_(1.01)
    try:
        assert go() == 2  # new weights: every configuration again
    finally:
        with torch.no_grad():
            weight.copy_(original)
    assert go() == 0  # the original weights: stored again
    assert len(list(folder.glob("*.pkl"))) == 9


def test_weight_fingerprint_reads_large_tensors_and_sees_new_weights():
    from layerwise.evals.cache import model_fingerprint
    from layerwise.testing import random_model

    # an embedding of more than 2**24 elements: sampled indices must stay exact beyond float precision
    kw = dict(layers=1, d_model=1024, heads=8, mlp=64, vocab=17000, family="dlm", device="cpu", dtype="bfloat16")
    a, b = random_model(**kw, seed=0), random_model(**kw, seed=1)
    assert a.model.get_input_embeddings().weight.numel() > 2**24
    assert model_fingerprint(a) == model_fingerprint(random_model(**kw, seed=0))
    assert model_fingerprint(a) != model_fingerprint(b)
