"""How competent a trained triplet model is, and what its training cost: the competence report.

For each model folder (a finished run or one of its snapshots) one row with

- **held-out generation**: exact match on ``lw_arithmetic`` (held-out arithmetic problems, never in
  training) decoded by the model's own sampler (greedy for ``ar``, the masked-diffusion sampler for
  ``dlm`` / ``ar2dlm``), its 95% Wilson interval, chance (the best constant answer) and a one-sided
  binomial p-value against chance;
- **held-out bits per byte** on text of the training source (``lw_gutenberg`` for Gutenberg presets,
  ``lw_stories`` for the synthetic ones) by the model's own likelihood: exact for ``ar``, the
  Monte-Carlo ELBO for diffusion models (a lower bound on the log-likelihood, hence an upper bound on
  bits per byte);
- **tokens**: tokens seen (for ``ar2dlm`` runs including the ``ar`` steps before the branch point),
  the run's own tokens, and tokens per non-embedding parameter. Parameter convention (as
  :func:`~layerwise.training.n_params`): the input embedding is excluded, the LM head (untied) is
  included;
- **training speed** from the run's ``train_log.jsonl`` up to the model's step: median tokens/s, the
  training seconds, and MFU against a nominal bf16 dense peak (:data:`H200_BF16_PEAK`, 989e12 FLOP/s;
  an 8192^3 bf16 matmul measured 790e12 on the project's H200, so 80% of nominal is the practical
  ceiling) with ``6 N + 12 L d T`` FLOPs per token (:func:`~layerwise.training.flops_per_token`);
  MFU is reported only for runs trained on CUDA.

Rows are stored under ``<model folder>/competence/`` keyed by the settings and the library's source
hash, so a report that is run again (after a killed job) re-uses what it already measured.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import LayerwiseError
from ..models import META_FILE
from .presets import H200_BF16_PEAK

#: held-out text task per training source (bits per byte by the model's own likelihood)
TEXT_TASKS: dict[str, str] = {"gutenberg": "lw_gutenberg", "synthetic": "lw_stories"}
#: the held-out generation task
GENERATION_TASK = "lw_arithmetic"


@dataclass(frozen=True)
class CompetenceSettings:
    """What the report evaluates and how much of it.

    ``mc_samples``: Monte-Carlo samples per window of a diffusion model's ELBO (also its forward
    batch); ``batch_size``: sequences per generation / AR-likelihood forward; ``peak_flops``: the
    nominal peak MFU is measured against.
    """

    arith_items: int = 200
    text_passages: int = 32
    text_chars: int = 2000
    mc_samples: int = 16
    batch_size: int = 64
    seed: int = 0
    peak_flops: float = H200_BF16_PEAK

    def validate(self) -> None:
        for k in ("arith_items", "text_passages", "text_chars", "mc_samples", "batch_size"):
            if getattr(self, k) < 1:
                raise LayerwiseError(f"CompetenceSettings.{k}={getattr(self, k)} must be >= 1")


def _meta(path: Path) -> dict[str, Any]:
    f = path / META_FILE
    if not f.is_file():
        raise LayerwiseError(f"{path} is not a triplet model folder (no {META_FILE}): pass a finished run "
                             "(<cache>/triplet/<preset>/<run>) or one of its snapshots/step_<n>")
    return json.loads(f.read_text())


def run_of(path: str | os.PathLike) -> Path:
    """The run folder a model folder belongs to (itself, or the run above ``snapshots/step_<n>``)."""
    p = Path(path)
    return p.parent.parent if p.parent.name == "snapshots" else p


def model_folders(run: str | os.PathLike, snapshots: bool = True) -> list[Path]:
    """A finished run's models in training order: its snapshots (the last one, identical to the
    final model, left out) then the run folder itself."""
    r = Path(run)
    _meta(r)
    found = (r / "snapshots").glob("step_*") if snapshots else []
    snaps = sorted((d for d in found if d.name[5:].isdigit() and (d / META_FILE).is_file()),  # no step_<n>.tmp
                   key=lambda d: int(d.name[5:]))
    final = _meta(r).get("global_step")
    return [s for s in snaps if int(s.name[5:]) != final] + [r]


def training_speed(path: str | os.PathLike, peak_flops: float | None = H200_BF16_PEAK) -> dict[str, Any]:
    """Throughput of the run that produced ``path``, from its train log up to the model's step.

    ``tokens_per_s``: median over logging intervals after the first (which holds compilation);
    ``train_s``: the sum of all intervals (the run's own training time, without evaluation and saving
    outside the intervals); ``mfu``: median ``tokens/s * FLOPs per token / peak_flops`` (None unless
    the run trained on CUDA).
    """
    from .runs import read_log

    m = _meta(Path(path))
    g = m.get("global_step")
    log = [r for r in read_log(run_of(path)) if "tokens_per_s" in r and (g is None or r["global_step"] <= g)]
    out: dict[str, Any] = {"tokens_per_s": None, "train_s": None, "mfu": None}
    if not log:
        return out
    per_step = log[0]["tokens"] / log[0]["global_step"]
    prev = log[0]["step"] - (log[1]["step"] - log[0]["step"] if len(log) > 1 else log[0]["step"])
    secs, tps = [], []
    for r in log:
        secs.append((r["step"] - max(prev, 0)) * per_step / max(r["tokens_per_s"], 1e-9))
        tps.append(r["tokens_per_s"])
        prev = r["step"]
    steady = tps[1:] or tps
    out["tokens_per_s"] = float(np.median(steady))
    out["train_s"] = float(sum(secs))
    on_cuda = m.get("device") == "cuda" or (m.get("device") is None and log[-1].get("mfu") is not None)
    if on_cuda and peak_flops:
        out["mfu"] = float(np.median(steady)) * float(m["flops_per_token"]) / peak_flops
    return out


_TASKSETS: dict[tuple[Any, ...], Any] = {}


def _taskset(name: str, settings: CompetenceSettings, data_dir: str | os.PathLike | None,
             cache_dir: str | os.PathLike | None) -> Any:
    """lm-eval tasks built once per process and settings (building them costs seconds per call)."""
    from ..evals import TaskParams, load_tasks

    params = TaskParams(gutenberg_passages=max(64, settings.text_passages), gutenberg_chars=settings.text_chars)
    key = (name, settings.seed, str(data_dir), str(cache_dir), params)
    if key not in _TASKSETS:
        _TASKSETS[key] = load_tasks([name], data_dir=data_dir, cache_dir=cache_dir, seed=settings.seed, params=params)
    return _TASKSETS[key]


@functools.lru_cache(maxsize=1)
def _library() -> str:
    """The library's source hash, taken once per process (the code this process imported)."""
    from ..config import library_fingerprint

    return library_fingerprint()


