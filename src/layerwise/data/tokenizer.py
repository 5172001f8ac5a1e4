"""The byte-level BPE tokenizer (``tokenizers``) with ``<|endoftext|>``, ``<|pad|>``, ``<|mask|>``,
and encoding of text into flat token arrays."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .corpora import EOT, MASK, PAD, SPECIAL_TOKENS, _sha

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast


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
    from ..diffusion import mask_token_id

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
