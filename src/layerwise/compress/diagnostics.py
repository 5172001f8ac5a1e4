"""What a quantization did to each Linear: weight change, output error on held-out inputs, input rank.

GPTQ spreads each column's rounding error over the columns not yet quantized, weighted by the
layer Hessian ``H = 2 X^T X / n``. When a Linear's inputs span only a few directions (a low
*effective rank* of ``X^T X``), almost any rounding error can be moved into directions the inputs
never take, and the layer's outputs stay nearly exact even on a 2-bit grid, while round-to-nearest
(no error feedback) loses as much as on any other input. :func:`linear_errors` measures, per
Linear, the three quantities that show this:

- ``rel_weight_change`` ``||W_q - W||_F / ||W||_F`` (the weights did change);
- ``rel_output_error`` ``||(W_q - W) X|| / ||W X||`` on held-out inputs ``X`` (what the change does
  to the layer's outputs), computed from ``X^T X`` without storing ``X``;
- ``effective_rank`` ``exp(entropy of the eigenvalue shares of X^T X)`` (Roy & Vetterli 2007) and
  ``top1_share`` (the largest eigenvalue's share of the trace): how many directions the inputs use.

Run as a module to tabulate them for the controlled triplet (``--preset gpu`` on a GPU)::

    python -m layerwise.compress.diagnostics --preset tiny --out /tmp/gptq_diag
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from ..models import LoadedModel
from .calibration import LinearStats, blockwise


def effective_rank(xtx: torch.Tensor) -> tuple[float, float]:
    """``(effective rank, top-1 eigenvalue share)`` of a PSD matrix ``[in, in]`` (e.g. ``X^T X``).

    The effective rank is ``exp(H(p))`` with ``p`` the eigenvalues over their sum: ``in`` for
    isotropic inputs, 1 when all inputs lie on one line.
    """
    ev = torch.linalg.eigvalsh(xtx.double()).clamp_min(0)
    total = ev.sum()
    if total <= 0:
        return 0.0, 0.0
    p = ev / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum())), float(p.max())


@torch.no_grad()
def linear_errors(lm: LoadedModel, reference: dict[tuple[int, str], torch.Tensor], input_ids: torch.Tensor, *,
                  blocks: Sequence[int] | None = None, batch_size: int = 8, progress: bool = False) -> pd.DataFrame:
    """Per block Linear: the current weights against ``reference`` (a :func:`~layerwise.compress.snapshot`
    of the weights before compression) on the inputs the current model gives it for ``input_ids``
    ``[n, seq]`` (one pass of the calibration loop, one block's ``X^T X`` in memory at a time).

    Columns: ``layer``, ``role``, ``in_features``, ``rel_weight_change``, ``rel_output_error``,
    ``effective_rank``, ``top1_share``. Pass the unmodified model with its own snapshot to get the
    input ranks alone (the errors are then 0).
    """
    rows: list[dict] = []

    def fn(i: int, _b: nn.Module, linears: dict[str, nn.Linear], stats: dict[str, LinearStats]) -> bool:
        for role, lin in linears.items():
            xtx = stats[role].xtx
            assert xtx is not None  # collect="hessian"
            w = lin.weight.detach().float()
            w0 = reference[(i, role)].to(w.device).float()
            dw = w - w0
            err2 = (dw @ xtx * dw).sum().clamp_min(0)  # ||dW X^T||^2 = tr(dW X^T X dW^T)
            ref2 = (w0 @ xtx * w0).sum().clamp_min(1e-30)
            rank, top1 = effective_rank(xtx)
            rows.append({"layer": i, "role": role, "in_features": lin.in_features,
                         "rel_weight_change": float(dw.norm() / w0.norm().clamp_min(1e-12)),
                         "rel_output_error": float((err2 / ref2).sqrt()),
                         "effective_rank": rank, "top1_share": top1})
            stats[role].xtx = None
        return False  # nothing changed: the next block reads this block's outputs as they are

    blockwise(lm, input_ids, fn, collect="hessian", blocks=blocks, batch_size=batch_size, progress=progress,
              desc="linear errors")
    return pd.DataFrame(rows)


def _main(argv: Sequence[str] | None = None) -> None:  # pragma: no cover - exercised by its --tiny run
    from ..data import calibration_sequences, eval_sequences
    from ..diffusion import mask_tokens, requires_mask_token, sample_t
    from ..subjects import load_subjects
    from .calibration import calibration_inputs
    from .quantize import quantize
    from .weights import preserved, snapshot

    ap = argparse.ArgumentParser(description="Per-Linear weight change, held-out output error and input rank "
                                             "of GPTQ and RTN at several bit widths, for the controlled triplet.")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--calib", type=int, nargs=2, default=[16, 64], metavar=("SEQS", "LEN"))
    ap.add_argument("--eval", type=int, nargs=2, default=[16, 64], metavar=("SEQS", "LEN"))
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", required=True, help="folder for linear_errors.csv and summary.md")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    subjects = load_subjects([], preset=a.preset, cache_dir=a.cache_dir, device=a.device)
    tables = []
    for name, lm in subjects.items():
        ids = calibration_sequences(lm.tokenizer, a.preset, *a.calib, cache_dir=a.cache_dir, seed=0)
        ev = eval_sequences(lm.tokenizer, a.preset, *a.eval, cache_dir=a.cache_dir, seed=1).to(lm.device)
        if lm.family.is_diffusion:  # held-out inputs as the likelihood sees them: masked at t ~ U[0, 1]
            mid = requires_mask_token(lm, purpose="masked evaluation inputs", alternative="an AR model")
            g = torch.Generator().manual_seed(1)
            ev = mask_tokens(ev.cpu(), sample_t(ev.shape[0], generator=g), mid, generator=g)[0].to(lm.device)
        calib = calibration_inputs(lm, ids, diffusion_masking=lm.family.is_diffusion).to(lm.device)
        snap = snapshot(lm)
        tables.append(linear_errors(lm, snap, ev, batch_size=a.batch_size).assign(model=name, method="none", bits=0))
        for method in ("gptq", "rtn"):
            for b in a.bits:
                with preserved(lm, snap):
                    quantize(lm, method, b, a.group_size, calib_ids=calib, batch_size=a.batch_size, progress=False)
                    tables.append(linear_errors(lm, snap, ev, batch_size=a.batch_size)
                                  .assign(model=name, method=method, bits=b))
    df = pd.concat(tables, ignore_index=True)
    df.to_csv(out / "linear_errors.csv", index=False)
    q = df[df.method != "none"]
    summary = q.groupby(["model", "method", "bits"])[["rel_weight_change", "rel_output_error"]].median().unstack("bits")
    ranks = df[df.method == "none"].groupby("model")[["effective_rank", "top1_share", "in_features"]].median()
    text = (f"# Per-Linear quantization errors ({a.preset} triplet)\n\nMedians over block Linears; output errors on "
            f"held-out inputs (diffusion models: masked at t ~ U[0, 1]).\n\n{summary.round(4).to_markdown()}\n\n"
            f"Input effective rank of the unmodified models:\n\n{ranks.round(3).to_markdown()}\n\n"
            f"Command: `python -m layerwise.compress.diagnostics {' '.join(sys.argv[1:] if argv is None else argv)}`\n")
    (out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":  # pragma: no cover
    _main()
