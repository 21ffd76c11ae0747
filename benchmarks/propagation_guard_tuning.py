"""Choose the rules of a guarded propagation on the TUNING part only (it refuses to read the held-back part).

Reads the stored runs of ``propagation_split.py run`` (``official`` and ``adaptive``), and scores candidate
rules that change an ``official`` result by run-time signals only (the per-slice records: confidence, profile,
area, ...). The ground truth is used to score, never by a rule.

Run: ``python benchmarks/propagation_guard_tuning.py``
"""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from propagation_split import load_cases, stored_runs  # noqa: E402

from medseg_backend.metrics import dice  # noqa: E402


def sides(records, z_start):
    """Records of each side of the walk in walk order (outwards), keyed by slice."""
    by = {r["slice"]: r for r in records}
    up = [by[k] for k in sorted(by) if k > z_start]
    down = [by[k] for k in sorted(by, reverse=True) if k < z_start]
    return up, down


def trimmed(labels, records, z_start, off):
    """``labels`` without the trailing run of slices (each side, from its outer end inwards) where ``off``
    holds."""
    out = labels.copy()
    for side in sides(records, z_start):
        prev = None
        flags = []
        for r in side:
            flags.append(off(r, prev))
            prev = r
        i = len(side)
        while i > 0 and flags[i - 1]:
            i -= 1
        for r in side[i:]:
            out[r["slice"]] = False
    return out


def main() -> None:
    cases = load_cases("tuning")
    assert all(c["part"] == "tuning" for c in cases)
    runs = stored_runs(cases, ("official", "adaptive"))
    keys = [(c, b) for c in cases for b in ("tight", "loose") if (c["name"], b, "official") in runs]
    print(f"{len(keys)} tuning runs")
    base = {(c["name"], b): dice(runs[(c["name"], b, "official")]["labels"], c["gt"]) for c, b in keys}
    ada = {(c["name"], b): dice(runs[(c["name"], b, "adaptive")]["labels"], c["gt"]) for c, b in keys
           if (c["name"], b, "adaptive") in runs}

    def score(off):
        d = {}
        for c, b in keys:
            r = runs[(c["name"], b, "official")]
            lab = trimmed(r["labels"], r["records"], r["info"]["z_start"], off)
            d[(c["name"], b)] = dice(lab, c["gt"]) - base[(c["name"], b)]
        return d

    def show(name, d):
        v = np.array(list(d.values()))
        t = np.array([x for k, x in d.items() if k[1] == "tight"])
        lo = np.array([x for k, x in d.items() if k[1] == "loose"])
        worst = min(d, key=d.get)
        print(f"{name:60s} mean {v.mean():+.4f} tight {t.mean():+.4f} loose {lo.mean():+.4f} "
              f"worst {d[worst]:+.4f} {worst} below-0.01 {int((v < -0.01).sum())}")

    show("adaptive", {k: ada[k] - base[k] for k in ada})
    for conf_below, prof_below, need_both in itertools.product((0.5, 0.6, 0.7, 0.8, 0.9, 1.01),
                                                               (0.2, 0.4, 0.6, 1.01), (True, False)):
        def off(r, prev, c=conf_below, p=prof_below, both=need_both):
            if r["area"] == 0:
                return True
            lc, lp = r["confidence"] < c, r["profile"] < p
            return (lc and lp) if both else (lc or lp)
        show(f"trim conf<{conf_below} {'and' if need_both else 'or'} profile<{prof_below}", score(off))



def combined(c, runs, b, rule):
    """``official``'s labels, with each side of the official middle slice taken from ``adaptive`` where ``rule``
    (official's records on that side, adaptive's records on that side) says so."""
    off, ada = runs[(c["name"], b, "official")], runs[(c["name"], b, "adaptive")]
    mid = off["info"]["z_middle"]
    out = off["labels"].copy()
    ro = {r["slice"]: r for r in off["records"]}
    ra = {r["slice"]: r for r in ada["records"]}
    picks = []
    for side in ([k for k in ro if k > mid], [k for k in ro if k < mid]):
        if not side:
            continue
        if rule([ro[k] for k in side], [ra[k] for k in side if k in ra], [ro[k] for k in side if k not in ra]):
            for k in side:
                out[k] = ada["labels"][k]
            picks.append(1)
        else:
            picks.append(0)
    return out, picks


def slab_rule(margin, missing_conf_below):
    def rule(o, a, missing):
        if not a:
            return False
        if any(m["confidence"] >= missing_conf_below for m in missing):
            return False
        written = {r["slice"] for r in a}
        co = np.mean([r["confidence"] for r in o if r["slice"] in written])
        ca = np.mean([r["confidence"] for r in a])
        return ca >= co + margin
    return rule


def main_slabs() -> None:
    cases = load_cases("tuning")
    assert all(c["part"] == "tuning" for c in cases)
    runs = stored_runs(cases, ("official", "adaptive"))
    keys = [(c, b) for c in cases for b in ("tight", "loose") if (c["name"], b, "adaptive") in runs]
    print(f"{len(keys)} tuning runs")
    base = {(c["name"], b): dice(runs[(c["name"], b, "official")]["labels"], c["gt"]) for c, b in keys}
    for margin, mc in itertools.product((0.0, 0.02, 0.05, 0.1), (0.5, 0.6, 0.7, 0.8, 1.01)):
        d, npick = {}, 0
        for c, b in keys:
            lab, picks = combined(c, runs, b, slab_rule(margin, mc))
            npick += sum(picks)
            d[(c["name"], b)] = dice(lab, c["gt"]) - base[(c["name"], b)]
        v = np.array(list(d.values()))
        worst = min(d, key=d.get)
        print(f"slab margin {margin} missing conf<{mc}: picks {npick} mean {v.mean():+.4f} worst {d[worst]:+.4f} "
              f"{worst} below-0.01 {int((v < -0.01).sum())}")


if __name__ == "__main__":
    main_slabs() if "--slabs" in sys.argv else main()
