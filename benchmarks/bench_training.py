"""Training throughput and MFU of the triplet's model, per objective, with torch.compile on/off.

Runs the real training step of :mod:`layerwise.training` (the objective's loss, backward, gradient
clipping, fused AdamW; bf16 autocast on CUDA) on random tokens of the preset's shape, so the numbers
isolate the model from data loading. Writes ``benchmarks/results/training[_tiny].csv`` and ``.md``.

GPU (the published numbers)::

    python benchmarks/bench_training.py --preset gpu --steps 200
    # the same step at d_model 1024 (how MFU depends on width)
    python benchmarks/bench_training.py --compile on --objectives ar,dlm --set d_model=1024 --set n_heads=16 \
        --set d_mlp=2816 --out benchmarks/results/training_wide

CPU smoke run::

    python benchmarks/bench_training.py --tiny
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from layerwise import training as T
from layerwise.config import resolve_device
from layerwise.results import device_name

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class _VocabOnly:
    """The part of a tokenizer :func:`layerwise.training.model_config` reads (no corpus needed)."""

    size: int
    bos_token_id: int = 0
    eos_token_id: int = 0
    pad_token_id: int = 1
    mask_token_id: int = 2

    def __len__(self) -> int:
        return self.size


def bench_one(preset: T.Preset, objective: str, compile_model: bool | str, steps: int, warmup: int,
              device: torch.device, peak: float | None) -> dict:
    """Time ``steps`` optimizer steps after ``warmup`` (which absorbs compilation).

    ``compile_model``: False (eager), True (``training.compile_for_training``: what training uses) or
    ``"plain"`` (bare ``torch.compile``, which hands SDPA a materialised mask: the before/after).
    """
    tok = _VocabOnly(preset.data.vocab_size)
    model = T.init_model(preset, tok, objective).to(device).train()
    fwd = (torch.compile(model) if compile_model == "plain" else T.compile_for_training(model) if compile_model
           else model)
    opt = torch.optim.AdamW(model.parameters(), lr=preset.lr, betas=preset.betas,
                            weight_decay=preset.weight_decay, fused=device.type == "cuda")
    fpt = T.flops_per_token(model, preset.seq_len)
    accum = preset.batch_size // preset.micro_batch
    gen = torch.Generator(device=device).manual_seed(0)
    # random ids, avoiding the special ids at the bottom of the vocabulary
    batch = torch.randint(3, preset.data.vocab_size, (preset.batch_size, preset.seq_len), device=device, generator=gen)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        for mb in batch.split(preset.micro_batch):
            with T._autocast(device):
                loss = T.objective_loss(objective, fwd, mb, tok.mask_token_id, preset.eps, gen,
                                        bool(compile_model)) / accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), preset.grad_clip)
        opt.step()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    sync()
    t1 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    dt = time.perf_counter() - t1
    tps = steps * preset.batch_size * preset.seq_len / dt
    return {"objective": objective, "compile": bool(compile_model), "sdpa_mask_skip": compile_model is True,
            "batch_size": preset.batch_size,
            "micro_batch": preset.micro_batch, "seq_len": preset.seq_len, "d_model": preset.d_model,
            "n_layers": preset.n_layers, "params": T.n_params(model, False),
            "params_nonembedding": T.n_params(model), "gflops_per_token": fpt / 1e9, "steps": steps,
            "step_s": dt / steps, "tokens_per_s": tps,
            "mfu": tps * fpt / peak if (peak and device.type == "cuda") else None,
            "warmup_s": t1 - t0,
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="gpu")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run: the `test` preset, a few steps")
    ap.add_argument("--objectives", default="ar,dlm,ar2dlm")
    ap.add_argument("--compile", choices=["on", "off", "both", "all"], default="both",
                    help="on: compiled as in training; both: off and on; all: off, plain torch.compile, on")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=15)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--micro-batch", type=int)
    ap.add_argument("--peak-flops", type=float, default=T.H100_BF16_PEAK, help="bf16 dense peak FLOP/s for MFU")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a preset field, e.g. --set d_model=1024 --set d_mlp=2816 "
                         "(how MFU scales with width)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=None, help="output stem (default benchmarks/results/training[_tiny])")
    a = ap.parse_args(argv)
    if a.tiny:
        a.preset, a.steps, a.warmup = "test", min(a.steps, 10), min(a.warmup, 2)
        a.compile = "off" if a.compile == "both" else a.compile
    ov = {k: v for k, v in {"batch_size": a.batch_size, "micro_batch": a.micro_batch}.items() if v}
    for kv in a.set:
        k, _, v = kv.partition("=")
        ov[k] = int(v) if v.lstrip("-").isdigit() else float(v) if v.replace(".", "", 1).isdigit() else v
    if "batch_size" in ov and "micro_batch" not in ov:
        ov["micro_batch"] = min(ov["batch_size"], T.get_preset(a.preset).micro_batch)
    preset = T.get_preset(a.preset, **ov)
    dev = resolve_device(a.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    compiles = {"on": [True], "off": [False], "both": [False, True], "all": [False, "plain", True]}[a.compile]
    rows = []
    for c in compiles:
        for o in a.objectives.split(","):
            T.check_objective(o)
            with T.cpu_threads(preset.cpu_threads, dev):
                r = bench_one(preset, o, c, a.steps, a.warmup, dev, a.peak_flops)
            rows.append(r)
            mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
            print(f"{o:7s} compile={c!s:5s} {r['tokens_per_s']:>12,.0f} tok/s  MFU {mfu}  "
                  f"step {r['step_s'] * 1e3:.1f} ms")
    df = pd.DataFrame(rows)
    df.insert(0, "device", device_name())
    df.insert(1, "preset", preset.name)
    df.insert(2, "torch", torch.__version__)
    stem = Path(a.out) if a.out else RESULTS / ("training_tiny" if a.tiny else "training")
    stem.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(stem.with_suffix(".csv"), index=False)
    show = df[["objective", "compile", "d_model", "n_layers", "micro_batch", "tokens_per_s", "mfu", "step_s",
               "peak_mem_gib"]].copy()
    show["tokens_per_s"] = show.tokens_per_s.map("{:,.0f}".format)
    show["mfu"] = show.mfu.map(lambda x: "n/a" if pd.isna(x) else f"{x:.1%}")
    show["step_s"] = show.step_s.map("{:.4f}".format)
    head = (f"# Training throughput: preset `{preset.name}`\n\n"
            f"Device: {device_name()}; torch {torch.__version__}; batch {preset.batch_size} x {preset.seq_len} tokens, "
            f"{df.params.iloc[0]:,} parameters ({df.params_nonembedding.iloc[0]:,} non-embedding), "
            f"{df.gflops_per_token.iloc[0]:.4g} GFLOP/token; MFU against {a.peak_flops:.3g} FLOP/s; "
            f"{a.steps} timed steps after {a.warmup} warm-up steps; random tokens.\n\n"
            f"Command: `python benchmarks/bench_training.py {' '.join(sys.argv[1:] if argv is None else argv)}`\n\n")
    try:
        table = show.to_markdown(index=False)
    except ImportError:  # pandas needs `tabulate` for this; the GPU image may lack it: plain pipe table
        table = "\n".join(["| " + " | ".join(show.columns) + " |", "|" + "---|" * len(show.columns)]
                          + ["| " + " | ".join(str(v) for v in r) + " |" for r in show.itertuples(index=False)])
    stem.with_suffix(".md").write_text(head + table + "\n")
    print(f"wrote {stem.with_suffix('.csv')} and .md")
    return df


if __name__ == "__main__":
    main()
