"""Log-likelihoods: exact for autoregressive models, LLaDA's Monte-Carlo ELBO for diffusion models."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config import LayerwiseError
from ..diffusion import Family, logit_positions, stratified_mask
from ..models import LoadedModel
from .common import _mask_id, _model_logits, _none_if_full, sliced_lm_head


def _check_pairs(context_ids: Sequence[Sequence[int]], continuation_ids: Sequence[Sequence[int]]) -> None:
    if len(context_ids) != len(continuation_ids):
        raise LayerwiseError(
            f"{len(context_ids)} contexts but {len(continuation_ids)} continuations: pass one context per continuation"
        )
    for i, c in enumerate(continuation_ids):
        if len(c) == 0:
            raise LayerwiseError(f"continuation {i} is empty: every request needs at least one token to score")


@torch.no_grad()
def ar_loglikelihood(lm: LoadedModel, context_ids: Sequence[Sequence[int]],
                     continuation_ids: Sequence[Sequence[int]], *, batch_size: int = 16,
                     progress: bool = False) -> list[tuple[float, bool]]:
    """Exact ``sum_t log p(cont_t | ctx, cont_<t)`` and whether greedy decoding reproduces ``cont``.

    Requests are batched with right padding (harmless for a causal model); the log-softmax is taken in
    float32 on the continuation positions only. Contexts must be non-empty (prepend a BOS/EOS token, as
    lm-eval does, to score a text from its first token).
    """
    _check_pairs(context_ids, continuation_ids)
    for i, c in enumerate(context_ids):
        if len(c) == 0:
            raise LayerwiseError(
                f"context {i} is empty: an AR model cannot score the first token; prepend the tokenizer's "
                "BOS or EOS id to the context"
            )
    dev = lm.device
    results: list[tuple[float, bool]] = []
    order = range(0, len(context_ids), batch_size)
    for s in tqdm(order, desc="AR log-likelihood", disable=not progress, leave=False):
        ctxs, conts = context_ids[s:s + batch_size], continuation_ids[s:s + batch_size]
        seqs = [list(a) + list(c) for a, c in zip(ctxs, conts)]
        inputs = [q[:-1] for q in seqs]  # the last token is only predicted, never an input
        width = max(len(q) for q in inputs)
        ids = torch.zeros(len(inputs), width, dtype=torch.long)
        am = torch.zeros(len(inputs), width, dtype=torch.long)
        for r, q in enumerate(inputs):
            ids[r, :len(q)] = torch.tensor(q)
            am[r, :len(q)] = 1
        logits = _model_logits(lm, ids.to(dev), _none_if_full(am.to(dev)))
        for r, (a, c) in enumerate(zip(ctxs, conts)):
            raw = logit_positions(torch.arange(len(a), len(a) + len(c), device=dev), lm.family)
            lp = F.log_softmax(logits[r, raw].float(), dim=-1)  # [T, V]: position len(a) + t predicts c[t]
            tgt = torch.tensor(list(c), device=dev)
            results.append((float(lp.gather(-1, tgt[:, None]).sum()), bool((lp.argmax(-1) == tgt).all())))
    return results



class MCEstimate(float):
    """A Monte-Carlo log-likelihood: the estimate as a ``float``, with ``n_samples`` (samples it used) and
    ``se`` (its standard error, ``nan`` from a single sample) as attributes."""

    n_samples: int
    se: float

    def __new__(cls, value: float, n_samples: int, se: float) -> MCEstimate:
        obj = super().__new__(cls, value)
        obj.n_samples = int(n_samples)
        obj.se = float(se)
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (MCEstimate, (float(self), self.n_samples, self.se))


def _standard_error(row_sum: float, row_sq: float, n: int) -> float:
    """``sqrt(sample variance / n)`` of ``n`` values given their sum and sum of squares (nan for n < 2)."""
    if n < 2:
        return math.nan
    var = max(row_sq - row_sum * row_sum / n, 0.0) / (n - 1)
    return math.sqrt(var / n)


def antithetic_mask(n: int, length: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` (even) Monte-Carlo masks in antithetic pairs: row ``i`` and row ``i + n/2``.

    The first half are :func:`layerwise.diffusion.stratified_mask` draws (``k`` of ``length`` tokens masked,
    a uniform subset). Row ``i + n/2`` masks the complement of row ``i`` plus one of row ``i``'s masked
    tokens chosen uniformly: ``length + 1 - k`` tokens, ``k`` uniform on ``1..length`` making
    ``length + 1 - k`` uniform on ``1..length`` too, and by symmetry a uniform subset of that size. Each row
    is therefore a draw of LLaDA's forward process, and a pair masks nearly disjoint tokens (hard tokens
    of one copy are the other's context). CPU tensors; returns ``is_mask [n, length]`` and ``p_mask [n]``.
    """
    h = n // 2
    first, p_first = stratified_mask(h, length, generator)
    keep = torch.rand(h, length, generator=generator).masked_fill(~first, -1.0).argmax(dim=1)
    second = ~first
    second[torch.arange(h), keep] = True
    return torch.cat([first, second]), torch.cat([p_first, second.sum(dim=1).float() / length])


