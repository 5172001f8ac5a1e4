"""Diagnostic for issue 3: how fast do `ar` and the masked-diffusion objective learn held-out 2-digit
arithmetic from a pure arithmetic stream, and which knob (steps, learning rate, batch, width, loss
weighting, mask-ratio range) lets the diffusion objective learn it? Not part of the book; its log is
committed under lab/logs/.

Each run trains a small Llama (the triplet's architecture) from the same seed on packed arithmetic
documents (the training split only) and, every ``--eval-every`` steps, scores 128 held-out bare
problems with the answer's length given (one forward pass): ``ar`` teacher-forced argmax, the
diffusion objectives argmax at the masked answer positions. It reports exact match and the accuracy
of the first and last answer digit.

    python lab/gpu/arith_sweep.py --objective dlm --steps 10000 --tag dlm-base
    python lab/gpu/arith_sweep.py --launch   # the sweep of the log, in parallel on one GPU
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from layerwise import data as D
from layerwise import training as T

#: the sweep of the committed log: tag -> arguments
SWEEP: dict[str, list[str]] = {
    "ar": ["--objective", "ar"],
    "dlm": ["--objective", "dlm"],
    "dlm-lr5e-4": ["--objective", "dlm", "--lr", "5e-4"],
    "dlm-b128": ["--objective", "dlm", "--batch", "128"],
    "dlm-d256-l6": ["--objective", "dlm", "--d-model", "256", "--layers", "6"],
    "dlm-noweight": ["--objective", "dlm", "--weighting", "none"],
    "dlm-tmax0.5": ["--objective", "dlm", "--t-max", "0.5"],
    "dlm-sft": ["--objective", "dlm", "--answer-only", "1.0"],
    "dlm-mix": ["--objective", "dlm", "--answer-only", "0.5"],
    "dlm-b128-lr1e-3": ["--objective", "dlm", "--batch", "128", "--lr", "1e-3"],
    "ar2dlm-scratch": ["--objective", "ar2dlm"],
}


def answer_spans(rows: np.ndarray, tok) -> np.ndarray:
    """``[N, L]`` bool: the tokens of each answer (after "Answer:" up to the line's end)."""
    ans_ids = tok(" Answer:", add_special_tokens=False)["input_ids"]
    stop = set(tok("\n", add_special_tokens=False)["input_ids"]) | {tok.convert_tokens_to_ids(D.EOT)}
    k = len(ans_ids)
    start = np.ones(rows.shape, bool)
    start[:, :k] = False
    for j, t in enumerate(ans_ids):  # start[i] when tokens i-k .. i-1 spell " Answer:"
        start[:, k:] &= rows[:, j: rows.shape[1] - k + j] == t
    is_stop = np.isin(rows, list(stop))
    out = np.zeros(rows.shape, bool)
    inside = np.zeros(len(rows), bool)
    for i in range(rows.shape[1]):
        inside = (inside | start[:, i]) & ~is_stop[:, i]
        out[:, i] = inside
    return out


def diffusion_loss(model: torch.nn.Module, ids: torch.Tensor, mask_id: int, gen: torch.Generator, shifted: bool,
                   weighting: str, t_max: float, answers: torch.Tensor | None = None, answer_only: float = 0.0,
                   eps: float = 1e-3) -> torch.Tensor:
    """``training.diffusion_loss`` with knobs for the sweep: the 1/t weighting on or off, the mask
    ratio's upper end (t ~ U(0, t_max)), and ``answer_only``: that fraction of rows is noised as in
    LLaDA's SFT (only answer tokens are ever masked; the loss is normalised by the answer tokens).
    With weighting="1/t", t_max=1 and answer_only=0 it is the library's."""
    if weighting == "1/t" and t_max == 1.0 and not answer_only:
        return T.diffusion_loss(model, ids, mask_id, eps, gen, shifted)
    b, l = ids.shape
    p = (1 - eps) * t_max * torch.rand(b, 1, device=ids.device, generator=gen) + eps
    masked = torch.rand(b, l, device=ids.device, generator=gen) < p
    sft = torch.rand(b, 1, device=ids.device, generator=gen) < answer_only
    if answers is not None and answer_only:
        masked = torch.where(sft, masked & answers, masked)
    if shifted:
        masked[:, 0] = False
    logits = model(input_ids=torch.where(masked, torch.full_like(ids, mask_id), ids)).logits
    if shifted:
        logits, ids, masked = logits[:, :-1], ids[:, 1:], masked[:, 1:]
    ce = F.cross_entropy(logits.flatten(0, 1).float(), ids.flatten(), reduction="none").view_as(masked)
    if answer_only and answers is not None:
        a = answers[:, 1:] if shifted else answers
        denom = torch.where(sft, a.sum(1, keepdim=True).clamp(min=1), torch.full_like(p, l)).float()
        return ((ce * masked / p) / denom).sum() / b
    if weighting == "1/t":
        return (ce * masked / p).sum() / (b * l)
    return (ce * masked).sum() / masked.sum().clamp(min=1)


@torch.no_grad()
def evaluate(model: torch.nn.Module, tok, objective: str, held: list[dict], ctx: str, dev: torch.device) -> dict:
    model.eval()
    ok = first = last = 0
    preds = []
    mask_id = tok.mask_token_id
    for h in held:
        pr = tok(ctx + h["prompt"], add_special_tokens=False)["input_ids"]
        ans = tok(" " + h["answer"], add_special_tokens=False)["input_ids"]
        if objective == "ar":
            lg = model(input_ids=torch.tensor([pr + ans], device=dev)).logits[0]
            pred = lg[len(pr) - 1: len(pr) - 1 + len(ans)].argmax(-1).tolist()
        else:
            nl = tok("\n", add_special_tokens=False)["input_ids"]
            lg = model(input_ids=torch.tensor([pr + [mask_id] * len(ans) + nl], device=dev)).logits[0]
            lo = len(pr) - (objective == "ar2dlm")
            pred = lg[lo: lo + len(ans)].argmax(-1).tolist()
        ok += pred == ans
        first += pred[1] == ans[1]  # ans[0] is the space
        last += pred[-1] == ans[-1]
        preds.append(tok.decode(pred).strip())
    model.train()
    n = len(held)
    return {"exact": ok / n, "first_digit": first / n, "last_digit": last / n,
            "distinct_answers": len(set(preds)), "examples": preds[:6]}


def run(a: argparse.Namespace) -> None:
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    docs = [d + "\n" + D.EOT for d in D.arithmetic_documents(40_000, seed=0)]
    tok = D.train_tokenizer(docs[:2000], 300)
    flat = D.encode(tok, docs).astype(np.int64)
    rows_np = flat[: len(flat) // a.seq_len * a.seq_len].reshape(-1, a.seq_len)
    rows = torch.from_numpy(rows_np)
    spans = torch.from_numpy(answer_spans(rows_np, tok))
    p = T.get_preset("tiny", d_model=a.d_model, n_layers=a.layers, n_heads=a.d_model // 32,
                     d_mlp=int(a.d_model * 2.75) // 16 * 16)
    model = T.init_model(p, tok, "ar" if a.objective == "ar" else "dlm").to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, T.wsd_lambda(a.steps, 100, 0.2, 0.1))
    held = [h for h in D.arithmetic_heldout(400, seed=0) if h["kind"] != "word"][:128]
    ctx = D.arithmetic_fewshot(2, 0)
    g = torch.Generator(device=dev).manual_seed(0)
    order = np.random.default_rng(0)
    t0 = time.time()
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
    for s in range(1, a.steps + 1):
        pick = order.integers(0, len(rows), a.batch)
        ids = rows[pick].to(dev)
        with amp:
            if a.objective == "ar":
                loss = T.ar_loss(model, ids)
            else:
                loss = diffusion_loss(model, ids, tok.mask_token_id, g, a.objective == "ar2dlm", a.weighting, a.t_max,
                                      spans[pick].to(dev), a.answer_only)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if s % a.eval_every == 0 or s == a.steps:
            with amp:
                r = evaluate(model, tok, a.objective, held, ctx, dev)
            print(json.dumps({"tag": a.tag, "objective": a.objective, "batch": a.batch, "seq_len": a.seq_len, "step": s, "loss": round(loss.item(), 4), **r,
                              "seconds": round(time.time() - t0)}), flush=True)


def launch(a: argparse.Namespace) -> None:
    out = Path(a.log_dir)
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for tag, args in SWEEP.items():
        if a.only and tag not in a.only.split(","):
            continue
        cmd = [sys.executable, __file__, "--tag", tag, "--steps", str(a.steps), "--eval-every", str(a.eval_every), *args]
        procs.append(subprocess.Popen(cmd, stdout=(out / f"sweep_{tag}.log").open("w"), stderr=subprocess.STDOUT))
    for pr in procs:
        pr.wait()
    print("all done", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objective", choices=T.OBJECTIVES, default="dlm")
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--weighting", choices=["1/t", "none"], default="1/t")
    ap.add_argument("--t-max", type=float, default=1.0)
    ap.add_argument("--answer-only", type=float, default=0.0, help="fraction of rows noised SFT-style")
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--tag", default="run")
    ap.add_argument("--launch", action="store_true", help="run the whole SWEEP in parallel")
    ap.add_argument("--log-dir", default="runs/logs")
    ap.add_argument("--only", default="", help="with --launch: comma-separated tags of SWEEP to run")
    a = ap.parse_args()
    launch(a) if a.launch else run(a)


if __name__ == "__main__":
    main()
