"""Benchmark: the diffusion Monte-Carlo likelihood at a target standard error against LLaDA's 128 samples.

For each diffusion model (``dlm`` / ``ar2dlm``) and likelihood task, the lm-eval evaluation of the chapters
(``layerwise.evals.evaluate`` with ``loglikelihood_kwargs``) runs once with a fixed ``--n-samples``
(LLaDA: 128) and once per ``--targets`` value (``target_se``: each request stops drawing Monte-Carlo
batches once its standard error is at most that many nats, ``--n-samples`` being the cap). Every
request's estimate is recorded; per configuration the table gives the mean and largest samples used per
request, the mean and largest absolute difference of the estimate to the fixed-cost value, the accuracy
and the item-by-item agreement of the multiple-choice decision with the fixed-cost run (rolling tasks:
the document log-likelihoods), and the seconds of the evaluation (speedup = fixed-cost seconds / these).

CPU:  python benchmarks/bench_mc_se.py --tiny                   (tiny triplet of the cache, trained if missing)
GPU:  python benchmarks/bench_mc_se.py --models CACHE/triplet/gpu/dlm CACHE/triplet/gpu/ar2dlm --device cuda
Writes ``--out``.csv and .md (default benchmarks/results/mc_se[_tiny]) and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from layerwise import sampling
from layerwise.models import LoadedModel
from layerwise.sampling.likelihood import MCEstimate

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


class RecordingBackend:
    """:mod:`layerwise.sampling` for :class:`~layerwise.evals.LayerwiseLM`, keeping every request's estimate."""

    def __init__(self) -> None:
        self.records: dict[tuple[Any, ...], MCEstimate] = {}

    def generate(self, lm: LoadedModel, prompts: list[str], **kw: Any) -> list[str]:
        return sampling.generate(lm, prompts, **kw)

    def loglikelihood(self, lm: LoadedModel, context_ids: list[list[int]], continuation_ids: list[list[int]],
                      **kw: Any) -> list[tuple[float, bool]]:
        out = sampling.loglikelihood(lm, context_ids, continuation_ids, **kw)
        for a, c, (v, _) in zip(context_ids, continuation_ids, out):
            assert isinstance(v, MCEstimate)
            self.records[("ll", tuple(a), tuple(c))] = v
        return out

    def rolling_loglikelihood(self, lm: LoadedModel, token_ids: list[int], **kw: Any) -> float:
        v = sampling.rolling_loglikelihood(lm, token_ids, **kw)
        assert isinstance(v, MCEstimate)
        self.records[("rolling", tuple(token_ids))] = v
        return v


def _decisions(samples: Sequence[dict[str, Any]]) -> dict[int, int]:
    """Per multiple-choice item (doc id): the option with the highest log-likelihood."""
    out = {}
    for s in samples:
        lls = [float(r[0]) for r in s["filtered_resps"]]
        out[int(s["doc_id"])] = max(range(len(lls)), key=lls.__getitem__)
    return out


def run_config(lm: LoadedModel, taskset: Any, kw: dict[str, Any], limit: int | None,
               seed: int) -> tuple[dict[str, Any], dict[tuple[Any, ...], MCEstimate], float]:
    """One evaluation through lm-eval: (results, every request's estimate, seconds)."""
    from layerwise.evals import LayerwiseLM, evaluate

    rec = RecordingBackend()
    wrapper = LayerwiseLM(lm, batch_size=8, loglikelihood_kwargs=kw, backend=rec)
    if lm.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = evaluate(wrapper, taskset, limit=limit, seed=seed)
    if lm.device.type == "cuda":
        torch.cuda.synchronize()
    return res, rec.records, time.perf_counter() - t0


