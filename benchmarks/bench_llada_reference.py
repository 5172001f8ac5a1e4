"""Check + benchmark: LLaDA's genuine ``generate.py`` versus ``layerwise.sampling.diffusion_generate``.

Builds a model from the genuine LLaDA modeling code (``--remote-code DIR``: ``DIR/configs/llada-8b-base.json``
and ``DIR/llada/*.py``, e.g. ``../shared/remote_code``) with LLaDA-8B's shape (32 layers, d 4096, 32 heads,
MLP 12288, vocab 126464) and random bf16 weights, directly on the GPU (nothing is downloaded). Runs
``generate.py`` (imported from ``DIR/llada/generate.py``) and the library's exact sampler on the same
prompts at LLaDA's GSM8K settings (prompt ~900 tokens, gen_length 256, steps 256, block_length 32,
temperature 0, low-confidence remasking), at batch 1 and batch 8 (left padding + attention mask, as
``generate.py``'s ``main()``), and records the tokens that are equal (count / total, rows), the seconds
per sample of each, and their ratio. ``--sliced-head`` also runs the ``sliced_head=True`` option (LM head
on the current block only) and ``--float64`` the ``confidence_dtype=torch.float64`` option (ranking in
float64), each with its tokens equal to ``generate.py``'s.

GPU (H200, ~4 min):  python benchmarks/bench_llada_reference.py --remote-code ../shared/remote_code
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
    """``b`` random prompts, row ``r`` shorter by ``8 r`` tokens, left-padded with ``pad_id`` (mask 0)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, min(mask_id, pad_id), (b, length), generator=g)
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
    settings = TINY if args.tiny else GSM8K
    batches = [int(b) for b in args.batches.split(",")] if args.batches else ([1, 4] if args.tiny else [1, 8])
    dev_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    G = import_llada_generate(remote)

    t0 = time.perf_counter()
    lm = build(remote, args.tiny, device, dtype, args.modeling)
    mask_id, pad_id = int(lm.spec.mask_token_id), int(lm.model.config.pad_token_id)
    print(f"device {dev_name}; built {lm.spec.model_id} in {time.perf_counter() - t0:.1f} s; {settings}", flush=True)
    kw = dict(gen_length=settings["gen_length"], steps=settings["steps"], block_length=settings["block_length"],
              temperature=args.temperature)
    variants: dict[str, dict[str, Any]] = {"lw": {}}
    if args.sliced_head:
        variants["sliced"] = {"sliced_head": True}
    if args.float64:
        variants["float64"] = {"confidence_dtype": torch.float64}

    # warm-up: one block of each (kernel selection, allocator)
    ids, am = prompts(1, settings["prompt"], mask_id, pad_id, seed=-1 % 2**31)
    one = dict(gen_length=settings["block_length"], steps=settings["steps"] * settings["block_length"]
               // settings["gen_length"], block_length=settings["block_length"])
    G.generate(lm.model, ids.to(device), am.to(device), mask_id=mask_id, **one)
    diffusion_generate(lm, ids, am, **one)

    rows = []
    for b in batches:
        n_batches = max(1, math.ceil(args.samples / b)) if args.samples else 1
        row: dict[str, Any] = dict(device=dev_name, modeling=args.modeling, dtype=str(dtype)[6:], batch=b,
                                   samples=n_batches * b, **settings, temperature=args.temperature)
        secs = {"ref": 0.0, **{v: 0.0 for v in variants}}
        peak = {"ref": 0.0, **{v: 0.0 for v in variants}}
        equal = {v: 0 for v in variants}
        rows_equal = {v: 0 for v in variants}
        total = 0
        for k in range(n_batches):
            ids, am = prompts(b, settings["prompt"], mask_id, pad_id, seed=1000 * b + k)
            p = ids.shape[1]
            torch.manual_seed(k)
            dt, gib, ref = _timed(lambda i=ids, a=am, n=p: G.generate(lm.model, i.to(device), a.to(device),
                                                                      mask_id=mask_id, **kw)[:, n:], device)
            secs["ref"] += dt
            peak["ref"] = max(peak["ref"], gib)
            total += ref.numel()
            for name, extra in variants.items():
                torch.manual_seed(k)
                dt, gib, out = _timed(lambda i=ids, a=am, e=extra: diffusion_generate(lm, i, a, **kw, **e), device)
                secs[name] += dt
                peak[name] = max(peak[name], gib)
                equal[name] += int((out == ref).sum())
                rows_equal[name] += int((out == ref).all(dim=1).sum())
        n = n_batches * b
        row.update(ref_s_per_sample=secs["ref"] / n, lw_s_per_sample=secs["lw"] / n,
                   speedup=secs["ref"] / secs["lw"], tokens_equal=equal["lw"], tokens_total=total,
                   rows_equal=rows_equal["lw"])
        for name in variants:
            if name != "lw":
                row.update({f"{name}_s_per_sample": secs[name] / n, f"{name}_tokens_equal": equal[name],
                            f"{name}_rows_equal": rows_equal[name]})
        if device.type == "cuda":
            row.update({f"{name}_peak_gib": peak[name] for name in peak})
        rows.append(row)
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)

    stem = Path(args.out) if args.out else RESULTS / ("llada_reference_tiny" if args.tiny else "llada_reference")
    stem.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    cols = [c for c in keys if c in ("batch", "samples", "tokens_equal", "tokens_total", "rows_equal",
                                     "ref_s_per_sample", "lw_s_per_sample", "speedup", "sliced_tokens_equal",
                                     "sliced_s_per_sample", "float64_tokens_equal", "ref_peak_gib", "lw_peak_gib")]
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    table = "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                      + ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows])
    md = (f"# LLaDA's generate.py versus the library's exact sampler\n\nDevice: {dev_name}. Model: the genuine LLaDA "
          f"modeling code ({args.modeling}), {'tiny' if args.tiny else 'LLaDA-8B'} shape, random {str(dtype)[6:]} "
          f"weights. Settings: prompt {settings['prompt']} tokens (row r of a batch {8}r shorter, left-padded), "
          f"gen_length {settings['gen_length']}, steps {settings['steps']}, block_length {settings['block_length']}, "
          f"temperature {args.temperature}, low-confidence remasking. ref = generate.py, lw = "
          "layerwise.sampling.diffusion_generate (defaults); tokens_equal counts generated tokens equal to "
          "generate.py's; speedup = ref / lw seconds."
          f"{' sliced = sliced_head=True.' if args.sliced_head else ''}"
          f"{' float64 = confidence_dtype=torch.float64.' if args.float64 else ''}\n\n{table}\n")
    stem.with_suffix(".md").write_text(md)
    print()
    print(md)
    return rows


if __name__ == "__main__":
    main()
