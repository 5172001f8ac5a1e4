"""Evaluation tasks made from the synthetic corpus's held-out stories (the ``tiny`` profile's
likelihood tasks: no data directory needed).

- :func:`story_passages`: ``{"text": story}``, one held-out story per item, for rolling
  log-likelihood (the format of the Gutenberg task ``lw_gutenberg``);
- :func:`story_choices`: multiple choice in the format of ``benchmarks/arc_easy.jsonl``
  (``{"query", "choices", "gold"}``) on held-out stories, two kinds alternating: *pronoun*, the story
  cut right before the pronoun of the friend just named ("Anna met Ben at the market, and" -> he /
  she: agreement), and *object*, cut right before the object named again ("\"Where did you find the
  green" -> key, or three other objects: copying). Chance is 1/2 and 1/4; the trained tiny ``ar``
  model gets nearly every pronoun and about half of the objects.

Both come from :func:`~layerwise.data.synthetic_documents`'s ``heldout`` stream, never from training.
"""

from __future__ import annotations

import random
import re

from .corpora import _OBJECTS, _PEOPLE, synthetic_documents

N_OBJECT_CHOICES = 4
#: the protagonist's object: "There she found a green key near ..."
_FOUND = re.compile(r"There (?:he|she) found a (\w+) (\w+) near")
#: the friend, right before their pronoun: "... met Ben at the market, and"
_MET = re.compile(r"met (\w+) at the \w+, and")
_PRONOUN = dict(_PEOPLE)


def story_passages(n: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` held-out stories as ``{"text": ...}`` rows."""
    return [{"text": d} for d in synthetic_documents(n, seed=seed, split="heldout")]


def story_choices(n: int, seed: int = 0) -> list[dict[str, object]]:
    """``n`` multiple-choice items ``{"query", "choices", "gold", "kind"}`` from held-out stories.

    Even items are ``pronoun`` (2 choices), odd ones ``object`` (4 choices). The stories are another
    seed stream than :func:`story_passages` (``seed + 1``); the choices' order is seeded.
    """
    rng = random.Random(f"story-choices-{seed}")
    rows: list[dict[str, object]] = []
    for k, story in enumerate(synthetic_documents(n, seed=seed + 1, split="heldout")):
        found, met = _FOUND.search(story), _MET.search(story)
        if found is None or met is None:  # every story of the grammar has both: a changed grammar fails here
            raise RuntimeError(f"story without its cues: {story[:80]!r}")
        if k % 2 == 0:
            kind, query, answer, choices = "pronoun", story[: met.end()], _PRONOUN[met.group(1)], ["he", "she"]
        else:
            adj, answer = found.group(1), found.group(2)
            cue = f'"Where did you find the {adj}'
            query = story[: story.index(cue, found.end()) + len(cue)]
            kind = "object"
            choices = [answer, *rng.sample([o for o in _OBJECTS if o != answer], N_OBJECT_CHOICES - 1)]
        rng.shuffle(choices)
        rows.append({"query": query, "choices": choices, "gold": choices.index(answer), "kind": kind})
    return rows
