"""Readers of the arithmetic-learning logs in ``lab/logs/`` (lab history, not part of the library or the book).

``arithmetic_learning`` reads ``lab/gpu/arith_sweep.py`` logs (small models on a pure arithmetic stream,
held-out exact match over training); ``arithmetic_probe`` reads ``lab/gpu/arith_probe.py`` rows (the
gpu-preset model on a 90%-arithmetic stream, scored with each objective's own sampler). Moved out of
``layerwise.perf``; kept as run, not maintained. Tests: ``pytest lab/test_arith_logs.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

#: where the logs are committed
LOGS = Path(__file__).resolve().parent / "logs"

#: folders under the logs folder holding ``arith_sweep.py`` logs (one JSON line per evaluation)
ARITH_SWEEP_LOGS = ("arith_sweep", "arith_long")

#: the folder holding ``arith_probe.py`` rows (JSON lists) of the gpu-preset model
ARITH_PROBE_LOGS = "arith_gpu"


def arithmetic_learning(logs_dir: str | os.PathLike = LOGS) -> pd.DataFrame:
    """Held-out arithmetic over training, per run of ``arith_sweep.py``.

    One row per evaluation line of ``<logs>/{arith_sweep,arith_long}/sweep_<tag>.log``:
    ``run`` (``<folder>/<tag>``), ``tag``, ``objective`` (the tag's first word), ``step``, ``batch``,
    ``seq_len``, ``arith_tokens`` (``step * batch * seq_len``: every training token of the sweep is
    arithmetic), ``exact``, ``first_digit``, ``last_digit``, ``distinct_answers``, ``seconds``.
    Logs written before the script recorded ``batch`` / ``seq_len`` get them from its defaults
    (batch 32, or 128 for a ``b128`` tag; sequence length 128). Empty when no log exists.
    """
    logs = Path(logs_dir)
    rows: list[dict[str, Any]] = []
    for folder in ARITH_SWEEP_LOGS:
        for log in sorted((logs / folder).glob("sweep_*.log")):
            for line in log.read_text().splitlines():
                if not line.startswith("{"):
                    continue
                r = json.loads(line)
                tag = r["tag"]
                batch = int(r.get("batch", 128 if "b128" in tag.split("-") else 32))
                seq_len = int(r.get("seq_len", 128))
                rows.append({"run": f"{folder}/{tag}", "tag": tag, "objective": r.get("objective", tag.split("-")[0]),
                             "step": int(r["step"]), "batch": batch, "seq_len": seq_len,
                             "arith_tokens": int(r["step"]) * batch * seq_len, "exact": r["exact"],
                             "first_digit": r["first_digit"], "last_digit": r["last_digit"],
                             "distinct_answers": r["distinct_answers"], "seconds": r.get("seconds")})
    cols = ["run", "tag", "objective", "step", "batch", "seq_len", "arith_tokens", "exact", "first_digit",
            "last_digit", "distinct_answers", "seconds"]
    return pd.DataFrame(rows, columns=cols)


def arithmetic_learning_summary(curves: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """Per run: steps and arithmetic tokens evaluated, best exact match, and the arithmetic tokens at
    the first evaluation with exact match >= ``threshold`` (NaN if never)."""
    out = []
    for run, g in curves.groupby("run", sort=False):
        g = g.sort_values("step")
        hit = g[g["exact"] >= threshold]
        out.append({"run": run, "objective": g["objective"].iloc[0], "batch": int(g["batch"].iloc[0]),
                    "last_step": int(g["step"].max()), "arith_tokens_seen": int(g["arith_tokens"].max()),
                    "best_exact": float(g["exact"].max()), "final_exact": float(g["exact"].iloc[-1]),
                    f"tokens_to_{threshold:.0%}": float(hit["arith_tokens"].iloc[0]) if len(hit) else float("nan")})
    return pd.DataFrame(out)


def _above_chance_pvalue(k: int, n: int, chance: float) -> float:
    """One-sided binomial test that k of n exceeds ``chance``."""
    from scipy.stats import binomtest

    return float(binomtest(k, n, min(max(chance, 0.0), 1.0), alternative="greater").pvalue)


def arithmetic_probe(logs_dir: str | os.PathLike = LOGS) -> pd.DataFrame:
    """Held-out arithmetic of the gpu-preset model trained on a 90%-arithmetic stream.

    One row per scored model in ``<logs>/arith_gpu/arith_gpu_<run>.json`` (written by
    ``arith_probe.py``; ``--snapshots`` adds the run's 25/50/75% snapshots): ``run`` (the
    file's ``<run>``, plus ``/<objective>`` when the file holds several), ``objective``, ``final`` (False
    for a mid-run snapshot), ``batch``, ``budget`` (the run's token budget), ``tokens_seen`` (the model's, the
    budget where the row predates the field), ``arith_tokens`` (``tokens_seen * arith_frac``),
    ``exact_match`` (sampled with the objective's own sampler: greedy for ``ar``, masked diffusion for
    ``dlm``), ``answer_by_likelihood``, ``chance``, ``p_above_chance`` (one-sided binomial, recomputed
    where absent), ``items``. Empty when no file exists.
    """
    rows: list[dict[str, Any]] = []
    for f in sorted((Path(logs_dir) / ARITH_PROBE_LOGS).glob("arith_gpu_*.json")):
        file_rows = json.loads(f.read_text())
        objectives = {r["objective"] for r in file_rows}
        stem = f.stem.removeprefix("arith_gpu_")
        for r in file_rows:
            seen = int(r.get("tokens_seen") or r["tokens"])
            p = r.get("p_above_chance")
            if p is None:  # rows written before arith_probe.py recorded it: the same test on the 0/1 items
                p = _above_chance_pvalue(round(r["exact_match"] * r["items"]), int(r["items"]), r["chance"])
            rows.append({"run": stem if len(objectives) == 1 else f"{stem}/{r['objective']}",
                         "objective": r["objective"], "final": not str(r.get("model", "")).startswith("step_"),
                         "batch": int(r["batch_size"]), "budget": int(r["tokens"]), "tokens_seen": seen,
                         "arith_tokens": seen * float(r["arith_frac"]), "exact_match": float(r["exact_match"]),
                         "answer_by_likelihood": float(r["answer_by_likelihood"]), "chance": float(r["chance"]),
                         "p_above_chance": float(p), "items": int(r["items"])})
    cols = ["run", "objective", "final", "batch", "budget", "tokens_seen", "arith_tokens", "exact_match",
            "answer_by_likelihood", "chance", "p_above_chance", "items"]
    return pd.DataFrame(rows, columns=cols).sort_values(["run", "tokens_seen"], ignore_index=True) if rows \
        else pd.DataFrame(columns=cols)
