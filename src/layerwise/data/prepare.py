"""Training streams and held-out sequences: a :class:`DataSpec` is prepared into packed token rows
cached on disk as ``.npy`` (keyed by the hash of corpus and tokenizer), with one seeded data order
shared by all three objectives; held-out windows for probes and calibration come from the same
sources."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import LayerwiseError, data_file, progress_disabled
from ..config import cache_dir as _cache_dir
from .arithmetic import ARITH_DIGITS, arithmetic_documents
from .corpora import (
    EOT,
    GUTENBERG_HELDOUT,
    GUTENBERG_TRAIN,
    _sha,
    file_sha256,
    iter_xz_chunks,
    read_xz_text,
    synthetic_documents,
)
from .tokenizer import _id_dtype, encode, tokenizer_sha, train_tokenizer

Source = Literal["synthetic", "gutenberg"]
SOURCES: tuple[str, ...] = ("synthetic", "gutenberg")
#: preset name -> corpus source, so that chapters can pass their ``preset`` parameter
PRESET_SOURCES: dict[str, str] = {"tiny": "synthetic", "test": "synthetic", "gpu": "gutenberg"}


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
            bar = tqdm(iter_xz_chunks(train_file), desc="decompress gutenberg", unit="chunk",
                       disable=progress_disabled(not progress))
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
