"""Evaluation tasks made from the synthetic corpus's held-out stories (the ``tiny`` profile's
likelihood tasks: no data directory needed).

- :func:`story_passages`: ``{"text": story}``, one held-out story per item, for rolling
  log-likelihood (the format of the Gutenberg task ``lw_gutenberg``);
- :func:`story_choices`: multiple choice in the format of ``benchmarks/arc_easy.jsonl``
  (``{"query", "choices", "gold"}``): a held-out story cut right before the object found earlier is
  named again ("... and she asked about the"), the object and three other objects as choices. A
  model that learned to copy the story's object answers it; chance is 1/4.

Both come from :func:`~layerwise.data.synthetic_documents`'s ``heldout`` stream, never from training.
"""

from __future__ import annotations

import random
import re

from .corpora import _OBJECTS, synthetic_documents

N_CHOICES = 4
#: the object of a story: "There she found a green key near ..."
_FOUND = re.compile(r"There (?:he|she) found a (\w+) (\w+) near")
#: where the object is named again (always in the story: the first of its optional sentences)
_CUE = "asked about the"


def story_passages(n: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` held-out stories as ``{"text": ...}`` rows."""
    return [{"text": d} for d in synthetic_documents(n, seed=seed, split="heldout")]


def story_choices(n: int, seed: int = 0) -> list[dict[str, object]]:
    """``n`` multiple-choice items ``{"query", "choices", "gold"}`` from held-out stories.

    The stories are another seed stream than :func:`story_passages` (``seed + 1``), the choices'
    order is seeded, and the gold position is uniform over the four.
    """
    rng = random.Random(f"story-choices-{seed}")
    rows: list[dict[str, object]] = []
    for story in synthetic_documents(n, seed=seed + 1, split="heldout"):
        m = _FOUND.search(story)
        cue = story.find(_CUE, m.end()) if m else -1
        if m is None or cue < 0:  # every story of the grammar has both: a changed grammar must fail here
            raise RuntimeError(f"story without its object cue: {story[:80]!r}")
        obj = m.group(2)
        choices = [obj, *rng.sample([o for o in _OBJECTS if o != obj], N_CHOICES - 1)]
        rng.shuffle(choices)
        rows.append({"query": story[: cue + len(_CUE)], "choices": choices, "gold": choices.index(obj)})
    return rows