def compare(name: str, task: str, label: str, target: float | None, res: dict[str, Any],
            rec: dict[tuple[Any, ...], MCEstimate], secs: float, ref: dict[str, Any],
            ref_rec: dict[tuple[Any, ...], MCEstimate], ref_secs: float) -> dict[str, Any]:
    """One table row: cost, distance to the fixed-cost estimates and decision agreement for one task."""
    kind = "rolling" if any(k[0] == "rolling" for k in ref_rec) else "ll"
    keys = [k for k in ref_rec if k[0] == kind and k in rec]
    used = [rec[k].n_samples for k in keys]
    diffs = [abs(float(rec[k]) - float(ref_rec[k])) for k in keys]
    ses = [rec[k].se for k in keys]
    row: dict[str, Any] = dict(model=name, task=task, config=label, target_se="" if target is None else f"{target:g}",
                               requests=len(keys), mean_samples=sum(used) / max(len(used), 1),
                               max_samples=max(used, default=0), mean_se=sum(ses) / max(len(ses), 1),
                               mean_abs_diff=sum(diffs) / max(len(diffs), 1), max_abs_diff=max(diffs, default=0.0))
    if kind == "ll":
        mine, theirs = _decisions(res["samples"][task]), _decisions(ref["samples"][task])
        accs = res["items"][task].get("acc,none", [])
        ref_accs = ref["items"][task].get("acc,none", [])
        row.update(items=len(theirs), acc=sum(accs) / max(len(accs), 1),
                   acc_ref=sum(ref_accs) / max(len(ref_accs), 1),
                   decisions_equal=sum(mine[d] == theirs[d] for d in theirs),
                   agreement=sum(mine[d] == theirs[d] for d in theirs) / max(len(theirs), 1))
    else:
        row.update(items=len(keys), acc="", acc_ref="", decisions_equal="", agreement="")
    row.update(seconds=secs, speedup=ref_secs / secs if secs > 0 else float("nan"))
    return row


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    from layerwise.config import resolve_device
    from layerwise.evals import TaskParams, load_tasks
    from layerwise.subjects import load_subjects

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="the tiny triplet on CPU (checks the script)")
    ap.add_argument("--models", nargs="*", default=[],
                    help="diffusion checkpoints (folders or hub ids); default: dlm and ar2dlm of --preset")
    ap.add_argument("--preset", default="", help="triplet preset when --models is empty (default tiny)")
    ap.add_argument("--tasks", default="", help="comma list (default lw_arc_easy,lw_gutenberg; tiny "
                                                 "lw_stories_choice,lw_stories)")
    ap.add_argument("--limit", type=int, default=0, help="items per task (default 200; tiny 12)")
    ap.add_argument("--n-samples", type=int, default=128, help="the fixed cost, and the cap of a target")
    ap.add_argument("--mc-batch", type=int, default=16,
                    help="Monte-Carlo copies per forward pass (LLaDA's get_log_likelihood: 16)")
    ap.add_argument("--targets", default="1.0,0.5,0.25,0.1", help="comma list of target standard errors (nats)")
    ap.add_argument("--min-samples", type=int, default=8)
    ap.add_argument("--antithetic", action="store_true",
                    help="also the antithetic estimator (antithetic=True): fixed cost and each target")
    ap.add_argument("--gutenberg-chars", type=int, default=1000, help="characters per Gutenberg passage")
    ap.add_argument("--data-dir", default="")
    ap.add_argument("--cache-dir", default="")
    ap.add_argument("--device", default="", help="default: cpu with --tiny, else auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="", help="results file stem (default benchmarks/results/mc_se[_tiny])")
    args = ap.parse_args(argv)

    device = args.device or ("cpu" if args.tiny else "auto")
    dev = resolve_device(device)
    if dev.type == "cpu":
        torch.set_num_threads(1)
    tasks = args.tasks.split(",") if args.tasks else (
        ["lw_stories_choice", "lw_stories"] if args.tiny else ["lw_arc_easy", "lw_gutenberg"])
    limit = args.limit or (12 if args.tiny else 200)
    targets = [float(t) for t in args.targets.split(",") if t]
    preset = args.preset or "tiny"
    names = [Path(m.rstrip("/")).name for m in args.models]
    entries = ([{"id": m, "name": n} for m, n in zip(args.models, names)] if len(set(names)) == len(names)
               else args.models)  # checkpoints named by their folder (dlm, ar2dlm) when that is unambiguous
    subjects = load_subjects(entries, preset=preset, data_dir=args.data_dir or None,
                             cache_dir=args.cache_dir or None, device=device, progress=False)
    subjects = {k: v for k, v in subjects.items() if v.family.is_diffusion}
    if not subjects:
        raise SystemExit("no diffusion model among --models: pass dlm / ar2dlm checkpoints")
    tasksets = {t: load_tasks([t], data_dir=args.data_dir or None, cache_dir=args.cache_dir or None, seed=args.seed,
                              params=TaskParams(gutenberg_chars=args.gutenberg_chars)) for t in tasks}
    dev_name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    base_kw = dict(n_samples=args.n_samples, batch_size=args.mc_batch, seed=args.seed)

    rows = []
    for name, lm in subjects.items():
        print(f"{name}: {lm.family.value}, {lm.num_layers} blocks on {dev_name}", flush=True)
        for task, taskset in tasksets.items():
            run_config(lm, taskset, base_kw, 2, args.seed)  # warm-up (kernels, task caches)
            ref, ref_rec, ref_secs = run_config(lm, taskset, base_kw, limit, args.seed)
            rows.append(compare(name, task, f"n={args.n_samples}", None, ref, ref_rec, ref_secs, ref, ref_rec,
                                ref_secs))
            print(_fmt(rows[-1]), flush=True)
            configs: list[tuple[str, float | None, dict[str, Any]]] = [
                (f"se<={t:g}", t, dict(target_se=t, min_samples=args.min_samples)) for t in targets]
            if args.antithetic:
                configs += [(f"anti n={args.n_samples}", None, dict(antithetic=True))]
                configs += [(f"anti {label}", t, dict(kw, antithetic=True)) for label, t, kw in configs[:len(targets)]]
            for label, target, extra in configs:
                res, rec, secs = run_config(lm, taskset, dict(base_kw, **extra), limit, args.seed)
                rows.append(compare(name, task, label, target, res, rec, secs, ref, ref_rec, ref_secs))
                print(_fmt(rows[-1]), flush=True)

    stem = Path(args.out) if args.out else RESULTS / ("mc_se_tiny" if args.tiny else "mc_se")
    write(rows, stem, dev_name, args, tasks, limit, argv)
    return rows


def _fmt(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}


def write(rows: list[dict[str, Any]], stem: Path, dev_name: str, args: argparse.Namespace, tasks: list[str],
          limit: int, argv: list[str] | None) -> None:
    """``stem``.csv and a markdown table ``stem``.md with the device, the settings and the command."""
    import sys

    stem.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    table = "\n".join(["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
                      + ["| " + " | ".join(fmt(r.get(c, "")) for c in keys) + " |" for r in rows])
    cmd = "python benchmarks/bench_mc_se.py " + " ".join(argv if argv is not None else sys.argv[1:])
    md = (f"# Monte-Carlo likelihood at a target standard error against {args.n_samples} samples\n\n"
          f"Device: {dev_name}. Tasks: {', '.join(tasks)} (first {limit} items each), seed {args.seed}. Each "
          f"configuration is one lm-eval evaluation (`layerwise.evals.evaluate`); `n={args.n_samples}` draws "
          f"{args.n_samples} Monte-Carlo copies per request (batches of {args.mc_batch}), `se<=x` draws the same "
          f"copies batch by batch until the request's standard error is at most x nats (at least "
          f"{args.min_samples} copies, at most {args.n_samples}). mean/max_samples: copies per request "
          "(rolling tasks: per document, summed over its windows, the target applying to each window); "
          "mean_se: the reported standard error (rolling: of the document's sum); "
          f"mean/max_abs_diff: |estimate - the n={args.n_samples} estimate| in nats; agreement: share of "
          f"multiple-choice items whose chosen option is the n={args.n_samples} run's (decisions_equal of "
          "items); speedup: seconds of the fixed-cost evaluation / these seconds. `anti ...`: the same with "
          "antithetic=True (pairs of masks on nearly complementary tokens; other draws than the reference, so "
          "their distances include the reference's own Monte-Carlo error).\n\n"
          f"Command: `{cmd.strip()}`\n\n{table}\n")
    stem.with_suffix(".md").write_text(md)
    print()
    print(md)


if __name__ == "__main__":
    main()
