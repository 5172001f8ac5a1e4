"""An lm-eval ``LM`` around an already-loaded :class:`~layerwise.models.LoadedModel` (AR and diffusion families)."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import torch
from tqdm.auto import tqdm

from ..config import LayerwiseError, progress_disabled
from ..models import LoadedModel

log = logging.getLogger(__name__)

#: the diffusion Monte-Carlo settings of ``loglikelihood_kwargs``, dropped for exact (AR) likelihoods
MC_KWARGS = ("n_samples", "seed", "batch_size", "target_se", "min_samples", "antithetic")





# ---------------------------------------------------------------------------------------------
# The lm-eval LM
# ---------------------------------------------------------------------------------------------


_F = TypeVar("_F", bound=Callable[..., Any])


def _timed(kind: str) -> Callable[[_F], _F]:
    """Add a request type's wall-clock seconds to ``self.seconds[kind]`` (its results are Python values:
    the GPU work is done when it returns)."""
    def wrap(f: _F) -> _F:
        @functools.wraps(f)
        def inner(self: Any, *args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return f(self, *args, **kwargs)
            finally:
                self.seconds[kind] += time.perf_counter() - t
        return inner  # type: ignore[return-value]
    return wrap


class Backend(Protocol):
    """What :class:`LayerwiseLM` needs from :mod:`layerwise.sampling` (tests pass a fake)."""

    def generate(self, lm: LoadedModel, prompts: list[str], *, max_new_tokens: int, batch_size: int,
                 until: list[str], progress: bool = True, **sampler_kwargs: Any) -> list[str]: ...

    def loglikelihood(self, lm: LoadedModel, context_ids: list[list[int]], continuation_ids: list[list[int]],
                      **kw: Any) -> list[tuple[float, bool]]: ...

    def rolling_loglikelihood(self, lm: LoadedModel, token_ids: list[int], *, max_length: int,
                              prefix_token_id: int | None = None, **kw: Any) -> float: ...


def _default_backend() -> Backend:
    try:
        from .. import sampling
    except ImportError as e:
        raise LayerwiseError(f"layerwise.sampling could not be imported ({e}): it drives generation and "
                             "likelihoods; pass backend=... to LayerwiseLM to use another") from e
    return sampling


def _load_template_lm() -> type:
    from lm_eval.api.model import TemplateLM

    return TemplateLM


class LayerwiseLM(_load_template_lm()):  # type: ignore[misc]
    """lm-eval ``LM`` around an already-loaded model (AR or masked diffusion).

    lm-eval's ``TemplateLM`` splits (context, continuation) strings into token ids (moving trailing
    spaces to the continuation); this class only routes the three request types to
    :mod:`layerwise.sampling`, in batches sorted by length, and memoises tokenisation so that the
    N evaluations of :func:`retention` tokenise every string once.

    Args:
        lm: the model, already on its device and possibly modified in place.
        batch_size: sequences per forward pass (generation and likelihood).
        max_length: context window; default the config's ``max_position_embeddings``.
        max_gen_toks: generation length for tasks that do not set ``max_gen_toks`` (lm-eval: 256);
            the diffusion sampler's ``gen_length``.
        sampler_kwargs: passed to ``sampling.generate`` (e.g. ``steps``, ``block_length``).
        loglikelihood_kwargs: passed to ``sampling.loglikelihood`` (e.g. ``n_samples``, ``seed``
            for the diffusion Monte-Carlo estimate, and ``target_se`` to stop each request's sampling
            once its standard error is at most that many nats, ``n_samples`` being the cap).
        backend: object with ``generate`` / ``loglikelihood`` / ``rolling_loglikelihood``;
            default :mod:`layerwise.sampling`.
    """

    def __init__(self, lm: LoadedModel, *, batch_size: int = 8, max_length: int | None = None,
                 max_gen_toks: int = 256, sampler_kwargs: dict[str, Any] | None = None,
                 loglikelihood_kwargs: dict[str, Any] | None = None, backend: Backend | None = None) -> None:
        super().__init__()
        if not isinstance(lm, LoadedModel):
            raise LayerwiseError(f"LayerwiseLM wraps a layerwise.models.LoadedModel, got {type(lm).__name__}: "
                                 "use layerwise.models.load(...) or wrap(model, tokenizer, family)")
        if lm.tokenizer is None:
            raise LayerwiseError("lm-eval needs the model's tokenizer: wrap(model, tokenizer, ...) with one")
        if batch_size < 1:
            raise LayerwiseError(f"batch_size must be >= 1, got {batch_size}")
        self.lm = lm
        self.tokenizer = lm.tokenizer
        self.batch_size = int(batch_size)
        cfg = getattr(lm.model, "config", None)
        self.max_length = int(max_length or getattr(cfg, "max_position_embeddings", 0) or 2048)
        self.max_gen_toks = int(max_gen_toks)
        self.sampler_kwargs = dict(sampler_kwargs or {})
        self.loglikelihood_kwargs = dict(loglikelihood_kwargs or {})
        self.backend = backend or _default_backend()
        self._tok_cache: dict[tuple[str, bool], list[int]] = {}
        #: tasks whose loglikelihood requests need ``is_greedy`` (None: every task); :func:`evaluate`
        #: leaves out multiple-choice tasks, which read only the log-likelihoods
        self.greedy_tasks: set[str] | None = None
        #: wall-clock seconds per request type since :func:`evaluate` last cleared it (GPU work synchronised)
        self.seconds: dict[str, float] = defaultdict(float)
        self._greedy_flags: list[bool] | None = None

    # -- lm-eval plumbing ---------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        tok = self.tokenizer
        eot = getattr(tok, "eos_token_id", None)
        if eot is None:
            eot = tok.convert_tokens_to_ids("<|endoftext|>") if hasattr(tok, "convert_tokens_to_ids") else None
        if eot is None or (isinstance(eot, int) and eot < 0):
            raise LayerwiseError("the tokenizer has no end-of-text token: set tokenizer.eos_token")
        return int(eot)

    @property
    def device(self) -> torch.device:
        return self.lm.device

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "")).replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        key = (string, bool(add_special_tokens))
        ids = self._tok_cache.get(key)
        if ids is None:
            ids = list(self.tokenizer.encode(string, add_special_tokens=bool(add_special_tokens)))
            self._tok_cache[key] = ids
        return ids

    def tok_decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def _likelihood_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the likelihood functions of this model's family.

        AR likelihoods are exact: Monte-Carlo settings (:data:`MC_KWARGS`) do not apply and the
        forward batch is this wrapper's ``batch_size``. Diffusion ones get ``loglikelihood_kwargs``
        as given (their ``batch_size`` is the Monte-Carlo batch).
        """
        if self.lm.family.is_diffusion:
            return dict(self.loglikelihood_kwargs)
        kw = {k: v for k, v in self.loglikelihood_kwargs.items() if k not in MC_KWARGS}
        return {"batch_size": self.batch_size, **kw}

    # -- request types ------------------------------------------------------------------------
    @_timed("loglikelihood")
    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """lm-eval's tokenisation and scoring, its progress bar off where :func:`progress_disabled` says so.

        ``is_greedy`` is computed only for requests of :attr:`greedy_tasks` (lm-eval keeps the order of
        the requests when it tokenises them).
        """
        if self.greedy_tasks is not None:
            self._greedy_flags = [getattr(r, "task_name", None) in self.greedy_tasks for r in requests]
        try:
            return super().loglikelihood(requests, disable_tqdm=progress_disabled(disable_tqdm))
        finally:
            self._greedy_flags = None

    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str], list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        """Score continuation ids after context ids, longest first (fewer pad tokens per batch).

        Contexts longer than the window are cut from the left, as lm-eval's HF model does.
        """
        prepared: list[tuple[list[int], list[int]]] = []
        for _, ctx, cont in requests:
            if not cont:
                raise LayerwiseError("an lm-eval request has an empty continuation: check the task's doc_to_target")
            cont = cont[-self.max_length:]
            ctx = ctx[max(0, len(ctx) + len(cont) - self.max_length):] if ctx else []
            if not ctx:  # lm-eval only gives an empty context after truncation: condition on end-of-text
                ctx = [self.prefix_token_id]
            prepared.append((ctx, cont))
        order = sorted(range(len(prepared)), key=lambda i: -(len(prepared[i][0]) + len(prepared[i][1])))
        out: list[tuple[float, bool] | None] = [None] * len(prepared)
        flags = self._greedy_flags if self._greedy_flags is not None and len(self._greedy_flags) == len(requests) \
            else None
        for s in tqdm(range(0, len(order), self.batch_size), desc="loglikelihood",
                      disable=progress_disabled(disable_tqdm), leave=False):
            idx = order[s: s + self.batch_size]
            kw = self._likelihood_kwargs()
            if flags is not None and not all(flags[i] for i in idx):  # only then: custom backends need not know it
                kw["greedy"] = [flags[i] for i in idx]
            res = self.backend.loglikelihood(self.lm, [prepared[i][0] for i in idx], [prepared[i][1] for i in idx],
                                             **kw)
            for i, r in zip(idx, res, strict=True):
                out[i] = (float(r[0]), bool(r[1]))
                self.cache_hook.add_partial("loglikelihood", requests[i][0], out[i])
        return out  # type: ignore[return-value]

    @_timed("loglikelihood_rolling")
    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole documents (windows of ``max_length``; ELBO for diffusion models).

        Every token is scored once; the first is conditioned on the end-of-text token (lm-eval's
        ``prefix_token_id``), later ones on up to ``max_length`` preceding tokens.
        """
        out = []
        kw = self._likelihood_kwargs()
        if not self.lm.family.is_diffusion:
            kw.pop("n_samples", None)
        for req in tqdm(requests, desc="loglikelihood_rolling", disable=progress_disabled(disable_tqdm), leave=False):
            (text,) = req.args
            ll = float(self.backend.rolling_loglikelihood(self.lm, self.tok_encode(text), max_length=self.max_length,
                                                          prefix_token_id=self.prefix_token_id, **kw))
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), ll)
            out.append(ll)
        return out

    @_timed("generate_until")
    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Generate for every request, batched by identical generation settings.

        Outputs are cut at the first stop string (the sampler may overrun it: the diffusion sampler
        always produces ``max_new_tokens`` tokens).
        """
        groups: dict[str, list[int]] = defaultdict(list)
        for i, req in enumerate(requests):
            groups[json.dumps(req.args[1], sort_keys=True, default=str)].append(i)
        out: list[str | None] = [None] * len(requests)
        eos = getattr(self.tokenizer, "eos_token", None)
        bar = tqdm(total=len(requests), desc="generate_until", disable=progress_disabled(disable_tqdm), leave=False)
        for idxs in groups.values():
            gen_kwargs = dict(requests[idxs[0]].args[1])
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            if eos and eos not in until:
                until.append(eos)
            max_new = int(gen_kwargs.get("max_gen_toks", self.max_gen_toks))
            idxs = sorted(idxs, key=lambda i: -len(self.tok_encode(requests[i].args[0])))
            for s in range(0, len(idxs), self.batch_size):
                chunk = idxs[s: s + self.batch_size]
                prompts = [requests[i].args[0] for i in chunk]
                texts = self.backend.generate(self.lm, prompts, max_new_tokens=max_new, batch_size=self.batch_size,
                                              until=until, **{"progress": False, **self.sampler_kwargs})
                for i, text in zip(chunk, texts, strict=True):
                    out[i] = cut_at_stops(text, until)
                    self.cache_hook.add_partial("generate_until", requests[i].args, out[i])
                bar.update(len(chunk))
        bar.close()
        return out  # type: ignore[return-value]


def cut_at_stops(text: str, until: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest stop string."""
    cut = len(text)
    for stop in until:
        if stop:
            j = text.find(stop)
            if j != -1:
                cut = min(cut, j)
    return text[:cut]
