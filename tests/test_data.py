"""Data pipeline: synthetic corpus, arithmetic task, tokenizer, token cache, order, errors."""

from __future__ import annotations

import lzma
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from layerwise import data as D
from layerwise.config import LayerwiseError
from layerwise.data.corpora import _PEOPLE
from layerwise.training import PRESETS

TINY = PRESETS["tiny"].data


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> D.TrainData:
    """The tiny preset's real training stream (synthetic stories + arithmetic), in a fresh cache."""
    return D.prepare(TINY, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


def test_heldout_arithmetic_never_in_tiny_training_stream(tiny_data: D.TrainData) -> None:
    arith_text = tiny_data.decode_all("arith")
    train_questions = re.findall(r"Question: (.*?) Answer: (-?\d+)", arith_text)
    assert len(train_questions) > 200  # the stream really holds arithmetic
    # every training problem is correct and outside the held-out bucket
    assert not any(D.is_heldout_question(q) for q, _ in train_questions)
    heldout = D.arithmetic_heldout(300, seed=0)
    full = tiny_data.decode_all("all")
    leaks = [h["question"] for h in heldout if f"Question: {h['question']} Answer:" in full]
    assert leaks == []
    # the bucket is a real split: held-out questions are a different set from training ones
    assert {h["question"] for h in heldout}.isdisjoint({q for q, _ in train_questions})


def test_arithmetic_answers_are_correct_and_prompts_well_formed() -> None:
    items = D.arithmetic_heldout(200, seed=3, num_fewshot=2)
    assert len({i["question"] for i in items}) == 200
    assert {i["kind"] for i in items} == {"add", "sub", "word"}
    for it in items:
        assert D.is_heldout_question(it["question"])
        assert it["prompt"].endswith(f"Question: {it['question']} Answer:")
        assert it["prompt"].count("Question:") == 3
        m = re.fullmatch(r"What is (\d+) ([+-]) (\d+)\?", it["question"])
        if m:
            a, op, b = int(m[1]), m[2], int(m[3])
            assert int(it["answer"]) == (a + b if op == "+" else a - b)
            lo, hi = 10 ** (D.ARITH_DIGITS[0] - 1), 10 ** D.ARITH_DIGITS[1] - 1
            assert lo <= a <= hi and lo <= b <= hi
        assert int(it["answer"]) >= 0
    assert D.arithmetic_heldout(20, seed=3) == [dict(i, prompt=i["prompt"].split("\n")[-1])
                                                for i in D.arithmetic_heldout(20, seed=3, num_fewshot=2)]
    # few-shot examples come from the training split
    for line in D.arithmetic_fewshot(5).splitlines():
        assert not D.is_heldout_question(line.split("Question: ")[1].split(" Answer:")[0])


def test_tokenizer_byte_identical_across_two_trainings(tmp_path: Path) -> None:
    docs = list(D.synthetic_documents(150, seed=1))
    paths = []
    for k in range(2):
        tok = D.train_tokenizer(docs, vocab_size=300)
        tok.save_pretrained(tmp_path / f"t{k}")
        paths.append(tmp_path / f"t{k}" / "tokenizer.json")
    assert paths[0].read_bytes() == paths[1].read_bytes()
    # and a different text gives a different tokenizer (the check can fail)
    other = D.train_tokenizer(list(D.synthetic_documents(150, seed=2)), vocab_size=300)
    assert D.tokenizer_sha(other) != D.tokenizer_sha(tok)


def test_split_digits_gives_one_token_per_digit(tiny_data: D.TrainData) -> None:
    # a corpus full of repeated numbers: without splitting, BPE merges them into multi-digit tokens
    docs = [f"In {1800 + k % 50} the price was {k * 37 % 1000} coins. " * 3 for k in range(400)]
    merged = D.train_tokenizer(docs, vocab_size=400, split_digits=False)
    split = D.train_tokenizer(docs, vocab_size=400, split_digits=True)
    text = "Question: What is 347 + 58? Answer: 405 in 1826"
    for tok in (merged, split, tiny_data.tokenizer):
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text  # lossless either way

    def digit_pieces(tok) -> list[str]:
        pieces = [tok.decode([i]) for i in tok(text, add_special_tokens=False)["input_ids"]]
        return [p for p in pieces if any(ch.isdigit() for ch in p)]
    assert any(len(p.strip()) > 1 for p in digit_pieces(merged))  # the check can fail
    for tok in (split, tiny_data.tokenizer):  # the presets split digits
        assert digit_pieces(tok) == list("347" "58" "405" "1826")


def test_tokenizer_reloads_with_auto_tokenizer_and_special_tokens(tiny_data: D.TrainData, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tiny_data.tokenizer.save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert tok.convert_ids_to_tokens([tok.eos_token_id, tok.pad_token_id, tok.mask_token_id]) == \
        [D.EOT, D.PAD, D.MASK]
    assert tok.bos_token_id == tok.eos_token_id
    text = "Question: What is 347 + 58? Answer: 405\n" + D.MASK
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids[-1] == tok.mask_token_id and tok.decode(ids) == text
    assert len(tok) <= TINY.vocab_size


def test_token_cache_is_reused_and_keyed_by_tokenizer(tiny_data: D.TrainData, tmp_path: Path) -> None:
    spec = D.DataSpec(source="synthetic", vocab_size=300, seq_len=32, synthetic_docs=120)
    a = D.prepare(spec, cache_dir=tmp_path, progress=False)
    files = sorted((tmp_path / "data" / "tokens").glob("*.npy"))
    b = D.prepare(spec, cache_dir=tmp_path, progress=False)
    assert sorted((tmp_path / "data" / "tokens").glob("*.npy")) == files  # nothing new written
    assert np.array_equal(a.text_rows, b.text_rows) and np.array_equal(a.arith_rows, b.arith_rows)
    c = D.prepare(D.DataSpec(source="synthetic", vocab_size=280, seq_len=32, synthetic_docs=120),
                  cache_dir=tmp_path, progress=False)
    assert len(sorted((tmp_path / "data" / "tokens").glob("*.npy"))) > len(files)
    assert c.info["tokenizer_sha"] != a.info["tokenizer_sha"]
    frac = len(a.arith_rows) / a.n_rows
    assert abs(frac - spec.arith_frac) < 0.02


def test_data_order_is_a_seeded_permutation_per_epoch(tiny_data: D.TrainData) -> None:
    n = tiny_data.n_rows
    first = tiny_data.indices(0, n)
    assert sorted(first.tolist()) == list(range(n))  # each row exactly once per epoch
    second = tiny_data.indices(n, n)
    assert sorted(second.tolist()) == list(range(n)) and not np.array_equal(first, second)
    # crossing the epoch boundary is consistent with the two epochs' orders
    assert np.array_equal(tiny_data.indices(n - 3, 6), np.concatenate([first[-3:], second[:3]]))
    batch = tiny_data.batch(5, 4)
    assert batch.shape == (4, TINY.seq_len) and batch.dtype == torch.long
    other_seed = D.TrainData(D.DataSpec(seed=1), tiny_data.tokenizer, tiny_data.text_rows, tiny_data.arith_rows, {})
    assert not np.array_equal(other_seed.indices(0, 50), first[:50])


def test_eval_sequences_synthetic_are_heldout_and_deterministic(tiny_data: D.TrainData) -> None:
    tok = tiny_data.tokenizer
    x = D.eval_sequences(tok, "tiny", 6, 64)
    assert x.shape == (6, 64) and x.dtype == torch.long
    assert torch.equal(x, D.eval_sequences(tok, "synthetic", 6, 64))
    assert not torch.equal(x, D.eval_sequences(tok, "tiny", 6, 64, seed=1))
    assert not torch.equal(x, D.calibration_sequences(tok, "tiny", 6, 64))
    # held-out stories are a different stream from the training stories
    train_docs = set(D.synthetic_documents(200, 0, "train"))
    assert not train_docs & set(D.synthetic_documents(200, 0, "heldout"))


def _fake_data_dir(root: Path) -> Path:
    """A data dir with tiny .xz stand-ins for the two Gutenberg files (same names and format)."""
    (root / "corpus").mkdir(parents=True)
    for name, seed, n in [(D.GUTENBERG_TRAIN, 0, 120), (D.GUTENBERG_HELDOUT, 1, 60)]:
        text = f"\n{D.EOT}\n".join(D.synthetic_documents(n, seed, "train"))
        with lzma.open(root / name, "wt", encoding="utf-8") as f:
            f.write(text)
    return root


def test_gutenberg_path_reads_xz_files_from_the_data_dir(tmp_path: Path) -> None:
    ddir = _fake_data_dir(tmp_path / "data")
    spec = D.DataSpec(source="gutenberg", vocab_size=300, seq_len=32, tokenizer_train_bytes=20_000)
    td = D.prepare(spec, data_dir=ddir, cache_dir=tmp_path / "cache", progress=False)
    assert td.text_rows.shape[1] == 32 and len(td.text_rows) > 50
    assert td.info["train_sha256"] == D.file_sha256(ddir / D.GUTENBERG_TRAIN)
    # book separators in the file became the eos token
    assert (np.asarray(td.text_rows) == td.tokenizer.eos_token_id).sum() > 10
    ev = D.eval_sequences(td.tokenizer, "gpu", 4, 32, data_dir=ddir, cache_dir=tmp_path / "cache")
    assert ev.shape == (4, 32)
    heldout_text = lzma.open(ddir / D.GUTENBERG_HELDOUT, "rt").read()
    assert td.tokenizer.decode(ev[0].tolist()) in heldout_text


def test_missing_data_dir_and_file_errors_name_the_path_and_variable(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("LAYERWISE_DATA_DIR", raising=False)
    spec = D.DataSpec(source="gutenberg", vocab_size=300, seq_len=32)
    missing = tmp_path / "nowhere"
    with pytest.raises(LayerwiseError, match="LAYERWISE_DATA_DIR") as e:
        D.prepare(spec, data_dir=missing, cache_dir=tmp_path / "c", progress=False)
    assert str(missing) in str(e.value)
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("LAYERWISE_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(LayerwiseError, match="LAYERWISE_DATA_DIR") as e:
        D.prepare(spec, cache_dir=tmp_path / "c", progress=False)
    assert str(tmp_path / "empty" / D.GUTENBERG_TRAIN) in str(e.value)


def test_bad_source_and_missing_mask_token_errors(tiny_data: D.TrainData) -> None:
    with pytest.raises(LayerwiseError, match="unknown data source"):
        D.DataSpec(source="wikipedia")  # type: ignore[arg-type]
    with pytest.raises(LayerwiseError, match="unknown preset or data source"):
        D.eval_sequences(tiny_data.tokenizer, "imagenet", 2, 8)
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(tiny_data.tokenizer.backend_tokenizer.to_str())
    no_mask = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=D.EOT)
    with pytest.raises(LayerwiseError, match="mask token"):
        D.require_mask_token(no_mask, "dlm")
    assert D.require_mask_token(tiny_data.tokenizer, "dlm") == tiny_data.tokenizer.mask_token_id
    assert math.isfinite(D.require_mask_token(tiny_data.tokenizer, "ar2dlm"))


def test_story_tasks_are_heldout_well_formed_and_deterministic() -> None:
    passages = D.story_passages(40)
    choices = D.story_choices(200)
    assert passages == D.story_passages(40) and choices == D.story_choices(200)
    assert choices != D.story_choices(200, seed=1)
    train = set(D.synthetic_documents(TINY.synthetic_docs, TINY.seed, "train"))
    assert not {p["text"] for p in passages} & train  # never a training story
    golds = []
    pronoun = dict(_PEOPLE)
    for k, item in enumerate(choices):
        assert set(item) == {"query", "choices", "gold", "kind"}
        assert not any(item["query"] in t for t in train)
        answer = item["choices"][item["gold"]]
        if k % 2 == 0:  # the friend's pronoun: agreement with the name just before it
            met = re.search(r"met (\w+) at the \w+, and$", item["query"])
            assert item["kind"] == "pronoun" and sorted(item["choices"]) == ["he", "she"]
            assert met and answer == pronoun[met[1]]
        else:  # the object found earlier, right after its adjective
            found = re.search(r"found a (\w+) (\w+) near", item["query"])
            assert item["kind"] == "object" and len(set(item["choices"])) == 4
            assert found and answer == found[2] and item["query"].endswith(f'"Where did you find the {found[1]}')
            golds.append(item["gold"])
    assert {golds.count(g) for g in range(4)} <= set(range(15, 36))  # the gold position is uniform
    assert {c["choices"][c["gold"]] for c in choices[0::2]} == {"he", "she"}


def test_story_tasks_evaluate_without_a_data_directory(tmp_path: Path, monkeypatch, tiny_data: D.TrainData) -> None:
    """lw_stories and lw_stories_choice are written into the cache: no data directory, any model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from layerwise.evals import LOCAL_TASKS, evaluate
    from layerwise.models import wrap

    monkeypatch.delenv("LAYERWISE_DATA_DIR", raising=False)
    assert all(v is None for t in ("lw_stories", "lw_stories_choice") for v in LOCAL_TASKS[t].files.values())
    torch.manual_seed(0)
    tok = tiny_data.tokenizer
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    lm = wrap(LlamaForCausalLM(cfg).eval(), tok, "ar")
    res = evaluate(lm, ["lw_stories", "lw_stories_choice"], limit=4, batch_size=4, cache_dir=tmp_path)
    assert res["n"] == {"lw_stories": 4, "lw_stories_choice": 4}
    bpb = res["metrics"]["lw_stories"]["bits_per_byte,none"]
    assert 0.5 < bpb < 20  # a random 2-block model: a real, finite loss on the stories
    assert res["chance"]["lw_stories_choice"]["acc,none"] == pytest.approx((1 / 2 + 1 / 4) / 2)  # 2 of each kind
    written = sorted(p.name for p in (tmp_path / "eval_data").glob("*.jsonl"))
    assert len(written) == 2 and all(n.startswith("stories") for n in written)


def test_tiny_profile_chapters_need_no_data_files(monkeypatch, tmp_path: Path) -> None:
    """Every lw_* task the tiny profile's chapters name is generated (no file of the data directory)."""
    from layerwise import book
    from layerwise.evals import LOCAL_TASKS, render_tasks

    monkeypatch.delenv("LAYERWISE_DATA_DIR", raising=False)
    named = set()
    for plan in book.plan_run("tiny", out=tmp_path):
        assert plan.parameters.get("data_dir", "") == "", plan.chapter
        defaults = {k: p.default for k, p in book.chapters.schema(plan.nb, plan.chapter).items()}
        for key in ("generation_task", "likelihood_tasks", "tasks", "headline_task"):
            value = plan.parameters.get(key, defaults.get(key, []))
            named |= {t for t in ([value] if isinstance(value, str) else value) if t.startswith("lw_")}
    assert {"lw_stories", "lw_stories_choice", "lw_arithmetic"} <= named <= set(LOCAL_TASKS)
    rendered = render_tasks(sorted(named), cache_dir=tmp_path / "cache")  # raises if one needs a data file
    assert sorted(p.stem for p in rendered.glob("*.yaml")) == sorted(named)
    with pytest.raises(LayerwiseError, match="LAYERWISE_DATA_DIR"):  # the check can fail: a data-dir task
        render_tasks(["lw_gutenberg"], cache_dir=tmp_path / "cache")