@torch.no_grad()
def diffusion_loglikelihood(lm: LoadedModel, context_ids: Sequence[Sequence[int]],
                            continuation_ids: Sequence[Sequence[int]], *, n_samples: int = 128,
                            batch_size: int = 32, seed: int = 0, target_se: float | None = None,
                            min_samples: int = 8, antithetic: bool = False,
                            progress: bool = False) -> list[MCEstimate]:
    """LLaDA's Monte-Carlo estimate of ``log p(cont | ctx)`` (a lower bound: the ELBO).

    For each request, noisy copies mask a sampled fraction ``t`` of the continuation only (the number of
    masked tokens stratified over each batch of copies, :func:`layerwise.diffusion.stratified_mask`); the
    estimate is ``-mean over copies of sum_masked CE / t``. Logits are aligned for shifted-logit models.
    The randomness restarts from ``seed`` for every request, so continuations of one context are compared
    under the same masks (common random numbers) and the value of a request does not depend on its
    neighbours. The LM head runs on the continuation positions only.

    Args:
        n_samples: the number of copies (LLaDA: 128); with ``target_se``, the most a request may use.
        batch_size: copies per forward pass (the masks of a batch are stratified together).
        target_se: None: exactly ``n_samples`` copies per request. A number: copies are drawn batch by
            batch, the same masks in the same order as without it, until the standard error of the
            request's estimate is at most ``target_se`` (nats) and at least ``min_samples`` copies were
            used, or ``n_samples`` is reached. The estimate is then the mean of the first copies of the
            full run (each an unbiased draw for the same ELBO), at a cost set per request by its
            variance. The standard error is ``sqrt(s^2 / n)`` from the copies' sample variance ``s^2``,
            which ignores the stratification of ``t`` within a batch (which lowers the true variance),
            so it tends to overstate the error. The stop depends on the copies drawn (through their
            spread), so for skewed copies the stopped mean may move by a fraction of its standard error;
            ``min_samples`` keeps the variance estimate usable.
        min_samples: the fewest copies a request uses before ``target_se`` may stop it (>= 2).
        antithetic: CHANGES THE DRAWS (off by default). Each batch is half stratified masks and half
            their antithetic partners (:func:`antithetic_mask`): every copy is still a draw of the same
            forward process, so the mean stays an unbiased estimate of the same ELBO, and partners mask
            nearly disjoint tokens, so their errors tend to cancel. The standard error is then computed
            from the pair means. Needs an even ``batch_size`` and ``n_samples``.

    Returns one :class:`MCEstimate` (a ``float``) per request, carrying the copies it used and its
    standard error. Without ``antithetic`` the masks are the stratified ones whatever ``target_se``, so
    results with and without a target share their copies.
    """
    _check_pairs(context_ids, continuation_ids)
    if n_samples < 1 or batch_size < 1:
        raise LayerwiseError(f"n_samples={n_samples} and batch_size={batch_size} must be >= 1")
    if target_se is not None and not target_se > 0:
        raise LayerwiseError(f"target_se={target_se} must be a positive number of nats (or None for n_samples copies)")
    if min_samples < 2:
        raise LayerwiseError(f"min_samples={min_samples} must be >= 2 (a standard error needs two copies)")
    if antithetic and (batch_size % 2 or n_samples % 2):
        raise LayerwiseError(f"antithetic=True pairs the copies of a batch: use an even batch_size and n_samples "
                             f"(got {batch_size} and {n_samples})")
    draw = antithetic_mask if antithetic else stratified_mask
    mid = _mask_id(lm)
    dev = lm.device
    out: list[MCEstimate] = []
    with sliced_lm_head(lm) as logits_at:
        pairs = list(zip(context_ids, continuation_ids))
        for ctx, cont in tqdm(pairs, desc="diffusion log-likelihood", disable=not progress, leave=False):
            gen = torch.Generator().manual_seed(seed)  # CPU: the same masks on any device
            p, t = len(ctx), len(cont)
            seq = torch.tensor(list(ctx) + list(cont), dtype=torch.long, device=dev)
            target = seq[p:]
            positions = torch.arange(p, p + t, device=dev)
            total, row_sum, row_sq, used, units = 0.0, 0.0, 0.0, 0, 0  # units: copies, or pairs
            for s in range(0, n_samples, batch_size):
                n = min(batch_size, n_samples - s)
                is_mask, p_mask = draw(n, t, gen)
                is_mask, p_mask = is_mask.to(dev), p_mask.to(dev)
                noisy = seq.repeat(n, 1)
                noisy[:, p:] = torch.where(is_mask, mid, target)
                logits = logits_at(noisy, None, positions)  # [n, T, V], aligned to the continuation
                ce = F.cross_entropy(logits.float().transpose(1, 2), target.expand(n, t), reduction="none")
                weighted = (ce * is_mask) / p_mask[:, None]
                total += float(weighted.sum())
                rows = weighted.sum(dim=1, dtype=torch.float64)
                if antithetic:  # the pairs are the independent units
                    rows = (rows[:n // 2] + rows[n // 2:]) / 2
                row_sum += float(rows.sum())
                row_sq += float((rows * rows).sum())
                used += n
                units += rows.numel()
                if (target_se is not None and used >= min_samples
                        and _standard_error(row_sum, row_sq, units) <= target_se):
                    break
            out.append(MCEstimate(-total / used, used, _standard_error(row_sum, row_sq, units)))
    return out


@torch.no_grad()
def _diffusion_is_greedy(lm: LoadedModel, ctx: Sequence[int], cont: Sequence[int]) -> bool:
    """Whether one step on the fully masked continuation predicts it exactly (argmax at every position)."""
    mid = _mask_id(lm)
    dev = lm.device
    seq = torch.tensor([list(ctx) + [mid] * len(cont)], dtype=torch.long, device=dev)
    pos = torch.arange(len(ctx), len(ctx) + len(cont), device=dev)
    with sliced_lm_head(lm) as logits_at:
        pred = logits_at(seq, None, pos)[0].argmax(-1)
    return bool((pred == torch.tensor(list(cont), device=dev)).all())


def loglikelihood(lm: LoadedModel, context_ids: Sequence[Sequence[int]],
                  continuation_ids: Sequence[Sequence[int]], *, greedy: bool | Sequence[bool] = True,
                  **kw: Any) -> list[tuple[float, bool]]:
    """``(log p(cont | ctx), is_greedy)`` per request, dispatched on ``lm.family``.

    ``ar``: exact (:func:`ar_loglikelihood`). Diffusion: the Monte-Carlo ELBO
    (:func:`diffusion_loglikelihood`, keyword arguments such as ``n_samples`` and ``target_se`` passed on;
    each value an :class:`MCEstimate` with its samples used and standard error), and ``is_greedy`` is whether one
    denoising step from the fully masked continuation predicts every token of it.

    ``greedy``: per request (or for all), whether its ``is_greedy`` is wanted. A diffusion model's costs
    one more forward pass per request; where it is not wanted (lm-eval's multiple-choice tasks read
    only the log-likelihoods) it is returned as False without that pass. AR models get it for free.
    """
    if lm.family is Family.AR:
        return ar_loglikelihood(lm, context_ids, continuation_ids, **kw)
    want = [greedy] * len(context_ids) if isinstance(greedy, bool) else [bool(g) for g in greedy]
    if len(want) != len(context_ids):
        raise LayerwiseError(f"greedy has {len(want)} flags for {len(context_ids)} requests: give one per request")
    lls = diffusion_loglikelihood(lm, context_ids, continuation_ids, **kw)
    return [(ll, _diffusion_is_greedy(lm, a, c) if g else False)
            for ll, a, c, g in zip(lls, context_ids, continuation_ids, want)]


def rolling_loglikelihood(lm: LoadedModel, token_ids: Sequence[int], *, max_length: int,
                          n_samples: int = 128, prefix_token_id: int | None = None, **kw: Any) -> float:
    """Log-likelihood of a whole document, in windows of at most ``max_length`` tokens.

    Windows are lm-eval's (``get_rolling_token_windows`` with context 1, made disjoint): each token is
    scored once, conditioned on up to ``max_length`` preceding tokens, the first on ``prefix_token_id``
    (default: the tokenizer's BOS, else EOS). AR sums exact log-likelihoods; diffusion sums the ELBO of
    each window (``n_samples`` Monte-Carlo samples each, or fewer with ``target_se``), a lower bound,
    returned as an :class:`MCEstimate` whose ``n_samples`` is the windows' total and ``se`` combines
    theirs as independent errors.
    """
    try:
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
    except ImportError as e:  # pragma: no cover - lm-eval is an optional extra
        raise LayerwiseError("rolling_loglikelihood uses lm-eval's windows: pip install 'layerwise[eval]'") from e
    if max_length < 1:
        raise LayerwiseError(f"max_length={max_length} must be >= 1")
    if prefix_token_id is None:
        tok = lm.tokenizer
        if tok is not None:
            prefix_token_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    if prefix_token_id is None:
        raise LayerwiseError("no prefix token: pass prefix_token_id=... (the tokenizer has no BOS or EOS token)")
    windows = [make_disjoint_window(w) for w in
               get_rolling_token_windows(list(token_ids), prefix_token_id, max_length, 1)]
    if not windows:
        return 0.0
    ctxs, conts = [w[0] for w in windows], [w[1] for w in windows]
    if lm.family is Family.AR:
        return sum(ll for ll, _ in ar_loglikelihood(lm, ctxs, conts, **kw))
    parts = diffusion_loglikelihood(lm, ctxs, conts, n_samples=n_samples, **kw)
    return MCEstimate(sum(parts), sum(v.n_samples for v in parts), math.sqrt(sum(v.se ** 2 for v in parts)))
