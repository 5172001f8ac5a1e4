"""Benchmark: LLaDA's reference diffusion sampler versus ``layerwise.sampling.diffusion_generate``.

Settings are LLaDA's GSM8K ones (900-token prompt, gen_length 256, steps 256, block_length 32) on an
8B-shaped bidirectional model built from a transformers ``LlamaConfig`` with LLaDA's dimensions (32 layers,
d 4096, 32 heads, MLP 12288, vocab 126464), random bf16 weights, nothing loaded. For each batch size it
times the reference and the fast sampler, checks that their tokens are identical at temperature 0, and
records seconds per sample, samples per second, the speedup and peak GPU memory. The fast sampler also
runs at larger batches (until out of memory) since it needs far less memory than the reference.

The reference, ``reference_diffusion_generate``, mirrors LLaDA's ``generate.py`` line by line (full logits
at every position, a softmax over the whole vocabulary in the logits' dtype, a per-row Python top-k loop);
it lives in ``tests/oracles/llada_reference.py``, where the test suite checks that the fast sampler gives
identical tokens. The genuine ``generate.py`` itself (LLaDA's modeling code, not a Llama) is compared in
``benchmarks/bench_llada_reference.py``.

GPU (H100):   python benchmarks/bench_sampling.py
CPU check:    python benchmarks/bench_sampling.py --tiny
Writes benchmarks/results/sampling{,_tiny}.csv and .md, and prints the table last.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

# the reference sampler is the test suite's oracle: one copy, in tests/oracles/
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from oracles.llada_reference import reference_diffusion_generate  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------


@dataclass
class Shape:
    layers: int
    d: int
    heads: int
    mlp: int
    vocab: int
    prompt: int
    gen_length: int
    steps: int
    block_length: int


LLADA_8B = Shape(32, 4096, 32, 12288, 126464, 900, 256, 256, 32)
TINY = Shape(2, 64, 4, 128, 512, 40, 16, 16, 8)


def build_model(shape: Shape, device: torch.device, dtype: torch.dtype):
    """A bidirectional Llama with the given dimensions and random weights, built directly on ``device``."""
    from layerwise.testing import random_model

    return random_model(layers=shape.layers, d_model=shape.d, heads=shape.heads, mlp=shape.mlp, vocab=shape.vocab,
                        family="dlm", device=device, dtype=dtype, max_position_embeddings=4096)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device: torch.device) -> tuple[float, float, torch.Tensor]:
    """(seconds, peak GiB, output) of one call."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return dt, peak, out


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def main(argv: list[str] | None = None) -> None:
    from layerwise.sampling import diffusion_generate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a tiny model on CPU (checks the script)")
    ap.add_argument("--batches", default="", help="comma list of batch sizes (default: 1,8,16,32,64 / tiny 1,2)")
    ap.add_argument("--ref-max-batch", type=int, default=16, help="largest batch tried for the reference")
    ap.add_argument("--time-blocks", type=int, default=0,
                    help="time only this many blocks at the same total sequence length (prompt grows to keep "
                         "prompt + generation equal; per-step cost does not depend on the block index) and "
                         "scale s/sample to the full gen_length. 0 = the full run")
    ap.add_argument("--prefix-cache", action="store_true",
                    help="also time the APPROXIMATE opt-in prefix cache (prefix_cache=True) and report the share "
                         "of its tokens equal to the exact sampler's")
    ap.add_argument("--out", default="", help="results file stem (default benchmarks/results/sampling[_tiny])")
    args = ap.parse_args(argv)

    shape = TINY if args.tiny else LLADA_8B
    device = torch.device("cpu" if args.tiny else "cuda")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no GPU visible: run with --tiny for the CPU check")
    default_batches = [1, 2] if args.tiny else [1, 8, 16, 32, 64]
    batches = [int(b) for b in args.batches.split(",")] if args.batches else default_batches
    dev_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"

    lm = build_model(shape, device, dtype)
    nb_full = shape.gen_length // shape.block_length
    nb = args.time_blocks if 0 < args.time_blocks < nb_full else nb_full
    gen_length, steps = nb * shape.block_length, nb * (shape.steps // nb_full)
    prompt_len = shape.prompt + shape.gen_length - gen_length  # same sequence length as the full run
    scale = nb_full / nb
    settings = dict(gen_length=gen_length, steps=steps, block_length=shape.block_length, temperature=0.0,
                    remasking="low_confidence")
    g = torch.Generator(device="cpu").manual_seed(0)
    mask_id = lm.spec.mask_token_id
    print(f"device {dev_name}; model {shape}; timing {nb}/{nb_full} blocks (sequence length "
          f"{prompt_len + gen_length}), batches {batches}")

    # warm-up (kernel selection, allocator)
    warm = torch.randint(0, shape.vocab - 1, (1, prompt_len), generator=g).to(device)
    diffusion_generate(lm, warm, gen_length=shape.block_length, steps=shape.steps // nb_full,
                       block_length=shape.block_length)

    rows = []
    ref_dead = fast_dead = False
    for b in batches:
        prompt = torch.randint(0, shape.vocab - 1, (b, prompt_len), generator=g).to(device)
        ref = fast = None
        row = dict(device=dev_name, batch=b, prompt=shape.prompt, gen_length=shape.gen_length, steps=shape.steps,
                   block_length=shape.block_length, timed_blocks=f"{nb}/{nb_full}")
        if not fast_dead:
            try:
                t, peak, fast = _time(lambda p=prompt: diffusion_generate(lm, p, **settings), device)
                row.update(fast_s_per_sample=t * scale / b, fast_samples_per_s=b / (t * scale), fast_peak_gib=peak)
            except RuntimeError as e:
                if not _is_oom(e):
                    raise
                fast_dead = True
                print(f"fast sampler: out of memory at batch {b}")
        if not ref_dead and b <= args.ref_max_batch:
            try:
                t, peak, ref = _time(lambda p=prompt: reference_diffusion_generate(
                    lm.model, p, mask_id=mask_id, shifted=lm.family.shifted_logits, **settings), device)
                row.update(ref_s_per_sample=t * scale / b, ref_samples_per_s=b / (t * scale), ref_peak_gib=peak)
            except RuntimeError as e:
                if not _is_oom(e):
                    raise
                ref_dead = True
                print(f"reference sampler: out of memory at batch {b}")
        if fast is None and ref is None:
            break
        if args.prefix_cache and fast is not None:
            try:
                t, peak, approx = _time(lambda p=prompt: diffusion_generate(lm, p, prefix_cache=True, **settings),
                                        device)
                row.update(cache_s_per_sample=t * scale / b, cache_samples_per_s=b / (t * scale), cache_peak_gib=peak,
                           cache_token_agreement=float((approx.cpu() == fast.cpu()).float().mean()))
            except RuntimeError as e:
                if not _is_oom(e):
                    raise
                print(f"prefix cache: out of memory at batch {b}")
        if fast is not None and ref is not None:
            row["identical_tokens"] = bool(torch.equal(fast.cpu(), ref.cpu()))
            row["differing_tokens"] = int((fast.cpu() != ref.cpu()).sum())
            row["speedup"] = row["ref_s_per_sample"] / row["fast_s_per_sample"]
        rows.append(row)
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
        del ref, fast

    # csv + a hand-formatted markdown table: the GPU image may lack pandas/tabulate
    import csv

    def best(key: str) -> float:
        vals = [r[key] for r in rows if key in r]
        return max(vals) if vals else float("nan")

    ref_best, fast_best = best("ref_samples_per_s"), best("fast_samples_per_s")
    stem = Path(args.out) if args.out else RESULTS / ("sampling_tiny" if args.tiny else "sampling")
    stem.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    cols = [c for c in ["batch", "ref_s_per_sample", "fast_s_per_sample", "ref_samples_per_s", "fast_samples_per_s",
                        "speedup", "identical_tokens", "differing_tokens", "ref_peak_gib", "fast_peak_gib",
                        "cache_s_per_sample", "cache_token_agreement"] if c in keys]
    fmt = lambda v: "" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    table = "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                      + ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows])
    md = (f"# Diffusion sampler benchmark\n\nDevice: {dev_name}. Model: bidirectional Llama, {shape.layers} layers, "
          f"d {shape.d}, {shape.heads} heads, MLP {shape.mlp}, vocab {shape.vocab}, random {str(dtype)[6:]} weights. "
          f"Settings: prompt {shape.prompt}, gen_length {shape.gen_length}, steps {shape.steps}, block_length "
          f"{shape.block_length}, temperature 0, low-confidence remasking. Timed blocks: {nb}/{nb_full}"
          f"{' (s/sample scaled to the full run; sequence length kept)' if nb < nb_full else ''}.\n\n"
          f"{table}\n\nBest samples/s: reference {ref_best:.3f}, fast {fast_best:.3f} "
          f"(ratio {fast_best / ref_best:.2f}x).\n\nCommand: `python benchmarks/bench_sampling.py"
          f"{' --tiny' if args.tiny else ''}{f' --time-blocks {args.time_blocks}' if args.time_blocks else ''}"
          f"{' --prefix-cache' if args.prefix_cache else ''}`. The cache_* columns (if present) are the opt-in, "
          "approximate prefix KV cache; cache_token_agreement is the share of its tokens equal to the exact "
          "sampler's.\n")
    stem.with_suffix(".md").write_text(md)
    print()
    print(md)


if __name__ == "__main__":
    main()
