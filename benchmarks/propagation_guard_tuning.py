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

from propagation_split import combined, load_cases, stored_runs  # noqa: E402

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



def main_slabs() -> None:
    from medseg_backend.medsam import propagation as prop

    cases = load_cases("tuning")
    assert all(c["part"] == "tuning" for c in cases)
    runs = stored_runs(cases, ("official", "adaptive"))
    keys = [(c, b) for c in cases for b in ("tight", "loose") if (c["name"], b, "adaptive") in runs]
    print(f"{len(keys)} tuning runs")
    base = {(c["name"], b): dice(runs[(c["name"], b, "official")]["labels"], c["gt"]) for c, b in keys}
    for margin, mc, pd, same in itertools.product((0.1, 0.15, 0.17, 0.2, 0.25, 9.0), (0.5, 0.6, 0.7, 0.8, 1.01),
                                                  (0.05, 0.1, 0.2, 1.0), (0.8, 0.9, 0.95, 1.01)):
        prop.GUARD_MARGIN, prop.GUARD_DROP_BELOW, prop.GUARD_PROFILE_DROP, prop.GUARD_SAME_IOU = margin, mc, pd, same
        d, npick = {}, 0
        for c, b in keys:
            lab, picks = combined(c, runs, b)
            npick += sum(picks)
            d[(c["name"], b)] = dice(lab, c["gt"]) - base[(c["name"], b)]
        v = np.array(list(d.values()))
        t = np.mean([x for k, x in d.items() if k[1] == "tight"])
        lo = np.mean([x for k, x in d.items() if k[1] == "loose"])
        worst = min(d, key=d.get)
        print(f"margin {margin:.2f} drop<{mc:.2f} profile-drop {pd:.2f} same {same:.2f}: sides taken {npick:2d} "
              f"mean {v.mean():+.4f} (tight {t:+.4f} loose "
              f"{lo:+.4f}) worst {d[worst]:+.4f} {worst[0]} {worst[1]}, {int((v < -0.01).sum())} below -0.01")


def side_features() -> None:
    """One line per run and side: both walks' signals on that side and the Dice gain adaptive would bring there."""
    cases = load_cases("tuning")
    assert all(c["part"] == "tuning" for c in cases)
    runs = stored_runs(cases, ("official", "adaptive"))
    for c in cases:
        for b in ("tight", "loose"):
            if (c["name"], b, "adaptive") not in runs:
                continue
            off, ada = runs[(c["name"], b, "official")], runs[(c["name"], b, "adaptive")]
            mid = off["info"]["z_middle"]
            ro = {r["slice"]: r for r in off["records"]}
            ra = {r["slice"]: r for r in ada["records"]}
            for side, ks in (("up", [k for k in ro if k > mid]), ("down", [k for k in ro if k < mid])):
                if not ks:
                    continue
                lab = off["labels"].copy()
                for k in ks:
                    lab[k] = ada["labels"][k]
                gain = dice(lab, c["gt"]) - dice(off["labels"], c["gt"])
                com = [k for k in ks if k in ra]
                miss = [k for k in ks if k not in ra]
                f = lambda rs, key: np.mean([r[key] for r in rs]) if rs else float("nan")  # noqa: E731
                print(f"{c['name'][-28:]:28s} {b:5s} {side:4s} gain {gain:+.3f} n {len(ks):2d} miss {len(miss):2d} "
                      f"missmax {max([ro[k]['confidence'] for k in miss], default=0):.2f} "
                      f"conf o {f([ro[k] for k in com], 'confidence'):.3f} "
                      f"a {f([ra[k] for k in com], 'confidence'):.3f} "
                      f"prof o {f([ro[k] for k in com], 'profile'):.2f} a {f([ra[k] for k in com], 'profile'):.2f} "
                      f"area a/o {sum(ra[k]['area'] for k in com) / max(1, sum(ro[k]['area'] for k in com)):.2f} "
                      f"start {ada['info']['z_start'] - mid:+d}")


if __name__ == "__main__":
    main_slabs() if "--slabs" in sys.argv else side_features() if "--sides" in sys.argv else main()
