"""Training and evaluation data for the controlled triplet.

What lives here:

- a deterministic synthetic English-like corpus (the ``tiny`` profile needs no files);
- the Gutenberg corpus from the data directory (``corpus/gutenberg-train-200MB.txt.xz`` and the
  held-out ``corpus/gutenberg-heldout-10MB.txt.xz``), stream-decompressed;
- the arithmetic task ("Question: What is 347 + 58? Answer: 405" and templated word problems) that
  is mixed into pretraining at a few percent of sequences, with a held-out split that never occurs
  in training (a hash bucket of the question string is reserved);
- the byte-level BPE tokenizer (``tokenizers``) with ``<|endoftext|>``, ``<|pad|>``, ``<|mask|>``;
- token arrays cached on disk as ``.npy`` keyed by the hash of (corpus, tokenizer.json), packed
  into fixed-length rows, and one seeded data order shared by all three objectives.

Shapes: a packed corpus is ``rows[n_rows, seq_len]`` (uint16 when the vocabulary fits, else int32);
a batch is ``LongTensor[batch, seq_len]``.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import random
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import LayerwiseError, data_file
from .config import cache_dir as _cache_dir

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

EOT, PAD, MASK = "<|endoftext|>", "<|pad|>", "<|mask|>"
SPECIAL_TOKENS = (EOT, PAD, MASK)

GUTENBERG_TRAIN = "corpus/gutenberg-train-200MB.txt.xz"
GUTENBERG_HELDOUT = "corpus/gutenberg-heldout-10MB.txt.xz"

Source = Literal["synthetic", "gutenberg"]
SOURCES: tuple[str, ...] = ("synthetic", "gutenberg")
#: preset name -> corpus source, so that chapters can pass their ``preset`` parameter
PRESET_SOURCES: dict[str, str] = {"tiny": "synthetic", "test": "synthetic", "gpu": "gutenberg"}


def _sha(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Synthetic English-like corpus
# ---------------------------------------------------------------------------------------------

_PEOPLE = [("Tom", "he"), ("Anna", "she"), ("Ben", "he"), ("Lucy", "she"), ("Sam", "he"), ("Mia", "she"),
           ("Jack", "he"), ("Emma", "she"), ("Leo", "he"), ("Nora", "she"), ("Max", "he"), ("Ruth", "she"),
           ("Paul", "he"), ("Ella", "she"), ("Omar", "he"), ("Iris", "she")]
_PLACES = ["river", "market", "forest", "garden", "village", "school", "harbour", "hill", "library",
           "kitchen", "station", "bridge", "field", "castle", "shop", "lake"]
_OBJECTS = ["apple", "book", "lamp", "stone", "letter", "basket", "coin", "shell", "candle", "key",
            "flower", "ribbon", "map", "bottle", "feather", "clock"]
_ADJS = ["red", "old", "small", "bright", "heavy", "quiet", "strange", "green", "warm", "broken",
         "golden", "tiny", "dark", "soft", "round", "new"]
_WEATHER = ["sunny", "cold", "rainy", "windy", "grey", "calm", "bright", "foggy"]
_SEASONS = ["spring", "summer", "autumn", "winter"]
_FEELINGS = ["happy", "tired", "curious", "sad", "proud", "afraid", "calm", "surprised"]
_VERBS_GO = ["walked", "ran", "went", "hurried", "wandered", "rode"]
_NUMBER_WORDS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve"]


def _story(rng: random.Random) -> str:
    """One short story: a protagonist, a friend, a place and an object, with consistent pronouns.

    The grammar is small on purpose: a tiny model can learn agreement (name -> pronoun), copying
    (the object found early is named again later) and counting words, which gives the layer-wise
    chapters something non-trivial to look at.
    """
    (a, pa), (b, pb) = rng.sample(_PEOPLE, 2)
    place, place2 = rng.sample(_PLACES, 2)
    obj = rng.choice(_OBJECTS)
    adj = rng.choice(_ADJS)
    cap = str.capitalize
    s = [
        f"It was a {rng.choice(_WEATHER)} day in {rng.choice(_SEASONS)}.",
        f"{a} {rng.choice(_VERBS_GO)} to the {place}.",
        f"There {pa} found a {adj} {obj} near the {rng.choice(_PLACES)}.",
        f"{cap(pa)} felt {rng.choice(_FEELINGS)}.",
    ]
    n = rng.choice(_NUMBER_WORDS)
    extra = [
        f"{a} met {b} at the {place2}, and {pb} asked about the {obj}.",
        f"\"Where did you find the {adj} {obj}?\" asked {b}.",
        f"\"I found it near the {place},\" said {a}.",
        f"{b} counted {n} {rng.choice(_OBJECTS)}s in a {rng.choice(_ADJS)} basket.",
        f"{cap(pa)} gave the {obj} to {b}, and {pb} smiled.",
        f"Later, {a} and {b} {rng.choice(_VERBS_GO)} to the {rng.choice(_PLACES)} together.",
        f"The {obj} was {rng.choice(_ADJS)}, so {a} kept it in a {rng.choice(_OBJECTS)} box.",
        f"When the sun went down, {b} went home and {pa} stayed at the {place2}.",
    ]
    k = rng.randint(2, len(extra))
    s += extra[:k]
    s.append(f"In the end, {a} was {rng.choice(_FEELINGS)} and {b} was {rng.choice(_FEELINGS)}.")
    cut = rng.randint(2, len(s) - 1)  # two paragraphs, as in the Gutenberg text
    return " ".join(s[:cut]) + "\n\n" + " ".join(s[cut:])


def synthetic_documents(n_docs: int, seed: int = 0, split: Literal["train", "heldout"] = "train") -> Iterator[str]:
    """``n_docs`` deterministic synthetic stories; ``split`` draws from an independent stream."""
    rng = random.Random(f"synthetic-{split}-{seed}")
    for _ in range(n_docs):
        yield _story(rng)


# ---------------------------------------------------------------------------------------------
# Arithmetic task
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Gutenberg
# ---------------------------------------------------------------------------------------------


def read_xz_text(path: Path, max_bytes: int | None = None) -> str:
    """Stream-decompress an .xz text file, stopping after about ``max_bytes`` (at a line end)."""
    with lzma.open(path, "rt", encoding="utf-8") as f:
        if max_bytes is None:
            return f.read()
        text = f.read(max_bytes)
        return text + f.readline()


def iter_xz_chunks(path: Path, chunk_chars: int = 1 << 22) -> Iterator[str]:
    """Yield ~``chunk_chars`` pieces of a decompressed .xz file, each ending at a line break."""
    with lzma.open(path, "rt", encoding="utf-8") as f:
        while True:
            piece = f.read(chunk_chars)
            if not piece:
                return
            yield piece + f.readline()


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------


def train_tokenizer(texts: Iterable[str], vocab_size: int, split_digits: bool = True) -> PreTrainedTokenizerFast:
    """Byte-level BPE (``tokenizers``) with ``<|endoftext|>`` (bos/eos), ``<|pad|>``, ``<|mask|>``.

    ``split_digits``: every digit is its own token (as in LLaMA's and Qwen's tokenizers), so that a
    number's place values line up with token positions; without it a 16k BPE cuts ``" 7889"`` into
    ``" 7" "88" "9"`` and arithmetic stays at chance. The same input gives a byte-identical
    ``tokenizer.json`` (BPE training is deterministic in ``tokenizers``: ties are broken by pair
    order, not by hashing).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                         if split_digits else byte_level)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return wrap_tokenizer(tok)


