"""Evaluation on lm-eval 0.4.x: a wrapper around an already-loaded model, the project's offline
tasks, and retention under interventions with paired-bootstrap confidence intervals.

Three pieces:

- :class:`LayerwiseLM`, an lm-eval ``LM`` around a :class:`~layerwise.models.LoadedModel` that is
  already in memory, so that whatever was done to it in place (blocks skipped, channels ablated,
  weights quantised) is what lm-eval scores. Autoregressive and masked-diffusion families go through
  :mod:`layerwise.sampling`: exact log-likelihood or the Monte-Carlo estimate, AR decoding or the
  diffusion sampler, rolling log-likelihood or its ELBO.
- Local task YAMLs (``layerwise/tasks/lw_*.yaml``) for the offline data in the data directory,
  rendered at run time with absolute paths (lm-eval's ``data_files`` must be absolute) and
  registered through ``TaskManager(include_path=...)``. Names: see :data:`LOCAL_TASKS`. Any other
  name goes to lm-eval's own registry unchanged (needs hub access for its dataset).
- :func:`retention`: the unmodified model and each intervention on the same items, every metric as a
  fraction of the unmodified model, a paired bootstrap interval, and a flag for baselines that are
  not significantly above chance (retaining chance-level accuracy means nothing). The statistics
  themselves (bootstrap, binomial test, ratios) are :mod:`layerwise.stats`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import lzma
import os
import random
import re
import shutil
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import LayerwiseError, data_file
from .config import cache_dir as _cache_dir
from .config import data_dir as _data_dir
from .models import LoadedModel
from .stats import above_chance_pvalue, bootstrap_indices, paired_retention, retention_ratio

log = logging.getLogger(__name__)

TASKS_DIR = Path(__file__).resolve().parent / "tasks"

#: A zero-argument callable returning a context manager that modifies the model in place and
#: restores it on exit, e.g. ``lambda: skip_layers(lm, [3, 4])``.
ContextManagerFactory = Callable[[], contextlib.AbstractContextManager[Any]]


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
        from .data import arithmetic_heldout
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
        from .data import ARITH_DIGITS  # the problem distribution is part of the key (no stale task file)

        digits = "".join(map(str, ARITH_DIGITS))
        path = out / f"arithmetic_heldout_d{digits}_n{params.arithmetic_n}_seed{params.arithmetic_seed}.jsonl"
        if not path.is_file():
            _jsonl(path, _arithmetic_rows(params.arithmetic_n, params.arithmetic_seed))
        return path
    if key in ("stories", "stories_choice"):  # generated: the file name carries a hash of its content
        from .data import story_choices, story_passages

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


# ---------------------------------------------------------------------------------------------
# The lm-eval LM
# ---------------------------------------------------------------------------------------------


class Backend(Protocol):
    """What :class:`LayerwiseLM` needs from :mod:`layerwise.sampling` (tests pass a fake)."""

    def generate(self, lm: LoadedModel, prompts: list[str], *, max_new_tokens: int, batch_size: int,
                 until: list[str], progress: bool = True, **sampler_kwargs: Any) -> list[str]: ...

    def loglikelihood(self, lm: LoadedModel, context_ids: list[list[int]], continuation_ids: list[list[int]],
                      **kw: Any) -> list[tuple[float, bool]]: ...

    def rolling_loglikelihood(self, lm: LoadedModel, token_ids: list[int], *, max_length: int,
                              prefix_token_id: int | None = None, **kw: Any) -> float: ...


def _default_backend() -> Backend:
    try:
        from . import sampling
    except ImportError as e:
        raise LayerwiseError(f"layerwise.sampling could not be imported ({e}): it drives generation and "
                             "likelihoods; pass backend=... to LayerwiseLM to use another") from e
    return sampling


def _load_template_lm() -> type:
    from lm_eval.api.model import TemplateLM

    return TemplateLM


class LayerwiseLM(_load_template_lm()):  # type: ignore[misc]
    """lm-eval ``LM`` around an already-loaded model (AR or masked diffusion).

    lm-eval's ``TemplateLM`` splits (context, continuation) strings into token ids (moving trailing
    spaces to the continuation); this class only routes the three request types to
    :mod:`layerwise.sampling`, in batches sorted by length, and memoises tokenisation so that the
    N evaluations of :func:`retention` tokenise every string once.

    Args:
        lm: the model, already on its device and possibly modified in place.
        batch_size: sequences per forward pass (generation and likelihood).
        max_length: context window; default the config's ``max_position_embeddings``.
        max_gen_toks: generation length for tasks that do not set ``max_gen_toks`` (lm-eval: 256);
            the diffusion sampler's ``gen_length``.
        sampler_kwargs: passed to ``sampling.generate`` (e.g. ``steps``, ``block_length``).
        loglikelihood_kwargs: passed to ``sampling.loglikelihood`` (e.g. ``n_samples``, ``seed``
            for the diffusion Monte-Carlo estimate).
        backend: object with ``generate`` / ``loglikelihood`` / ``rolling_loglikelihood``;
            default :mod:`layerwise.sampling`.
    """

    def __init__(self, lm: LoadedModel, *, batch_size: int = 8, max_length: int | None = None,
                 max_gen_toks: int = 256, sampler_kwargs: dict[str, Any] | None = None,
                 loglikelihood_kwargs: dict[str, Any] | None = None, backend: Backend | None = None) -> None:
        super().__init__()
        if not isinstance(lm, LoadedModel):
            raise LayerwiseError(f"LayerwiseLM wraps a layerwise.models.LoadedModel, got {type(lm).__name__}: "
                                 "use layerwise.models.load(...) or wrap(model, tokenizer, family)")
        if lm.tokenizer is None:
            raise LayerwiseError("lm-eval needs the model's tokenizer: wrap(model, tokenizer, ...) with one")
        if batch_size < 1:
            raise LayerwiseError(f"batch_size must be >= 1, got {batch_size}")
        self.lm = lm
        self.tokenizer = lm.tokenizer
        self.batch_size = int(batch_size)
        cfg = getattr(lm.model, "config", None)
        self.max_length = int(max_length or getattr(cfg, "max_position_embeddings", 0) or 2048)
        self.max_gen_toks = int(max_gen_toks)
        self.sampler_kwargs = dict(sampler_kwargs or {})
        self.loglikelihood_kwargs = dict(loglikelihood_kwargs or {})
        self.backend = backend or _default_backend()
        self._tok_cache: dict[tuple[str, bool], list[int]] = {}

    # -- lm-eval plumbing ---------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        tok = self.tokenizer
        eot = getattr(tok, "eos_token_id", None)
        if eot is None:
            eot = tok.convert_tokens_to_ids("<|endoftext|>") if hasattr(tok, "convert_tokens_to_ids") else None
        if eot is None or (isinstance(eot, int) and eot < 0):
            raise LayerwiseError("the tokenizer has no end-of-text token: set tokenizer.eos_token")
        return int(eot)

    @property
    def device(self) -> torch.device:
        return self.lm.device

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "")).replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        key = (string, bool(add_special_tokens))
        ids = self._tok_cache.get(key)
        if ids is None:
            ids = list(self.tokenizer.encode(string, add_special_tokens=bool(add_special_tokens)))
            self._tok_cache[key] = ids
        return ids

    def tok_decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def _likelihood_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the likelihood functions of this model's family.

        AR likelihoods are exact: Monte-Carlo settings (``n_samples``, ``seed``) do not apply and the
        forward batch is this wrapper's ``batch_size``. Diffusion ones get ``loglikelihood_kwargs``
        as given (their ``batch_size`` is the Monte-Carlo batch).
        """
        if self.lm.family.is_diffusion:
            return dict(self.loglikelihood_kwargs)
        kw = {k: v for k, v in self.loglikelihood_kwargs.items() if k not in ("n_samples", "seed", "batch_size")}
        return {"batch_size": self.batch_size, **kw}

    # -- request types ------------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str], list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        """Score continuation ids after context ids, longest first (fewer pad tokens per batch).

        Contexts longer than the window are cut from the left, as lm-eval's HF model does.
        """
        prepared: list[tuple[list[int], list[int]]] = []
        for _, ctx, cont in requests:
            if not cont:
                raise LayerwiseError("an lm-eval request has an empty continuation: check the task's doc_to_target")
            cont = cont[-self.max_length:]
            ctx = ctx[max(0, len(ctx) + len(cont) - self.max_length):] if ctx else []
            if not ctx:  # lm-eval only gives an empty context after truncation: condition on end-of-text
                ctx = [self.prefix_token_id]
            prepared.append((ctx, cont))
        order = sorted(range(len(prepared)), key=lambda i: -(len(prepared[i][0]) + len(prepared[i][1])))
        out: list[tuple[float, bool] | None] = [None] * len(prepared)
        for s in tqdm(range(0, len(order), self.batch_size), desc="loglikelihood", disable=disable_tqdm,
                      leave=False):
            idx = order[s: s + self.batch_size]
            res = self.backend.loglikelihood(self.lm, [prepared[i][0] for i in idx], [prepared[i][1] for i in idx],
                                             **self._likelihood_kwargs())
            for i, r in zip(idx, res, strict=True):
                out[i] = (float(r[0]), bool(r[1]))
                self.cache_hook.add_partial("loglikelihood", requests[i][0], out[i])
        return out  # type: ignore[return-value]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole documents (windows of ``max_length``; ELBO for diffusion models).

        Every token is scored once; the first is conditioned on the end-of-text token (lm-eval's
        ``prefix_token_id``), later ones on up to ``max_length`` preceding tokens.
        """
        out = []
        kw = self._likelihood_kwargs()
        if not self.lm.family.is_diffusion:
            kw.pop("n_samples", None)
        for req in tqdm(requests, desc="loglikelihood_rolling", disable=disable_tqdm, leave=False):
            (text,) = req.args
            ll = float(self.backend.rolling_loglikelihood(self.lm, self.tok_encode(text), max_length=self.max_length,
                                                          prefix_token_id=self.prefix_token_id, **kw))
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), ll)
            out.append(ll)
        return out

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Generate for every request, batched by identical generation settings.

        Outputs are cut at the first stop string (the sampler may overrun it: the diffusion sampler
        always produces ``max_new_tokens`` tokens).
        """
        groups: dict[str, list[int]] = defaultdict(list)
        for i, req in enumerate(requests):
            groups[json.dumps(req.args[1], sort_keys=True, default=str)].append(i)
        out: list[str | None] = [None] * len(requests)
        eos = getattr(self.tokenizer, "eos_token", None)
        bar = tqdm(total=len(requests), desc="generate_until", disable=disable_tqdm, leave=False)
        for idxs in groups.values():
            gen_kwargs = dict(requests[idxs[0]].args[1])
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            if eos and eos not in until:
                until.append(eos)
            max_new = int(gen_kwargs.get("max_gen_toks", self.max_gen_toks))
            idxs = sorted(idxs, key=lambda i: -len(self.tok_encode(requests[i].args[0])))
            for s in range(0, len(idxs), self.batch_size):
                chunk = idxs[s: s + self.batch_size]
                prompts = [requests[i].args[0] for i in chunk]
                texts = self.backend.generate(self.lm, prompts, max_new_tokens=max_new, batch_size=self.batch_size,
                                              until=until, **{"progress": False, **self.sampler_kwargs})
                for i, text in zip(chunk, texts, strict=True):
                    out[i] = cut_at_stops(text, until)
                    self.cache_hook.add_partial("generate_until", requests[i].args, out[i])
                bar.update(len(chunk))
        bar.close()
        return out  # type: ignore[return-value]


def cut_at_stops(text: str, until: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest stop string."""
    cut = len(text)
    for stop in until:
        if stop:
            j = text.find(stop)
            if j != -1:
                cut = min(cut, j)
    return text[:cut]


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _answer_key(target: Any) -> str:
    """The final answer in a target (GSM8K solutions end with ``#### N``)."""
    s = str(target)
    return s.rsplit("#### ", 1)[-1].strip() if "#### " in s else s.strip()


