"""Benchmark: one step of LLaDA's sampler on a small model, with the unmasking choice row by row or batched.

LLaDA's ``generate.py`` picks each row's positions to unmask with its own ``torch.topk`` call, so a step
issues a few operations per row after the model call. For an 8B model the model call hides them. At the
triplet's size (d 256, 8 layers), each operation's launch is what a step costs on a GPU. This script runs
LLaDA's sampler (``diffusion_generate``) on a random-weight bidirectional Llama and counts the operations
and the time per step. It does so for the library's choice (``transfer_mask``: rows with the same count in
one ``topk``) and for the row-by-row loop it replaces, and it checks that both give the same tokens.

CPU:  python benchmarks/bench_sampler_step.py                  (results/sampler_step_tiny.md)
GPU:  python benchmarks/bench_sampler_step.py --device cuda --out benchmarks/results/sampler_step
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from unittest import mock

import pandas as pd
import torch
from torch.profiler import ProfilerActivity, profile

from layerwise.sampling import diffusion_sampler as DS
from layerwise.testing import random_model


def per_row(conf: torch.Tensor, ks: list[int]) -> torch.Tensor:
    """generate.py's selection: one ``topk`` per row."""
    out = torch.zeros(conf.shape, dtype=torch.bool, device=conf.device)
    for j, k in enumerate(ks):
        out[j, conf[j].topk(int(k)).indices] = True
    return out


def run(lm, ids: torch.Tensor, gen: int, block: int, select, repeats: int = 1) -> tuple[torch.Tensor, float, int]:
    """Tokens, seconds per step (median of ``repeats`` timed runs) and operations per step of the sampler
    with ``select``."""
    sync = torch.cuda.synchronize if ids.device.type == "cuda" else (lambda: None)
    with mock.patch.object(DS, "transfer_mask", select):
        DS.diffusion_generate(lm, ids, gen_length=gen, steps=gen, block_length=block)  # warm-up
        times = []
        for _ in range(max(1, repeats)):
            sync()
            t = time.perf_counter()
            out = DS.diffusion_generate(lm, ids, gen_length=gen, steps=gen, block_length=block)
            sync()
            times.append(time.perf_counter() - t)
        secs = float(sorted(times)[len(times) // 2]) / gen
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ids.device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            DS.diffusion_generate(lm, ids, gen_length=gen, steps=gen, block_length=block)
    ops = sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))
    return out, secs, ops // gen


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=16384)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--block", type=int, default=16)
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per configuration (the median is kept)")
    ap.add_argument("--out", default="benchmarks/results/sampler_step_tiny")
    a = ap.parse_args(argv)
    torch.set_num_threads(1) if a.device == "cpu" else None
    lm = random_model(layers=a.layers, d_model=a.d, heads=a.d // 64, mlp=4 * a.d, vocab=a.vocab, device=a.device,
                      dtype="float32" if a.device == "cpu" else "bfloat16")
    rows = []
    for b in a.batches:
        ids = torch.randint(0, a.vocab - 1, (b, a.prompt), generator=torch.Generator().manual_seed(b)).to(a.device)
        ref, s_ref, n_ref = run(lm, ids, a.gen, a.block, per_row, a.repeats)
        new, s_new, n_new = run(lm, ids, a.gen, a.block, DS.transfer_mask, a.repeats)
        rows.append({"batch": b, "row_by_row_ms_per_step": 1e3 * s_ref, "batched_ms_per_step": 1e3 * s_new,
                     "speedup": s_ref / s_new, "row_by_row_ops_per_step": n_ref, "batched_ops_per_step": n_new,
                     "same_tokens": bool(torch.equal(ref, new))})
    df = pd.DataFrame(rows)
    dev = torch.cuda.get_device_name() if a.device == "cuda" else "CPU, 1 thread"
    md = (f"# LLaDA sampler step: unmasking choice row by row vs batched\n\nDevice: {dev}. Model: random-weight "
          f"bidirectional Llama, d {a.d}, {a.layers} layers, vocab {a.vocab}. Prompt {a.prompt}, gen_length "
          f"{a.gen}, steps {a.gen}, block_length {a.block}. ms per step: median of {a.repeats} timed run(s) after a "
          f"warm-up. ops = aten operations per step (torch.profiler).\n\n"
          f"{df.round(3).to_markdown(index=False)}\n\nCommand: `python benchmarks/bench_sampler_step.py "
          f"{' '.join(argv if argv is not None else __import__('sys').argv[1:])}`\n")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(f"{a.out}.csv", index=False)
    Path(f"{a.out}.md").write_text(md)
    print(md)
    return df


if __name__ == "__main__":
    main()
