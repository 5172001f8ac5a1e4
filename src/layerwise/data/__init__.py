"""Training and evaluation data for the controlled triplet.

What lives here (one module each):

- a deterministic synthetic English-like corpus (the ``tiny`` profile needs no files);
- the Gutenberg corpus from the data directory (``corpus/gutenberg-train-200MB.txt.xz`` and the
  held-out ``corpus/gutenberg-heldout-10MB.txt.xz``), stream-decompressed;
- the arithmetic task ("Question: What is 347 + 58? Answer: 405" and templated word problems) that
  is mixed into pretraining at a few percent of sequences, with a held-out split that never occurs
  in training (a hash bucket of the question string is reserved);
- evaluation tasks from the synthetic held-out stories (rolling log-likelihood passages and
  multiple choice in ARC's format), so that the ``tiny`` profile's evaluations need no data directory;
- the manifest of the real data files (benchmarks, Gutenberg corpus: public sources and sha256) and
  their download and verification (``layerwise.data.fetch``, ``layerwise-book data fetch``);
- the byte-level BPE tokenizer (``tokenizers``) with ``<|endoftext|>``, ``<|pad|>``, ``<|mask|>``;
- token arrays cached on disk as ``.npy`` keyed by the hash of (corpus, tokenizer.json), packed
  into fixed-length rows, and one seeded data order shared by all three objectives.

Shapes: a packed corpus is ``rows[n_rows, seq_len]`` (uint16 when the vocabulary fits, else int32);
a batch is ``LongTensor[batch, seq_len]``.
"""

from __future__ import annotations

from .arithmetic import (
    ARITH_DIGITS,
    ARITH_TEMPLATE,
    HELDOUT_BUCKETS,
    arithmetic_documents,
    arithmetic_fewshot,
    arithmetic_heldout,
    arithmetic_problems,
    format_problem,
    is_heldout_question,
)
from .corpora import (
    EOT,
    GUTENBERG_HELDOUT,
    GUTENBERG_TRAIN,
    MASK,
    PAD,
    SPECIAL_TOKENS,
    file_sha256,
    iter_xz_chunks,
    read_xz_text,
    synthetic_documents,
)
from .corpora import _sha as _sha  # the training code hashes its configuration with it
from .prepare import (
    PRESET_SOURCES,
    SOURCES,
    DataSpec,
    Source,
    TrainData,
    calibration_sequences,
    eval_sequences,
    prepare,
)
from .story_tasks import story_choices, story_passages
from .tokenizer import encode, require_mask_token, tokenizer_sha, train_tokenizer, wrap_tokenizer

__all__ = [
    "EOT", "PAD", "MASK", "SPECIAL_TOKENS", "GUTENBERG_TRAIN", "GUTENBERG_HELDOUT", "file_sha256",
    "synthetic_documents", "read_xz_text", "iter_xz_chunks", "ARITH_TEMPLATE", "HELDOUT_BUCKETS",
    "is_heldout_question", "ARITH_DIGITS", "arithmetic_problems", "format_problem", "arithmetic_fewshot",
    "arithmetic_heldout", "arithmetic_documents", "train_tokenizer", "wrap_tokenizer", "require_mask_token",
    "encode", "tokenizer_sha", "Source", "SOURCES", "PRESET_SOURCES", "DataSpec", "TrainData", "prepare",
    "eval_sequences", "calibration_sequences", "story_passages", "story_choices",
]
