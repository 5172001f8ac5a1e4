"""Check + benchmark: LLaDA's genuine ``generate.py`` versus ``layerwise.sampling.diffusion_generate``.

Builds a model from the genuine LLaDA modeling code (``--remote-code DIR``: ``DIR/configs/llada-8b-base.json``
and ``DIR/llada/*.py``, e.g. ``../shared/remote_code``) with LLaDA-8B's shape (32 layers, d 4096, 32 heads,
MLP 12288, vocab 126464) and random bf16 weights, directly on the GPU (nothing is downloaded). Runs
``generate.py`` (imported from ``DIR/llada/generate.py``) and the library's exact sampler on the same
prompts at LLaDA's GSM8K settings (prompt ~900 tokens, gen_length 256, steps 256, block_length 32,
temperature 0, low-confidence remasking), at each ``--batches`` size (left padding + attention mask, as
``generate.py``'s ``main()``; row r of a batch is 8r tokens shorter), and records the tokens that are
equal (count / total, rows), the seconds per sample of each, and their ratio.

Options of the sampler, each with its tokens equal to ``generate.py``'s at the same batch:
``--sliced-head`` (``sliced_head=True``: LM head on the current block only), ``--float64``
(``confidence_dtype=torch.float64``: ranking in float64, changes tokens), ``--cuda-graph``
(``cuda_graph=True``, alone and with ``sliced_head``: each step's model call replayed from a CUDA graph).

``--batch1-rows N``: the first N rows of every batch larger than 1 also run alone (batch 1, no padding), as
LLaDA's evaluation calls ``generate.py``: columns ``*_vs_ref_b1_tokens_equal`` compare each sampler at batch
B with ``generate.py`` at batch 1 row by row, ``*_vs_self_b1_tokens_equal`` with itself at batch 1 (is
the output independent of the batch?), and ``*_speedup_vs_ref_b1`` divides ``generate.py``'s seconds per
sample at batch 1 (the batch-1 row of the table) by the sampler's at batch B.

``--time-blocks K``: generate only the first K blocks (K x block_length tokens in K x steps-per-block
steps) after a prompt longer by the blocks left out, so that every step runs on the canvas of the full
run (the same per-step work); seconds per sample are scaled to the full number of steps. Tokens are
compared on the K blocks generated.

GPU (H200, ~4 min):  python benchmarks/bench_llada_reference.py --remote-code ../shared/remote_code \
                         --sliced-head --float64
Options (H200, ~5 min): python benchmarks/bench_llada_reference.py --remote-code ../shared/remote_code \
                         --batches 1,16,32 --time-blocks 1 --sliced-head --cuda-graph --batch1-rows 4 \
                         --out benchmarks/results/llada_reference_options
CPU check:           python benchmarks/bench_llada_reference.py --tiny --remote-code ../shared/remote_code
Writes ``--out``.csv and .md (default benchmarks/results/llada_reference[_tiny]) and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# hub-like folders and generate.py's import are the test suite's helpers: one copy, in tests/oracles/
sys.path.insert(0, str(REPO / "tests"))
from oracles.remote_code import hub_folder, import_llada_generate, tiny_config  # noqa: E402

#: LLaDA's GSM8K settings (its eval): prompt, gen_length, steps, block_length
GSM8K = dict(prompt=900, gen_length=256, steps=256, block_length=32)
TINY = dict(prompt=40, gen_length=16, steps=16, block_length=8)
TINY_VOCAB = 512


def build(remote: Path, tiny: bool, device: torch.device, dtype: torch.dtype, modeling: str) -> Any:
    """The genuine LLaDA classes (the project's transformers-5 fixes applied) with random weights, built on
    ``device`` (PyTorch's default initialisation; LLaDA's own initialiser is not run), wrapped as a ``dlm``."""
    from layerwise.models import wrap
    from oracles.remote_code import genuine_class

    if tiny:
        cfg = tiny_config("llada", TINY_VOCAB, remote, d_model=64, mlp_hidden_size=128, max_sequence_length=256)
    else:
        cfg = json.loads((remote / "configs" / "llada-8b-base.json").read_text())
    folder = hub_folder(Path(tempfile.mkdtemp(prefix="llada_ref_")), "llada", cfg, remote, modeling=modeling)
    config, cls, arch = genuine_class(folder)
    module = sys.modules[cls.__module__]
    inner_cfg = module.create_model_config_from_pretrained_config(config)
    inner_cfg.init_device = device.type
    torch.manual_seed(0)
    model = cls(config, model=module.LLaDAModel(inner_cfg, init_params=False)).to(dtype).eval()
    arch.patches.apply_model(model)
    return wrap(model, None, "dlm", mask_token_id=int(config.mask_token_id), adapter=arch.adapter,
                model_id=f"LLaDA-8B-shaped ({modeling}, random weights)" if not tiny else "tiny LLaDA")


def prompts(b: int, length: int, mask_id: int, pad_id: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``b`` random prompts, row ``r`` drawn from seed ``seed + r`` (so a batch's first rows are those of any
    larger batch) and shorter by ``8 r`` tokens, left-padded with ``pad_id`` (mask 0)."""
    high = min(mask_id, pad_id)
    ids = torch.stack([torch.randint(0, high, (length,), generator=torch.Generator().manual_seed(seed + r))
                       for r in range(b)])
    am = torch.ones_like(ids)
    for r in range(b):
        am[r, :min(8 * r, length - 1)] = 0
    ids[am == 0] = pad_id
    return ids, am


def _timed(fn: Callable[[], torch.Tensor], device: torch.device) -> tuple[float, float, torch.Tensor]:
    """(seconds, peak GiB allocated during the call (nan on CPU), output on the CPU) of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else math.nan
    return time.perf_counter() - t0, peak, out.cpu()


#: the sampler's options a run can add (flag -> variant name -> keyword arguments of diffusion_generate)
VARIANTS: dict[str, dict[str, Any]] = {
    "lw": {},
    "sliced": {"sliced_head": True},
    "float64": {"confidence_dtype": torch.float64},
    "graph": {"cuda_graph": True},
    "graph_sliced": {"cuda_graph": True, "sliced_head": True},
}


def _equal(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int]:
    """(tokens equal, rows equal) of two ``[B, G]`` outputs."""
    return int((a == b).sum()), int((a == b).all(dim=1).sum())


def profile_call(fn: Callable[[], Any], device: torch.device, rows: int = 25) -> str:
    """Markdown: one call of ``fn`` under torch.profiler: wall seconds, seconds of GPU kernels (their sum)
    and the busy share, then the ``rows`` operators and kernels with the most self time on the device
    (the CPU without a GPU)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    kernels = [e for e in prof.events() if str(getattr(e, "device_type", "")).endswith("CUDA")]
    busy = sum(float(getattr(e, "device_time", 0.0) or 0.0) for e in kernels) / 1e6
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=70)
    return (f"wall {wall:.3f} s under the profiler; GPU kernels {busy:.3f} s ({busy / wall:.0%} busy), "
            f"{len(kernels)} kernels\n\n```\n{table}\n```\n")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    from layerwise.sampling import diffusion_generate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--remote-code", default=str(REPO.parent / "shared" / "remote_code"),
                    help="folder with configs/llada-8b-base.json and llada/{generate,modeling_llada,...}.py")
    ap.add_argument("--tiny", action="store_true", help="a tiny model on CPU (checks the script)")
    ap.add_argument("--batches", default="", help="comma list of batch sizes (default 1,8; tiny 1,4)")
    ap.add_argument("--samples", type=int, default=0,
                    help="samples per batch size (rounded up to whole batches; default: one batch each)")
    ap.add_argument("--dtype", default="", help="bfloat16 or float32 (default: bfloat16 on CUDA, float32 on CPU)")
    ap.add_argument("--temperature", type=float, default=0.0, help="> 0: the same global seed before both samplers")
    ap.add_argument("--modeling", default="modeling_llada.py",
                    help="LLaDA modeling file in --remote-code/llada (e.g. modeling_llada.hub-2025-06.py)")
    ap.add_argument("--sliced-head", action="store_true", help="also run sliced_head=True")
    ap.add_argument("--float64", action="store_true", help="also run confidence_dtype=torch.float64")
    ap.add_argument("--cuda-graph", action="store_true",
                    help="also run cuda_graph=True, alone and with sliced_head (CUDA only; skipped on CPU)")
    ap.add_argument("--batch1-rows", type=int, default=0,
                    help="rows of each larger batch also run alone (generate.py and every variant at batch 1)")
    ap.add_argument("--time-blocks", type=int, default=0,
                    help="generate only this many blocks (same canvas, times scaled to the full run); 0 = all")
    ap.add_argument("--profile", action="store_true",
                    help="also profile one block at batch 1 of generate.py and each variant (<out>_profile.md)")
    ap.add_argument("--out", default="", help="results file stem (default benchmarks/results/llada_reference[_tiny])")
    args = ap.parse_args(argv)

    remote = Path(args.remote_code)
    if not (remote / "llada" / "generate.py").is_file():
        raise SystemExit(f"no LLaDA remote code at {remote}: pass --remote-code DIR (DIR/llada/generate.py)")
    device = torch.device("cpu" if args.tiny else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no GPU visible: run with --tiny for the CPU check")
    dtype = {"": torch.float32 if args.tiny else torch.bfloat16, "bfloat16": torch.bfloat16,
             "float32": torch.float32}[args.dtype]
    settings = dict(TINY if args.tiny else GSM8K)
    n_blocks = settings["gen_length"] // settings["block_length"]
    spb = settings["steps"] // n_blocks
    scale = 1.0
    if args.time_blocks:
        k_blocks = min(args.time_blocks, n_blocks)
        settings.update(prompt=settings["prompt"] + (n_blocks - k_blocks) * settings["block_length"],
                        gen_length=k_blocks * settings["block_length"], steps=k_blocks * spb)
        scale = n_blocks / k_blocks
    batches = [int(b) for b in args.batches.split(",")] if args.batches else ([1, 4] if args.tiny else [1, 8])
    dev_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    G = import_llada_generate(remote)

    t0 = time.perf_counter()
    lm = build(remote, args.tiny, device, dtype, args.modeling)
    mask_id, pad_id = int(lm.spec.mask_token_id), int(lm.model.config.pad_token_id)
    print(f"device {dev_name}; built {lm.spec.model_id} in {time.perf_counter() - t0:.1f} s; {settings}"
          f"{f'; times x {scale:g} (time-blocks)' if scale != 1 else ''}", flush=True)
    kw = dict(gen_length=settings["gen_length"], steps=settings["steps"], block_length=settings["block_length"],
              temperature=args.temperature)
    names = ["lw"] + [n for n, on in (("sliced", args.sliced_head), ("float64", args.float64),
                                      ("graph", args.cuda_graph), ("graph_sliced", args.cuda_graph)) if on]
    if device.type != "cuda" and args.cuda_graph:
        print("--cuda-graph: skipped on the CPU (CUDA graphs need a GPU)", flush=True)
        names = [n for n in names if not n.startswith("graph")]
    variants = {n: VARIANTS[n] for n in names}

    def ref_run(ids: torch.Tensor, am: torch.Tensor | None, seed: int) -> tuple[float, float, torch.Tensor]:
        torch.manual_seed(seed)
        n = ids.shape[1]
        return _timed(lambda: G.generate(lm.model, ids.to(device), None if am is None else am.to(device),
                                         mask_id=mask_id, **kw)[:, n:], device)

    def lw_run(ids: torch.Tensor, am: torch.Tensor | None, seed: int, extra: dict[str, Any]
               ) -> tuple[float, float, torch.Tensor]:
        torch.manual_seed(seed)
        return _timed(lambda: diffusion_generate(lm, ids, am, **kw, **extra), device)

    # warm-up: one block of each (kernel selection, allocator)
    ids, am = prompts(1, settings["prompt"], mask_id, pad_id, seed=2**30)
    one = dict(gen_length=settings["block_length"], steps=spb, block_length=settings["block_length"])
    G.generate(lm.model, ids.to(device), am.to(device), mask_id=mask_id, **one)
    for extra in variants.values():
        diffusion_generate(lm, ids, am, **one, **extra)

    batch1: dict[int, dict[str, tuple[float, torch.Tensor]]] = {}  # row -> sampler -> (seconds, tokens)

    def alone(r: int, ids: torch.Tensor, am: torch.Tensor) -> dict[str, tuple[float, torch.Tensor]]:
        """Row ``r`` of a batch run alone (its padding removed), by generate.py and every variant."""
        if r not in batch1:
            row_ids = ids[r:r + 1, int((am[r] == 0).sum()):]
            dt, _, ref = ref_run(row_ids, None, 0)
            batch1[r] = {"ref": (dt, ref)}
            for name, extra in variants.items():
                dt, _, out = lw_run(row_ids, None, 0, extra)
                batch1[r][name] = (dt, out)
        return batch1[r]

    rows = []
    for b in batches:
        n_batches = max(1, math.ceil(args.samples / b)) if args.samples else 1
        row: dict[str, Any] = dict(device=dev_name, modeling=args.modeling, dtype=str(dtype)[6:], batch=b,
                                   samples=n_batches * b, **settings, time_scale=scale,
                                   temperature=args.temperature)
        secs = {"ref": 0.0, **{v: 0.0 for v in variants}}
        peak = {"ref": 0.0, **{v: 0.0 for v in variants}}
        equal = {v: [0, 0] for v in variants}
        b1 = {v: [0, 0] for v in ["ref", *variants]}
        b1_self = {v: [0, 0] for v in variants}
        errors: dict[str, str] = {}
        total = b1_total = 0
        for k in range(n_batches):
            ids, am = prompts(b, settings["prompt"], mask_id, pad_id, seed=1000 * k)
            dt, gib, ref = ref_run(ids, am, k)
            secs["ref"] += dt
            peak["ref"] = max(peak["ref"], gib)
            total += ref.numel()
            outs = {}
            for name, extra in variants.items():
                try:
                    dt, gib, outs[name] = lw_run(ids, am, k, extra)
                except Exception as e:  # noqa: BLE001 - one failing option must not lose the others' numbers
                    errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                    print(f"{name} at batch {b}: {errors[name]}", flush=True)
                    continue
                secs[name] += dt
                peak[name] = max(peak[name], gib)
                e_tok, e_rows = _equal(outs[name], ref)
                equal[name][0] += e_tok
                equal[name][1] += e_rows
            if b > 1 and k == 0 and args.batch1_rows:
                for r in range(min(args.batch1_rows, b)):
                    single = alone(r, ids, am)
                    b1_total += ref.shape[1]
                    for name, out in [("ref", ref), *outs.items()]:
                        eq, _ = _equal(out[r:r + 1], single["ref"][1])
                        b1[name][0] += eq
                        b1[name][1] += int(eq == ref.shape[1])
                        if name != "ref":
                            eq, _ = _equal(out[r:r + 1], single[name][1])
                            b1_self[name][0] += eq
                            b1_self[name][1] += int(eq == ref.shape[1])
        n = n_batches * b
        row.update(ref_s_per_sample=secs["ref"] / n * scale, lw_s_per_sample=secs["lw"] / n * scale,
                   speedup=secs["ref"] / secs["lw"] if secs["lw"] else math.nan, tokens_equal=equal["lw"][0],
                   tokens_total=total, rows_equal=equal["lw"][1])
        for name in variants:
            if name != "lw":
                row.update({f"{name}_s_per_sample": secs[name] / n * scale if name not in errors else math.nan,
                            f"{name}_tokens_equal": equal[name][0], f"{name}_rows_equal": equal[name][1]})
        if b1_total:
            row.update(batch1_rows=min(args.batch1_rows, b), batch1_tokens_total=b1_total)
            for name in ["ref", *variants]:
                row[f"{name}_vs_ref_b1_tokens_equal"] = b1[name][0]
                row[f"{name}_vs_ref_b1_rows_equal"] = b1[name][1]
            for name in variants:
                row[f"{name}_vs_self_b1_tokens_equal"] = b1_self[name][0]
                row[f"{name}_vs_self_b1_rows_equal"] = b1_self[name][1]
        if device.type == "cuda":
            row.update({f"{name}_peak_gib": peak[name] for name in peak})
        row.update({f"{name}_error": msg for name, msg in errors.items()})
        rows.append(row)
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)

    ref_b1 = next((r["ref_s_per_sample"] for r in rows if r["batch"] == 1), None)
    if ref_b1 is not None:
        for r in rows:
            for name in variants:
                r[f"{name}_speedup_vs_ref_b1"] = ref_b1 / r[f"{name}_s_per_sample"]
    stem = Path(args.out) if args.out else RESULTS / ("llada_reference_tiny" if args.tiny else "llada_reference")
    write(rows, stem, dev_name, args, settings, scale, list(variants), argv)
    if args.profile:
        first = settings["prompt"] + settings["gen_length"] - settings["block_length"]  # the last block's canvas
        ids, am = prompts(1, first, mask_id, pad_id, seed=0)
        parts = [f"# Profile of one block at batch 1 ({spb} steps, canvas {first + settings['block_length']} "
                 f"tokens)\n\nDevice: {dev_name}.\n"]
        parts.append("## generate.py\n\n" + profile_call(
            lambda: G.generate(lm.model, ids.to(device), am.to(device), mask_id=mask_id, **one), device))
        for name, extra in variants.items():
            parts.append(f"## {name} {extra}\n\n" + profile_call(
                lambda e=extra: diffusion_generate(lm, ids, am, **one, **e), device))
        path = stem.with_name(stem.name + "_profile.md")
        path.write_text("\n".join(parts))
        print(f"profile: {path}")
    return rows