def _chance(task: Any, metric: str, samples: list[dict]) -> float | None:
    """Score of a model with no information, per metric.

    - accuracy over choices (``multiple_choice``): mean of 1 / number of choices;
    - other accuracies and exact matches: the best constant answer, i.e. the frequency of the most
      common gold answer among the evaluated items (> 0, so "above chance" is testable);
    - likelihood metrics (perplexity, bits per byte): None, no chance level.
    """
    base = metric.split(",")[0]
    if not samples or not (base.startswith("acc") or base.startswith("exact_match")):
        return None
    if getattr(task, "OUTPUT_TYPE", None) == "multiple_choice":
        return float(np.mean([1.0 / max(len(s["arguments"]), 1) for s in samples]))
    counts = Counter(_answer_key(s["target"]) for s in samples)
    return counts.most_common(1)[0][1] / len(samples)


def evaluate(lm: LoadedModel | LayerwiseLM, tasks: str | Sequence[str] | TaskSet, *, limit: int | float | None = None,
             num_fewshot: int | Mapping[str, int] | None = None, batch_size: int = 8, seed: int = 0,
             data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
             params: TaskParams = TaskParams(), allow_code_execution: bool = False,
             **lm_kwargs: Any) -> dict[str, Any]:
    """Run lm-eval on an in-memory model; return metric values and per-item scores.

    Args:
        lm: a LoadedModel (wrapped with ``LayerwiseLM(lm, batch_size=..., **lm_kwargs)``) or an
            existing :class:`LayerwiseLM` (re-used, with its tokenisation cache).
        tasks: task names (local ``lw_*`` or lm-eval's) or a :class:`TaskSet` from :func:`load_tasks`.
        limit: first ``limit`` items per task (an int), or a fraction (a float < 1) as in lm-eval.
        allow_code_execution: let tasks that execute model-written code run (see :func:`load_tasks`;
            a :class:`TaskSet` carries its own permission).

    Returns a dict with, per task name:
        ``metrics[task][key]`` the aggregate (key ``"metric,filter"`` as lm-eval names it),
        ``items[task][key]`` the per-item values in document order (what lm-eval aggregates:
        floats, or ``(loglikelihood, weight)`` pairs for weighted perplexities),
        ``higher_is_better[task][key]``, ``chance[task][key]`` (see :func:`_chance`), ``n[task]``,
        ``aggregation[task][key]`` (lm-eval's aggregation callables, for bootstrapping),
        ``samples[task]`` lm-eval's logged samples, and ``lm_eval`` its raw results.
    """
    from lm_eval.evaluator import evaluate as lm_eval_evaluate

    wrapper = lm if isinstance(lm, LayerwiseLM) else LayerwiseLM(lm, batch_size=batch_size, **lm_kwargs)
    taskset = tasks if isinstance(tasks, TaskSet) else load_tasks(
        tasks, data_dir=data_dir, cache_dir=cache_dir, num_fewshot=num_fewshot, seed=seed, params=params,
        allow_code_execution=allow_code_execution)
    if limit is not None and (limit <= 0):
        raise LayerwiseError(f"limit must be positive (items per task, or a fraction < 1), got {limit}")
    _seed_everything(seed)
    for t in taskset.tasks.values():
        t.set_fewshot_seed(seed=seed)
    was_training = wrapper.lm.model.training
    wrapper.lm.model.eval()
    try:
        with torch.no_grad(), _code_execution(taskset.allow_code_execution):
            raw = lm_eval_evaluate(wrapper, {"tasks": taskset.tasks}, limit=limit, bootstrap_iters=0,
                                   log_samples=True, confirm_run_unsafe_code=taskset.allow_code_execution)
    finally:
        wrapper.lm.model.train(was_training)
    out: dict[str, Any] = {k: {} for k in ("metrics", "items", "higher_is_better", "chance", "n", "aggregation",
                                           "samples")}
    for name, task in taskset.tasks.items():
        samples = sorted(raw["samples"][name], key=lambda s: (s["filter"], s["doc_id"]))
        res = {k: v for k, v in raw["results"][name].items() if "," in k and "_stderr" not in k}
        agg, hib = task.aggregation(), task.higher_is_better()
        items: dict[str, list] = defaultdict(list)
        for s in samples:
            for m in s["metrics"]:
                items[f"{m},{s['filter']}"].append(s[m])
        out["metrics"][name] = res
        out["items"][name] = {k: items[k] for k in res}
        out["higher_is_better"][name] = {k: bool(hib.get(k.split(",")[0], True)) for k in res}
        out["aggregation"][name] = {k: agg[k.split(",")[0]] for k in res}
        by_filter = defaultdict(list)
        for s in samples:
            by_filter[s["filter"]].append(s)
        out["chance"][name] = {k: _chance(task, k, by_filter[k.split(",", 1)[1]]) for k in res}
        out["n"][name] = len(by_filter[next(iter(by_filter))]) if by_filter else 0
        out["samples"][name] = samples
    out["lm_eval"] = {k: raw.get(k) for k in ("results", "configs", "versions", "n-shot", "n-samples")}
    return out


