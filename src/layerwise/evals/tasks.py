"""The project's offline lm-eval tasks: local task YAMLs rendered with absolute data paths, shots,
code-execution gating."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import lzma
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import LayerwiseError, data_file
from ..config import cache_dir as _cache_dir
from ..config import data_dir as _data_dir

log = logging.getLogger(__name__)

TASKS_DIR = Path(__file__).resolve().parents[1] / "tasks"




# ---------------------------------------------------------------------------------------------
# Offline mode
# ---------------------------------------------------------------------------------------------


def set_offline(offline: bool = True) -> None:
    """Make ``datasets`` and ``huggingface_hub`` stay off the network (or allow it again).

    The environment variables are read when those libraries are imported, so the already-imported
    module constants are set too.
    """
    value = "1" if offline else "0"
    os.environ["HF_DATASETS_OFFLINE"] = value
    os.environ["HF_HUB_OFFLINE"] = value
    import sys

    if "datasets" in sys.modules:
        import datasets.config as dc

        dc.HF_HUB_OFFLINE = offline
        dc.HF_DATASETS_OFFLINE = offline
    if "huggingface_hub" in sys.modules:
        import huggingface_hub.constants as hc

        hc.HF_HUB_OFFLINE = offline


# ---------------------------------------------------------------------------------------------
# Local tasks
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalTask:
    """One offline task: its YAML template, the data it reads, and its chance level.

    ``files`` maps a placeholder (``@@key@@`` in the template) to a path relative to the data
    directory, or to ``None`` when the file is derived (written to the cache by :func:`_derive`).
    """

    name: str
    files: dict[str, str | None]
    description: str


LOCAL_TASKS: dict[str, LocalTask] = {t.name: t for t in [
    LocalTask("lw_arithmetic", {"arithmetic": None},
              "held-out synthetic arithmetic (layerwise.data.arithmetic_heldout), generation, exact match"),
    LocalTask("lw_arithmetic_ll", {"arithmetic": None},
              "the same problems by likelihood: acc = greedy (AR) / one-pass oracle-length (diffusion) exact match"),
    LocalTask("lw_stories", {"stories": None},
              "held-out synthetic stories (layerwise.data.story_passages), rolling log-likelihood; no data dir"),
    LocalTask("lw_stories_choice", {"stories_choice": None},
              "multiple choice on held-out synthetic stories (layerwise.data.story_choices), arc format; no data dir"),
    LocalTask("lw_gutenberg", {"gutenberg": None},
              "held-out Gutenberg passages (corpus/gutenberg-heldout-10MB.txt.xz), rolling log-likelihood"),
    LocalTask("lw_lambada", {"lambada": "benchmarks/lambada_openai.jsonl"}, "LAMBADA (OpenAI)"),
    LocalTask("lw_arc_easy", {"arc_easy": "benchmarks/arc_easy.jsonl"}, "ARC-Easy"),
    LocalTask("lw_arc_challenge", {"arc_challenge": "benchmarks/arc_challenge.jsonl"}, "ARC-Challenge"),
    LocalTask("lw_piqa", {"piqa": None}, "PIQA validation (with piqa_valid-labels.lst)"),
    LocalTask("lw_boolq", {"boolq": "benchmarks/boolq.jsonl"}, "BoolQ"),
    LocalTask("lw_openbookqa", {"openbookqa": "benchmarks/openbook_qa.jsonl"}, "OpenBookQA"),
    LocalTask("lw_winogrande", {"winogrande": "benchmarks/winogrande.jsonl"}, "WinoGrande (partial scoring)"),
    LocalTask("lw_gsm8k", {"gsm8k": "benchmarks/gsm8k_test.jsonl"}, "GSM8K test (lm-eval gsm8k filters)"),
    LocalTask("lw_math500", {"math500": "benchmarks/math500_test.jsonl"}, "MATH-500 (Minerva extraction)"),
    LocalTask("lw_humaneval", {"humaneval": "benchmarks/HumanEval.jsonl.gz"},
              "HumanEval, pass@1 by executing the completions (needs allow_code_execution=True)"),
]}

#: the metric each task's retention follows (one per task; where a task has several answer filters,
#: chapters keep the last); a task not listed follows "acc"
HEADLINE_METRICS: dict[str, str] = {
    "lw_arithmetic": "exact_match", "lw_gsm8k": "exact_match", "lw_math500": "exact_match",
    "lw_humaneval": "pass@1", "lw_gutenberg": "bits_per_byte", "lw_stories": "bits_per_byte",
    "lw_lambada": "acc",
}

#: shots per task in the papers' evaluations: GSM8K 5-shot (paper B, A.1; LLaDA's own lm-eval runs of
#: its Base model use 4), MATH-500 4-shot (Minerva), HumanEval 0-shot; paper B's multiple-choice tasks
#: ARC-Challenge 25, WinoGrande 5, BoolQ / OpenBookQA / PIQA 0. The paper profile passes these.
PAPER_FEWSHOT: dict[str, int] = {
    "lw_gsm8k": 5, "lw_math500": 4, "lw_humaneval": 0, "lw_arc_challenge": 25, "lw_arc_easy": 0,
    "lw_winogrande": 5, "lw_boolq": 0, "lw_openbookqa": 0, "lw_piqa": 0,
}

#: what lm-eval's code-executing metrics read before they run a program
CODE_EVAL_ENV = "HF_ALLOW_CODE_EVAL"

#: sources of the derived files
GUTENBERG_HELDOUT = "corpus/gutenberg-heldout-10MB.txt.xz"
#: items written to the generated story tasks' files (``limit`` picks the evaluated subset)
STORY_ITEMS = 500
PIQA_FILES = ("benchmarks/piqa_valid.jsonl", "benchmarks/piqa_valid-labels.lst")


@dataclass(frozen=True)
class TaskParams:
    """Sizes of the derived task files (the item subset itself is chosen with ``limit``)."""

    arithmetic_n: int = 500  #: held-out arithmetic problems written to the task file
    arithmetic_seed: int = 0
    gutenberg_passages: int = 64  #: passages, taken round-robin over the held-out books
    gutenberg_chars: int = 2000  #: about this many characters per passage (whole paragraphs)


def _jsonl(path: Path, rows: Iterable[dict]) -> Path:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def _arithmetic_rows(n: int, seed: int) -> list[dict[str, str]]:
    """Held-out problems as ``{"prompt": "Question: ... Answer:", "answer": "N"}``."""
    try:
        from ..data import arithmetic_heldout
    except ImportError as e:
        raise LayerwiseError(
            "the lw_arithmetic task needs layerwise.data.arithmetic_heldout (the triplet's data module): "
            f"it could not be imported ({e}); install the full package or pick other tasks"
        ) from e
    rows = []
    for item in arithmetic_heldout(n, seed):
        if isinstance(item, Mapping):
            prompt = item.get("prompt", item.get("question"))
            answer = item.get("answer", item.get("target"))
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            prompt, answer = item
        else:
            prompt = getattr(item, "prompt", getattr(item, "question", None))
            answer = getattr(item, "answer", getattr(item, "target", None))
        if prompt is None or answer is None:
            raise LayerwiseError(f"arithmetic_heldout returned an item without prompt/answer: {item!r}")
        prompt = str(prompt).rstrip()
        if "Answer:" not in prompt:  # a bare question: use the training format "Question: ... Answer:"
            prompt = f"Question: {prompt} Answer:"
        kind = item.get("kind") if isinstance(item, Mapping) else None
        rows.append({"prompt": prompt, "answer": str(answer).strip(), **({"kind": kind} if kind else {})})
    return rows


def _gutenberg_rows(src: Path, passages: int, chars: int) -> list[dict[str, str]]:
    """Passages of whole paragraphs (about ``chars`` characters), round-robin over the books so that
    the first k items come from k different books (books are separated by ``<|endoftext|>``)."""
    with lzma.open(src, "rt", encoding="utf-8") as f:
        books = [b.strip() for b in f.read().split("<|endoftext|>") if b.strip()]
    per_book: list[list[str]] = []
    need = -(-passages // max(len(books), 1))
    for book in books:
        out, cur = [], ""
        for para in book.split("\n\n"):
            cur = f"{cur}\n\n{para}" if cur else para
            if len(cur) >= chars:
                out.append(cur[: 2 * chars])
                cur = ""
                if len(out) >= need:
                    break
        per_book.append(out)
    rows: list[dict[str, str]] = []
    for j in range(need):
        for out in per_book:
            if j < len(out) and len(rows) < passages:
                rows.append({"text": out[j]})
    return rows


def _derive(key: str, root: Path, out: Path, params: TaskParams) -> Path:
    """Write (once) the jsonl of a derived task file and return its path."""
    out.mkdir(parents=True, exist_ok=True)
    if key == "arithmetic":
        from ..data import ARITH_DIGITS  # the problem distribution is part of the key (no stale task file)

        digits = "".join(map(str, ARITH_DIGITS))
        path = out / f"arithmetic_heldout_d{digits}_n{params.arithmetic_n}_seed{params.arithmetic_seed}.jsonl"
        if not path.is_file():
            _jsonl(path, _arithmetic_rows(params.arithmetic_n, params.arithmetic_seed))
        return path
    if key in ("stories", "stories_choice"):  # generated: the file name carries a hash of its content
        from ..data import story_choices, story_passages

        story_rows = (story_passages if key == "stories" else story_choices)(STORY_ITEMS)
        tag = hashlib.sha1(json.dumps(story_rows).encode()).hexdigest()[:8]
        path = out / f"{key}_heldout_n{STORY_ITEMS}_{tag}.jsonl"
        if not path.is_file():
            _jsonl(path, story_rows)
        return path
    if key == "gutenberg":
        src = data_file(GUTENBERG_HELDOUT, root)
        tag = hashlib.sha1(f"{src}:{src.stat().st_size}".encode()).hexdigest()[:8]
        path = out / f"gutenberg_heldout_{params.gutenberg_passages}x{params.gutenberg_chars}_{tag}.jsonl"
        if not path.is_file():
            _jsonl(path, _gutenberg_rows(src, params.gutenberg_passages, params.gutenberg_chars))
        return path
    if key == "piqa":
        src, lab = (data_file(p, root) for p in PIQA_FILES)
        tag = hashlib.sha1(f"{src}:{src.stat().st_size}:{lab.stat().st_size}".encode()).hexdigest()[:8]
        path = out / f"piqa_valid_labelled_{tag}.jsonl"
        if not path.is_file():
            docs = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
            labels = [int(x) for x in lab.read_text().split()]
            if len(docs) != len(labels):
                raise LayerwiseError(f"{src} has {len(docs)} items but {lab} has {len(labels)} labels: "
                                     "use the matching files from the PIQA release")
            _jsonl(path, ({**d, "label": y} for d, y in zip(docs, labels)))
        return path
    raise KeyError(key)


def render_tasks(names: Sequence[str], *, data_dir: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None, params: TaskParams = TaskParams()) -> Path:
    """Render the local task YAMLs ``names`` with absolute data paths; return their folder.

    Each file a task needs is checked first (a missing one raises :class:`LayerwiseError` naming
    its path). Derived files (arithmetic problems, Gutenberg passages, PIQA with labels) are
    written once under ``<cache>/eval_data``. The folder is keyed by the inputs, so re-rendering is
    idempotent and concurrent renders of different configurations do not collide.
    """
    unknown = [n for n in names if n not in LOCAL_TASKS]
    if unknown:
        raise LayerwiseError(f"not local tasks: {unknown}; local ones are {sorted(LOCAL_TASKS)}")
    cache = _cache_dir(cache_dir)
    root = _data_dir(data_dir, must_exist=False)
    paths: dict[str, Path] = {}
    for name in names:
        for key, rel in LOCAL_TASKS[name].files.items():
            paths[key] = data_file(rel, root) if rel is not None else _derive(key, root, cache / "eval_data", params)
    paths["hf_cache"] = cache / "hf_datasets"
    templates = {n: (TASKS_DIR / f"{n}.yaml").read_text() for n in names}
    utils_src = (TASKS_DIR / "utils.py").read_text()
    key = hashlib.sha1(json.dumps([sorted(templates.items()), utils_src, sorted((k, str(v)) for k, v in paths.items())])
                       .encode()).hexdigest()[:12]
    out = cache / "lm_eval_tasks" / key
    if not (out / "utils.py").is_file():
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        for name, text in templates.items():
            # json.dumps gives a double-quoted YAML scalar, safe for any path
            text = re.sub(r"@@(\w+)@@", lambda m: json.dumps(str(paths[m.group(1)])), text)
            (tmp / f"{name}.yaml").write_text(text)
        shutil.copy(TASKS_DIR / "utils.py", tmp / "utils.py")
        if out.exists():  # rendered concurrently by another process: keep theirs
            shutil.rmtree(tmp)
        else:
            tmp.rename(out)
    return out


@dataclass
class TaskSet:
    """lm-eval Task objects built once, re-used for every evaluation of every intervention."""

    names: list[str]
    tasks: dict[str, Any]  #: lm-eval name -> Task
    include_path: Path | None
    allow_code_execution: bool = False  #: tasks that execute model-written code may run


def _unsafe(task: Any) -> bool:
    return bool(getattr(task, "UNSAFE_CODE", False))


@contextlib.contextmanager
def _code_execution(allowed: bool) -> Any:
    """``HF_ALLOW_CODE_EVAL=1`` while an evaluation that may execute model-written code runs."""
    if not allowed:
        yield
        return
    old = os.environ.get(CODE_EVAL_ENV)
    os.environ[CODE_EVAL_ENV] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(CODE_EVAL_ENV, None)
        else:
            os.environ[CODE_EVAL_ENV] = old


def load_tasks(tasks: str | Sequence[str], *, data_dir: str | os.PathLike | None = None,
               cache_dir: str | os.PathLike | None = None, num_fewshot: int | Mapping[str, int] | None = None,
               seed: int = 0, params: TaskParams = TaskParams(), offline: bool | None = None,
               allow_code_execution: bool = False) -> TaskSet:
    """Build lm-eval tasks: local ``lw_*`` names from the data directory, others from lm-eval.

    ``offline=None`` switches the HF libraries offline when every task is local; standard lm-eval
    names keep the hub (and lm-eval's 15k-task index, ~10-20 s to build) only when asked for.
    ``num_fewshot`` overrides the YAML defaults (as ``lm_eval.simple_evaluate`` does): one number for
    every task, or shots per task name (e.g. :data:`PAPER_FEWSHOT`; tasks not in it keep their default).
    A task that executes model-written code (``lw_humaneval``, lm-eval's ``humaneval``) is refused
    unless ``allow_code_execution=True``; its programs then run in subprocesses with a time limit.
    """
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    if not names:
        raise LayerwiseError("no tasks given: pass e.g. tasks=['lw_arithmetic', 'lw_arc_easy']")
    local = [n for n in names if n in LOCAL_TASKS]
    hub = [n for n in names if n not in LOCAL_TASKS]
    set_offline(not hub if offline is None else offline)
    from lm_eval.tasks import TaskManager

    include = render_tasks(local, data_dir=data_dir, cache_dir=cache_dir, params=params) if local else None
    tm = TaskManager(include_path=str(include) if include else None, include_defaults=bool(hub))
    unknown = [n for n in hub if n not in tm.all_tasks]
    if unknown:
        raise LayerwiseError(f"unknown task names {unknown}: use a local task ({', '.join(sorted(LOCAL_TASKS))}) "
                             "or an lm-eval task name (lm_eval --tasks list)")
    loaded = tm.load(names)["tasks"]
    unsafe = sorted(name for name, t in loaded.items() if _unsafe(t))
    if unsafe and not allow_code_execution:
        raise LayerwiseError(f"{', '.join(unsafe)} scores a model by executing the code it writes: pass "
                             "allow_code_execution=True (chapter parameter allow_code_execution=true) to run it, "
                             "each program in a subprocess with a time limit, or drop the task")
    for name, t in loaded.items():
        shots = num_fewshot.get(name) if isinstance(num_fewshot, Mapping) else num_fewshot
        if shots is not None:
            t.set_config(key="num_fewshot", value=int(shots))
        elif t.get_config("num_fewshot") is None:
            t.set_config(key="num_fewshot", value=0)
        t.set_fewshot_seed(seed=seed)
    return TaskSet(names, dict(loaded), include, allow_code_execution)
