"""The corpora: special tokens, the deterministic synthetic English-like stories (the ``tiny``
profile needs no files) and the Gutenberg files of the data directory, stream-decompressed."""

from __future__ import annotations

import hashlib
import json
import lzma
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

EOT, PAD, MASK = "<|endoftext|>", "<|pad|>", "<|mask|>"
SPECIAL_TOKENS = (EOT, PAD, MASK)

GUTENBERG_TRAIN = "corpus/gutenberg-train-200MB.txt.xz"
GUTENBERG_HELDOUT = "corpus/gutenberg-heldout-10MB.txt.xz"


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