# ---------------------------------------------------------------------------------------------
# Retention
# ---------------------------------------------------------------------------------------------


def retention_table(base: dict[str, Any], runs: Mapping[str, dict[str, Any]], *, n_boot: int = 1000, seed: int = 0,
                    alpha: float = 0.05) -> Any:
    """Retention of each run relative to ``base`` (outputs of :func:`evaluate` on the same items).

    Paired bootstrap: the same resampled item indices for the baseline and the run, so the interval
    reflects how item-level changes add up, not the spread of item difficulty. One row per
    (intervention, task, metric) with columns ``baseline``, ``value``, ``retention``, ``ci_low``,
    ``ci_high``, ``chance``, ``baseline_p`` (binomial test of the baseline against chance),
    ``meaningful`` (False when the baseline is not significantly above chance at level ``alpha``).
    """
    import pandas as pd

    rows = []
    for task, metrics in base["metrics"].items():
        n = base["n"][task]
        idx = bootstrap_indices(n, n_boot, seed)
        for key, bval in metrics.items():
            hib = base["higher_is_better"][task][key]
            chance = base["chance"][task][key]
            p = above_chance_pvalue(base["items"][task][key], chance)
            meaningful = bool(chance is None or (p == p and p < alpha))
            agg = base["aggregation"][task][key]
            for name, run in runs.items():
                if run["n"][task] != n:
                    raise LayerwiseError(f"{name!r} evaluated {run['n'][task]} items of {task}, the baseline {n}: "
                                         "use the same limit for every run")
                val = run["metrics"][task][key]
                lo, hi = paired_retention(agg, base["items"][task][key], run["items"][task][key], idx,
                                          higher_is_better=hib, level=1 - alpha)
                metric, _, filt = key.partition(",")
                rows.append({"intervention": name, "task": task, "metric": metric, "filter": filt,
                             "n": n, "baseline": bval, "value": val,
                             "retention": float(retention_ratio(val, bval, hib)), "ci_low": lo, "ci_high": hi,
                             "higher_is_better": hib, "chance": chance, "baseline_p": p,
                             "meaningful": meaningful})
    return pd.DataFrame(rows)


