"""Layer skipping under each model's native inference: disruption along the trajectory, and skipping by stage.

Two checks of static skipping (paper A section 4) that follow each model's own generation procedure:

- :func:`native_disruption`: the model generates once, unmodified, with its native sampler (masked
  diffusion for ``dlm`` / ``ar2dlm``, greedy left-to-right decoding for ``ar``); the inputs it saw are
  recorded at matched points of the trajectory (diffusion: the canvas before step ``floor(f * steps)``;
  AR: the prompt and the first ``round(f * gen_length)`` generated tokens), and at each of those inputs
  the hidden states with and without the skip mask are compared: disruption ``1 - cos`` per token,
  averaged over the real (non-padding) positions, per prompt, at the output of every block after the
  last skipped one (the final block included), with a bootstrap interval over prompts.
- :func:`stage_retention`: the skip mask applied only during the ``early`` / ``middle`` / ``late`` third
  of the denoising steps (``all`` = static skipping), through the diffusion sampler's ``step_context``
  (:func:`skip_during`); exact-match retention of each against the unmodified sampler with a paired
  bootstrap interval over items. AR models have no denoising schedule: they are reported for the whole
  decoding only (stage ``all``), the comparison the diffusion stages are read against.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from .config import LayerwiseError
from .diffusion import Family
from .models import LoadedModel
from .probes.hooks import block_hooks
from .sampling import ar_generate, diffusion_generate
from .sampling.diffusion_sampler import StepContext
from .sampling.generation import _diffusion_defaults
from .skipping import _check_indices, skip_layers
from .stats import above_chance_pvalue, bootstrap_indices, paired_bootstrap, paired_retention

#: the thirds of the denoising schedule :func:`stage_retention` skips in (fractions of the steps)
STAGES: dict[str, tuple[float, float]] = {"early": (0.0, 1 / 3), "middle": (1 / 3, 2 / 3), "late": (2 / 3, 1.0),
                                          "all": (0.0, 1.0)}
#: the matched trajectory points of :func:`native_disruption` (fractions of the steps / generated tokens)
POINTS = (0.25, 0.5, 0.75)


def _tokenize(lm: LoadedModel, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    tok = lm.tokenizer
    if tok is None or tok.pad_token_id is None:
        raise LayerwiseError("native skipping needs a tokenizer with a pad token: load the model with its tokenizer")
    if not prompts:
        raise LayerwiseError("no prompts: pass at least one prompt")
    side, tok.padding_side = tok.padding_side, "left"
    try:
        enc = tok(list(prompts), return_tensors="pt", padding=True)
    finally:
        tok.padding_side = side
    return enc["input_ids"], enc["attention_mask"]


def _sampler_kwargs(lm: LoadedModel, gen_length: int, sampler_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    kw = _diffusion_defaults(lm, gen_length, dict(sampler_kwargs or {}))
    if "alg" in kw:
        raise LayerwiseError(f"native skipping drives LLaDA's sampler; {kw['alg']!r} is one of Dream's algorithms: "
                             "pass sampler_kwargs={'remasking': 'low_confidence'}")
    return kw


def skip_during(lm: LoadedModel, skip: Sequence[int], steps: Sequence[int] | range) -> StepContext:
    """A ``step_context`` for :func:`layerwise.sampling.diffusion_generate` that skips the blocks ``skip``
    during the denoising steps ``steps`` (global step indices) and runs the whole model at every other step.
    ``steps = range(total)`` is static skipping; an empty range is the unmodified sampler."""
    chosen = set(steps)

    def ctx(step: int, _x: torch.Tensor) -> contextlib.AbstractContextManager[Any]:
        return skip_layers(lm, skip) if step in chosen else contextlib.nullcontext()

    return ctx


def stage_steps(stage: str, total: int) -> range:
    """The global step indices of ``stage`` (see :data:`STAGES`) in a schedule of ``total`` steps."""
    if stage not in STAGES:
        raise LayerwiseError(f"unknown stage {stage!r}: use one of {', '.join(STAGES)}")
    lo, hi = STAGES[stage]
    return range(round(lo * total), round(hi * total))


@torch.no_grad()
def native_generate(lm: LoadedModel, prompts: Sequence[str], *, gen_length: int, batch_size: int = 8,
                    sampler_kwargs: Mapping[str, Any] | None = None, step_context: StepContext | None = None
                    ) -> torch.Tensor:
    """Generated ids ``[N, gen_length]``: greedy decoding for ``ar``, LLaDA's sampler otherwise (settings from
    the registry unless given), with ``step_context`` passed to the diffusion sampler, batch by batch."""
    outs = []
    kw = {} if lm.family is Family.AR else _sampler_kwargs(lm, gen_length, sampler_kwargs)
    for s in range(0, len(prompts), batch_size):
        ids, am = _tokenize(lm, prompts[s:s + batch_size])
        if lm.family is Family.AR:
            if step_context is not None:
                raise LayerwiseError("an AR model has no denoising steps: skip for the whole decoding with skip_layers")
            outs.append(ar_generate(lm, ids, am, max_new_tokens=gen_length,
                                    eos_token_id=getattr(lm.tokenizer, "eos_token_id", None)).cpu())
        else:
            outs.append(diffusion_generate(lm, ids, am, gen_length=gen_length, step_context=step_context,
                                           **kw).cpu())
    return torch.cat(outs)


@torch.no_grad()
def _trajectory(lm: LoadedModel, ids: torch.Tensor, am: torch.Tensor, points: Sequence[float], gen_length: int,
                kw: Mapping[str, Any]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The inputs of one unmodified native run at each point: ``(ids [B, T], attention_mask [B, T])``."""
    b = ids.shape[0]
    ones = torch.ones(b, gen_length, dtype=am.dtype)
    if lm.family is Family.AR:
        new = ar_generate(lm, ids, am, max_new_tokens=gen_length,
                          eos_token_id=getattr(lm.tokenizer, "eos_token_id", None)).cpu()
        out = []
        for f in points:
            n = max(1, round(f * gen_length))
            out.append((torch.cat([ids, new[:, :n]], 1), torch.cat([am, ones[:, :n]], 1)))
        return out
    steps = int(kw["steps"])
    at = {min(steps - 1, int(f * steps)): f for f in points}
    seen: dict[float, torch.Tensor] = {}

    def record(step: int, x: torch.Tensor) -> contextlib.AbstractContextManager[Any]:
        if step in at:
            seen[at[step]] = x.detach().cpu().clone()
        return contextlib.nullcontext()

    diffusion_generate(lm, ids, am, gen_length=gen_length, step_context=record, **kw)
    full = torch.cat([am, ones], 1)
    return [(seen[f], full) for f in points]


