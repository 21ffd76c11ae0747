"""The run summary: ``summary.csv`` and ``summary.json`` in the output folder (one row per case of the manifest,
in manifest order) and the table printed at the end."""
from __future__ import annotations

import csv
import io
import json
import math
from typing import Dict, List

FIELDS = ("case_id", "model", "status", "seconds", "slices", "flagged", "dice", "assd_mm", "hd95_mm", "error")


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def summary_files(rows: List[Dict], outdir: str) -> List:
    """``[(path, text), ...]`` for :func:`medseg_backend.io.write_images` (written together, all or none)."""
    import os

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(FIELDS)
    for r in rows:
        w.writerow([_fmt(r.get(f)) for f in FIELDS])
    keys = FIELDS + ("worker_pid", "model_loads")  # which worker ran it, and how many models it had loaded by then
    clean = [{f: (None if isinstance(r.get(f), float) and math.isnan(r[f]) else r.get(f)) for f in keys}
             for r in rows]
    return [(os.path.join(outdir, "summary.csv"), buf.getvalue()),
            (os.path.join(outdir, "summary.json"), json.dumps(clean, indent=1) + "\n")]


def table(rows: List[Dict]) -> str:
    """The overall table: one line per case, then the counts and the means."""
    cols = ("case_id", "model", "status", "seconds", "slices", "flagged", "dice", "assd_mm")
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(cols))]
    lines += ["  ".join(v.ljust(widths[i]) for i, v in enumerate(row)) for row in cells]
    by = {}
    for r in rows:
        by[r["status"]] = by.get(r["status"], 0) + 1
    dices = [r["dice"] for r in rows if isinstance(r.get("dice"), float)]
    tail = ", ".join(f"{n} {s}" for s, n in sorted(by.items()))
    if dices:
        tail += f"; mean Dice {sum(dices) / len(dices):.3f} over {len(dices)} case(s) with a reference"
    lines.append(f"{len(rows)} case(s): {tail}")
    return "\n".join(lines)
