"""Diagnostic for issue 3: does the diffusion objective learn the arithmetic task when it dominates the
stream? Trains `ar` and `dlm` of a preset with a large arithmetic share on a small text slice, then
scores held-out arithmetic (sampled exact match, and the answer line by likelihood). Not part of the
book; its log is committed under lab/logs/.

    python lab/gpu/arith_probe.py --preset gpu --arith-frac 0.9 --tokens 30e6 --max-train-chars 4e6
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from layerwise import evals, stats
from layerwise import training as T
from layerwise.models import load


def score(o: str, path: Path, a: argparse.Namespace, ov: dict) -> dict:
    """Held-out arithmetic of one saved model: sampled exact match (the objective's own sampler) and
    the answer line by likelihood."""
    meta = json.loads((path / "layerwise_meta.json").read_text())
    lm = load(str(path), device=a.device)
    r = evals.evaluate(lm, ["lw_arithmetic", "lw_arithmetic_ll"], limit=a.items, batch_size=32, seed=0)
    em = r["metrics"]["lw_arithmetic"]["exact_match,first-number"]
    ll = r["metrics"]["lw_arithmetic_ll"]["acc,none"]
    chance = r["chance"]["lw_arithmetic"]["exact_match,first-number"]
    p = stats.above_chance_pvalue(r["items"]["lw_arithmetic"]["exact_match,first-number"], chance)
    print(f"{o} {path.name} (tokens {meta.get('tokens_seen')}): val_loss {meta.get('val_loss', float('nan')):.3f}, "
          f"arithmetic exact match {em:.3f}, answer by likelihood {ll:.3f}, chance {chance:.3f}, "
          f"p(above chance) {p:.2g}, {r['n']['lw_arithmetic']} items", flush=True)
    for s in r["samples"]["lw_arithmetic"][:6]:
        print("   ", repr(s["doc"]["prompt"][-45:]), "->", repr(s["filtered_resps"]), "target", s["target"], flush=True)
    return {"objective": o, "model": path.name, "step": meta.get("steps"), "tokens_seen": meta.get("tokens_seen"),
            "val_loss": meta.get("val_loss"), "exact_match": em, "answer_by_likelihood": ll, "chance": chance,
            "p_above_chance": p, "items": r["n"]["lw_arithmetic"], **ov}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="gpu")
    ap.add_argument("--arith-frac", type=float, default=0.9)
    ap.add_argument("--tokens", type=float, default=30e6)
    ap.add_argument("--max-train-chars", type=float, default=4e6)
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--objectives", default="ar,dlm", help="which of the triplet to train and score")
    ap.add_argument("--batch-size", type=int, default=None, help="sequences per step (default: the preset's)")
    ap.add_argument("--snapshots", action="store_true",
                    help="also score the 25/50/75%% snapshots of each run (a learning curve)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="runs/results/arith_probe.json", help="the summary rows as JSON")
    a = ap.parse_args()
    ov = dict(arith_frac=a.arith_frac, tokens=int(a.tokens), max_train_chars=int(a.max_train_chars),
              tokenizer_train_bytes=int(a.max_train_chars))
    if a.batch_size:
        ov.update(batch_size=a.batch_size, micro_batch=a.batch_size)
    base = T.get_preset(a.preset)
    if base.data.source == "synthetic":
        ov.pop("max_train_chars")
        ov.pop("tokenizer_train_bytes")
    p = T.get_preset(a.preset, **ov, ckpt_every=1000)
    t0 = time.time()
    paths = T.ensure_triplet(p, device=a.device, progress=False, objectives=tuple(a.objectives.split(",")))
    print(f"trained {a.objectives} in {time.time() - t0:.0f} s: {ov}", flush=True)
    rows = []
    for o, path in paths.items():
        targets = [path]
        if a.snapshots:  # <run>/snapshots/step_<n>/, the last one being the final model
            snaps = sorted((path / "snapshots").glob("step_*"), key=lambda d: int(d.name.split("_")[1]))
            targets = snaps[:-1] + [path]
        for target in targets:
            rows.append(score(o, target, a, ov))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    print(f"wrote {out}\nall done", flush=True)


if __name__ == "__main__":
    main()
