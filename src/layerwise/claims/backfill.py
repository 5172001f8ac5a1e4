"""Pre-registered definitions read from a result file's own tables, for files written before the chapter wrote them.

A chapter that now writes a claim part's alternative definitions wrote, in earlier runs, only the
headline, while its data tables already held every definition's number (computed by the same call).
The GPU models behind those files are gone, so the chapter cannot re-run on them; this reads the
numbers from the tables instead. Only missing metrics are added (nothing is overwritten) and the file
records which ones, under ``derived``.

Usage: ``python -m layerwise.claims.backfill FILE [FILE ...]`` (chapter 07's result files; B5's
``<task>:<metric>`` definitions from ``data["early_minus_late"]``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
from collections.abc import Sequence
from pathlib import Path

from ..config import LayerwiseError
from .paper_b import early_minus_late_definitions

__all__ = ["backfill_definitions", "main"]

#: chapter -> (the data table read, the function that reads the definitions from it)
SOURCES = {"07_compression": ("early_minus_late", early_minus_late_definitions)}


def backfill_definitions(path: str | os.PathLike) -> list[str]:
    """Add to the result file ``path`` the definitions its own data table holds and its metrics lack;
    return their names (empty when there is nothing to add or the chapter has no such table)."""
    path = Path(path)
    payload = json.loads(path.read_text())
    chapter = payload.get("chapter", "")
    if chapter not in SOURCES:
        return []
    table, read = SOURCES[chapter]
    if table not in payload.get("data", {}):
        raise LayerwiseError(f"{path}: no data[{table!r}] table to read the definitions from; re-run {chapter}")
    found = read(payload["metrics"], payload["data"][table])
    added = [k for k in found if k not in payload["metrics"]]
    if not added:
        return []
    payload["metrics"].update({k: found[k].to_metric() for k in added})
    payload.setdefault("derived", []).append({
        "metrics": added, "from": f"data.{table}", "by": f"{__name__}.backfill_definitions",
        "at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)
    return added


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m layerwise.claims.backfill", description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+", help="result files (e.g. book/results/gpu/07_compression*.json)")
    args = ap.parse_args(argv)
    for f in args.files:
        if not Path(f).is_file():
            raise SystemExit(f"no result file {f}: give the path of a chapter's result file")
        added = backfill_definitions(f)
        print(f"{f}: " + (f"added {len(added)} definitions ({', '.join(added)})" if added else "nothing to add"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
