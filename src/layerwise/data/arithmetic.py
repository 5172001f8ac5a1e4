"""The arithmetic task ("Question: What is 47 + 58? Answer: 105" and templated word problems) mixed
into pretraining at a few percent of sequences, with a held-out split that never occurs in training
(a hash bucket of the question string is reserved)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Literal

from .corpora import _PEOPLE

#: one problem per line: the prompt is everything up to and including "Answer:"
ARITH_TEMPLATE = "Question: {question} Answer: {answer}"
#: a question whose sha1 falls in this bucket (of ``HELDOUT_BUCKETS``) is held out of training
HELDOUT_BUCKETS = 10

_ITEMS = ["apples", "books", "coins", "marbles", "stamps", "cards", "pencils", "shells", "stones", "cookies"]
_WORD_TEMPLATES: list[tuple[str, str]] = [
    ("{a_name} has {x} {items} and buys {y} more. How many {items} does {pron} have?", "+"),
    ("{a_name} has {x} {items} and gives {y} to {b_name}. How many {items} does {a_name} have left?", "-"),
    ("A box holds {x} {items}. {a_name} puts in {y} more {items}. How many {items} are in the box?", "+"),
    ("{a_name} had {x} {items} and lost {y} of them. How many {items} are left?", "-"),
    ("{a_name} has {x} {items} and {b_name} has {y} {items}. How many {items} do they have together?", "+"),
    ("There were {x} {items} on the table. {a_name} took {y} of them. How many {items} are on the table now?", "-"),
]


def is_heldout_question(question: str) -> bool:
    """True for the reserved hash bucket: such a question never occurs in any training stream."""
    return int(hashlib.sha1(question.encode()).hexdigest()[:8], 16) % HELDOUT_BUCKETS == 0


#: operand digits of the bare problems. With 2-4 digits (and 3% of the stream) the gpu triplet stayed at
#: chance; with 2-3 digits (12%) ar reached 17% and the diffusion models 0%: 2 digits.
ARITH_DIGITS = (2, 2)


def _problem(rng: random.Random) -> dict[str, str]:
    """One random problem: 60% bare addition/subtraction (``ARITH_DIGITS``), 40% templated word problems.

    Subtractions keep the larger number first so that answers are non-negative.
    """
    if rng.random() < 0.6:
        da, db = rng.randint(*ARITH_DIGITS), rng.randint(*ARITH_DIGITS)
        x, y = rng.randint(10 ** (da - 1), 10**da - 1), rng.randint(10 ** (db - 1), 10**db - 1)
        op = rng.choice("+-")
        if op == "-" and x < y:
            x, y = y, x
        q = f"What is {x} {op} {y}?"
        kind = "add" if op == "+" else "sub"
    else:
        tmpl, op = rng.choice(_WORD_TEMPLATES)
        (a_name, pron), (b_name, _) = rng.sample(_PEOPLE, 2)
        x, y = rng.randint(2, 99), rng.randint(2, 99)
        if op == "-" and x < y:
            x, y = y, x
        q = tmpl.format(a_name=a_name, b_name=b_name, pron=pron, x=x, y=y, items=rng.choice(_ITEMS))
        kind = "word"
    ans = x + y if op == "+" else x - y
    return {"question": q, "answer": str(ans), "kind": kind}


def arithmetic_problems(n: int, seed: int = 0, split: Literal["train", "heldout"] = "train") -> list[dict[str, str]]:
    """``n`` deterministic problems of one split (``train`` never contains a held-out question).

    Held-out problems are also unique; training problems may repeat (as in any corpus).
    """
    rng = random.Random(f"arith-{split}-{seed}")
    want_heldout = split == "heldout"
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    while len(out) < n:
        p = _problem(rng)
        if is_heldout_question(p["question"]) != want_heldout:
            continue
        if want_heldout:
            if p["question"] in seen:
                continue
            seen.add(p["question"])
        out.append(p)
    return out


def format_problem(p: dict[str, str], with_answer: bool = True) -> str:
    line = ARITH_TEMPLATE.format(question=p["question"], answer=p["answer"])
    return line if with_answer else line[: line.rindex("Answer:") + len("Answer:")]


def arithmetic_fewshot(k: int, seed: int = 0) -> str:
    """``k`` solved training-split problems, one per line, ending with a newline ('' for k = 0)."""
    if k <= 0:
        return ""
    return "\n".join(format_problem(p) for p in arithmetic_problems(k, seed=10_000 + seed)) + "\n"


def arithmetic_heldout(n: int, seed: int = 0, num_fewshot: int = 0) -> list[dict[str, str]]:
    """Held-out problems for evaluation: ``[{question, answer, prompt, kind}]``.

    ``prompt`` is ``num_fewshot`` solved training problems (one per line) followed by
    ``"Question: <q> Answer:"``; the model should continue with ``" <answer>"``. None of these
    questions occurs in any training stream (see :func:`is_heldout_question`).
    """
    shots = arithmetic_fewshot(num_fewshot, seed)
    return [dict(p, prompt=shots + format_problem(p, with_answer=False))
            for p in arithmetic_problems(n, seed=seed, split="heldout")]


def arithmetic_documents(n_docs: int, seed: int = 0, per_doc: tuple[int, int] = (4, 10)) -> Iterator[str]:
    """Training documents of several solved problems, one per line (the few-shot format)."""
    rng = random.Random(f"arith-docs-{seed}")
    sizes = [rng.randint(*per_doc) for _ in range(n_docs)]
    probs = iter(arithmetic_problems(sum(sizes), seed=seed, split="train"))
    for k in sizes:
        yield "\n".join(format_problem(next(probs)) for _ in range(k))
