"""Benchmark: GPU memory and time of each chapter's core operation on an 8B-shaped model.

Feeds the table in book/run_on_gpu.md ("what a chapter needs on one 80 GB GPU"). The model is a
transformers Llama with LLaDA-8B's dimensions (32 layers, d 4096, 32 heads, MLP 12288, vocab 126464),
``is_causal=False``, sdpa, random bf16 weights (nothing is downloaded), wrapped through
``layerwise.models.wrap`` so that every operation goes through the layer adapter as in the chapters.

Rows (one per operation; peak = ``torch.cuda.max_memory_allocated`` during it, weights included):
- ``weights``: the model alone.
- ``forward_1x2048`` / ``forward_8x2048``: one forward with logits (the LM head's
  ``[B, T, 126464]`` output dominates at batch 8) -- layer skipping and evaluation cost the same.
- ``probe_8x2048``: ``layerwise.probes.channel_stats`` + ``layer_similarity`` on 8 x 2048 tokens
  (chapters 01, 02, 04).
- ``sampling_b1`` / ``sampling_b8``: one LLaDA denoising step (forward of a 900-token prompt + 256
  generated positions) at batch 1 and 8; chapter 05's generation runs ``steps`` (256) of them per
  sample, so seconds/sample ~ 256 x step time / batch.
- ``gptq_block``: GPTQ's per-block footprint, measured by running ``layerwise.compress.quantize``
  on ``--gptq-blocks`` blocks with ``--calib`` x 2048 calibration tokens, plus the analytic estimate
  (fp32 Hessians of every Linear input in a block + the block's calibration activations in bf16)
  (chapter 07).

GPU (H100):  python benchmarks/bench_8b_memory.py
CPU check:   python benchmarks/bench_8b_memory.py --tiny
Writes benchmarks/results/bench_8b_memory{,_tiny}.csv and .md, and prints the table.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from layerwise.models import LoadedModel
from layerwise.testing import random_model

RESULTS = Path(__file__).resolve().parent / "results"
GiB = 1024**3


@dataclass(frozen=True)
class Shape:
    layers: int
    d: int
    heads: int
    mlp: int
    vocab: int
    seq: int
    prompt: int
    gen: int


LLADA_8B = Shape(32, 4096, 32, 12288, 126464, seq=2048, prompt=900, gen=256)
TINY = Shape(2, 64, 4, 128, 512, seq=64, prompt=24, gen=8)


def build_model(s: Shape, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """Bidirectional Llama with ``s``'s dimensions and random weights, wrapped as a ``dlm``."""
    return random_model(layers=s.layers, d_model=s.d, heads=s.heads, mlp=s.mlp, vocab=s.vocab, family="dlm",
                        device=device, dtype=dtype)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def measure(name: str, fn: Callable[[], object], dev: torch.device, tokens: int, note: str = "") -> dict:
    """Run ``fn`` once (after a warm-up on CUDA) and record seconds and peak memory."""
    if dev.type == "cuda":
        fn()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    _sync(dev)
    t = time.perf_counter()
    fn()
    _sync(dev)
    sec = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() / GiB if dev.type == "cuda" else float("nan")
    print(f"{name:18s} {sec:8.3f} s  peak {peak:7.2f} GiB  {note}")
    return {"operation": name, "seconds": sec, "peak_gib": peak, "tokens": tokens, "note": note}


def gptq_estimate_gib(s: Shape, calib_tokens: int) -> float:
    """fp32 Hessians per distinct Linear input (qkv: d, o: d, gate/up: d, down: mlp) plus the
    block's input and output activations for the calibration tokens in bf16."""
    hess = 4 * (3 * s.d**2 + s.mlp**2)
    acts = 2 * 2 * calib_tokens * s.d
    return (hess + acts) / GiB


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a tiny model on CPU (checks the script)")
    ap.add_argument("--calib", type=int, default=0, help="GPTQ calibration sequences (default 128 / tiny 4)")
    ap.add_argument("--gptq-blocks", type=int, default=2, help="blocks quantized for the GPTQ row")
    ap.add_argument("--skip", default="", help="comma list of rows to skip, e.g. gptq_block,sampling_b8")
    ap.add_argument("--out", default="", help="results file stem (default benchmarks/results/bench_8b_memory[_tiny])")
    a = ap.parse_args(argv)

    from layerwise.compress import quantize
    from layerwise.probes import channel_stats, layer_similarity

    s = TINY if a.tiny else LLADA_8B
    dev = torch.device("cpu" if a.tiny or not torch.cuda.is_available() else "cuda")
    dtype = torch.float32 if dev.type == "cpu" else torch.bfloat16
    calib = a.calib or (4 if a.tiny else 128)
    skip = set(filter(None, a.skip.split(",")))
    g = torch.Generator().manual_seed(0)

    def ids(b: int, t: int) -> torch.Tensor:
        return torch.randint(0, s.vocab - 1, (b, t), generator=g).to(dev)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    lm = build_model(s, dev, dtype)
    rows = [{"operation": "weights", "seconds": float("nan"), "tokens": 0, "note": f"{dtype}",
             "peak_gib": torch.cuda.max_memory_allocated() / GiB if dev.type == "cuda" else float("nan")}]
    with torch.no_grad():
        for b in (1, 8):
            x = ids(b, s.seq)
            if f"forward_{b}x{s.seq}" not in skip:
                rows.append(measure(f"forward_{b}x{s.seq}", lambda x=x: lm.logits(x), dev, b * s.seq,
                                    "logits for every position"))
        x = ids(8, s.seq)
        if "probe" not in skip:
            rows.append(measure(f"probe_8x{s.seq}", lambda: (channel_stats(lm, x, batch_size=8),
                                                            layer_similarity(lm, x, batch_size=8)),
                                dev, 8 * s.seq, "channel_stats + layer_similarity"))
        for b in (1, 8):
            x = ids(b, s.prompt + s.gen)
            if f"sampling_b{b}" not in skip:
                rows.append(measure(f"sampling_b{b}", lambda x=x: lm.logits(x), dev, x.numel(),
                                    f"one denoising step of {s.prompt}+{s.gen} tokens; x256 steps per sample"))
    if "gptq_block" not in skip:
        calib_ids = ids(calib, s.seq).cpu()
        est = gptq_estimate_gib(s, calib * s.seq)
        rows.append(measure("gptq_block", lambda: quantize(lm, "gptq", bits=4, group_size=128, calib_ids=calib_ids,
                                                            blocks=list(range(a.gptq_blocks)), progress=False),
                            dev, calib * s.seq,
                            f"{a.gptq_blocks} blocks, {calib}x{s.seq} calib tokens; analytic per-block "
                            f"{est:.2f} GiB; x{s.layers / a.gptq_blocks:g} for all blocks' time"))
        rows[-1]["estimate_gib"] = est
    df = pd.DataFrame(rows)
    df.insert(0, "device", torch.cuda.get_device_name() if dev.type == "cuda" else "cpu")
    df.insert(1, "shape", f"{s.layers}L d{s.d} mlp{s.mlp} V{s.vocab}")
    stem = Path(a.out) if a.out else RESULTS / ("bench_8b_memory_tiny" if a.tiny else "bench_8b_memory")
    stem.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(stem.with_suffix(".csv"), index=False)
    stem.with_suffix(".md").write_text(df.to_markdown(index=False, floatfmt=".3f") + "\n")
    print(df.to_string(index=False))


if __name__ == "__main__":
    main()
