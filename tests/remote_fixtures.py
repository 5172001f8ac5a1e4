"""Chapter-ready tiny checkpoints of the genuine LLaDA and Dream remote code, laid out as the hub repos
are: ``config.json`` with ``auto_map``, the ``.py`` files, ``generation_config.json`` (Dream),
``model.safetensors`` and a small byte-level BPE tokenizer whose mask token is in the vocabulary.

Built on the hub-folder helpers of :mod:`oracles.remote_code` (the genuine files stay in
``../shared/remote_code``, copied at test time into temporary folders, never into the repository);
tests that need them are marked :data:`needs_remote_code` and skip with the reason where it is absent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch

from oracles.remote_code import REMOTE_CODE, genuine_class, hub_folder, needs_remote_code, tiny_config

__all__ = ["REMOTE_CODE", "chapter_checkpoint", "needs_remote_code", "tiny_tokenizer"]

Which = Literal["llada", "dream"]


def tiny_tokenizer(vocab_size: int = 300) -> Any:
    """A byte-level BPE (``<|endoftext|>``, ``<|pad|>``, ``<|mask|>``) trained on the project's synthetic
    stories; deterministic; ``len(tokenizer) <= vocab_size``."""
    from layerwise.data import synthetic_documents, train_tokenizer

    return train_tokenizer(list(synthetic_documents(400, seed=0)), vocab_size)


def _sizes(which: Which, layers: int, width: int) -> dict[str, Any]:
    if which == "llada":
        return {"d_model": width, "n_layers": layers, "mlp_hidden_size": 2 * width, "max_sequence_length": 512}
    return {"hidden_size": width, "num_hidden_layers": layers, "intermediate_size": 2 * width,
            "max_position_embeddings": 512, "max_window_layers": layers, "rope_theta": 1000000.0,
            "tie_word_embeddings": False, "use_sliding_window": False}


def chapter_checkpoint(out: Path, which: Which, *, tokenizer: Any = None, layers: int = 4, width: int = 64,
                       pad_vocab_to: int = 64, modeling: str | None = None, with_tokenizer: bool = True,
                       seed: int = 0, config_changes: dict[str, Any] | None = None) -> Path:
    """Write a hub-like checkpoint of the genuine ``which`` code with random weights and a tokenizer to ``out``.

    The embedding has ``len(tokenizer)`` rows rounded up to a multiple of ``pad_vocab_to``, as the real
    models pad theirs (LLaDA: 126464 rows for its tokenizer's 126349 ids; Dream: 152064 for 151667); the
    config's ``mask_token_id``, ``eos_token_id`` and ``pad_token_id`` are the tokenizer's. ``modeling``:
    another genuine LLaDA modeling file installed as ``modeling_llada.py`` (``"modeling_llada.hub-2025-06.py"``).
    ``config_changes`` are written into config.json last (the weights are built from the config before
    them). Returns ``out``.
    """
    tok = tokenizer if tokenizer is not None else tiny_tokenizer()
    vocab = -(-len(tok) // pad_vocab_to) * pad_vocab_to
    ids = {"mask_token_id": tok.mask_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    if which == "dream":
        ids["bos_token_id"] = tok.eos_token_id
    cfg = tiny_config(which, vocab, **_sizes(which, layers, width), **ids)
    hub_folder(out, which, cfg, modeling=modeling)
    config, cls, arch = genuine_class(out)
    torch.manual_seed(seed)
    model = cls(config).eval()
    arch.patches.apply_model(model)
    model.save_pretrained(out)
    # as on the hub: the config.json as written (not re-serialised), the hub's generation_config.json with
    # the tiny tokenizer's ids in place of the real ones
    (out / "config.json").write_text(json.dumps({**cfg, **(config_changes or {})}, indent=2))
    gen = json.loads((REMOTE_CODE / which / "generation_config.json").read_text())
    gen.update({k: tok.eos_token_id for k in ("bos_token_id", "eos_token_id")},
               **({"pad_token_id": tok.pad_token_id} if "pad_token_id" in gen else {}))
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2))
    if with_tokenizer:
        tok.save_pretrained(out)
    return out