def _cache_key(meta: dict[str, Any], s: CompetenceSettings) -> str:
    from ..data import _sha

    return _sha(asdict(s), meta.get("config_hash"), meta.get("run"), meta.get("global_step"), _library())[:16]


def score_model(path: str | os.PathLike, settings: CompetenceSettings = CompetenceSettings(), *,
                device: str = "auto", data_dir: str | os.PathLike | None = None,
                cache_dir: str | os.PathLike | None = None, reuse: bool = True) -> dict[str, Any]:
    """One row of the competence report for one model folder (see the module docstring).

    ``reuse``: return the stored row when this folder was already scored with these settings by
    this library version.
    """
    from .. import evals, stats
    from ..models import load

    settings.validate()
    path = Path(path)
    m = _meta(path)
    store = path / "competence" / f"{_cache_key(m, settings)}.json"
    if reuse and store.is_file():
        return dict(json.loads(store.read_text()), reused=True)
    source = m.get("data", {}).get("spec", {}).get("source", "synthetic")
    text_task = TEXT_TASKS[source]
    t0 = time.perf_counter()
    lm = load(str(path), device=device)
    diffusion = lm.family.is_diffusion
    common: dict[str, Any] = dict(batch_size=settings.batch_size, seed=settings.seed)
    r = evals.evaluate(lm, _taskset(GENERATION_TASK, settings, data_dir, cache_dir), limit=settings.arith_items,
                       **common)
    key = next(k for k in r["metrics"][GENERATION_TASK] if k.startswith("exact_match"))
    scores = [float(x) for x in r["items"][GENERATION_TASK][key]]
    n, k = len(scores), int(round(sum(scores)))
    lo, hi = stats.wilson_interval(k, n)
    chance = r["chance"][GENERATION_TASK][key]
    t_gen = time.perf_counter() - t0
    rt = evals.evaluate(lm, _taskset(text_task, settings, data_dir, cache_dir), limit=settings.text_passages,
                        loglikelihood_kwargs={"n_samples": settings.mc_samples, "batch_size": settings.mc_samples,
                                              "seed": settings.seed}, **common)
    bpb = float(rt["metrics"][text_task]["bits_per_byte,none"])
    t_text = time.perf_counter() - t0 - t_gen
    del lm
    nonemb = int(m["n_params_nonembedding"])
    row = {
        "model": f"{m.get('run', m['objective'])}@{m['global_step']}", "run": m.get("run", m["objective"]),
        "objective": m["objective"], "seed": m.get("seed"), "branch_frac": m.get("branch_frac"),
        "path": str(path), "global_step": m["global_step"], "final": bool(m.get("complete")),
        "tokens_seen": m["tokens_seen"], "own_tokens": m["own_tokens"], "params": m["n_params"],
        "params_nonembedding": nonemb, "tokens_per_param": m["tokens_seen"] / nonemb,
        "sampler": "masked diffusion" if diffusion else "greedy", "exact_match": k / n, "em_ci_low": lo,
        "em_ci_high": hi, "chance": chance, "x_chance": (k / n) / chance if chance else None,
        "p_above_chance": stats.above_chance_pvalue(scores, chance), "arith_items": n,
        "text_task": text_task, "bits_per_byte": bpb,
        "bpb_kind": f"ELBO bound ({settings.mc_samples} MC samples)" if diffusion else "exact",
        "text_passages": int(rt["n"][text_task]), "val_loss": m.get("val_loss"),
        **training_speed(path, settings.peak_flops), "peak_flops": settings.peak_flops,
        "eval_generation_s": t_gen, "eval_text_s": t_text,
    }
    store.parent.mkdir(exist_ok=True)
    tmp = store.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(row, indent=1))
    tmp.replace(store)
    return dict(row, reused=False)


