"""Design run of the controlled triplet: train a candidate preset and measure how competent it gets.

Trains ``ar``, ``dlm``, ``ar2dlm`` (branched at 75%) and ``ar2dlm_b25`` (branched at 25%) of a
candidate preset (a registered preset with ``--set FIELD=VALUE`` overrides, as in
``bench_training.py``), with snapshots at 25/50/75/100% of the budget, then scores every snapshot
and final model with the competence report (:mod:`layerwise.training.competence`): held-out
arithmetic exact match by each model's own sampler (Wilson interval, chance), held-out bits per byte
by each model's own likelihood, tokens per non-embedding parameter, throughput and MFU. Writes
``benchmarks/results/triplet_design[_tiny].csv`` (one row per model), ``..._timeline.csv`` (data
preparation, each training, each evaluation, in seconds) and a ``.md`` report.

Resumable: run the same command again after a kill. Finished trainings are loaded (a killed one
resumes from its last checkpoint) and models already scored with the same settings are not scored
again.

The candidate on one H200 (needs the Gutenberg corpus under ``$LAYERWISE_DATA_DIR/corpus``)::

    python benchmarks/bench_triplet_design.py --preset gpu --set d_model=256 --set n_layers=8 \
        --set n_heads=4 --set d_mlp=704 --set arith_frac=0.5 --set tokens=600000000

Other training seeds of the same candidate (their own folders; add ``--out``); ``--jobs 2`` trains two
independent runs at once on the one GPU (then each run's throughput and MFU share the device)::

    python benchmarks/bench_triplet_design.py ... --seeds 1,2 --runs ar,dlm,ar2dlm --jobs 2 \
        --out benchmarks/results/triplet_design_seeds

CPU smoke run (the ``tiny`` preset, shortened)::

    python benchmarks/bench_triplet_design.py --tiny
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from layerwise import data as D
from layerwise import training as T
from layerwise.config import LayerwiseError, resolve_device
from layerwise.results import device_name
from layerwise.training import competence as C

RESULTS = Path(__file__).resolve().parent / "results"
#: the --tiny run: the tiny preset at a quarter of its budget, a few evaluation items
TINY_OVERRIDES: dict[str, Any] = {"tokens": 160_000, "log_every": 2, "ckpt_every": 20}
TINY_EVAL = C.CompetenceSettings(arith_items=16, text_passages=4, text_chars=300, mc_samples=2, batch_size=16)


def _value(v: str) -> Any:
    """A ``--set`` value: int, float, a comma list of numbers (a tuple), true/false, or text."""
    if "," in v:
        return tuple(float(x) for x in v.split(",") if x)
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


def _table(df: pd.DataFrame) -> str:
    try:
        return df.to_markdown(index=False)
    except ImportError:  # pandas needs `tabulate`; the GPU image may lack it: a plain pipe table
        return "\n".join(["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
                         + ["| " + " | ".join(str(v) for v in r) + " |" for r in df.itertuples(index=False)])


def _train_one(run: str, p: T.Preset, data_dir: str | None, cache_dir: str | None, device: Any, peak_flops: float,
               td: D.TrainData | None = None) -> dict[str, Any]:
    """Train (or load) one run; what the timeline needs. Runs in a worker process with ``--jobs``."""
    t0, started = time.perf_counter(), time.time()
    cached = T.is_complete(T.run_dir(p, run, cache_dir), p)
    res = T.train(run, p, data_dir=data_dir, cache_dir=cache_dir, device=device, progress=False,
                  peak_flops=peak_flops, train_data=td)
    if not res.complete:
        raise LayerwiseError(f"training {run} stopped at step {res.steps}: run the command again to resume")
    return {"run": run, "seed": p.seed, "path": str(res.path), "steps": res.steps, "cached": cached,
            "started": started, "seconds": time.perf_counter() - t0}


def _fmt(x: Any, spec: str) -> str:
    return "" if x is None or (isinstance(x, float) and pd.isna(x)) else format(x, spec)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="gpu")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a preset or data field, e.g. --set d_model=256 --set arith_frac=0.5 "
                         "--set branch_fracs=0.25 (comma lists for branch_fracs / snapshot_fracs)")
    ap.add_argument("--seeds", default="0", help="training seeds, comma separated (each its own folders)")
    ap.add_argument("--runs", default="", help="runs to train and score (default: all of the preset's runs)")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run: the tiny preset, shortened")
    ap.add_argument("--arith-items", type=int, default=200, help="held-out arithmetic problems per model")
    ap.add_argument("--text-passages", type=int, default=32, help="held-out text passages per model")
    ap.add_argument("--text-chars", type=int, default=2000, help="characters per passage")
    ap.add_argument("--mc-samples", type=int, default=16, help="Monte-Carlo samples per window (diffusion ELBO)")
    ap.add_argument("--eval-batch", type=int, default=100, help="sequences per evaluation forward")
    ap.add_argument("--no-snapshots", action="store_true", help="score the final models only")
    ap.add_argument("--jobs", type=int, default=1,
                    help="train up to this many independent runs at once on the one device (worker processes: "
                         "ar beside dlm and other seeds, then the ar2dlm branches); 1 = one after another, "
                         "which keeps each run's throughput and MFU its own")
    ap.add_argument("--peak-flops", type=float, default=T.H200_BF16_PEAK, help="nominal bf16 peak for MFU")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default=None, help="output stem (default benchmarks/results/triplet_design[_tiny])")
    a = ap.parse_args(argv)
    cmd = "python benchmarks/bench_triplet_design.py " + " ".join(sys.argv[1:] if argv is None else argv)

    ov: dict[str, Any] = {"branch_fracs": (0.25,), "snapshot_fracs": (0.25, 0.5, 0.75, 1.0)}
    settings = C.CompetenceSettings(arith_items=a.arith_items, text_passages=a.text_passages,
                                    text_chars=a.text_chars, mc_samples=a.mc_samples, batch_size=a.eval_batch,
                                    peak_flops=a.peak_flops)
    if a.tiny:
        a.preset = "tiny"
        ov.update(TINY_OVERRIDES)
        settings = dataclasses.replace(TINY_EVAL, peak_flops=a.peak_flops)
    for kv in a.set:
        k, sep, v = kv.partition("=")
        if not sep:
            raise LayerwiseError(f"--set {kv!r} needs FIELD=VALUE, e.g. --set d_model=256")
        ov[k] = _value(v)
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    dev = resolve_device(a.device)
    timeline: list[dict[str, Any]] = []
    t_start, t_wall = time.perf_counter(), time.time()

    def mark(phase: str, what: str, t0: float, cached: bool = False, **extra: Any) -> None:
        timeline.append({"phase": phase, "what": what, "start_s": round(t0 - t_start, 2),
                         "seconds": round(time.perf_counter() - t0, 2), "cached": cached, **extra})
        print(f"[{time.perf_counter() - t_start:7.1f} s] {phase:5s} {what}: {timeline[-1]['seconds']:.1f} s"
              + (" (cached)" if cached else ""), flush=True)

    base = T.get_preset(a.preset, **ov)
    t0 = time.perf_counter()
    td = D.prepare(base.data, data_dir=a.data_dir, cache_dir=a.cache_dir, progress=False)
    rows_total = td.n_rows * base.seq_len
    mark("data", f"prepare {base.data.source} (tokenizer + {td.n_rows:,} rows of {base.seq_len})", t0)

    presets: dict[int, T.Preset] = {}
    jobs: list[tuple[str, T.Preset]] = []  # (run, preset) in training order
    for seed in seeds:
        p = dataclasses.replace(base, seed=seed)
        p.validate()
        presets[seed] = p
        runs = [r for r in a.runs.split(",") if r] or T.run_names(p)
        if any(r.startswith("ar2dlm") for r in runs) and "ar" not in runs:
            runs = ["ar", *runs]
        jobs += [(r, p) for r in runs]
    # ar2dlm runs start from an ar snapshot: every other run first, then the branches
    stages = [[j for j in jobs if not j[0].startswith("ar2dlm")], [j for j in jobs if j[0].startswith("ar2dlm")]]
    done: dict[tuple[str, int], Path] = {}
    for stage in stages:
        if a.jobs > 1 and len(stage) > 1:
            t0 = time.perf_counter()
            with ProcessPoolExecutor(min(a.jobs, len(stage)), mp_context=mp.get_context("spawn")) as pool:
                futs = [pool.submit(_train_one, r, p, a.data_dir, a.cache_dir, str(dev), a.peak_flops)
                        for r, p in stage]
                for fut in futs:
                    out = fut.result()
                    timeline.append({"phase": "train", "what": f"{out['run']} seed {out['seed']}",
                                     "start_s": round(out["started"] - t_wall, 2),
                                     "seconds": round(out["seconds"], 2), "cached": out["cached"],
                                     "steps": out["steps"]})
                    done[(out["run"], out["seed"])] = Path(out["path"])
            mark("train", f"{len(stage)} runs, {min(a.jobs, len(stage))} at a time", t0)
            continue
        for r, p in stage:
            t0 = time.perf_counter()
            out = _train_one(r, p, a.data_dir, a.cache_dir, dev, a.peak_flops, td)
            mark("train", f"{r} seed {p.seed}", t0, out["cached"], steps=out["steps"])
            done[(r, p.seed)] = Path(out["path"])
    folders = [f for r, p in jobs for f in C.model_folders(done[(r, p.seed)], snapshots=not a.no_snapshots)]

    rows = []
    with T.cpu_threads(base.cpu_threads, dev):  # on a CPU, the preset's thread count (shared cores)
        for f in folders:
            t0 = time.perf_counter()
            row = C.score_model(f, settings, device=a.device, data_dir=a.data_dir, cache_dir=a.cache_dir)
            mark("eval", row["model"] + f" seed {row['seed']}", t0, bool(row["reused"]))
            rows.append(row)
    report = pd.DataFrame(rows)
    report.insert(0, "device", device_name())
    report.insert(1, "preset", base.name)
    report.insert(2, "config_hash", report["seed"].map(lambda s: presets[s].config_hash()))

    stem = Path(a.out) if a.out else RESULTS / ("triplet_design_tiny" if a.tiny else "triplet_design")
    stem.parent.mkdir(parents=True, exist_ok=True)
    report.drop(columns=["path", "reused"]).to_csv(stem.with_suffix(".csv"), index=False)
    tl = pd.DataFrame(timeline)
    tl.to_csv(stem.with_name(stem.name + "_timeline.csv"), index=False)
    stem.with_suffix(".md").write_text(_markdown(report, tl, base, settings, td.n_rows, rows_total, cmd))
    print(f"wrote {stem.with_suffix('.csv')}, {stem.name}_timeline.csv and {stem.name}.md")
    return report


def _markdown(report: pd.DataFrame, tl: pd.DataFrame, p: T.Preset, s: C.CompetenceSettings, n_rows: int,
              rows_tokens: int, cmd: str) -> str:
    fields = {k: v for k, v in dataclasses.asdict(p).items() if k != "data"}
    fin = report[report["final"]]
    targets = C.meets_targets(report)
    show = report[["model", "seed", "tokens_seen", "tokens_per_param", "sampler", "exact_match", "em_ci_low",
                   "em_ci_high", "chance", "x_chance", "bits_per_byte", "bpb_kind"]].copy()
    for c, spec in [("tokens_seen", ",.0f"), ("tokens_per_param", ".1f"), ("exact_match", ".3f"),
                    ("em_ci_low", ".3f"), ("em_ci_high", ".3f"), ("chance", ".3f"), ("x_chance", ".1f"),
                    ("bits_per_byte", ".3f")]:
        show[c] = show[c].map(lambda x, sp=spec: _fmt(x, sp))
    speed = fin[["run", "seed", "own_tokens", "tokens_per_s", "train_s", "mfu"]].copy()
    speed["own_tokens"] = speed.own_tokens.map(lambda x: f"{x:,.0f}")
    speed["tokens_per_s"] = speed.tokens_per_s.map(lambda x: _fmt(x, ",.0f"))
    speed["train_s"] = speed.train_s.map(lambda x: _fmt(x, ".1f"))
    speed["mfu"] = speed.mfu.map(lambda x: _fmt(x, ".1%") or "n/a (not CUDA)")
    tsum = tl.groupby("phase", sort=False)["seconds"].sum().round(1).to_dict()
    params = int(fin["params_nonembedding"].iloc[0]) if len(fin) else 0
    return (
        f"# Triplet design run: preset `{p.name}` with overrides\n\n"
        f"Device: {device_name()}; torch {torch.__version__}.\n\n"
        f"Command: `{cmd}`\n\n"
        f"Preset fields: `{json.dumps(fields, default=str)}`\n\n"
        f"Data: `{json.dumps(dataclasses.asdict(p.data), default=str)}`; {n_rows:,} training rows "
        f"({rows_tokens:,} tokens): {p.tokens:,} training tokens per model is "
        f"{p.tokens / max(rows_tokens, 1):.2f} epochs.\n\n"
        f"Parameters: {params:,} non-embedding (input embedding excluded, LM head included). Evaluation: "
        f"{s.arith_items} held-out arithmetic problems (exact match, 95% Wilson interval; chance = the "
        f"commonest answer's share), {s.text_passages} held-out passages of ~{s.text_chars} characters "
        f"(bits per byte: exact for ar, the Monte-Carlo ELBO bound with {s.mc_samples} samples per window "
        f"for diffusion models). MFU against the nominal bf16 dense peak {s.peak_flops:.3g} FLOP/s "
        f"(an 8192^3 bf16 matmul reaches ~790e12 on an H200).\n\n"
        f"## Targets (final models)\n\nexact match >= 30% and >= 5x chance; >= 50 tokens per "
        f"non-embedding parameter.\n\n{_table(targets.round(3))}\n\n"
        f"## Every model\n\n{_table(show)}\n\n"
        f"## Training speed per run\n\n{_table(speed)}\n\n"
        f"## Timeline (seconds)\n\nTotals: {tsum}\n\n{_table(tl)}\n"
    )


if __name__ == "__main__":
    main()
