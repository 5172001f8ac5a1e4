"""Benchmark: wall-clock speed-up of the diffusion sampler under static layer skipping, and
evaluations per minute of the layer-skipping chapter.

Part 1 (speed-up). A bidirectional Llama-shaped model with random weights (shapes below) runs
``layerwise.sampling.diffusion_generate`` with no block skipped and with ``k`` early blocks skipped
(``layerwise.skipping.skip_layers``, the configuration the chapter evaluates). The speed-up
``t(0) / t(k)`` is compared with the ideal ``L / (L - k)`` (paper A's FLOPs view, LM head ignored)
and with ``1 / (1 - flops_fraction)`` (the LM head and attention counted); target: >= 0.9 x ideal.

Part 2 (evaluations per minute). One "evaluation" is what the chapter runs per configuration: the
generation task and the likelihood tasks through lm-eval (``layerwise.evals.evaluate``) on the
triplet-shaped model (gpu preset: 12 layers, d 512, 8 heads, MLP 1408, vocab 16384), for an AR and a
diffusion model, with the gpu profile's item counts.

Shapes:
    gpu : 12 layers, d 512, 8 heads, MLP 1408, vocab 16384 (the triplet's gpu preset)
    8b  : 32 layers, d 4096, 32 heads, MLP 12288, vocab 126464 (LLaDA-8B)
    tiny: 4 layers, d 64, 4 heads, MLP 176, vocab 512 (CPU check)

GPU (H100):  python benchmarks/bench_skipping.py            # gpu and 8b shapes, evals/min
CPU check:   python benchmarks/bench_skipping.py --tiny
Writes benchmarks/results/bench_skipping{,_tiny}.{csv,md}; prints the tables.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from layerwise.models import LoadedModel, wrap
from layerwise.sampling import diffusion_generate
from layerwise.skipping import flops_fraction, select_layers, skip_layers

RESULTS = Path(__file__).resolve().parent / "results"

SHAPES = {
    "tiny": dict(num_hidden_layers=4, hidden_size=64, num_attention_heads=4, intermediate_size=176, vocab_size=512),
    "gpu": dict(num_hidden_layers=12, hidden_size=512, num_attention_heads=8, intermediate_size=1408, vocab_size=16384),
    "8b": dict(num_hidden_layers=32, hidden_size=4096, num_attention_heads=32, intermediate_size=12288,
               vocab_size=126464),
}


def build(shape: str, family: str, device: torch.device, dtype: torch.dtype, tokenizer=None) -> LoadedModel:
    """Random-weight Llama of a named shape; bidirectional for diffusion families."""
    cfg = LlamaConfig(**SHAPES[shape], num_key_value_heads=SHAPES[shape]["num_attention_heads"],
                      max_position_embeddings=4096, attn_implementation="sdpa")
    cfg.is_causal = family == "ar"
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype).eval()
    mask = None if family == "ar" else (tokenizer.mask_token_id if tokenizer is not None else cfg.vocab_size - 1)
    return wrap(model, tokenizer, family, mask_token_id=mask, model_id=f"{shape}-{family}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_sampler(lm: LoadedModel, *, batch: int, prompt_len: int, gen_length: int, steps: int, block_length: int,
                 repeats: int) -> float:
    """Median seconds of one ``diffusion_generate`` call (after one warm-up call)."""
    dev = lm.device
    ids = torch.randint(0, lm.spec.mask_token_id, (batch, prompt_len),
                        generator=torch.Generator().manual_seed(0)).to(dev)
    times = []
    for r in range(repeats + 1):
        _sync(dev)
        t = time.perf_counter()
        diffusion_generate(lm, ids, None, gen_length=gen_length, steps=steps, block_length=block_length)
        _sync(dev)
        if r:
            times.append(time.perf_counter() - t)
    return float(sorted(times)[len(times) // 2])


def speedup_rows(shape: str, ks: list[int], device: torch.device, dtype: torch.dtype, args) -> list[dict]:
    lm = build(shape, "dlm", device, dtype)
    L = lm.num_layers
    rows, t0 = [], None
    for k in ks:
        idx = select_layers("early", k, L)
        with skip_layers(lm, idx):
            t = time_sampler(lm, batch=args.batch, prompt_len=args.prompt_len, gen_length=args.gen_length,
                             steps=args.steps, block_length=args.block_length, repeats=args.repeats)
        t0 = t if k == 0 else t0
        ff = flops_fraction(lm, idx, seq_len=args.prompt_len + args.gen_length)
        speed = t0 / t
        rows.append({"shape": shape, "layers": L, "k": k, "skipped": str(idx), "batch": args.batch,
                     "prompt_len": args.prompt_len, "gen_length": args.gen_length, "steps": args.steps,
                     "seconds": round(t, 4), "speedup": round(speed, 3),
                     "ideal_L_over_L_minus_k": round(L / (L - k), 3),
                     "ideal_flops": round(1 / (1 - ff), 3), "vs_ideal": round(speed / (L / (L - k)), 3),
                     "vs_flops_ideal": round(speed * (1 - ff), 3)})
        print(rows[-1], flush=True)
    del lm
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def evals_per_minute(shape: str, device: torch.device, dtype: torch.dtype, args) -> list[dict]:
    """Seconds per chapter evaluation (all tasks, one configuration) for an AR and a diffusion model."""
    from layerwise import data
    from layerwise.evals import TaskParams, evaluate, load_tasks

    texts = list(data.arithmetic_documents(400)) + list(data.synthetic_documents(400))
    tok = data.train_tokenizer(texts, min(SHAPES[shape]["vocab_size"], 4096))
    tasks = load_tasks(args.eval_tasks.split(","), params=TaskParams(gutenberg_chars=args.gutenberg_chars))
    rows = []
    for family in ("ar", "dlm"):
        lm = build(shape, family, device, dtype, tokenizer=tok)
        kw = dict(limit=args.eval_limit, batch_size=args.eval_batch, max_gen_toks=args.eval_gen_length,
                  sampler_kwargs={"steps": args.eval_gen_length},
                  loglikelihood_kwargs={"n_samples": args.mc_samples, "batch_size": args.mc_samples, "seed": 0})
        evaluate(lm, tasks, **{**kw, "limit": 2})  # warm-up (kernels, caches)
        _sync(device)
        t = time.perf_counter()
        for _ in range(args.eval_repeats):
            evaluate(lm, tasks, **kw)
        _sync(device)
        sec = (time.perf_counter() - t) / args.eval_repeats
        rows.append({"shape": shape, "family": family, "tasks": args.eval_tasks, "items_per_task": args.eval_limit,
                     "mc_samples": args.mc_samples, "gen_length": args.eval_gen_length,
                     "seconds_per_evaluation": round(sec, 2), "evaluations_per_minute": round(60 / sec, 2)})
        print(rows[-1], flush=True)
        del lm
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="CPU check: tiny shape, few items")
    ap.add_argument("--shapes", default=None, help="comma-separated shapes for the speed-up (default gpu,8b)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--prompt-len", type=int, default=None)
    ap.add_argument("--gen-length", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-evals", action="store_true", help="skip part 2 (evaluations per minute)")
    ap.add_argument("--eval-tasks", default="lw_arithmetic,lw_gutenberg,lw_arc_easy")
    ap.add_argument("--eval-limit", type=int, default=None)
    ap.add_argument("--eval-batch", type=int, default=64)
    ap.add_argument("--eval-gen-length", type=int, default=16)
    ap.add_argument("--eval-repeats", type=int, default=1)
    ap.add_argument("--mc-samples", type=int, default=None)
    ap.add_argument("--gutenberg-chars", type=int, default=2000)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tiny = args.tiny
    shapes = (args.shapes or ("tiny" if tiny else "gpu,8b")).split(",")
    args.batch = args.batch or (2 if tiny else 8)
    args.prompt_len = args.prompt_len or (32 if tiny else 512)
    args.gen_length = args.gen_length or (32 if tiny else 256)
    args.steps = args.steps or (8 if tiny else 64)
    args.eval_limit = args.eval_limit or (4 if tiny else 200)
    args.mc_samples = args.mc_samples or (4 if tiny else 32)
    if tiny:
        args.eval_batch, args.gutenberg_chars, args.repeats = 4, 400, 1

    rows = []
    for shape in shapes:
        L = SHAPES[shape]["num_hidden_layers"]
        ks = sorted({0, 1, max(1, L // 8), max(1, round(0.1875 * L)), max(1, L // 3)} - {L})
        rows += speedup_rows(shape, ks, device, dtype, args)
    speed = pd.DataFrame(rows)
    ev = pd.DataFrame([] if args.no_evals else evals_per_minute("tiny" if tiny else "gpu", device, dtype, args))

    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "bench_skipping_tiny" if tiny else "bench_skipping"
    speed.to_csv(RESULTS / f"{stem}.csv", index=False)
    if not ev.empty:
        ev.to_csv(RESULTS / f"{stem}_evals.csv", index=False)
    dev_name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    md = [f"# Layer skipping: sampler speed-up and evaluations per minute ({dev_name}, {dtype})", "",
          "Diffusion sampler (`layerwise.sampling.diffusion_generate`), random weights, `early` blocks skipped. "
          "`vs_ideal` = speed-up / (L / (L-k)); `vs_flops_ideal` = speed-up / (1 / (1 - FLOPs fraction)); "
          "target >= 0.9.", "", speed.to_markdown(index=False), ""]
    if not ev.empty:
        md += ["## Evaluations per minute (one configuration, all tasks, `layerwise.evals.evaluate`)", "",
               ev.to_markdown(index=False), ""]
    (RESULTS / f"{stem}.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