def competence_report(paths: Sequence[str | os.PathLike], settings: CompetenceSettings = CompetenceSettings(), *,
                      device: str = "auto", data_dir: str | os.PathLike | None = None,
                      cache_dir: str | os.PathLike | None = None, reuse: bool = True) -> Any:
    """The competence report of the given model folders as a ``pandas.DataFrame``, one row each in
    the order given (see :func:`score_model`; :func:`model_folders` lists a run's snapshots)."""
    import pandas as pd

    if isinstance(paths, (str, os.PathLike)):
        raise LayerwiseError(f"paths must be a list of model folders, got {paths!r}: write [{str(paths)!r}]")
    rows = [score_model(p, settings, device=device, data_dir=data_dir, cache_dir=cache_dir, reuse=reuse)
            for p in paths]
    return pd.DataFrame(rows)


def meets_targets(report: Any, min_exact_match: float = 0.30, min_x_chance: float = 5.0,
                  min_tokens_per_param: float = 50.0) -> Any:
    """Per final model of ``report``: whether it reaches the competence targets (exact match, its
    multiple of chance, tokens per non-embedding parameter), as a ``pandas.DataFrame``."""
    fin = report[report["final"]]
    return fin.assign(
        em_ok=fin["exact_match"] >= min_exact_match,
        x_chance_ok=fin["x_chance"].fillna(0) >= min_x_chance,
        tokens_ok=fin["tokens_per_param"] >= min_tokens_per_param,
    )[["run", "seed", "exact_match", "em_ci_low", "x_chance", "tokens_per_param", "bits_per_byte",
       "em_ok", "x_chance_ok", "tokens_ok"]]


def _earlier_final_rows(results: Mapping[str, Any], config_hash: str, chapter: str) -> list[Mapping[str, Any]]:
    """The final-model competence rows of ``chapter``'s earlier result file, when it is of the preset
    configuration ``config_hash`` (its own record, else chapter 00's in the same results); else []."""
    data = results.get(chapter, {}).get("data", {})
    recorded = data.get("config_hash") or results.get("00_pretraining", {}).get("data", {}).get("config_hash")
    if not data or recorded != config_hash:
        return []
    return [r for r in data.get("competence", []) if r.get("final")]


def earlier_seed_rows(results: Mapping[str, Any], *, config_hash: str, runs: Iterable[str],
                      skip_seeds: Iterable[int], chapter: str = "10_robustness") -> Any:
    """The final-model competence rows of training seeds that an earlier run of ``chapter`` scored and
    this run does not (their triplets trained in another GPU session, whose weights are gone while
    their result files stay): a ``pandas.DataFrame``, empty when there are none.

    ``results`` is the profile's result files (:func:`layerwise.results.load_results`). Rows count
    only when they come from the same preset configuration: the earlier file's ``config_hash``, or,
    for a file that did not record one, chapter 00's ``config_hash`` in the same results, must equal
    ``config_hash`` (:meth:`~layerwise.training.presets.Preset.config_hash` of the seed-0 preset)."""
    import pandas as pd

    wanted, skip = set(runs), {int(k) for k in skip_seeds}
    return pd.DataFrame([r for r in _earlier_final_rows(results, config_hash, chapter)
                         if r.get("run") in wanted and int(r.get("seed") or 0) not in skip])


def rows_of_other_runs(results: Mapping[str, Any], *, config_hash: str, runs: Iterable[str],
                       chapter: str = "10_robustness") -> Any:
    """The final-model competence rows an earlier run of ``chapter`` scored for runs this run does not
    score (e.g. the branch runs, when it runs without them): kept in the new result file so that a run
    without them does not drop them. Same preset-configuration rule as :func:`earlier_seed_rows`."""
    import pandas as pd

    shown = set(runs)
    return pd.DataFrame([r for r in _earlier_final_rows(results, config_hash, chapter) if r.get("run") not in shown])
