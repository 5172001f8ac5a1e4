"""The controlled triplet: ``ar``, ``dlm`` and ``ar2dlm`` trained on identical data from one init.

- One architecture (transformers ``LlamaForCausalLM``: RMSNorm, SwiGLU, RoPE) for all three;
  ``dlm`` and ``ar2dlm`` set ``config.is_causal = False`` (bidirectional attention, sdpa and eager).
- The same initial weights (built under ``torch.manual_seed(preset.seed)``), the same tokenizer and
  the same data order: the batch at global step ``s`` is the same rows for every objective.
- Objectives: ``ar`` next-token cross-entropy; ``dlm`` LLaDA masked diffusion (t ~ U(eps, 1) per
  sequence, each token masked with probability t, CE on masked tokens weighted 1/t, normalised by
  batch * length; logits at i predict token i); ``ar2dlm`` starts from the ``ar`` snapshot at
  ``branch_frac`` (75%) of the budget and trains the remaining steps with the diffusion loss in
  Dream's shifted form (logits at i-1 predict masked token i; position 0 is never masked).
- AdamW, warmup-stable-decay schedule (the 75% branch point lies in the stable phase), gradient
  clipping, bf16 autocast + SDPA + optional ``torch.compile`` on CUDA, TF32 on.
- Resumable: ``<run>/ckpt/state.pt`` holds model, optimizer, scheduler, step, data position and RNG
  states. The masking noise of step ``s`` comes from a generator seeded by (seed, objective, s), so a
  resumed run is identical to an uninterrupted one.

Layout under ``<cache>/triplet/<preset>/<objective>/``: the final checkpoint (``save_pretrained`` +
tokenizer + ``layerwise_meta.json``), ``train_log.jsonl``, ``ckpt/`` and ``snapshots/step_<n>/``
(model snapshots at 25/50/75/100% of the budget, for alpha-Hill over training).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import data as D
from .config import LayerwiseError, cache_dir as _cache_dir, resolve_device
from .models import META_FILE, flash_sdpa_under_compile

Objective = Literal["ar", "dlm", "ar2dlm"]
OBJECTIVES: tuple[str, ...] = ("ar", "dlm", "ar2dlm")
#: H100 SXM dense bf16 peak (FLOP/s) used for MFU unless told otherwise
H100_BF16_PEAK = 989e12


@dataclass(frozen=True)
class Preset:
    """A triplet configuration: data, architecture, budget and optimisation.

    ``batch_size`` is sequences per optimizer step; ``micro_batch`` splits it into gradient
    accumulation steps (results do not depend on it up to float rounding, so it is left out of the
    config hash, as are ``compile``, ``ckpt_every`` and ``log_every``).
    """

    name: str
    data: D.DataSpec
    d_model: int
    n_layers: int
    n_heads: int
    d_mlp: int
    tokens: int  # training tokens per model
    batch_size: int
    micro_batch: int
    lr: float = 3e-3
    min_lr_frac: float = 0.1
    warmup_frac: float = 0.03
    decay_frac: float = 0.2
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    eps: float = 1e-3  # LLaDA's minimum mask probability
    branch_frac: float = 0.75  # where ar2dlm branches off the ar run
    snapshot_fracs: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    seed: int = 0
    compile: bool | Literal["auto"] = "auto"
    ckpt_every: int = 100
    log_every: int = 10
    val_seqs: int = 32
    #: torch CPU threads while training on CPU (None = leave as is). Small models run faster on one
    #: thread than on two busy-waiting OpenMP threads when the cores are shared (measured ~10x).
    cpu_threads: int | None = 1

    @property
    def seq_len(self) -> int:
        return self.data.seq_len

    @property
    def total_steps(self) -> int:
        return max(1, self.tokens // (self.batch_size * self.seq_len))

    @property
    def branch_step(self) -> int:
        return max(1, round(self.branch_frac * self.total_steps))

    def snapshot_steps(self) -> list[int]:
        steps = {max(1, round(f * self.total_steps)) for f in self.snapshot_fracs} | {self.branch_step}
        return sorted(steps)

    def config_hash(self) -> str:
        d = asdict(self)
        for k in ("micro_batch", "compile", "ckpt_every", "log_every", "cpu_threads"):
            d.pop(k)
        d["data"]["arith_digits"] = D.ARITH_DIGITS  # the arithmetic distribution shapes the training stream
        return D._sha(d)[:16]

    def validate(self) -> None:
        if self.batch_size % self.micro_batch:
            raise LayerwiseError(f"batch_size={self.batch_size} must be a multiple of micro_batch={self.micro_batch}")
        if self.d_model % self.n_heads:
            raise LayerwiseError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if not 0 < self.branch_frac < 1:
            raise LayerwiseError(f"branch_frac={self.branch_frac} must be in (0, 1)")
        if self.branch_frac > 1 - self.decay_frac:
            raise LayerwiseError(f"branch_frac={self.branch_frac} falls in the decay phase (last "
                                 f"{self.decay_frac:.0%}): lower decay_frac or branch_frac")


PRESETS: dict[str, Preset] = {
    # the README default / CI / nbval: synthetic corpus, ~1 minute per model on 2 CPU cores
    "tiny": Preset(name="tiny", data=D.DataSpec(source="synthetic", vocab_size=512, seq_len=128,
                                                 synthetic_docs=4000, arith_frac=0.04,
                                                 tokenizer_train_bytes=500_000),
                   d_model=64, n_layers=4, n_heads=4, d_mlp=176, tokens=600_000, batch_size=16,
                   micro_batch=16, lr=3e-3, ckpt_every=50, log_every=5),
    # the test suite: seconds per model
    "test": Preset(name="test", data=D.DataSpec(source="synthetic", vocab_size=320, seq_len=32,
                                                 synthetic_docs=300, arith_frac=0.05,
                                                 tokenizer_train_bytes=50_000),
                   d_model=32, n_layers=2, n_heads=2, d_mlp=64, tokens=40 * 8 * 32, batch_size=8,
                   micro_batch=4, lr=1e-2, warmup_frac=0.1, ckpt_every=10, log_every=2, val_seqs=8),
    # the published book: Gutenberg, 12 layers, >= 100M tokens per model on one H100
    "gpu": Preset(name="gpu", data=D.DataSpec(source="gutenberg", vocab_size=16384, seq_len=512, arith_frac=0.25,  # issue 3: at 3% arithmetic stayed at chance
                                               tokenizer_train_bytes=50_000_000),
                  d_model=512, n_layers=12, n_heads=8, d_mlp=1408, tokens=100_000_000, batch_size=128,
                  micro_batch=128, lr=2e-3, warmup_frac=0.02, ckpt_every=200, log_every=10, val_seqs=64),
}


def get_preset(preset: str | Preset, **overrides: Any) -> Preset:
    """A preset by name (or as given) with field overrides; data fields may be overridden too."""
    if isinstance(preset, Preset):
        p = preset
    elif preset in PRESETS:
        p = PRESETS[preset]
    else:
        raise LayerwiseError(f"unknown preset {preset!r}: use one of {sorted(PRESETS)} or pass a Preset")
    data_fields = {f.name for f in dataclasses.fields(D.DataSpec)}
    preset_fields = {f.name for f in dataclasses.fields(Preset)}
    top = {k: v for k, v in overrides.items() if k in preset_fields or k not in data_fields}
    dat = {k: v for k, v in overrides.items() if k in data_fields}  # `seed` goes to both
    bad = set(top) - preset_fields
    if bad:
        raise LayerwiseError(f"unknown preset field(s) {sorted(bad)}: Preset has "
                             f"{[f.name for f in dataclasses.fields(Preset)]} and DataSpec {sorted(data_fields)}")
    if dat:
        top["data"] = dataclasses.replace(p.data, **dat)
    p = dataclasses.replace(p, **top) if top else p
    p.validate()
    return p


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise LayerwiseError(f"unknown objective {objective!r}: use one of {OBJECTIVES}")
    return objective


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


def model_config(preset: Preset, tokenizer: Any, objective: str, attn_implementation: str = "sdpa") -> Any:
    """``LlamaConfig`` of the preset; only ``is_causal`` differs between objectives."""
    from transformers import LlamaConfig

    vocab = len(tokenizer)
    vocab = -(-vocab // 64) * 64  # pad to a multiple of 64 for tensor-core friendly matmuls
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=preset.d_model, intermediate_size=preset.d_mlp,
                      num_hidden_layers=preset.n_layers, num_attention_heads=preset.n_heads,
                      num_key_value_heads=preset.n_heads, max_position_embeddings=preset.seq_len,
                      rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                      attn_implementation=attn_implementation)
    cfg.is_causal = objective == "ar"
    return cfg


def init_model(preset: Preset, tokenizer: Any, objective: str, attn_implementation: str = "sdpa") -> torch.nn.Module:
    """A freshly initialised model; identical weights for every objective (seeded, same shapes)."""
    from transformers import LlamaForCausalLM

    cfg = model_config(preset, tokenizer, objective, attn_implementation)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(preset.seed)
        return LlamaForCausalLM(cfg)


def n_params(model: torch.nn.Module, non_embedding: bool = True) -> int:
    """Parameter count; ``non_embedding`` drops the input embedding (the LM head matmul is compute)."""
    emb = model.get_input_embeddings().weight.numel() if non_embedding else 0
    return sum(p.numel() for p in model.parameters()) - emb


def flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    """Training FLOPs per token: ``6 * N_nonembedding + 12 * n_layers * d_model * seq_len``.

    The second term is attention's score and value matmuls (PaLM's appendix B convention, counted
    in full even for causal masks).
    """
    c = model.config
    return 6.0 * n_params(model) + 12.0 * c.num_hidden_layers * c.hidden_size * seq_len


# ---------------------------------------------------------------------------------------------
# Objectives
# ---------------------------------------------------------------------------------------------


def _token_ce_eager(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy in fp32: ``logits [N, V]``, ``targets [N]`` -> ``[N]``."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


_token_ce_compiled: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None


def token_ce(logits: torch.Tensor, targets: torch.Tensor, compiled: bool = False) -> torch.Tensor:
    """Per-token cross-entropy; ``compiled`` fuses the fp32 upcast into the softmax kernels
    (eagerly, ``logits.float()`` writes and re-reads an fp32 copy of ``[B*L, V]``: ~4 GB per
    gpu-preset micro-batch, ~10% of a training step on an H100)."""
    global _token_ce_compiled
    if not compiled:
        return _token_ce_eager(logits, targets)
    if _token_ce_compiled is None:
        _token_ce_compiled = torch.compile(_token_ce_eager)
    return _token_ce_compiled(logits, targets)


def ar_loss(model: torch.nn.Module, ids: torch.Tensor, compiled: bool = False) -> torch.Tensor:
    """Next-token cross-entropy. ``ids``: ``[B, L]``; logits ``[B, L, V]``, position i predicts i+1."""
    logits = model(input_ids=ids, use_cache=False).logits
    return token_ce(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), compiled).mean()


def diffusion_loss(model: torch.nn.Module, ids: torch.Tensor, mask_id: int, eps: float, gen: torch.Generator,
                   shifted: bool, compiled: bool = False) -> torch.Tensor:
    """Masked-diffusion loss (LLaDA's ``forward_process`` + 1/t weighting).

    ``t ~ U(0,1)`` per sequence, ``p = (1 - eps) t + eps``; each token is masked with probability p;
    the loss is ``sum_masked CE / p`` over ``B * L``. With ``shifted`` (Dream / ``ar2dlm``), position 0
    is never masked and logits at i-1 predict token i, so an AR model's head is reused as is.
    """
    b, l = ids.shape
    t = torch.rand(b, 1, device=ids.device, generator=gen)
    p = (1 - eps) * t + eps  # [B, 1]
    masked = torch.rand(b, l, device=ids.device, generator=gen) < p  # [B, L]
    if shifted:
        masked[:, 0] = False
    noisy = torch.where(masked, torch.full_like(ids, mask_id), ids)
    logits = model(input_ids=noisy, use_cache=False).logits  # [B, L, V]
    if shifted:
        logits, targets, m = logits[:, :-1], ids[:, 1:], masked[:, 1:]
    else:
        targets, m = ids, masked
    # CE at every position, zero weight where unmasked: no boolean indexing, hence no host sync
    # (a data-dependent shape) inside a compiled training step
    ce = token_ce(logits.flatten(0, 1), targets.flatten(), compiled).view_as(m)
    return (ce * m / p).sum() / (b * l)


def objective_loss(objective: str, model: torch.nn.Module, ids: torch.Tensor, mask_id: int | None, eps: float,
                   gen: torch.Generator, compiled: bool = False) -> torch.Tensor:
    """The training loss of ``objective``; ``compiled``: use the compiled cross-entropy (training)."""
    if objective == "ar":
        return ar_loss(model, ids, compiled)
    assert mask_id is not None
    return diffusion_loss(model, ids, mask_id, eps, gen, shifted=objective == "ar2dlm", compiled=compiled)


# ---------------------------------------------------------------------------------------------
# Schedule
# ---------------------------------------------------------------------------------------------


def wsd_lambda(total: int, warmup: int, decay_frac: float, min_frac: float) -> Callable[[int], float]:
    """Warmup-stable-decay multiplier: linear warmup, flat, then linear decay to ``min_frac``
    over the last ``decay_frac`` of ``total`` steps."""
    decay_start = total - max(1, round(decay_frac * total))

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if step < decay_start:
            return 1.0
        return 1.0 - (1.0 - min_frac) * (step - decay_start + 1) / max(1, total - decay_start)
    return f


# ---------------------------------------------------------------------------------------------
# Paths and metadata
# ---------------------------------------------------------------------------------------------


def triplet_dir(preset: str | Preset, cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache>/triplet/<preset name>``; a registered preset changed by overrides that alter its
    config hash gets ``<name>-<hash8>``, so it never clobbers (or is mistaken for) the registered one."""
    if isinstance(preset, Preset):
        name = preset.name
        if name in PRESETS and preset.config_hash() != PRESETS[name].config_hash():
            name = f"{name}-{preset.config_hash()[:8]}"
    else:
        name = preset
    return _cache_dir(cache_dir) / "triplet" / name


def run_dir(preset: str | Preset, objective: str, cache_dir: str | os.PathLike | None = None) -> Path:
    return triplet_dir(preset, cache_dir) / check_objective(objective)


def is_complete(path: Path, preset: Preset | None = None) -> bool:
    meta = path / META_FILE
    if not meta.is_file():
        return False
    m = json.loads(meta.read_text())
    if preset is not None and m.get("config_hash") != preset.config_hash():
        raise LayerwiseError(
            f"{path} holds a {m.get('preset')!r} checkpoint trained with config {m.get('config_hash')}, "
            f"but this preset's config hash is {preset.config_hash()}: delete that folder or use another cache_dir"
        )
    return bool(m.get("complete"))


def read_log(path: Path) -> list[dict[str, Any]]:
    """The run's ``train_log.jsonl`` (``path`` is the run dir or the file)."""
    f = path / "train_log.jsonl" if path.is_dir() else path
    return [json.loads(x) for x in f.read_text().splitlines() if x.strip()] if f.is_file() else []


@contextlib.contextmanager
def _quiet_hf():
    """Hide transformers' per-shard progress bars while saving/loading small checkpoints."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _save_model(model: torch.nn.Module, tokenizer: Any, out: Path, meta: dict[str, Any]) -> None:
    """``save_pretrained`` + tokenizer + metadata, written to a temp dir then moved in place."""
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    with _quiet_hf():
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)


def _finalise(run: Path, src: Path) -> None:
    """Copy a model folder's files into the run dir (meta last, so 'complete' implies the weights)."""
    for f in sorted(src.iterdir(), key=lambda p: p.name == META_FILE):
        if f.is_file():
            shutil.copy2(f, run / f.name)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    path: Path
    steps: int
    complete: bool
    log: list[dict[str, Any]] = field(default_factory=list)


def _step_generator(seed: int, objective: str, step: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(D._sha(seed, objective, step)[:15], 16))
    return g


def _use_compile(preset: Preset, device: torch.device) -> bool:
    return device.type == "cuda" if preset.compile == "auto" else bool(preset.compile)


@torch.no_grad()
def validation_loss(objective: str, model: torch.nn.Module, tokenizer: Any, preset: Preset, device: torch.device,
                    data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None) -> float:
    """The objective's loss on ``preset.val_seqs`` held-out sequences with fixed noise (seed 0)."""
    ids = D.eval_sequences(tokenizer, preset.data.source, preset.val_seqs, preset.seq_len, data_dir=data_dir,
                           cache_dir=cache_dir).to(device)
    gen = _step_generator(preset.seed, "val", 0, device)
    was = model.training
    model.eval()
    losses = []
    for chunk in ids.split(preset.micro_batch):
        with _autocast(device):
            losses.append(objective_loss(objective, model, chunk, tokenizer.mask_token_id, preset.eps, gen).item())
    model.train(was)
    return float(np.mean(losses))


def compile_for_training(model: torch.nn.Module) -> Callable[..., Any]:
    """``torch.compile(model)`` whose calls trace with :func:`models.flash_sdpa_under_compile`, so the
    compiled graph keeps SDPA's flash kernel (no materialised all-true mask; see there)."""
    compiled = torch.compile(model)

    def fwd(*args: Any, **kwargs: Any) -> Any:
        with flash_sdpa_under_compile():
            return compiled(*args, **kwargs)
    return fwd


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


@contextlib.contextmanager
def cpu_threads(n: int | None, device: torch.device):
    """Temporarily set torch's intra-op CPU threads (no-op on CUDA or when ``n`` is None)."""
    if device.type != "cpu" or n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def train(objective: str, preset: str | Preset = "tiny", *, data_dir: str | os.PathLike | None = None,
          cache_dir: str | os.PathLike | None = None, device: str | torch.device = "auto", progress: bool = True,
          stop_after: int | None = None, peak_flops: float | None = H100_BF16_PEAK,
          train_data: D.TrainData | None = None) -> RunResult:
    """Train (or resume, or skip if done) one objective of the triplet.

    ``stop_after``: stop after this many optimizer steps *of this call* (a checkpoint is saved), as
    if the job had been killed; calling again resumes. ``peak_flops``: accelerator peak for MFU
    (None on CPU). Returns the run directory; it holds the final checkpoint once ``complete``.
    """
    check_objective(objective)
    p = get_preset(preset)
    dev = resolve_device(device)
    run = run_dir(p, objective, cache_dir)
    if is_complete(run, p):
        return RunResult(run, json.loads((run / META_FILE).read_text())["steps"], True, read_log(run))
    run.mkdir(parents=True, exist_ok=True)
    with _run_lock(run), cpu_threads(p.cpu_threads, dev):
        if is_complete(run, p):  # another process finished it while we waited for the lock
            return RunResult(run, json.loads((run / META_FILE).read_text())["steps"], True, read_log(run))
        return _train(objective, p, run, dev, data_dir, cache_dir, progress, stop_after, peak_flops, train_data)


@contextlib.contextmanager
def _run_lock(run: Path):
    """An exclusive advisory lock on ``<run>/.lock``: chapters executed in parallel that all call
    ``ensure_triplet`` train each run once; the others wait, then load it."""
    import fcntl

    with open(run / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _train(objective: str, p: Preset, run: Path, dev: torch.device, data_dir: str | os.PathLike | None,
           cache_dir: str | os.PathLike | None, progress: bool, stop_after: int | None, peak_flops: float | None,
           train_data: D.TrainData | None) -> RunResult:
    run.mkdir(parents=True, exist_ok=True)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    td = train_data or D.prepare(p.data, data_dir=data_dir, cache_dir=cache_dir, progress=progress)
    tok = td.tokenizer
    mask_id = D.require_mask_token(tok, objective) if objective != "ar" else tok.mask_token_id

    # -- steps of this run: ar2dlm covers [branch_step, total_steps) of the shared data stream
    start_global = p.branch_step if objective == "ar2dlm" else 0
    n_steps = p.total_steps - start_global
    warmup = max(1, round(p.warmup_frac * p.total_steps))
    if objective == "ar2dlm":  # its own short warm-up and decay over its own steps
        warmup = min(warmup, max(1, n_steps // 10))

    if objective == "ar2dlm":
        from transformers import LlamaForCausalLM

        branch = run_dir(p, "ar", cache_dir) / "snapshots" / f"step_{p.branch_step}"
        if not (branch / META_FILE).is_file():
            raise LayerwiseError(f"ar2dlm starts from the ar run's snapshot {branch}, which is missing: train "
                                 "objective 'ar' first (ensure_triplet does this in order)")
        with _quiet_hf():
            model = LlamaForCausalLM.from_pretrained(branch, dtype=torch.float32, is_causal=False)
    else:
        model = init_model(p, tok, objective)
    model.to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, betas=p.betas, weight_decay=p.weight_decay,
                            fused=dev.type == "cuda")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, wsd_lambda(n_steps, warmup, p.decay_frac, p.min_lr_frac))
    step, order_digest = 0, D._sha("order", p.seed)
    if objective == "ar2dlm":  # continue the ar run's digest: the same stream of batches overall
        order_digest = json.loads((branch / META_FILE).read_text())["data"]["order_digest"]
    ckpt = run / "ckpt" / "state.pt"
    if ckpt.is_file():
        st = torch.load(ckpt, map_location=dev, weights_only=False)
        if st["config_hash"] != p.config_hash():
            raise LayerwiseError(f"checkpoint {ckpt} belongs to another config: delete {run} or use another cache_dir")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        step, order_digest = st["step"], st["order_digest"]
        torch.set_rng_state(st["rng"]["torch"])
        np.random.set_state(st["rng"]["numpy"])
        random.setstate(st["rng"]["python"])
    # keep only log lines up to the checkpoint (a killed run may have logged further)
    log_path = run / "train_log.jsonl"
    log = [r for r in read_log(log_path) if r["step"] <= step]
    log_path.write_text("".join(json.dumps(r) + "\n" for r in log))

    # keep `model` (uncompiled) for state_dict / save_pretrained
    compiled = _use_compile(p, dev)
    fwd = compile_for_training(model) if compiled else model
    fpt = flops_per_token(model, p.seq_len)
    accum = p.batch_size // p.micro_batch
    tokens_per_step = p.batch_size * p.seq_len
    snaps = set(s - start_global for s in p.snapshot_steps() if s > start_global)

    def save_ckpt() -> None:
        ckpt.parent.mkdir(exist_ok=True)
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                 "step": step, "order_digest": order_digest, "config_hash": p.config_hash(),
                 "data_position": (start_global + step) * p.batch_size,
                 "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}}
        tmp = ckpt.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(ckpt)

    def meta(at_step: int, complete: bool, **extra: Any) -> dict[str, Any]:
        global_step = start_global + at_step
        return {"objective": objective, "preset": p.name, "seed": p.seed, "config_hash": p.config_hash(),
                "steps": at_step, "global_step": global_step, "tokens_seen": global_step * tokens_per_step,
                "own_tokens": at_step * tokens_per_step, "mask_token_id": mask_id,
                "init": "ar snapshot at step %d" % p.branch_step if objective == "ar2dlm" else f"seed {p.seed}",
                "data": dict(td.info, spec=asdict(p.data), order_digest=order_digest),
                "sampler": {"gen_length": 32, "steps": 32, "block_length": 8} if p.seq_len <= 128 else
                           {"gen_length": 64, "steps": 64, "block_length": 16},
                "n_params": n_params(model, non_embedding=False), "n_params_nonembedding": n_params(model),
                "flops_per_token": fpt, "complete": complete, **extra}

    bar = tqdm(total=n_steps, initial=step, desc=f"train {p.name}/{objective}", disable=not progress, unit="step")
    t_last, tok_since, done_now = time.perf_counter(), 0, 0
    loss_acc = torch.zeros((), device=dev)  # summed on device: no host sync except at log points
    while step < n_steps:
        if stop_after is not None and done_now >= stop_after:
            break
        g_step = start_global + step
        idx = td.indices(g_step * p.batch_size, p.batch_size)
        order_digest = D._sha(order_digest, idx.tobytes())[:32]
        batch = td.rows(idx).to(dev, non_blocking=True)
        gen = _step_generator(p.seed, objective, g_step, dev)
        opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=dev)
        for mb in batch.split(p.micro_batch):
            with _autocast(dev):
                loss = objective_loss(objective, fwd, mb, mask_id, p.eps, gen, compiled) / accum
            loss.backward()
            total += loss.detach()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), p.grad_clip)
        opt.step()
        sched.step()
        step += 1
        done_now += 1
        tok_since += tokens_per_step
        loss_acc += total
        bar.update(1)
        if step % p.log_every == 0 or step == n_steps:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            tps = tok_since / max(now - t_last, 1e-9)
            n_avg = step % p.log_every or p.log_every
            rec = {"step": step, "global_step": g_step + 1, "tokens": (g_step + 1) * tokens_per_step,
                   "loss": float(loss_acc) / n_avg, "lr": sched.get_last_lr()[0], "grad_norm": float(gnorm),
                   "tokens_per_s": tps,
                   "mfu": (tps * fpt / peak_flops) if (dev.type == "cuda" and peak_flops) else None}
            with log_path.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            log.append(rec)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", tok_s=f"{tps:,.0f}")
            t_last, tok_since, loss_acc = now, 0, torch.zeros((), device=dev)
        if step in snaps:
            snap = run / "snapshots" / f"step_{start_global + step}"
            _save_model(model, tok, snap, meta(step, False, snapshot=True))
        if step % p.ckpt_every == 0 or step == n_steps or (stop_after is not None and done_now >= stop_after):
            save_ckpt()
    bar.close()
    if step < n_steps:
        return RunResult(run, step, False, log)
    val = validation_loss(objective, model, tok, p, dev, data_dir, cache_dir)
    final = run / "snapshots" / f"step_{p.total_steps}"
    m = meta(step, True, val_loss=val, final_train_loss=log[-1]["loss"] if log else None)
    _save_model(model, tok, final, dict(m, complete=False, snapshot=True))
    (run / META_FILE).unlink(missing_ok=True)
    _finalise(run, final)
    (run / META_FILE).write_text(json.dumps(m, indent=1))
    return RunResult(run, step, True, log)