def _block_outputs(lm: LoadedModel, ids: torch.Tensor, am: torch.Tensor, keep: Sequence[int],
                   wanted: Sequence[int]) -> dict[int, torch.Tensor]:
    """``{original block index: output [B, T, d]}`` of the blocks ``wanted`` for the model as it is now; under
    ``skip_layers`` the running blocks are the kept ones ``keep``, in order, and are mapped back by it."""
    out: dict[int, torch.Tensor] = {}
    want = set(wanted)

    def on_block(i: int, _h_in: torch.Tensor, h_out: torch.Tensor) -> None:
        if keep[i] in want:
            out[keep[i]] = h_out.float()

    with block_hooks(lm, on_block):
        lm.logits(ids, am)
    return out


@dataclass
class NativeDisruption:
    """``per_prompt[point, block, prompt]``: mean ``1 - cos`` over a prompt's real positions."""

    model: str
    family: str
    skip: tuple[int, ...]
    points: tuple[float, ...]
    blocks: tuple[int, ...]
    per_prompt: np.ndarray

    @property
    def final(self) -> np.ndarray:
        """``[point, prompt]`` at the final block."""
        return self.per_prompt[:, -1, :]

    def to_frame(self, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
        """One row per (point, block): disruption (mean over prompts) with its bootstrap interval."""
        rows = []
        for p, f in enumerate(self.points):
            for j, blk in enumerate(self.blocks):
                v, (lo, hi) = paired_bootstrap(np.mean, self.per_prompt[p, j], n_boot=n_boot, seed=seed)
                rows.append({"model": self.model, "family": self.family, "point": f, "block": blk,
                             "final": j == len(self.blocks) - 1, "disruption": v, "ci_low": lo, "ci_high": hi,
                             "n": self.per_prompt.shape[2], "skipped": list(self.skip)})
        return pd.DataFrame(rows)


@torch.no_grad()
def native_disruption(lm: LoadedModel, prompts: Sequence[str], skip: Sequence[int], *, gen_length: int,
                      points: Sequence[float] = POINTS, batch_size: int = 8,
                      sampler_kwargs: Mapping[str, Any] | None = None, model: str = "") -> NativeDisruption:
    """How much the skip mask ``skip`` changes the hidden states along the model's own generation.

    See the module docstring: one unmodified native run per batch of prompts; at each point of
    ``points`` (fractions in (0, 1]) its input is run with and without ``skip``, and the disruption
    ``1 - cos`` of every block's output after the last skipped block (the final block last) is averaged
    over the real positions of each prompt. An empty ``skip`` gives 0 everywhere (blocks after the first).
    """
    L = lm.num_layers
    skip_ = _check_indices(skip, L)
    if not points or any(not 0 < f <= 1 for f in points):
        raise LayerwiseError(f"points={list(points)} must be fractions in (0, 1], e.g. (0.25, 0.5, 0.75)")
    after = (max(skip_) + 1) if skip_ else 1
    blocks = tuple(range(after, L))
    kept = [i for i in range(L) if i not in set(skip_)]
    kw = {} if lm.family is Family.AR else _sampler_kwargs(lm, gen_length, sampler_kwargs)
    chunks: list[np.ndarray] = []  # [point, block, batch]
    for s in range(0, len(prompts), batch_size):
        ids, am = _tokenize(lm, prompts[s:s + batch_size])
        per_point = []
        for x, m in _trajectory(lm, ids, am, points, gen_length, kw):
            x, m = x.to(lm.device), m.to(lm.device)
            full = _block_outputs(lm, x, m, list(range(L)), blocks)
            with skip_layers(lm, skip_):
                cut = _block_outputs(lm, x, m, kept, blocks)
            valid = m.bool()
            rows = []
            for blk in blocks:
                cos = torch.nn.functional.cosine_similarity(full[blk], cut[blk], dim=-1)  # [B, T]
                d = ((1 - cos) * valid).sum(1) / valid.sum(1)
                rows.append(d.double().cpu().numpy())
            per_point.append(np.stack(rows))
        chunks.append(np.stack(per_point))
    return NativeDisruption(model or lm.spec.model_id, lm.family.value, tuple(skip_), tuple(points), blocks,
                            np.concatenate(chunks, axis=2))


_NUMBER = re.compile(r"-?[0-9]+")


def first_number_match(texts: Sequence[str], answers: Sequence[str]) -> np.ndarray:
    """Exact match as ``lw_arithmetic`` scores it: the first integer of each text (cut at the first newline)
    equals the answer; ``[N]`` of 0/1."""
    out = []
    for t, a in zip(texts, answers, strict=True):
        m = _NUMBER.search(t.split("\n", 1)[0])
        out.append(float(m is not None and m.group(0) == str(a).strip()))
    return np.asarray(out)


def _decode(lm: LoadedModel, new: torch.Tensor) -> list[str]:
    tok = lm.tokenizer
    assert tok is not None
    eos = tok.eos_token_id
    texts = []
    for row in new.tolist():
        if eos is not None and eos in row:
            row = row[:row.index(eos)]
        texts.append(tok.decode(row, skip_special_tokens=True))
    return texts


def stage_retention(lm: LoadedModel, prompts: Sequence[str], answers: Sequence[str], skip: Sequence[int], *,
                    gen_length: int, stages: Sequence[str] = ("early", "middle", "late"), batch_size: int = 8,
                    sampler_kwargs: Mapping[str, Any] | None = None, n_boot: int = 1000, seed: int = 0,
                    score: Callable[[Sequence[str], Sequence[str]], np.ndarray] = first_number_match,
                    chance: float = 0.0, model: str = "") -> pd.DataFrame:
    """Exact-match retention with ``skip`` applied only during each stage of the denoising schedule.

    One row per stage (plus ``all``, static skipping, when not among ``stages``): ``exact_match`` of the
    skipped run, ``baseline`` of the unmodified one (same items), ``retention`` = their ratio with a paired
    bootstrap interval over items, ``baseline_p`` (one-sided binomial test of the baseline against ``chance``,
    the task's chance level) and ``meaningful`` (baseline above chance at 5%). AR models: the ``all`` row only
    (left-to-right decoding has no denoising stages); ``stages`` is then ignored.
    """
    if len(prompts) != len(answers):
        raise LayerwiseError(f"{len(prompts)} prompts but {len(answers)} answers: pass one answer per prompt")
    skip_ = _check_indices(skip, lm.num_layers)
    ar = lm.family is Family.AR
    wanted = ["all"] if ar else list(dict.fromkeys([*stages, "all"]))
    for st in wanted:
        stage_steps(st, 1)  # validates the name
    total = 0 if ar else int(_sampler_kwargs(lm, gen_length, sampler_kwargs)["steps"])
    base = score(_decode(lm, native_generate(lm, prompts, gen_length=gen_length, batch_size=batch_size,
                                             sampler_kwargs=sampler_kwargs)), answers)
    idx = bootstrap_indices(len(base), n_boot, seed)
    p = above_chance_pvalue(base.tolist(), chance)
    rows = []
    for st in wanted:
        if ar:
            with skip_layers(lm, skip_):
                new = native_generate(lm, prompts, gen_length=gen_length, batch_size=batch_size)
            steps: range | None = None
        else:
            steps = stage_steps(st, total)
            new = native_generate(lm, prompts, gen_length=gen_length, batch_size=batch_size,
                                  sampler_kwargs=sampler_kwargs, step_context=skip_during(lm, skip_, steps))
        run = score(_decode(lm, new), answers)
        b = float(base.mean())
        lo, hi = paired_retention(np.mean, list(base), list(run), idx, higher_is_better=True)
        rows.append({"model": model or lm.spec.model_id, "family": lm.family.value, "stage": st,
                     "steps": f"{steps.start}-{steps.stop - 1} of {total}" if steps is not None and len(steps) else
                     ("whole decoding" if ar else "none"),
                     "skipped": list(skip_), "n": len(base), "baseline": b, "exact_match": float(run.mean()),
                     "retention": float(run.mean()) / b if b > 0 else float("nan"), "ci_low": lo, "ci_high": hi,
                     "baseline_p": p, "meaningful": bool(p < 0.05)})
    return pd.DataFrame(rows)

