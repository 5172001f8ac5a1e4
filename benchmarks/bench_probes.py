"""Benchmark: throughput, MFU and memory of the streaming probes on an 8B-shaped model.

The model is a transformers ``LlamaConfig`` with LLaDA-8B's dimensions (32 layers, d 4096, 32 heads,
MLP 12288, vocab 126464), ``is_causal=False`` (bidirectional, as LLaDA), sdpa attention, random bf16
weights: nothing is loaded.

(a) the probe pass: ``layerwise.probes.probe_pass`` with the layer-similarity and the
    channel-statistics hooks on (both sites), batches of ``--batch`` x ``--seq`` tokens. Reported:
    tokens/s and MFU = achieved FLOP/s over the bf16 matmul peak measured in the same run
    (``8192^3`` matmuls). FLOPs counted: every block's Linear layers (``2 T in out``) plus attention
    (``4 T^2 d`` per sequence); the probe pass stops after the last block, so the LM head is neither
    computed nor counted. A plain forward (no hooks, no LM head either) is timed too, to show what
    the hooks cost. Target: probe pass >= 55% of the measured peak.
(b) memory: peak GPU memory of ``channel_stats`` (both sites) over 25k, 50k and 100k
    tokens, and the accumulators' element count: both independent of the number of tokens.

GPU (H100):  python benchmarks/bench_probes.py
CPU check:   python benchmarks/bench_probes.py --tiny
Writes benchmarks/results/probes{,_tiny}.csv and .md, and prints the tables.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from layerwise.probes import accumulator_numel, channel_stats, probe_pass
from layerwise.results import device_name
from layerwise.skipping import block_flops
from layerwise.testing import random_model

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Shape:
    layers: int
    d: int
    heads: int
    mlp: int
    vocab: int

    def describe(self) -> str:
        return f"{self.layers} layers, d {self.d}, {self.heads} heads, MLP {self.mlp}, vocab {self.vocab}"


LLADA_8B = Shape(32, 4096, 32, 12288, 126464)
TINY = Shape(2, 64, 4, 128, 512)


def build_model(shape: Shape, device: torch.device, dtype: torch.dtype):
    """A bidirectional Llama with ``shape``'s dimensions and random weights, wrapped as a ``dlm``."""
    return random_model(layers=shape.layers, d_model=shape.d, heads=shape.heads, mlp=shape.mlp, vocab=shape.vocab,
                        family="dlm", device=device, dtype=dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, iters: int) -> float:
    """Measured dense matmul throughput (FLOP/s) for ``n x n @ n x n`` in ``dtype``."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    _sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - t)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Best wall-clock seconds of ``repeats`` calls after one warm-up."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a tiny model on CPU (checks the script)")
    ap.add_argument("--batch", type=int, default=0, help="sequences per forward (default 8 / tiny 2)")
    ap.add_argument("--seq", type=int, default=0, help="tokens per sequence (default 2048 / tiny 64)")
    ap.add_argument("--n-batches", type=int, default=4, help="batches per timed probe pass")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--memory-tokens", default="", help="comma list (default 25000,50000,100000 / tiny 500,1000,2000)")
    ap.add_argument("--out", default="", help="results file stem (default benchmarks/results/probes[_tiny])")
    args = ap.parse_args(argv)

    shape = TINY if args.tiny else LLADA_8B
    device = torch.device("cpu" if args.tiny else "cuda")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no GPU visible: run with --tiny for the CPU check")
    B, T = args.batch or (2 if args.tiny else 8), args.seq or (64 if args.tiny else 2048)
    mem_tokens = [int(x) for x in args.memory_tokens.split(",")] if args.memory_tokens else (
        [500, 1000, 2000] if args.tiny else [25_000, 50_000, 100_000])

    peak = matmul_peak(device, dtype, 512 if args.tiny else 8192, 5 if args.tiny else 50)
    print(f"matmul peak: {peak / 1e12:.1f} TFLOP/s")
    lm = build_model(shape, device, dtype)
    per_block, _head = block_flops(lm, T)
    flops_per_seq = sum(per_block)  # blocks only: the probe pass stops before the LM head
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, shape.vocab - 1, (B * args.n_batches, T), generator=g)

    # (a) throughput: plain forward through the blocks vs the probe pass with its hooks on
    from layerwise.probes import _forward, _StopForward, block_hooks  # noqa: F401  (same cut as the probes)

    def plain() -> None:
        with torch.inference_mode(), block_hooks(lm, lambda *_: None, stop_after_last=True):
            for k in range(args.n_batches):
                _forward(lm, ids[k * B:(k + 1) * B].to(device), None)

    def probes() -> None:
        probe_pass(lm, ids, batch_size=B, similarity=True, channels=("attn_input", "residual"))

    rows = []
    for name, fn in (("forward (blocks only, no hooks)", plain),
                     ("probe pass (layer similarity + channel stats)", probes)):
        t = timed(fn, device, args.repeats)
        tokens = B * T * args.n_batches
        achieved = flops_per_seq * B * args.n_batches / t
        rows.append({"pass": name, "batch": B, "seq_len": T, "tokens": tokens, "seconds": t,
                     "tokens_per_s": tokens / t, "tflop_per_s": achieved / 1e12,
                     "matmul_peak_tflop_per_s": peak / 1e12, "mfu_vs_measured_peak": achieved / peak})
        print(rows[-1])
    thr = pd.DataFrame(rows)

    # (b) memory: channel statistics over growing token counts
    mrows = []
    for n_tok in mem_tokens:
        n_seq = max(1, round(n_tok / T))
        x = torch.randint(0, shape.vocab - 1, (n_seq, T), generator=g)
        accs: dict = {}
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if device.type == "cuda" else 0
        channel_stats(lm, x, batch_size=B, _accumulators=accs)
        peak_b = torch.cuda.max_memory_allocated() if device.type == "cuda" else float("nan")
        mrows.append({"tokens": n_seq * T, "sequences": n_seq, "batch": B,
                      "peak_gib": peak_b / 2**30, "peak_above_weights_gib": (peak_b - base) / 2**30,
                      "accumulator_elements": accumulator_numel(accs),
                      "accumulator_mib": sum(sum(t.numel() * t.element_size() for t in
                                                 (a.sum_abs, a.max_abs, a.max_seq, a.max_pos, a.top_count, a.n_tokens))
                                             for a in accs.values()) / 2**20})
        print(mrows[-1])
    mem = pd.DataFrame(mrows)

    stem = Path(args.out) if args.out else RESULTS / ("probes_tiny" if args.tiny else "probes")
    stem.parent.mkdir(parents=True, exist_ok=True)
    pd.concat([thr.assign(part="throughput"), mem.assign(part="memory")], ignore_index=True).to_csv(
        stem.with_suffix(".csv"), index=False)
    probe_row = thr.iloc[-1]
    text = (
        f"# Probe benchmark\n\nDevice: {device_name() if device.type == 'cuda' else 'cpu'}. "
        f"Model: bidirectional Llama, "
        f"{shape.describe()}, random {str(dtype).replace('torch.', '')} weights, sdpa.\n\n"
        f"## (a) Throughput and MFU\n\nMatmul peak measured in this run: {peak / 1e12:.1f} TFLOP/s. "
        f"FLOPs counted: block Linears + attention, no LM head (the probe pass stops after the last block).\n\n"
        f"{thr.to_markdown(index=False, floatfmt='.4g')}\n\n"
        f"Probe pass: {probe_row.tokens_per_s:,.0f} tokens/s, MFU {probe_row.mfu_vs_measured_peak:.1%} of the measured "
        f"peak (target >= 55%).\n\n"
        f"## (b) Peak memory of channel_stats vs tokens\n\n{mem.to_markdown(index=False, floatfmt='.4g')}\n\n"
        f"Command: `python benchmarks/bench_probes.py{' --tiny' if args.tiny else ''}`\n"
    )
    stem.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
