"""The training loop: train (or resume) one objective, or the whole triplet."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import data as D
from ..config import LayerwiseError, progress_disabled, resolve_device
from ..diffusion import Objective, find_mask_token_id, mask_token_id
from ..models import META_FILE
from .compile import _autocast, compile_for_training, cpu_threads
from .losses import OBJECTIVES, objective_loss, wsd_lambda
from .presets import H100_BF16_PEAK, Preset, flops_per_token, get_preset, init_model, n_params
from .runs import _finalise, _quiet_hf, _save_model, is_complete, parse_run, read_log, run_dir, run_name, run_names


@dataclass
class RunResult:
    """What :func:`train` did: the run directory, optimizer steps done, whether it finished, its log."""

    path: Path
    steps: int
    complete: bool
    log: list[dict[str, Any]] = field(default_factory=list)


def _step_generator(seed: int, objective: str, step: int, device: torch.device) -> torch.Generator:
    """The masking noise of one optimizer step, seeded by (seed, objective, step): a resumed run draws
    the same noise as an uninterrupted one."""
    g = torch.Generator(device=device)
    g.manual_seed(int(D._sha(seed, objective, step)[:15], 16))
    return g


def order_seed(preset: Preset) -> int:
    """The seed of the training-row order: the data's own seed for training seed 0 (the order every
    preset has always used), else a value derived from (data seed, training seed)."""
    if preset.seed == 0:
        return preset.data.seed
    return int(D._sha("order", preset.data.seed, preset.seed)[:15], 16)


def ordered(td: D.TrainData, preset: Preset) -> D.TrainData:
    """``td`` read in the order of ``preset``'s training seed (the same rows, no copy)."""
    s = order_seed(preset)
    return td if td.spec.seed == s else dataclasses.replace(td, spec=dataclasses.replace(td.spec, seed=s))


def _use_compile(preset: Preset, device: torch.device) -> bool:
    return device.type == "cuda" if preset.compile == "auto" else bool(preset.compile)


@torch.no_grad()
def validation_loss(objective: Objective | str, model: torch.nn.Module, tokenizer: Any, preset: Preset,
                    device: torch.device, data_dir: str | os.PathLike | None = None,
                    cache_dir: str | os.PathLike | None = None) -> float:
    """The objective's loss on ``preset.val_seqs`` held-out sequences with fixed noise (the same for
    every training seed)."""
    ids = D.eval_sequences(tokenizer, preset.data.source, preset.val_seqs, preset.seq_len, data_dir=data_dir,
                           cache_dir=cache_dir).to(device)
    gen = _step_generator(0, "val", 0, device)
    mask_id = find_mask_token_id(tokenizer)
    was = model.training
    model.eval()
    losses = []
    for chunk in ids.split(preset.micro_batch):
        with _autocast(device):
            losses.append(objective_loss(objective, model, chunk, mask_id, preset.eps, gen).item())
    model.train(was)
    return float(np.mean(losses))


def train(objective: Objective | str, preset: str | Preset = "tiny", *, data_dir: str | os.PathLike | None = None,
          cache_dir: str | os.PathLike | None = None, device: str | torch.device = "auto", progress: bool = True,
          stop_after: int | None = None, peak_flops: float | None = H100_BF16_PEAK,
          train_data: D.TrainData | None = None) -> RunResult:
    """Train (or resume, or skip if done) one run of the triplet.

    ``objective``: ``ar``, ``dlm``, ``ar2dlm`` (branched at ``preset.branch_frac``) or an extra branch
    point's run name such as ``ar2dlm_b25`` (see :func:`~layerwise.training.run_name`).
    ``stop_after``: stop after this many optimizer steps *of this call* (a checkpoint is saved), as
    if the job had been killed; calling again resumes. ``peak_flops``: accelerator peak for MFU
    (None on CPU). Returns the run directory; it holds the final checkpoint once ``complete``.
    """
    p = get_preset(preset)
    objective, branch_frac = parse_run(objective, p)
    dev = resolve_device(device)
    run = run_dir(p, run_name(objective, branch_frac, p), cache_dir)
    if is_complete(run, p):
        return RunResult(run, json.loads((run / META_FILE).read_text())["steps"], True, read_log(run))
    run.mkdir(parents=True, exist_ok=True)
    with _run_lock(run), cpu_threads(p.cpu_threads, dev):
        if is_complete(run, p):  # another process finished it while we waited for the lock
            return RunResult(run, json.loads((run / META_FILE).read_text())["steps"], True, read_log(run))
        return _train(objective, p, run, dev, data_dir, cache_dir, progress, stop_after, peak_flops, train_data,
                      branch_frac)


