"""Benchmark: GPTQ on an 8B-shaped random-weight model (LLaDA-8B dimensions) with 128 x 2048
calibration tokens on one GPU. Target: <= 15 min total, <= 40 GB peak GPU memory.

The model is a transformers ``LlamaConfig`` with LLaDA-8B's dimensions (32 layers, d 4096, MLP 12288,
32 heads, vocab 126464, ``is_causal=False``), built directly on the GPU in bf16 with random weights
(no loading). ``--layers K`` quantizes only the first K blocks (the whole model is still built, so
memory is realistic) and extrapolates the total time from the measured per-block times; the result
table labels measured and extrapolated numbers separately.

    python benchmarks/bench_gptq.py                 # GPU, all 32 blocks
    python benchmarks/bench_gptq.py --layers 4      # GPU, 4 blocks measured, 32 extrapolated
    python benchmarks/bench_gptq.py --tiny          # CPU smoke test (seconds)
"""

from __future__ import annotations

import argparse
import csv
import platform
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from layerwise import compress
from layerwise.models import wrap

RESULTS = Path(__file__).resolve().parent / "results"
LLADA_8B = dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=32, vocab_size=126464, max_position_embeddings=4096)
TINY = dict(hidden_size=64, intermediate_size=192, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=4, vocab_size=512, max_position_embeddings=256)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny CPU config (smoke test)")
    ap.add_argument("--layers", type=int, default=0, help="quantize only the first K blocks (0 = all)")
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8, help="calibration sequences per block forward")
    ap.add_argument("--act-order", action="store_true")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (Hessian accumulation)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    dims = TINY if args.tiny else LLADA_8B
    if args.tiny:
        args.nsamples, args.seqlen = min(args.nsamples, 8), min(args.seqlen, 64)
    dev = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    dtype = torch.float32 if dev.type == "cpu" else torch.bfloat16
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.manual_seed(0)

    cfg = LlamaConfig(**dims)
    cfg.is_causal = False
    t_build = time.perf_counter()
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with torch.device(dev):
        model = LlamaForCausalLM(cfg).eval()
    torch.set_default_dtype(default_dtype)
    sync(dev)
    t_build = time.perf_counter() - t_build
    lm = wrap(model, None, "dlm", mask_token_id=dims["vocab_size"] - 1, model_id="random-llada-8b-shape")
    n_params = sum(p.numel() for p in model.parameters())
    n_layers = dims["num_hidden_layers"]
    k = args.layers or n_layers
    calib = torch.randint(0, dims["vocab_size"] - 1, (args.nsamples, args.seqlen),
                          generator=torch.Generator().manual_seed(0))

    # first-call time of each block (after capture) = start of that block's processing
    starts: dict[int, list[float]] = {}

    def stamp(i: int) -> None:  # a pre-hook must return None (anything else replaces the block's args)
        sync(dev)
        starts.setdefault(i, []).append(time.perf_counter())

    hooks = [b.register_forward_pre_hook(lambda _m, _a, i=i: stamp(i))
             for i, b in enumerate(lm.adapter.get_blocks(model))]
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    weights_gb = torch.cuda.memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
    sync(dev)
    t0 = time.perf_counter()
    compress.quantize(lm, "gptq", args.bits, args.group_size, calib_ids=calib, act_order=args.act_order,
                      blocks=range(k), batch_size=args.batch_size)
    sync(dev)
    t_end = time.perf_counter()
    for h in hooks:
        h.remove()
    peak_gb = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
    n_chunks = -(-args.nsamples // args.batch_size)
    block_t0 = [starts[0][n_chunks]] + [starts[i][0] for i in range(1, k)]
    per_block = [b - a for a, b in zip(block_t0, block_t0[1:] + [t_end])]
    t_capture = block_t0[0] - t0
    measured = t_end - t0
    mean_block = sum(per_block) / len(per_block)
    extrapolated = t_capture + mean_block * n_layers

    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({platform.machine()})"
    row = {
        "config": "tiny" if args.tiny else "llada-8b-shape", "device": device_name, "dtype": str(dtype).split(".")[-1],
        "params_B": float(f"{n_params / 1e9:.4g}"), "layers_total": n_layers, "layers_measured": k,
        "calib_tokens": f"{args.nsamples}x{args.seqlen}", "bits": args.bits, "group_size": args.group_size,
        "act_order": args.act_order, "tf32": args.tf32, "build_s": round(t_build, 2),
        "capture_s": round(t_capture, 2), "mean_block_s": round(mean_block, 3),
        "measured_s": round(measured, 2),
        "total_s_extrapolated": round(extrapolated, 2) if k < n_layers else round(measured, 2),
        "total_is_extrapolated": k < n_layers, "weights_GB": round(weights_gb, 2), "peak_GB": round(peak_gb, 2),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "bench_gptq_tiny" if args.tiny else "bench_gptq"
    with open(out / f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        w.writeheader()
        w.writerow(row)
    total = row["total_s_extrapolated"]
    label = f"extrapolated from {k}/{n_layers} measured blocks" if k < n_layers else "measured, all blocks"
    md = [
        f"# GPTQ benchmark ({row['config']})", "",
        f"{n_params / 1e9:.3g}B-parameter random-weight model, "
        f"{'tiny smoke-test dimensions' if args.tiny else 'LLaDA-8B dimensions'}, {row['dtype']}, on {device_name}; "
        f"GPTQ {args.bits}-bit, group {args.group_size}, act_order={args.act_order}, calibration "
        f"{row['calib_tokens']} tokens, {args.batch_size} sequences per block forward.", "",
        "| quantity | value |", "|---|---|",
        f"| blocks measured | {k} of {n_layers} |",
        f"| measured time (capture + {k} blocks) | {measured:.1f} s |",
        f"| mean time per block (measured) | {mean_block:.2f} s |",
        f"| total time, all {n_layers} blocks ({label}) | {total:.1f} s ({total / 60:.1f} min) |",
        f"| model weights on GPU | {weights_gb:.1f} GB |",
        f"| peak GPU memory (measured) | {peak_gb:.1f} GB |",
        f"| target <= 15 min, <= 40 GB | {'met' if total <= 900 and not peak_gb > 40 else 'NOT met'} |", "",
        "Command: `python benchmarks/bench_gptq.py " + ("--tiny " if args.tiny else "")
        + (f"--layers {args.layers} " if args.layers else "") + "`",
    ]
    (out / f"{stem}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