def ensure_triplet(preset: str | Preset = "tiny", data_dir: str | os.PathLike | None = None,
                   cache_dir: str | os.PathLike | None = None, device: str | torch.device = "auto",
                   progress: bool = True, objectives: tuple[str, ...] = OBJECTIVES,
                   **overrides: Any) -> dict[str, Path]:
    """Train whatever is missing of the triplet (resuming killed runs) and return
    ``{objective: final checkpoint dir}``. Cheap when everything is cached.

    ``overrides`` replace preset fields (e.g. ``tokens=...``, ``micro_batch=...``).
    """
    p = get_preset(preset, **overrides)
    for o in objectives:
        check_objective(o)
    todo = [o for o in OBJECTIVES if o in objectives or (o == "ar" and "ar2dlm" in objectives)]
    paths = {o: run_dir(p, o, cache_dir) for o in todo}
    if all(is_complete(paths[o], p) for o in todo):
        return {o: paths[o] for o in objectives}
    td = D.prepare(p.data, data_dir=data_dir, cache_dir=cache_dir, progress=progress)
    for o in todo:
        res = train(o, p, data_dir=data_dir, cache_dir=cache_dir, device=device, progress=progress, train_data=td)
        if not res.complete:
            raise LayerwiseError(f"training {o} stopped early at step {res.steps}: run ensure_triplet again to resume")
    return {o: paths[o] for o in objectives}


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m layerwise.training --preset gpu --objective all``."""
    ap = argparse.ArgumentParser(prog="layerwise-train", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny", help=f"one of {sorted(PRESETS)}")
    ap.add_argument("--objective", default="all", help="ar, dlm, ar2dlm or all")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tokens", type=int, help="training tokens per model")
    ap.add_argument("--batch-size", type=int, help="sequences per optimizer step")
    ap.add_argument("--micro-batch", type=int, help="sequences per forward (gradient accumulation)")
    ap.add_argument("--lr", type=float)
    ap.add_argument("--compile", choices=["auto", "on", "off"], default=None)
    ap.add_argument("--stop-after", type=int, help="stop after N steps (resume by running again)")
    ap.add_argument("--peak-flops", type=float, default=H100_BF16_PEAK, help="accelerator peak FLOP/s for MFU")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    ov: dict[str, Any] = {k: v for k, v in {"tokens": a.tokens, "batch_size": a.batch_size,
                                            "micro_batch": a.micro_batch, "lr": a.lr}.items() if v is not None}
    if a.compile is not None:
        ov["compile"] = {"auto": "auto", "on": True, "off": False}[a.compile]
    p = get_preset(a.preset, **ov)
    objs = OBJECTIVES if a.objective == "all" else (check_objective(a.objective),)
    if a.stop_after is None:
        paths = ensure_triplet(p, a.data_dir, a.cache_dir, a.device, not a.no_progress, objectives=objs)
        for o, path in paths.items():
            m = json.loads((path / META_FILE).read_text())
            print(f"{o}: {path}  steps={m['steps']} tokens_seen={m['tokens_seen']:,} val_loss={m['val_loss']:.4f}")
        return
    for o in ([o for o in OBJECTIVES if o in objs]):
        r = train(o, p, data_dir=a.data_dir, cache_dir=a.cache_dir, device=a.device, progress=not a.no_progress,
                  stop_after=a.stop_after, peak_flops=a.peak_flops)
        print(f"{o}: {r.path} steps={r.steps} complete={r.complete}")


if __name__ == "__main__":
    main()