def wrap_tokenizer(tok: Any) -> PreTrainedTokenizerFast:
    """A ``tokenizers.Tokenizer`` as a transformers tokenizer that ``AutoTokenizer`` reloads."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, pad_token=PAD,
                                   mask_token=MASK, unk_token=None, model_max_length=1 << 30)


def require_mask_token(tokenizer: Any, objective: str) -> int:
    """The mask id a diffusion objective needs; error if the tokenizer has none
    (:func:`layerwise.diffusion.mask_token_id`)."""
    from .diffusion import mask_token_id

    return mask_token_id(tokenizer, purpose=f"objective {str(objective)!r}", alternative="objective='ar'")


def encode(tokenizer: Any, texts: Sequence[str], batch: int = 4096) -> np.ndarray:
    """Token ids of the concatenated ``texts`` (each already ending in its separator), flat int64.

    Uses the Rust tokenizer's parallel ``encode_batch`` (transformers tokenizers expose it as
    ``backend_tokenizer``); no special tokens are added.
    """
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    parts: list[np.ndarray] = []
    for i in range(0, len(texts), batch):
        encs = backend.encode_batch(list(texts[i:i + batch]), add_special_tokens=False)
        parts.extend(np.asarray(e.ids, dtype=np.int64) for e in encs)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _id_dtype(vocab_size: int) -> type:
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32


def tokenizer_sha(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    return _sha(backend.to_str().encode())


# ---------------------------------------------------------------------------------------------
# Data specification, preparation and order
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSpec:
    """Everything that defines a training token stream (part of a run's config hash)."""

    source: Source = "synthetic"
    vocab_size: int = 512
    seq_len: int = 128
    seed: int = 0
    #: fraction of training rows that are arithmetic documents
    arith_frac: float = 0.04
    #: synthetic corpus size (stories); ignored for gutenberg
    synthetic_docs: int = 4000
    #: characters of training text the BPE is trained on (its head; gutenberg: the first ~50 MB)
    tokenizer_train_bytes: int = 50_000_000
    #: one token per digit (see :func:`train_tokenizer`)
    split_digits: bool = True
    #: gutenberg only: cap on decompressed training characters (None = the whole file)
    max_train_chars: int | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise LayerwiseError(f"unknown data source {self.source!r}: use one of {SOURCES}")
        if not 0.0 <= self.arith_frac < 1.0:
            raise LayerwiseError(f"arith_frac={self.arith_frac} must be in [0, 1)")


@dataclass
class TrainData:
    """A packed training corpus: text rows then arithmetic rows, and a seeded order over them."""

    spec: DataSpec
    tokenizer: Any
    text_rows: np.ndarray  # [n_text, seq_len]
    arith_rows: np.ndarray  # [n_arith, seq_len]
    info: dict[str, Any]

    @property
    def n_rows(self) -> int:
        return len(self.text_rows) + len(self.arith_rows)

    def order(self, epoch: int) -> np.ndarray:
        """Permutation of all rows for one epoch: a function of (seed, epoch) only."""
        return np.random.default_rng([self.spec.seed, epoch]).permutation(self.n_rows)

    def indices(self, start: int, count: int) -> np.ndarray:
        """Row indices of the global sequence positions ``start .. start+count-1``.

        Positions run over epochs; every objective reads the same positions at the same step, so
        the three models see identical data in identical order.
        """
        out = np.empty(count, dtype=np.int64)
        pos, k = start, 0
        while k < count:
            epoch, off = divmod(pos, self.n_rows)
            take = min(count - k, self.n_rows - off)
            out[k:k + take] = self.order(epoch)[off:off + take]
            pos, k = pos + take, k + take
        return out

    def rows(self, idx: np.ndarray) -> torch.Tensor:
        """``LongTensor[len(idx), seq_len]`` of the given row indices."""
        n_text = len(self.text_rows)
        out = np.empty((len(idx), self.spec.seq_len), dtype=np.int64)
        is_text = idx < n_text
        out[is_text] = self.text_rows[idx[is_text]]
        out[~is_text] = self.arith_rows[idx[~is_text] - n_text]
        return torch.from_numpy(out)

    def batch(self, start: int, count: int) -> torch.Tensor:
        return self.rows(self.indices(start, count))

    def decode_all(self, which: Literal["text", "arith", "all"] = "all") -> str:
        """The whole training stream as text (tests use it to check what training contains)."""
        arrs = {"text": [self.text_rows], "arith": [self.arith_rows],
                "all": [self.text_rows, self.arith_rows]}[which]
        return "".join(self.tokenizer.decode(a.reshape(-1).tolist()) for a in arrs)


def _pack(ids: np.ndarray, seq_len: int, dtype: type) -> np.ndarray:
    """Cut a flat stream into ``[n, seq_len]`` rows (the ragged tail is dropped)."""
    n = len(ids) // seq_len
    return ids[: n * seq_len].astype(dtype).reshape(n, seq_len)


def _cached_array(path: Path, build: Any, progress: bool) -> np.ndarray:
    if path.is_file():
        return np.load(path, mmap_mode="r")
    arr = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, arr)
    tmp.replace(path)
    return np.load(path, mmap_mode="r")