@contextlib.contextmanager
def _run_lock(run: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``<run>/.lock``: chapters executed in parallel that all call
    ``ensure_triplet`` train each run once; the others wait, then load it."""
    import fcntl

    with open(run / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _train(objective: Objective, p: Preset, run: Path, dev: torch.device, data_dir: str | os.PathLike | None,
           cache_dir: str | os.PathLike | None, progress: bool, stop_after: int | None, peak_flops: float | None,
           train_data: D.TrainData | None, branch_frac: float | None = None) -> RunResult:
    run.mkdir(parents=True, exist_ok=True)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    td = ordered(train_data or D.prepare(p.data, data_dir=data_dir, cache_dir=cache_dir, progress=progress), p)
    tok = td.tokenizer
    mask_id: int | None
    if objective.is_diffusion:
        mask_id = mask_token_id(tok, purpose=f"objective {objective.value!r}", alternative="objective='ar'")
    else:
        mask_id = find_mask_token_id(tok)
    branches = objective is Objective.AR2DLM

    # -- steps of this run: ar2dlm covers [branch step, total_steps) of the shared data stream
    branch_step = p.step_at(branch_frac if branch_frac is not None else p.branch_frac)
    start_global = branch_step if branches else 0
    n_steps = p.total_steps - start_global
    warmup = max(1, round(p.warmup_frac * p.total_steps))
    if branches:  # its own short warm-up and decay over its own steps
        warmup = min(warmup, max(1, n_steps // 10))

    model: torch.nn.Module
    if branches:
        from transformers import LlamaForCausalLM

        branch = run_dir(p, Objective.AR, cache_dir) / "snapshots" / f"step_{branch_step}"
        if not (branch / META_FILE).is_file():
            done = is_complete(run_dir(p, Objective.AR, cache_dir), p)
            raise LayerwiseError(
                f"{run.name} starts from the ar run's snapshot {branch}, which is missing: " + (
                    "the ar run finished without that branch point; delete its folder and train it again with "
                    "this preset's branch_fracs" if done else
                    "train objective 'ar' first (ensure_triplet does this in order)"))
        with _quiet_hf():
            model = LlamaForCausalLM.from_pretrained(branch, dtype=torch.float32, is_causal=False)
    else:
        model = init_model(p, tok, objective)
    model.to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, betas=p.betas, weight_decay=p.weight_decay,
                            fused=dev.type == "cuda")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, wsd_lambda(n_steps, warmup, p.decay_frac, p.min_lr_frac))
    step, order_digest = 0, D._sha("order", p.seed)
    if branches:  # continue the ar run's digest: the same stream of batches overall
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
        return {"objective": objective.value, "preset": p.name, "seed": p.seed, "config_hash": p.config_hash(),
                "steps": at_step, "global_step": global_step, "tokens_seen": global_step * tokens_per_step,
                "own_tokens": at_step * tokens_per_step, "mask_token_id": mask_id,
                "run": run.name, "branch_frac": branch_frac if branches else None,
                "init": f"ar snapshot at step {branch_step}" if branches else f"seed {p.seed}",
                "device": dev.type, "order_seed": order_seed(p),
                "data": dict(td.info, spec=asdict(p.data), order_digest=order_digest),
                "sampler": {"gen_length": 32, "steps": 32, "block_length": 8} if p.seq_len <= 128 else
                           {"gen_length": 64, "steps": 64, "block_length": 16},
                "n_params": n_params(model, non_embedding=False), "n_params_nonembedding": n_params(model),
                "flops_per_token": fpt, "complete": complete, **extra}

    bar = tqdm(total=n_steps, initial=step, desc=f"train {p.name}/{objective}", unit="step",
               disable=progress_disabled(not progress))
    t_last, tok_since, done_now = time.perf_counter(), 0, 0
    loss_acc = torch.zeros((), device=dev)  # summed on device: no host sync except at log points
    while step < n_steps:
        if stop_after is not None and done_now >= stop_after:
            break
        g_step = start_global + step
        idx = td.indices(g_step * p.batch_size, p.batch_size)
        order_digest = D._sha(order_digest, idx.tobytes())[:32]
        batch = td.rows(idx).to(dev, non_blocking=True)
        gen = _step_generator(p.seed, objective.value, g_step, dev)
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
                   progress: bool = True, objectives: Sequence[Objective | str] = OBJECTIVES,
                   **overrides: Any) -> dict[str, Path]:
    """Train whatever is missing of the triplet (resuming killed runs) and return
    ``{run name: final checkpoint dir}`` (plain-string keys, in the order asked). Cheap when
    everything is cached.

    ``objectives``: objectives or run names (``ar2dlm_b25``; :func:`~layerwise.training.run_names`
    lists a preset's runs, extra branch points included); the ``ar`` run is trained first whenever
    an ``ar2dlm`` run is asked for. ``overrides`` replace preset fields (e.g. ``tokens=...``,
    ``micro_batch=...``, ``seed=1``).
    """
    p = get_preset(preset, **overrides)
    asked = [run_name(*parse_run(o, p), p) for o in objectives]
    known = run_names(p)
    extra = [r for r in asked if r not in known]
    if extra:  # a branch point the preset does not list: train it all the same, after the others
        known += extra
    wanted = set(asked) | ({Objective.AR.value} if any(r.startswith("ar2dlm") for r in asked) else set())
    todo = [r for r in known if r in wanted]
    paths = {r: run_dir(p, r, cache_dir) for r in todo}
    if all(is_complete(paths[r], p) for r in todo):
        return {r: paths[r] for r in asked}
    td = D.prepare(p.data, data_dir=data_dir, cache_dir=cache_dir, progress=progress)
    for r in todo:
        res = train(r, p, data_dir=data_dir, cache_dir=cache_dir, device=device, progress=progress, train_data=td)
        if not res.complete:
            raise LayerwiseError(f"training {r} stopped early at step {res.steps}: run ensure_triplet again to resume")
    return {r: paths[r] for r in asked}