def retention(lm: LoadedModel | LayerwiseLM, interventions: Mapping[str, ContextManagerFactory],
              tasks: str | Sequence[str] | TaskSet, *, limit: int | float | None = None,
              num_fewshot: int | Mapping[str, int] | None = None, batch_size: int = 8, seed: int = 0,
              n_boot: int = 1000, alpha: float = 0.05, data_dir: str | os.PathLike | None = None,
              cache_dir: str | os.PathLike | None = None, params: TaskParams = TaskParams(),
              return_runs: bool = False, allow_code_execution: bool = False, **lm_kwargs: Any) -> Any:
    """Evaluate the unmodified model and each intervention; report retention with intervals.

    ``interventions`` maps a name to a zero-argument factory of a context manager that modifies
    the model in place and restores it on exit (``lambda: skip_layers(lm, [3, 4])``). The model,
    the lm-eval tasks and the tokenisation cache are built once and re-used for every run; the
    seed is reset before each run so that stochastic estimates (diffusion Monte-Carlo) use the same
    draws. Returns :func:`retention_table`'s DataFrame, with an ``"unmodified"`` row block (the
    baseline against itself: retention 1, interval [1, 1]); with ``return_runs=True`` also the
    dict of :func:`evaluate` outputs keyed by run name.
    """
    if "unmodified" in interventions:
        raise LayerwiseError("'unmodified' is the baseline's name: call your intervention something else")
    wrapper = lm if isinstance(lm, LayerwiseLM) else LayerwiseLM(lm, batch_size=batch_size, **lm_kwargs)
    taskset = tasks if isinstance(tasks, TaskSet) else load_tasks(
        tasks, data_dir=data_dir, cache_dir=cache_dir, num_fewshot=num_fewshot, seed=seed, params=params,
        allow_code_execution=allow_code_execution)
    runs: dict[str, dict[str, Any]] = {}
    for name, factory in tqdm([("unmodified", contextlib.nullcontext), *interventions.items()],
                              desc="interventions", leave=False):
        with factory():
            runs[name] = evaluate(wrapper, taskset, limit=limit, seed=seed)
    table = retention_table(runs["unmodified"], runs, n_boot=n_boot, seed=seed, alpha=alpha)
    return (table, runs) if return_runs else table