def _head(pieces: list[str], max_chars: int) -> list[str]:
    """The leading pieces holding about ``max_chars`` characters (what the BPE is trained on)."""
    total, k = 0, 0
    while k < len(pieces) and total < max_chars:
        total += len(pieces[k])
        k += 1
    return pieces[:k]


def _split_docs(text: str) -> list[str]:
    """Paragraph pieces (each keeps its trailing separator) so that encode_batch can parallelise."""
    pieces = text.split("\n\n")
    return [p + "\n\n" for p in pieces[:-1]] + ([pieces[-1]] if pieces[-1] else [])


def prepare(spec: DataSpec, *, data_dir: str | os.PathLike | None = None,
            cache_dir: str | os.PathLike | None = None, progress: bool = True) -> TrainData:
    """Tokenizer and packed token rows for ``spec``, built once and cached under ``<cache>/data``.

    - tokenizer: ``<cache>/data/tokenizers/<key>/`` keyed by (corpus, vocab size, bytes used);
    - text tokens: ``<cache>/data/tokens/<sha(corpus, tokenizer.json)>.npy`` (flat);
    - arithmetic tokens: keyed by (arithmetic params, tokenizer.json).
    """
    from transformers import AutoTokenizer

    root = _cache_dir(cache_dir) / "data"
    dtype = _id_dtype(spec.vocab_size)
    info: dict[str, Any] = {"source": spec.source}
    if spec.source == "synthetic":
        corpus_key = _sha("synthetic", spec.synthetic_docs, spec.seed)

        def corpus_pieces() -> list[str]:
            return [d + EOT for d in synthetic_documents(spec.synthetic_docs, spec.seed, "train")]

        def tok_texts() -> list[str]:
            return _head(corpus_pieces(), spec.tokenizer_train_bytes)
        info.update(synthetic_docs=spec.synthetic_docs)
    else:
        train_file = data_file(GUTENBERG_TRAIN, data_dir)
        corpus_sha = file_sha256(train_file)
        corpus_key = _sha("gutenberg", corpus_sha, spec.max_train_chars)
        info.update(train_file=GUTENBERG_TRAIN, train_sha256=corpus_sha, max_train_chars=spec.max_train_chars)

        def corpus_pieces() -> list[str]:
            pieces: list[str] = []
            total = 0
            bar = tqdm(iter_xz_chunks(train_file), desc="decompress gutenberg", unit="chunk", disable=not progress)
            for chunk in bar:
                pieces.extend(_split_docs(chunk))
                total += len(chunk)
                if spec.max_train_chars is not None and total >= spec.max_train_chars:
                    break
            return pieces

        def tok_texts() -> list[str]:
            return _split_docs(read_xz_text(train_file, spec.tokenizer_train_bytes))

    tok_dir = root / "tokenizers" / _sha(corpus_key, spec.vocab_size, spec.tokenizer_train_bytes,
                                         *(["split_digits"] if spec.split_digits else []))[:16]
    if not (tok_dir / "tokenizer.json").is_file():
        tok = train_tokenizer(tok_texts(), spec.vocab_size, split_digits=spec.split_digits)
        tmp = tok_dir.with_name(tok_dir.name + f".tmp{os.getpid()}")
        tok.save_pretrained(tmp)
        try:
            tmp.replace(tok_dir)
        except OSError:  # another process saved the same (byte-identical) tokenizer first
            shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    tsha = tokenizer_sha(tokenizer)

    text_path = root / "tokens" / f"{_sha(corpus_key, tsha)[:24]}.npy"
    text_flat = _cached_array(text_path, lambda: encode(tokenizer, corpus_pieces()).astype(dtype), progress)
    text_rows = _pack(np.asarray(text_flat), spec.seq_len, dtype)

    n_arith_rows = int(round(spec.arith_frac / (1 - spec.arith_frac) * len(text_rows)))
    arith_key = _sha("arith", spec.seed, n_arith_rows, spec.seq_len, tsha, ARITH_DIGITS)[:24]
    arith_path = root / "tokens" / f"{arith_key}.npy"

    def build_arith() -> np.ndarray:
        need = n_arith_rows * spec.seq_len
        ids: list[np.ndarray] = []
        have, block = 0, 0
        while have < need:  # problems average ~20 tokens; generate in blocks until enough
            docs = [d + "\n" + EOT for d in arithmetic_documents(max(64, need // 100), seed=1000 * block + spec.seed)]
            arr = encode(tokenizer, docs)
            ids.append(arr)
            have += len(arr)
            block += 1
        return np.concatenate(ids)[:need].astype(dtype) if ids else np.zeros(0, dtype)

    arith_flat = _cached_array(arith_path, build_arith, progress) if n_arith_rows else np.zeros(0, dtype)
    arith_rows = _pack(np.asarray(arith_flat), spec.seq_len, dtype)
    info.update(tokenizer_sha=tsha, text_tokens=int(text_rows.size), arith_rows=int(len(arith_rows)),
                text_rows=int(len(text_rows)), vocab_size=len(tokenizer), token_cache=str(text_path.name))
    return TrainData(spec, tokenizer, text_rows, arith_rows, info)


# ---------------------------------------------------------------------------------------------
# Held-out sequences for probes and calibration
# ---------------------------------------------------------------------------------------------


def _source_of(preset_or_source: str) -> str:
    src = PRESET_SOURCES.get(preset_or_source, preset_or_source)
    if src not in SOURCES:
        raise LayerwiseError(
            f"unknown preset or data source {preset_or_source!r}: use a preset {sorted(PRESET_SOURCES)} "
            f"or a source {SOURCES}"
        )
    return src


def eval_sequences(tokenizer: Any, preset_or_source: str, n_seqs: int, seq_len: int, *,
                   data_dir: str | os.PathLike | None = None, seed: int = 0,
                   cache_dir: str | os.PathLike | None = None) -> torch.Tensor:
    """``LongTensor[n_seqs, seq_len]`` of held-out text (never seen in training).

    ``tiny``/``synthetic``: stories from the synthetic held-out stream; ``gpu``/``gutenberg``:
    windows of ``corpus/gutenberg-heldout-10MB.txt.xz`` (tokenized once per tokenizer and cached),
    picked at seeded random offsets. Works with any transformers tokenizer (hub models too).
    """
    src = _source_of(preset_or_source)
    need = n_seqs * seq_len
    if src == "synthetic":
        docs: list[str] = []
        ids = np.zeros(0, dtype=np.int64)
        gen = synthetic_documents(10**9, seed=seed, split="heldout")
        while len(ids) < need:  # stories are ~100 tokens: encode in growing blocks
            docs = [next(gen) + EOT for _ in range(max(16, (need - len(ids)) // 40))]
            ids = np.concatenate([ids, encode(tokenizer, docs)])
        return torch.from_numpy(ids[:need].astype(np.int64).reshape(n_seqs, seq_len))
    f = data_file(GUTENBERG_HELDOUT, data_dir)
    key = _sha(file_sha256(f), tokenizer_sha(tokenizer))[:24]
    path = _cache_dir(cache_dir) / "data" / "tokens" / f"heldout-{key}.npy"
    flat = np.asarray(_cached_array(path, lambda: encode(tokenizer, _split_docs(read_xz_text(f))).astype(np.int32),
                                    False))
    n_windows = len(flat) // seq_len
    if n_windows < n_seqs:
        raise LayerwiseError(f"the held-out corpus has {n_windows} windows of {seq_len} tokens, fewer than "
                             f"n_seqs={n_seqs}: ask for fewer or shorter sequences")
    pick = np.sort(np.random.default_rng(seed).choice(n_windows, size=n_seqs, replace=False))
    return torch.from_numpy(flat[: n_windows * seq_len].reshape(n_windows, seq_len)[pick].astype(np.int64))


def calibration_sequences(tokenizer: Any, preset_or_source: str, n_seqs: int, seq_len: int, *,
                          data_dir: str | os.PathLike | None = None, seed: int = 0,
                          cache_dir: str | os.PathLike | None = None) -> torch.Tensor:
    """Calibration data for compression: held-out text as :func:`eval_sequences`, another seed
    stream (so calibration and evaluation windows differ)."""
    return eval_sequences(tokenizer, preset_or_source, n_seqs, seq_len, data_dir=data_dir,
                          seed=1_000_003 + seed, cache_dir=cache_dir)
