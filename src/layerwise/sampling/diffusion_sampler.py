"""Masked-diffusion generation with LLaDA's semi-autoregressive sampler (``generate.py`` semantics)."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..arch import llada
from ..config import LayerwiseError
from ..diffusion import logit_positions
from ..models import LoadedModel
from .common import _check_prompt, _mask_id, _model_logits, _none_if_full, sliced_lm_head

REMASKING = ("low_confidence", "random")
#: where the Gumbel noise of one step is drawn: over the whole canvas (LLaDA's stream) or the block only
GUMBEL_NOISE = ("canvas", "block")
#: ``step_context(step, canvas)`` -> a context manager entered around that step's model call
StepContext = Callable[[int, torch.Tensor], contextlib.AbstractContextManager[Any]]


def num_transfer_tokens(block_mask: torch.Tensor, steps: int) -> torch.Tensor:
    """Tokens to unmask at each of ``steps`` steps, per row: ``[B, steps]`` int64.

    ``block_mask``: ``[B, block_length]`` bool, the masked positions of a block. LLaDA's linear noise
    schedule moves the same expected number of tokens per step: ``n // steps`` each, and the first
    ``n % steps`` steps one more (as ``get_num_transfer_tokens`` in LLaDA's generate.py).
    """
    n = block_mask.sum(dim=1, keepdim=True)
    extra = torch.arange(steps, device=block_mask.device).unsqueeze(0) < (n % steps)
    return (n // steps + extra).to(torch.int64)


def _rand(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
          generator: torch.Generator | None, rows: slice | None = None) -> torch.Tensor:
    """Uniform [0, 1) noise on ``device``: ``torch.rand(shape)`` drawn on the generator's own device (a CPU
    generator can then drive a GPU model, and gives the same numbers on any device), or from the global
    RNG of ``device`` when ``generator`` is None (as LLaDA's ``torch.rand_like``). ``rows`` keeps only
    ``[:, rows]`` of the draw (the whole shape is drawn, so the random stream advances as for the whole
    tensor) before it moves to ``device``."""
    where = generator.device if generator is not None else device
    noise = torch.rand(shape, dtype=dtype, device=where, generator=generator)
    if rows is not None:
        noise = noise[:, rows]
    return noise.to(device)


def add_gumbel_noise(logits: torch.Tensor, temperature: float,
                     generator: torch.Generator | None = None, *, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Gumbel-max perturbation, so that argmax samples from softmax(logits / temperature).

    As LLaDA's ``add_gumbel_noise``: float64 throughout (low-precision Gumbel noise hurts generation
    quality, arXiv:2409.02908); returns ``logits`` unchanged at temperature 0. Shape preserved. ``noise``:
    uniform float64 noise of ``logits``' shape already drawn (default: drawn here from ``generator``).
    """
    if temperature == 0:
        return logits
    logits = logits.to(torch.float64)
    if noise is None:
        noise = _rand(tuple(logits.shape), torch.float64, logits.device, generator)
    return logits.exp() / (-torch.log(noise)) ** temperature


def _check_diffusion_args(gen_length: int, steps: int, block_length: int, temperature: float,
                          remasking: str, gumbel_noise: str = "canvas") -> int:
    """Validate sampler settings; returns the number of steps per block."""
    if gen_length < 1 or block_length < 1 or steps < 1:
        raise LayerwiseError(
            f"gen_length={gen_length}, steps={steps}, block_length={block_length} must all be >= 1"
        )
    if gen_length % block_length != 0:
        raise LayerwiseError(
            f"gen_length={gen_length} is not a multiple of block_length={block_length}: choose a "
            f"block_length that divides gen_length (e.g. {math.gcd(gen_length, block_length)}) or round "
            "gen_length up to a multiple of it"
        )
    num_blocks = gen_length // block_length
    if steps % num_blocks != 0:
        raise LayerwiseError(
            f"steps={steps} cannot be split evenly over {num_blocks} blocks (gen_length / block_length): "
            f"use a multiple of {num_blocks}, e.g. steps={max(num_blocks, steps - steps % num_blocks)}"
        )
    if remasking not in REMASKING:
        from .dream_sampler import DREAM_ALGS

        hint = ""
        if remasking in DREAM_ALGS:
            hint = (f"; {remasking!r} is one of Dream's algorithms {DREAM_ALGS}: run it with "
                    "layerwise.sampling.dream_generate (or generate(..., remasking=...))")
        raise LayerwiseError(f"unknown remasking {remasking!r} for LLaDA's sampler: use one of {REMASKING}{hint}")
    if gumbel_noise not in GUMBEL_NOISE:
        raise LayerwiseError(f"unknown gumbel_noise {gumbel_noise!r}: use one of {GUMBEL_NOISE}")
    if temperature < 0:
        raise LayerwiseError(f"temperature={temperature} must be >= 0 (0 = greedy)")
    return steps // num_blocks


def _prepare_canvas(lm: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                    gen_length: int) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Prompt followed by ``gen_length`` mask tokens: ``x [B, P + G]``, the matching 2D mask (or None)."""
    mid = _mask_id(lm)
    _check_prompt(input_ids, mid)
    dev = lm.device
    b, p = input_ids.shape
    x = torch.full((b, p + gen_length), mid, dtype=torch.long, device=dev)
    x[:, :p] = input_ids.to(dev)
    am = None
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise LayerwiseError(
                f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids "
                f"{tuple(input_ids.shape)}: pass the tokenizer's mask for the same batch"
            )
        am = torch.cat([attention_mask.to(dev).long(),
                        torch.ones(b, gen_length, dtype=torch.long, device=dev)], dim=1)
    return x, _none_if_full(am), mid


#: canvases shorter than this take torch.topk's single-block kernel on CUDA for any number of rows
#: (its multi-block and sort paths start at 3,000+ columns), so rows ranked together keep generate.py's ties
_BATCHED_TOPK_MAX_LEN = 3000


def transfer_mask(conf: torch.Tensor, ks: Sequence[int]) -> torch.Tensor:
    """``[B, T]`` True at the ``ks[j]`` highest-confidence positions of row ``j`` of ``conf``.

    The positions of ``conf[j].topk(ks[j])``, as LLaDA's ``generate.py`` takes them row by row. Rows
    with the same ``k`` are ranked in one ``torch.topk`` call: the same kernel per row, so the same
    positions (ties included), with a few kernel launches per step instead of a few per row, which is
    what a small model's sampling step costs on a GPU. Longer canvases keep the per-row calls.
    """
    b, total = conf.shape
    out = torch.zeros((b, total), dtype=torch.bool, device=conf.device)
    if total >= _BATCHED_TOPK_MAX_LEN:
        for j, k in enumerate(ks):
            out[j, conf[j].topk(int(k)).indices] = True
        return out
    for k in sorted(set(int(k) for k in ks)):
        if k == 0:
            continue
        rows = [j for j, kj in enumerate(ks) if int(kj) == k]
        if len(rows) == b:
            out.scatter_(1, conf.topk(k, dim=-1).indices, True)
        else:
            r = torch.tensor(rows, device=conf.device)
            out[r] = out[r].scatter(1, conf[r].topk(k, dim=-1).indices, True)
    return out


def _first_masked(x: torch.Tensor, mid: int, lo: int, hi: int) -> int:
    """The first column in ``[lo, hi)`` of ``x [B, T]`` holding the mask id in any row, else ``hi``."""
    if hi <= lo:
        return hi
    cols = (x[:, lo:hi] == mid).any(dim=0).nonzero()
    return lo + int(cols[0]) if cols.numel() else hi


def _stop_ids(lm: LoadedModel, eos_ids: Sequence[int] | None, mid: int) -> torch.Tensor:
    """The end-of-text ids an early stop looks for: ``eos_ids``, else the tokenizer's ``eos_token_id``."""
    if eos_ids is None:
        eos = getattr(lm.tokenizer, "eos_token_id", None) if lm.tokenizer is not None else None
        if eos is None:
            raise LayerwiseError("stop_at_eos=True needs end-of-text ids: pass eos_ids=[...] or load a tokenizer "
                                 "with an eos_token")
        eos_ids = [int(eos)]
    ids = [int(i) for i in eos_ids]
    if not ids or mid in ids:
        raise LayerwiseError(f"eos_ids={ids} must be non-empty and must not contain the mask id {mid}")
    return torch.tensor(ids, dtype=torch.long, device=lm.device)


def first_stop(gen: torch.Tensor, stop_ids: torch.Tensor, mid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of ``gen [B, G]``: (is the text up to the first end-of-text token final, that token's column).

    Final means: the row holds a token of ``stop_ids`` and no position before the first one is still the
    mask id. The sampler only ever writes masked positions, so such a prefix never changes again. Column
    ``G`` where the row holds no stop token.
    """
    is_stop = torch.isin(gen, stop_ids)
    g = gen.shape[1]
    col = torch.arange(g, device=gen.device).expand_as(gen)
    first = torch.where(is_stop, col, torch.full_like(col, g)).min(dim=1).values  # [B]
    first_mask = torch.where(gen == mid, col, torch.full_like(col, g)).min(dim=1).values
    return (first < g) & (first < first_mask), first


def fill_after_stop(gen: torch.Tensor, stop_ids: Sequence[int], mid: int) -> torch.Tensor:
    """``gen [B, G]`` with every position after each row's first token of ``stop_ids`` set to that token
    (rows without one unchanged): the form ``diffusion_generate(..., stop_at_eos=True)`` returns."""
    ids = torch.tensor(list(stop_ids), dtype=torch.long, device=gen.device)
    _, first = first_stop(gen, ids, mid)
    g = gen.shape[1]
    col = torch.arange(g, device=gen.device).expand_as(gen)
    tok = gen.gather(1, first.clamp(max=g - 1).unsqueeze(1)).expand_as(gen)
    return torch.where((col > first.unsqueeze(1)) & (first.unsqueeze(1) < g), tok, gen)


class _GraphedCall:
    """``fn()`` (a model call reading fixed input buffers) replayed from one CUDA graph.

    The first call runs ``fn`` eagerly on a side stream (the warm-up PyTorch asks for before a capture; its
    result is returned), then captures it; later calls replay the graph and return its output buffer,
    valid until the next call. Replay launches the kernels recorded at capture, on the same shapes, so
    the numbers are those of the eager call. A capture that fails (an operation that reads a device value
    on the host, such as a data-dependent branch) makes every later call eager, with a warning.
    """

    def __init__(self, fn: Callable[[], torch.Tensor]) -> None:
        self.fn = fn
        self.graph: Any = None
        self.out: torch.Tensor | None = None
        self.eager = False

    def __call__(self) -> torch.Tensor:
        if self.eager:
            return self.fn()
        if self.graph is not None:
            self.graph.replay()
            assert self.out is not None
            return self.out
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            first = self.fn()
        torch.cuda.current_stream().wait_stream(side)
        first.record_stream(torch.cuda.current_stream())  # used on this stream: not reused before that
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.out = self.fn()
        except RuntimeError as e:  # pragma: no cover - GPU only
            warnings.warn(f"cuda_graph: the model call could not be captured ({str(e).splitlines()[0]}); "
                          "running it eagerly", stacklevel=3)
            self.eager, self.out = True, None
            return first
        self.graph = graph
        return first


def _graph_calls(lm: LoadedModel, x: torch.Tensor, am: torch.Tensor | None, logits_at: Any,
                 pos_buf: torch.Tensor) -> _GraphedCall:
    """The model call of one sampler step on the canvas buffer ``x``, for :class:`_GraphedCall`.

    Without ``logits_at``: the full logits (as the eager step). With it: the aligned logits at the
    positions held in ``pos_buf`` (updated in place before each replay). A padded LLaDA batch gets its
    :func:`layerwise.arch.llada.padding_bias` built once here (the adapter builds the same bias on every
    call after a host check of the mask, which a capture cannot hold).
    """
    kw: dict[str, Any] = {}
    mask = am
    if am is not None and lm.adapter.name == "llada":
        kw, mask = {"attention_bias": llada.padding_bias(am)}, None
    if logits_at is None:
        if kw:
            return _GraphedCall(lambda: lm.model(input_ids=x, **kw).logits)
        return _GraphedCall(lambda: _model_logits(lm, x, mask))
    return _GraphedCall(lambda: logits_at(x, mask, pos_buf, **kw))


@torch.no_grad()
def diffusion_generate(lm: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                       *, gen_length: int, steps: int, block_length: int, temperature: float = 0.0,
                       remasking: str = "low_confidence", generator: torch.Generator | None = None,
                       confidence_dtype: torch.dtype | None = None, gumbel_noise: str = "canvas",
                       sliced_head: bool = False, prefix_cache: bool = False,
                       stop_at_eos: bool = False, eos_ids: Sequence[int] | None = None,
                       cuda_graph: bool = False, progress: bool = False,
                       step_context: StepContext | None = None) -> torch.Tensor:
    """Masked-diffusion generation with LLaDA's semi-autoregressive sampler (``generate.py``).

    Args:
        input_ids: ``[B, P]`` prompt ids, left-padded when the prompts differ in length.
        attention_mask: ``[B, P]`` 1 for real tokens, 0 for padding (None: no padding).
        gen_length: tokens to generate, a multiple of ``block_length``.
        steps: denoising steps in total, split evenly over the ``gen_length / block_length`` blocks.
        block_length: blocks are filled left to right; within the current block, each step unmasks the
            number of tokens given by :func:`num_transfer_tokens`.
        temperature: 0 = argmax; > 0 samples with float64 Gumbel noise (:func:`add_gumbel_noise`).
        remasking: ``"low_confidence"`` unmasks the still-masked block positions whose argmax token has
            the highest probability; ``"random"`` picks them uniformly at random.
        generator: source of randomness for temperature and random remasking (seeded runs repeat). None:
            the global RNG of the model's device, drawn in the order and shapes of ``generate.py``, so
            ``torch.manual_seed(s)`` before either sampler gives both the same tokens.
        confidence_dtype: CHANGES TOKENS when set. None (default): the softmax that ranks positions runs
            in the logits' dtype, as ``generate.py`` (bf16 on GPU, where many confidences tie and
            ``torch.topk`` breaks the ties). ``torch.float64``: rank in float64 (fewer ties).
        gumbel_noise: CHANGES TOKENS at temperature > 0 when ``"block"``. ``"canvas"`` (default) draws
            each step's float64 noise over the whole ``[B, P + G, V]`` canvas as ``generate.py`` does
            (the same random stream); ``"block"`` draws it for the current block only (same
            distribution, ``(P + G) / block_length`` times less memory and time for the noise).
        sliced_head: MAY CHANGE TOKENS (off by default). Run the LM head only on the current block's
            positions (a pre-hook on ``adapter.get_lm_head``). Each logit is the same dot product, but a
            matrix multiply with fewer rows may be given another kernel (another summation order, so
            other low-bits in bf16); measure identity on your hardware before relying on it.
        prefix_cache: APPROXIMATE, off by default. Fast-dLLM's prefix cache: at the first step of each
            block the whole sequence runs and the keys/values of everything before the block are kept;
            the block's other steps run only the block and what follows it. Outputs change (the cached
            prefix no longer sees the newest tokens), so measure accuracy against the exact sampler
            before relying on it. Needs a transformers model with a ``Cache`` (Llama/Qwen2 naming).
            Implies ``sliced_head``.
        stop_at_eos: EXACT for the text up to the first end-of-text token, off by default. Once every row
            holds an end-of-text token (``eos_ids``) with no masked position before its first one, those
            prefixes are final (the sampler only writes masked positions), so the remaining steps and
            blocks are not run. The random stream is still advanced as the full run would (same draws in
            the same shapes, without the model), so later calls sharing ``generator`` or the global RNG
            see the same numbers; with ``gumbel_noise="block"`` at ``temperature > 0`` the draws' shapes
            depend on the tokens after the stop, so there the sampler runs in full. Contract: the result
            equals ``fill_after_stop(full_run, eos_ids, mask_id)``, the full run with every position after
            each row's first end-of-text token set to that token (a row without one is the full run's).
        eos_ids: the end-of-text ids for ``stop_at_eos`` (default: the tokenizer's ``eos_token_id``; LLaDA's
            chat models also end turns with ``<|eot_id|>``, pass it here when the text is cut there too).
        cuda_graph: EXACT, off by default, CUDA only. The model call of each step (whole canvas, or with
            ``sliced_head`` the current block's rows) is captured once per call into a CUDA graph and
            replayed: the same kernels on the same shapes, without the per-step cost of launching them
            from Python. Steps whose rows reach before the block (a masked earlier position) run eagerly.
            A model whose forward cannot be captured runs eagerly, with a warning.
        progress: show a progress bar over steps.
        step_context: None (default) changes nothing. Else ``step_context(step, x)`` is called before the
            model call of every step that runs (``step`` counts ``0 .. steps - 1`` over all blocks, ``x`` is
            the ``[B, P + G]`` canvas the model is about to see; do not modify it) and returns a context
            manager entered around that model call only: e.g. ``skip_layers`` during a range of steps
            (:func:`layerwise.native_skipping.skip_during`), or ``contextlib.nullcontext()`` after
            recording the canvas. Needs ``prefix_cache=False`` and ``cuda_graph=False``.

    Returns:
        ``[B, gen_length]`` generated ids.

    With the defaults the tokens are those of LLaDA's ``generate.py`` at the same batch shape (the model is
    called on the same canvas and attention mask; the same logits, noise, softmax dtype and per-row
    ``torch.topk`` over the full-length confidence row). What is skipped keeps every number the same:
    only the current block's rows go through the Gumbel noise, the softmax and the argmax (each row is
    computed on its own), and the confidence row outside the block is ``-inf`` as in ``generate.py``.
    """
    spb = _check_diffusion_args(gen_length, steps, block_length, temperature, remasking, gumbel_noise)
    x, am, mid = _prepare_canvas(lm, input_ids, attention_mask, gen_length)
    b, p = input_ids.shape
    total = x.shape[1]
    dev = x.device
    num_blocks = gen_length // block_length
    stop = _stop_ids(lm, eos_ids, mid) if stop_at_eos else None
    can_stop = stop is not None and not (temperature > 0 and gumbel_noise == "block")
    done, vocab = False, 0
    if cuda_graph and (dev.type != "cuda" or prefix_cache):
        raise LayerwiseError("cuda_graph=True replays CUDA graphs of the model call: it needs a model on a CUDA "
                             "device and prefix_cache=False; use cuda_graph=False otherwise")
    if step_context is not None and (prefix_cache or cuda_graph):
        raise LayerwiseError("step_context changes the model between steps, which a prefix cache or a CUDA graph "
                             "would not see: use prefix_cache=False and cuda_graph=False with it")
    if prefix_cache:
        if lm.adapter.name != "llama":
            raise LayerwiseError(
                f"prefix_cache=True needs a transformers model with a KV Cache (Llama/Qwen2 naming); "
                f"{lm.adapter.name!r} models are not supported: use prefix_cache=False"
            )
        from transformers import DynamicCache
    bar = tqdm(total=num_blocks * spb, desc="diffusion sampling", disable=not progress, leave=False)
    with sliced_lm_head(lm) if sliced_head or prefix_cache else contextlib.nullcontext() as logits_at:
        pos_buf = torch.arange(p, p + block_length, device=dev)
        graphed = _graph_calls(lm, x, am, logits_at, pos_buf) if cuda_graph else None
        for blk in range(num_blocks):
            start, end = p + blk * block_length, p + (blk + 1) * block_length
            # one host sync per block: topk takes k as a Python int
            ntt = num_transfer_tokens(x[:, start:end] == mid, spb).tolist()
            # cached prefix length: everything before the first raw logit position the block needs
            keep_len = int(logit_positions(torch.tensor([start], device=dev), lm.family))
            cache = None
            for i in range(spb):
                if done:  # advance the random stream as the full run would; the tokens are final
                    if temperature > 0:
                        _rand((b, total, vocab), torch.float64, dev, generator)
                    if remasking == "random":
                        _rand((b, total), torch.float32, dev, generator)
                    bar.update(1)
                    continue
                # the rows that may be unmasked: the block, and (as generate.py, which ranks every masked
                # position before the block's end) earlier ones where a step sampled the mask token itself
                lo = start if prefix_cache else _first_masked(x, mid, p, start)
                rows = slice(lo, end)
                positions = torch.arange(lo, end, device=dev)  # aligned: the tokens of these rows
                masked = x[:, rows] == mid  # [B, R]
                with step_context(blk * spb + i, x) if step_context is not None else contextlib.nullcontext():
                    if logits_at is None:  # the whole canvas through the head, as generate.py
                        raw = graphed() if graphed is not None else _model_logits(lm, x, am)
                        logits = raw.index_select(1, logit_positions(positions, lm.family))  # [B, R, V] aligned
                        del raw
                    elif graphed is not None and lo == start:
                        pos_buf.copy_(positions)
                        logits = graphed()
                    elif not prefix_cache:
                        logits = logits_at(x, am, positions)  # [B, R, V], aligned to the rows
                    elif i == 0:  # full pass that also fills the cache; keep only the prefix's keys/values
                        hf: Any = lm.model  # a transformers model with a config
                        cache = DynamicCache(config=hf.config)
                        logits = logits_at(x, am, positions, past_key_values=cache, use_cache=True)
                        cache.crop(keep_len - cache.get_seq_length())
                    else:  # the block and its suffix only, attending to the cached prefix
                        assert cache is not None
                        logits = logits_at(x[:, keep_len:], am, positions - keep_len, past_key_values=cache,
                                           use_cache=True)
                        cache.crop(keep_len - cache.get_seq_length())
                vocab = logits.shape[-1]
                noise = None
                if temperature > 0:
                    canvas = gumbel_noise == "canvas"
                    shape = (b, total, logits.shape[-1]) if canvas else tuple(logits.shape)
                    noise = _rand(shape, torch.float64, dev, generator, rows if canvas else None)
                x0 = add_gumbel_noise(logits, temperature, noise=noise).argmax(dim=-1)  # [B, R]
                if remasking == "low_confidence":
                    ranked = logits if confidence_dtype is None else logits.to(confidence_dtype)
                    x0_p = F.softmax(ranked, dim=-1).gather(-1, x0.unsqueeze(-1)).squeeze(-1)
                else:  # drawn over the whole canvas, as generate.py
                    x0_p = _rand((b, total), torch.float32, dev, generator, rows)
                # generate.py's confidence row: -inf but at the masked positions before the block's end;
                # torch.topk per row over the full-length row, which decides among ties
                conf = torch.full((b, total), -math.inf, dtype=x0_p.dtype, device=dev)
                conf[:, rows] = torch.where(masked, x0_p, torch.full_like(x0_p, -math.inf))
                transfer = transfer_mask(conf, [row[i] for row in ntt])
                x[:, rows] = torch.where(transfer[:, rows] & masked, x0, x[:, rows])
                bar.update(1)
                if can_stop:
                    assert stop is not None
                    done = bool(first_stop(x[:, p:], stop, mid)[0].all())
    bar.close()
    if stop is None:
        return x[:, p:]
    return fill_after_stop(x[:, p:], stop.tolist(), mid)