def write(rows: list[dict[str, Any]], stem: Path, dev_name: str, args: argparse.Namespace,
          settings: dict[str, int], scale: float, variants: list[str], argv: list[str] | None) -> None:
    """``stem``.csv (every column) and ``stem``.md (the settings, the command and the main columns)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    shown = ("device", "modeling", "dtype", "prompt", "gen_length", "steps", "block_length", "temperature",
             "time_scale")
    cols = [c for c in keys if c not in shown and not c.endswith("_rows_equal")
            and not (c.endswith("_peak_gib") and c[:-9] not in ("ref", "lw"))]
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    table = "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                      + ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows])
    names = {"sliced": "sliced = sliced_head=True", "float64": "float64 = confidence_dtype=torch.float64",
             "graph": "graph = cuda_graph=True (one capture per call, included in the time)",
             "graph_sliced": "graph_sliced = cuda_graph=True with sliced_head=True"}
    blocks = (f" Time-blocks: only the first {settings['gen_length'] // settings['block_length']} block(s) are "
              f"generated ({settings['steps']} steps) after a prompt longer by the blocks left out (the full run's "
              f"canvas); seconds per sample are x {scale:g}, the full run's {int(settings['steps'] * scale)} steps."
              if scale != 1 else "")
    b1 = (" *_vs_ref_b1_tokens_equal: tokens of the first batch1_rows rows equal to generate.py's on that row "
          "alone (batch 1, no padding), of batch1_tokens_total; *_vs_self_b1_tokens_equal: equal to the same "
          "sampler's on that row alone; *_speedup_vs_ref_b1: generate.py's seconds per sample at batch 1 / "
          "these." if any("batch1_rows" in r for r in rows) else "")
    cmd = "python benchmarks/bench_llada_reference.py " + " ".join(argv if argv is not None else sys.argv[1:])
    md = (f"# LLaDA's generate.py versus the library's exact sampler\n\nDevice: {dev_name}. Model: the genuine LLaDA "
          f"modeling code ({args.modeling}), {'tiny' if args.tiny else 'LLaDA-8B'} shape, random {dtype_name(rows)} "
          f"weights. Settings: prompt {settings['prompt']} tokens (row r of a batch 8r shorter, left-padded), "
          f"gen_length {settings['gen_length']}, steps {settings['steps']}, block_length {settings['block_length']}, "
          f"temperature {args.temperature}, low-confidence remasking. ref = generate.py, lw = "
          "layerwise.sampling.diffusion_generate (defaults); tokens_equal counts generated tokens equal to "
          "generate.py's at the same batch; speedup = ref / lw seconds."
          + "".join(f" {names[v]}." for v in variants if v in names) + blocks + b1
          + f"\n\nCommand: `{cmd.strip()}`\n\n{table}\n")
    stem.with_suffix(".md").write_text(md)
    print()
    print(md)


def dtype_name(rows: list[dict[str, Any]]) -> str:
    return str(rows[0]["dtype"]) if rows else ""


if __name__ == "__main__":
    main()
