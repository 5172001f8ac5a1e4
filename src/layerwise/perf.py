"""The benchmark scripts' committed results as tidy frames, and the project's performance targets.

The scripts in ``benchmarks/`` write ``<results>/<stem>.csv`` (the numbers) and ``<stem>.md`` (a table
plus, for most, the command that produced it); GPU runs are the published stems, CPU smoke runs end in
``_tiny``. In a checkout the results folder is ``benchmarks/results``; every function here takes it as
an argument (the performance chapter's ``benchmarks_dir`` parameter). This module reads them for the
book's performance page (chapter ``09_performance``): nothing here measures anything, and every number
in :func:`targets_table` is a CSV cell or arithmetic on CSV cells. The targets themselves are typed in
:data:`TARGETS`, each with a ``requirement`` sentence stating what it asks for. (Longer than most
modules: one reader per benchmark, the tables derived from them and the target definitions are read
together.)

Benchmark names (keys of :func:`load_benchmarks`) and what one row is:

- ``training``: one (objective, compile) training configuration of the gpu preset (``bench_training.py``);
  ``training_wide``: the same step at d_model 1024;
- ``probes``: one timed pass (plain forward / probe pass) of an 8B-shaped model; ``probes_memory``:
  one token count of the channel-statistics memory check (``bench_probes.py``, one CSV split in two);
- ``sampling``: one batch size of the 8B-shaped diffusion sampler, reference vs fast vs the approximate
  prefix cache (``bench_sampling.py``);
- ``skipping``: one (shape, k skipped blocks) sampler timing; ``skipping_evals``: evaluations per
  minute per family (``bench_skipping.py``);
- ``gptq``: one GPTQ run of an 8B-shaped model (``bench_gptq.py``);
- ``memory_8b``: one chapter operation on an 8B-shaped model (``bench_8b_memory.py``);
- ``llada_reference``: one batch of LLaDA's genuine ``generate.py`` against the exact sampler;
  ``llada_reference_options``: the same with the sampler's options and a batch-1 token check
  (``bench_llada_reference.py``);
- ``triplet_design``: one scored model (snapshot or final) of the triplet's design run
  (``bench_triplet_design.py``);
- ``mc_se``: one (model, task, configuration) of the Monte-Carlo standard-error benchmark (``bench_mc_se.py``);
- ``paper_profile``: one (chapter, model, unit of work) of the paper profile's cost (``bench_paper_profile.py``);
- ``multi_gpu``: one measure (part, name, value) of data-parallel evaluation and a local sweep on several
  GPUs (``bench_multi_gpu.py``);
- ``sampler_step``: one batch size of the diffusion sampler's step, unmasking choice row by row against
  batched (``bench_sampler_step.py``).
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import LayerwiseError

__all__ = [
    "RESULT_FILES", "TARGETS", "TARGETS_BY_KEY", "Target", "Measurement", "load_benchmarks", "benchmark_info",
    "targets_table", "sampler_long", "sampler_flops", "training_mfu", "training_by_width", "generate_py_runs",
    "results_markdown", "multi_gpu_summary",
]

#: benchmark name -> (CSV stem of the GPU run, CSV stem of the CPU smoke run, markdown stem, script)
RESULT_FILES: dict[str, tuple[str, str, str, str]] = {
    "training": ("training", "training_tiny", "training", "bench_training.py"),
    # the same step at a wider shape (d_model 1024): how MFU depends on the matmul width
    "training_wide": ("training_wide", "training_wide_tiny", "training_wide", "bench_training.py"),
    "probes": ("probes", "probes_tiny", "probes", "bench_probes.py"),
    "sampling": ("sampling", "sampling_tiny", "sampling", "bench_sampling.py"),
    "skipping": ("bench_skipping", "bench_skipping_tiny", "bench_skipping", "bench_skipping.py"),
    "skipping_evals": ("bench_skipping_evals", "bench_skipping_tiny_evals", "bench_skipping",
                       "bench_skipping.py"),
    "gptq": ("bench_gptq", "bench_gptq_tiny", "bench_gptq", "bench_gptq.py"),
    "memory_8b": ("bench_8b_memory", "bench_8b_memory_tiny", "bench_8b_memory", "bench_8b_memory.py"),
    # LLaDA's genuine generate.py against the exact sampler, on the genuine modeling code
    "llada_reference": ("llada_reference", "llada_reference_tiny", "llada_reference", "bench_llada_reference.py"),
    # the same comparison with the sampler's options (sliced head, CUDA graph) and a batch-1 token check
    "llada_reference_options": ("llada_reference_options", "llada_reference_options_tiny", "llada_reference_options",
                                "bench_llada_reference.py"),
    # the controlled triplet's design run: competence per snapshot, training speed and MFU per run
    "triplet_design": ("triplet_design", "triplet_design_tiny", "triplet_design", "bench_triplet_design.py"),
    # Monte-Carlo likelihood at a target standard error against a fixed 128 samples
    "mc_se": ("mc_se", "mc_se_tiny", "mc_se", "bench_mc_se.py"),
    # seconds per unit of each chapter's work on 8B-shaped models, and the paper profile's GPU-hours
    "paper_profile": ("paper_profile", "paper_profile_tiny", "paper_profile", "bench_paper_profile.py"),
    # one process against one per GPU on chapter 03's generation task, and a submitit sweep one GPU per job
    "multi_gpu": ("multi_gpu", "multi_gpu_tiny", "multi_gpu", "bench_multi_gpu.py"),
    # the diffusion sampler's unmasking choice, row by row (generate.py) against one topk per equal k
    "sampler_step": ("sampler_step", "sampler_step_tiny", "sampler_step", "bench_sampler_step.py"),
}

#: columns of :func:`targets_table`
TARGET_COLUMNS = ["target_id", "key", "short", "benchmark", "requirement", "quantity", "measured", "target",
                  "comparison", "unit", "met", "status", "measured_over_target", "device", "source", "note"]


def _resolve(results_dir: str | os.PathLike) -> Path:
    p = Path(results_dir)
    if not str(results_dir) or not p.is_dir():
        raise LayerwiseError(f"benchmark results directory {str(results_dir)!r} does not exist: pass the folder "
                             "holding the benchmark CSVs (benchmarks/results in a checkout of the repository)")
    return p


def _stem(name: str, tiny: bool) -> str:
    return RESULT_FILES[name][1 if tiny else 0]


def _md_path(results: Path, name: str, tiny: bool) -> Path:
    md = RESULT_FILES[name][2]
    return results / f"{md}_tiny.md" if tiny else results / f"{md}.md"


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def load_benchmarks(results_dir: str | os.PathLike, *, tiny: bool = False) -> dict[str, pd.DataFrame]:
    """Every benchmark CSV present in ``results_dir`` as a DataFrame, keyed by benchmark name.

    Missing files are simply absent from the result. ``tiny=True`` reads the CPU smoke runs
    (``*_tiny.csv``) instead of the GPU ones. Derived columns added (all from the row's own cells):
    ``training.tflop_per_s`` (``gflops_per_token * tokens_per_s``), ``training.peak_tflop_per_s``
    (the peak its ``mfu`` is relative to, ``tflop_per_s / mfu``), ``gptq.total_min``;
    ``triplet_design.d_model`` / ``n_layers`` come from the preset fields its ``.md`` records. ``probes`` is
    split into ``probes`` (throughput rows) and ``probes_memory`` (memory rows), each without the
    other's empty columns.
    """
    results = _resolve(results_dir)
    out: dict[str, pd.DataFrame] = {}
    for name in RESULT_FILES:
        path = results / f"{_stem(name, tiny)}.csv"
        if not path.is_file():
            continue
        df = pd.read_csv(path)
        if name == "probes" and "part" in df:
            thr = df[df["part"] == "throughput"].dropna(axis=1, how="all").reset_index(drop=True)
            mem = df[df["part"] == "memory"].dropna(axis=1, how="all").reset_index(drop=True)
            out["probes"] = thr
            out["probes_memory"] = mem
            continue
        if name in ("training", "training_wide"):
            df["tflop_per_s"] = df["gflops_per_token"] * df["tokens_per_s"] / 1e3
            df["peak_tflop_per_s"] = df["tflop_per_s"] / df["mfu"]
        if name == "gptq":
            df["total_min"] = df["total_s_extrapolated"] / 60.0
        if name == "triplet_design":
            md = _md_path(results, name, tiny)
            fields = _preset_fields(md.read_text() if md.is_file() else "")
            for key in ("d_model", "n_layers"):
                df[key] = fields.get(key, np.nan)
        out[name] = df
    return out


def _preset_fields(md_text: str) -> dict[str, Any]:
    """The ``Preset fields: `{...}``` JSON a triplet design report records ({} when absent)."""
    m = re.search(r"Preset fields: `(\{.*?\})`", md_text)
    return json.loads(m.group(1)) if m else {}


_DEVICE_PATTERNS = (
    re.compile(r"Device: ([^;\n]+?)[.;]\s"),           # probes.md, sampling.md, training.md
    re.compile(r" on ([^;,\n]+?);"),                     # bench_gptq.md
    re.compile(r"^# .*\(([^,()]+), torch\.", re.M),      # bench_skipping.md title
)


def _md_device(text: str) -> str:
    for pat in _DEVICE_PATTERNS:
        m = pat.search(text)
        if m:
            return m.group(1).strip()
    return ""


def _md_command(text: str) -> str:
    m = re.search(r"Command: `([^`]+)`", text)
    return m.group(1).strip() if m else ""


def _docstring_command(script: Path, tiny: bool) -> str:
    """The first ``python benchmarks/<script> ...`` line of the script's docstring for GPU (or CPU)."""
    if not script.is_file():
        return ""
    doc = ast.get_docstring(ast.parse(script.read_text())) or ""
    for line in doc.splitlines():
        m = re.search(rf"(python benchmarks/{re.escape(script.name)}[^#\n]*)", line)
        if m and ("--tiny" in m.group(1)) == tiny:
            return m.group(1).strip()
    return ""


def benchmark_info(results_dir: str | os.PathLike, *, tiny: bool = False) -> pd.DataFrame:
    """One row per benchmark: its CSV, whether it ran, rows, device and the command that produced it.

    The command is the one the ``.md`` records (``command_source = "results .md"``); where the
    ``.md`` records none, the GPU (or ``--tiny``) command from the script's docstring
    (``"script docstring"``; the scripts are looked up in the results folder's parent, as in the
    repository's ``benchmarks/results`` layout), which may differ in its options from the committed run.
    """
    results = _resolve(results_dir)
    frames = load_benchmarks(results, tiny=tiny)
    rows = []
    for name, (gpu, cpu, _md, script) in RESULT_FILES.items():
        csv = f"{cpu if tiny else gpu}.csv"
        md_path = _md_path(results, name, tiny)
        text = md_path.read_text() if md_path.is_file() else ""
        df = frames.get(name)
        device = ""
        if df is not None and "device" in df and len(df):
            device = str(df["device"].iloc[0])
        device = device or _md_device(text)
        cmd, source = _md_command(text), "results .md"
        if not cmd:
            cmd, source = _docstring_command(results.parent / script, tiny), "script docstring"
        n = len(df) if df is not None else 0
        if name == "probes" and "probes_memory" in frames:
            n += len(frames["probes_memory"])
        rows.append({"benchmark": name, "csv": csv, "ran": df is not None, "rows": n, "device": device or "unknown",
                     "script": f"benchmarks/{script}", "command": cmd or "(not recorded)", "command_source": source,
                     "md": md_path.name if md_path.is_file() else ""})
    return pd.DataFrame(rows)


def results_markdown(name: str, results_dir: str | os.PathLike, *, tiny: bool = False) -> str:
    """The ``.md`` a benchmark script wrote, ready to display inside a notebook ("" when missing).

    Its ``#`` headings become bold lines: headings inside a cell's output would otherwise enter the
    book's table of contents (and break ``jupyter-book build -W`` on header-level jumps).
    """
    path = _md_path(_resolve(results_dir), name, tiny)
    if not path.is_file():
        return ""
    return re.sub(r"^#+\s*(.+)$", r"**\1**", path.read_text(), flags=re.M)


# ---------------------------------------------------------------------------------------------
# Derived tables
# ---------------------------------------------------------------------------------------------


def _measured_peak(frames: dict[str, pd.DataFrame]) -> float:
    """The bf16 matmul peak (TFLOP/s) that ``bench_probes.py`` measured, or NaN."""
    p = frames.get("probes")
    if p is None or "matmul_peak_tflop_per_s" not in p or p["matmul_peak_tflop_per_s"].isna().all():
        return float("nan")
    return float(p["matmul_peak_tflop_per_s"].dropna().iloc[0])


def _datasheet_peak(frames: dict[str, pd.DataFrame]) -> float:
    """The peak (TFLOP/s) training.csv's MFU is relative to (the datasheet's), or NaN."""
    t = frames.get("training")
    if t is None or t["peak_tflop_per_s"].isna().all():
        return float("nan")
    return float(t["peak_tflop_per_s"].dropna().median())


def training_mfu(frames: dict[str, pd.DataFrame], name: str = "training") -> pd.DataFrame:
    """Training throughput per (objective, compile) with MFU against both peaks (``name``: ``training``
    or ``training_wide``).

    ``mfu`` (as committed) is against the datasheet bf16 peak (``peak_tflop_per_s``); ``mfu_vs_measured``
    is against the matmul peak ``bench_probes.py`` measured on the same machine type (``probes.csv``).
    Rows of a plain ``torch.compile`` (``sdpa_mask_skip`` false with ``compile`` true: the before/after
    of ``bench_training.py --compile all``) are left out: training never runs that way.
    """
    t = frames.get(name)
    if t is None:
        return pd.DataFrame()
    if "sdpa_mask_skip" in t:
        t = t[~(t["compile"].astype(bool) & ~t["sdpa_mask_skip"].astype(bool))]
    peak = _measured_peak(frames)
    out = t.reindex(columns=["objective", "compile", "d_model", "n_layers", "tokens_per_s", "tflop_per_s", "mfu",
                             "peak_tflop_per_s", "step_s", "peak_mem_gib"]).copy()
    out["measured_peak_tflop_per_s"] = peak
    out["mfu_vs_measured"] = out["tflop_per_s"] / peak
    return out


def training_by_width(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Training MFU against the datasheet peak per measured width: one row per (source, run).

    ``training`` and ``training_wide`` (``bench_training.py``'s step on random tokens) give their
    configurations training runs with (:func:`training_mfu`), ``triplet_design`` the final model of each
    run of the gpu preset's own training (its ``mfu`` column: median over the run's steps). Columns:
    ``source``, ``device``, ``d_model``, ``n_layers``, ``run``, ``objective``, ``compile``,
    ``tokens_per_s``, ``mfu``.
    """
    cols = ["source", "device", "d_model", "n_layers", "run", "objective", "compile", "tokens_per_s", "mfu"]
    parts = []
    for name in ("training", "training_wide"):
        t = training_mfu(frames, name)
        if t.empty:
            continue
        dev = frames[name]["device"].iloc[0] if "device" in frames[name] else ""
        parts.append(t.assign(source=name, device=dev, run=t["objective"])[cols])
    d = frames.get("triplet_design")
    if d is not None and len(d):
        fin = d[d["final"].astype(str).str.lower() == "true"]
        parts.append(fin.assign(source="triplet_design", compile=np.nan)[cols])
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)


#: sampler variants of ``bench_llada_reference.py``: CSV column prefix -> label
_LLADA_VARIANTS = {"lw": "default", "sliced": "sliced head", "graph": "CUDA graph",
                   "graph_sliced": "CUDA graph + sliced head", "float64": "float64 confidence"}


def generate_py_runs(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The exact LLaDA sampler against LLaDA's ``generate.py``: one row per (source, batch, sampler option).

    Sources are ``llada_reference`` and ``llada_reference_options``. Columns: ``source``, ``batch``,
    ``variant`` (``default``, ``sliced head``, ``CUDA graph``, ...), ``s_per_sample``,
    ``ref_s_per_sample`` (``generate.py`` at the same batch), ``ratio`` (their quotient),
    ``tokens_equal`` / ``tokens_total`` (generated tokens equal to ``generate.py``'s at the same batch),
    ``identical``, ``time_scale`` (seconds scaled from the timed blocks to the full run; 1 when all ran),
    ``b1_tokens_equal`` / ``b1_tokens_total`` (equal to ``generate.py``'s output for the row alone at
    batch 1, where measured) and ``ref_b1_tokens_equal`` (``generate.py``'s own output at this batch
    against its batch-1 output).
    """
    rows = []
    for name in ("llada_reference", "llada_reference_options"):
        r = frames.get(name)
        if r is None:
            continue
        for _, row in r.iterrows():
            for prefix, label in _LLADA_VARIANTS.items():
                col = f"{prefix}_s_per_sample"
                if col not in row or pd.isna(row[col]):
                    continue
                eq = row["tokens_equal"] if prefix == "lw" else row.get(f"{prefix}_tokens_equal", np.nan)
                rows.append({"source": name, "batch": int(row["batch"]), "variant": label,
                             "s_per_sample": float(row[col]), "ref_s_per_sample": float(row["ref_s_per_sample"]),
                             "ratio": float(row[col]) / float(row["ref_s_per_sample"]),
                             "tokens_equal": eq, "tokens_total": row["tokens_total"],
                             "identical": bool(eq == row["tokens_total"]),
                             "time_scale": float(row.get("time_scale", 1.0)),
                             "b1_tokens_equal": row.get(f"{prefix}_vs_ref_b1_tokens_equal", np.nan),
                             "b1_tokens_total": row.get("batch1_tokens_total", np.nan),
                             "ref_b1_tokens_equal": row.get("ref_vs_ref_b1_tokens_equal", np.nan)})
    return pd.DataFrame(rows, columns=["source", "batch", "variant", "s_per_sample", "ref_s_per_sample", "ratio",
                                       "tokens_equal", "tokens_total", "identical", "time_scale", "b1_tokens_equal",
                                       "b1_tokens_total", "ref_b1_tokens_equal"])


#: the key numbers of ``multi_gpu``: (part, measure) -> column of :func:`multi_gpu_summary`
MULTI_GPU_COLUMNS = {("data_parallel", "eval_s_1"): "eval_s_1", ("data_parallel", "eval_s_n"): "eval_s_n",
                     ("data_parallel", "speedup"): "speedup", ("data_parallel", "efficiency"): "efficiency",
                     ("data_parallel", "equal_items"): "equal_items", ("data_parallel", "total_items"): "total_items",
                     ("sweep", "wall_s"): "sweep_wall_s", ("sweep", "sum_job_s"): "sweep_sum_job_s",
                     ("sweep", "speedup"): "sweep_speedup", ("sweep", "results_found"): "sweep_results_found",
                     ("sweep", "jobs"): "sweep_jobs"}


def multi_gpu_summary(frames: dict[str, pd.DataFrame], name: str = "multi_gpu") -> pd.DataFrame:
    """The key numbers of ``bench_multi_gpu.py`` in one row: device, N, commit, the evaluation's wall-clock
    with one and N processes, speed-up, efficiency (speed-up / N), items equal to the one-process run's
    out of the total, and the sweep's wall-clock against the sum of its jobs', with the jobs whose result
    file was found. Empty when the benchmark did not run; a measure it did not record is NaN."""
    cols = ["device", "n_processes", "commit", *MULTI_GPU_COLUMNS.values()]
    df = frames.get(name)
    if df is None or not len(df):
        return pd.DataFrame(columns=cols)
    values = {(str(r.part), str(r.measure)): float(r.value) for r in df.itertuples()}
    row: dict[str, Any] = {"device": str(df["device"].iloc[0]), "n_processes": int(df["n_processes"].iloc[0]),
                           "commit": str(df["commit"].iloc[0])}
    row.update({col: values.get(key, np.nan) for key, col in MULTI_GPU_COLUMNS.items()})
    return pd.DataFrame([row], columns=cols)


def sampler_long(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """``sampling`` in long form: one row per (batch, sampler) with ``s_per_sample``,
    ``samples_per_s`` and ``peak_gib``; sampler is ``reference``, ``fast`` (exact) or ``prefix cache``
    (approximate, with its ``token_agreement`` with the exact sampler)."""
    s = frames.get("sampling")
    if s is None:
        return pd.DataFrame(columns=["batch", "sampler", "s_per_sample", "samples_per_s", "peak_gib",
                                     "token_agreement"])
    rows = []
    for prefix, label in (("ref", "reference"), ("fast", "fast"), ("cache", "prefix cache")):
        col = f"{prefix}_s_per_sample"
        if col not in s:
            continue
        part = s[s[col].notna()]
        rows.append(pd.DataFrame({
            "batch": part["batch"], "sampler": label, "s_per_sample": part[col],
            "samples_per_s": part[f"{prefix}_samples_per_s"],
            "peak_gib": part.get(f"{prefix}_peak_gib", pd.Series(np.nan, index=part.index)),
            "token_agreement": part["cache_token_agreement"] if prefix == "cache" and "cache_token_agreement" in part
            else (1.0 if prefix == "fast" else np.nan)}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


_SHAPE_RE = re.compile(r"(\d+) layers, d (\d+), (\d+) heads, MLP (\d+), vocab (\d+)")


def _shape_flops(md_text: str, seq_len: int) -> tuple[float, float]:
    """(FLOPs of all blocks, FLOPs of the LM head) for one sequence of ``seq_len`` tokens, of the model
    described in a benchmark's ``.md`` ("32 layers, d 4096, 32 heads, MLP 12288, vocab 126464").

    Counted by :func:`layerwise.skipping.block_flops` on the same transformers Llama the scripts build,
    instantiated on the meta device (no memory, no weights), so the count is the one the benchmarks use.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from .models import wrap
    from .skipping import block_flops

    m = _SHAPE_RE.search(md_text)
    if not m:
        raise LayerwiseError("the sampling benchmark's .md does not describe its model shape "
                             "('N layers, d D, H heads, MLP M, vocab V'): re-run benchmarks/bench_sampling.py")
    layers, d, heads, mlp, vocab = (int(g) for g in m.groups())
    cfg = LlamaConfig(hidden_size=d, intermediate_size=mlp, num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=heads, vocab_size=vocab, tie_word_embeddings=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    blocks, head = block_flops(wrap(model, tokenizer=None, family="dlm", mask_token_id=vocab - 1), seq_len)
    return float(sum(blocks)), float(head)


def sampler_flops(frames: dict[str, pd.DataFrame], results_dir: str | os.PathLike, *,
                  tiny: bool = False, speedup_target: float | None = None) -> pd.DataFrame:
    """Where the exact diffusion sampler's time goes, per batch of ``sampling.csv``.

    An exact sampler must run every block over the whole canvas (prompt + generation) at every step:
    bidirectional attention makes every position depend on every other, and changing one token changes
    them all. Per sample, ``steps x blocks(T)`` FLOPs, plus the LM head: over all ``T`` positions in the
    reference (LLaDA's generate.py), over the current ``block_length`` positions in the fast sampler.
    Columns: ``ref_tflop_per_s`` / ``fast_tflop_per_s`` and their MFU against the measured matmul peak
    (``probes.csv``) and the datasheet peak (``training.csv``); ``floor_s_per_sample``: the fast sampler's
    FLOPs at 100% of the measured peak; ``target_s_per_sample``: the reference's s/sample divided by
    the speed-up target; ``mfu_needed``: the share of the measured peak the fast sampler would need to
    meet it; ``forward_step_s``: one plain forward of the canvas with logits everywhere
    (``bench_8b_memory.csv``) and ``forward_share``: its share of the reference's time per step.
    """
    s = frames.get("sampling")
    if s is None or not len(s):
        return pd.DataFrame()
    results = _resolve(results_dir)
    md = _md_path(results, "sampling", tiny)
    target = TARGETS_BY_KEY["sampler"].target if speedup_target is None else speedup_target
    seq_len = int(s["prompt"].iloc[0] + s["gen_length"].iloc[0])
    steps, block_len = int(s["steps"].iloc[0]), int(s["block_length"].iloc[0])
    blocks, head = _shape_flops(md.read_text() if md.is_file() else "", seq_len)
    ref_flops = steps * (blocks + head)                      # per sample
    fast_flops = steps * (blocks + head * block_len / seq_len)
    peak, sheet = _measured_peak(frames) * 1e12, _datasheet_peak(frames) * 1e12
    out = pd.DataFrame({"batch": s["batch"], "seq_len": seq_len,
                        "ref_s_per_sample": s.get("ref_s_per_sample", np.nan),
                        "fast_s_per_sample": s["fast_s_per_sample"]})
    out["ref_tflop_per_s"] = ref_flops / out["ref_s_per_sample"] / 1e12
    out["fast_tflop_per_s"] = fast_flops / out["fast_s_per_sample"] / 1e12
    out["ref_mfu_vs_measured"] = out["ref_tflop_per_s"] * 1e12 / peak
    out["ref_mfu_vs_datasheet"] = out["ref_tflop_per_s"] * 1e12 / sheet
    out["fast_mfu_vs_measured"] = out["fast_tflop_per_s"] * 1e12 / peak
    out["floor_s_per_sample"] = fast_flops / peak
    out["target_s_per_sample"] = out["ref_s_per_sample"] / target
    out["mfu_needed"] = fast_flops / out["target_s_per_sample"] / peak
    mem = frames.get("memory_8b")
    fwd = {}
    if mem is not None:
        for op, sec in zip(mem["operation"], mem["seconds"]):
            m = re.fullmatch(r"sampling_b(\d+)", str(op))
            if m:
                fwd[int(m.group(1))] = float(sec)
    out["forward_step_s"] = out["batch"].map(lambda b: fwd.get(int(b), np.nan))
    out["forward_share"] = out["forward_step_s"] / (out["ref_s_per_sample"] * out["batch"] / steps)
    return out


# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """One measured value of a target: the number (NaN = the file ran but has none), device, how obtained."""

    value: float
    device: str
    note: str


@dataclass(frozen=True)
class Target:
    """One performance target: what it asks for (``requirement``), the measured quantity and its bound.

    ``requirement`` states the target in one sentence (setting, quantity, bound), as the book shows it.
    ``compute(frames, devices)`` returns the measurements (one per row: most targets have one,
    per-shape and per-family targets several, as ``{label: Measurement}``; label "" for a single row); it raises
    ``KeyError`` when a file it needs is missing (the row is then "not run").
    ``devices`` maps benchmark names to their device. ``comparison`` is ``">="``, ``"<="`` or ``"report"``
    (no numeric target: the number is reported). ``sources`` are the benchmark names whose CSVs it reads.
    ``rtol`` is the relative tolerance of the comparison (timing and allocator noise). ``partial``: the
    rows come from several CSVs and ``compute`` returns those whose CSV is present; the other ``labels``
    are "not run".
    """

    key: str
    benchmark: str
    requirement: str
    quantity: str
    short: str
    target: float
    comparison: str
    unit: str
    sources: tuple[str, ...]
    compute: Callable[[dict[str, pd.DataFrame], dict[str, str]], dict[str, Measurement]]
    labels: tuple[str, ...] = ("",)
    rtol: float = 0.0
    partial: bool = False


def _width(t: pd.DataFrame) -> str:
    return f"d_model {int(t['d_model'].iloc[0])}" if "d_model" in t and t["d_model"].notna().any() else "width unknown"


def _layers(t: pd.DataFrame) -> str:
    has = "n_layers" in t and t["n_layers"].notna().any()
    return f"{int(t['n_layers'].iloc[0])} layers" if has else "depth unknown"


def _training(frames: dict[str, pd.DataFrame], devices: dict[str, str]) -> dict[str, Measurement]:
    """Best MFU of the training-step benchmark (label ""), of its wide shape ("wide") and of the gpu
    preset's own runs ("triplet_design"); only the parts whose CSV is present."""
    out: dict[str, Measurement] = {}
    best_by_source: dict[str, tuple[float, str]] = {}
    for label, name in (("", "training"), ("wide", "training_wide")):
        t = training_mfu(frames, name)
        if t.empty:
            continue
        if t["mfu"].isna().all():
            out[label] = Measurement(float("nan"), devices.get(name, ""), "no MFU in this run (CPU)")
            continue
        best = t.loc[t["mfu"].idxmax()]
        best_by_source[name] = (float(best["mfu"]), _width(t))
        note = (f"{_width(t)}, {_layers(t)}; best of {len(t)} configurations: {best['objective']}, "
                f"compile={best['compile']}, {best['tflop_per_s']:.0f} TFLOP/s; MFU against the datasheet peak "
                f"({best['peak_tflop_per_s']:.0f} TFLOP/s)")
        if not math.isnan(float(best["mfu_vs_measured"])):
            note += (f"; against the measured matmul peak ({best['measured_peak_tflop_per_s']:.1f} TFLOP/s, "
                     f"probes.csv): {best['mfu_vs_measured']:.1%}")
        out[label] = Measurement(float(best["mfu"]), devices.get(name, ""), note)
    d = training_by_width(frames)
    d = d[d["source"] == "triplet_design"]
    if len(d):
        dev = devices.get("triplet_design", "")
        if d["mfu"].isna().all():
            out["triplet_design"] = Measurement(float("nan"), dev, "no MFU in this run (CPU)")
        else:
            best = d.loc[d["mfu"].idxmax()]
            runs = ", ".join(f"{r} {m:.1%}" for r, m in zip(d["run"], d["mfu"]))
            note = (f"the gpu preset's own training runs ({_width(d)}, {_layers(d)}; median MFU of each run "
                    f"against the datasheet peak): {runs}; best {best['run']}")
            wider = [f"{m:.1%} at {w} ({src}.csv)" for src, (m, w) in best_by_source.items()]
            if float(best["mfu"]) < TARGETS_BY_KEY["training"].target and wider:
                note += ("; not reachable at this width: the same step's best MFU is " + ", ".join(wider)
                         + ". Per token the matmul FLOPs grow as d_model^2 while the elementwise, normalisation "
                         "and optimiser memory traffic grows as d_model, so narrow matmuls leave the tensor "
                         "cores waiting on memory")
            out["triplet_design"] = Measurement(float(best["mfu"]), dev, note)
    if not out:
        raise KeyError("training")
    return out


def _probe(frames: dict[str, pd.DataFrame], devices: dict[str, str]) -> dict[str, Measurement]:
    p = frames["probes"]
    row = p[p["pass"].str.startswith("probe pass")].iloc[0]
    fwd = p[p["pass"].str.startswith("forward")]
    sheet = _datasheet_peak(frames)
    note = (f"{row['tokens_per_s']:,.0f} tokens/s, {row['tflop_per_s']:.1f} TFLOP/s; MFU against the matmul peak "
            f"measured in the same run ({row['matmul_peak_tflop_per_s']:.1f} TFLOP/s)")
    if not math.isnan(sheet):
        note += f"; against the datasheet peak ({sheet:.0f} TFLOP/s): {row['tflop_per_s'] / sheet:.1%}"
    if len(fwd):
        note += (f"; plain forward without hooks: {float(fwd['mfu_vs_measured_peak'].iloc[0]):.1%} of the "
                 "measured peak")
    return {"": Measurement(float(row["mfu_vs_measured_peak"]), devices.get("probes", ""), note)}


def _sampler(frames: dict[str, pd.DataFrame], devices: dict[str, str]) -> dict[str, Measurement]:
    s = frames["sampling"]
    if "ref_samples_per_s" not in s:
        return {"": Measurement(float("nan"), devices.get("sampling", ""), "the reference sampler did not run")}
    both = s[s["ref_samples_per_s"].notna() & s["fast_samples_per_s"].notna()]
    if not len(both):
        return {"": Measurement(float("nan"), devices.get("sampling", ""), "no batch ran both samplers")}
    ratio = float(s["fast_samples_per_s"].max() / s["ref_samples_per_s"].max())
    identical = bool(both["identical_tokens"].astype(str).str.lower().eq("true").all())
    per_batch = ", ".join(f"batch {int(b)}: {x:.2f}x" for b, x in zip(both["batch"], both["speedup"]))
    note = (f"best fast samples/s over best reference samples/s (each at its best batch); "
            f"tokens identical at temperature 0 in every compared batch: {identical}; per batch: {per_batch}")
    if not identical:
        note = "TOKENS DIFFER: " + note
    return {"": Measurement(ratio if identical else float("nan"), devices.get("sampling", ""), note)}


def _generate_py(frames: dict[str, pd.DataFrame], devices: dict[str, str]) -> dict[str, Measurement]:
    g = generate_py_runs(frames)
    if g.empty:
        raise KeyError("llada_reference")
    src = str(g["source"].iloc[0])
    same = g[g["identical"]]
    if not len(same):
        equal = f"{int(g['tokens_equal'].sum())}/{int(g['tokens_total'].sum())}"
        return {"": Measurement(float("nan"), devices.get(src, ""),
                                f"TOKENS DIFFER: no sampler option gave generate.py's tokens at any batch "
                                f"(tokens equal {equal} over all rows)")}
    best = same.loc[same["ratio"].idxmin()]
    worst = same.loc[same["ratio"].idxmax()]

    def where(r: pd.Series) -> str:
        scaled = f", seconds scaled x{r['time_scale']:g} from the timed blocks" if r["time_scale"] != 1 else ""
        return (f"{r['variant']} at batch {int(r['batch'])} ({r['source']}.csv{scaled}): {r['s_per_sample']:.3f} vs "
                f"{r['ref_s_per_sample']:.3f} s/sample, tokens equal {int(r['tokens_equal'])}/{int(r['tokens_total'])}")

    note = (f"exact sampler time / generate.py time at the same batch, best token-identical option and batch: "
            f"{where(best)}; slowest token-identical: {worst['ratio']:.2f}x, {where(worst)}; "
            f"{len(same)} of {len(g)} (batch, option) runs token-identical")
    b1 = g[g["batch"] == 1]
    fastest = g.loc[g["s_per_sample"].idxmin()]
    if len(b1) and int(fastest["batch"]) != 1:
        ref1 = float(b1["ref_s_per_sample"].iloc[0])
        note += (f". Against generate.py at batch 1 ({ref1:.3f} s/sample, {b1['source'].iloc[0]}.csv) the fastest run "
                 f"({fastest['variant']}, batch {int(fastest['batch'])}) takes {fastest['s_per_sample'] / ref1:.2f}x "
                 "its time")
        if pd.isna(fastest["b1_tokens_equal"]):
            note += "; its tokens were not compared with generate.py's batch-1 output"
        else:
            eq1, tot1 = int(fastest["b1_tokens_equal"]), int(fastest["b1_tokens_total"])
            note += (f"; tokens {'identical' if eq1 == tot1 else 'not identical'} to generate.py's batch-1 output on "
                     f"the rows checked ({eq1}/{tot1} equal; generate.py's own batch-{int(fastest['batch'])} output: "
                     f"{int(fastest['ref_b1_tokens_equal'])}/{tot1})")
    return {"": Measurement(float(best["ratio"]), devices.get(str(best["source"]), ""), note)}


def _skipping(frames: dict[str, pd.DataFrame], devices: dict[str, str]) -> dict[str, Measurement]:
    s = frames["skipping"]
    out = {}
    for shape, g in s[s["k"] > 0].groupby("shape", sort=False):
        worst = g.loc[g["vs_ideal"].idxmin()]
        base = s[(s["shape"] == shape) & (s["k"] == 0)]["seconds"]
        unskipped = f" vs {float(base.iloc[0]):.3g} s unskipped" if len(base) else ""
        note = (f"{int(g['layers'].iloc[0])} layers; worst of k = {', '.join(str(int(k)) for k in g['k'])} "
                f"(k = {int(worst['k'])}, {worst['seconds']:.3g} s{unskipped}); "
                f"median over k {g['vs_ideal'].median():.3f}")
        out[str(shape)] = Measurement(float(worst["vs_ideal"]), devices.get("skipping", ""), note)
    return out


def _evals(frames: dict[str, pd.DataFrame], devices: dict[str, str]) -> dict[str, Measurement]:
    e = frames["skipping_evals"]
    return {str(r["family"]): Measurement(
        float(r["evaluations_per_minute"]), devices.get("skipping", ""),
        f"{r['shape']} shape; tasks {r['tasks']}, {int(r['items_per_task'])} items each, "
        f"{int(r['mc_samples'])} Monte-Carlo samples; {r['seconds_per_evaluation']:.1f} s per evaluation")
        for _, r in e.iterrows()}


def _gptq_time(frames: dict[str, pd.DataFrame], devices: dict[str, str]) -> dict[str, Measurement]:
    g = frames["gptq"].iloc[0]
    how = (f"extrapolated from {int(g['layers_measured'])} of {int(g['layers_total'])} blocks "
           f"({g['mean_block_s']:.2f} s per block)" if bool(g["total_is_extrapolated"]) else "all blocks measured")
    note = f"{g['params_B']:.3g}B parameters, {g['bits']}-bit, calibration {g['calib_tokens']}; {how}"
    return {"": Measurement(float(g["total_min"]), devices.get("gptq", ""), note)}


def _gptq_mem(frames: dict[str, pd.DataFrame], devices: dict[str, str]) -> dict[str, Measurement]:
    g = frames["gptq"].iloc[0]
    return {"": Measurement(float(g["peak_GB"]), devices.get("gptq", ""),
                            f"measured (torch.cuda.max_memory_allocated, GiB), weights {g['weights_GB']:.1f} GiB")}


def _channel_mem(frames: dict[str, pd.DataFrame], devices: dict[str, str]) -> dict[str, Measurement]:
    m = frames["probes_memory"].sort_values("tokens")
    lo, hi = m.iloc[0], m.iloc[-1]
    ratio = float(hi["peak_gib"] / lo["peak_gib"]) if "peak_gib" in m else float("nan")
    note = (f"peak {lo['peak_gib']:.2f} GiB at {int(lo['tokens']):,} tokens, {hi['peak_gib']:.2f} GiB at "
            f"{int(hi['tokens']):,} tokens; accumulators {int(lo['accumulator_elements']):,} -> "
            f"{int(hi['accumulator_elements']):,} elements") if "peak_gib" in m else "no GPU peak in this run"
    return {"": Measurement(ratio, devices.get("probes", ""), note)}


#: the performance targets, in the order of the table
TARGETS: tuple[Target, ...] = (
    Target("training", "training",
           "training MFU >= 35% of the datasheet bf16 peak (best configuration), per measured width: the training "
           "step benchmark at its shape and at d_model 1024, and the gpu preset's own training runs (triplet design)",
           "training MFU, best configuration", "training MFU",
           0.35, ">=", "fraction of datasheet peak", ("training", "training_wide", "triplet_design", "probes"),
           _training, labels=("", "wide", "triplet_design"), partial=True),
    Target("probe", "probes",
           "probe pass (layer-similarity + channel-statistics hooks) on an 8B-shaped model >= 55% of the bf16 "
           "matmul peak measured on the same machine",
           "probe pass MFU (layer similarity + channel stats hooks)", "probe pass MFU",
           0.55, ">=", "fraction of measured matmul peak", ("probes",), _probe),
    Target("sampler", "sampling",
           "exact diffusion sampler >= 1.6x the samples/s of the project's float64 re-implementation of LLaDA's "
           "sampler (tests/oracles), identical tokens at temperature 0 (LLaDA's GSM8K settings, 8B-shaped model)",
           "exact diffusion sampler samples/s over the reference's (identical tokens)",
           "sampler vs reference", 1.6, ">=", "x", ("sampling",), _sampler),
    Target("sampler_generate_py", "llada_reference",
           "exact LLaDA sampler <= 0.8x the time per sample of LLaDA's genuine generate.py, identical tokens at "
           "temperature 0 (GSM8K settings: 900-token prompt, gen 256, steps 256, block 32; genuine modeling code, "
           "8B shape)",
           "exact sampler s/sample over generate.py's at the same batch (identical tokens), best option and batch",
           "sampler vs generate.py", 0.8, "<=", "x time", ("llada_reference", "llada_reference_options"),
           _generate_py),
    Target("skipping", "skipping",
           "diffusion sampler speed-up with k early blocks statically skipped >= 0.9 x the ideal L/(L-k), every k",
           "sampler speed-up under skipping / ideal L/(L-k), worst k",
           "skipping speed-up / ideal", 0.9, ">=", "x ideal", ("skipping",), _skipping),
    Target("evals", "skipping_evals",
           "evaluations per minute of the layer-skipping chapter's task set on the triplet (reported, no bound)",
           "evaluations per minute (one skip configuration, all tasks)",
           "evaluations per minute", float("nan"), "report", "1/min", ("skipping_evals",), _evals,
           labels=("ar", "dlm")),
    Target("gptq_time", "gptq",
           "GPTQ of an 8B-shaped model with 128 x 2048 calibration tokens on one GPU in <= 15 min",
           "GPTQ of an 8B-shaped model, total time", "GPTQ 8B time",
           15.0, "<=", "min", ("gptq",), _gptq_time),
    Target("gptq_memory", "gptq",
           "GPTQ of an 8B-shaped model with 128 x 2048 calibration tokens on one GPU in <= 40 GiB peak memory",
           "GPTQ of an 8B-shaped model, peak GPU memory", "GPTQ 8B peak memory",
           40.0, "<=", "GiB", ("gptq",), _gptq_mem),
    Target("channel_memory", "probes_memory",
           "channel-statistics peak memory independent of the number of tokens (most / fewest tokens <= 1, "
           "1% tolerance)",
           "channel statistics peak memory, most / fewest tokens (independent of tokens)",
           "channel-stats memory growth", 1.0, "<=", "ratio", ("probes",), _channel_mem, rtol=0.01),
)
TARGETS_BY_KEY: dict[str, Target] = {t.key: t for t in TARGETS}


def _met(value: float, t: Target) -> bool:
    if t.comparison == ">=":
        return value >= t.target * (1 - t.rtol)
    return value <= t.target * (1 + t.rtol)


def targets_table(results_dir: str | os.PathLike, *, tiny: bool = False) -> pd.DataFrame:
    """One row per target (per shape for skipping, per family for evaluations per minute).

    Columns: ``target_id`` (the target's key, plus ``_<shape>`` / ``_<family>`` where it has several
    rows), ``key`` (the :class:`Target`'s key in :data:`TARGETS_BY_KEY`), ``short`` (a label for
    figures), ``benchmark``, ``requirement`` (the target in one sentence), ``quantity``, ``measured``,
    ``target``, ``comparison`` (``>=``, ``<=``, ``report``), ``unit``, ``met`` (nullable boolean: NA
    where not run, no value or no numeric target), ``status`` (``met`` / ``not met`` / ``not run``
    (its CSV is missing) / ``no value`` / ``reported``), ``measured_over_target``, ``device``, ``source``
    (the CSV files read) and ``note`` (how the number was obtained, including MFU against the other
    peak where relevant).
    """
    results = _resolve(results_dir)
    frames = load_benchmarks(results, tiny=tiny)
    info = benchmark_info(results, tiny=tiny)
    # the device of each benchmark (from its CSV, or its .md where the CSV has no device column)
    devices = {b: d for b, d, ran in zip(info["benchmark"], info["device"], info["ran"]) if ran}
    rows = []
    for t in TARGETS:
        sources = ", ".join(f"{_stem(name, tiny)}.csv" for name in t.sources)
        measured: dict[str, Measurement | None]
        try:
            measured = dict(t.compute(frames, devices))
        except KeyError:
            measured = {lab: None for lab in t.labels}
        if t.partial:
            measured = {lab: measured.get(lab) for lab in t.labels}
        for label, m in measured.items():
            quantity = f"{t.quantity} [{label}]" if label else t.quantity
            value = np.nan if m is None else m.value
            row: dict[str, Any] = {"target_id": f"{t.key}_{label}" if label else t.key, "key": t.key,
                   "short": f"{t.short} [{label}]" if label else t.short,
                   "benchmark": t.benchmark, "requirement": t.requirement, "quantity": quantity,
                   "measured": value, "target": t.target, "comparison": t.comparison,
                   "unit": t.unit, "device": "" if m is None else m.device, "source": sources,
                   "note": "not run: no results file" if m is None else m.note}
            if m is None:
                row.update(met=pd.NA, status="not run")
            elif t.comparison == "report":
                row.update(met=pd.NA, status="reported" if not math.isnan(m.value) else "no value")
            elif math.isnan(m.value):
                row.update(met=pd.NA, status="no value")
            else:
                ok = _met(m.value, t)
                row.update(met=ok, status="met" if ok else "not met")
            row["measured_over_target"] = (value / t.target
                                           if t.comparison != "report" and t.target else np.nan)
            rows.append(row)
    out = pd.DataFrame(rows, columns=TARGET_COLUMNS)
    out["met"] = out["met"].astype("boolean")
    return out
