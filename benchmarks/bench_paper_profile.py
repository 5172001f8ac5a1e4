"""Cost of the `paper` profile: seconds per unit of each chapter's work on 8B-shaped models, and GPU-hours.

Builds each of the paper profile's four models with random bf16 weights directly on the GPU (nothing is
downloaded): LLaDA-8B and Dream-v0-7B from their genuine modeling code (``--remote-code DIR``:
``DIR/configs/llada-8b-base.json``, ``DIR/llada/*.py``, ``DIR/dream/*.py``), Qwen2.5-7B and Llama-3.1-8B
from transformers' Qwen2 / Llama classes at the real shapes (Dream-7B has Qwen2.5-7B's shape). For every
chapter the profile runs a model in, the units of the chapter's work (:func:`layerwise.book.estimate.chapter_work`,
which follows the chapter's loops at the profile's parameters) name the library operations to time: probe
batches (``layer_similarity``, ``token_similarity``, ``channel_stats``), denoising steps of LLaDA's and Dream's
samplers (a few steps of a full-length canvas, per step), the AR prefill and decoding steps
(``ar_generate``), likelihood scoring (``loglikelihood``: a Monte-Carlo batch of a diffusion model, a
batch of requests of an AR model; measured even where the profile scores no likelihood task), the
spectra of one block (``alpha_hill``) and one block of each compression method (``quantize`` /
``prune`` with ``blocks=[0]``). Each operation runs once to warm up and is then timed at the
profile's shapes. The model build time is recorded separately (loading a checkpoint from disk takes longer).

Random weights never emit an end-of-text token: generations run to full length, so the GPU-hours are the
full-length upper bound.

GPU (H200, ~6 min):  python benchmarks/bench_paper_profile.py --remote-code ../shared/remote_code
CPU check (~30 s):   python benchmarks/bench_paper_profile.py --tiny --remote-code ../shared/remote_code
Writes benchmarks/results/paper_profile[_tiny].{csv,md} and the cost file the estimate reads,
src/layerwise/book/costs/paper_profile[_tiny].json; the full run also rewrites the estimate's section of
book/run_on_gpu.md. ``--render`` rewrites the tables (and that section) from the stored cost file
without measuring, e.g. after a change of the profile.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
COSTS = REPO / "src" / "layerwise" / "book" / "costs"
sys.path.insert(0, str(REPO / "tests"))

#: the four models: hub ids (Base, Instruct) the profile names, family, how they are built
MODELS: dict[str, dict[str, Any]] = {
    "LLaDA-8B": dict(ids=["GSAI-ML/LLaDA-8B-Base", "GSAI-ML/LLaDA-8B-Instruct"], family="dlm", build="llada"),
    "Dream-v0-7B": dict(ids=["Dream-org/Dream-v0-Base-7B", "Dream-org/Dream-v0-Instruct-7B"], family="ar2dlm",
                        build="dream"),
    "Qwen2.5-7B": dict(ids=["Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-7B-Instruct"], family="ar", build="qwen2"),
    "Llama-3.1-8B": dict(ids=["meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B-Instruct"], family="ar",
                         build="llama"),
}
#: Qwen2.5-7B's config (Dream-v0-7B has the same shape) and Llama-3.1-8B's
QWEN25_7B = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                 num_key_value_heads=4, vocab_size=152064, rope_theta=1000000.0, rms_norm_eps=1e-6,
                 max_position_embeddings=32768, tie_word_embeddings=False)
LLAMA31_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, rms_norm_eps=1e-5,
                  max_position_embeddings=8192, tie_word_embeddings=False)
TINY_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=4096)
TINY_VOCAB = 512
#: likelihood tasks whose units are measured when the profile's chapter 03 has none (the gpu profile's)
LIKELIHOOD_TASKS = ["lw_gutenberg", "lw_arc_easy"]


def build(key: str, remote: Path, tiny: bool, device: torch.device, dtype: torch.dtype) -> Any:
    """One of :data:`MODELS` with random weights, built on ``device``, wrapped with its registry spec."""
    from layerwise.models import REGISTRY, wrap

    how, family = MODELS[key]["build"], MODELS[key]["family"]
    spec = REGISTRY.get(MODELS[key]["ids"][-1])
    torch.manual_seed(0)
    if how in ("llada", "dream"):
        from oracles.remote_code import genuine_class, hub_folder, tiny_config

        if how == "llada":
            cfg = (tiny_config("llada", TINY_VOCAB, remote, d_model=64, mlp_hidden_size=128, max_sequence_length=4096)
                   if tiny else json.loads((remote / "configs" / "llada-8b-base.json").read_text()))
        else:
            shape = {**QWEN25_7B, **(TINY_SHAPE if tiny else {})}
            vocab = TINY_VOCAB if tiny else shape["vocab_size"]
            cfg = {**tiny_config("dream", vocab, remote), **shape, "vocab_size": vocab}
            if not tiny:  # Dream-v0-7B's special ids
                cfg.update(mask_token_id=151666, pad_token_id=151643, bos_token_id=151643, eos_token_id=151643)
        folder = hub_folder(Path(tempfile.mkdtemp(prefix=f"paper_profile_{how}_")), how, cfg, remote)
        config, cls, arch = genuine_class(folder)
        if how == "llada":
            module = sys.modules[cls.__module__]
            inner = module.create_model_config_from_pretrained_config(config)
            inner.init_device = device.type
            model = cls(config, model=module.LLaDAModel(inner, init_params=False)).to(dtype).eval()
        else:
            with torch.device(device):
                model = cls._from_config(config, dtype=dtype).eval()
        arch.patches.apply_model(model)
        return wrap(model, None, family, mask_token_id=int(config.mask_token_id), adapter=arch.adapter,
                    model_id=key, spec=spec)
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    shape = {**(QWEN25_7B if how == "qwen2" else LLAMA31_8B), **(TINY_SHAPE if tiny else {})}
    if tiny:
        shape["vocab_size"] = TINY_VOCAB
    cfg_cls, model_cls = (Qwen2Config, Qwen2ForCausalLM) if how == "qwen2" else (LlamaConfig, LlamaForCausalLM)
    cfg = cfg_cls(**shape, attn_implementation="sdpa")
    with torch.device(device):
        model = model_cls._from_config(cfg, dtype=dtype).eval()
    model.generation_config.eos_token_id = None  # decode to full length (no stop at a random end-of-text)
    return wrap(model, None, family, adapter="llama", model_id=key, spec=spec)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one call (device synchronised before and after)."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def measure(lm: Any, op: str, shape: dict[str, Any], tiny: bool, device: torch.device) -> dict[str, Any]:
    """Seconds of one unit of ``op`` at ``shape`` (after one warm-up call), with the shape measured."""
    from layerwise import compress
    from layerwise.probes import channel_stats, layer_similarity, token_similarity
    from layerwise.sampling import ar_generate, diffusion_generate, dream_generate, loglikelihood
    from layerwise.sampling.generation import _diffusion_defaults
    from layerwise.spectra import alpha_hill

    vocab = int(lm.model.get_input_embeddings().weight.shape[0])
    hi = min(vocab - 2, int(lm.spec.mask_token_id or vocab) - 1)
    g = torch.Generator().manual_seed(0)
    ids = lambda n, t: torch.randint(0, hi, (n, t), generator=g)  # noqa: E731
    diffusion = lm.family.is_diffusion
    out = dict(shape)
    if op in ("layer_similarity", "token_similarity", "channel_stats"):
        b, t, n = shape["batch"], shape["seq_len"], 2
        x = ids(b * n, t)
        kw: dict[str, Any] = dict(batch_size=b)
        if op == "layer_similarity":
            fn = lambda xx: layer_similarity(lm, xx, mask_ratio=0.5 if diffusion else 0.0, **kw)  # noqa: E731
        elif op == "token_similarity":
            fn = lambda xx: token_similarity(lm, xx, max_distance=shape["max_distance"], bins=200, **kw)  # noqa: E731
        else:
            fn = lambda xx: channel_stats(lm, xx, where=("attn_input", "residual"), **kw)  # noqa: E731
        fn(x[:b])
        out["seconds"] = timed(lambda: fn(x), device) / n
    elif op in ("diffusion_step", "dream_step"):
        block = 8 if tiny else 32
        gen = 4 * block  # four blocks: four model calls over the full canvas
        b, prompt = shape["batch"], max(1, shape["seq_len"] - gen)
        x = ids(b, prompt)
        if op == "diffusion_step":
            call = lambda n: diffusion_generate(lm, x, gen_length=gen, steps=n, block_length=block)  # noqa: E731
        else:
            def call(n: int) -> Any:
                kw = _diffusion_defaults(lm, gen, {"steps": n})
                return dream_generate(lm, x, gen_length=gen, **kw)
        call(4)
        out.update(seconds=timed(lambda: call(4), device) / 4, seq_len=prompt + gen)
    elif op in ("ar_prefill", "ar_token"):
        b, prompt = shape["batch"], shape["seq_len"] - (0 if op == "ar_prefill" else 32)
        x = ids(b, max(1, prompt))
        gen = lambda n: ar_generate(lm, x, None, max_new_tokens=n)  # noqa: E731
        gen(2)
        t1, t33 = timed(lambda: gen(1), device), timed(lambda: gen(33), device)
        per_token = max(t33 - t1, 0.0) / 32
        out.update(seconds=t1 if op == "ar_prefill" else per_token, seq_len=x.shape[1])
    elif op == "alpha_hill_block":
        mats = [m for layer, _role, m in lm.adapter.named_linears(lm.model) if layer == 0]
        alpha_hill(mats[0].weight, device=lm.device)
        out["seconds"] = timed(lambda: [alpha_hill(m.weight, device=lm.device) for m in mats], device)
    elif op.startswith("compress_block:"):
        method = op.split(":", 1)[1]
        calib = ids(shape["calib_seqs"], shape["calib_len"])
        b = shape.get("batch", 8)

        def run(c: torch.Tensor) -> Any:
            if method in ("gptq", "rtn"):
                return compress.quantize(lm, method, 4, 128, calib_ids=c, blocks=[0], batch_size=b, progress=False)
            return compress.prune(lm, method, 0.5, calib_ids=c, blocks=[0], batch_size=b, progress=False)
        run(calib[:b])
        out["seconds"] = timed(lambda: run(calib), device)
        if method in ("rtn", "magnitude"):  # no calibration data: the cost does not scale with it
            out.pop("calib_seqs")
            out.pop("calib_len")
    elif op in ("mc_batch", "ar_loglik"):
        b = shape["batch"] if op == "ar_loglik" else min(shape["batch"], 4 if tiny else 32)
        ctx_len = max(1, shape["seq_len"] // 2)
        ctx = ids(1, ctx_len)[0].tolist()
        cont = ids(1, max(1, shape["seq_len"] - ctx_len))[0].tolist()
        if op == "ar_loglik":  # one batch of requests
            call = lambda: loglikelihood(lm, [ctx] * b, [cont] * b, batch_size=b)  # noqa: E731
            per = 1
        else:  # two requests of b Monte-Carlo samples each (one batch per request)
            call = lambda: loglikelihood(lm, [ctx] * 2, [cont] * 2, n_samples=b, batch_size=b)  # noqa: E731
            per = 2
        call()
        out.update(seconds=timed(call, device) / per, batch=b)
    else:
        raise ValueError(op)
    return out


def needed_ops(params: dict[str, dict[str, Any]], key: str, layers: int) -> dict[str, dict[str, Any]]:
    """The operations the profile's chapters run on model ``key``: ``{op: shape}`` (the shape of the
    chapter unit with the most calls)."""
    from layerwise.book.estimate import _models_of, chapter_work
    from layerwise.compress.prune import PruneMethod
    from layerwise.compress.quantize import QuantMethod

    entry = {"family": MODELS[key]["family"], "layers": layers}
    best: dict[str, tuple[int, dict[str, Any]]] = {}
    for chapter, p in params.items():
        if not set(_models_of(p)) & set(MODELS[key]["ids"]):
            continue
        # likelihood tasks and every compression method are measured too, so that adding them can be costed
        if chapter == "03_layer_skipping":
            p = {**p, "likelihood_tasks": p["likelihood_tasks"] or LIKELIHOOD_TASKS}
        if chapter == "07_compression":
            p = {**p, "quant_methods": list(get_args(QuantMethod)), "prune_methods": list(get_args(PruneMethod)),
                 "tasks": [*p["tasks"], *LIKELIHOOD_TASKS[1:]]}
        for w in chapter_work(chapter, p, entry)[0]:
            op = w.op if w.op != "compress_block" else f"compress_block:{w.shape_dict['method']}"
            shape = {**w.shape_dict, **({"batch": p.get("batch_size", 8)} if w.op == "compress_block" else {})}
            shape.pop("method", None)
            weight = w.units * shape.get("batch", 1) * shape.get("seq_len", 1)  # where most of the time goes
            if op not in best or weight > best[op][0]:
                best[op] = (weight, shape)
    return {op: s for op, (_, s) in best.items()}


def tiny_shape(shape: dict[str, Any]) -> dict[str, Any]:
    """A CPU-sized version of a shape (the estimate scales by tokens)."""
    small = {"batch": 2, "seq_len": 48, "max_distance": 8, "calib_seqs": 4, "calib_len": 32}
    return {k: (min(v, small[k]) if k in small else v) for k, v in shape.items()}


def render(costs: dict[str, Any], params: dict[str, dict[str, Any]], stem: Path, command: str) -> str:
    """Write ``stem``.csv (one row per chapter x model x unit) and .md; returns the markdown."""
    from layerwise.book import estimate as E

    est = E.estimate(params, costs)
    stem.parent.mkdir(parents=True, exist_ok=True)
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["chapter", "model", "unit", "units", "s_per_unit", "gpu_hours", "device"])
        for r in est.rows:
            w.writerow([r.chapter, r.model, r.unit, r.units, f"{r.s_per_unit:.6g}", f"{r.gpu_hours:.6g}", est.device])
    builds = ", ".join(f"{k} {m['build_s']:.0f} s" for k, m in costs["models"].items())
    md = (f"# Cost of the paper profile\n\nDevice: {est.device}. Command: `{command}`.\n\n"
          "Each chapter's units of work at the paper profile's parameters (`layerwise.book.estimate`, "
          "following the chapter's loops) times the seconds of one unit, measured on 8B-shaped models with "
          "random bf16 weights (LLaDA-8B and Dream-v0-7B from their genuine modeling code, Qwen2.5-7B and "
          "Llama-3.1-8B from transformers' classes). Random weights never emit an end-of-text token, so every "
          "generation runs to its full length: the GPU-hours are the **full-length upper bound**. Model build "
          f"(random weights on the device; loading a checkpoint from disk takes longer): {builds}.\n\n"
          f"{E.format_estimate(est, budget_hours=24)}\n\n## Per unit\n\n{E.format_estimate(est, detail=True)}\n")
    stem.with_suffix(".md").write_text(md)
    page = REPO / "book" / "run_on_gpu.md"
    if not costs.get("tiny") and E.PAGE_START in page.read_text():  # the book's table of the paper profile
        page.write_text(E.replace_page_section(page.read_text(), E.page_section(est, costs)))
    return md


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from layerwise.book.estimate import profile_parameters

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--remote-code", default=str(REPO.parent / "shared" / "remote_code"),
                    help="folder with configs/llada-8b-base.json, llada/*.py and dream/*.py")
    ap.add_argument("--tiny", action="store_true", help="tiny models and shapes on CPU (checks the script)")
    ap.add_argument("--profile", default="paper", help="the profile whose chapters are costed")
    ap.add_argument("--models", default="",
                    help="comma list of model keys to measure (default: all four); the cost file keeps the other "
                         "models measured on the same device")
    ap.add_argument("--render", action="store_true", help="only rewrite the tables from the stored cost file")
    ap.add_argument("--out", default="", help="results stem (default benchmarks/results/paper_profile[_tiny])")
    ap.add_argument("--costs", default="", help="cost file (default: the package's costs/paper_profile[_tiny].json)")
    args = ap.parse_args(argv)

    suffix = "_tiny" if args.tiny else ""
    stem = Path(args.out) if args.out else RESULTS / f"paper_profile{suffix}"
    cost_file = Path(args.costs) if args.costs else COSTS / f"paper_profile{suffix}.json"
    command = "python benchmarks/bench_paper_profile.py" + (" --tiny" if args.tiny else "")
    params = profile_parameters(args.profile, notebooks_dir=REPO / "notebooks")
    if args.render:
        costs = json.loads(cost_file.read_text())
        print(render(costs, params, stem, costs.get("command", command)))
        return costs

    remote = Path(args.remote_code)
    if not (remote / "llada" / "modeling_llada.py").is_file():
        raise SystemExit(f"no LLaDA/Dream remote code at {remote}: pass --remote-code DIR")
    device = torch.device("cpu" if args.tiny else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no GPU visible: run with --tiny for the CPU check")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    dev_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    keys = args.models.split(",") if args.models else list(MODELS)
    unknown = [k for k in keys if k not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model key(s) {unknown}: use some of {', '.join(MODELS)}")
    costs: dict[str, Any] = {"device": dev_name, "command": command, "dtype": str(dtype)[6:],
                             "torch": torch.__version__, "tiny": args.tiny, "models": {}}
    if args.models and cost_file.is_file():  # a partial run adds its models to those measured on this device
        before = json.loads(cost_file.read_text())
        if before.get("device") == dev_name:
            costs["models"] = {k: v for k, v in before["models"].items() if k not in keys}
    t_all = time.perf_counter()
    for key in keys:
        t0 = time.perf_counter()
        lm = build(key, remote, args.tiny, device, dtype)
        _sync(device)
        build_s = time.perf_counter() - t0
        entry: dict[str, Any] = {"ids": MODELS[key]["ids"], "family": MODELS[key]["family"],
                                 "layers": lm.num_layers, "build_s": round(build_s, 3), "ops": {}}
        print(f"{key}: built in {build_s:.1f} s ({lm.num_layers} blocks)", flush=True)
        for op, shape in needed_ops(params, key, lm.num_layers).items():
            m = measure(lm, op, tiny_shape(shape) if args.tiny else shape, args.tiny, device)
            entry["ops"][op] = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in m.items()}
            print(f"  {op} {shape}: {m['seconds']:.4f} s", flush=True)
        costs["models"][key] = entry
        del lm
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    costs["benchmark_s"] = round(time.perf_counter() - t_all, 1)
    cost_file.parent.mkdir(parents=True, exist_ok=True)
    cost_file.write_text(json.dumps(costs, indent=1) + "\n")
    print(render(costs, params, stem, command))
    return costs


if __name__ == "__main__":
    main()
