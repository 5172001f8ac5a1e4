"""Benchmark: the exact early stop of LLaDA's sampler (``diffusion_generate(..., stop_at_eos=True)``).

Once every row of a batch holds an end-of-text token with every position before it decoded, the text up to
it is final (the sampler only writes masked positions), so the remaining blocks are skipped. How much that
saves depends on where the model ends its answer, not on its weights: this script builds a random-weight
bidirectional Llama, adds a logit bias that makes end-of-text the prediction from a chosen answer length on
(a model that answers in ``answer`` tokens), and times the full run against the early stop for several
answer lengths, checking that the tokens up to each row's first end-of-text are the full run's.

The real factor is set by the answer lengths a model produces under a task's ``gen_length``: LLaDA's
GSM8K answers that end at 120 of 256 tokens with blocks of 32 skip 4 of 8 blocks (about 2x); answers that
fill the budget gain nothing.

CPU:  python benchmarks/bench_early_stop.py            (tiny model, seconds; results/early_stop_tiny.md)
GPU:  python benchmarks/bench_early_stop.py --device cuda --d 4096 --layers 32 --heads 32 --mlp 12288
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from layerwise.models import wrap
from layerwise.sampling import diffusion_generate, fill_after_stop


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    """Print the table (markdown) and return its rows."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--mlp", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--gen-length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--answers", default="16,48,80,127", help="comma list of answer lengths (EOS position)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(1)
    dev = torch.device(args.device)
    dtype = torch.float32 if dev.type == "cpu" else torch.bfloat16
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.d, intermediate_size=args.mlp,
                      num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
                      max_position_embeddings=args.prompt + args.gen_length, tie_word_embeddings=False)
    cfg.is_causal = False
    model = LlamaForCausalLM(cfg).eval().to(dev, dtype)
    mask, eos = args.vocab - 1, args.vocab - 2
    answer = [0]

    def end_after_answer(_m: torch.nn.Module, _i: tuple, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[:, args.prompt + answer[0]:, eos] += 50.0  # end-of-text from the answer length on
        return out

    model.lm_head.register_forward_hook(end_after_answer)
    passes = [0]
    model.register_forward_pre_hook(lambda *_: passes.__setitem__(0, passes[0] + 1))
    lm = wrap(model, None, "dlm", mask_token_id=mask)
    ids = torch.randint(0, args.vocab - 3, (args.batch, args.prompt), generator=torch.Generator().manual_seed(1))
    kw = dict(gen_length=args.gen_length, steps=args.steps, block_length=args.block_length)
    rows = []
    print(f"batch {args.batch}, prompt {args.prompt}, gen_length {args.gen_length}, steps {args.steps}, "
          f"block_length {args.block_length}, {args.layers} layers x d {args.d} on {dev}")
    print("| answer tokens | blocks run | forward passes (full / early stop) | full s | early stop s | time factor "
          "| identical up to EOS |")
    print("|---|---|---|---|---|---|---|")
    for a in (int(s) for s in args.answers.split(",")):
        answer[0] = a
        timings: dict[bool, float] = {}
        outs: dict[bool, torch.Tensor] = {}
        calls: dict[bool, int] = {}
        for stop in (False, True):
            diffusion_generate(lm, ids, **kw, stop_at_eos=stop, eos_ids=[eos])  # warm-up
            best = float("inf")
            for _ in range(args.repeats):  # the fastest of a few runs: shared machines are noisy
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                passes[0] = 0
                outs[stop] = diffusion_generate(lm, ids, **kw, stop_at_eos=stop, eos_ids=[eos])
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - t0)
            timings[stop], calls[stop] = best, passes[0]
        same = bool(torch.equal(outs[True], fill_after_stop(outs[False], [eos], mask)))
        blocks = -(-(a + 1) // args.block_length)
        row = dict(answer=a, blocks=blocks, full_s=timings[False], stop_s=timings[True],
                   factor=timings[False] / timings[True], passes_full=calls[False], passes_stop=calls[True],
                   identical=float(same))
        rows.append(row)
        print(f"| {a} | {min(blocks, args.gen_length // args.block_length)} of "
              f"{args.gen_length // args.block_length} | {calls[False]} / {calls[True]} | {timings[False]:.3f} | "
              f"{timings[True]:.3f} | "
              f"{row['factor']:.2f}x | {same} |")
    return rows


if __name__ == "__main__":
    main()
