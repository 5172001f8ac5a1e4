"""Timeline of the finished configurations in a run cache (what a chapter killed at its deadline had done).

Usage: python3 lab/gpu/run_times.py [.cache/layerwise/runs] > runs/logs/run_times.txt
One line per stored configuration, in the order they finished: chapter, file, finish time (UTC), and
the seconds evaluate() recorded (total, per request type, applying the intervention).
"""

from __future__ import annotations

import datetime as dt
import pickle
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else ".cache/layerwise/runs")
rows = []
for p in root.rglob("*.pkl"):
    try:
        with p.open("rb") as f:
            secs = pickle.load(f).get("run", {}).get("seconds", {})
    except Exception as e:  # a file being written, or of an older library: shown without its seconds
        secs = {"unreadable": str(e)[:60]}
    rows.append((p.stat().st_mtime, p.parent.name, p.name, secs))
for t, chapter, name, secs in sorted(rows):
    when = dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%H:%M:%S")
    print(when, chapter, name[:70], " ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                            for k, v in secs.items()))
