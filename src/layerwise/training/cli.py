"""Command line: ``python -m layerwise.training --preset gpu --objective all``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..models import META_FILE
from .loop import ensure_triplet, train
from .presets import H100_BF16_PEAK, PRESETS, get_preset
from .runs import parse_run, run_name, run_names


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m layerwise.training --preset gpu --objective all``."""
    ap = argparse.ArgumentParser(
        prog="layerwise-train",
        description="Train the controlled triplet (ar, dlm, ar2dlm) on identical data from one init.")
    ap.add_argument("--preset", default="tiny", help=f"one of {sorted(PRESETS)}")
    ap.add_argument("--objective", default="all",
                    help="ar, dlm, ar2dlm, an extra branch run such as ar2dlm_b25, or all (every run of the preset)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tokens", type=int, help="training tokens per model")
    ap.add_argument("--batch-size", type=int, help="sequences per optimizer step")
    ap.add_argument("--micro-batch", type=int, help="sequences per forward (gradient accumulation)")
    ap.add_argument("--lr", type=float)
    ap.add_argument("--seed", type=int, help="training seed: init, row order, masking noise (k > 0: <preset>-seed<k>/)")
    ap.add_argument("--branch-fracs", help="extra ar2dlm branch points, comma separated (e.g. 0.25)")
    ap.add_argument("--compile", choices=["auto", "on", "off"], default=None)
    ap.add_argument("--stop-after", type=int, help="stop after N steps (resume by running again)")
    ap.add_argument("--peak-flops", type=float, default=H100_BF16_PEAK, help="accelerator peak FLOP/s for MFU")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    ov: dict[str, Any] = {k: v for k, v in {"tokens": a.tokens, "batch_size": a.batch_size,
                                            "micro_batch": a.micro_batch, "lr": a.lr, "seed": a.seed}.items()
                            if v is not None}
    if a.branch_fracs:
        ov["branch_fracs"] = tuple(float(x) for x in a.branch_fracs.split(",") if x)
    if a.compile is not None:
        ov["compile"] = {"auto": "auto", "on": True, "off": False}[a.compile]
    p = get_preset(a.preset, **ov)
    objs = run_names(p) if a.objective == "all" else [run_name(*parse_run(a.objective, p), p)]
    if a.stop_after is None:
        paths = ensure_triplet(p, a.data_dir, a.cache_dir, a.device, not a.no_progress, objectives=objs)
        for o, path in paths.items():
            m = json.loads((path / META_FILE).read_text())
            print(f"{o}: {path}  steps={m['steps']} tokens_seen={m['tokens_seen']:,} val_loss={m['val_loss']:.4f}")
        return
    order = [r for r in run_names(p) if r in objs] + [r for r in objs if r not in run_names(p)]
    for o in order:
        r = train(o, p, data_dir=a.data_dir, cache_dir=a.cache_dir, device=a.device, progress=not a.no_progress,
                  stop_after=a.stop_after, peak_flops=a.peak_flops)
        print(f"{o}: {r.path} steps={r.steps} complete={r.complete}")
